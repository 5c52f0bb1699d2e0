"""``evaluate(gt, results, protocol)``: video instance segmentation AP/AR as the upstream evaluators.

Stages: load + validate -> group GT and detections per (video, category) -> video IoU per pair
-> greedy matching per area range -> accumulate precision/recall -> summaries, per-category AP,
LV-VIS base/novel split and per-video scores.
"""
from __future__ import annotations

import os
from collections import defaultdict
from typing import Sequence

import numpy as np

from .accumulate import STAT_NAMES, AreaPool, accumulate, per_category_ap, summarize
from .dataset import Detection, GroundTruth, GtTrack, load_ground_truth, load_results, merge_categories
from .iou import video_iou_matrix
from .matching import match_pair, out_of_range
from .protocol import Protocol, get_protocol
from .report import CategoryScore, EvalDetails, EvalReport, VideoScore

Pair = tuple[int, int]  # (video_id, category_id)


def _mean_nonzero(values, truncate: bool = False) -> float:
    # Upstream: the mean over frames whose area is truthy (present and non-zero), 0 if none.
    vals = [a for a in values if a]
    if truncate:
        vals = [int(a) for a in vals]
    return float(np.array(vals).mean()) if vals else 0.0


def _det_avg_areas(dets: list[Detection]) -> np.ndarray:
    from pycocotools import mask as mask_utils

    out = np.zeros(len(dets))
    for i, d in enumerate(dets):
        present = [m for m in d.masks if m is not None]
        if present:
            out[i] = _mean_nonzero(mask_utils.area(present).tolist())
    return out


def evaluate(
    gt: str | os.PathLike | dict | GroundTruth,
    results: str | os.PathLike | Sequence[dict],
    protocol: str | Protocol = "ytvis",
    *,
    keep_details: bool = False,
    class_agnostic: bool = False,
) -> EvalReport:
    """Evaluate YTVIS-format results against YTVIS-format ground truth.

    ``protocol``: ``"ytvis"`` (YouTube-VIS ``YTVOSeval``) or ``"lvvis"`` (``LVVISeval``), or a
    :class:`Protocol`. ``class_agnostic``: every category counted as one (mask quality apart
    from the vocabulary; see :func:`merge_categories`). Raises :class:`clipvis_core.errors.InputError` for malformed input.
    """
    proto = get_protocol(protocol)
    gts = gt if isinstance(gt, GroundTruth) else load_ground_truth(gt)
    dets = load_results(results, gts)
    if class_agnostic:
        gts, dets = merge_categories(gts, dets)
    cat_index = {cid: k for k, cid in enumerate(gts.category_ids)}
    max_det = proto.max_dets[-1]

    gt_pairs: dict[Pair, list[GtTrack]] = defaultdict(list)
    for t in gts.tracks:
        gt_pairs[t.video_id, t.category_id].append(t)
    dt_pairs: dict[Pair, list[Detection]] = defaultdict(list)
    for d in dets:
        dt_pairs[d.video_id, d.category_id].append(d)
    for key, lst in dt_pairs.items():
        order = np.argsort([-d.score for d in lst], kind="mergesort")
        dt_pairs[key] = [lst[i] for i in order[:max_det]]

    # Evaluation order as upstream: category-major, then video id.
    pairs = sorted(set(gt_pairs) | set(dt_pairs), key=lambda p: (cat_index[p[1]], p[0]))
    pair_data = {}
    for p in pairs:
        g, d = gt_pairs.get(p, []), dt_pairs.get(p, [])
        n_frames = gts.videos[p[0]].num_frames or 0
        pair_data[p] = (
            video_iou_matrix([x.masks for x in d], [x.masks for x in g], n_frames),
            np.array([_mean_nonzero(x.areas, proto.truncate_gt_areas) for x in g]),
            np.array([x.iscrowd for x in g], dtype=bool),
            np.array([x.id for x in g], dtype=np.int64),
            _det_avg_areas(d),
            np.array([x.score for x in d]),
        )

    T, K = len(proto.iou_thresholds), len(cat_index)
    thresholds = np.asarray(proto.iou_thresholds)
    pools = [AreaPool(T, K) for _ in proto.area_ranges]
    video_rows = {vid: [0, 0, 0, []] for vid in gts.videos}  # num_gt, matched, fps, best ious
    for a, rng in enumerate(proto.area_ranges):
        for p in pairs:
            ious, gt_area, crowd, gt_ids, dt_area, scores = pair_data[p]
            gt_ign = out_of_range(gt_area, rng) | (crowd & proto.crowd_is_ignored)
            dt_oor = out_of_range(dt_area, rng)
            pm = match_pair(ious, gt_ign, crowd, gt_ids, dt_oor, thresholds)
            pools[a].add(cat_index[p[1]], scores, pm.dt_matched, pm.dt_ignored, int((~gt_ign).sum()))
            if a == 0:
                row = video_rows[p[0]]
                regular = ~gt_ign
                row[0] += int(regular.sum())
                hits = pm.dt_matched[0] & ~pm.dt_ignored[0]
                row[1] += len(set(pm.dt_gt[0][hits].tolist()))
                row[2] += int((~pm.dt_matched[0] & ~pm.dt_ignored[0]).sum())
                best = ious.max(axis=0) if ious.shape[0] else np.zeros(ious.shape[1])
                row[3].extend(best[regular].tolist())

    precision, recall = accumulate(pools, proto)
    stats = summarize(precision, recall, proto)
    cat_ap = per_category_ap(precision)
    n_gt_per_cat = defaultdict(int)
    for t in gts.tracks:
        n_gt_per_cat[t.category_id] += 1
    per_category = [CategoryScore(c.id, c.name, c.partition, n_gt_per_cat[c.id], cat_ap[k])
                    for k, c in enumerate(gts.categories)]

    base_novel = None
    if any(c.partition is not None for c in gts.categories):
        # Upstream slices by ``category_id - 1``; indexing by position is the same for ids 1..K.
        base = np.array([k for k, c in enumerate(gts.categories) if c.partition in (0, 1)], dtype=np.int64)
        novel = np.array([k for k, c in enumerate(gts.categories) if c.partition in (2, 3)], dtype=np.int64)
        split = {"all": stats, "base": summarize(precision, recall, proto, base),
                 "novel": summarize(precision, recall, proto, novel)}
        base_novel = {name: {part: split[part][name] for part in split} for name in STAT_NAMES}

    n_pred = defaultdict(int)
    for d in dets:
        n_pred[d.video_id] += 1
    per_video = [
        VideoScore(vid, row[0], n_pred[vid], row[1], row[2], float(np.mean(row[3])) if row[3] else None)
        for vid, row in sorted(video_rows.items())
    ]
    details = None
    if keep_details:
        details = EvalDetails({p: pair_data[p][0] for p in pairs if p in dt_pairs}, precision, recall)
    return EvalReport(proto.name, stats, per_category, base_novel, per_video,
                      len(gts.videos), len(gts.tracks), len(dets), details)
