"""Evaluate a predictions field against a ground-truth field with the project's evaluator.

Both fields are exported to YTVIS dicts (video ids = sample order in the view) and scored by
``clipvis_core.evaluation.evaluate`` -- the same code as ``clipvis eval`` -- so the numbers agree.
"""
from __future__ import annotations

from dataclasses import dataclass

from clipvis_core.export.fiftyone import to_ytvis

from . import sources
from .labels import video_labels
from .params import EvalRequest


@dataclass
class YtvisExport:
    sample_ids: list[str]
    gt: dict
    results: list[dict]


def export_ytvis(dataset, view, gt_field: str, pred_field: str, base: frozenset[str] | None = None) -> YtvisExport:
    """Ground truth + results of a view in YTVIS format (masks pasted back to full frames)."""
    view.compute_metadata()  # frame sizes; a no-op for samples that have metadata
    ids, gts, preds = [], [], []
    paths = [sources.check_label_field(dataset, f, f) for f in (gt_field, pred_field)]
    for sample in view.select_fields(paths).iter_samples():
        ids.append(sample.id)
        gts.append(video_labels(sample, gt_field))
        preds.append(video_labels(sample, pred_field))
    # Categories: GT classes first, then classes only predicted (they score as false positives).
    classes = sorted({label for v in gts for label, _ in v.tracks.values()})
    gt, classes = to_ytvis(gts, classes, gt=True)
    results, extra = to_ytvis(preds, classes, gt=False)
    gt["categories"] = [{"id": i + 1, "name": c} for i, c in enumerate(extra)]
    if base is not None:  # partitions 0 (base) / 2 (novel): the evaluator then reports both splits
        for c in gt["categories"]:
            c["partition"] = 0 if sources.normalize(c["name"]) in base else 2
    return YtvisExport(sample_ids=ids, gt=gt, results=results)


def evaluate_view(dataset, view, req: EvalRequest) -> dict:
    """Score the view, store the metrics on the dataset and per-sample scores on the samples."""
    from clipvis_core.evaluation import evaluate

    data = export_ytvis(dataset, view, req.gt_field, req.pred_field, req.base_names)
    report = evaluate(data.gt, data.results, req.protocol)
    per_video = {v.video_id: v for v in report.per_video}
    iou, fp, matched = [], [], []
    for vid in range(1, len(data.sample_ids) + 1):
        v = per_video.get(vid)
        iou.append(v.mean_best_iou if v is not None else None)
        fp.append(v.false_positives_50 if v is not None else 0)
        matched.append(v.matched_50 if v is not None else 0)
    # Computed in full above; written field by field in batches.
    view.set_values(f"{req.eval_key}_iou", iou)
    view.set_values(f"{req.eval_key}_fp50", fp)
    view.set_values(f"{req.eval_key}_matched50", matched)
    metrics = report.to_dict()
    stored = dict(dataset.info.get("clipvis_evaluations", {}))
    stored[req.eval_key] = {"pred_field": req.pred_field, "gt_field": req.gt_field, "protocol": req.protocol,
                            "samples": len(data.sample_ids), "stats": metrics["stats"],
                            "per_category": metrics["per_category"], "base_novel": metrics["base_novel"],
                            "base": req.base_description or None}
    dataset.info["clipvis_evaluations"] = stored
    dataset.save()
    return stored[req.eval_key]
