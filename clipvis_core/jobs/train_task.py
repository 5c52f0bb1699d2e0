"""The Celery task of training jobs: parse the spec, call ``run_train_job``, report step / loss.

Acknowledged on receipt (not late): a run can outlast any visibility timeout, and a lost worker's
run must not restart from scratch elsewhere; resubmit with ``resume`` to continue from its last
checkpoint. Never retried: a failed training is a message to a person, not a transient fault.
"""
from __future__ import annotations

import logging
import time

from .settings import JobSettings

log = logging.getLogger("clipvis.jobs")

TRAIN_TIME_LIMIT = 30 * 24 * 3600  # s: the app's per-job limit is sized for segmentation


def register(app) -> None:
    from celery.exceptions import Ignore

    from .training import TRAIN_TASK

    @app.task(name=TRAIN_TASK, bind=True, acks_late=False, max_retries=0, time_limit=TRAIN_TIME_LIMIT)
    def train(self, spec_dict: dict) -> dict:
        from .runner import JobCancelled
        from .training import TrainJobSpec, run_train_job

        progress, cancelled = step_reporting(self)
        spec = TrainJobSpec.from_dict(spec_dict)
        t0 = time.monotonic()
        try:
            card = run_train_job(spec, progress, cancelled)
        except JobCancelled:
            log.info("cancelled training job %s (%s)", self.request.id, spec.output)
            self.backend.mark_as_revoked(self.request.id, "cancelled", request=self.request)
            raise Ignore()
        return {"card": str(card), "output": spec.output, "seconds": time.monotonic() - t0}


def step_reporting(task):
    """(progress callback, cancelled poll) of a step-based Celery job (training, learning rounds):
    throttled PROGRESS states with step / total / loss, and the job's Redis cancel flag."""
    from .store import redis_client

    cfg = JobSettings.from_env()
    rc = redis_client(cfg.redis_url) if cfg.redis_url else None
    cancel_key = f"{cfg.redis_prefix}:cancel:{task.request.id}"
    last = [0.0]

    def progress(p) -> None:
        now = time.monotonic()
        if now - last[0] >= cfg.progress_interval or p.step == p.total:
            last[0] = now
            task.update_state(state="PROGRESS", meta={"step": p.step, "steps_total": p.total, "loss": p.loss,
                                                      "fps": p.steps_per_s})

    return progress, lambda: bool(rc is not None and rc.exists(cancel_key))
