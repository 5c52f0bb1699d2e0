"""The ``LabelStudioMLBase`` subclass: parse the labeling config, answer ``/predict`` in budget.

label-studio-ml re-creates this object on every ``/setup`` (3 s budget), so construction only
parses the config; the network lives in the job layer / segmenter cache, built on first use.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from concurrent.futures import Future, wait
from dataclasses import dataclass, field
from pathlib import Path

from clipvis_core.errors import ClipvisError, WeightsError
from clipvis_core.weights import resolve_checkpoint

from . import runner
from .lsml import LabelStudioMLBase
from .media import LabelStudioAuth, MediaFetcher, MediaRefused
from .push import LabelStudioClient
from .settings import BackendSettings
from .strategies import Target, plan, vocabulary_hash

log = logging.getLogger("clipvis.labelstudio")


def checkpoint_name(checkpoint: str) -> str:
    """The name the core uses in model versions; a missing or unknown checkpoint raises a
    ``WeightsError`` that says how to fix it (so Label Studio shows it when connecting)."""
    if checkpoint.endswith((".pth", ".pt", ".pkl")):  # resolving would read the whole state dict
        if not Path(checkpoint).expanduser().is_file():
            raise WeightsError(f"checkpoint file {checkpoint} not found: check CLIPVIS_CHECKPOINT / --checkpoint")
        return Path(checkpoint).stem
    return resolve_checkpoint(checkpoint).name


@dataclass
class TaskJob:
    """One task's requests; delivered in the /predict answer or, if late, pushed when done."""

    task: dict
    parts: list[tuple[list[Target], Future]]
    lock: threading.Lock = field(default_factory=threading.Lock)
    state: str = "waiting"  # waiting -> delivered | deferred -> pushed

    @property
    def done(self) -> bool:
        return all(f.done() for _, f in self.parts)


class ClipvisBackend(LabelStudioMLBase):
    def __init__(self, label_config=None, train_output=None, settings: BackendSettings | None = None, **kwargs):
        super().__init__(label_config=label_config, train_output=train_output, **kwargs)
        self.settings = settings or BackendSettings.from_env()
        self.targets = plan(self.parsed_label_config, self.label_config)  # ConfigError names the supported tags
        self.model_version = f"{checkpoint_name(self.settings.checkpoint)}-{vocabulary_hash(self.targets)}"
        self.ls_url = (self.settings.ls_url or self.hostname or "").rstrip("/") or None
        self.auth = LabelStudioAuth(self.ls_url, self.settings.api_key or self.access_token)
        self.fetcher = MediaFetcher(self.ls_url, self.auth, allowed_hosts=self.settings.allowed_hosts,
                                    document_root=self.settings.document_root,
                                    max_bytes=self.settings.max_media_bytes, cache_dir=self.settings.cache_dir)

    # -- requests ---------------------------------------------------------------------------------
    def options(self) -> tuple[tuple[str, object], ...]:
        opts = {"score_threshold": self.settings.score_threshold}
        if self.settings.frame_stride > 1:
            opts["frame_stride"] = self.settings.frame_stride
        for name in ("min_size", "max_size"):
            if getattr(self.settings, name):
                opts[name] = getattr(self.settings, name)
        return tuple(sorted(opts.items()))

    def start(self, task: dict) -> TaskJob:
        """Start (or join) the jobs a task needs: one per media field and vocabulary."""
        groups: dict[tuple, list[Target]] = defaultdict(list)
        for t in self.targets:
            groups[(t.data_key, t.kind, t.prompts)].append(t)
        parts = []
        data = task.get("data") or {}
        for (key, kind, prompts), targets in groups.items():
            req = runner.Request(data.get(key), kind, prompts, self.settings.checkpoint, self.options())
            try:
                if not data.get(key):
                    raise MediaRefused(f"task {task.get('id')} has no '{key}' field: the labeling config reads "
                                       f"${key}; import tasks with that field (or change value=\"${key}\")")
                fut = runner.start(req, self.fetcher)
            except ClipvisError as e:  # refused media: this task fails, the batch goes on
                fut = Future()
                fut.set_exception(e)
            parts.append((targets, fut))
        return TaskJob(task, parts)

    def prediction(self, job: TaskJob) -> dict:
        """The finished task's Label Studio prediction (raises the job's error if it failed)."""
        result = []
        for targets, fut in job.parts:
            outcome: runner.Outcome = fut.result()
            for t in targets:
                result.extend(t.regions(outcome.tracks, outcome.frames_count, job.task.get("data")))
        scores = [r["score"] for r in result]
        return {"result": result, "score": sum(scores) / len(scores) if scores else 0.0,
                "model_version": self.model_version}

    # -- /predict ---------------------------------------------------------------------------------
    def predict(self, tasks, **kwargs):
        deadline = time.monotonic() + self.settings.predict_budget_s
        jobs = [self.start(task) for task in tasks]
        wait([f for j in jobs for _, f in j.parts], timeout=max(0.0, deadline - time.monotonic()))
        answers, errors = [], []
        for job in jobs:
            with job.lock:
                job.state = "delivered" if job.done else "deferred"
            if job.state == "deferred":
                # Late: Label Studio gets nothing for it now; the finished prediction is pushed.
                answers.append([])
                self._push_later(job)
                continue
            try:
                answers.append(self.prediction(job))
            except Exception as e:  # one failed task leaves the rest of the batch answered
                if isinstance(e, ClipvisError):
                    log.warning("task %s: %s", job.task.get("id"), e)
                else:
                    log.exception("task %s failed", job.task.get("id"))
                errors.append(e)
                answers.append([])
        if errors and len(errors) == len(jobs):
            raise errors[0]  # nothing succeeded: the message is the answer (e.g. a refused URL)
        return answers

    def enqueue(self, tasks) -> int:
        """Start jobs for ``tasks`` and push each prediction when it finishes (webhooks)."""
        for task in tasks:
            job = self.start(task)
            job.state = "deferred"
            self._push_later(job)
        return len(tasks)

    def _push_later(self, job: TaskJob) -> None:
        # Outside job.lock: a future that is already done runs its callback right here.
        for _, f in job.parts:
            f.add_done_callback(lambda _f, job=job: self._push_when_done(job))

    def _push_when_done(self, job: TaskJob) -> None:
        with job.lock:
            if job.state != "deferred" or not job.done:
                return
            job.state = "pushed"
        try:
            pred = self.prediction(job)
            client = self.client()
            # A webhook job and a /predict call may both finish one task: store it once.
            if any(p.get("model_version") == self.model_version for p in client.predictions(job.task["id"])):
                return
            client.create_prediction(job.task["id"], pred)
            log.info("pushed prediction for task %s (%d regions)", job.task["id"], len(pred["result"]))
        except Exception as e:  # a callback thread: log, never raise into the pool
            log.error("could not push the prediction for task %s: %s", job.task.get("id"), e)

    def client(self) -> LabelStudioClient:
        return LabelStudioClient(self.ls_url, None, auth=self.auth)

    def fit(self, *args, **kwargs):
        return {}  # pre-annotation only: annotations do not train this model
