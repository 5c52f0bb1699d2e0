"""Evaluation protocols: the parameters and the two upstream evaluators' differences, as data.

Both upstream evaluators (YouTube-VIS ``YTVOSeval`` and LV-VIS ``LVVISeval``) are COCO-style
video evaluators with the same thresholds and area ranges. They differ in two places:

* crowd ground truth: ``YTVOSeval`` marks ``iscrowd`` tracks as ignored; ``LVVISeval`` only
  ignores by area range, so a crowd track counts as a regular ground truth (that can still be
  matched by several detections, as crowd regions are in COCO matching);
* GT area: ``LVVISeval`` truncates each per-frame GT area with ``int()`` before averaging.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError


def _thresholds(start: float, stop: float, step: float) -> tuple[float, ...]:
    # Same construction as upstream (linspace, not arange) so thresholds are bit-identical.
    n = int(np.round((stop - start) / step)) + 1
    return tuple(float(v) for v in np.linspace(start, stop, n, endpoint=True))


@dataclass(frozen=True)
class Protocol:
    """How detections are matched and summarised. Use :func:`get_protocol` for the built-ins."""

    name: str
    # True: crowd GT tracks are ignored (YTVIS). False: only the area range decides (LV-VIS).
    crowd_is_ignored: bool
    # True: per-frame GT areas are truncated to int before averaging (LV-VIS).
    truncate_gt_areas: bool
    iou_thresholds: tuple[float, ...] = field(default_factory=lambda: _thresholds(0.5, 0.95, 0.05))
    recall_thresholds: tuple[float, ...] = field(default_factory=lambda: _thresholds(0.0, 1.0, 0.01))
    # Summaries read the first, second and last entry (AR1 / AR10 / AR100 and AP at the last).
    max_dets: tuple[int, ...] = (1, 10, 100)
    # Video-level ranges on the mean of the non-zero per-frame areas (not COCO's 32^2 / 96^2).
    area_ranges: tuple[tuple[float, float], ...] = (
        (0.0, 1e5**2),
        (0.0, 128.0**2),
        (128.0**2, 256.0**2),
        (256.0**2, 1e5**2),
    )
    area_labels: tuple[str, ...] = ("all", "small", "medium", "large")

    def __post_init__(self):
        if len(self.max_dets) != 3 or list(self.max_dets) != sorted(self.max_dets):
            raise InputError(f"protocol {self.name!r}: max_dets must be 3 increasing numbers, got {self.max_dets}")
        if self.area_labels[:4] != ("all", "small", "medium", "large") or len(self.area_ranges) != len(self.area_labels):
            raise InputError(f"protocol {self.name!r}: area ranges must be labelled all, small, medium, large")
        for t in (0.5, 0.75):
            if t not in self.iou_thresholds:
                raise InputError(f"protocol {self.name!r}: iou_thresholds must contain {t}")


PROTOCOLS: dict[str, Protocol] = {
    "ytvis": Protocol(name="ytvis", crowd_is_ignored=True, truncate_gt_areas=False),
    "lvvis": Protocol(name="lvvis", crowd_is_ignored=False, truncate_gt_areas=True),
}


def get_protocol(protocol: str | Protocol) -> Protocol:
    if isinstance(protocol, Protocol):
        return protocol
    try:
        return PROTOCOLS[str(protocol).lower()]
    except KeyError:
        raise InputError(f"unknown evaluation protocol {protocol!r}: use one of {', '.join(PROTOCOLS)}") from None
