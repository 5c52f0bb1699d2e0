"""Load and validate YTVIS-format ground truth and results.

Ground truth: ``{"videos": [{id, height, width, length|file_names}], "categories": [{id, name,
partition?}], "annotations": [{id, video_id, category_id, iscrowd, segmentations, areas?}]}``;
a segmentation is ``null`` where the object is absent, else a COCO RLE (compressed or
uncompressed) or a polygon list. Results: ``[{video_id, category_id, score, segmentations}]``.

Everything is checked up front so that a wrong file fails with one line naming the problem
instead of a KeyError (or a silently wrong number) halfway through an evaluation.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ..errors import InputError


@dataclass(frozen=True)
class VideoEntry:
    id: int
    height: int
    width: int
    num_frames: int | None  # None: not stated in the GT; fixed by the first track seen


@dataclass(frozen=True)
class Category:
    id: int
    name: str
    partition: int | None  # LV-VIS: 0/1 base, 2/3 novel; None when absent


@dataclass
class GtTrack:
    id: int
    video_id: int
    category_id: int
    iscrowd: bool
    masks: list[dict | None]  # pycocotools RLE (bytes counts) per frame, None where absent
    areas: list[float | None]  # the annotation's per-frame areas (used for the area ranges)


@dataclass
class Detection:
    index: int  # position in the results list (stable tie-breaking follows it)
    video_id: int
    category_id: int
    score: float
    masks: list[dict | None]


@dataclass
class GroundTruth:
    videos: dict[int, VideoEntry]
    categories: list[Category]  # sorted by id
    tracks: list[GtTrack]  # annotation order

    @property
    def category_ids(self) -> list[int]:
        return [c.id for c in self.categories]


def _load_json(src: Any, what: str) -> Any:
    if isinstance(src, (str, os.PathLike)):
        path = Path(src)
        if not path.is_file():
            raise InputError(f"{what} file not found: {path}")
        try:
            return json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise InputError(f"{what} file {path} is not valid JSON ({e}): pass a YTVIS-format .json file") from None
    return src


def _int(value: Any, where: str, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
        raise InputError(f"{where}: '{field}' must be an integer, got {value!r}")
    return int(value)


def to_rle(seg: Any, height: int, width: int, where: str) -> dict | None:
    """One frame's segmentation -> pycocotools RLE with bytes counts (None stays None)."""
    if seg is None:
        return None
    if isinstance(seg, dict):  # the common case first: compressed RLE (called per frame, keep it lean)
        size, counts = seg.get("size"), seg.get("counts")
        if isinstance(counts, str) and isinstance(size, list) and len(size) == 2 and size[0] == height and size[1] == width:
            return {"size": size, "counts": counts.encode("ascii")}
    from pycocotools import mask as mask_utils

    if isinstance(seg, list):  # polygons
        if not seg:
            return None
        try:
            return mask_utils.merge(mask_utils.frPyObjects(seg, height, width))
        except Exception as e:  # pycocotools raises bare Exceptions on malformed polygons
            raise InputError(f"{where}: invalid polygon segmentation ({e})") from None
    if not isinstance(seg, dict) or "counts" not in seg or "size" not in seg:
        raise InputError(f"{where}: a segmentation must be null, a COCO RLE {{size, counts}} or a polygon list")
    size = seg["size"]
    if not isinstance(size, (list, tuple)) or len(size) != 2 or [int(size[0]), int(size[1])] != [height, width]:
        raise InputError(
            f"{where}: mask size {size} does not match the video's {height}x{width} (height x width): "
            "masks must be at the original video resolution"
        )
    counts = seg["counts"]
    if isinstance(counts, list):  # uncompressed RLE
        if sum(counts) != height * width:
            raise InputError(f"{where}: uncompressed RLE counts sum to {sum(counts)}, expected {height * width}")
        return mask_utils.frPyObjects({"size": [height, width], "counts": counts}, height, width)
    if isinstance(counts, str):
        counts = counts.encode("ascii")
    if not isinstance(counts, bytes):
        raise InputError(f"{where}: RLE 'counts' must be a string or a list of integers")
    return {"size": [height, width], "counts": counts}


