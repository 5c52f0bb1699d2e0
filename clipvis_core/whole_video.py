"""Upstream's whole-video algorithm, kept as a plain reference (tests and benchmarks only).

Everything is held in memory the way upstream holds it: all frames' decoder outputs, then matching,
classification, selection and the evaluator's full-resolution resize of every instance and frame.
The streaming ``Segmenter`` must give the same tracks while keeping RAM flat.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from pycocotools import mask as mask_utils

from .matching import TemporalMatcher
from .modeling import deform_attn
from .modeling.model import ClipVisModel
from .modeling.transformer_decoder import MultiScaleMaskedTransformerDecoder
from .preprocess import geometry, prepare_frames
from .scoring import frame_class_logits
from .segmenter import SegmentOptions, Segmenter, as_vocabulary
from .tracks import Track, VideoInfo, VideoTracks


def segment_whole_video(seg: Segmenter, frames: np.ndarray, vocabulary, options: SegmentOptions | None = None,
                        upstream_attention: bool = True) -> VideoTracks:
    """frames: [T, H, W, 3] uint8 RGB, already selected (stride/range)."""
    opts = options or SegmentOptions()
    vocab = as_vocabulary(vocabulary)
    cfg, inf = seg.cfg, seg.cfg.inference
    text = seg.text_classifier(vocab)
    t, h, w = frames.shape[:3]
    geom = geometry(h, w, inf.min_size if opts.min_size is None else opts.min_size, opts.max_size or inf.max_size, cfg.size_divisibility)
    out_hw = tuple(opts.output_size) if opts.output_size else (h, w)
    window = opts.window or inf.window
    impl = deform_attn.MSDeformAttn.impl
    deform_attn.MSDeformAttn.impl = "grid_sample" if upstream_attention else impl
    MultiScaleMaskedTransformerDecoder.upstream_masks = True  # upstream's decoder cost, same outputs
    ClipVisModel.upstream_kernels = True  # MKL / plain PyTorch kernels, as upstream runs
    try:
        with torch.inference_mode():
            images = prepare_frames(list(frames), geom, seg.model.pixel_mean, seg.model.pixel_std, seg.device)
            outs = [seg.model.forward_frames(images[i:i + window]) for i in range(0, t, window)]
    finally:
        deform_attn.MSDeformAttn.impl = impl
        MultiScaleMaskedTransformerDecoder.upstream_masks = False
        ClipVisModel.upstream_kernels = False
    with torch.inference_mode():
        obj = torch.cat([o.decoder.object_logits for o in outs])
        masks = torch.cat([o.decoder.masks for o in outs])
        ious = torch.cat([o.decoder.ious for o in outs])
        embeds = torch.cat([o.decoder.embeds for o in outs])
        dense = torch.cat([o.dense for o in outs])
        matcher = TemporalMatcher(inf.memory_len, inf.top_k)
        perms = [torch.as_tensor(matcher.match(embeds[i]).perm) for i in range(t)]
        obj_l = [obj[i][p] for i, p in enumerate(perms)]
        masks_t = torch.stack([masks[i][p] for i, p in enumerate(perms)], 1)  # [Q, T, h, w]
        ious_t = torch.stack([ious[i][p] for i, p in enumerate(perms)], 1)  # [Q, T, 1]
        per_frame_obj = torch.stack(obj_l, 1)  # [Q, T, 2]
        video_obj = sum(obj_l) / len(obj_l)
        logits = torch.stack([frame_class_logits(seg.model.backbone, text, dense[i:i + 1], masks_t[:, i], inf.logit_scale_max) for i in range(t)], 1)
        probs = logits.softmax(-1)  # [Q, T, C]
        final = ((probs * ious_t) ** 0.5).mean(1)
        final = (final * F.softmax(video_obj, -1)[:, :1]) ** 0.5
        c = len(vocab)
        k = min(opts.detections or inf.detections, final.numel())
        scores, idx = final.flatten().topk(k, sorted=False)
        labels, queries = idx % c, torch.div(idx, c, rounding_mode="trunc")
        per_frame = (probs.sigmoid() * per_frame_obj.softmax(-1)[..., :1]) ** 0.5
        per_frame = per_frame[queries, :, labels]  # [K, T]
        inst = masks_t[queries].clone()
        inst[per_frame < scores[:, None] * 0.1] = -1
        pos = (inst > 0).float().flatten(1)
        scores = scores * (inst.sigmoid().flatten(1) * pos).sum(1) / (pos.sum(1) + 1e-6)
        up = F.interpolate(inst, size=geom.padded_hw, mode="bilinear", align_corners=False)
        up = up[:, :, : geom.image_hw[0], : geom.image_hw[1]]
        full = F.interpolate(up, size=out_hw, mode="bilinear", align_corners=False) > 0  # [K, T, H, W]
    tracks = []
    for i in range(k):
        rles = mask_utils.encode(np.asfortranarray(full[i].permute(1, 2, 0).numpy().astype(np.uint8)))
        masks_i, boxes = [], []
        for r in rles:
            area = int(mask_utils.area(r))
            boxes.append([float(v) for v in mask_utils.toBbox(r)] if area else None)
            masks_i.append({"size": r["size"], "counts": r["counts"].decode("ascii")})
        lab = int(labels[i])
        tracks.append(Track(0, vocab.labels[lab], lab, float(scores[i]), masks_i, boxes, per_frame[i].tolist()))
    tracks.sort(key=lambda tr: -tr.score)
    for rank, tr in enumerate(tracks, 1):
        tr.id = rank
    info = VideoInfo("<array>", w, h, 0.0, t, list(range(t)))
    return VideoTracks(info, list(vocab.entries), tracks, seg.model_version(vocab), opts.to_dict())
