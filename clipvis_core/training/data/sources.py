"""One entry point for every training source: ``open_source(spec) -> list[SampleRecord]``.

``spec`` is a ``.json`` path (COCO instances, YouTube-VIS / LV-VIS, or a Label Studio export: told
apart by content), ``fiftyone:DATASET[:FIELD][@VIEW]`` or ``labelstudio:PROJECT_ID``.
"""
from __future__ import annotations

import json
from pathlib import Path

from ...errors import InputError
from . import coco, labelstudio
from .sample import SampleRecord

SPECS = "a COCO / YouTube-VIS / Label Studio export .json, fiftyone:DATASET[:FIELD][@VIEW] or labelstudio:PROJECT_ID"


def _load_json(path: Path):
    if not path.is_file():
        raise InputError(f"training data not found: {path}: pass {SPECS}")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{path} is not valid JSON ({e}): pass {SPECS}") from None


def _open_json(path: Path, images_dir: str | None) -> list[SampleRecord]:
    data = _load_json(path)
    if labelstudio.is_export(data):
        resolve = labelstudio.export_resolver(path, images_dir, labelstudio.LabelStudioClient.from_env())
        return labelstudio.parse_export(data, path.name, resolve)
    if isinstance(data, dict) and isinstance(data.get("videos"), list):
        return coco.load_ytvis(data, path, images_dir)
    if isinstance(data, dict) and isinstance(data.get("images"), list):
        return coco.load_coco(data, path, images_dir)
    raise InputError(f"{path}: not a COCO ('images' + 'annotations'), YouTube-VIS ('videos' + 'annotations') "
                     "or Label Studio export (a list of tasks) file")


def _check_first_frames(records: list[SampleRecord], spec: str) -> None:
    """A wrong image root shows on the first record: fail now, not an hour into training."""
    ref = records[0].frames[0]
    path = ref[0] if isinstance(ref, tuple) else ref
    if not Path(path).is_file():
        raise InputError(f"{spec}: image file not found: {path} ({records[0].source}): pass --images DIR "
                         "(the folder the file names are relative to)")


def open_source(spec: str, images_dir: str | None = None) -> list[SampleRecord]:
    """Records of one source; raises ``InputError`` when it holds no annotated image or video."""
    spec = str(spec)
    if spec.startswith("fiftyone:"):
        from .fiftyone_source import load_fiftyone

        records = load_fiftyone(spec[len("fiftyone:"):])
    elif spec.startswith("labelstudio:"):
        records = labelstudio.load_project(spec[len("labelstudio:"):])
    elif spec.lower().endswith(".json"):
        records = _open_json(Path(spec).expanduser(), images_dir)
    else:
        raise InputError(f"unknown training data {spec!r}: pass {SPECS}")
    if not records:
        raise InputError(f"no annotated images/videos in {spec}: training needs instance masks "
                         "(polygons, RLE or brush masks); check the file or field")
    _check_first_frames(records, spec)
    return records
