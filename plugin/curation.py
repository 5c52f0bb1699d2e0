"""Novel-category curation: which samples show classes outside a base vocabulary, and how surely.

A sample's novelty score is the highest confidence among its predicted tracks whose class is not
in the base vocabulary (0 when there are none); names compare case- and underscore-insensitively.
"""
from __future__ import annotations

from dataclasses import dataclass

from .sources import normalize


@dataclass(frozen=True)
class Novelty:
    score: float
    classes: list[str]  # novel class labels as predicted, sorted


def pairs(labels, confs) -> list[tuple[str, float | None]]:
    """Nested ``view.values`` outputs (per frame for videos) -> flat (label, confidence) pairs.

    Walked together so a detection without confidence keeps its place.
    """
    if labels is None:
        return []
    if not isinstance(labels, (list, tuple)):
        return [(labels, confs)]
    confs = confs if isinstance(confs, (list, tuple)) else [None] * len(labels)
    return [p for lab, conf in zip(labels, confs) for p in pairs(lab, conf)]


def novelty(detections: list[tuple[str, float | None]], base: frozenset[str]) -> Novelty:
    best: dict[str, float] = {}
    for label, conf in detections:
        if label is None or normalize(label) in base:
            continue
        best[label] = max(best.get(label, 0.0), float(conf) if conf is not None else 0.0)
    return Novelty(score=max(best.values(), default=0.0), classes=sorted(best))


def sample_novelties(view, label_path: str, base: frozenset[str]) -> tuple[list[str], list[Novelty]]:
    """(sample ids, novelty per sample) read with two aggregations, without loading masks."""
    ids = view.values("id")
    labels = view.values(f"{label_path}.detections.label")
    confs = view.values(f"{label_path}.detections.confidence")
    return ids, [novelty(pairs(ls, cs), base) for ls, cs in zip(labels, confs)]
