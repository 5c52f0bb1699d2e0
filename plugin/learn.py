"""Fine-tune a model line on a dataset's corrected masks (the work behind the learn operator).

The corrections are read by ``clipvis_core``'s ``fiftyone:DATASET:FIELD[@VIEW]`` training source,
so the target must be the whole dataset or a saved view: an unsaved view has no name another
process (a delegated launcher, a training job) could load. Every attempt leaves a FiftyOne run
record on the dataset with the held-out metrics of the parent and the candidate.
"""
from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from typing import Callable

from clipvis_core.errors import InputError

from .params import LearnRequest

# progress(fraction 0-1, label)
Progress = Callable[[float, str], None]
PRIMARY = "val/agnostic_AP"


@dataclass
class LearnSummary:
    status: str  # promoted | rejected | skipped
    reason: str
    line: str
    version: str | None  # the candidate version (None when skipped)
    serving: str  # what `line:NAME` serves after this run, e.g. "shapes@v1"
    new_masks: int
    before: dict  # held-out metrics of the parent ({} when skipped)
    after: dict  # held-out metrics of the candidate
    run_key: str
    source: str


def source_spec(dataset, view, field: str) -> str:
    """``fiftyone:DATASET:FIELD`` for the whole dataset, ``...@VIEW`` for a saved view."""
    base = f"fiftyone:{dataset.name}:{field}"
    if view is dataset or not getattr(view, "_stages", None):
        return base
    name = getattr(view, "name", None) if getattr(view, "is_saved", False) else None
    if name:
        return f"{base}@{name}"
    raise InputError("fine-tuning reads the whole dataset or a saved view: save this view (Save view in the App) "
                     "and run on it, or target the whole dataset")


def check_masks(view, path: str, field: str) -> None:
    """Boxes-only corrections cannot train the mask generator: say what can use them instead."""
    if view.count(f"{path}.detections.mask") + view.count(f"{path}.detections.mask_path"):
        return
    raise InputError(f"gt_field {field!r} has no instance masks in the target (boxes only?): fine-tuning needs masks; "
                     f"with boxes only, classifier adaptation is the only option (clipvis adapt --data fiftyone:DATASET:{field})")


def run_key_for(line: str, version: str | None) -> str:
    return re.sub(r"\W", "_", f"clipvis_learn_{line}_{version or 'skipped'}")


def check_source(dataset, view, field: str) -> str:
    """The training source spec of the target; refuses unsaved views and boxes-only fields."""
    from .sources import check_label_field

    spec = source_spec(dataset, view, field)
    check_masks(view, check_label_field(dataset, field, "gt_field"), field)
    return spec


def learn(dataset, view, req: LearnRequest, progress: Progress | None = None) -> LearnSummary:
    from clipvis_core.finetune import FinetuneRequest, finetune
    from clipvis_core.versions import ModelLine, list_lines

    spec = check_source(dataset, view, req.gt_field)
    created = req.line not in list_lines()
    line = ModelLine.create(req.line, _pinned(req.base_model), exist_ok=True) if created else ModelLine.open(req.line)

    def on_step(p) -> None:
        if progress is not None:  # training is most of the time; scoring the two versions follows
            progress(0.9 * p.step / max(p.total, 1), f"step {p.step}/{p.total}, loss {p.loss:.3f}")

    try:
        out = finetune(FinetuneRequest(line=req.line, data=[spec], held_out=req.held_out, min_new=req.min_new,
                                       steps=req.steps, batch_size=req.batch_size, lr=req.lr, config=req.config,
                                       device=_device(req.device), progress=on_step))
    except BaseException:
        _drop_if_unused(line, created)
        raise
    if out.status == "skipped":
        _drop_if_unused(line, created)  # nothing registered: no line, no version
    lin = out.lineage
    metrics = lin.metrics if lin is not None else {}
    summary = LearnSummary(
        status=out.status, reason=out.reason, line=req.line, version=lin.version if lin else None,
        serving=line.serving()[2] if line.root.exists() else "", new_masks=out.new_masks,
        before=metrics.get("parent", {}), after=metrics.get("candidate", {}),
        run_key=run_key_for(req.line, lin.version if lin else None), source=spec)
    record_run(view, req, summary)
    if progress is not None:
        progress(1.0, f"{out.status}: {out.reason}")
    return summary


def _pinned(base: str) -> str:
    """A line started from another line starts from that line's current version, not a moving target."""
    if not base.startswith("line:"):
        return base
    from clipvis_core.versions import resolve_line

    return "line:" + resolve_line(base[len("line:"):])[0]


def _device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _drop_if_unused(line, created: bool) -> None:
    """A line this run created and that got no version beyond its base is removed again."""
    if created and line.root.exists() and [v.version for v in line.versions()] == ["v0"]:
        shutil.rmtree(line.root, ignore_errors=True)


def record_run(collection, req: LearnRequest, s: LearnSummary) -> None:
    """A FiftyOne custom run: the config says what was asked, the results what came of it."""
    config = collection.init_run(
        method="clipvis_learn_from_corrections", line=s.line, base_model=req.base_model, gt_field=req.gt_field,
        source=s.source, held_out=req.held_out, min_new=req.min_new, steps=req.steps, batch_size=req.batch_size,
        lr=req.lr, device=req.device)
    collection.register_run(s.run_key, config, overwrite=True)
    results = collection.init_run_results(
        s.run_key, status=s.status, reason=s.reason, version=s.version, serving=s.serving, new_masks=s.new_masks,
        primary=PRIMARY, before=_plain(s.before), after=_plain(s.after))
    collection.save_run_results(s.run_key, results, overwrite=True)


def _plain(metrics: dict) -> dict:
    # Run configs and results are stored as BSON: keys without dots, plain floats.
    return {k.replace(".", "_"): float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
