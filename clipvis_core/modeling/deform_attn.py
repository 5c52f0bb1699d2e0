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

from . import cpu_kernels
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


def ms_deform_attn_bag(value, spatial_shapes, reference_points, offsets, attention_weights):
    """Fast path: bilinear sampling fused with the attention weights as one ``embedding_bag``.

    Every (frame, query, head) output is a weighted sum of 4 * L * P rows of the value table (the
    four bilinear neighbours of each sampling point), so ``F.embedding_bag(mode="sum")`` with
    per-sample weights computes it without materialising sampled values. Each level's map gets a
    zero border (1 before, 2 after) and coordinates are clamped to [-1, size]: a point outside the
    map then lands on zeros with unchanged weights, which is ``grid_sample``'s zero padding without
    any validity masks. value [N, S, M, D]; reference_points [N, Lq, L, 2] (x, y in [0, 1]);
    offsets [N, Lq, M, L, P, 2] in pixels of each level; attention_weights [N, Lq, M, L, P].
    Returns [N, Lq, M*D].

    The index arithmetic runs level by level on contiguous [N, Lq, M, P] planes with the level's
    size as a Python number: broadcasting per-level constants over the tiny (L, P, 2) trailing dims
    ran TensorIterator's inner loops over 2-4 elements, and cost more than the gather itself.
    Elementwise, the arithmetic is the same as ``reference + offset / size`` in the reference path.
    """
    n, s, m, d = value.shape
    _, lq, _, num_levels, p, _ = offsets.shape
    shapes = [(int(h), int(w)) for h, w in spatial_shapes]
    starts = [0]
    for h, w in shapes:
        starts.append(starts[-1] + (h + 3) * (w + 3))
    table = value.new_zeros(n, m, starts[-1], d)  # [N, M, S_padded, D]
    src = 0
    for lvl, (h, w) in enumerate(shapes):
        inner = table[:, :, starts[lvl]:starts[lvl + 1]].view(n, m, h + 3, w + 3, d)[:, :, 1:h + 1, 1:w + 1]
        inner.copy_(value[:, src:src + h * w].view(n, h, w, m, d).permute(0, 3, 1, 2, 4))
        src += h * w
    coord = torch.promote_types(offsets.dtype, reference_points.dtype)  # bf16 offsets (autocast): fp32 maths
    off = offsets.permute(5, 3, 0, 1, 2, 4).to(coord).contiguous()  # [2, L, N, Lq, M, P]
    ref = reference_points.permute(3, 2, 0, 1).contiguous().view(2, num_levels, n, lq, 1, 1)
    attn = attention_weights.permute(3, 0, 1, 2, 4).contiguous()  # [L, N, Lq, M, P]
    head = torch.arange(n * m, device=value.device).view(n, 1, m, 1).mul(starts[-1]).expand(n, 1, m, p).contiguous()
    idx = torch.empty(n, lq, m, num_levels, p, 4, dtype=torch.long, device=value.device)
    wts = torch.empty(n, lq, m, num_levels, p, 4, dtype=value.dtype, device=value.device)
    for lvl, (h, w) in enumerate(shapes):
        # Pixel coordinates with align_corners=False: the centre of pixel i sits at i + 0.5.
        x = ((ref[0, lvl] + off[0, lvl] / w) * w - 0.5).clamp_(-1.0, w)
        y = ((ref[1, lvl] + off[1, lvl] / h) * h - 0.5).clamp_(-1.0, h)
        x0, y0 = x.floor(), y.floor()
        fx, fy = x - x0, y - y0
        top_left = (y0.long() + 1) * (w + 3) + (x0.long() + 1) + (head + starts[lvl])  # into the bordered map
        i, wt = idx[:, :, :, lvl], wts[:, :, :, lvl]
        # corner order (dy, dx) = 00, 01, 10, 11
        i[..., 0] = top_left
        for c, step in ((1, 1), (2, w + 3), (3, w + 4)):
            torch.add(top_left, step, out=i[..., c])
        gy0, gy1, gx0 = (1 - fy) * attn[lvl], fy * attn[lvl], 1 - fx
        for c, (a, b) in enumerate(((gy0, gx0), (gy0, fx), (gy1, gx0), (gy1, fx))):
            torch.mul(a, b, out=wt[..., c])
    out = F.embedding_bag(idx.view(n * lq * m, -1), table.view(-1, d), per_sample_weights=wts.view(n * lq * m, -1), mode="sum")
    return out.view(n, lq, m * d)


def _softmax_short(x: torch.Tensor) -> torch.Tensor:
    """Softmax over a short last dim (levels x points, 12) on the oneDNN fast path. PyTorch's CPU
    kernel walks 12-element rows one by one (6 ms per encoder layer at 480p); five vectorised
    passes over the whole tensor take 1.5 ms. Same math, float rounding only."""
    e = (x - x.amax(-1, keepdim=True)).exp_()
    return e.div_(e.sum(-1, keepdim=True))


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
        attn = (_softmax_short(attn) if cpu_kernels.active() else F.softmax(attn, -1)).view(n, lq, m, num_levels, p)
        # Training: embedding_bag's backward with per-sample weights is ~2x slower than grid_sample's.
        if self.impl == "bag" and not (torch.is_grad_enabled() and value.requires_grad):
            return self.output_proj(ms_deform_attn_bag(value, spatial_shapes, reference_points, offsets, attn))
        shapes = torch.as_tensor(spatial_shapes, dtype=query.dtype, device=query.device)
        normalizer = torch.stack([shapes[:, 1], shapes[:, 0]], -1)  # (w, h)
        locations = reference_points[:, :, None, :, None, :] + offsets / normalizer[None, None, None, :, None, :]
        return self.output_proj(ms_deform_attn_grid_sample(value, spatial_shapes, locations, attn))
