"""Point sampling on mask logits (Mask2Former / PointRend), as upstream computes it.

Coordinates are (x, y) in [0, 1] of the padded frame, sampled bilinearly with zero padding and
``align_corners=False`` at each tensor's own resolution (predictions at stride 4, targets full size).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F



def point_sample(maps: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """maps [M, C, H, W], coords [M, P, 2] -> [M, C, P]."""
    grid = (2.0 * coords - 1.0).unsqueeze(2)  # [M, P, 1, 2]
    return F.grid_sample(maps, grid, mode="bilinear", padding_mode="zeros", align_corners=False).squeeze(3)


def uncertain_point_coords(logits: torch.Tensor, num_points: int, oversample_ratio: float,
                           importance_ratio: float, sampler) -> torch.Tensor:
    """logits [M, 1, h, w] -> [M, num_points, 2]: the most uncertain (|logit| smallest) of
    ``oversample_ratio * num_points`` random candidates, plus uniform points for the rest."""
    m = logits.shape[0]
    cand = sampler.candidates(m, int(num_points * oversample_ratio), logits.device)
    uncertainty = -point_sample(logits, cand).abs()[:, 0]  # [M, n]
    k = int(importance_ratio * num_points)
    idx = torch.topk(uncertainty, k=k, dim=1)[1]
    picked = torch.gather(cand, 1, idx.unsqueeze(-1).expand(-1, -1, 2))
    rest = num_points - k
    if rest > 0:
        picked = torch.cat([picked, sampler.uniform(m, rest, logits.device)], dim=1)
    return picked
