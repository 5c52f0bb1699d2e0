"""Upstream's optimizer and learning-rate schedule (detectron2 ``build_optimizer`` / ``build_lr_scheduler``).

AdamW with per-parameter groups (no weight decay on norm layers and embeddings; the backbone
multiplier applies to trainable backbone parameters, of which a frozen CLIP has none) and
full-model gradient-norm clipping done inside ``step()`` (detectron2's
``FullModelGradientClippingOptimizer``), so ``GradScaler.step`` unscales before it clips.
"""
from __future__ import annotations


import torch
from torch import nn

from .config import OptimConfig, ScheduleConfig

_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm, nn.GroupNorm, nn.InstanceNorm1d,
          nn.InstanceNorm2d, nn.InstanceNorm3d, nn.LayerNorm, nn.LocalResponseNorm)


class ClippedAdamW(torch.optim.AdamW):
    def __init__(self, params, clip_norm: float, **kw):
        super().__init__(params, **kw)
        self.clip_norm = clip_norm

    @torch.no_grad()
    def step(self, closure=None):
        if self.clip_norm > 0:
            params = [p for g in self.param_groups for p in g["params"]]
            torch.nn.utils.clip_grad_norm_(params, self.clip_norm)
        return super().step(closure)


def param_groups(model: nn.Module, cfg: OptimConfig) -> list[dict]:
    groups, seen = [], set()
    for mod_name, module in model.named_modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            lr, wd = cfg.lr, cfg.weight_decay
            if "backbone" in mod_name:
                lr = lr * cfg.backbone_multiplier
            if isinstance(module, _NORMS):
                wd = cfg.weight_decay_norm
            elif isinstance(module, nn.Embedding):
                wd = cfg.weight_decay_embed
            full = f"{mod_name}.{name}" if mod_name else name
            groups.append({"params": [p], "lr": lr, "weight_decay": wd, "name": full})
    return groups


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> ClippedAdamW:
    groups = param_groups(model, cfg)
    if not groups:
        raise ValueError("the model has no trainable parameters")
    return ClippedAdamW(groups, clip_norm=cfg.clip_grad_norm, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps)


def lr_factor(it: int, cfg: ScheduleConfig, max_iter: int) -> float:
    """Multiplier of the base LR at iteration ``it`` (detectron2: warm-up x multistep or poly)."""
    if cfg.kind == "multistep":
        factor = cfg.gamma ** sum(1 for s in cfg.steps if s <= it)
    elif cfg.kind == "poly":
        factor = (1.0 - min(it, max_iter) / max_iter) ** cfg.poly_power
    else:
        raise ValueError(f"unknown schedule kind {cfg.kind!r}: use 'multistep' or 'poly'")
    if it < cfg.warmup_iters:
        alpha = it / cfg.warmup_iters
        factor *= cfg.warmup_factor * (1 - alpha) + alpha  # linear warm-up
    return factor


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: ScheduleConfig, max_iter: int):
    if cfg.kind not in ("multistep", "poly"):
        raise ValueError(f"unknown schedule kind {cfg.kind!r}: use 'multistep' or 'poly'")
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: lr_factor(it, cfg, max_iter))
