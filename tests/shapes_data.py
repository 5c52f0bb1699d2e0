"""Generated training data: YouTube-VIS datasets of moving shapes (frame folders + RLE masks).

Each video has 1-3 shapes (disc, box, triangle) of random colour, size, start and velocity on a
noisy background; later shapes occlude earlier ones and the stored masks are the visible parts,
so the ground truth is exact. Different seeds give different videos (held-out sets).
"""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from videogen import write_frame_dir

CATEGORIES = ["disc", "box", "triangle"]


def _draw(kind: str, canvas: np.ndarray, cx: float, cy: float, r: float, colour) -> None:
    c = (int(round(cx)), int(round(cy)))
    r = int(round(r))
    if kind == "disc":
        cv2.circle(canvas, c, r, colour, -1)
    elif kind == "box":
        cv2.rectangle(canvas, (c[0] - r, c[1] - r), (c[0] + r, c[1] + r), colour, -1)
    else:
        pts = np.array([[c[0], c[1] - r], [c[0] - r, c[1] + r], [c[0] + r, c[1] + r]], np.int32)
        cv2.fillPoly(canvas, [pts], colour)


def shapes_video(rng: np.random.Generator, num_frames: int, height: int, width: int, num_shapes: int | None = None):
    """(frames uint8 [T, H, W, 3], masks bool [N, T, H, W], category names [N])."""
    bg = rng.integers(10, 90, size=3)
    noise = rng.integers(-12, 13, size=(num_frames, height, width, 3))
    frames = np.clip(bg + noise, 0, 255).astype(np.uint8)
    n = num_shapes or int(rng.integers(1, 4))
    kinds = [CATEGORIES[int(k)] for k in rng.integers(0, 3, size=n)]
    s = min(height, width)
    shapes = []
    for kind in kinds:
        r = rng.uniform(0.12, 0.22) * s
        x, y = rng.uniform(r, width - r), rng.uniform(r, height - r)
        vx, vy = rng.uniform(-0.06, 0.06, size=2) * s
        colour = tuple(int(v) for v in rng.integers(120, 256, size=3))
        shapes.append((kind, x, y, vx, vy, r, colour))
    masks = np.zeros((n, num_frames, height, width), bool)
    for t in range(num_frames):
        owner = np.full((height, width), -1, np.int16)
        for k, (kind, x, y, vx, vy, r, colour) in enumerate(shapes):
            cx, cy = np.clip(x + vx * t, r, width - r), np.clip(y + vy * t, r, height - r)
            _draw(kind, frames[t], cx, cy, r, colour)
            layer = np.zeros((height, width), np.uint8)
            _draw(kind, layer, cx, cy, r, 1)
            owner[layer > 0] = k
        for k in range(n):
            masks[k, t] = owner == k
    return frames, masks, kinds


def write_ytvis(root: Path, num_videos: int, seed: int, num_frames: int = 4, height: int = 64, width: int = 64,
                name: str = "train", num_shapes: int | None = None) -> Path:
    """``root/<name>.json`` + ``root/<name>/<video>/00000.jpg ...``; returns the JSON path."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    videos, anns = [], []
    for v in range(1, num_videos + 1):
        frames, masks, kinds = shapes_video(rng, num_frames, height, width, num_shapes)
        folder = f"{name}/v{v:03d}"
        write_frame_dir(root / folder, frames, ext=".png")
        videos.append({"id": v, "height": height, "width": width, "length": num_frames,
                       "file_names": [f"{folder}/{i:05d}.png" for i in range(num_frames)]})
        for k, kind in enumerate(kinds):
            segs = []
            for t in range(num_frames):
                if masks[k, t].any():
                    rle = mask_utils.encode(np.asfortranarray(masks[k, t].astype(np.uint8)))
                    segs.append({"size": [height, width], "counts": rle["counts"].decode("ascii")})
                else:
                    segs.append(None)
            anns.append({"id": len(anns) + 1, "video_id": v, "category_id": CATEGORIES.index(kind) + 1,
                         "iscrowd": 0, "segmentations": segs})
    data = {"videos": videos, "annotations": anns,
            "categories": [{"id": i + 1, "name": c} for i, c in enumerate(CATEGORIES)]}
    path = root / f"{name}.json"
    path.write_text(json.dumps(data))
    return path
