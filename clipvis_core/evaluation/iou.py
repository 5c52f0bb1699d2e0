"""Video IoU: sum of per-frame intersections over sum of per-frame unions.

A frame where one side is absent (``None``) adds the other side's area to the union, which is
the same as treating the absent mask as empty, so the video union is
``area(dt) + area(gt) - intersection`` with all three summed over frames.

Per frame, pycocotools computes the IoU of every detection/GT pair straight on the RLEs (in C,
with a box pre-filter). The integer intersection is recovered exactly from it:
``iou = i / (a + b - i)``  =>  ``i = iou * (a + b) / (1 + iou)``, and rounding to the nearest
integer is exact as long as the float error stays far below 0.5 (areas < 2^40 pixels).
Summing integers keeps the final ``i / u`` bit-identical to the upstream per-pair loop.
"""
from __future__ import annotations

import numpy as np


def video_iou_matrix(dt_masks: list[list[dict | None]], gt_masks: list[list[dict | None]], num_frames: int) -> np.ndarray:
    """IoU of D detection tracks x G GT tracks (lists of per-frame RLEs) -> (D, G) float64."""
    from pycocotools import mask as mask_utils

    D, G = len(dt_masks), len(gt_masks)
    if D == 0 or G == 0:
        return np.zeros((D, G))
    inter = np.zeros((D, G), dtype=np.int64)
    dt_area = np.zeros(D, dtype=np.int64)
    gt_area = np.zeros(G, dtype=np.int64)
    for f in range(num_frames):
        d_idx = [i for i in range(D) if dt_masks[i][f] is not None]
        g_idx = [j for j in range(G) if gt_masks[j][f] is not None]
        d_rle = [dt_masks[i][f] for i in d_idx]
        g_rle = [gt_masks[j][f] for j in g_idx]
        if d_rle:
            a_d = mask_utils.area(d_rle).astype(np.int64)
            dt_area[d_idx] += a_d
        if g_rle:
            a_g = mask_utils.area(g_rle).astype(np.int64)
            gt_area[g_idx] += a_g
        if not d_rle or not g_rle:
            continue
        iou = np.asarray(mask_utils.iou(d_rle, g_rle, [0] * len(g_rle)), dtype=np.float64).reshape(len(d_rle), len(g_rle))
        hit = iou > 0
        if not hit.any():
            continue
        total = a_d[:, None] + a_g[None, :]
        i_f = np.where(hit, np.rint(iou * total / (1.0 + iou)), 0).astype(np.int64)
        inter[np.ix_(d_idx, g_idx)] += i_f
    union = dt_area[:, None] + gt_area[None, :] - inter
    out = np.zeros((D, G))
    np.divide(inter.astype(np.float64), union.astype(np.float64), out=out, where=union > 0)
    return out
