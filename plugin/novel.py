"""Score, tag and collect samples with novel categories (the work behind the curation operator)."""
from __future__ import annotations

from dataclasses import dataclass

from . import sources
from .curation import sample_novelties
from .params import NoveltyRequest


@dataclass
class NoveltySummary:
    samples: int
    tagged: int
    novel_classes: list[str]
    view_name: str


def find_novel(dataset, view, req: NoveltyRequest) -> NoveltySummary:
    path = sources.check_label_field(dataset, req.pred_field, "pred_field")
    ids, found = sample_novelties(view, path, req.base_names)
    # Every value is computed before the first write; set_values writes each field in one batch.
    hits = [i for i, n in zip(ids, found) if n.classes and n.score >= req.min_score]
    view.set_values(req.novelty_field, [n.score for n in found])
    view.set_values(req.classes_field, [n.classes for n in found])
    view.untag_samples(req.tag)  # a re-run with another base must not keep stale tags
    if hits:
        dataset.select(hits).tag_samples(req.tag)
    saved = view.match_tags(req.tag).sort_by(req.novelty_field, reverse=True)
    dataset.save_view(req.view_name, saved, description=f"novel vs {req.base_description}, by {req.novelty_field}",
                      overwrite=True)
    classes = sorted({c for n in found for c in n.classes})
    return NoveltySummary(samples=len(ids), tagged=len(hits), novel_classes=classes, view_name=req.view_name)
