"""Mask2Former's masked-attention transformer decoder with CLIP-VIS heads.

Per query: mask logits, a 2-way object score (index 0 = object), a mask-IoU score (sigmoid) and the
normalised query embedding used for temporal matching. Names match upstream checkpoint keys
(``sem_seg_head.predictor.*``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..config import DecoderConfig
from . import cpu_kernels
from .position_encoding import sine_position_encoding


@dataclass
class DecoderOutput:
    object_logits: torch.Tensor  # [N, Q, 2]
    masks: torch.Tensor  # [N, Q, H/4, W/4] mask logits
    ious: torch.Tensor  # [N, Q, 1] in (0, 1)
    embeds: torch.Tensor  # [N, Q, hidden] decoder_norm(final queries)
    # Heads on the learnable queries and after each layer but the last: (object_logits, ious, masks).
    aux: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


class MLP(nn.Module):
    def __init__(self, din: int, hidden: int, dout: int, num_layers: int):
        super().__init__()
        dims = [din] + [hidden] * (num_layers - 1)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims, dims[1:] + [dout]))

    def forward(self, x):
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


class SelfAttentionLayer(nn.Module):
    def __init__(self, d: int, heads: int, pre_norm: bool):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d, heads, dropout=0.0)
        self.norm = nn.LayerNorm(d)
        self.pre_norm = pre_norm

    def forward(self, tgt, query_pos):
        if self.pre_norm:
            t = self.norm(tgt)
            return tgt + self._attend(t + query_pos, t)
        return self.norm(tgt + self._attend(tgt + query_pos, tgt))

    def _attend(self, q, v):
        if cpu_kernels.active() and self.self_attn._qkv_same_embed_dim:  # no averaged attention weights
            return cpu_kernels.attention(self.self_attn, q, q, v)
        return self.self_attn(q, q, value=v)[0]


class CrossAttentionLayer(nn.Module):
    def __init__(self, d: int, heads: int, pre_norm: bool):
        super().__init__()
        self.multihead_attn = nn.MultiheadAttention(d, heads, dropout=0.0)
        self.norm = nn.LayerNorm(d)
        self.pre_norm = pre_norm

    def forward(self, tgt, memory, attn_mask, pos, query_pos):
        if self.pre_norm:
            t = self.norm(tgt)
            return tgt + self._attend(t + query_pos, memory + pos, memory, attn_mask)
        return self.norm(tgt + self._attend(tgt + query_pos, memory + pos, memory, attn_mask))

    def _attend(self, q, k, v, attn_mask):
        """attn_mask: [N, Q, HW], True = blocked, the same for every head."""
        if cpu_kernels.active() and self.multihead_attn._qkv_same_embed_dim:  # K/V projections over every memory token: oneDNN GEMMs
            return cpu_kernels.attention(self.multihead_attn, q, k, v, attn_mask)
        per_head = attn_mask.repeat_interleave(self.multihead_attn.num_heads, dim=0)  # [N*heads, Q, HW], as upstream's
        return self.multihead_attn(q, k, value=v, attn_mask=per_head)[0]


class FFNLayer(nn.Module):
    def __init__(self, d: int, ffn: int, pre_norm: bool):
        super().__init__()
        self.linear1 = nn.Linear(d, ffn)
        self.linear2 = nn.Linear(ffn, d)
        self.norm = nn.LayerNorm(d)
        self.pre_norm = pre_norm

    def forward(self, tgt):
        if self.pre_norm:
            return tgt + self.linear2(F.relu(self.linear1(self.norm(tgt))))
        return self.norm(tgt + self.linear2(F.relu(self.linear1(tgt))))


class MultiScaleMaskedTransformerDecoder(nn.Module):
    num_feature_levels = 3
    # True: full-resolution masks at every layer even without aux outputs, as upstream computes them
    # (the whole-video reference sets it so its cost stays upstream's).
    upstream_masks = False

    def __init__(self, cfg: DecoderConfig, in_channels: int, mask_dim: int):
        super().__init__()
        d, h = cfg.hidden_dim, cfg.num_heads
        self.hidden_dim = d
        self.num_layers = cfg.num_layers
        self.transformer_self_attention_layers = nn.ModuleList(SelfAttentionLayer(d, h, cfg.pre_norm) for _ in range(self.num_layers))
        self.transformer_cross_attention_layers = nn.ModuleList(CrossAttentionLayer(d, h, cfg.pre_norm) for _ in range(self.num_layers))
        self.transformer_ffn_layers = nn.ModuleList(FFNLayer(d, cfg.ffn_dim, cfg.pre_norm) for _ in range(self.num_layers))
        self.decoder_norm = nn.LayerNorm(d)
        self.query_feat = nn.Embedding(cfg.num_queries, d)
        self.query_embed = nn.Embedding(cfg.num_queries, d)
        self.level_embed = nn.Embedding(self.num_feature_levels, d)
        self.input_proj = nn.ModuleList(
            nn.Conv2d(in_channels, d, kernel_size=1) if (in_channels != d or cfg.enforce_input_proj) else nn.Sequential()
            for _ in range(self.num_feature_levels)
        )
        self.iou_head = MLP(d, d, 1, 3)
        self.object_embed = MLP(d, d, 2, 3)
        self.mask_embed = MLP(d, d, mask_dim, 3)

    def forward(self, multi_scale: list[torch.Tensor], mask_features: torch.Tensor, with_aux: bool = False) -> DecoderOutput:
        src, pos, sizes = [], [], []
        for i in range(self.num_feature_levels):
            x = multi_scale[i]
            sizes.append(x.shape[-2:])
            pos.append(sine_position_encoding(x, self.hidden_dim // 2).flatten(2).permute(2, 0, 1))
            src.append((self.input_proj[i](x).flatten(2) + self.level_embed.weight[i][None, :, None]).permute(2, 0, 1))
        bs = src[0].shape[1]
        query_pos = self.query_embed.weight.unsqueeze(1).repeat(1, bs, 1)
        output = self.query_feat.weight.unsqueeze(1).repeat(1, bs, 1)

        aux = []
        # Without aux outputs only the last layer's full-resolution masks are read: the others only
        # feed the next attention mask. Bilinear resizing is linear, so resize(embed . features) ==
        # embed . resize(features): reading the 3 resized feature maps skips the [Q, H/4, W/4]
        # product at every layer (identical up to float rounding).
        small = None if with_aux or self.upstream_masks else [F.interpolate(mask_features, size=s, mode="bilinear", align_corners=False)
                                       for s in sizes]
        obj, masks, iou, attn_mask = self._heads(output, mask_features, sizes[0], small[0] if small and self.num_layers else None)
        for i in range(self.num_layers):
            aux.append((obj, iou, masks) if with_aux else None)
            level = i % self.num_feature_levels
            # A query whose mask covers nothing would attend nowhere: let it attend everywhere.
            attn_mask[torch.where(attn_mask.sum(-1) == attn_mask.shape[-1])] = False
            output = self.transformer_cross_attention_layers[i](output, src[level], attn_mask, pos[level], query_pos)
            output = self.transformer_self_attention_layers[i](output, query_pos)
            output = self.transformer_ffn_layers[i](output)
            nxt = (i + 1) % self.num_feature_levels
            last = i == self.num_layers - 1
            obj, masks, iou, attn_mask = self._heads(output, mask_features, sizes[nxt], None if small is None or last else small[nxt],
                                                     need_attn=not last)
        embeds = self.decoder_norm(output).permute(1, 0, 2)
        return DecoderOutput(obj, masks, iou, embeds, aux if with_aux else [])

    def _heads(self, output, mask_features, attn_size, small_features=None, need_attn=True):
        """``small_features``: mask features already at ``attn_size``; then only the attention mask is
        computed (``obj``, ``masks`` and ``iou`` are None: nobody reads an intermediate layer's)."""
        x = self.decoder_norm(output).transpose(0, 1)  # [N, Q, d]
        # Upstream's order (object, mask, IoU): backward sums the heads' gradients in it, and the
        # gradient-accumulation test's 1e-4 tolerance does not survive another order.
        full = small_features is None
        obj = self.object_embed(x) if full else None
        embed = self.mask_embed(x)
        iou = self.iou_head(x).sigmoid() if full else None
        if not full:
            masks, attn = None, torch.einsum("bqc,bchw->bqhw", embed, small_features)
        else:
            masks = torch.einsum("bqc,bchw->bqhw", embed, mask_features)
            if not need_attn:
                return obj, masks, iou, None
            attn = F.interpolate(masks, size=attn_size, mode="bilinear", align_corners=False)
        # Positions outside the predicted mask are blocked; one mask serves every head (upstream repeats
        # it per head before comparing, 4 bytes x heads per position on the largest map).
        attn_mask = (attn.sigmoid().flatten(2) < 0.5).detach()
        return obj, masks, iou, attn_mask
