"""Training augmentation as upstream, ``Sample -> Sample``, every draw from one numpy ``Generator``.

Image path (``coco_instance_lsj``): crowd dropped, RandomFlip(horizontal) -> ResizeScale(min_scale,
max_scale, image_size) -> FixedSizeCrop(image_size) padded bottom/right with 128 -> empty instances
filtered. Video path (``YTVISDatasetMapper``): frame sampling, then per frame [relative-range
crop] -> ResizeShortestEdge(video_min_sizes, video_max_size, "choice") -> RandomFlip; an instance
empty in a frame afterwards is absent there, one absent in every frame is dropped.

Where we differ, and why: frames of a clip share one size here, so the shortest-edge choice and the
crop size are drawn once per clip (upstream draws per frame; identical with its single default
size and crop off); upstream flips and crop positions per frame, ``video_by_clip`` draws them once
per clip. Masks are rasterised at the source size and resized nearest-neighbour (upstream moves
polygon vertices and rasterises afterwards: boundary pixels may differ). Images and masks are
resized with PIL, as detectron2's ``ResizeTransform`` does.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

from .config import AugmentConfig
from .data.sample import Sample, SampleRecord

PAD_VALUE = 128  # detectron2 FixedSizeCrop's pad_value


def drop_crowd(record: SampleRecord) -> SampleRecord:
    """Upstream's mappers train on ``iscrowd == 0`` annotations only."""
    from dataclasses import replace

    return replace(record, instances=[i for i in record.instances if not i.iscrowd])


def sample_frames(length: int, cfg: AugmentConfig, rng: np.random.Generator) -> list[int]:
    """Upstream's clip sampling: a reference frame, the others drawn with replacement from
    ``[ref - range, ref + range]`` without ``ref``, sorted unless ``sampling_frame_shuffle``.
    A one-frame video repeats its frame (upstream fails there), so every clip has the same length."""
    ref = int(rng.integers(length))
    lo, hi = max(0, ref - cfg.sampling_frame_range), min(length, ref + cfg.sampling_frame_range + 1)
    pool = [i for i in range(lo, hi) if i != ref] or [ref]
    others = rng.choice(pool, cfg.sampling_frame_num - 1).tolist() if cfg.sampling_frame_num > 1 else []
    picked = sorted([*others, ref])
    if cfg.sampling_frame_shuffle:
        rng.shuffle(picked)
    return [int(i) for i in picked]


def _resize(sample: Sample, h: int, w: int) -> Sample:
    if sample.frames.shape[1:3] == (h, w):
        return sample
    frames = np.stack([np.asarray(Image.fromarray(f).resize((w, h), Image.BILINEAR)) for f in sample.frames])
    n, t = sample.masks.shape[:2]
    masks = np.zeros((n, t, h, w), bool)
    for i in range(n):
        for k in range(t):
            if sample.masks[i, k].any():
                masks[i, k] = np.asarray(Image.fromarray(sample.masks[i, k]).resize((w, h), Image.NEAREST))
    return Sample(frames=frames, masks=masks, categories=sample.categories, source=sample.source)


