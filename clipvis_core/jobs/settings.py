"""Job-layer settings, read from the environment each time they are needed (no import-time state).

``CLIPVIS_BROKER_URL`` unset -> jobs run in-process (the embedded default); set (e.g.
``redis://host:6379/0``) -> jobs go to Celery workers. Everything else has a laptop-friendly default.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


def env_float(name: str, default: float) -> float:
    """A number from the environment; a malformed value is an InputError naming the variable."""
    raw = os.environ.get(name)
    if raw in (None, ""):
        return default
    try:
        return float(raw)
    except ValueError:
        from ..errors import InputError

        hint = " (or off)" if name == "CLIPVIS_RESUME_INTERVAL" else ""
        raise InputError(f"{name}={raw!r} is not a number: set it to seconds/megabytes as a plain number{hint}") from None


@dataclass(frozen=True)
class JobSettings:
    broker_url: str | None
    result_backend: str | None  # defaults to the broker
    results_dir: Path  # the results store: <results_dir>/<key>.json, shared by all workers
    cache_dir: Path  # weights / text-embedding cache, downloaded media
    redis_prefix: str  # namespace of our Redis keys (dedupe records, locks, cancel flags)
    default_queue: str  # queue every worker consumes besides its device-kind queue
    visibility_timeout: float  # s before Redis redelivers an unacked job (must exceed the longest job)
    lock_ttl: float  # s a dead worker's execution lock outlives it
    time_limit: float  # s per job, enforced between frames (and as Celery's hard limit + grace)
    max_download_mb: float
    progress_interval: float  # s between PROGRESS state writes
    retry_backoff: float  # s before the first retry of a transient failure (doubles each retry)
    # Resume (clipvis_core/resume.py): a lost job continues from its last checkpointed window.
    resume_dir: Path  # <dir>/<key>/: a running job's frame store + checkpoint; shared, so any worker resumes
    resume_interval: float | None  # s between checkpoints (0: every window); None: jobs are not resumable
    resume_max_age: float  # s after which an untouched checkpoint (of a job nobody re-ran) is swept

    @classmethod
    def from_env(cls) -> "JobSettings":
        cache_dir = Path(os.environ.get("CLIPVIS_CACHE_DIR") or Path.home() / ".cache" / "clipvis").expanduser()
        broker = os.environ.get("CLIPVIS_BROKER_URL") or None
        results_dir = Path(os.environ.get("CLIPVIS_RESULTS_DIR") or cache_dir / "results").expanduser()
        interval = os.environ.get("CLIPVIS_RESUME_INTERVAL", "").strip().lower()
        return cls(
            broker_url=broker,
            result_backend=os.environ.get("CLIPVIS_RESULT_BACKEND") or broker,
            results_dir=results_dir,
            cache_dir=cache_dir,
            redis_prefix=os.environ.get("CLIPVIS_REDIS_PREFIX") or "clipvis",
            default_queue=os.environ.get("CLIPVIS_QUEUE") or "clipvis",
            visibility_timeout=env_float("CLIPVIS_VISIBILITY_TIMEOUT", 4 * 3600.0),
            lock_ttl=env_float("CLIPVIS_LOCK_TTL", 60.0),
            time_limit=env_float("CLIPVIS_JOB_TIME_LIMIT", 3 * 3600.0),
            max_download_mb=env_float("CLIPVIS_MAX_DOWNLOAD_MB", 4096.0),
            progress_interval=env_float("CLIPVIS_PROGRESS_INTERVAL", 0.25),
            retry_backoff=env_float("CLIPVIS_RETRY_BACKOFF", 5.0),
            resume_dir=Path(os.environ.get("CLIPVIS_RESUME_DIR") or results_dir / ".resume").expanduser(),
            resume_interval=None if interval == "off" else env_float("CLIPVIS_RESUME_INTERVAL", 10.0),
            resume_max_age=env_float("CLIPVIS_RESUME_MAX_AGE", 2 * 24 * 3600.0),
        )

    @property
    def distributed(self) -> bool:
        return self.broker_url is not None

    @property
    def redis_url(self) -> str | None:
        """The Redis used for locks and dedupe records: the broker, else the result backend."""
        for url in (self.broker_url, self.result_backend):
            if url and url.startswith(("redis://", "rediss://", "unix://")):
                return url
        return None

    def queue_for(self, kind: str | None) -> str:
        """``None`` -> the shared queue; ``"gpu"``/``"cpu"`` -> that device kind's queue."""
        if not kind:
            return self.default_queue
        if kind.startswith(self.default_queue + "."):
            return kind
        return f"{self.default_queue}.{kind}"
