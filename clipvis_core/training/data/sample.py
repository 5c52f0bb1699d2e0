"""The one sample type every training source produces.

A source yields ``SampleRecord``s: cheap, picklable descriptions (file references and encoded
annotations, nothing decoded), so a dataset of 100k videos costs a few MB in the main process and
data-loader workers decode lazily. ``decode`` in ``data/decode.py`` turns a record into a ``Sample``
(pixels + binary masks); augmentation maps ``Sample -> Sample``.

Images are clips of one frame. Categories are optional (training is class-agnostic).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Union

import numpy as np

# A frame reference: an image file path, or (video file path, 0-based frame index).
FrameRef = Union[str, tuple[str, int]]
# One instance in one frame: COCO polygons (list of flat xy lists), a COCO RLE dict (compressed
# "counts" string or uncompressed list), {"brush_rle": [...]} (Label Studio brush RLE), a bool [H, W]
# array, or None = absent in that frame.
Segmentation = Union[list, dict, np.ndarray, None]


@dataclass
class InstanceRecord:
    segmentations: list[Segmentation]  # one per frame of the record
    category: str | None = None
    iscrowd: bool = False
    track_id: Any = None  # for error messages and debugging only; identities are not trained


@dataclass
class SampleRecord:
    source: str  # where it came from, for one-line errors: "annotations.json: image 12 (a.jpg)"
    frames: list[FrameRef]
    height: int
    width: int
    instances: list[InstanceRecord] = field(default_factory=list)
    # True for video sources (YTVIS, FiftyOne video): frame sampling + the video augmentation;
    # False for images (one frame, large-scale jitter), even when a video has a single frame.
    video: bool = False


@dataclass
class Sample:
    frames: np.ndarray  # uint8 [T, H, W, 3] RGB
    masks: np.ndarray  # bool [N, T, H, W]; an all-False frame = absent there
    categories: list[str | None]  # [N]
    source: str = ""

    def __post_init__(self):
        t, h, w = self.frames.shape[:3]
        if self.masks.shape[1:] != (t, h, w) or len(self.categories) != self.masks.shape[0]:
            raise ValueError(f"{self.source}: masks {self.masks.shape} do not fit frames {self.frames.shape}")
