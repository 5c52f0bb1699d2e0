"""Normalised sine positional encoding (DETR / Mask2Former), computed on the padded map."""
from __future__ import annotations

import functools
import math

import torch


def sine_position_encoding(x: torch.Tensor, num_pos_feats: int, temperature: float = 10000.0) -> torch.Tensor:
    """[N, C, H, W] -> [N, 2 * num_pos_feats, H, W]; no padding mask (upstream attends padding too).

    It depends only on the map's size, so inference reuses it across frames (a read-only tensor
    expanded over the batch); with autograd on it is computed afresh."""
    n, _, h, w = x.shape
    if torch.is_grad_enabled():
        return _encode(n, h, w, num_pos_feats, temperature, x.device)
    one = _cached(h, w, num_pos_feats, temperature, x.device, torch.is_inference_mode_enabled())
    return one.expand(n, -1, -1, -1)


@functools.lru_cache(maxsize=8)
def _cached(h: int, w: int, num_pos_feats: int, temperature: float, device: torch.device, _inference: bool) -> torch.Tensor:
    return _encode(1, h, w, num_pos_feats, temperature, device)


def _encode(n: int, h: int, w: int, num_pos_feats: int, temperature: float, device: torch.device) -> torch.Tensor:
    scale, eps = 2 * math.pi, 1e-6
    ones = torch.ones((n, h, w), device=device, dtype=torch.float32)
    y_embed = ones.cumsum(1)
    x_embed = ones.cumsum(2)
    y_embed = y_embed / (y_embed[:, -1:, :] + eps) * scale
    x_embed = x_embed / (x_embed[:, :, -1:] + eps) * scale
    dim_t = torch.arange(num_pos_feats, dtype=torch.float32, device=device)
    dim_t = temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / num_pos_feats)
    pos_x = x_embed[:, :, :, None] / dim_t
    pos_y = y_embed[:, :, :, None] / dim_t
    pos_x = torch.stack((pos_x[:, :, :, 0::2].sin(), pos_x[:, :, :, 1::2].cos()), dim=4).flatten(3)
    pos_y = torch.stack((pos_y[:, :, :, 0::2].sin(), pos_y[:, :, :, 1::2].cos()), dim=4).flatten(3)
    return torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2)
