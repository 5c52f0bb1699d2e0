"""The Celery task: parse the spec, call ``run_job``, report progress. Nothing else lives here.

Retries: transient errors (network, Redis, passing I/O) retry with exponential backoff; bad input,
weights problems, permanent OS errors (missing paths, full disk), cancellation and time-outs fail
at once and are never retried.
"""
from __future__ import annotations

import errno
import logging
import os
import time

from .settings import JobSettings

log = logging.getLogger("clipvis.jobs")


# OSErrors a retry cannot fix: missing or forbidden paths, a full or read-only disk.
PERMANENT_ERRNOS = frozenset({errno.ENOENT, errno.EACCES, errno.EPERM, errno.EISDIR, errno.ENOTDIR, errno.EROFS,
                              errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.ENAMETOOLONG, errno.ELOOP})


def is_permanent(e: BaseException) -> bool:
    """An OSError that fails the same way on every retry (requests' errors carry no errno)."""
    return isinstance(e, OSError) and e.errno in PERMANENT_ERRNOS


def _transient_errors() -> tuple[type[BaseException], ...]:
    import redis

    from ..errors import ClipvisError

    # OSError covers requests' errors and file I/O; ClipvisError subclasses are never transient
    # (InputError is a ValueError, so it is not matched here in the first place).
    return (OSError, ConnectionError, TimeoutError, redis.exceptions.ConnectionError,
            redis.exceptions.TimeoutError), ClipvisError


def register(app) -> None:
    from celery.exceptions import Ignore

    from celery.signals import worker_process_init

    transient, never = _transient_errors()
    from . import train_task

    train_task.register(app)  # training jobs: their own task on the "<queue>.train" queue
    from . import learn_task

    learn_task.register(app)  # learning rounds (fine-tune / adapt a model line), same queue
    # Sent in each pool process (and by the solo pool): the model is built there, never in a parent.
    worker_process_init.connect(lambda **_: warm_up(), weak=False)

    # throws=: expected failures are logged as one line, without a traceback.
    @app.task(name="clipvis.segment", bind=True, max_retries=5, acks_late=True, throws=(never,))
    def segment(self, spec_dict: dict) -> dict:
        from .runner import JobCancelled, run_job
        from .spec import JobSpec
        from .store import redis_client

        job_id = self.request.id
        cfg = JobSettings.from_env()
        rc = redis_client(cfg.redis_url) if cfg.redis_url else None
        cancel_key = f"{cfg.redis_prefix}:cancel:{job_id}"
        last = [0.0]

        def cancelled() -> bool:
            return bool(rc is not None and rc.exists(cancel_key))

        def progress(p) -> None:
            now = time.monotonic()
            if now - last[0] >= cfg.progress_interval or p.frames_done == p.frames_total:
                last[0] = now
                self.update_state(state="PROGRESS", meta={"frames_done": p.frames_done, "frames_total": p.frames_total,
                                                          "fps": p.fps, "key": spec.key()})

        started_at, t0 = time.time(), time.monotonic()
        spec = JobSpec.from_dict(spec_dict)
        try:
            run_job(spec, progress, should_stop=cancelled, settings=cfg)
        except JobCancelled:
            log.info("cancelled job %s key=%s", job_id, spec.key())
            self.backend.mark_as_revoked(job_id, "cancelled", request=self.request)
            raise Ignore()
        except never:
            raise
        except transient as e:
            if is_permanent(e):
                log.error("job %s failed (%s: %s); not retried", job_id, type(e).__name__, e)
                raise
            log.warning("transient failure of job %s (%s: %s); retrying", job_id, type(e).__name__, e)
            backoff = min(600.0, cfg.retry_backoff * 2 ** self.request.retries)
            raise self.retry(exc=e, countdown=backoff)
        # The result itself is in the store; the backend keeps only where and how long.
        return {"key": spec.key(), "started_at": started_at, "seconds": time.monotonic() - t0}


def warm_up() -> None:
    """Build the model of ``CLIPVIS_WARMUP_CHECKPOINT`` once in this worker process (never in a parent)."""
    checkpoint = os.environ.get("CLIPVIS_WARMUP_CHECKPOINT")
    if not checkpoint:
        return
    from ..segmenter import get_segmenter

    started = time.monotonic()
    get_segmenter(checkpoint, device=os.environ.get("CLIPVIS_DEVICE", "auto"))  # builds and caches the model
    log.info("warmed up %s in %.1fs (pid %d)", checkpoint, time.monotonic() - started, os.getpid())
