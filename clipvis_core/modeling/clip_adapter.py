"""The only code that touches open_clip internals.

Wraps a frozen open_clip CLIP model as CLIP-VIS uses it: multi-scale trunk features plus the dense
CLIP feature, the CLIP visual head applied to mask-pooled features (ConvNeXt path, RN50 attention-pool
path) and the text tower. Attribute name ``clip_model`` matches upstream checkpoint keys
(``backbone.clip_model.*``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class BackboneFeatures:
    """Trunk outputs for a batch of frames, each [N, C, H/stride, W/stride]."""

    res2: torch.Tensor
    res3: torch.Tensor
    res4: torch.Tensor
    res5: torch.Tensor
    clip_vis_dense: torch.Tensor  # the feature that masks pool (stride 32)

    def __getitem__(self, name: str) -> torch.Tensor:
        return getattr(self, name)


def build_clip_model(model_name: str, model_cfg: dict | None = None) -> nn.Module:
    """An open_clip model with random weights (weights come from the checkpoint or ``load_pretrained``)."""
    import open_clip

    if model_cfg is not None:
        cfg = dict(model_cfg)
        cfg.pop("custom_text", None)
        return open_clip.CLIP(**cfg)
    # Honour a surrounding `with torch.device("meta")` (shape-only builds).
    return open_clip.create_model(model_name, pretrained=None, device=torch.get_default_device())


def load_pretrained_clip(model_name: str, model_cfg: dict | None, source: str, cache_dir: str | None = None) -> dict[str, torch.Tensor]:
    """CLIP weights from a local file, or an open_clip tag already in the open_clip / HF cache (offline)."""
    import os

    import open_clip

    if os.path.isfile(source):
        sd = torch.load(source, map_location="cpu", weights_only=True)
        sd = sd.get("state_dict", sd) if isinstance(sd, dict) else sd
        model = build_clip_model(model_name, model_cfg)
        model.load_state_dict({k.removeprefix("module."): v for k, v in sd.items()}, strict=True)
        return model.state_dict()
    model = open_clip.create_model(model_name, pretrained=source, cache_dir=cache_dir, require_pretrained=True)
    return model.state_dict()


def build_tokenizer(model_name: str, context_length: int = 77):
    import open_clip

    if model_name in open_clip.list_models():
        return open_clip.get_tokenizer(model_name)
    return open_clip.tokenizer.SimpleTokenizer(context_length=context_length)


class ClipAdapter(nn.Module):
    def __init__(self, clip_model: nn.Module):
        super().__init__()
        self.clip_model = clip_model
        visual = clip_model.visual
        if hasattr(visual, "trunk") and hasattr(visual.trunk, "stages"):
            self.kind = "convnext"
            channels = [int(visual.trunk.stem[0].out_channels)] + [int(f["num_chs"]) for f in visual.trunk.feature_info]
        elif hasattr(visual, "attnpool") and hasattr(visual, "layer4"):
            self.kind = "resnet"
            channels = [int(visual.bn3.num_features)] + [
                int(getattr(visual, f"layer{i}")[-1].bn3.num_features) for i in range(1, 5)
            ]
        else:
            raise ValueError(f"unsupported CLIP visual tower {type(visual).__name__}: CLIP-VIS needs ConvNeXt or ModifiedResNet")
        # Channel counts read off the model (stem, res2..res5), not guessed from its name.
        self.channels = dict(zip(("stem", "res2", "res3", "res4", "res5"), channels))
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True):
        # The CLIP backbone is frozen and always runs in eval mode (BatchNorm stats, drop-path off).
        return super().train(False)

    # ---- visual --------------------------------------------------------------------------
    @property
    def embed_dim(self) -> int:
        return int(self.clip_model.text_projection.shape[-1])

    def forward(self, x: torch.Tensor) -> BackboneFeatures:
        v = self.clip_model.visual
        if self.kind == "convnext":
            t = v.trunk
            x = t.stem(x)
            outs = []
            for stage in t.stages:
                x = stage(x)
                outs.append(x)
            dense = t.norm_pre(x)
        else:
            x = v.act1(v.bn1(v.conv1(x)))
            x = v.act2(v.bn2(v.conv2(x)))
            x = v.act3(v.bn3(v.conv3(x)))
            x = v.avgpool(x)
            outs = []
            for layer in (v.layer1, v.layer2, v.layer3, v.layer4):
                x = layer(x)
                outs.append(x)
            dense = x
        return BackboneFeatures(*(o.contiguous() for o in outs), clip_vis_dense=dense.contiguous())

    def forward_fast(self, x: torch.Tensor) -> BackboneFeatures:
        """``forward`` for fp32 inference on CPU: the ConvNeXt trunk in channels-last with each block's
        MLP as two oneDNN GEMMs (GELU fused into the first, layer scale folded into the second's
        weights, residual add fused into it). MKL's sgemm (``nn.Linear``) takes its AVX2 path on AMD
        CPUs; oneDNN dispatches on the ISA flags and runs AVX-512. Same math, float rounding only.
        Falls back to ``forward`` for other towers or block variants."""
        if self.kind != "convnext" or not torch.backends.mkldnn.is_available():
            return self.forward(x)
        fused = self._fused_blocks()
        if fused is None:
            return self.forward(x)
        t = self.clip_model.visual.trunk
        x = t.stem(x.contiguous(memory_format=torch.channels_last))
        outs = []
        for stage, blocks in zip(t.stages, fused):
            x = stage.downsample(x)
            for blk in blocks:
                x = blk(x)
            outs.append(x)
        dense = t.norm_pre(x)
        return BackboneFeatures(*(o.contiguous() for o in outs), clip_vis_dense=dense.contiguous())

    def _fused_blocks(self) -> list[list["_FusedBlock"]] | None:
        # Packed once; rebuilt if a weight changed in place since (load_state_dict copies in place).
        params = list(self.clip_model.visual.trunk.stages.parameters())
        key = tuple((id(p), p._version) for p in params)
        cache = self.__dict__.get("_fused_cache")
        if cache is None or cache[0] != key:
            try:
                blocks = [[_FusedBlock(b) for b in stage.blocks] for stage in self.clip_model.visual.trunk.stages]
            except _Unsupported:
                blocks = None
            cache = self.__dict__["_fused_cache"] = (key, blocks)
        return cache[1]

    def embed_masks(self, dense: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """CLIP embeddings of masked regions of one frame.

        dense: [1, C, h, w] dense CLIP feature; masks: [1, Q, h, w] mask logits at the dense size.
        Returns [1, Q, D] (un-normalised, as upstream).
        """
        if self.kind == "convnext":
            return self._embed_convnext(mask_pool(dense, masks))
        emb = self._embed_resnet(dense, masks)
        # Upstream zeroes the logits of empty masks on the RN path; zero embeddings normalise to 0.
        empty = (masks > 0).flatten(2).sum(-1) == 0
        return emb.masked_fill(empty[..., None], 0.0)

    def _embed_convnext(self, pooled: torch.Tensor) -> torch.Tensor:
        b, q, c = pooled.shape
        x = pooled.reshape(b * q, c, 1, 1)  # a 1x1 "image" through the trunk head (pool, LayerNorm2d)
        x = self.clip_model.visual.trunk.head(x)
        x = self.clip_model.visual.head(x)
        return x.view(b, q, -1)

    def _embed_resnet(self, dense: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        # Attention pooling with the CLIP query restricted to each mask (masked multi-head attention).
        pool = self.clip_model.visual.attnpool
        b, c, h, w = dense.shape
        q = masks.shape[1]
        pos = pool.positional_embedding.to(dense.dtype)
        side = int(math.sqrt(pos.shape[0] - 1))
        spatial = pos[1:].permute(1, 0).reshape(1, c, side, side)
        spatial = F.interpolate(spatial, size=(h, w), mode="bilinear", align_corners=False)
        spatial = spatial.permute(2, 3, 0, 1).reshape(h * w, 1, c)
        x = dense.reshape(b, c, h * w).permute(2, 0, 1)
        kv = x + spatial
        binary = (masks.reshape(b, q, h * w) > 0).to(masks.dtype)
        query = (x.mean(0, keepdim=True) + pos[:1, None, :]).repeat_interleave(q, dim=0)
        attn_mask = (binary < 0.5).unsqueeze(1).expand(-1, pool.num_heads, -1, -1).reshape(b * pool.num_heads, q, h * w)
        out = F.multi_head_attention_forward(
            query=query, key=kv, value=kv, embed_dim_to_check=c, num_heads=pool.num_heads,
            q_proj_weight=pool.q_proj.weight, k_proj_weight=pool.k_proj.weight, v_proj_weight=pool.v_proj.weight,
            in_proj_weight=None, in_proj_bias=torch.cat([pool.q_proj.bias, pool.k_proj.bias, pool.v_proj.bias]),
            bias_k=None, bias_v=None, add_zero_attn=False, dropout_p=0.0,
            out_proj_weight=pool.c_proj.weight, out_proj_bias=pool.c_proj.bias,
            use_separate_proj_weight=True, training=False, need_weights=False, attn_mask=attn_mask,
        )[0]
        return out.permute(1, 0, 2)

    # ---- text ----------------------------------------------------------------------------
    @property
    def logit_scale(self) -> torch.Tensor:
        return self.clip_model.logit_scale

    @property
    def context_length(self) -> int:
        return int(self.clip_model.positional_embedding.shape[0])

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """Un-normalised text embeddings, pooled at the end-of-text token (argmax of token ids).

        The text transformer is causal and reads the EOT position, so every position after the
        batch's last EOT token cannot change the result: the batch is cropped there (5-7x less work
        than the full 77-token context for class prompts).
        """
        m = self.clip_model
        eot = tokens.argmax(dim=-1)
        length = int(eot.max()) + 1
        tokens = tokens[:, :length]
        x = m.token_embedding(tokens) + m.positional_embedding[:length]
        attn_mask = m.attn_mask[:length, :length] if m.attn_mask is not None else None
        if getattr(m.transformer, "batch_first", True):
            x = m.transformer(x, attn_mask=attn_mask)
        else:  # older open_clip: sequence-first transformer
            x = m.transformer(x.permute(1, 0, 2), attn_mask=attn_mask).permute(1, 0, 2)
        x = m.ln_final(x)
        x = x[torch.arange(x.shape[0], device=x.device), eot]
        proj = m.text_projection
        return proj(x) if isinstance(proj, nn.Linear) else x @ proj


def mask_pool(features: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Average ``features`` [B, C, h, w] over binarised (logit > 0) ``masks`` [B, Q, h, w] -> [B, Q, C]."""
    if features.shape[-2:] != masks.shape[-2:]:
        masks = F.interpolate(masks, size=features.shape[-2:], mode="bilinear", align_corners=False)
    binary = (masks > 0).to(masks.dtype)
    denom = binary.sum(dim=(-1, -2), keepdim=True) + 1e-8
    return torch.einsum("bchw,bqhw->bqc", features, binary / denom)


