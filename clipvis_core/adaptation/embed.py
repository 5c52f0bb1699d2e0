"""Examples -> mask-pooled CLIP embeddings, computed exactly as the classifier computes them.

At inference a track's per-frame mask logits (stride 4, padded frame) are resized to the dense CLIP
feature, binarised at 0 and pooled, then embedded by the CLIP head (``scoring.frame_class_logits``).
Here each annotated frame goes through the same preprocessing and network; a ground-truth mask is
turned into stride-4 logits (coverage - 0.5) and pooled the same way; when a predicted mask overlaps
it (mask IoU >= ``mask_iou``) that mask is pooled too, since at inference the classifier only ever
sees predicted masks (a prototype of clean masks alone sits off what it will be compared with). A
box pools over the predicted mask whose bounding box best matches it (IoU >= ``box_iou``), else
over the box itself. An instance's embedding is the normalised mean of its pooled embeddings.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..preprocess import FrameGeometry, geometry, prepare_frames
from ..training.data.decode import decode
from ..training.data.masks import rasterize
from ..training.data.sample import SampleRecord
from .examples import Example


FRAMES_PER_DECODE = 8


@dataclass
class EmbeddedExamples:
    embeddings: torch.Tensor  # [N, D] L2-normalised, one per example
    labels: list[str]  # [N]
    pooled_from: dict[str, int]  # observations pooled over: "mask", "predicted mask", "box"


def _pick_frames(ex: Example, per_instance: int) -> list[int]:
    n = len(ex.observations)
    if n <= per_instance:
        return list(range(n))
    return sorted({int(round(i)) for i in np.linspace(0, n - 1, per_instance)})


def _mask_logits(mask: np.ndarray, geom: FrameGeometry) -> torch.Tensor:
    """bool [H, W] at the decoded size -> [H/4, W/4] logits on the padded grid (as the decoder's)."""
    m = torch.from_numpy(mask.astype(np.float32))[None, None]
    m = F.interpolate(m, size=geom.image_hw, mode="bilinear", align_corners=False)
    pad = torch.zeros((1, 1, *geom.padded_hw))
    pad[..., : geom.image_hw[0], : geom.image_hw[1]] = m
    h4, w4 = geom.padded_hw[0] // 4, geom.padded_hw[1] // 4
    return F.interpolate(pad, size=(h4, w4), mode="area")[0, 0] - 0.5


def _box_to_grid(box, geom: FrameGeometry) -> tuple[float, float, float, float]:
    """(x, y, w, h) pixels of the decoded frame -> (x0, y0, x1, y1) on the stride-4 grid."""
    sy, sx = geom.image_hw[0] / geom.original_hw[0] / 4, geom.image_hw[1] / geom.original_hw[1] / 4
    x, y, w, h = box
    return x * sx, y * sy, (x + w) * sx, (y + h) * sy


def _mask_boxes(binary: torch.Tensor) -> torch.Tensor:
    """[Q, h, w] bool -> [Q, 4] (x0, y0, x1, y1) tight boxes in cell units; empty masks get zeros."""
    q, h, w = binary.shape
    rows, cols = binary.any(2), binary.any(1)
    ar_h, ar_w = torch.arange(h), torch.arange(w)
    y0 = torch.where(rows, ar_h, h).min(1).values
    y1 = torch.where(rows, ar_h + 1, 0).max(1).values
    x0 = torch.where(cols, ar_w, w).min(1).values
    x1 = torch.where(cols, ar_w + 1, 0).max(1).values
    empty = ~rows.any(1)
    out = torch.stack([x0, y0, x1, y1], 1).float()
    out[empty] = 0
    return out


def _box_iou(boxes: torch.Tensor, box: tuple[float, float, float, float]) -> torch.Tensor:
    b = torch.tensor(box)
    lt, rb = torch.maximum(boxes[:, :2], b[:2]), torch.minimum(boxes[:, 2:], b[2:])
    inter = (rb - lt).clamp(min=0).prod(1)
    area = (boxes[:, 2:] - boxes[:, :2]).clamp(min=0).prod(1)
    return inter / (area + (b[2:] - b[:2]).prod() - inter + 1e-9)


def _box_logits(box, pred: torch.Tensor, min_iou: float) -> tuple[torch.Tensor, str]:
    """The predicted mask that best matches the box, else the box as a mask (both [h4, w4] logits)."""
    binary = (pred > 0).cpu()
    iou = _box_iou(_mask_boxes(binary), box)
    best = int(iou.argmax())
    if float(iou[best]) >= min_iou:
        return pred[best].float().cpu(), "predicted mask"
    h4, w4 = pred.shape[-2:]
    ys, xs = torch.arange(h4)[:, None] + 0.5, torch.arange(w4)[None, :] + 0.5
    inside = (xs >= box[0]) & (xs <= box[2]) & (ys >= box[1]) & (ys <= box[3])
    if not inside.any():  # a box thinner than one cell: its centre cell
        cy, cx = int(min((box[1] + box[3]) / 2, h4 - 1)), int(min((box[0] + box[2]) / 2, w4 - 1))
        inside[cy, cx] = True
    return inside.float() - 0.5, "box"


def _best_predicted(gt: torch.Tensor, pred: torch.Tensor, min_iou: float) -> torch.Tensor | None:
    """The predicted mask ([Q, h4, w4] logits) overlapping ``gt`` logits best, if IoU >= ``min_iou``."""
    g, p = (gt > 0).flatten(), (pred > 0).flatten(1).cpu()
    inter = (p & g).sum(1).float()
    iou = inter / ((p | g).sum(1).float() + 1e-9)
    best = int(iou.argmax())
    return pred[best].float().cpu() if float(iou[best]) >= min_iou else None


def _embed(backbone, dense: torch.Tensor, logits4: torch.Tensor) -> torch.Tensor:
    """[K, h4, w4] logits -> [K, D] normalised embeddings (scoring.frame_class_logits' pooling)."""
    m = F.interpolate(logits4[None].to(dense), size=dense.shape[-2:], mode="bilinear", align_corners=False)
    # A region smaller than one dense cell would pool nothing (a zero embedding): keep its best cell.
    empty = (m > 0).flatten(2).sum(-1) == 0
    for k in torch.nonzero(empty[0]).flatten().tolist():
        flat = m[0, k].flatten()
        flat[flat.argmax()] = 1.0
    return F.normalize(backbone.embed_masks(dense, m)[0].float(), dim=-1)


def _sample_records(examples: list[Example], picks: list[list[int]]):
    """Group picked observations by (image / video) so each frame is decoded and run once."""
    groups: dict = {}
    for e, (ex, idx) in enumerate(zip(examples, picks)):
        for i in idx:
            o = ex.observations[i]
            key = o.frame[0] if isinstance(o.frame, tuple) else o.frame
            if ex.video and not isinstance(o.frame, tuple):
                key = ex.source  # a YTVIS frame folder: one group per video
            groups.setdefault(key, []).append((e, o))
    for group in groups.values():
        ordered = list(dict.fromkeys(o.frame for _, o in group))
        # A few frames decoded at a time: memory stays flat however long the video is.
        for start in range(0, len(ordered), FRAMES_PER_DECODE):
            frames = ordered[start:start + FRAMES_PER_DECODE]
            slot = {f: k for k, f in enumerate(frames)}
            items = [(e, o) for e, o in group if o.frame in slot]
            ex0 = examples[items[0][0]]
            yield SampleRecord(ex0.source, frames, ex0.height, ex0.width, [], ex0.video), items, slot


def embed_examples(segmenter, examples: list[Example], frames_per_instance: int = 3,
                   box_iou: float = 0.5, mask_iou: float | None = 0.3,
                   size: tuple[int | None, int | None] = (None, None)) -> EmbeddedExamples:
    """``mask_iou`` None: masks pool over themselves only (the backbone alone, 2-3x cheaper).
    ``size``: (min, max) as ``SegmentOptions`` gives them (None: the model's): pool at the size
    the predictions are made at, or the prototypes describe features the classifier never sees."""
    model, cfg, device = segmenter.model, segmenter.cfg, segmenter.device
    inf = cfg.inference
    picks = [_pick_frames(ex, max(1, frames_per_instance)) for ex in examples]
    sums = torch.zeros(len(examples), model.backbone.embed_dim)
    pooled: Counter = Counter()
    for rec, items, slot in _sample_records(examples, picks):
        sample = decode(rec)
        min_size = inf.min_size if size[0] is None else size[0]
        geom = geometry(rec.height, rec.width, min_size, size[1] or inf.max_size, cfg.size_divisibility)
        for f, t in slot.items():
            here = [(e, o) for e, o in items if o.frame == f]
            x = prepare_frames([sample.frames[t]], geom, model.pixel_mean, model.pixel_std, device)
            with torch.inference_mode():
                if mask_iou is not None or any(o.mask is None for _, o in here):  # predicted masks needed
                    out = model.forward_frames(x)
                    dense, pred = out.dense, out.decoder.masks[0]
                else:  # masks only need the dense CLIP feature: the backbone alone
                    dense, pred = model.backbone(x).clip_vis_dense, None
                logits, owners = [], []
                for e, o in here:
                    if o.mask is not None:
                        mask = rasterize(o.mask, rec.height, rec.width, f"{rec.source}: instance {e}")
                        lg = _mask_logits(mask, geom)
                        logits.append(lg)
                        owners.append(e)
                        pooled["mask"] += 1
                        near = _best_predicted(lg, pred, mask_iou) if mask_iou is not None else None
                        if near is not None:
                            logits.append(near)
                            owners.append(e)
                            pooled["predicted mask"] += 1
                    else:
                        lg, how = _box_logits(_box_to_grid(o.box, geom), pred, box_iou)
                        logits.append(lg)
                        owners.append(e)
                        pooled[how] += 1
                emb = _embed(model.backbone, dense[:1].float(), torch.stack(logits)).cpu()
            for e, v in zip(owners, emb):
                sums[e] += v
    return EmbeddedExamples(F.normalize(sums, dim=-1), [ex.label for ex in examples], dict(pooled))