def _flip(frames: np.ndarray, masks: np.ndarray, which: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mirror the frames where ``which[t]`` (a per-frame bool)."""
    frames, masks = frames.copy(), masks.copy()
    frames[which] = frames[which][:, :, ::-1]
    masks[:, which] = masks[:, which][..., ::-1]
    return frames, masks


def _keep_present(sample: Sample) -> Sample:
    keep = sample.masks.reshape(len(sample.masks), -1).any(axis=1) if len(sample.masks) else np.zeros(0, bool)
    return Sample(frames=sample.frames, masks=sample.masks[keep],
                  categories=[c for c, k in zip(sample.categories, keep) if k], source=sample.source)


def augment_image(sample: Sample, cfg: AugmentConfig, rng: np.random.Generator) -> Sample:
    """Large-scale jitter: flip, ResizeScale, FixedSizeCrop(image_size x image_size) with padding."""
    frames, masks = sample.frames, sample.masks
    if cfg.flip and rng.random() < 0.5:
        frames, masks = _flip(frames, masks, np.ones(len(frames), bool))
    h, w = frames.shape[1:3]
    size = cfg.image_size
    # ResizeScale: the image fits (scale * size)^2 keeping its aspect ratio.
    target = rng.uniform(cfg.min_scale, cfg.max_scale) * size
    s = min(target / h, target / w)
    nh, nw = max(1, int(round(h * s))), max(1, int(round(w * s)))
    out = _resize(Sample(frames=frames, masks=masks, categories=sample.categories, source=sample.source), nh, nw)
    # FixedSizeCrop: one uniform draw scales both axes' free offset, as detectron2 does.
    u = rng.uniform(0.0, 1.0)
    y0, x0 = int(round(max(nh - size, 0) * u)), int(round(max(nw - size, 0) * u))
    ch, cw = min(nh, size), min(nw, size)
    t = len(out.frames)
    frames = np.full((t, size, size, 3), PAD_VALUE, np.uint8)
    frames[:, :ch, :cw] = out.frames[:, y0:y0 + ch, x0:x0 + cw]
    masks = np.zeros((len(out.masks), t, size, size), bool)
    masks[:, :, :ch, :cw] = out.masks[:, :, y0:y0 + ch, x0:x0 + cw]
    return _keep_present(Sample(frames=frames, masks=masks, categories=out.categories, source=out.source))


def shortest_edge_size(h: int, w: int, short: int, max_size: int) -> tuple[int, int]:
    """detectron2 ``ResizeShortestEdge.get_output_shape``."""
    scale = short / min(h, w)
    nh, nw = (short, scale * w) if h < w else (scale * h, short)
    if max(nh, nw) > max_size:
        r = max_size / max(nh, nw)
        nh, nw = nh * r, nw * r
    return int(nh + 0.5), int(nw + 0.5)


def augment_clip(sample: Sample, cfg: AugmentConfig, rng: np.random.Generator) -> Sample:
    """Video path on an already-sampled clip: [crop] -> shortest-edge resize -> flip."""
    frames, masks = sample.frames, sample.masks
    t, h, w = frames.shape[:3]
    if cfg.video_crop is not None:
        # detectron2 RandomCrop "relative_range": size in [crop, 1] of each side, then a position.
        rel = np.asarray(cfg.video_crop, float) + rng.random(2) * (1 - np.asarray(cfg.video_crop, float))
        ch, cw = int(h * rel[0] + 0.5), int(w * rel[1] + 0.5)
        n_pos = 1 if cfg.video_by_clip else t
        ys, xs = rng.integers(h - ch + 1, size=n_pos), rng.integers(w - cw + 1, size=n_pos)
        ys, xs = np.broadcast_to(ys, (t,)), np.broadcast_to(xs, (t,))
        frames = np.stack([frames[k, ys[k]:ys[k] + ch, xs[k]:xs[k] + cw] for k in range(t)])
        masks = np.stack([masks[:, k, ys[k]:ys[k] + ch, xs[k]:xs[k] + cw] for k in range(t)], axis=1)
        h, w = ch, cw
    short = int(rng.choice(cfg.video_min_sizes))
    nh, nw = shortest_edge_size(h, w, short, cfg.video_max_size)
    out = _resize(Sample(frames=frames, masks=masks, categories=sample.categories, source=sample.source), nh, nw)
    frames, masks = out.frames, out.masks
    if cfg.flip:
        draws = rng.random(1 if cfg.video_by_clip else t) < 0.5
        frames, masks = _flip(frames, masks, np.broadcast_to(draws, (t,)).copy())
    return _keep_present(Sample(frames=frames, masks=masks, categories=out.categories, source=out.source))
