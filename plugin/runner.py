"""The job a sample's media becomes (the job layer runs it: Celery workers when ``CLIPVIS_BROKER_URL``
is set, else a worker thread of the process that submits it)."""
from __future__ import annotations

from .params import SegmentRequest


def job_spec(path: str, req: SegmentRequest):
    return req.run_spec().job_spec(path)