def _video_of(videos: dict[int, VideoEntry], video_id: int, where: str) -> VideoEntry:
    v = videos.get(video_id)
    if v is None:
        raise InputError(
            f"{where}: video_id {video_id} is not in the ground truth (known ids: {_id_hint(videos)}): "
            "results must use the GT file's video ids"
        )
    return v


def _id_hint(ids) -> str:
    ids = sorted(ids)
    return ", ".join(map(str, ids[:8])) + (", ..." if len(ids) > 8 else "")


def _check_frames(videos: dict[int, VideoEntry], v: VideoEntry, segs: Any, where: str) -> None:
    if not isinstance(segs, list):
        raise InputError(f"{where}: 'segmentations' must be a list with one entry per frame")
    if v.num_frames is None:
        videos[v.id] = v = VideoEntry(v.id, v.height, v.width, len(segs))
    if len(segs) != v.num_frames:
        raise InputError(
            f"{where}: {len(segs)} per-frame segmentations but video {v.id} has {v.num_frames} frames: "
            "give one entry per frame (null where absent)"
        )


def load_ground_truth(src: str | os.PathLike | dict) -> GroundTruth:
    data = _load_json(src, "ground truth")
    if not isinstance(data, dict):
        raise InputError("ground truth must be a YTVIS-format JSON object with videos, categories and annotations")
    for key in ("videos", "categories", "annotations"):
        if not isinstance(data.get(key), list):
            raise InputError(
                f"ground truth has no '{key}' list: pass a YTVIS-format GT file "
                "(a test-set file without annotations cannot be evaluated)"
            )
    videos: dict[int, VideoEntry] = {}
    for i, v in enumerate(data["videos"]):
        where = f"ground truth video #{i}"
        if not isinstance(v, dict) or "id" not in v or "height" not in v or "width" not in v:
            raise InputError(f"{where}: needs 'id', 'height' and 'width'")
        vid = _int(v["id"], where, "id")
        if vid in videos:
            raise InputError(f"{where}: duplicate video id {vid}")
        n = v.get("length", len(v["file_names"]) if isinstance(v.get("file_names"), list) else None)
        videos[vid] = VideoEntry(vid, _int(v["height"], where, "height"), _int(v["width"], where, "width"),
                                 None if n is None else _int(n, where, "length"))
    cats: dict[int, Category] = {}
    for i, c in enumerate(data["categories"]):
        where = f"ground truth category #{i}"
        if not isinstance(c, dict) or "id" not in c:
            raise InputError(f"{where}: needs an 'id'")
        cid = _int(c["id"], where, "id")
        if cid in cats:
            raise InputError(f"{where}: duplicate category id {cid}")
        part = c.get("partition")
        cats[cid] = Category(cid, str(c.get("name", cid)), None if part is None else _int(part, where, "partition"))
    tracks: list[GtTrack] = []
    seen: set[int] = set()
    for i, a in enumerate(data["annotations"]):
        where = f"ground truth annotation #{i}"
        if not isinstance(a, dict):
            raise InputError(f"{where}: must be an object")
        _require(a, ("id", "video_id", "category_id", "segmentations"), where)
        aid = _int(a["id"], where, "id")
        where = f"ground truth annotation #{i} (id {aid})"
        if aid in seen:
            raise InputError(f"{where}: duplicate annotation id")
        seen.add(aid)
        cid = _int(a["category_id"], where, "category_id")
        if cid not in cats:
            raise InputError(f"{where}: category_id {cid} is not among the GT categories ({_id_hint(cats)})")
        v = _video_of(videos, _int(a["video_id"], where, "video_id"), where)
        _check_frames(videos, v, a["segmentations"], where)
        masks = [to_rle(s, v.height, v.width, f"{where} frame {f}") for f, s in enumerate(a["segmentations"])]
        areas = a.get("areas")
        if areas is None:  # not stated: derive from the masks (upstream requires the field)
            areas = _mask_areas(masks)
        elif not isinstance(areas, list) or len(areas) != len(masks):
            raise InputError(f"{where}: 'areas' must be a list with one entry per frame")
        tracks.append(GtTrack(aid, v.id, cid, bool(a.get("iscrowd", 0)), masks, list(areas)))
    return GroundTruth(videos, sorted(cats.values(), key=lambda c: c.id), tracks)


