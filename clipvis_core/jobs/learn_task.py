"""The Celery task of learning rounds (fine-tune / adapt a model line): parse, run, report progress.

Acknowledged on receipt and never retried, like training: a lost round leaves the promoted version
as it was, and the next annotation event (or "Start training") submits a fresh one.
"""
from __future__ import annotations

import logging

log = logging.getLogger("clipvis.jobs")


def register(app) -> None:
    from celery.exceptions import Ignore

    from .learning import LEARN_TASK
    from .train_task import TRAIN_TIME_LIMIT, step_reporting

    @app.task(name=LEARN_TASK, bind=True, acks_late=False, max_retries=0, time_limit=TRAIN_TIME_LIMIT)
    def learn(self, spec_dict: dict) -> dict:
        from .learning import LearnJobSpec, run_learning_job
        from .runner import JobCancelled

        job_id = self.request.id
        progress, cancelled = step_reporting(self)
        spec = LearnJobSpec.from_dict(spec_dict)
        try:
            outcome = run_learning_job(spec, progress, cancelled)
        except JobCancelled:
            log.info("cancelled %s job %s (line %s)", spec.kind, job_id, spec.line)
            self.backend.mark_as_revoked(job_id, "cancelled", request=self.request)
            raise Ignore()
        log.info("%s round of %s: %s (%s)", spec.kind, spec.line, outcome["status"], outcome["reason"])
        return {"outcome": outcome}
