"""Upstream's class-agnostic set criterion (``SetCriterion`` / ``SetCriterion_video``).

Per decoder output (final and, with deep supervision, every auxiliary one) and with a fresh
matching each time: the 2-way object cross-entropy with the fixed empty-object weight, point-sampled
mask BCE and dice on importance-sampled points, and the L1 loss of the mask-IoU head against the IoU
measured on those points. Losses come back unweighted; ``weigh`` applies ``weight_dict`` as upstream
does inside its forward (and drops keys without a weight).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.distributed as dist
import torch.nn.functional as F

from ..modeling.transformer_decoder import DecoderOutput
from .config import LossConfig
from .matcher import HungarianMatcher
from .points import point_sample
from .sampling import PointSampler
from .targets import FrameTarget

# Index of "no object" in the 2-way object logits; a target label other than this is an object.
NO_OBJECT = 1
TERMS = ("loss_object_ce", "loss_mask", "loss_dice", "loss_iou")


@dataclass
class LayerRecord:
    """What one criterion call did for one decoder output (tests and debugging)."""

    indices: list = field(default_factory=list)
    costs: list = field(default_factory=list)
    point_coords: torch.Tensor | None = None
    gt_iou: torch.Tensor | None = None


def sigmoid_ce_loss(logits, labels, num_masks: float):
    return F.binary_cross_entropy_with_logits(logits, labels, reduction="none").mean(1).sum() / num_masks


def dice_loss(logits, labels, num_masks: float):
    p = logits.sigmoid()
    loss = 1 - (2 * (p * labels).sum(-1) + 1) / (p.sum(-1) + labels.sum(-1) + 1)
    return loss.sum() / num_masks


def point_iou(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """IoU per row of the binarised prediction (sigmoid > 0.5) and the sampled target as sampled
    (fractional at edges), as upstream; no smoothing, so 0/0 is NaN (never a positive)."""
    pred = (logits.sigmoid() > 0.5).float()
    inter = (pred * labels).sum(-1)
    return inter / (pred.sum(-1) + labels.sum(-1) - inter)


class SetCriterion:
    def __init__(self, cfg: LossConfig, num_aux_layers: int):
        self.cfg = cfg
        self.num_aux_layers = num_aux_layers
        self.matcher = HungarianMatcher(cfg.object_weight, cfg.mask_weight, cfg.dice_weight, cfg.num_points)
        base = {"loss_object_ce": cfg.object_weight, "loss_mask": cfg.mask_weight, "loss_dice": cfg.dice_weight, "loss_iou": cfg.iou_weight}
        self.weight_dict = dict(base)
        if cfg.deep_supervision:
            for i in range(num_aux_layers):
                self.weight_dict.update({f"{k}_{i}": v for k, v in base.items()})

    def __call__(self, out: DecoderOutput, targets: list[FrameTarget], sampler: PointSampler,
                 record: dict[str, LayerRecord] | None = None) -> dict[str, torch.Tensor]:
        num_masks = self._num_masks(targets, out.masks.device)
        layers = [("final", "", (out.object_logits, out.ious, out.masks))]
        if self.cfg.deep_supervision:
            layers += [(f"aux{i}", f"_{i}", a) for i, a in enumerate(out.aux)]
        losses = {}
        for tag, suffix, (obj, ious, masks) in layers:
            rec = LayerRecord() if record is not None else None
            indices = self.matcher(obj, masks, targets, sampler, rec.costs if rec else None)
            if rec:
                rec.indices = indices
                record[tag] = rec
            terms = self._losses(obj, ious, masks, targets, indices, num_masks, sampler, rec)
            losses.update({k + suffix: v for k, v in terms.items()})
        return losses

    def weigh(self, losses: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: v * self.weight_dict[k] for k, v in losses.items() if k in self.weight_dict}

    @staticmethod
    def _num_masks(targets, device) -> float:
        n = torch.tensor([float(sum(len(t.labels) for t in targets))], device=device)
        world = 1
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(n)
            world = dist.get_world_size()
        return torch.clamp(n / world, min=1).item()

    def _losses(self, obj, ious, masks, targets, indices, num_masks, sampler, rec):
        cfg = self.cfg
        batch_idx = torch.cat([torch.full_like(src, b) for b, (src, _) in enumerate(indices)]).to(masks.device)
        src_idx = torch.cat([src for src, _ in indices]).to(masks.device)

        # Object / no-object: matched queries are objects (even for an absent target), the rest not.
        target_object = torch.full(obj.shape[:2], NO_OBJECT, dtype=torch.int64, device=obj.device)
        target_object[batch_idx, src_idx] = 0
        weight = torch.tensor(cfg.empty_object_weight, dtype=torch.float32, device=obj.device)
        loss_ce = F.cross_entropy(obj.float().transpose(1, 2), target_object, weight)

        src_masks = masks[batch_idx, src_idx][:, None]  # [M, 1, h, w]
        tgt_masks = torch.cat([t.masks[tgt.to(t.masks.device)] for t, (_, tgt) in zip(targets, indices)])[:, None]
        with torch.no_grad():
            coords = sampler.mask_points(src_masks, cfg.num_points, cfg.oversample_ratio, cfg.importance_sample_ratio)
            labels = point_sample(tgt_masks.to(src_masks.dtype), coords)[:, 0]
        logits = point_sample(src_masks, coords)[:, 0]
        gt_iou = point_iou(logits.detach(), labels)
        # Only matched masks with a positive point-IoU train the IoU head (NaN > 0 is False).
        positive = gt_iou > 0
        pred_iou = ious[batch_idx, src_idx][:, 0]
        if positive.any():
            loss_iou = (pred_iou[positive] - gt_iou[positive]).abs().sum() / positive.sum()
        else:
            loss_iou = pred_iou.sum() * 0.0
        if rec is not None:
            rec.point_coords, rec.gt_iou = coords, gt_iou
        return {
            "loss_object_ce": loss_ce,
            "loss_mask": sigmoid_ce_loss(logits, labels, num_masks),
            "loss_dice": dice_loss(logits, labels, num_masks),
            "loss_iou": loss_iou,
        }
