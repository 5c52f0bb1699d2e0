"""The Celery app: ``celery -A clipvis_core.jobs.celery_app worker`` (or ``clipvis worker``).

Settings for long GPU jobs: one message at a time per process (prefetch 1), acknowledged only
after the job ends (late acks) and re-queued if the worker dies mid-job, so a SIGKILLed
worker's job is redelivered to another worker after ``visibility_timeout``.
"""
from __future__ import annotations

import functools
import threading

from .settings import JobSettings

TASK_NAME = "clipvis.segment"

# Backend threads submit jobs concurrently: celery's lazy top-level module is not safe to import
# from two threads at once ("cannot import name 'Celery'"), and lru_cache may build twice.
_build_lock = threading.Lock()


def make_app(settings: JobSettings):
    from celery import Celery

    from . import tasks

    vt = settings.visibility_timeout
    app = Celery("clipvis", broker=settings.broker_url or "memory://", backend=settings.result_backend)
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_track_started=True,
        task_default_queue=settings.default_queue,
        # The per-frame limit in run_job is the real one; this hard kill (prefork pool) catches a hang.
        task_time_limit=settings.time_limit + 600,
        result_expires=7 * 24 * 3600,
        broker_connection_retry_on_startup=True,
        broker_transport_options={
            "visibility_timeout": vt,
            # Scan for unacked messages of dead workers every vt/4 s (kombu default: every 100 s).
            "unacked_restore_interval": max(1, min(60, int(vt / 4))),
            "unacked_restore_throttle": 1,
        },
        result_backend_transport_options={"visibility_timeout": vt},
    )
    tasks.register(app)
    return app


@functools.lru_cache(maxsize=8)
def _cached_app(settings: JobSettings):
    return make_app(settings)


def get_app(settings: JobSettings | None = None):
    """The app for the current (or given) settings; one per distinct configuration."""
    with _build_lock:
        return _cached_app(settings or JobSettings.from_env())


def __getattr__(name: str):
    # `celery -A clipvis_core.jobs.celery_app` looks up `app`/`celery`; build it only then.
    if name in ("app", "celery"):
        return get_app()
    raise AttributeError(name)
