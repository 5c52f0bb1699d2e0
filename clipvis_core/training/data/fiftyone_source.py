"""A FiftyOne dataset or saved view -> ``SampleRecord``s: ``fiftyone:DATASET[:FIELD][@VIEW]``.

FIELD is a ``Detections`` field whose detections carry instance masks (``Detection.mask`` cropped
to ``bounding_box`` in relative coordinates, or ``mask_path``); sample-level for image datasets,
frame-level for video datasets. Without FIELD the one such field is used. Only frames where the
field is set count as annotated (a strided pre-annotation leaves the other frames unset, and those
must not teach "no objects here"). Detections of one object share ``instance`` (FiftyOne >= 1.0)
or ``index``; otherwise every detection is its own one-frame instance. Masks are pasted into the
frame and kept as compact RLE; pixels are decoded later, in loader workers.
"""
from __future__ import annotations

import logging
from pathlib import Path

from ...errors import InputError
from ...export.fiftyone import paste_mask
from .masks import encode_rle
from .sample import InstanceRecord, SampleRecord

log = logging.getLogger(__name__)


def parse_spec(spec: str, exists) -> tuple[str, str | None, str | None]:
    """``DATASET[:FIELD][@VIEW]`` -> (dataset, field, view); a dataset name may itself contain ':'."""
    rest, _, view = spec.partition("@") if "@" in spec else (spec, "", "")
    name, field = rest, None
    if not exists(rest) and ":" in rest:
        name, _, field = rest.rpartition(":")
    return name, field or None, view or None


def _open_view(spec: str):
    import fiftyone as fo

    name, field, view_name = parse_spec(spec, fo.dataset_exists)
    if not fo.dataset_exists(name):
        known = ", ".join(sorted(fo.list_datasets())[:20]) or "none"
        raise InputError(f"fiftyone:{spec}: no FiftyOne dataset named {name!r} (datasets: {known})")
    ds = fo.load_dataset(name)
    view = ds
    if view_name:
        if view_name not in ds.list_saved_views():
            raise InputError(f"fiftyone:{spec}: dataset {name!r} has no saved view {view_name!r} "
                             f"(saved views: {', '.join(ds.list_saved_views()) or 'none'})")
        view = ds.load_saved_view(view_name)
    if ds.media_type not in ("image", "video"):
        raise InputError(f"fiftyone:{spec}: {ds.media_type} datasets are not supported: use an image or video dataset")
    return view, field, ds.media_type == "video"


def _mask_field(view, field: str | None, video: bool, spec: str) -> str:
    import fiftyone as fo

    schema = view.get_frame_field_schema(embedded_doc_type=fo.Detections) if video else \
        view.get_field_schema(embedded_doc_type=fo.Detections)
    prefix = "frames." if video else ""
    fields = sorted(schema or {})
    with_masks = [f for f in fields if view.count(f"{prefix}{f}.detections.mask") + view.count(f"{prefix}{f}.detections.mask_path")]
    level = "frame-level " if video else ""
    if field is not None:
        if field not in fields:
            raise InputError(f"fiftyone:{spec}: no {level}Detections field {field!r} (Detections fields: {', '.join(fields) or 'none'})")
        return field
    if len(with_masks) == 1:
        return with_masks[0]
    if not with_masks:
        raise InputError(f"fiftyone:{spec}: no {level}Detections field with instance masks "
                         f"(Detections fields: {', '.join(fields) or 'none'}): add masks or name the field")
    raise InputError(f"fiftyone:{spec}: several {level}Detections fields have masks ({', '.join(with_masks)}): "
                     f"pick one, e.g. fiftyone:{spec.split('@')[0]}:{with_masks[0]}")


def _frame_size(filepath: str, metadata, video: bool) -> tuple[int, int]:
    w, h = (getattr(metadata, "frame_width", None), getattr(metadata, "frame_height", None)) if video else \
        (getattr(metadata, "width", None), getattr(metadata, "height", None))
    if w and h:
        return int(h), int(w)
    import cv2

    if video:  # no metadata: the container's stated size (cheap, no decoding)
        cap = cv2.VideoCapture(filepath)
        w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        cap.release()
    else:
        from PIL import Image

        try:
            with Image.open(filepath) as im:  # header only
                w, h = im.size
        except OSError:
            w = h = 0
    if not (w and h):
        raise InputError(f"cannot read the size of {filepath}: the file is missing or unreadable; "
                         "fix the sample's filepath (or run dataset.compute_metadata())")
    return h, w


def _mask_rle(det, h: int, w: int) -> dict | None:
    if det.mask is None and getattr(det, "mask_path", None):
        import cv2

        crop = cv2.imread(det.mask_path, cv2.IMREAD_GRAYSCALE)
        if crop is None:
            raise InputError(f"cannot read mask_path {det.mask_path}: the file is missing or not an image")
        det = det.copy()
        det.mask = crop > 0
    if det.mask is None:
        return None  # a box without a mask: nothing to train the mask generator on
    full = paste_mask(det, w, h)
    return encode_rle(full) if full.any() else None


def _track_key(det):
    inst = getattr(det, "instance", None)
    if inst is not None:
        return ("instance", inst.id)
    if det.index is not None:
        return ("index", det.label, det.index)
    return ("detection", det.id)


def load_fiftyone(spec: str) -> list[SampleRecord]:
    view, field, video = _open_view(spec)
    field = _mask_field(view, field, video, spec)
    records, boxes_only = [], 0
    if not video:
        for sid, path, meta, dets in zip(*view.values(["id", "filepath", "metadata", f"{field}.detections"])):
            if not dets:
                continue
            h, w = _frame_size(path, meta, False)
            insts = []
            for d in dets:
                rle = _mask_rle(d, h, w)
                if rle is None:
                    boxes_only += d.mask is None and not getattr(d, "mask_path", None)
                    continue
                insts.append(InstanceRecord(segmentations=[rle], category=d.label, track_id=d.id))
            if insts:
                records.append(SampleRecord(source=f"fiftyone:{spec}: sample {sid} ({Path(path).name})",
                                            frames=[path], height=h, width=w, instances=insts))
    else:
        values = view.values(["id", "filepath", "metadata", "frames.frame_number", f"frames.{field}"])
        for sid, path, meta, numbers, labels in zip(*values):
            annotated = sorted((fn, lab) for fn, lab in zip(numbers or [], labels or []) if lab is not None)
            if not annotated:
                continue
            h, w = _frame_size(path, meta, True)
            tracks: dict = {}
            for k, (_, lab) in enumerate(annotated):
                for d in lab.detections:
                    rle = _mask_rle(d, h, w)
                    if rle is None:
                        boxes_only += d.mask is None and not getattr(d, "mask_path", None)
                        continue
                    segs, _ = tracks.setdefault(_track_key(d), ([None] * len(annotated), d.label))
                    segs[k] = rle
            if tracks:
                # FiftyOne frame numbers are 1-based; frame references are 0-based decoder indices.
                records.append(SampleRecord(
                    source=f"fiftyone:{spec}: sample {sid} ({Path(path).name})",
                    frames=[(path, fn - 1) for fn, _ in annotated], height=h, width=w, video=True,
                    instances=[InstanceRecord(segmentations=segs, category=label, track_id=str(key[-1]))
                               for key, (segs, label) in tracks.items()]))
    if boxes_only:
        log.warning("fiftyone:%s: ignored %d detections without masks", spec, boxes_only)
    return records


__all__ = ["load_fiftyone", "parse_spec"]
