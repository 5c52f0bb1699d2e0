"""The job layer every host submits through (FiftyOne operator, Label Studio backend, CLI).

    spec = JobSpec(media="clip.mp4", vocabulary=["car, automobile", "person"], checkpoint="card.json")
    h = submit(spec)          # Celery when CLIPVIS_BROKER_URL is set, else a background thread here
    h.status(); tracks = h.wait()

Importing this package starts nothing: no broker connection, no model, no thread.
"""
from .handle import JobHandle, JobStatus, submit
from .runner import JobCancelled, JobError, JobTimeout, lookup, run_job
from .settings import JobSettings
from .spec import JobSpec

__all__ = ["JobSpec", "JobHandle", "JobStatus", "JobSettings", "submit", "lookup", "run_job",
           "JobError", "JobCancelled", "JobTimeout"]
