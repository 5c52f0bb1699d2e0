"""Typed training configuration; every default is upstream's (CLIP-VIS ``train_hparams.json``).

Loss and matcher settings come from ``configs/*.yaml`` plus values hard-coded in upstream's
criterion (the 2-way empty-object weight). ``TrainConfig.from_dict`` / ``from_json`` read the JSON
that ``clipvis train --config`` takes; unknown keys are an error.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..config import _build


@dataclass(frozen=True)
class LossConfig:
    object_weight: float = 2.0  # MODEL.MASK_FORMER.OBJECT_WEIGHT (also the matcher's cost_object)
    mask_weight: float = 5.0  # MASK_WEIGHT
    dice_weight: float = 5.0  # DICE_WEIGHT
    iou_weight: float = 2.0  # MASKIOU_WEIGHT (loss only; upstream passes it to the matcher unused)
    empty_object_weight: tuple[float, float] = (1.0, 0.4)  # hard-coded buffer in upstream's criterion
    num_points: int = 12544  # TRAIN_NUM_POINTS
    oversample_ratio: float = 3.0
    importance_sample_ratio: float = 0.75
    deep_supervision: bool = True  # the same terms on every auxiliary decoder output


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 1e-4  # SOLVER.BASE_LR
    weight_decay: float = 0.05
    weight_decay_norm: float = 0.0  # GroupNorm / LayerNorm parameters
    weight_decay_embed: float = 0.0  # nn.Embedding (decoder query_feat / query_embed / level_embed)
    backbone_multiplier: float = 0.1  # only for trainable backbone parameters (none: CLIP is frozen)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    clip_grad_norm: float = 0.01  # full-model L2 clipping; 0 disables


@dataclass(frozen=True)
class ScheduleConfig:
    kind: str = "multistep"  # upstream's WarmupMultiStepLR; "poly" = detectron2's WarmupPolyLR
    warmup_iters: int = 10
    warmup_factor: float = 1.0  # 1.0: no effective warm-up, as upstream
    steps: tuple[int, ...] = (327778, 355092)  # multistep milestones (x gamma each)
    gamma: float = 0.1
    poly_power: float = 0.9


@dataclass(frozen=True)
class AugmentConfig:
    # image path: large-scale jitter (coco_instance_lsj)
    image_size: int = 1024  # INPUT.IMAGE_SIZE: ResizeScale target and FixedSizeCrop size
    min_scale: float = 0.1
    max_scale: float = 2.0
    flip: bool = True  # random horizontal flip (images and clips)
    # video path: ResizeShortestEdge(MIN_SIZE_TRAIN, MAX_SIZE_TRAIN, "choice") + flip (+ optional crop)
    video_min_sizes: tuple[int, ...] = (800,)
    video_max_size: int = 1333
    video_crop: tuple[float, float] | None = None  # relative_range crop, e.g. (0.9, 0.9); off upstream
    sampling_frame_num: int = 1  # frames per training clip (upstream's video configs: 1)
    sampling_frame_range: int = 20
    sampling_frame_shuffle: bool = False
    # Flip and crop position drawn once per clip (upstream's *_by_clip augmentations) instead of
    # per frame (upstream's default: each frame flips on its own).
    video_by_clip: bool = False


@dataclass(frozen=True)
class TrainConfig:
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    max_iter: int = 368750  # SOLVER.MAX_ITER
    batch_size: int = 16  # SOLVER.IMS_PER_BATCH: total over all processes (README trains with 8)
    grad_accum: int = 1  # micro-batches per optimizer step (batch_size is split across them)
    amp: bool = True  # SOLVER.AMP.ENABLED: fp16 autocast + GradScaler, CUDA only
    checkpoint_period: int = 10000
    eval_period: int = 10000  # 0 disables periodic validation
    log_period: int = 20
    num_workers: int = 4
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        d = dict(d)
        for name, sub in (("loss", LossConfig), ("optim", OptimConfig), ("schedule", ScheduleConfig), ("augment", AugmentConfig)):
            d[name] = _build(sub, d.get(name, {}))
        return _build(cls, d)

    @classmethod
    def from_json(cls, path: str | Path) -> "TrainConfig":
        from ..errors import InputError

        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except OSError as e:
            raise InputError(f"cannot read training config {path}: {e.strerror}") from None
        except (ValueError, TypeError) as e:  # bad JSON, unknown keys, wrong types
            raise InputError(f"training config {path}: {str(e).splitlines()[0]} - fix the file") from None

    @classmethod
    def from_detectron2_yaml(cls, path: str | Path) -> "TrainConfig":
        """Training settings of an upstream detectron2 config dump (``cfg.dump()``); absent keys keep
        upstream's defaults."""
        import yaml

        cfg = yaml.safe_load(Path(path).read_text())
        sol, inp, mf = cfg.get("SOLVER", {}), cfg.get("INPUT", {}), cfg.get("MODEL", {}).get("MASK_FORMER", {})
        clip = sol.get("CLIP_GRADIENTS", {})
        d, lo, op, sc, au = cls(), LossConfig(), OptimConfig(), ScheduleConfig(), AugmentConfig()
        sched = {"WarmupMultiStepLR": "multistep", "WarmupPolyLR": "poly"}
        crop = inp.get("CROP", {})
        return cls(
            loss=LossConfig(
                object_weight=mf.get("OBJECT_WEIGHT", lo.object_weight),
                mask_weight=mf.get("MASK_WEIGHT", lo.mask_weight),
                dice_weight=mf.get("DICE_WEIGHT", lo.dice_weight),
                iou_weight=mf.get("MASKIOU_WEIGHT", lo.iou_weight),
                num_points=mf.get("TRAIN_NUM_POINTS", lo.num_points),
                oversample_ratio=mf.get("OVERSAMPLE_RATIO", lo.oversample_ratio),
                importance_sample_ratio=mf.get("IMPORTANCE_SAMPLE_RATIO", lo.importance_sample_ratio),
                deep_supervision=mf.get("DEEP_SUPERVISION", lo.deep_supervision),
            ),
            optim=OptimConfig(
                lr=sol.get("BASE_LR", op.lr),
                weight_decay=sol.get("WEIGHT_DECAY", op.weight_decay),
                weight_decay_norm=sol.get("WEIGHT_DECAY_NORM", op.weight_decay_norm),
                weight_decay_embed=sol.get("WEIGHT_DECAY_EMBED", op.weight_decay_embed),
                backbone_multiplier=sol.get("BACKBONE_MULTIPLIER", op.backbone_multiplier),
                clip_grad_norm=clip.get("CLIP_VALUE", op.clip_grad_norm) if clip.get("ENABLED", True) else 0.0,
            ),
            schedule=ScheduleConfig(
                kind=sched.get(sol.get("LR_SCHEDULER_NAME"), sc.kind),
                warmup_iters=sol.get("WARMUP_ITERS", sc.warmup_iters),
                warmup_factor=sol.get("WARMUP_FACTOR", sc.warmup_factor),
                steps=tuple(sol.get("STEPS", sc.steps)),
                gamma=sol.get("GAMMA", sc.gamma),
                poly_power=sol.get("POLY_LR_POWER", sc.poly_power),
            ),
            augment=AugmentConfig(
                image_size=inp.get("IMAGE_SIZE", au.image_size),
                min_scale=inp.get("MIN_SCALE", au.min_scale),
                max_scale=inp.get("MAX_SCALE", au.max_scale),
                flip=inp.get("RANDOM_FLIP", "horizontal") != "none",
                video_min_sizes=tuple(inp.get("MIN_SIZE_TRAIN", au.video_min_sizes)),
                video_max_size=inp.get("MAX_SIZE_TRAIN", au.video_max_size),
                video_crop=tuple(crop["SIZE"]) if crop.get("ENABLED") else None,
                sampling_frame_num=inp.get("SAMPLING_FRAME_NUM", au.sampling_frame_num),
                sampling_frame_range=inp.get("SAMPLING_FRAME_RANGE", au.sampling_frame_range),
                sampling_frame_shuffle=inp.get("SAMPLING_FRAME_SHUFFLE", au.sampling_frame_shuffle),
            ),
            max_iter=sol.get("MAX_ITER", d.max_iter),
            batch_size=sol.get("IMS_PER_BATCH", d.batch_size),
            amp=sol.get("AMP", {}).get("ENABLED", d.amp),
            checkpoint_period=sol.get("CHECKPOINT_PERIOD", d.checkpoint_period),
            eval_period=cfg.get("TEST", {}).get("EVAL_PERIOD", d.eval_period),
            num_workers=cfg.get("DATALOADER", {}).get("NUM_WORKERS", d.num_workers),
        )

