"""Reading one sample's labels (writing lives in ``clipvis_core.export.fiftyone``: the background
worker writes without the plugin)."""
from __future__ import annotations

from clipvis_core.export.fiftyone import VideoLabels, group_tracks


def frame_detections(sample, field: str) -> dict[int, list]:
    """``{1-based frame: [fo.Detection]}`` of a field (an image's field is frame 1)."""
    if sample.media_type == "video":
        out = {}
        for fn, frame in sample.frames.items():
            dets = frame.get_field(field) if frame.has_field(field) else None
            if dets is not None:
                out[fn] = list(dets.detections)
        return out
    dets = sample.get_field(field) if sample.has_field(field) else None
    return {1: list(dets.detections)} if dets is not None else {}


def frame_size(sample) -> tuple[int, int, int]:
    """(width, height, number of frames) from the sample's metadata (compute it first)."""
    md = sample.metadata
    if md is None:
        from clipvis_core.errors import InputError

        raise InputError(f"sample {sample.filepath}: no metadata and the media could not be read; "
                         "fix the path or run dataset.compute_metadata()")
    if sample.media_type == "video":
        return int(md.frame_width), int(md.frame_height), int(md.total_frame_count)
    return int(md.width), int(md.height), 1


def video_labels(sample, field: str) -> VideoLabels:
    width, height, num_frames = frame_size(sample)
    dets = frame_detections(sample, field)
    # Containers sometimes under-report their frame count; never drop labelled frames.
    num_frames = max([num_frames, *dets.keys()])
    return group_tracks(dets, width, height, num_frames)