class _Unsupported(Exception):
    pass


def _is_pointwise(layer: nn.Module) -> bool:
    if isinstance(layer, nn.Conv2d):
        return (layer.kernel_size == (1, 1) and layer.stride == (1, 1) and layer.groups == 1
                and layer.padding == (0, 0) and layer.bias is not None)
    return isinstance(layer, nn.Linear) and layer.bias is not None


class _FusedBlock:
    """One timm ConvNeXt block (depthwise conv, LayerNorm, Linear-GELU-Linear, layer scale, residual)
    for channels-last fp32 CPU inference; see ``ClipAdapter.forward_fast``."""

    def __init__(self, b: nn.Module):
        mlp = getattr(b, "mlp", None)
        # The MLP is Linear layers after a permute, or 1x1 convs with LayerNorm2d (conv_mlp): the same
        # math in channels-last.
        ok = (isinstance(getattr(b, "shortcut", None), nn.Identity) and type(mlp).__name__ == "Mlp"
              and isinstance(mlp.norm, nn.Identity) and all(_is_pointwise(f) for f in (mlp.fc1, mlp.fc2))
              and type(mlp.act).__name__ == "GELU" and getattr(mlp.act, "approximate", "none") == "none"
              and isinstance(b.norm, nn.LayerNorm))  # timm's LayerNorm and LayerNorm2d
        if not ok:
            raise _Unsupported(type(b).__name__)
        reorder = torch.ops.mkldnn._reorder_linear_weight
        self.conv_dw, self.norm = b.conv_dw, b.norm
        w1, w2 = (f.weight.detach().reshape(f.weight.shape[0], -1) for f in (mlp.fc1, mlp.fc2))
        b2 = mlp.fc2.bias.detach()
        if b.gamma is not None:
            g = b.gamma.detach()
            w2, b2 = w2 * g[:, None], b2 * g
        self.w1, self.b1 = reorder(w1.clone()), mlp.fc1.bias.detach().clone()
        self.w2, self.b2 = reorder(w2.clone()), b2.clone()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        y = self.conv_dw(x.contiguous(memory_format=torch.channels_last)).permute(0, 2, 3, 1)  # NHWC, no copy
        y = F.layer_norm(y, (c,), self.norm.weight, self.norm.bias, self.norm.eps).reshape(n * h * w, c)
        y = torch.ops.mkldnn._linear_pointwise(y, self.w1, self.b1, "gelu", [], "none")
        shortcut = x.contiguous(memory_format=torch.channels_last).permute(0, 2, 3, 1).reshape(n * h * w, c)
        y = torch.ops.mkldnn._linear_pointwise(y, shortcut, self.w2, self.b2, "add")
        return y.view(n, h, w, c).permute(0, 3, 1, 2)  # channels-last NCHW view
