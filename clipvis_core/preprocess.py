"""Test-time preprocessing: shortest-edge resize (detectron2 ``ResizeShortestEdge``), normalise, pad."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image


@dataclass(frozen=True)
class FrameGeometry:
    original_hw: tuple[int, int]  # decoded frame size
    image_hw: tuple[int, int]  # after resize (what the network sees, unpadded)
    padded_hw: tuple[int, int]  # after padding to the size divisibility


def resized_hw(h: int, w: int, min_size: int | None, max_size: int | None) -> tuple[int, int]:
    """Shorter side -> min_size, longer side capped at max_size (rounded as detectron2 does)."""
    if not min_size:
        return h, w
    scale = min_size / min(h, w)
    nh, nw = h * scale, w * scale
    if max_size and max(nh, nw) > max_size:
        scale = max_size / max(nh, nw)
        nh, nw = nh * scale, nw * scale
    return int(nh + 0.5), int(nw + 0.5)


def geometry(h: int, w: int, min_size: int | None, max_size: int | None, divisibility: int) -> FrameGeometry:
    ih, iw = resized_hw(h, w, min_size, max_size)
    d = max(divisibility, 1)
    return FrameGeometry((h, w), (ih, iw), ((ih + d - 1) // d * d, (iw + d - 1) // d * d))


def prepare_frames(frames: list[np.ndarray], geom: FrameGeometry, mean: torch.Tensor, std: torch.Tensor, device) -> torch.Tensor:
    """RGB uint8 HxWx3 frames -> [N, 3, Hp, Wp] float32, normalised, zero-padded after normalisation."""
    ih, iw = geom.image_hw
    out = torch.zeros((len(frames), 3, *geom.padded_hw), dtype=torch.float32, device=device)
    for i, f in enumerate(frames):
        if f.shape[:2] != (ih, iw):
            # PIL bilinear on uint8, as detectron2's ResizeTransform does.
            f = np.array(Image.fromarray(f).resize((iw, ih), Image.BILINEAR))  # writable copy
        x = torch.from_numpy(np.ascontiguousarray(f)).to(device).permute(2, 0, 1).float()
        out[i, :, :ih, :iw] = (x - mean) / std
    return out
