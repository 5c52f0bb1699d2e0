"""The result of an evaluation: summary numbers, per-category AP, base/novel split, per-video scores."""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .accumulate import STAT_NAMES

REPORT_VERSION = 1


@dataclass
class CategoryScore:
    id: int
    name: str
    partition: int | None
    num_gt: int  # GT tracks of this category (crowd included)
    ap: float | None  # AP@[.5:.95], area all, max dets 100; None: no GT and no detections to score


@dataclass
class VideoScore:
    """Per-video figures for "sort by worst videos" (area 'all', at most 100 detections per category).

    ``mean_best_iou``: mean over the video's non-ignored GT tracks of the best video IoU any
    detection of the same category reaches (0 for a track with none); None if the video has no
    such GT. ``matched_50`` / ``false_positives_50``: GT tracks matched and unmatched
    detections at IoU 0.5 under the protocol's greedy matching.
    """

    video_id: int
    num_gt: int
    num_predictions: int
    matched_50: int
    false_positives_50: int
    mean_best_iou: float | None


@dataclass
class EvalDetails:
    """Intermediate arrays, for debugging and parity checks (not serialised)."""

    ious: dict[tuple[int, int], np.ndarray]  # (video_id, category_id) -> (D by score, G by annotation order)
    precision: np.ndarray  # (T, R, K, A, M)
    recall: np.ndarray  # (T, K, A, M)


@dataclass
class EvalReport:
    protocol: str
    # STAT_NAMES -> value as a fraction; -1.0 = no valid entries (upstream convention).
    stats: dict[str, float]
    per_category: list[CategoryScore]
    # metric -> {"all", "base", "novel"}; None when the GT categories carry no 'partition'.
    base_novel: dict[str, dict[str, float]] | None
    per_video: list[VideoScore]
    num_videos: int
    num_gt_tracks: int
    num_predictions: int
    details: EvalDetails | None = field(default=None, repr=False, compare=False)

    def worst_videos(self, n: int | None = None) -> list[VideoScore]:
        """Videos with GT, lowest mean best IoU first (more false positives first on ties)."""
        scored = [v for v in self.per_video if v.mean_best_iou is not None]
        scored.sort(key=lambda v: (v.mean_best_iou, -v.false_positives_50, v.video_id))
        return scored[:n] if n is not None else scored

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("details")
        d["format_version"] = REPORT_VERSION
        d["stats_x100"] = {k: (None if v < 0 else 100.0 * v) for k, v in self.stats.items()}
        return _finite(d)

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    def format_table(self, max_categories: int = 30, worst: int = 5) -> str:
        lines = [f"protocol: {self.protocol}   videos: {self.num_videos}   GT tracks: {self.num_gt_tracks}"
                 f"   predictions: {self.num_predictions}", ""]
        if self.base_novel:
            lines.append(f"{'metric':<8}{'all':>9}{'base':>9}{'novel':>9}")
            for name in STAT_NAMES:
                row = self.base_novel[name]
                lines.append(f"{name:<8}" + "".join(f"{_pct(row[c]):>9}" for c in ("all", "base", "novel")))
        else:
            lines.append(f"{'metric':<8}{'value':>9}")
            lines.extend(f"{name:<8}{_pct(self.stats[name]):>9}" for name in STAT_NAMES)
        lines += ["", "(values x100; n/a = no ground truth in that range)", ""]
        cats = [c for c in self.per_category if c.ap is not None]
        cats.sort(key=lambda c: c.ap)
        lines.append(f"per-category AP ({len(cats)} scored" + (f", lowest {max_categories} shown)" if len(cats) > max_categories else ")"))
        for c in cats[:max_categories]:
            part = "" if c.partition is None else ("  base" if c.partition in (0, 1) else "  novel")
            lines.append(f"  {c.name[:28]:<28}{_pct(c.ap):>8}  gt={c.num_gt}{part}")
        worst_rows = self.worst_videos(worst)
        if worst_rows:
            lines += ["", f"worst videos (mean best IoU, lowest {len(worst_rows)})"]
            for v in worst_rows:
                lines.append(f"  video {v.video_id:<8} IoU {v.mean_best_iou:6.3f}  gt={v.num_gt} matched@.5={v.matched_50}"
                             f" fp@.5={v.false_positives_50} preds={v.num_predictions}")
        return "\n".join(lines)


def _pct(v: float | None) -> str:
    return "n/a" if v is None or v < 0 or (isinstance(v, float) and math.isnan(v)) else f"{100.0 * v:.2f}"


def _finite(obj):
    # JSON has no NaN: undefined numbers become null.
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj
