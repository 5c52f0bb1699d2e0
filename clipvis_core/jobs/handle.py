"""Submitting jobs and following them: ``submit`` -> ``JobHandle`` -> ``status`` / ``wait`` / ``cancel``.

With ``CLIPVIS_BROKER_URL`` set, jobs go to Celery; without, they run in a background thread of
this process (one at a time) and their status is mirrored to ``<results>/.jobs/<id>.json`` so
another process can follow them. A job id is ``<key>-<random>``; a bare key is the id of a
result that was already in the store.
"""
from __future__ import annotations

import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

from ..errors import ClipvisError, InputError, WeightsError
from ..tracks import VideoTracks
from .runner import JobCancelled, JobError, JobTimeout, run_job
from .settings import JobSettings
from .spec import KEY_LENGTH, JobSpec
from .store import ResultStore, redis_client

TERMINAL = ("SUCCESS", "FAILURE", "REVOKED")
_ERRORS = {"InputError": InputError, "VocabularyError": InputError, "WeightsError": WeightsError,
           "JobCancelled": JobCancelled, "JobTimeout": JobTimeout}
DEDUPE_TTL = 7 * 24 * 3600


@dataclass
class JobStatus:
    state: str  # PENDING, STARTED, PROGRESS, RETRY, SUCCESS, FAILURE, REVOKED
    frames_done: int = 0
    frames_total: int | None = None
    fps: float = 0.0
    error: str | None = None  # one-line message of a failed job
    error_type: str | None = None
    # Training jobs: optimizer steps done / total, the last loss, the trained model card (fps = steps/s).
    step: int = 0
    steps_total: int | None = None
    loss: float | None = None
    result: str | None = None

    @property
    def done(self) -> bool:
        return self.state in TERMINAL

    def to_dict(self) -> dict:
        return asdict(self)


