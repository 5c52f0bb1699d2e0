"""The work behind the segment operator: in the operator run (progress streamed to the App) or queued
for the clipvis background worker (progress in the clipvis runs panel)."""
from __future__ import annotations

from typing import Iterator

from .params import SegmentRequest


def iter_segment_view(dataset, view, req: SegmentRequest) -> Iterator:
    """Yields ``RunProgress``; returns the ``RunSummary``. Each sample is written when its job ends."""
    from clipvis_core.runs import iter_label_samples

    # Ids and paths up front: no database cursor stays open during minutes of inference.
    ids, paths = view.values(["id", "filepath"])
    return (yield from iter_label_samples(dataset, ids, paths, req.run_spec()))


def segment_view(dataset, view, req: SegmentRequest, progress=None):
    """The whole view at once (delegated runs): ``progress(RunProgress)`` per update; the ``RunSummary``."""
    from clipvis_core.runs import label_samples

    ids, paths = view.values(["id", "filepath"])
    return label_samples(dataset, ids, paths, req.run_spec(), progress)


def submit_background(dataset, view, req: SegmentRequest):
    """Queue the run for the background worker (started if none runs); returns its ``RunRecord`` at once."""
    from clipvis_core.runs import submit_run

    return submit_run(dataset, view, req.run_spec())
