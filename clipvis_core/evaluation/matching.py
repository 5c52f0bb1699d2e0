"""Greedy COCO-style matching of one (video, category, area range), vectorised over IoU thresholds.

Detections are visited best score first. At each threshold a detection takes the GT with the
highest IoU >= threshold among GTs still free (crowd GTs never become taken); regular GTs are
preferred over ignored ones, and on equal IoU the later GT in (ignored-last) order wins -
exactly what the upstream triple loop does, without the loop over thresholds and GTs.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class PairMatch:
    """Matching of D detections (score order) against G GT tracks (annotation order)."""

    dt_matched: np.ndarray  # (T, D) bool: counts as a true positive candidate (upstream ``dtm != 0``)
    dt_ignored: np.ndarray  # (T, D) bool: neither TP nor FP
    dt_gt: np.ndarray  # (T, D) int: index of the matched GT (annotation order) or -1
    gt_ignored: np.ndarray  # (G,) bool


def match_pair(
    ious: np.ndarray,
    gt_ignored: np.ndarray,
    gt_crowd: np.ndarray,
    gt_ids: np.ndarray,
    dt_out_of_range: np.ndarray,
    thresholds: np.ndarray,
) -> PairMatch:
    D, G = ious.shape
    T = len(thresholds)
    dt_gt = np.full((T, D), -1, dtype=np.int64)
    if D and G:
        # Upstream visits GTs with ignored ones last (stable sort); ties go to the later one.
        order = np.argsort(gt_ignored.astype(np.int8), kind="mergesort")
        iou_o = ious[:, order]
        ig_o = gt_ignored[order]
        crowd_o = gt_crowd[order]
        thr = np.minimum(thresholds, 1 - 1e-10)[:, None]
        taken = np.zeros((T, G), dtype=bool)
        rows = np.arange(T)
        for d in range(D):
            ok = (~taken | crowd_o[None, :]) & (iou_o[d][None, :] >= thr)
            if not ok.any():
                continue
            regular = ok & ~ig_o[None, :]
            cand = np.where(regular.any(axis=1, keepdims=True), regular, ok)
            vals = np.where(cand, iou_o[d][None, :], -np.inf)
            last_best = G - 1 - np.argmax(vals[:, ::-1], axis=1)
            found = cand.any(axis=1)
            m = np.where(found, last_best, -1)
            taken[rows[found], m[found]] = True
            dt_gt[:, d] = np.where(found, order[np.maximum(m, 0)], -1)
    has_gt = dt_gt >= 0
    matched = has_gt.copy()
    dt_ignored = np.zeros((T, D), dtype=bool)
    if G:
        safe = np.maximum(dt_gt, 0)
        # Upstream stores the GT id as the match and tests it for != 0: a GT with id 0 never counts.
        matched &= gt_ids[safe] != 0
        dt_ignored = has_gt & gt_ignored[safe]
    dt_ignored |= ~matched & dt_out_of_range[None, :]
    return PairMatch(matched, dt_ignored, dt_gt, gt_ignored)


def out_of_range(avg_area: np.ndarray, rng: tuple[float, float]) -> np.ndarray:
    # Both bounds are inclusive, as upstream (``area < lo or area > hi`` is outside).
    return (avg_area < rng[0]) | (avg_area > rng[1])
