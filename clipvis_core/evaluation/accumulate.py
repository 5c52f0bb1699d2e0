"""Precision/recall accumulation and the 12 summary numbers (COCO semantics, numpy-vectorised).

``precision`` is (T, R, K, A, M) and ``recall`` (T, K, A, M); -1 marks a setting with no
valid GT (or no video with GT or detections of that category), as upstream.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .protocol import Protocol

STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


@dataclass
class AreaPool:
    """All (video, category) results of one area range, appended in (category, video) order."""

    T: int
    K: int
    scores: list[np.ndarray] = field(default_factory=list)
    ranks: list[np.ndarray] = field(default_factory=list)  # rank of a detection within its pair
    matched: list[np.ndarray] = field(default_factory=list)
    ignored: list[np.ndarray] = field(default_factory=list)
    cat_of_pair: list[int] = field(default_factory=list)
    regular_gt: np.ndarray | None = None  # (K,) number of non-ignored GT per category
    has_entry: np.ndarray | None = None  # (K,) any pair with GT or detections

    def __post_init__(self):
        self.regular_gt = np.zeros(self.K, dtype=np.int64)
        self.has_entry = np.zeros(self.K, dtype=bool)

    def add(self, k: int, scores: np.ndarray, matched: np.ndarray, ignored: np.ndarray, n_regular_gt: int) -> None:
        self.has_entry[k] = True
        self.regular_gt[k] += n_regular_gt
        if len(scores):
            self.scores.append(scores)
            self.ranks.append(np.arange(len(scores)))
            self.matched.append(matched)
            self.ignored.append(ignored)
            self.cat_of_pair.append(k)


def accumulate(pools: list[AreaPool], proto: Protocol) -> tuple[np.ndarray, np.ndarray]:
    T, R, M = len(proto.iou_thresholds), len(proto.recall_thresholds), len(proto.max_dets)
    K, A = pools[0].K, len(pools)
    rec_thrs = np.asarray(proto.recall_thresholds)
    precision = -np.ones((T, R, K, A, M))
    recall = -np.ones((T, K, A, M))
    for a, pool in enumerate(pools):
        if pool.scores:
            sizes = np.array([len(s) for s in pool.scores])
            scores = np.concatenate(pool.scores)
            ranks = np.concatenate(pool.ranks)
            matched = np.concatenate(pool.matched, axis=1)
            ignored = np.concatenate(pool.ignored, axis=1)
            cat = np.repeat(np.asarray(pool.cat_of_pair), sizes)
            # Pairs were appended category by category, so each category is one slice.
            bounds = np.searchsorted(cat, np.arange(K + 1), side="left")
        else:
            scores = ranks = np.zeros(0)
            matched = ignored = np.zeros((T, 0), dtype=bool)
            bounds = np.zeros(K + 1, dtype=np.int64)
        for k in range(K):
            npig = int(pool.regular_gt[k])
            if not pool.has_entry[k] or npig == 0:
                continue
            lo, hi = bounds[k], bounds[k + 1]
            for m, max_det in enumerate(proto.max_dets):
                sel = slice(lo, hi)
                keep = ranks[sel] < max_det
                ds = scores[sel][keep]
                order = np.argsort(-ds, kind="mergesort")
                tm = matched[:, sel][:, keep][:, order]
                ti = ignored[:, sel][:, keep][:, order]
                _fill(precision[:, :, k, a, m], recall[:, k, a, m], tm, ti, npig, rec_thrs)
    return precision, recall


def _fill(prec_out: np.ndarray, rec_out: np.ndarray, matched, ignored, npig: int, rec_thrs) -> None:
    nd = matched.shape[1]
    if nd == 0:
        rec_out[:] = 0
        prec_out[:] = 0
        return
    tp = np.cumsum(matched & ~ignored, axis=1).astype(np.float64)
    fp = np.cumsum(~matched & ~ignored, axis=1).astype(np.float64)
    rc = tp / npig
    pr = tp / (fp + tp + np.spacing(1))
    rec_out[:] = rc[:, -1]
    # Precision envelope: make it non-increasing from the right.
    pr = np.maximum.accumulate(pr[:, ::-1], axis=1)[:, ::-1]
    for t in range(tp.shape[0]):
        idx = np.searchsorted(rc[t], rec_thrs, side="left")
        inside = idx < nd
        prec_out[t] = np.where(inside, pr[t][np.minimum(idx, nd - 1)], 0.0)


def _mean_valid(s: np.ndarray) -> float:
    v = s[s > -1]
    return float(np.mean(v)) if v.size else -1.0


def summarize(precision: np.ndarray, recall: np.ndarray, proto: Protocol, cats: np.ndarray | None = None) -> dict[str, float]:
    """The 12 summary numbers over the category indices ``cats`` (all when None)."""
    if cats is not None:
        precision = precision[:, :, cats]
        recall = recall[:, cats]
    thr = np.asarray(proto.iou_thresholds)
    t50, t75 = np.where(thr == 0.5)[0], np.where(thr == 0.75)[0]
    small, medium, large = (proto.area_labels.index(x) for x in ("small", "medium", "large"))
    m1, m10, m100 = 0, 1, len(proto.max_dets) - 1
    p, r = precision, recall
    vals = [
        _mean_valid(p[:, :, :, 0, m100]),
        _mean_valid(p[t50][:, :, :, 0, m100]),
        _mean_valid(p[t75][:, :, :, 0, m100]),
        _mean_valid(p[:, :, :, small, m100]),
        _mean_valid(p[:, :, :, medium, m100]),
        _mean_valid(p[:, :, :, large, m100]),
        _mean_valid(r[:, :, 0, m1]),
        _mean_valid(r[:, :, 0, m10]),
        _mean_valid(r[:, :, 0, m100]),
        _mean_valid(r[:, :, small, m100]),
        _mean_valid(r[:, :, medium, m100]),
        _mean_valid(r[:, :, large, m100]),
    ]
    return dict(zip(STAT_NAMES, vals))


def per_category_ap(precision: np.ndarray) -> list[float | None]:
    """AP per category index over area 'all' and the largest max-dets; None when undefined."""
    vals = (_mean_valid(precision[:, :, k, 0, -1]) for k in range(precision.shape[2]))
    return [None if v < 0 else v for v in vals]
