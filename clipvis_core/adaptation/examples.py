"""Labelled instances for classifier adaptation: a label and, per annotated frame, a mask or a box.

Source specs are those of ``clipvis train``: COCO / YouTube-VIS JSON, Label Studio exports and
projects, FiftyOne datasets. Adaptation also learns from boxes, which training cannot use, so the
sources are read here (with training's parsing helpers). COCO / YTVIS: an annotation with a ``segmentation`` (COCO) or
``segmentations`` (YTVIS) gives masks, one with only ``bbox`` / ``bboxes`` ([x, y, w, h] pixels)
gives boxes. Label Studio brush masks, rectangles and video rectangles: ``labelstudio.py``;
FiftyOne detections with masks or boxes: ``fiftyone.py``.

One instance = one annotated object. Annotations that share ``instance_id`` (else ``id``) within one
image or video are the same instance; an instance labelled differently in different places
(conflicting labels) is left out and counted, as are instances without a label.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError
from ..training.data.sample import FrameRef, Segmentation

log = logging.getLogger(__name__)


@dataclass
class Observation:
    """One instance in one frame: a mask, or a box (x, y, w, h in pixels) when there is no mask."""

    frame: FrameRef
    mask: Segmentation = None
    box: tuple[float, float, float, float] | None = None


@dataclass
class Example:
    label: str
    observations: list[Observation]
    height: int
    width: int
    source: str  # for one-line errors: "train.json: video 3"
    video: bool = False


@dataclass
class ExampleSet:
    examples: list[Example]
    conflicting: int = 0  # instances left out: labelled differently in different places
    unlabelled: int = 0  # instances left out: no label at all
    boxes_only: int = 0  # kept instances that have boxes but no mask anywhere
    labels: list[str] = field(default_factory=list)  # the source's category order (first seen)


def merge(keyed: dict, order: list[str], collected: ExampleSet) -> ExampleSet:
    """keyed: identity -> (labels seen, Example) -> ExampleSet with conflicts / unlabelled left out."""
    for labels, ex in keyed.values():
        distinct = {lab.strip() for lab in labels if lab and lab.strip()}
        if not distinct:
            collected.unlabelled += 1
        elif len(distinct) > 1:
            collected.conflicting += 1
            log.warning("%s: instance labelled %s: left out (conflicting labels)", ex.source, sorted(distinct))
        elif ex.observations:
            ex.label = distinct.pop()
            collected.examples.append(ex)
            collected.boxes_only += all(o.mask is None for o in ex.observations)
    collected.labels = [c for c in dict.fromkeys(lab.strip() for lab in order if lab and lab.strip())]
    return collected


def _size(entry: dict, where: str) -> tuple[int, int]:
    try:
        h, w = int(entry["height"]), int(entry["width"])
    except (KeyError, TypeError, ValueError):
        raise InputError(f"{where}: needs integer 'height' and 'width'") from None
    return h, w


def _box(b, where: str) -> tuple[float, float, float, float] | None:
    if b is None:
        return None
    if not (isinstance(b, (list, tuple)) and len(b) == 4):
        raise InputError(f"{where}: a box must be [x, y, width, height] in pixels")
    x, y, w, h = (float(v) for v in b)
    return (x, y, w, h) if w > 0 and h > 0 else None


def _coco(data: dict, path: Path, root: Path) -> ExampleSet:
    names = {c.get("id"): c.get("name") for c in data.get("categories") or [] if isinstance(c, dict)}
    images = {img.get("id"): img for img in data.get("images") or []}
    keyed: dict = {}
    for k, ann in enumerate(data.get("annotations") or []):
        where = f"{path.name}: annotation {ann.get('id', k)}"
        img = images.get(ann.get("image_id"))
        if img is None:
            raise InputError(f"{where}: image_id {ann.get('image_id')!r} is not in 'images'")
        seg, box = ann.get("segmentation") or None, _box(ann.get("bbox"), where)
        if seg is None and box is None:
            raise InputError(f"{where}: needs a 'segmentation' or a 'bbox' [x, y, w, h]")
        if not img.get("file_name"):
            raise InputError(f"{path.name}: image {img.get('id')} needs 'file_name'")
        h, w = _size(img, f"{path.name}: image {img.get('id')}")
        obs = Observation(str(root / img["file_name"]), seg, None if seg is not None else box)
        ident = (img.get("id"), ann.get("instance_id", ann.get("id", f"#{k}")))
        labels, ex = keyed.setdefault(ident, ([], Example("", [], h, w, f"{path.name}: image {img.get('id')}")))
        labels.append(names.get(ann.get("category_id")))
        ex.observations.append(obs)
    return merge(keyed, [names[c] for c in names], ExampleSet([]))


def _ytvis(data: dict, path: Path, root: Path) -> ExampleSet:
    names = {c.get("id"): c.get("name") for c in data.get("categories") or [] if isinstance(c, dict)}
    videos = {v.get("id"): v for v in data.get("videos") or []}
    keyed: dict = {}
    for k, ann in enumerate(data.get("annotations") or []):
        where = f"{path.name}: annotation {ann.get('id', k)}"
        vid = videos.get(ann.get("video_id"))
        if vid is None:
            raise InputError(f"{where}: video_id {ann.get('video_id')!r} is not in 'videos'")
        files = vid.get("file_names")
        if not isinstance(files, list) or not files:
            raise InputError(f"{path.name}: video {vid.get('id')} needs 'file_names'")
        segs, boxes = ann.get("segmentations"), ann.get("bboxes")
        if not isinstance(segs, list) and not isinstance(boxes, list):
            raise InputError(f"{where}: needs 'segmentations' or 'bboxes' (one entry per frame, null where absent)")
        for name, per in (("segmentations", segs), ("bboxes", boxes)):
            if isinstance(per, list) and len(per) != len(files):
                raise InputError(f"{where}: {len(per)} {name} for {len(files)} frames: give one per frame (null where absent)")
        h, w = _size(vid, f"{path.name}: video {vid.get('id')}")
        obs = []
        for t, f in enumerate(files):
            seg = segs[t] if isinstance(segs, list) else None
            box = _box(boxes[t], where) if isinstance(boxes, list) else None
            if seg is not None or box is not None:
                obs.append(Observation(str(root / f), seg, None if seg is not None else box))
        ident = (vid.get("id"), ann.get("instance_id", ann.get("id", f"#{k}")))
        labels, ex = keyed.setdefault(ident, ([], Example("", [], h, w, f"{path.name}: video {vid.get('id')}", video=True)))
        labels.append(names.get(ann.get("category_id")))
        ex.observations.extend(obs)
    return merge(keyed, [names[c] for c in names], ExampleSet([]))


SPECS = "a COCO / YouTube-VIS / Label Studio export .json, fiftyone:DATASET[:FIELD][@VIEW] or labelstudio:PROJECT_ID"


def open_examples(spec: str, images_dir: str | None = None) -> ExampleSet:
    """Labelled instances of one source; ``InputError`` when it holds none."""
    spec = str(spec)
    path = Path(spec).expanduser()
    data = None
    if spec.lower().endswith(".json"):
        if not path.is_file():
            raise InputError(f"adaptation data not found: {path}: pass {SPECS}")
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise InputError(f"{path} is not valid JSON ({e}): pass {SPECS}") from None
    root = Path(images_dir) if images_dir else path.parent
    from . import labelstudio

    if spec.startswith("labelstudio:"):
        found = labelstudio.open_project(spec[len("labelstudio:"):])
    elif spec.startswith("fiftyone:"):
        from .fiftyone import open_fiftyone

        found = open_fiftyone(spec[len("fiftyone:"):])
    elif isinstance(data, list) and all(isinstance(t, dict) and "data" in t for t in data):
        found = labelstudio.open_export(path, data, images_dir)
    elif isinstance(data, dict) and isinstance(data.get("videos"), list):
        found = _ytvis(data, path, root)
    elif isinstance(data, dict) and isinstance(data.get("images"), list):
        found = _coco(data, path, root)
    elif data is not None:
        raise InputError(f"{path}: not a COCO ('images' + 'annotations'), YouTube-VIS ('videos' + 'annotations') "
                         "or Label Studio export (a list of tasks) file")
    else:
        raise InputError(f"unknown adaptation data {spec!r}: pass {SPECS}")
    if not found.examples:
        why = []
        if found.conflicting:
            why.append(f"{found.conflicting} with conflicting labels")
        if found.unlabelled:
            why.append(f"{found.unlabelled} without a label")
        detail = f" ({', '.join(why)} left out)" if why else ""
        raise InputError(f"no labelled instances in {spec}{detail}: adaptation needs instances with a label "
                         "and a mask or a box; annotate or correct some first")
    return found