def _require(obj: dict, keys: tuple[str, ...], where: str) -> None:
    for key in keys:
        if key not in obj:
            raise InputError(f"{where}: missing '{key}'")


def _mask_areas(masks: list[dict | None]) -> list[float | None]:
    from pycocotools import mask as mask_utils

    present = [m for m in masks if m is not None]
    vals = iter(mask_utils.area(present).tolist() if present else [])
    return [None if m is None else next(vals) for m in masks]


def load_results(src: str | os.PathLike | Sequence[dict], gt: GroundTruth) -> list[Detection]:
    data = _load_json(src, "results")
    if isinstance(data, dict) and isinstance(data.get("annotations"), list):
        data = data["annotations"]
    if not isinstance(data, (list, tuple)):
        raise InputError("results must be a JSON list of {video_id, category_id, score, segmentations}")
    cat_ids = set(gt.category_ids)
    dets: list[Detection] = []
    for i, r in enumerate(data):
        where = f"result #{i}"
        if not isinstance(r, dict):
            raise InputError(f"{where}: must be an object")
        _require(r, ("video_id", "category_id", "score", "segmentations"), where)
        v = _video_of(gt.videos, _int(r["video_id"], where, "video_id"), where)
        cid = _int(r["category_id"], where, "category_id")
        if cid not in cat_ids:
            raise InputError(
                f"{where}: category_id {cid} is not a GT category ({_id_hint(cat_ids)}): "
                "map predicted classes to the GT file's category ids"
            )
        score = r["score"]
        if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
            raise InputError(f"{where}: 'score' must be a finite number, got {score!r}")
        _check_frames(gt.videos, v, r["segmentations"], where)
        masks = [to_rle(s, v.height, v.width, f"{where} frame {f}") for f, s in enumerate(r["segmentations"])]
        dets.append(Detection(i, v.id, cid, float(score), masks))
    return dets


def merge_categories(gt: GroundTruth, dets: list[Detection]) -> tuple[GroundTruth, list[Detection]]:
    """Class-agnostic view: every GT track and detection in one category (id 1, "object").

    Mask quality is then judged apart from the vocabulary: a detection matches any GT track of its
    video, whatever either was labelled. Partitions are dropped (no base/novel split).
    """
    from dataclasses import replace

    tracks = [replace(t, category_id=1) for t in gt.tracks]
    merged = GroundTruth(dict(gt.videos), [Category(1, "object", None)], tracks)
    return merged, [replace(d, category_id=1) for d in dets]


def results_from_tracks(tracks, video_id: int, category_ids: Sequence[int] | None = None) -> list[dict]:
    """``clipvis_core.tracks.VideoTracks`` -> YTVIS result dicts for one GT video.

    ``category_ids[i]`` is the GT category id of vocabulary class ``i`` (default ``i + 1``, the
    upstream convention when the vocabulary is the dataset's class list).
    """
    out = []
    for t in tracks.tracks:
        cid = t.category_id + 1 if category_ids is None else int(category_ids[t.category_id])
        out.append({"video_id": int(video_id), "category_id": cid, "score": float(t.score),
                    "segmentations": [dict(m) for m in t.masks]})
    return out
