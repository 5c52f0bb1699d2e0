"""Mask2Former's multi-scale deformable-attention pixel decoder (``MSDeformAttnPixelDecoder``).

Module and parameter names match upstream checkpoints (``sem_seg_head.pixel_decoder.*``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..config import PixelDecoderConfig
from .cpu_kernels import Linear
from .deform_attn import MSDeformAttn
from .position_encoding import sine_position_encoding


@dataclass
class PixelDecoderOutput:
    mask_features: torch.Tensor  # [N, mask_dim, H/4, W/4] per-pixel embeddings
    encoder_features: torch.Tensor  # [N, conv_dim, H/32, W/32] lowest-resolution encoder output
    multi_scale: list[torch.Tensor]  # 3 maps fed to the decoder, low -> high resolution


class ConvNorm(nn.Conv2d):
    """detectron2 ``Conv2d(..., norm=...)``: conv, then norm, then optional ReLU; keys ``weight``, ``norm.*``."""

    def __init__(self, cin: int, cout: int, kernel: int, norm: str, relu: bool):
        super().__init__(cin, cout, kernel, padding=kernel // 2, bias=not norm)
        self.norm = nn.GroupNorm(32, cout) if norm == "GN" else None
        self.relu = relu

    def forward(self, x):
        x = super().forward(x)
        if self.norm is not None:
            x = self.norm(x)
        return F.relu(x) if self.relu else x


class EncoderLayer(nn.Module):
    def __init__(self, d_model: int, ffn_dim: int, n_levels: int, n_heads: int, n_points: int):
        super().__init__()
        self.self_attn = MSDeformAttn(d_model, n_levels, n_heads, n_points)
        self.norm1 = nn.LayerNorm(d_model)
        self.linear1 = Linear(d_model, ffn_dim)
        self.linear2 = Linear(ffn_dim, d_model)
        self.norm2 = nn.LayerNorm(d_model)

    def forward(self, src, pos, reference_points, spatial_shapes):
        src = self.norm1(src + self.self_attn(src + pos, reference_points, src, spatial_shapes))
        return self.norm2(src + self.linear2(self.linear1(src, relu=True)))


class Encoder(nn.Module):
    def __init__(self, layers: list[EncoderLayer]):
        super().__init__()
        self.layers = nn.ModuleList(layers)


class DeformableEncoder(nn.Module):
    """``MSDeformAttnTransformerEncoderOnly``: keys ``level_embed``, ``encoder.layers.*``."""

    def __init__(self, d_model: int, n_heads: int, n_layers: int, ffn_dim: int, n_levels: int, n_points: int):
        super().__init__()
        self.level_embed = nn.Parameter(torch.zeros(n_levels, d_model))
        self.encoder = Encoder([EncoderLayer(d_model, ffn_dim, n_levels, n_heads, n_points) for _ in range(n_layers)])

    @staticmethod
    def reference_points(spatial_shapes, device) -> torch.Tensor:
        # Pixel centres normalised to [0, 1]; no padding mask, so valid ratios are all 1.
        refs = []
        for h, w in spatial_shapes:
            ys, xs = torch.meshgrid(
                torch.linspace(0.5, h - 0.5, h, dtype=torch.float32, device=device),
                torch.linspace(0.5, w - 0.5, w, dtype=torch.float32, device=device),
                indexing="ij",
            )
            refs.append(torch.stack((xs.reshape(-1) / w, ys.reshape(-1) / h), -1))
        ref = torch.cat(refs, 0)[None]  # [1, S, 2]
        return ref[:, :, None].expand(-1, -1, len(spatial_shapes), -1)

    def forward(self, srcs: list[torch.Tensor], pos_embeds: list[torch.Tensor]):
        shapes = [(int(s.shape[2]), int(s.shape[3])) for s in srcs]
        src = torch.cat([s.flatten(2).transpose(1, 2) for s in srcs], 1)
        pos = torch.cat([p.flatten(2).transpose(1, 2) + self.level_embed[i].view(1, 1, -1) for i, p in enumerate(pos_embeds)], 1)
        ref = self.reference_points(shapes, src.device).expand(src.shape[0], -1, -1, -1)
        for layer in self.encoder.layers:
            src = layer(src, pos, ref, shapes)
        return src, shapes


class MSDeformAttnPixelDecoder(nn.Module):
    def __init__(self, cfg: PixelDecoderConfig, channels: dict[str, int], strides: dict[str, int]):
        super().__init__()
        self.in_features = sorted(cfg.in_features, key=lambda k: strides[k])  # res2 .. res5
        self.enc_features = sorted(cfg.encoder_in_features, key=lambda k: strides[k])
        d = cfg.conv_dim
        # Low -> high resolution (res5 first), as upstream.
        self.input_proj = nn.ModuleList(
            nn.Sequential(nn.Conv2d(channels[f], d, kernel_size=1), nn.GroupNorm(32, d)) for f in self.enc_features[::-1]
        )
        self.transformer = DeformableEncoder(
            d, cfg.encoder_heads, cfg.encoder_layers, cfg.encoder_ffn_dim, len(self.enc_features), cfg.encoder_points
        )
        self.mask_features = nn.Conv2d(d, cfg.mask_dim, kernel_size=1)
        self.num_fpn_levels = int(math.log2(min(strides[f] for f in self.enc_features)) - math.log2(cfg.common_stride))
        self.fpn_features = self.in_features[: self.num_fpn_levels]
        for idx, f in enumerate(self.fpn_features):
            self.add_module(f"adapter_{idx + 1}", ConvNorm(channels[f], d, 1, cfg.norm, relu=False))
            self.add_module(f"layer_{idx + 1}", ConvNorm(d, d, 3, cfg.norm, relu=True))
        self.conv_dim = d

    def forward(self, features) -> PixelDecoderOutput:
        srcs, pos = [], []
        for idx, f in enumerate(self.enc_features[::-1]):
            x = features[f].float()  # deformable attention runs in fp32
            srcs.append(self.input_proj[idx](x))
            pos.append(sine_position_encoding(x, self.conv_dim // 2))
        y, shapes = self.transformer(srcs, pos)
        n = y.shape[0]
        outs = [
            z.transpose(1, 2).reshape(n, -1, h, w)
            for z, (h, w) in zip(y.split([h * w for h, w in shapes], dim=1), shapes)
        ]
        # Extra FPN levels (res2 for the usual strides), top-down.
        for idx in range(self.num_fpn_levels - 1, -1, -1):
            f = self.fpn_features[idx]
            lateral = getattr(self, f"adapter_{idx + 1}")(features[f].float())
            up = F.interpolate(outs[-1], size=lateral.shape[-2:], mode="bilinear", align_corners=False)
            outs.append(getattr(self, f"layer_{idx + 1}")(lateral + up))
        return PixelDecoderOutput(self.mask_features(outs[-1]), outs[0], outs[:3])
