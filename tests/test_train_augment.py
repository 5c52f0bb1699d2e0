"""Training augmentation invariants (upstream's LSJ and video pipelines) and TrainDataset determinism."""
from __future__ import annotations

import json
from dataclasses import replace

import cv2
import numpy as np
import pytest
import torch

from clipvis_core.errors import InputError
from clipvis_core.training.augment import augment_clip, augment_image, sample_frames, shortest_edge_size
from clipvis_core.training.config import AugmentConfig
from clipvis_core.training.data import Sample, TrainDataset, open_source

pytestmark = pytest.mark.training


def _sample(t: int, h: int, w: int, seed: int = 0) -> Sample:
    """Random frames, one left-half instance and one small square near the bottom-right corner."""
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 255, (t, h, w, 3), dtype=np.uint8)
    masks = np.zeros((2, t, h, w), bool)
    masks[0, :, h // 4: h // 2, 1: w // 3] = True
    masks[1, :, h - 3: h - 1, w - 3: w - 1] = True
    return Sample(frames=frames, masks=masks, categories=["left", "corner"], source="synthetic")


def test_lsj_output_is_image_size_and_padded():
    cfg = AugmentConfig(image_size=48)
    kept = 0
    for seed in range(20):
        out = augment_image(_sample(1, 30, 40, seed), cfg, np.random.default_rng(seed))
        assert out.frames.shape == (1, 48, 48, 3) and out.masks.shape[1:] == (1, 48, 48)
        assert out.masks.any(axis=(1, 2, 3)).all()  # empty instances filtered
        kept += len(out.categories)
    assert 0 < kept < 40  # the crop keeps some instances and removes others
    small = AugmentConfig(image_size=48, min_scale=0.5, max_scale=0.5)  # 30x40 -> 18x24: padded with 128
    out = augment_image(_sample(1, 30, 40), small, np.random.default_rng(0))
    assert (out.frames[0, 18:] == 128).all() and (out.frames[0, :, 24:] == 128).all() and not out.masks[:, :, 18:].any()


def test_lsj_flip_mirrors_image_and_masks():
    """Scale 1 into an image-size canvas: nothing resized or cropped, so a flip is an exact mirror."""
    cfg = AugmentConfig(image_size=40, min_scale=1.0, max_scale=1.0)
    src = _sample(1, 40, 40)
    seen = set()
    for seed in range(8):
        flipped = np.random.default_rng(seed).random() < 0.5  # the pipeline's first draw
        out = augment_image(src, cfg, np.random.default_rng(seed))
        ref_frames, ref_masks = (src.frames[:, :, ::-1], src.masks[..., ::-1]) if flipped else (src.frames, src.masks)
        assert np.array_equal(out.frames, ref_frames) and np.array_equal(out.masks, ref_masks)
        seen.add(flipped)
    assert seen == {True, False}
    no_flip = replace(cfg, flip=False)
    assert all(np.array_equal(augment_image(src, no_flip, np.random.default_rng(s)).frames, src.frames) for s in range(8))


def test_lsj_instance_cropped_away_is_dropped():
    # Scale 2: 20x20 -> 40x40, then a 20x20 crop at (round(20u), round(20u)); the corner square
    # (rows/cols 34..37 after resizing) survives only when the crop reaches the corner.
    cfg = AugmentConfig(image_size=20, min_scale=2.0, max_scale=2.0, flip=False)
    src = _sample(1, 20, 20)
    for seed in range(10):
        rng = np.random.default_rng(seed)
        rng.uniform(2.0, 2.0)
        off = int(round(20 * rng.uniform(0.0, 1.0)))
        out = augment_image(src, cfg, np.random.default_rng(seed))
        assert ("corner" in out.categories) == (off + 20 > 34), (seed, off)
        assert ("left" in out.categories) == (off < 2 * (20 // 3)), (seed, off)


def test_frame_sampling_as_upstream():
    cfg = AugmentConfig(sampling_frame_num=5, sampling_frame_range=3)
    rng = np.random.default_rng(0)
    refs = set()
    for _ in range(200):
        picked = sample_frames(30, cfg, rng)
        assert len(picked) == 5 and picked == sorted(picked)
        assert all(0 <= i < 30 for i in picked) and max(picked) - min(picked) <= 2 * cfg.sampling_frame_range
        # The reference frame appears once unless re-drawn; the others lie within +-range of it.
        assert any(all(abs(i - r) <= 3 for i in picked) for r in picked)
        refs.add(picked[0])
    assert len(refs) > 20  # the reference moves over the whole video
    shuffled = replace(cfg, sampling_frame_shuffle=True)
    orders = [sample_frames(30, shuffled, np.random.default_rng(s)) for s in range(30)]
    assert any(o != sorted(o) for o in orders)
    assert sample_frames(1, cfg, rng) == [0] * 5  # a one-frame video repeats its frame
    assert sample_frames(30, AugmentConfig(), rng).__len__() == 1


def test_shortest_edge_resize_matches_detectron2_rule():
    assert shortest_edge_size(480, 640, 800, 1333) == (800, 1067)
    assert shortest_edge_size(100, 1000, 800, 1333) == (133, 1333)  # capped by the long side
    cfg = AugmentConfig(video_min_sizes=(24, 32), video_max_size=100, flip=False)
    sizes = {augment_clip(_sample(2, 30, 40), cfg, np.random.default_rng(s)).frames.shape[1:3] for s in range(20)}
    assert sizes == {(24, 32), (32, 43)}


def test_video_flip_per_frame_or_per_clip():
    src = _sample(6, 24, 32)
    cfg = AugmentConfig(video_min_sizes=(24,), video_max_size=1000)
    mixed = 0
    for seed in range(10):
        out = augment_clip(src, cfg, np.random.default_rng(seed))
        flips = [np.array_equal(out.frames[k], src.frames[k, :, ::-1]) for k in range(6)]
        assert all(f or np.array_equal(out.frames[k], src.frames[k]) for k, f in enumerate(flips))
        assert all(np.array_equal(out.masks[:, k], src.masks[:, k, :, ::-1] if f else src.masks[:, k]) for k, f in enumerate(flips))
        mixed += len(set(flips)) > 1
        by_clip = augment_clip(src, replace(cfg, video_by_clip=True), np.random.default_rng(seed))
        assert len({np.array_equal(by_clip.frames[k], src.frames[k]) for k in range(6)}) == 1
    assert mixed > 0  # upstream's default: each frame flips on its own


def test_video_absent_after_crop_and_dropped_when_absent_everywhere():
    src = _sample(2, 40, 40)
    src.masks[1, 1] = False  # the corner square: only in frame 0
    cfg = AugmentConfig(video_min_sizes=(20,), video_max_size=1000, flip=False, video_crop=(0.5, 0.5), video_by_clip=True)
    outcomes = set()
    for seed in range(30):
        out = augment_clip(src, cfg, np.random.default_rng(seed))
        assert out.frames.shape[0] == 2 and min(out.frames.shape[1:3]) == 20
        if "corner" in out.categories:
            k = out.categories.index("corner")
            assert out.masks[k, 0].any() and not out.masks[k, 1].any()  # absent in frame 1: all False
        for k in range(len(out.categories)):
            assert out.masks[k].any()  # never an instance absent from the whole clip
        outcomes.add(tuple(out.categories))
    assert ("left",) in outcomes or () in outcomes  # the crop removed the corner square in some clips


@pytest.fixture
def mixed_records(tmp_path):
    """A YTVIS video (8 frames) and a COCO image, as records."""
    frames = np.random.default_rng(0).integers(0, 255, (8, 24, 32, 3), dtype=np.uint8)
    names = []
    for i, f in enumerate(frames):
        names.append(f"v/{i:03d}.png")
        (tmp_path / "v").mkdir(exist_ok=True)
        cv2.imwrite(str(tmp_path / names[-1]), f)
    box = [[2, 2, 20, 2, 20, 14, 2, 14]]
    vid = {"videos": [{"id": 1, "file_names": names, "height": 24, "width": 32}],
           "annotations": [{"id": 1, "video_id": 1, "segmentations": [box] * 4 + [None] * 4}]}
    (tmp_path / "v.json").write_text(json.dumps(vid))
    cv2.imwrite(str(tmp_path / "i.png"), frames[0])
    img = {"images": [{"id": 1, "file_name": "i.png", "height": 24, "width": 32}],
           "annotations": [{"id": 1, "image_id": 1, "segmentation": box, "iscrowd": 0},
                           {"id": 2, "image_id": 1, "segmentation": [[0, 0, 5, 0, 5, 5]], "iscrowd": 1}]}
    (tmp_path / "i.json").write_text(json.dumps(img))
    return open_source(str(tmp_path / "v.json")), open_source(str(tmp_path / "i.json"))


def _same(a: Sample, b: Sample) -> bool:
    return np.array_equal(a.frames, b.frames) and np.array_equal(a.masks, b.masks)


def test_dataset_is_reproducible_across_workers_and_epochs(mixed_records):
    video, image = mixed_records
    cfg = AugmentConfig(image_size=32, video_min_sizes=(16, 20), video_max_size=64, sampling_frame_num=3, sampling_frame_range=2)
    ds = TrainDataset(video * 3, cfg, seed=7)
    first = [ds[i] for i in range(3)]
    assert all(s.frames.shape[0] == 3 for s in first) and not all(_same(first[0], s) for s in first[1:])
    assert all(_same(a, b) for a, b in zip(first, (TrainDataset(video * 3, cfg, seed=7)[i] for i in range(3))))
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2)
    assert all(_same(a, b) for a, b in zip(first, loader))
    ds.set_epoch(1)
    assert not all(_same(a, ds[i]) for i, a in enumerate(first))
    assert not _same(first[0], TrainDataset(video * 3, cfg, seed=8)[0])
    (img,) = [TrainDataset(image, cfg, seed=0)[0]]
    assert img.frames.shape == (1, 32, 32, 3) and img.categories == [None]  # the crowd annotation is dropped
    with pytest.raises(InputError, match="cannot share batches"):
        TrainDataset(video + image, cfg)
    assert len(TrainDataset(video + image, replace(cfg, sampling_frame_num=1))) == 2
