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
    mscore = MaskScore(k)
    empty = _encode(np.zeros((1, *out_hw), dtype=bool))[0]
    size = list(empty["size"])
    rles: list[list[dict]] = [[] for _ in range(k)]
    frame_scores: list[list[float]] = [[] for _ in range(k)]
    zero = torch.zeros(())
    for t in range(store.frames):
        keep, per_frame = frame_keep(sel, store.read(t, "probs"), store.read(t, "obj"))
        # Upstream blanks the whole frame of an instance (mask := -1): it adds 0 to both sums
        # and resizes to an empty mask; kept masks were resized and encoded when stored.
        mscore.add_sums(torch.where(keep, store.read(t, "mask_num")[sel.queries], zero),
                        torch.where(keep, store.read(t, "mask_den")[sel.queries], zero))
        counts = store.read_rles(t) if bool(keep.any()) else None
        if trace is not None:
            _trace_frame(trace, store, t, sel, keep, geom, out_hw)
        for i in range(k):
            if keep[i]:
                rles[i].append({"size": size, "counts": counts[int(sel.queries[i])].decode("ascii")})
            else:
                rles[i].append(empty)
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


def _trace_frame(trace: InstanceTrace, store: FrameStore, t: int, sel: Selection, keep: torch.Tensor,
                 geom: FrameGeometry, out_hw: tuple[int, int]) -> None:
    """Record the kept instances' output-resolution logits from the raw logits (traced runs only)."""
    full = torch.full((len(sel.queries), *out_hw), -1.0)
    idx = torch.nonzero(keep).flatten()
    if len(idx):
        masks = store.read_raw(t)[sel.queries[idx]]
        full[idx] = masks_to_output_logits(masks, geom.padded_hw, geom.image_hw, out_hw)
    trace.keep.append(keep)
    trace.logits.append(full)
