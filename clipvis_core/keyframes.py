"""Sparse keyframes: the few boxes from which linear interpolation redraws a whole track.

Label Studio stores a video box track as keyframes and interpolates x, y, width and height
linearly between consecutive ones (a keyframe with ``enabled: false`` ends a segment: the box is
off until the next keyframe). A keyframe is kept only where interpolating between the kept
neighbours would move some box edge by more than ``tolerance`` (a fraction of the frame size);
the first and last keyframe of every segment - each appearance and disappearance - are always
kept. Interpolation error between two original keyframes is linear in the frame number, so
bounding it at the original keyframes bounds it at every frame.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import InputError

DEFAULT_TOLERANCE = 0.005  # 0.5 % of the frame width (x edges) / height (y edges)


@dataclass(frozen=True)
class KeyframeOptions:
    tolerance: float = DEFAULT_TOLERANCE

    def __post_init__(self):
        if not (0 <= self.tolerance < 1):
            raise InputError(f"keyframe tolerance {self.tolerance!r} must be a fraction of the frame size in [0, 1), e.g. 0.005")


def parse_tolerance(value) -> float:
    """A user-supplied tolerance (str/number) -> validated float (one-line InputError otherwise)."""
    try:
        tol = float(value)
    except (TypeError, ValueError):
        raise InputError(f"keyframe tolerance {value!r} is not a number: use a fraction of the frame size, e.g. 0.005") from None
    return KeyframeOptions(tol).tolerance


def simplify(frames: np.ndarray, edges: np.ndarray, tol: np.ndarray) -> list[int]:
    """Indices to keep of one segment. frames [N] increasing; edges [N, 4] (left, top, right,
    bottom); tol [4] per edge. Recursive split at the worst frame (Douglas-Peucker in time)."""
    n = len(frames)
    if n <= 2:
        return list(range(n))
    frames = np.asarray(frames, dtype=np.float64)
    edges = np.asarray(edges, dtype=np.float64)
    keep = np.zeros(n, dtype=bool)
    keep[[0, n - 1]] = True
    stack = [(0, n - 1)]
    while stack:
        a, b = stack.pop()
        if b - a < 2:
            continue
        f = (frames[a + 1:b] - frames[a]) / (frames[b] - frames[a])
        interp = edges[a] + f[:, None] * (edges[b] - edges[a])
        err = (np.abs(interp - edges[a + 1:b]) / tol).max(axis=1)
        worst = int(err.argmax())
        if err[worst] > 1.0:
            m = a + 1 + worst
            keep[m] = True
            stack += [(a, m), (m, b)]
    return np.flatnonzero(keep).tolist()


def _segments(ends: list[bool]) -> list[tuple[int, int]]:
    """[start, stop) runs of keyframes; ``ends[i]`` = keyframe i closes its segment."""
    out, start = [], 0
    for i, end in enumerate(ends):
        if end:
            out.append((start, i + 1))
            start = i + 1
    if start < len(ends):
        out.append((start, len(ends)))
    return out


def sparse_sequence(sequence: list[dict], tolerance: float = DEFAULT_TOLERANCE) -> list[dict]:
    """Label Studio videorectangle keyframes (x/y/width/height in percent) -> the kept subset."""
    if tolerance <= 0 or len(sequence) <= 2:
        return list(sequence)
    frames = np.array([k["frame"] for k in sequence], dtype=np.float64)
    box = np.array([[k["x"], k["y"], k["width"], k["height"]] for k in sequence], dtype=np.float64)
    edges = np.concatenate([box[:, :2], box[:, :2] + box[:, 2:]], axis=1)
    tol = np.full(4, tolerance * 100.0)  # percent units on both axes
    kept: list[dict] = []
    for a, b in _segments([not k["enabled"] for k in sequence]):
        kept += [sequence[a + i] for i in simplify(frames[a:b], edges[a:b], tol)]
    return kept


def sparse_keyframes(boxes: list[list[float] | None], width: int, height: int,
                     options: KeyframeOptions | None = None) -> list[int]:
    """Per-frame [x, y, w, h] pixel boxes (None = absent) -> frame indices to keep as keyframes."""
    opts = options or KeyframeOptions()
    present = [i for i, b in enumerate(boxes) if b is not None]
    if not present:
        return []
    ends = [j + 1 == len(present) or present[j + 1] != i + 1 for j, i in enumerate(present)]
    box = np.array([boxes[i] for i in present], dtype=np.float64)
    edges = np.concatenate([box[:, :2], box[:, :2] + box[:, 2:]], axis=1)
    tol = np.array([width, height, width, height], dtype=np.float64) * max(opts.tolerance, 1e-12)
    frames = np.array(present, dtype=np.float64)
    kept: list[int] = []
    for a, b in _segments(ends):
        if opts.tolerance <= 0:
            kept += present[a:b]
        else:
            kept += [present[a + i] for i in simplify(frames[a:b], edges[a:b], tol)]
    return kept


def interpolate(frames: list[int], boxes: list[list[float]], at: int) -> list[float]:
    """The box Label Studio draws at frame ``at`` between two kept keyframes (linear in x/y/w/h)."""
    j = int(np.searchsorted(frames, at, side="right")) - 1
    if frames[j] == at or j + 1 >= len(frames):
        return list(boxes[j])
    f = (at - frames[j]) / (frames[j + 1] - frames[j])
    return [a + f * (b - a) for a, b in zip(boxes[j], boxes[j + 1])]
