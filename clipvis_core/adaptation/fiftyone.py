"""A FiftyOne dataset or saved view -> labelled instances: ``fiftyone:DATASET[:FIELD][@VIEW]``.

Unlike training, detections without masks count: their boxes (``bounding_box``, relative
[x, y, w, h]) teach the classifier. Detections of one object share ``instance`` (or ``index``)
across frames; an object labelled differently in different frames is a conflict and is left out.
Reuses the training reader's view, frame-size and mask helpers.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import InputError
from ..training.data import fiftyone_source as fos
from .examples import Example, ExampleSet, Observation, merge


def _field(view, field: str | None, video: bool, spec: str) -> str:
    import fiftyone as fo

    schema = view.get_frame_field_schema(embedded_doc_type=fo.Detections) if video else \
        view.get_field_schema(embedded_doc_type=fo.Detections)
    fields = sorted(schema or {})
    level = "frame-level " if video else ""
    if field is not None:
        if field not in fields:
            raise InputError(f"fiftyone:{spec}: no {level}Detections field {field!r} (Detections fields: {', '.join(fields) or 'none'})")
        return field
    prefix = "frames." if video else ""
    used = [f for f in fields if view.count(f"{prefix}{f}.detections")]
    if len(used) == 1:
        return used[0]
    raise InputError(f"fiftyone:{spec}: {'several' if used else 'no'} {level}Detections fields hold labels "
                     f"({', '.join(used or fields) or 'none'}): name the corrected one, e.g. "
                     f"fiftyone:{spec.split('@')[0]}:{(used or fields or ['FIELD'])[0]}")


def _observation(frame, det, h: int, w: int) -> Observation:
    rle = fos._mask_rle(det, h, w)
    if rle is not None:
        return Observation(frame, rle)
    x, y, bw, bh = det.bounding_box
    return Observation(frame, None, (x * w, y * h, bw * w, bh * h))


def open_fiftyone(spec: str) -> ExampleSet:
    view, field, video = fos._open_view(spec)
    field = _field(view, field, video, spec)
    keyed: dict = {}
    order: list[str] = []
    if not video:
        for sid, path, meta, dets in zip(*view.values(["id", "filepath", "metadata", f"{field}.detections"])):
            if not dets:
                continue
            h, w = fos._frame_size(path, meta, False)
            for d in dets:
                labels, ex = keyed.setdefault((sid, d.id), ([], Example("", [], h, w, f"fiftyone:{spec}: sample {sid} ({Path(path).name})")))
                labels.append(d.label)
                order.append(d.label)
                ex.observations.append(_observation(path, d, h, w))
    else:
        values = view.values(["id", "filepath", "metadata", "frames.frame_number", f"frames.{field}"])
        for sid, path, meta, numbers, frames in zip(*values):
            annotated = [(fn, lab) for fn, lab in zip(numbers or [], frames or []) if lab is not None and lab.detections]
            if not annotated:
                continue
            h, w = fos._frame_size(path, meta, True)
            for fn, lab in annotated:
                for d in lab.detections:
                    key = (sid, fos._track_key(d))
                    labels, ex = keyed.setdefault(key, ([], Example("", [], h, w, f"fiftyone:{spec}: sample {sid} ({Path(path).name})", True)))
                    labels.append(d.label)
                    order.append(d.label)
                    # FiftyOne frame numbers are 1-based; frame references are 0-based decoder indices.
                    ex.observations.append(_observation((path, fn - 1), d, h, w))
    return merge(keyed, order, ExampleSet([]))
