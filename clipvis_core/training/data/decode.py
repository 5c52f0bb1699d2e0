"""``SampleRecord`` -> ``Sample``: read the frames (cv2, RGB) and rasterise every instance.

Runs in data-loader workers. Video frames are read by seeking the container, one capture per
video; ``select_frames`` first cuts a record down to the sampled frames so only those are decoded.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from ...errors import InputError
from .masks import rasterize
from .sample import Sample, SampleRecord


def select_frames(record: SampleRecord, indices: list[int]) -> SampleRecord:
    """The record restricted to ``indices`` (repeats allowed, order kept)."""
    insts = [replace(inst, segmentations=[inst.segmentations[i] for i in indices]) for inst in record.instances]
    return replace(record, frames=[record.frames[i] for i in indices], instances=insts)


def _read_image(path: str, where: str) -> np.ndarray:
    import cv2

    if not Path(path).is_file():
        raise InputError(f"{where}: image file not found: {path}: fix the path in the annotations or pass "
                         "--images DIR (the folder the file names are relative to)")
    bgr = cv2.imread(path, cv2.IMREAD_COLOR)
    if bgr is None:
        raise InputError(f"{where}: cannot read image {path}: the file is corrupt or not an image; re-save it as JPEG or PNG")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _read_video_frames(path: str, indices: list[int], where: str) -> dict[int, np.ndarray]:
    import cv2

    if not Path(path).is_file():
        raise InputError(f"{where}: video file not found: {path}: fix the sample's filepath")
    cap = cv2.VideoCapture(path, cv2.CAP_FFMPEG)
    out: dict[int, np.ndarray] = {}
    try:
        if not cap.isOpened():
            raise InputError(f"{where}: cannot decode video {path}: re-encode it (ffmpeg -i IN -c:v libx264 out.mp4)")
        pos = 0
        for idx in sorted(set(indices)):
            if idx - pos > 8 or idx < pos:  # far ahead: seek (OpenCV lands exactly, decoding from the keyframe)
                cap.set(cv2.CAP_PROP_POS_FRAMES, idx)
                pos = idx
            while pos < idx:  # near: decoding on is cheaper than a seek
                if not cap.grab():
                    break
                pos += 1
            ok, bgr = cap.read()
            if not ok or bgr is None:
                raise InputError(f"{where}: video {path} has no frame {idx}: the file is shorter than its labels "
                                 "say or damaged; re-encode it or fix the labels")
            pos = idx + 1
            out[idx] = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    finally:
        cap.release()
    return out


def _read_frames(record: SampleRecord) -> list[np.ndarray]:
    videos: dict[str, list[int]] = {}
    for ref in record.frames:
        if isinstance(ref, tuple):
            videos.setdefault(ref[0], []).append(int(ref[1]))
    decoded = {p: _read_video_frames(p, idx, record.source) for p, idx in videos.items()}
    frames = []
    for ref in record.frames:
        img = decoded[ref[0]][int(ref[1])] if isinstance(ref, tuple) else _read_image(ref, record.source)
        if img.shape[:2] != (record.height, record.width):
            name = f"{ref[0]} frame {ref[1]}" if isinstance(ref, tuple) else ref
            raise InputError(f"{record.source}: {name} is {img.shape[1]}x{img.shape[0]} but its annotations say "
                             f"{record.width}x{record.height}: fix the image's width/height in the annotations "
                             "(masks must be at the image's resolution)")
        frames.append(img)
    return frames


def decode(record: SampleRecord) -> Sample:
    frames = np.stack(_read_frames(record))
    t, h, w = frames.shape[:3]
    masks = np.zeros((len(record.instances), t, h, w), bool)
    for n, inst in enumerate(record.instances):
        for k, seg in enumerate(inst.segmentations):
            masks[n, k] = rasterize(seg, h, w, f"{record.source}: instance {inst.track_id}")
    return Sample(frames=frames, masks=masks, categories=[i.category for i in record.instances], source=record.source)
