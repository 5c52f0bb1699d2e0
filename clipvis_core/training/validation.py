"""Validation during training: run the segmenter on held-out samples and score it with the evaluator.

The ground truth is built from the samples' own masks (YTVIS layout, one video per sample, images
as one-frame videos). Class-agnostic AP always (one vocabulary entry, "object", and every category
counted as one); AP with a vocabulary as well when every validation instance has a category.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch

from ..tracks import encode_mask

AGNOSTIC_CLASS = "object"


@contextmanager
def eval_mode(model: torch.nn.Module):
    """Eval mode for inference, then every module's own mode back (the frozen trunk stays in eval)."""
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield model
    finally:
        for m, training in modes.items():
            m.training = training


def ground_truth(samples, category_names: list[str] | None) -> dict:
    """YTVIS ground truth of decoded samples; categories by name, or one "object" category."""
    cats = category_names or [AGNOSTIC_CLASS]
    cat_id = {n: i + 1 for i, n in enumerate(cats)}
    videos, anns = [], []
    for vid, s in enumerate(samples, start=1):
        t, h, w = s.frames.shape[:3]
        videos.append({"id": vid, "height": h, "width": w, "length": t})
        for k in range(s.masks.shape[0]):
            segs = [encode_mask(s.masks[k, f]) if s.masks[k, f].any() else None for f in range(t)]
            if not any(segs):
                continue
            name = s.categories[k] if category_names else AGNOSTIC_CLASS
            anns.append({"id": len(anns) + 1, "video_id": vid, "category_id": cat_id[name], "iscrowd": 0,
                         "segmentations": segs})
    return {"videos": videos, "categories": [{"id": i, "name": n} for n, i in cat_id.items()], "annotations": anns}


def _results(segmenter, samples, vocabulary: list[str], size=(None, None)) -> list[dict]:
    from ..evaluation import results_from_tracks
    from ..segmenter import SegmentOptions

    opts = SegmentOptions(min_size=size[0], max_size=size[1])
    results = []
    for vid, s in enumerate(samples, start=1):
        tracks = segmenter.segment(s.frames, vocabulary, opts)
        results.extend(results_from_tracks(tracks, vid))
    return results


def evaluate_records(model, resolved, records, device, size=(None, None)) -> dict[str, float]:
    """``{"val/agnostic_AP": .., "val/agnostic_AP50": .., ["val/AP": .., "val/AP50": ..]}`` as fractions;
    ``size``: (min, max) test size as ``SegmentOptions`` takes it (None: the model's)."""
    from ..evaluation import evaluate
    from ..segmenter import Segmenter
    from .data import decode

    samples = [decode(r) for r in records]
    names = sorted({c for s in samples for c in s.categories if c is not None})
    with_vocab = bool(names) and all(c is not None for s in samples for c in s.categories)
    out: dict[str, float] = {}
    with eval_mode(model):
        seg = Segmenter(model, resolved, device)
        report = evaluate(ground_truth(samples, None), _results(seg, samples, [AGNOSTIC_CLASS], size), class_agnostic=True)
        out.update({f"val/agnostic_{k}": v for k, v in report.stats.items() if k in ("AP", "AP50", "AP75")})
        if with_vocab:
            report = evaluate(ground_truth(samples, names), _results(seg, samples, names, size))
            out.update({f"val/{k}": v for k, v in report.stats.items() if k in ("AP", "AP50", "AP75")})
    return out
