"""One training forward: frozen CLIP trunk -> trainable head -> criterion.

Upstream's CLIP backbone puts itself in eval mode and runs under ``no_grad`` on every call, so
during training the trunk is deterministic (drop-path off) and only ``sem_seg_head.*`` (pixel
decoder + transformer decoder) learns. ``TrainForward`` is the module to wrap in
DistributedDataParallel: its forward is everything that needs gradient synchronisation.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..modeling.model import ClipVisModel
from ..modeling.transformer_decoder import DecoderOutput
from .criterion import SetCriterion
from .sampling import PointSampler
from .targets import Batch


@dataclass
class StepLosses:
    total: torch.Tensor
    weighted: dict[str, torch.Tensor]
    unweighted: dict[str, torch.Tensor]
    outputs: DecoderOutput


class TrainForward(nn.Module):
    def __init__(self, model: ClipVisModel):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> DecoderOutput:
        m = self.model
        with torch.no_grad():
            feats = m.backbone(images)
        pixel = m.sem_seg_head.pixel_decoder(feats)
        return m.sem_seg_head.predictor(pixel.multi_scale, pixel.mask_features, with_aux=True)


def prepare_for_training(model: ClipVisModel) -> TrainForward:
    """Head in train mode, CLIP frozen (no grad, eval mode: ``ClipAdapter.train`` keeps it so)."""
    model.backbone.requires_grad_(False)
    model.sem_seg_head.requires_grad_(True)
    model.train()
    return TrainForward(model)


def trainable_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def forward_losses(fwd: nn.Module, batch: Batch, criterion: SetCriterion, sampler: PointSampler,
                   record: dict | None = None) -> StepLosses:
    out = fwd(batch.images)
    unweighted = criterion(out, batch.targets, sampler, record)
    weighted = criterion.weigh(unweighted)
    total = sum(weighted.values())  # dict order, as detectron2's trainer sums
    return StepLosses(total, weighted, unweighted, out)
