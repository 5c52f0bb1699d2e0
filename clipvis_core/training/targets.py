"""Samples -> the network's input and the criterion's per-frame targets.

Images are one-frame clips, so the image path and the video path share one layout: B clips of T
frames become B*T entries, video-major (upstream's ``frame_decoder_loss_reshape``). Per clip an
instance absent in a frame keeps an all-zero mask there with label 1 (upstream's dummy annotation,
``labels = ids == -1``); an instance absent in every frame of the clip is dropped. For one-frame
clips this is upstream's image path: every instance present, labels all 0.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..config import ModelConfig
from .data.sample import Sample


@dataclass
class FrameTarget:
    masks: torch.Tensor  # float [N, Hp, Wp], zero in the padding
    labels: torch.Tensor  # long [N]: 0 = present in this frame, 1 = absent (still matched, as upstream)

    def to(self, device) -> "FrameTarget":
        return FrameTarget(self.masks.to(device, non_blocking=True), self.labels.to(device, non_blocking=True))


@dataclass
class Batch:
    images: torch.Tensor  # [B*T, 3, Hp, Wp] normalised, zero-padded bottom/right
    targets: list[FrameTarget]  # B*T entries, video-major
    image_sizes: list[tuple[int, int]]
    clip_len: int

    @property
    def num_clips(self) -> int:
        return len(self.targets) // self.clip_len

    def to(self, device) -> "Batch":
        return Batch(self.images.to(device, non_blocking=True), [t.to(device) for t in self.targets], self.image_sizes, self.clip_len)


class Collator:
    """DataLoader ``collate_fn`` (picklable): list[Sample] -> Batch."""

    def __init__(self, pixel_mean, pixel_std, size_divisibility: int):
        self.mean = torch.tensor(pixel_mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(pixel_std, dtype=torch.float32).view(-1, 1, 1)
        self.size_divisibility = int(size_divisibility)

    @classmethod
    def from_model_config(cls, cfg: ModelConfig) -> "Collator":
        return cls(cfg.pixel_mean, cfg.pixel_std, cfg.size_divisibility)

    def __call__(self, samples: list[Sample]) -> Batch:
        lengths = {s.frames.shape[0] for s in samples}
        if len(lengths) != 1:
            raise ValueError(f"a batch mixes clips of {sorted(lengths)} frames: batch clips of one length")
        t = lengths.pop()
        h = max(s.frames.shape[1] for s in samples)
        w = max(s.frames.shape[2] for s in samples)
        if self.size_divisibility > 1:
            d = self.size_divisibility
            h, w = math.ceil(h / d) * d, math.ceil(w / d) * d
        images, targets, sizes = [], [], []
        for s in samples:
            fh, fw = s.frames.shape[1:3]
            x = torch.from_numpy(np.ascontiguousarray(s.frames)).permute(0, 3, 1, 2).float()
            x = (x - self.mean) / self.std
            images.append(F.pad(x, (0, w - fw, 0, h - fh)))  # zeros after normalisation, as ImageList
            present = s.masks.reshape(s.masks.shape[0], t, fh * fw).any(-1)  # [N, T]
            keep = present.any(1)
            masks = torch.from_numpy(np.ascontiguousarray(s.masks[keep])).float()
            masks = F.pad(masks, (0, w - fw, 0, h - fh))
            labels = torch.from_numpy((~present[keep]).astype(np.int64))
            for f in range(t):
                targets.append(FrameTarget(masks[:, f].contiguous(), labels[:, f].contiguous()))
                sizes.append((int(fh), int(fw)))
        return Batch(torch.cat(images), targets, sizes, t)
