"""Training as a job kind: ``submit_train(TrainJobSpec) -> TrainJobHandle`` (status, wait, cancel).

With ``CLIPVIS_BROKER_URL`` the job goes to the ``<queue>.train`` Celery queue (run one worker per
GPU on it: ``clipvis worker --queues clipvis.train``); without, it runs in a background thread of
this process, its status mirrored to ``<results>/.jobs/<id>.json`` for other processes. Progress
is the step, the total and the loss. A cancelled (or lost) job keeps its last checkpoint:
submitting the same spec with ``resume=True`` continues it. One live job per output directory.
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..errors import InputError
from .handle import JobHandle, JobStatus, _new_id
from .runner import JobCancelled, JobError
from .settings import JobSettings
from .spec import KEY_LENGTH

TRAIN_TASK = "clipvis.train"
TRAIN_QUEUE = "train"  # settings.queue_for("train") -> "<default queue>.train"


@dataclass
class TrainJobSpec:
    """One training run; the fields of ``clipvis train`` (``config``: a TrainConfig dict)."""

    data: list[str]
    init: str
    output: str
    steps: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    val: list[str] = field(default_factory=list)
    config: dict[str, Any] | None = None
    images: str | None = None
    resume: bool = False

    def __post_init__(self):
        if isinstance(self.data, str):
            self.data = [self.data]
        if not self.data or not all(isinstance(d, str) and d.strip() for d in self.data):
            raise InputError("training job needs at least one data source (--data)")
        if not self.init:
            raise InputError("training job needs --init (a released name, a model card, a .pth or random:<config>)")
        if not self.output:
            raise InputError("training job needs --output DIR")
        self.output = str(Path(self.output).expanduser().resolve())  # workers share the path
        self.val = list(self.val or [])
        self.train_config()  # unknown keys fail at submit time, not on the worker

    def train_config(self):
        from ..training.config import TrainConfig
        from ..training.loop import override

        try:
            cfg = TrainConfig.from_dict(self.config or {})
        except (ValueError, TypeError) as e:
            raise InputError(f"training config: {str(e).splitlines()[0]}") from None
        return override(cfg, max_iter=self.steps, batch_size=self.batch_size, lr=self.lr)

    def key(self) -> str:
        """One live job per output directory."""
        blob = json.dumps({"kind": "train", "output": self.output}).encode()
        return hashlib.sha256(blob).hexdigest()[:KEY_LENGTH]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainJobSpec":
        if not isinstance(d, dict):
            raise InputError(f"training job spec must be a JSON object, got {type(d).__name__}")
        try:
            return cls(**d)
        except TypeError as e:
            raise InputError(f"training job spec: {e}") from None


def _device() -> str:
    device = os.environ.get("CLIPVIS_DEVICE", "auto")
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    return device


@contextlib.contextmanager
def _output_lock(output: Path):
    """Refuse a second process training into the same directory (a lock that dies with the process)."""
    output.mkdir(parents=True, exist_ok=True)
    with open(output / ".train.lock", "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InputError(f"another training job is writing {output}: wait for it or cancel it") from None
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _in_daemon_process() -> bool:
    import multiprocessing

    try:
        import billiard  # Celery's multiprocessing fork

        if billiard.current_process().daemon:
            return True
    except ImportError:
        pass
    return multiprocessing.current_process().daemon


def run_train_job(spec: TrainJobSpec, progress: Callable | None = None,
                  should_stop: Callable[[], bool] | None = None) -> Path:
    """Train in this process (Celery task and local runner); returns the model card path."""
    from ..training.loop import TrainingCancelled, TrainRequest, train

    out = Path(spec.output)
    cfg = spec.train_config()
    if cfg.num_workers and _in_daemon_process():
        # A prefork pool's child is a daemon and may not start data-loader workers: decode inline.
        cfg = dataclasses.replace(cfg, num_workers=0)
    req = TrainRequest(data=spec.data, init=spec.init, output=out, config=cfg, val=spec.val,
                       device=_device(), resume=spec.resume, images_dir=spec.images, quiet=True,
                       progress=progress, should_stop=should_stop)
    with _output_lock(out):
        try:
            return train(req).card
        except TrainingCancelled as e:
            raise JobCancelled(str(e)) from None


def progress_status(p) -> JobStatus:
    return JobStatus("PROGRESS", fps=p.steps_per_s, step=p.step, steps_total=p.total, loss=p.loss)


class TrainJobHandle(JobHandle):
    """A JobHandle whose result is the trained model card (``wait() -> Path``)."""

    def wait(self, timeout: float | None = None, poll: float = 0.2) -> Path:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not (st := self.status()).done:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {self.id} still {st.state} after {timeout:g}s")
            time.sleep(poll)
        if st.state == "SUCCESS" and st.result:
            return Path(st.result)
        if st.state == "REVOKED":
            raise JobCancelled(st.error or f"training job {self.id} was cancelled: submit it again with resume "
                                           "(--resume) to continue from its last checkpoint")
        return super().wait(timeout=0)  # raises the job's error (InputError, JobCancelled, ...)

    def cancel(self) -> None:
        """Stop at the next step (a checkpoint of the last finished step is written first)."""
        if self.settings.distributed or not _LOCAL_TRAIN.cancel(self.id):
            super().cancel()  # Celery, or a local job of another process: through Redis / the cancel file


def submit_train(spec: TrainJobSpec, settings: JobSettings | None = None) -> TrainJobHandle:
    settings = settings or JobSettings.from_env()
    if settings.distributed:
        from .handle import _celery_submit

        h = _celery_submit(spec, settings.queue_for(TRAIN_QUEUE), settings, task=TRAIN_TASK)
        return TrainJobHandle(h.id, h.key, settings)
    return _LOCAL_TRAIN.submit(spec, settings)


class _LocalTrainRunner:
    """One background thread trains local jobs in submission order."""

    def __init__(self):
        self.lock = threading.Lock()
        self.pool: ThreadPoolExecutor | None = None
        self.by_key: dict[str, str] = {}
        self.events: dict[str, threading.Event] = {}

    def submit(self, spec: TrainJobSpec, settings: JobSettings) -> TrainJobHandle:
        key = spec.key()
        with self.lock:
            if key in self.by_key:
                return TrainJobHandle(self.by_key[key], key, settings)
            job_id = _new_id(key)
            self.by_key[key] = job_id
            self.events[job_id] = threading.Event()
            if self.pool is None:
                self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clipvis-train")
        h = TrainJobHandle(job_id, key, settings)
        h.store.write_status(h.id, JobStatus("PENDING").to_dict())
        self.pool.submit(self._run, spec, h)
        return h

    def _run(self, spec: TrainJobSpec, h: TrainJobHandle) -> None:
        event = self.events[h.id]
        stop = lambda: event.is_set() or h.store.cancel_path(h.id).exists()  # noqa: E731
        last = [0.0]

        def progress(p) -> None:
            now = time.monotonic()
            if now - last[0] >= h.settings.progress_interval or p.step == p.total:
                last[0] = now
                h.store.write_status(h.id, progress_status(p).to_dict())

        try:
            if stop():
                raise JobCancelled(f"job {h.id} was cancelled")
            h.store.write_status(h.id, JobStatus("STARTED").to_dict())
            card = self.execute(spec, progress, stop)
            h.store.write_status(h.id, JobStatus("SUCCESS", result=str(card)).to_dict())
        except JobCancelled as e:
            h.store.write_status(h.id, JobStatus("REVOKED", error=str(e)).to_dict())
        except Exception as e:  # reported through status()/wait(), like a Celery FAILURE
            h.store.write_status(h.id, JobStatus("FAILURE", error=str(e), error_type=type(e).__name__).to_dict())
        finally:
            with self.lock:
                self.by_key.pop(h.key, None)

    def execute(self, spec, progress, should_stop) -> object:
        """The job's work; its result becomes the status' ``result`` (learning rounds override it)."""
        return run_train_job(spec, progress, should_stop)

    def cancel(self, job_id: str) -> bool:
        event = self.events.get(job_id)
        if event is not None:
            event.set()
        return event is not None


_LOCAL_TRAIN = _LocalTrainRunner()


__all__ = ["TrainJobSpec", "TrainJobHandle", "submit_train", "run_train_job", "JobError"]