class JobHandle:
    def __init__(self, id: str, key: str, settings: JobSettings | None = None):
        self.id = id
        self.key = key
        self.settings = settings or JobSettings.from_env()
        self.store = ResultStore(self.settings.results_dir)

    def __repr__(self) -> str:
        return f"JobHandle(id={self.id!r})"

    @classmethod
    def from_id(cls, id: str, settings: JobSettings | None = None) -> "JobHandle":
        key = id.split("-", 1)[0]
        if len(key) != KEY_LENGTH or any(c not in "0123456789abcdef" for c in key):
            raise InputError(f"not a clipvis job id: {id!r} (ids look like <32 hex>-<8 hex>, as printed by submit)")
        return cls(id, key, settings)

    def status(self) -> JobStatus:
        if self.store.has(self.key):  # a stored result is final, whichever job computed it
            return JobStatus("SUCCESS")
        if self.settings.distributed:
            return _celery_status(self)
        return _local_status(self)

    def wait(self, timeout: float | None = None, poll: float = 0.2) -> VideoTracks:
        """Block until the job ends; its result, or the job's error raised (InputError, JobCancelled...)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            st = self.status()
            if st.done:
                break
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {self.id} still {st.state} after {timeout:g}s")
            time.sleep(poll)
        if st.state == "REVOKED":
            raise JobCancelled(f"job {self.id} was cancelled")
        if st.state == "FAILURE":
            cls = _ERRORS.get(st.error_type or "")
            if cls is not None:
                raise cls(st.error)
            raise JobError(f"job {self.id} failed: {st.error_type}: {st.error}")
        result = self.store.get(self.key)
        if result is None:
            raise JobError(f"job {self.id} succeeded but {self.store.path(self.key)} is missing: point "
                           "CLIPVIS_RESULTS_DIR at the results store the workers write")
        return result

    def cancel(self) -> None:
        """Stop the job: a queued job never starts, a running one stops at its next frame."""
        if self.settings.distributed:
            _celery_cancel(self)
        else:
            _local_cancel(self)


def submit(spec: JobSpec, queue: str | None = None, settings: JobSettings | None = None) -> JobHandle:
    """Queue ``spec`` (Celery if a broker is configured, else a background thread here).

    ``queue``: None -> the shared queue; ``"gpu"`` / ``"cpu"`` -> workers of that device kind.
    A spec whose result is stored, or which is already queued/running, is not submitted again.
    """
    settings = settings or JobSettings.from_env()
    key = spec.key()
    if ResultStore(settings.results_dir).has(key):
        return JobHandle(key, key, settings)
    if settings.distributed:
        return _celery_submit(spec, settings.queue_for(queue), settings)
    return _LOCAL.submit(spec, settings)


def _new_id(key: str) -> str:
    return f"{key}-{uuid.uuid4().hex[:8]}"


# ---- Celery ---------------------------------------------------------------------------------

def _celery_submit(spec: JobSpec, queue: str, settings: JobSettings, task: str | None = None) -> JobHandle:
    import redis

    from .celery_app import TASK_NAME, get_app

    key = spec.key()
    if not settings.redis_url:
        raise ClipvisError("the job layer needs Redis as broker or result backend (CLIPVIS_BROKER_URL=redis://...)")
    r = redis_client(settings.redis_url)
    record = f"{settings.redis_prefix}:job:{key}"
    new_id = _new_id(key)
    # One live job per key: SET NX claims the key; a record pointing at a failed, cancelled or
    # vanished job is replaced with compare-and-set so concurrent submitters agree on one id.
    while True:
        current = r.get(record)
        if current is None:
            if r.set(record, new_id, nx=True, ex=DEDUPE_TTL):
                break
            continue
        current = current.decode()
        state = _celery_status(JobHandle(current, key, settings)).state
        vanished = state == "SUCCESS" and not ResultStore(settings.results_dir).has(key)  # store wiped
        if state not in ("FAILURE", "REVOKED") and not vanished:
            return JobHandle(current, key, settings)
        with r.pipeline() as pipe:
            try:
                pipe.watch(record)
                if pipe.get(record) != current.encode():
                    continue
                pipe.multi()
                pipe.set(record, new_id, ex=DEDUPE_TTL)
                pipe.execute()
                break
            except redis.WatchError:
                continue
    try:
        get_app(settings).send_task(task or TASK_NAME, args=[spec.to_dict()], task_id=new_id, queue=queue)
    except BaseException:
        if r.get(record) == new_id.encode():
            r.delete(record)  # never sent: do not let the record block the next submission
        raise
    return JobHandle(new_id, key, settings)


def _celery_status(h: JobHandle) -> JobStatus:
    from .celery_app import get_app

    app = get_app(h.settings)  # first: it imports celery under its lock (threads race on that import)
    from celery.result import AsyncResult

    res = AsyncResult(h.id, app=app)
    state, info = res.state, res.info
    if state == "PROGRESS" and isinstance(info, dict):
        return JobStatus(state, int(info.get("frames_done", 0)), info.get("frames_total"), float(info.get("fps", 0.0)),
                         step=int(info.get("step", 0)), steps_total=info.get("steps_total"), loss=info.get("loss"))
    if state == "SUCCESS" and isinstance(info, dict) and "outcome" in info:  # a learning round
        import json

        return JobStatus(state, result=json.dumps(info["outcome"]))
    if state == "SUCCESS" and isinstance(info, dict) and info.get("card"):
        return JobStatus(state, result=str(info["card"]))  # a training job: its model card
    if state in ("FAILURE", "RETRY") and isinstance(info, BaseException):
        return JobStatus(state, error=str(info), error_type=type(info).__name__)
    return JobStatus(state)


def _celery_cancel(h: JobHandle) -> None:
    from .celery_app import get_app

    app = get_app(h.settings)
    r = redis_client(h.settings.redis_url)
    r.set(f"{h.settings.redis_prefix}:cancel:{h.id}", 1, ex=DEDUPE_TTL)  # seen by the task between frames
    app.control.revoke(h.id)  # workers drop the message if it has not started yet
    record = f"{h.settings.redis_prefix}:job:{h.key}"
    if r.get(record) == h.id.encode():
        r.delete(record)  # a later submit of the same spec starts afresh
    if _celery_status(h).state == "PENDING":
        app.backend.mark_as_revoked(h.id, "cancelled")


# ---- in-process -----------------------------------------------------------------------------

class _LocalRunner:
    """One background thread runs local jobs in submission order (one model, one device)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.pool: ThreadPoolExecutor | None = None
        self.by_key: dict[str, str] = {}  # key -> id of the queued/running job
        self.status: dict[str, JobStatus] = {}
        self.cancel_events: dict[str, threading.Event] = {}

    def submit(self, spec: JobSpec, settings: JobSettings) -> JobHandle:
        key = spec.key()
        with self.lock:
            running = self.by_key.get(key)
            if running is not None:
                return JobHandle(running, key, settings)
            job_id = _new_id(key)
            self.by_key[key] = job_id
            self.cancel_events[job_id] = threading.Event()
            if self.pool is None:
                self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clipvis-job")
        handle = JobHandle(job_id, key, settings)
        self._set(handle, JobStatus("PENDING"), force=True)
        self.pool.submit(self._run, spec, handle)
        return handle

    def _set(self, h: JobHandle, st: JobStatus, force: bool = False) -> None:
        prev = self.status.get(h.id)
        self.status[h.id] = st
        if force or prev is None or prev.state != st.state or st.frames_done == st.frames_total:
            h.store.write_status(h.id, st.to_dict())
        elif time.monotonic() - getattr(self, "_last_write", 0.0) >= h.settings.progress_interval:
            self._last_write = time.monotonic()
            h.store.write_status(h.id, st.to_dict())

    def _run(self, spec: JobSpec, h: JobHandle) -> None:
        event = self.cancel_events[h.id]
        should_stop = lambda: event.is_set() or h.store.cancel_path(h.id).exists()  # noqa: E731
        try:
            if should_stop():
                raise JobCancelled(f"job {h.id} was cancelled")
            self._set(h, JobStatus("STARTED"), force=True)
            run_job(spec, lambda p: self._set(h, JobStatus("PROGRESS", p.frames_done, p.frames_total, p.fps)),
                    should_stop=should_stop, settings=h.settings)
            self._set(h, JobStatus("SUCCESS"), force=True)
        except JobCancelled:
            self._set(h, JobStatus("REVOKED"), force=True)
        except Exception as e:  # reported through status()/wait(), like a Celery FAILURE
            self._set(h, JobStatus("FAILURE", error=str(e), error_type=type(e).__name__), force=True)
        finally:
            with self.lock:
                self.by_key.pop(h.key, None)


_LOCAL = _LocalRunner()


def _local_status(h: JobHandle) -> JobStatus:
    st = _LOCAL.status.get(h.id)
    if st is not None:
        return st
    d = h.store.read_status(h.id)  # a job of another process
    return JobStatus(**d) if d else JobStatus("PENDING")


def _local_cancel(h: JobHandle) -> None:
    event = _LOCAL.cancel_events.get(h.id)
    if event is not None:
        event.set()
    else:
        from ..tracks import write_atomic

        write_atomic(h.store.cancel_path(h.id), "cancel")
