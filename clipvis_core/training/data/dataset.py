"""``TrainDataset``: records -> augmented ``Sample``s, reproducible whatever the worker count.

Item ``i`` of epoch ``e`` draws everything (frame sampling, flips, scales, crops) from
``np.random.default_rng([seed, e, i])``, so a run replays exactly with 0, 2 or 8 loader workers and
on any number of processes. Images are one-frame clips; videos give ``sampling_frame_num`` frames
(one when the video has a single frame). A batch must hold clips of one length: with
``sampling_frame_num > 1`` and images mixed with videos, batch with ``ClipLengthBatchSampler``.
"""
from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import torch

from ..augment import augment_clip, augment_image, drop_crowd, sample_frames
from ..config import AugmentConfig
from .decode import decode, select_frames
from .sample import Sample, SampleRecord


class TrainDataset(torch.utils.data.Dataset):
    def __init__(self, records: Sequence[SampleRecord], cfg: AugmentConfig, seed: int = 0):
        self.records = list(records)
        self.cfg = cfg
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.records)

    def rng(self, i: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, int(i)])

    def clip_length(self, i: int) -> int:
        rec = self.records[i]
        return min(self.cfg.sampling_frame_num, len(rec.frames)) if rec.video and len(rec.frames) > 1 else 1

    def __getitem__(self, i: int) -> Sample:
        rec = drop_crowd(self.records[i])
        rng = self.rng(i)
        if not rec.video:
            return augment_image(decode(rec), self.cfg, rng)
        picked = sample_frames(len(rec.frames), self.cfg, rng) if len(rec.frames) > 1 else [0]
        return augment_clip(decode(select_frames(rec, picked)), self.cfg, rng)


def collate_samples(samples: list[Sample]) -> list[Sample]:
    """Keep samples as a list (sizes differ on the video path); check one clip length per batch."""
    lengths = {len(s.frames) for s in samples}
    if len(lengths) > 1:
        raise ValueError(f"a batch mixes clip lengths {sorted(lengths)}: batch with ClipLengthBatchSampler "
                         "(images are 1-frame clips, videos sampling_frame_num frames)")
    return samples


class ClipLengthBatchSampler(torch.utils.data.Sampler):
    """Shuffled batches of equal clip length; this rank takes every ``world_size``-th batch.

    The order depends only on (seed, epoch): every rank computes the same batch list.
    Incomplete batches are dropped (as detectron2's grouped sampler does for training).
    """

    def __init__(self, dataset: TrainDataset, batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1):
        self.lengths = [dataset.clip_length(i) for i in range(len(dataset))]
        self.batch_size, self.seed, self.rank, self.world_size = batch_size, seed, rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _batches(self) -> list[list[int]]:
        order = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.lengths))
        buckets: dict[int, list[int]] = {}
        batches = []
        for i in order.tolist():
            b = buckets.setdefault(self.lengths[i], [])
            b.append(i)
            if len(b) == self.batch_size:
                batches.append(list(b))
                b.clear()
        return batches[self.rank::self.world_size]

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self._batches())

    def __len__(self) -> int:
        return len(self._batches())
