"""The CLIP-VIS network: frozen CLIP backbone -> pixel decoder -> masked-attention decoder.

Submodule names (``backbone.clip_model``, ``sem_seg_head.pixel_decoder``, ``sem_seg_head.predictor``)
mirror upstream so detectron2 checkpoints load key-for-key.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..config import ModelConfig
from . import cpu_kernels
from .clip_adapter import BackboneFeatures, ClipAdapter, build_clip_model
from .pixel_decoder import MSDeformAttnPixelDecoder, PixelDecoderOutput
from .transformer_decoder import DecoderOutput, MultiScaleMaskedTransformerDecoder

STRIDES = {"stem": 2, "res2": 4, "res3": 8, "res4": 16, "res5": 32}


@dataclass
class FrameOutputs:
    """Per-frame network outputs for a window of frames (network query order)."""

    decoder: DecoderOutput
    dense: torch.Tensor  # [N, C, H/32, W/32] dense CLIP feature for mask pooling
    features: BackboneFeatures | None = None
    pixel: PixelDecoderOutput | None = None


class SemSegHead(nn.Module):
    def __init__(self, cfg: ModelConfig, channels: dict[str, int]):
        super().__init__()
        self.pixel_decoder = MSDeformAttnPixelDecoder(cfg.pixel_decoder, channels, STRIDES)
        self.predictor = MultiScaleMaskedTransformerDecoder(cfg.decoder, cfg.pixel_decoder.conv_dim, cfg.pixel_decoder.mask_dim)


class ClipVisModel(nn.Module):
    # True: plain PyTorch kernels everywhere (upstream's cost; the whole-video reference sets it).
    # Otherwise fp32 CPU inference runs the GEMMs through oneDNN (cpu_kernels.py, ClipAdapter.forward_fast).
    upstream_kernels = False

    def __init__(self, cfg: ModelConfig, clip_model: nn.Module | None = None):
        super().__init__()
        self.cfg = cfg
        self.backbone = ClipAdapter(clip_model if clip_model is not None else build_clip_model(cfg.clip_model_name, cfg.clip_model_cfg))
        if self.backbone.embed_dim != cfg.embed_dim:
            raise ValueError(f"config embed_dim {cfg.embed_dim} != CLIP model's {self.backbone.embed_dim}")
        self.sem_seg_head = SemSegHead(cfg, self.backbone.channels)
        self.register_buffer("pixel_mean", torch.tensor(cfg.pixel_mean).view(-1, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(cfg.pixel_std).view(-1, 1, 1), persistent=False)
        self.eval()

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def forward_frames(self, images: torch.Tensor, keep_intermediates: bool = False) -> FrameOutputs:
        """images: [N, 3, H, W] normalised and padded to the size divisibility."""
        fast = not self.upstream_kernels and cpu_kernels.applies(images)
        with cpu_kernels.enabled(fast):
            feats = self.backbone.forward_fast(images) if fast else self.backbone(images)
            pixel = self.sem_seg_head.pixel_decoder(feats)
            dec = self.sem_seg_head.predictor(pixel.multi_scale, pixel.mask_features, with_aux=keep_intermediates)
        return FrameOutputs(dec, feats.clip_vis_dense, feats if keep_intermediates else None, pixel if keep_intermediates else None)
