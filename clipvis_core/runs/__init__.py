"""Background runs over a FiftyOne dataset: queued as a record, executed by a local worker process,
labels written per sample as each finishes, progress and cancel through the record.

    rec = submit_run(dataset, view, RunSpec(vocabulary=("person",), checkpoint="random:tiny", label_field="pred"))
    get_run(rec.id).describe(); request_cancel(rec.id)

Importing this package starts nothing: the worker starts on the first ``submit_run``.
"""
from __future__ import annotations

from .labeling import RunProgress, RunSpec, RunSummary, iter_label_samples, label_samples
from .records import RunRecord, get_run, list_runs, request_cancel

__all__ = ["RunSpec", "RunProgress", "RunSummary", "RunRecord", "iter_label_samples", "label_samples", "submit_run",
           "get_run", "list_runs", "request_cancel"]


def submit_run(dataset, view, spec: RunSpec) -> RunRecord:
    """Queue a run over the view's samples and make sure a worker will take it; returns at once."""
    from ..jobs import JobSettings
    from . import records
    from .worker import ensure_worker

    backend = "celery" if JobSettings.from_env().distributed else "local"
    rec = records.create_run(dataset, spec.to_dict(), view.values("id"), backend)
    ensure_worker()
    return rec
