"""Hungarian matching of queries to per-frame targets, upstream's memory-efficient form.

Per batch entry: ``C = w_mask * BCE-cost + w_object * (-p_label) + w_dice * dice-cost`` on one set of
random points shared by every query and target of that entry (fresh for every decoder layer).
``cost_object`` is minus a probability, not a log-probability; an absent target (label 1) therefore
costs the query's no-object probability, as upstream.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

from .points import point_sample
from .sampling import PointSampler


@dataclass
class MatchCosts:
    """Cost matrices [Q, N] of one batch entry (kept only when a recorder asks for them)."""

    cost_mask: torch.Tensor
    cost_dice: torch.Tensor
    total: torch.Tensor


def batch_sigmoid_ce_cost(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """logits [Q, P], targets [N, P] -> mean-over-points BCE of every pair [Q, N]."""
    pos = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits), reduction="none")
    neg = F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits), reduction="none")
    return (pos @ targets.T + neg @ (1 - targets).T) / logits.shape[1]


def batch_dice_cost(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    p = logits.sigmoid()
    numerator = 2 * (p @ targets.T)
    denominator = p.sum(-1)[:, None] + targets.sum(-1)[None, :]
    return 1 - (numerator + 1) / (denominator + 1)


class HungarianMatcher:
    def __init__(self, cost_object: float, cost_mask: float, cost_dice: float, num_points: int):
        self.cost_object, self.cost_mask, self.cost_dice = cost_object, cost_mask, cost_dice
        self.num_points = num_points

    @torch.no_grad()
    def __call__(self, object_logits, masks, targets, sampler: PointSampler, costs_out: list | None = None):
        """object_logits [B, Q, 2], masks [B, Q, h, w], targets: B FrameTargets.
        Returns B pairs (query indices, target indices), int64 tensors, rows ascending."""
        indices = []
        for b, tgt in enumerate(targets):
            coords = sampler.matcher_points(self.num_points, masks.device)
            # Costs in float32 whatever the autocast state (upstream disables autocast here).
            with torch.autocast(masks.device.type, enabled=False):
                prob = object_logits[b].float().softmax(-1)
                cost_object = -prob[:, tgt.labels]
                t = point_sample(tgt.masks[:, None].float(), coords.expand(tgt.masks.shape[0], -1, -1))[:, 0]
                o = point_sample(masks[b][:, None].float(), coords.expand(masks.shape[1], -1, -1))[:, 0]
                cost_mask = batch_sigmoid_ce_cost(o, t)
                cost_dice = batch_dice_cost(o, t)
                c = self.cost_mask * cost_mask + self.cost_object * cost_object + self.cost_dice * cost_dice
            c = c.cpu()
            if costs_out is not None:
                costs_out.append(MatchCosts(cost_mask.cpu(), cost_dice.cpu(), c))
            c = torch.nan_to_num(c, posinf=1e8, neginf=-1e8)  # scipy refuses non-finite costs
            rows, cols = linear_sum_assignment(c.numpy())
            indices.append((torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)))
        return indices
