"""Final pass: selected (track, class) pairs -> tracks with per-frame RLE masks at output resolution."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from pycocotools import mask as mask_utils

from .preprocess import FrameGeometry
from .scoring import MaskScore, Selection, frame_keep, masks_to_output_logits
from .store import FrameStore
from .tracks import Track, rle_box


@dataclass
class InstanceTrace:
    """Optional record of the final pass (parity tests, debugging)."""

    keep: list[torch.Tensor] = field(default_factory=list)  # per frame [K] bool
    logits: list[torch.Tensor] = field(default_factory=list)  # per frame [K, H, W] output-size logits (-1 = blanked)
    scores: torch.Tensor | None = None  # [K] final instance scores, selection order


def _encode(masks: np.ndarray) -> list[dict]:
    """[K, H, W] bool -> K COCO RLEs (counts as str)."""
    rles = mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
    for r in rles:
        r["counts"] = r["counts"].decode("ascii")
    return rles


def build_tracks(store: FrameStore, sel: Selection, geom: FrameGeometry, out_hw: tuple[int, int],
                 labels: list[str], trace: InstanceTrace | None = None) -> list[Track]:
    k = len(sel.queries)
    n = store.frames
    mscore = MaskScore(k)
    empty = _encode(np.zeros((1, *out_hw), dtype=bool))[0]
    rles: list[list[dict]] = [[] for _ in range(k)]
    frame_scores: list[list[float]] = [[] for _ in range(k)]
    for t in range(n):
        masks = store.read(t, "masks")[sel.queries]  # [K, h/4, w/4]
        keep, per_frame = frame_keep(sel, store.read(t, "probs"), store.read(t, "obj"))
        masks[~keep] = -1.0  # upstream blanks the whole frame of an instance
        mscore.add(masks)
        idx = torch.nonzero(keep).flatten()
        out = np.zeros((k, *out_hw), dtype=bool)
        logits = None
        if len(idx):
            # Only kept instances are resized: a constant -1 map resizes to an empty mask.
            logits = masks_to_output_logits(masks[idx], geom.padded_hw, geom.image_hw, out_hw)
            out[idx.numpy()] = (logits > 0).numpy()
        if trace is not None:
            trace.keep.append(keep)
            full = torch.full((k, *out_hw), -1.0)
            if logits is not None:
                full[idx] = logits
            trace.logits.append(full)
        encoded = _encode(out) if len(idx) else [empty] * k
        for i in range(k):
            rles[i].append(encoded[i])
            frame_scores[i].append(float(per_frame[i]))
    scores = sel.scores * mscore.value()
    if trace is not None:
        trace.scores = scores
    tracks = []
    for i in range(k):
        boxes = [None if r is empty else rle_box(r) for r in rles[i]]
        label = int(sel.labels[i])
        tracks.append(Track(id=0, label=labels[label], category_id=label, score=float(scores[i]),
                            masks=rles[i], boxes=boxes, frame_scores=frame_scores[i]))
    tracks.sort(key=lambda tr: -tr.score)
    for rank, tr in enumerate(tracks, start=1):
        tr.id = rank
    return tracks
