"""COCO instance JSON and YouTube-VIS / LV-VIS JSON -> ``SampleRecord``s.

COCO: ``images[] {id, file_name, height, width}``, ``annotations[] {image_id, segmentation,
iscrowd}`` (polygons, compressed or uncompressed RLE). YTVIS: ``videos[] {id, file_names, height,
width}``, ``annotations[] {video_id, segmentations}`` with one entry per frame, ``null`` where the
object is absent. ``categories`` are optional in both (training is class-agnostic). Image paths are
resolved against ``images_dir`` when given, else against the JSON's folder (COCO's usual layout
keeps ``file_name`` relative to an image root next to the annotations).
"""
from __future__ import annotations

from pathlib import Path

from ...errors import InputError
from .sample import InstanceRecord, SampleRecord


def _categories(data: dict) -> dict:
    cats = data.get("categories") or []
    return {c.get("id"): c.get("name") for c in cats if isinstance(c, dict)}


def _size(entry: dict, where: str) -> tuple[int, int]:
    try:
        h, w = int(entry["height"]), int(entry["width"])
    except (KeyError, TypeError, ValueError):
        raise InputError(f"{where}: needs integer 'height' and 'width'") from None
    if h <= 0 or w <= 0:
        raise InputError(f"{where}: height/width must be positive, got {w}x{h}")
    return h, w


def _check_seg(seg, where: str) -> None:
    if seg is None or isinstance(seg, list):
        return
    if isinstance(seg, dict) and "counts" in seg and "size" in seg:
        return
    raise InputError(f"{where}: unsupported segmentation: use polygons [[x, y, ...]], an RLE "
                     "{'size': [h, w], 'counts': ...} or null")


def load_coco(data: dict, json_path: Path, images_dir: str | Path | None = None) -> list[SampleRecord]:
    root = Path(images_dir) if images_dir else json_path.parent
    names = _categories(data)
    by_image: dict = {}
    for k, ann in enumerate(data.get("annotations") or []):
        where = f"{json_path.name}: annotation {ann.get('id', k)}"
        if "image_id" not in ann or "segmentation" not in ann:
            raise InputError(f"{where}: needs 'image_id' and 'segmentation' (instance masks; boxes alone cannot train masks)")
        _check_seg(ann["segmentation"], where)
        if not ann["segmentation"]:
            continue  # a box-only annotation: no mask to learn from
        by_image.setdefault(ann["image_id"], []).append(ann)
    records = []
    for img in data.get("images") or []:
        anns = by_image.get(img.get("id"))
        if not anns:
            continue  # upstream drops images without annotations from training
        where = f"{json_path.name}: image {img.get('id')} ({img.get('file_name')})"
        if not img.get("file_name"):
            raise InputError(f"{where}: needs 'file_name'")
        h, w = _size(img, where)
        insts = [InstanceRecord(segmentations=[a["segmentation"]], category=names.get(a.get("category_id")),
                                iscrowd=bool(a.get("iscrowd", 0)), track_id=a.get("id")) for a in anns]
        records.append(SampleRecord(source=where, frames=[str(root / img["file_name"])], height=h, width=w,
                                    instances=insts))
    return records


def load_ytvis(data: dict, json_path: Path, images_dir: str | Path | None = None) -> list[SampleRecord]:
    """Frame folders: ``file_names`` are relative to ``images_dir`` (YTVIS's ``JPEGImages``), else
    to the JSON's folder."""
    root = Path(images_dir) if images_dir else json_path.parent
    names = _categories(data)
    by_video: dict = {}
    for k, ann in enumerate(data.get("annotations") or []):
        where = f"{json_path.name}: annotation {ann.get('id', k)}"
        if "video_id" not in ann or not isinstance(ann.get("segmentations"), list):
            raise InputError(f"{where}: needs 'video_id' and a 'segmentations' list (one per frame, null where absent)")
        for s in ann["segmentations"]:
            _check_seg(s, where)
        by_video.setdefault(ann["video_id"], []).append(ann)
    records = []
    for vid in data.get("videos") or []:
        anns = by_video.get(vid.get("id"))
        if not anns:
            continue
        files = vid.get("file_names")
        where = f"{json_path.name}: video {vid.get('id')}"
        if not isinstance(files, list) or not files:
            raise InputError(f"{where}: needs 'file_names' (one frame image per entry, relative to the image folder)")
        h, w = _size(vid, where)
        insts = []
        for a in anns:
            segs = a["segmentations"]
            if len(segs) != len(files):
                raise InputError(f"{where}: annotation {a.get('id')} has {len(segs)} segmentations for {len(files)} "
                                 "frames: give one per frame (null where the object is absent)")
            if all(s is None for s in segs):
                continue
            insts.append(InstanceRecord(segmentations=list(segs), category=names.get(a.get("category_id")),
                                        iscrowd=bool(a.get("iscrowd", 0)), track_id=a.get("id")))
        if insts:
            records.append(SampleRecord(source=f"{where} ({Path(files[0]).parent})",
                                        frames=[str(root / f) for f in files], height=h, width=w, instances=insts,
                                        video=True))
    return records
