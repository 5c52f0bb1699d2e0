"""Data loading for the training loop: sources -> checked records -> a DataLoader of micro-batches.

Rank 0 opens the sources (API calls, file scans) and hands the records to every rank. The loader
yields this rank's share of every step (``distributed.StepShardSampler``); a sample that fails to
load travels through the loader as ``Failed`` so the main process can stop with its one-line reason.
"""
from __future__ import annotations

import os

from pathlib import Path

import torch

from ..errors import ClipvisError, InputError
from . import distributed as D
from .config import TrainConfig


def open_records(specs: list[str], images_dir: str | None, what: str) -> list:
    from .data import open_source

    records = []
    for spec in specs:
        records.extend(open_source(spec, images_dir=images_dir))
    _check_files(records, what)
    if not records and specs:
        raise InputError(f"{what} {' '.join(specs)} holds no samples with images: check the annotation file "
                         "and that its images exist (--images DIR)")
    return records


def _check_files(records, what: str) -> None:
    """Every image / video file exists (a stat per file): a missing one fails now, not hours in."""
    seen: set[str] = set()
    missing = []
    for r in records:
        for ref in r.frames:
            path = ref[0] if isinstance(ref, tuple) else ref
            if path not in seen:
                seen.add(path)
                if not Path(path).is_file():
                    missing.append((path, r.source))
    if missing:
        path, source = missing[0]
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise InputError(f"{what}: image file not found: {path} ({source}){more}: restore it, remove its annotation, "
                         "or pass --images DIR (the folder the file names are relative to)")


def shared_records(specs, images_dir, what, info):
    """Open sources on rank 0 only (API calls, file scans) and hand the records to every rank."""
    result = None
    if info.is_main:
        try:
            result = ("ok", open_records(specs, images_dir, what))
        except ClipvisError as e:
            result = ("error", str(e))
    result = D.broadcast_object(result)
    if result[0] == "error":
        raise InputError(result[1])
    return result[1]


class Failed:
    """A sample that could not be loaded, passed through the loader so the main process can say why."""

    def __init__(self, message: str):
        self.message = message


class _EpochIndexed(torch.utils.data.Dataset):
    """Dataset keyed by (epoch, index): augmentation draws depend on both, in any worker."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key):
        epoch, index = key
        try:
            self.dataset.set_epoch(epoch)
            return self.dataset[index]
        except (ClipvisError, ValueError, OSError) as e:
            return Failed(str(e).splitlines()[0] if str(e) else type(e).__name__)


class _SafeCollate:
    def __init__(self, collate):
        self.collate = collate

    def __call__(self, samples):
        for s in samples:
            if isinstance(s, Failed):
                return s
        try:
            return self.collate(samples)
        except ValueError as e:
            return Failed(str(e).splitlines()[0])


def build_loader(records, cfg: TrainConfig, model_cfg, start_step: int, info: D.DistInfo):
    from .data import TrainDataset
    from .targets import Collator

    base = TrainDataset(records, cfg.augment, seed=cfg.seed)
    lengths = {base.clip_length(i) for i in range(len(base))}
    if len(lengths) > 1:
        raise InputError(f"the data gives clips of {sorted(lengths)} frames (images are 1-frame clips) but a batch holds "
                         "one clip length: with augment.sampling_frame_num > 1 train images and videos in separate runs "
                         "(images first, then videos, as upstream)")
    dataset = _EpochIndexed(base)
    sampler = D.StepShardSampler(len(records), cfg.seed, cfg.batch_size, start_step, cfg.max_iter, info)
    micro = cfg.batch_size // (info.world_size * cfg.grad_accum)
    # More decoding processes than cores per training process only contend (and torch warns).
    workers = max(0, min(cfg.num_workers, (os.cpu_count() or 1) // info.world_size))
    return torch.utils.data.DataLoader(
        dataset, batch_size=micro, sampler=sampler, num_workers=workers,
        collate_fn=_SafeCollate(Collator.from_model_config(model_cfg)),
        generator=torch.Generator().manual_seed(cfg.seed),  # never touches the global RNG
        persistent_workers=False, prefetch_factor=2 if workers else None)
