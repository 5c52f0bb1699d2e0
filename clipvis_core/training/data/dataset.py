"""``TrainDataset``: records -> augmented ``Sample``s, reproducible whatever the worker count.

Item ``i`` of epoch ``e`` draws everything (frame sampling, flips, scales, crops) from
``np.random.default_rng([seed, e, i])``, so a run replays exactly with 0, 2 or 8 loader workers and
on any number of processes. Images are one-frame clips; videos give ``sampling_frame_num`` frames.
A batch holds clips of one length, so images cannot join videos when ``sampling_frame_num > 1``:
that is refused up front (upstream, too, trains on images and on videos in separate runs).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ...errors import InputError
from .. import augment  # a module import: augment itself imports data.sample
from ..config import AugmentConfig
from .decode import decode, select_frames
from .sample import Sample, SampleRecord


class TrainDataset(torch.utils.data.Dataset):
    def __init__(self, records: Sequence[SampleRecord], cfg: AugmentConfig, seed: int = 0):
        self.records = list(records)
        self.cfg = cfg
        self.seed = int(seed)
        self.epoch = 0
        kinds = {r.video for r in self.records}
        if len(kinds) > 1 and cfg.sampling_frame_num > 1:
            raise InputError(f"images (1-frame clips) and videos ({cfg.sampling_frame_num}-frame clips) cannot share "
                             "batches: train on them in separate runs, or set sampling_frame_num to 1")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.records)

    def rng(self, i: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, int(i)])

    def clip_length(self, i: int) -> int:
        return self.cfg.sampling_frame_num if self.records[i].video else 1

    def __getitem__(self, i: int) -> Sample:
        rec = augment.drop_crowd(self.records[i])
        rng = self.rng(i)
        if not rec.video:
            return augment.augment_image(decode(rec), self.cfg, rng)
        picked = augment.sample_frames(len(rec.frames), self.cfg, rng)
        return augment.augment_clip(decode(select_frames(rec, picked)), self.cfg, rng)
