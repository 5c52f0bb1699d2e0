"""Multi-scale deformable attention (Deformable DETR) in pure PyTorch, CPU and CUDA.

Same math as upstream's ``ms_deform_attn_core_pytorch`` (bilinear sampling, zero padding,
align_corners=False), evaluated without ``grid_sample``'s [N*M, D, Lq, P] intermediates: each
sampling point gathers its four neighbours from the flattened value map and the bilinear and
attention weights are folded together before one weighted sum.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


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


def ms_deform_attn_gather(value, spatial_shapes, sampling_locations, attention_weights, chunk: int = 4096):
    """Fast path: gather-based bilinear sampling fused with the attention weights.

    value [N, S, M, D]; sampling_locations [N, Lq, M, L, P, 2] (x, y in [0, 1]); attention_weights
    [N, Lq, M, L, P]. Returns [N, Lq, M*D]. Queries are processed in chunks to bound memory.
    """
    n, s, m, d = value.shape
    _, lq, _, num_levels, p, _ = sampling_locations.shape
    # [N*M, S, D]: one contiguous value table per (frame, head).
    v = value.permute(0, 2, 1, 3).reshape(n * m, s, d)
    starts, offset = [], 0
    for h, w in spatial_shapes:
        starts.append(offset)
        offset += int(h) * int(w)
    hw = torch.tensor([[int(h), int(w)] for h, w in spatial_shapes], device=value.device, dtype=value.dtype)
    start_t = torch.tensor(starts, device=value.device, dtype=torch.long)
    outs = []
    for q0 in range(0, lq, chunk):
        loc = sampling_locations[:, q0:q0 + chunk]  # [N, q, M, L, P, 2]
        aw = attention_weights[:, q0:q0 + chunk]
        q = loc.shape[1]
        loc = loc.permute(0, 2, 1, 3, 4, 5)  # [N, M, q, L, P, 2]
        aw = aw.permute(0, 2, 1, 3, 4)  # [N, M, q, L, P]
        w_l = hw[:, 1].view(1, 1, 1, num_levels, 1)
        h_l = hw[:, 0].view(1, 1, 1, num_levels, 1)
        # Pixel coordinates with align_corners=False: centre of pixel i is at i + 0.5.
        x = loc[..., 0] * w_l - 0.5
        y = loc[..., 1] * h_l - 0.5
        x0 = torch.floor(x)
        y0 = torch.floor(y)
        fx = x - x0
        fy = y - y0
        x0 = x0.long()
        y0 = y0.long()
        wl = w_l.long()
        hl = h_l.long()
        st = start_t.view(1, 1, 1, num_levels, 1)
        acc = None
        idx_all, wt_all = [], []
        for dy, wy in ((0, 1 - fy), (1, fy)):
            for dx, wx in ((0, 1 - fx), (1, fx)):
                xi = x0 + dx
                yi = y0 + dy
                valid = (xi >= 0) & (xi < wl) & (yi >= 0) & (yi < hl)
                idx = st + yi.clamp(0, None) * wl + xi.clamp(0, None)
                idx = torch.where(valid, idx, torch.zeros_like(idx))
                wt = wx * wy * aw * valid.to(aw.dtype)
                idx_all.append(idx)
                wt_all.append(wt)
        idx = torch.stack(idx_all, -1).reshape(n * m, q * num_levels * p * 4)  # [N*M, q*L*P*4]
        wt = torch.stack(wt_all, -1).reshape(n * m, q, num_levels * p * 4)
        gathered = torch.gather(v, 1, idx.unsqueeze(-1).expand(-1, -1, d))  # [N*M, q*L*P*4, D]
        gathered = gathered.view(n * m, q, num_levels * p * 4, d)
        acc = torch.einsum("bqk,bqkd->bqd", wt, gathered)  # [N*M, q, D]
        outs.append(acc.view(n, m, q, d).permute(0, 2, 1, 3).reshape(n, q, m * d))
    return torch.cat(outs, dim=1)


class MSDeformAttn(nn.Module):
    """Parameter names match upstream (``sampling_offsets``, ``attention_weights``, ``value_proj``, ``output_proj``)."""

    # "gather" (fast, default) or "grid_sample" (upstream's exact formulation).
    impl = "gather"

    def __init__(self, d_model: int, n_levels: int, n_heads: int, n_points: int):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model {d_model} must be divisible by n_heads {n_heads}")
        self.d_model, self.n_levels, self.n_heads, self.n_points = d_model, n_levels, n_heads, n_points
        self.sampling_offsets = nn.Linear(d_model, n_heads * n_levels * n_points * 2)
        self.attention_weights = nn.Linear(d_model, n_heads * n_levels * n_points)
        self.value_proj = nn.Linear(d_model, d_model)
        self.output_proj = nn.Linear(d_model, d_model)

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
        core = ms_deform_attn_gather if self.impl == "gather" else ms_deform_attn_grid_sample
        out = core(value, spatial_shapes, locations, attn)
        return self.output_proj(out)
