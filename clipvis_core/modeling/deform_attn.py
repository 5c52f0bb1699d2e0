"""Multi-scale deformable attention (Deformable DETR) in pure PyTorch, CPU and CUDA.

Same math as upstream's ``ms_deform_attn_core_pytorch`` (bilinear sampling, zero padding,
align_corners=False). The default path avoids ``grid_sample``'s [N*M, D, Lq, L*P] intermediate
(memory-bound, the largest single cost upstream) by folding bilinear and attention weights into one
weighted ``embedding_bag`` over the flattened value map.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .cpu_kernels import Linear


def ms_deform_attn_grid_sample(value, spatial_shapes, sampling_locations, attention_weights):
    """Reference path (upstream's formulation). value [N, S, M, D]; locations [N, Lq, M, L, P, 2] in [0, 1]."""
    n, _, m, d = value.shape
    _, lq, _, num_levels, p, _ = sampling_locations.shape
    sizes = [int(h) * int(w) for h, w in spatial_shapes]
    values = value.split(sizes, dim=1)
    grids = 2 * sampling_locations - 1
    sampled = []
    for lid, (h, w) in enumerate(spatial_shapes):
        v = values[lid].flatten(2).transpose(1, 2).reshape(n * m, d, int(h), int(w))
        g = grids[:, :, :, lid].transpose(1, 2).flatten(0, 1)
        sampled.append(F.grid_sample(v, g, mode="bilinear", padding_mode="zeros", align_corners=False))
    attn = attention_weights.transpose(1, 2).reshape(n * m, 1, lq, num_levels * p)
    out = (torch.stack(sampled, dim=-2).flatten(-2) * attn).sum(-1).view(n, m * d, lq)
    return out.transpose(1, 2).contiguous()


def ms_deform_attn_bag(value, spatial_shapes, sampling_locations, attention_weights):
    """Fast path: bilinear sampling fused with the attention weights as one ``embedding_bag``.

    Every (frame, query, head) output is a weighted sum of 4 * L * P rows of the value table (the
    four bilinear neighbours of each sampling point), so ``F.embedding_bag(mode="sum")`` with
    per-sample weights computes it without materialising sampled values. Each level's map gets a
    zero border (1 before, 2 after) and coordinates are clamped to [-1, size]: a point outside the
    map then lands on zeros with unchanged weights, which is ``grid_sample``'s zero padding without
    any validity masks. value [N, S, M, D]; sampling_locations [N, Lq, M, L, P, 2] (x, y in [0, 1]);
    attention_weights [N, Lq, M, L, P]. Returns [N, Lq, M*D].
    """
    n, s, m, d = value.shape
    _, lq, _, num_levels, p, _ = sampling_locations.shape
    dev = value.device
    blocks, starts, offsets, start = [], [], [], 0
    for lvl, (h, w) in enumerate(spatial_shapes):
        h, w = int(h), int(w)
        v = value[:, start:start + h * w].reshape(n, h, w, m, d)
        v = F.pad(v.permute(0, 3, 4, 1, 2), (1, 2, 1, 2))  # [N, M, D, h+3, w+3]
        blocks.append(v.permute(0, 1, 3, 4, 2).reshape(n * m, -1, d))
        starts.append(sum(b.shape[1] for b in blocks[:-1]))
        offsets.append((0, 1, w + 3, w + 4))
        start += h * w
    table = torch.cat(blocks, 1)  # [N*M, S_padded, D]
    s_pad = table.shape[1]
    table = table.reshape(-1, d)
    size = torch.tensor([[int(w), int(h)] for h, w in spatial_shapes], device=dev, dtype=sampling_locations.dtype)
    # Pixel coordinates with align_corners=False: the centre of pixel i sits at i + 0.5.
    xy = (sampling_locations * size.view(1, 1, 1, num_levels, 1, 2) - 0.5).clamp_(min=-1.0)
    xy = torch.minimum(xy, size.view(1, 1, 1, num_levels, 1, 2))
    xy0 = xy.floor()
    frac = xy - xy0
    xy0 = xy0.long() + 1  # into the bordered map
    width = (size[:, 0].long() + 3).view(1, 1, 1, num_levels, 1)
    lvl_start = torch.tensor(starts, device=dev).view(1, 1, 1, num_levels, 1)
    head = (torch.arange(n, device=dev).view(n, 1, 1) * m + torch.arange(m, device=dev).view(1, 1, m)) * s_pad
    top_left = head.view(n, 1, m, 1, 1) + lvl_start + xy0[..., 1] * width + xy0[..., 0]
    corner = torch.tensor(offsets, device=dev).view(1, 1, 1, num_levels, 1, 4)
    idx = (top_left.unsqueeze(-1) + corner).reshape(n * lq * m, num_levels * p * 4)
    fx, fy = frac.unbind(-1)
    gx = torch.stack((1 - fx, fx), -1)
    gy = torch.stack((1 - fy, fy), -1) * attention_weights.unsqueeze(-1)
    # corner order (dy, dx) = 00, 01, 10, 11, as in `offsets`
    wts = (gy.unsqueeze(-1) * gx.unsqueeze(-2)).reshape(n * lq * m, num_levels * p * 4)
    out = F.embedding_bag(idx, table, per_sample_weights=wts.to(value.dtype), mode="sum")
    return out.view(n, lq, m * d)


class MSDeformAttn(nn.Module):
    """Parameter names match upstream (``sampling_offsets``, ``attention_weights``, ``value_proj``, ``output_proj``)."""

    # "bag" (fast, default) or "grid_sample" (upstream's exact formulation).
    impl = "bag"

    def __init__(self, d_model: int, n_levels: int, n_heads: int, n_points: int):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model {d_model} must be divisible by n_heads {n_heads}")
        self.d_model, self.n_levels, self.n_heads, self.n_points = d_model, n_levels, n_heads, n_points
        self.sampling_offsets = Linear(d_model, n_heads * n_levels * n_points * 2)
        self.attention_weights = Linear(d_model, n_heads * n_levels * n_points)
        self.value_proj = Linear(d_model, d_model)
        self.output_proj = Linear(d_model, d_model)

    def forward(self, query, reference_points, input_flatten, spatial_shapes):
        n, lq, _ = query.shape
        m, num_levels, p = self.n_heads, self.n_levels, self.n_points
        value = self.value_proj(input_flatten).view(n, input_flatten.shape[1], m, self.d_model // m)
        offsets = self.sampling_offsets(query).view(n, lq, m, num_levels, p, 2)
        attn = self.attention_weights(query).view(n, lq, m, num_levels * p)
        attn = F.softmax(attn, -1).view(n, lq, m, num_levels, p)
        shapes = torch.as_tensor(spatial_shapes, dtype=query.dtype, device=query.device)
        normalizer = torch.stack([shapes[:, 1], shapes[:, 0]], -1)  # (w, h)
        locations = reference_points[:, :, None, :, None, :] + offsets / normalizer[None, None, None, :, None, :]
        # Training: embedding_bag's backward with per-sample weights is ~2x slower than grid_sample's.
        fast = self.impl == "bag" and not (torch.is_grad_enabled() and value.requires_grad)
        core = ms_deform_attn_bag if fast else ms_deform_attn_grid_sample
        out = core(value, spatial_shapes, locations, attn)
        return self.output_proj(out)
