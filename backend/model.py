"""One project's backend: parse its labeling config, answer ``/predict`` in budget.

Built on every ``/setup`` (Label Studio gives it 3 s), so construction only parses the config;
the network lives in the job layer / segmenter cache, built on first use.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from concurrent.futures import Future, wait
from dataclasses import dataclass, field
from pathlib import Path

from clipvis_core.errors import ClipvisError, InputError, WeightsError
from clipvis_core.weights import resolve_checkpoint

from . import runner
from .media import LabelStudioAuth, MediaFetcher, MediaRefused
from .push import LabelStudioClient
from .settings import BackendSettings
from .strategies import ConfigError, Target, plan, vocabulary_hash

log = logging.getLogger("clipvis.labelstudio")


def checkpoint_name(checkpoint: str) -> str:
    """The name the core uses in model versions; a missing or unknown checkpoint raises a
    ``WeightsError`` that says how to fix it (so Label Studio shows it when connecting)."""
    if checkpoint.endswith((".pth", ".pt", ".pkl")):  # resolving would read the whole state dict
        if not Path(checkpoint).expanduser().is_file():
            raise WeightsError(f"checkpoint file {checkpoint} not found: check CLIPVIS_CHECKPOINT / --checkpoint")
        return Path(checkpoint).stem
    return resolve_checkpoint(checkpoint).name


class ConfigTooLarge(ConfigError):
    """A labeling config over the size or label-count limit (HTTP 413)."""


def parse_label_config(config: str | None, settings: BackendSettings) -> dict:
    """label-studio-tools' parsed config, after the size limits and with one-line errors."""
    from label_studio_tools.core.label_config import parse_config

    if not config:
        return {}
    if not isinstance(config, str):
        raise ConfigError("the labeling config must be a string of XML")
    size = len(config.encode())
    if size > settings.max_config_bytes:
        raise ConfigTooLarge(f"labeling config is {size // 1024} KB, over the {settings.max_config_bytes // 1024} KB "
                             "limit: raise CLIPVIS_MAX_CONFIG_KB")
    if "<!DOCTYPE" in config.upper() or "<!ENTITY" in config.upper():
        raise ConfigError("labeling configs with a DOCTYPE or entities are refused: remove the <!DOCTYPE ...> part")
    try:
        parsed = parse_config(config)
    except Exception as e:  # malformed XML, a control without toName, ...: the config is at fault
        raise ConfigError(f"labeling config could not be parsed ({type(e).__name__}: {str(e)[:200]})") from None
    labels = sum(len(info.get("labels") or ()) for info in parsed.values())
    if labels > settings.max_labels:
        raise ConfigTooLarge(f"labeling config has {labels} labels, over the limit of {settings.max_labels} "
                             "(each is a text prompt): raise CLIPVIS_MAX_LABELS")
    return parsed


def task_error(task_id, e: BaseException) -> str:
    """The one line a failed task reports; the traceback of an unexpected error goes to the log."""
    if isinstance(e, ClipvisError):
        log.warning("task %s: %s", task_id, e)
        return str(e)
    log.error("task %s failed", task_id, exc_info=e)
    return f"internal error ({type(e).__name__}): see the backend log"


@dataclass
class TaskJob:
    """One task's requests; delivered in the /predict answer or, if late, pushed when done."""

    task: dict
    parts: list[tuple[list[Target], Future]]
    lock: threading.Lock = field(default_factory=threading.Lock)
    state: str = "waiting"  # waiting -> delivered | deferred -> pushed
    version: str = ""  # the model version that computes it (a model line may move on meanwhile)

    @property
    def done(self) -> bool:
        return all(f.done() for _, f in self.parts)


class ClipvisBackend:
    """``ls_url`` is the pinned Label Studio origin (media, pushes, token refresh); ``access_token``
    the token Label Studio handed over at ``/setup`` (``LABEL_STUDIO_API_KEY`` wins); ``line`` the
    project's model line when it learns from corrections (``backend.learning``)."""

    def __init__(self, label_config: str | None, settings: BackendSettings, ls_url: str | None = None,
                 access_token: str | None = None, line: str | None = None):
        self.settings = settings
        self.label_config = label_config
        self.parsed_label_config = parse_label_config(label_config, settings)
        try:
            self.targets = plan(self.parsed_label_config, self.label_config)  # ConfigError names the supported tags
        except ConfigError:
            raise
        except InputError as e:  # e.g. a blank synonym: still the config's fault (422)
            raise ConfigError(f"labeling config: {e}") from None
        self.line = line
        self._vocab = vocabulary_hash(self.targets)
        if line:
            self._fixed_version = ""
        else:
            self._fixed_version = f"{checkpoint_name(self.settings.checkpoint)}-{self._vocab}"
        if self.settings.adapter and not line:  # a new adapter is a new version: fresh predictions
            from clipvis_core.adaptation import load_adapter

            self._fixed_version += f"-{load_adapter(self.settings.adapter).digest()}"
        self.ls_url = (ls_url or "").rstrip("/") or None
        self.access_token = access_token
        self.auth = LabelStudioAuth(self.ls_url, self.settings.api_key or access_token)
        self.fetcher = MediaFetcher(self.ls_url, self.auth, allowed_hosts=self.settings.allowed_hosts,
                                    document_root=self.settings.document_root,
                                    max_bytes=self.settings.max_media_bytes,
                                    max_seconds=self.settings.max_media_seconds, cache_dir=self.settings.cache_dir)

    def serving(self) -> tuple[str, str | None, str]:
        """(checkpoint spec, adapter, model version) served now. A model line's promotion changes all
        three, so Label Studio sees a new ``model_version`` and asks for fresh predictions."""
        if not self.line:
            return self.settings.checkpoint, self.settings.adapter, self._fixed_version
        from clipvis_core.versions import ModelLine

        _, adapter, name = ModelLine.open(self.line).serving()  # name: "<line>@vN"
        return f"line:{name}", adapter, f"{name}-{self._vocab}"

    @property
    def model_version(self) -> str:
        return self.serving()[2]

    # -- requests ---------------------------------------------------------------------------------
    def options(self) -> tuple[tuple[str, object], ...]:
        opts = {"score_threshold": self.settings.score_threshold}
        if self.settings.frame_stride > 1:
            opts["frame_stride"] = self.settings.frame_stride
        for name in ("min_size", "max_size"):
            if getattr(self.settings, name):
                opts[name] = getattr(self.settings, name)
        if self.settings.precision != "fp32":  # absent at the default: job keys stay as they were
            opts["precision"] = self.settings.precision
        return tuple(sorted(opts.items()))

    def start(self, task: dict) -> TaskJob:
        """Start (or join) the jobs a task needs: one per media field and vocabulary. Whatever goes
        wrong with one task (bad URL, bad data) becomes that task's failed future."""
        groups: dict[tuple, list[Target]] = defaultdict(list)
        for t in self.targets:
            groups[(t.data_key, t.kind, t.prompts)].append(t)
        task = task if isinstance(task, dict) else {"id": None, "data": task}
        data = task.get("data")
        checkpoint, adapter, version = self.serving()
        parts = []
        for (key, kind, prompts), targets in groups.items():
            try:
                if not isinstance(data, dict):
                    raise InputError(f"task {task.get('id')} has no 'data' object")
                value = data.get(key)
                if not value:
                    raise MediaRefused(f"task {task.get('id')} has no '{key}' field: the labeling config reads "
                                       f"${key}; import tasks with that field (or change value=\"${key}\")")
                if not isinstance(value, str):
                    raise MediaRefused(f"task {task.get('id')}: '{key}' must be a media URL (a string)")
                fut = runner.start(runner.Request(value, kind, prompts, checkpoint, self.options(), adapter),
                                   self.fetcher)
            except Exception as e:  # this task fails, the batch goes on
                fut = Future()
                fut.set_exception(e)
            parts.append((targets, fut))
        return TaskJob(task, parts, version=version)

    def prediction(self, job: TaskJob) -> dict:
        """The finished task's Label Studio prediction (raises the job's error if it failed)."""
        result = []
        for targets, fut in job.parts:
            outcome: runner.Outcome = fut.result()
            for t in targets:
                result.extend(t.regions(outcome.tracks, outcome.frames_count, job.task.get("data"),
                                        self.settings.keyframe_tolerance))
        scores = [r["score"] for r in result]
        return {"result": result, "score": sum(scores) / len(scores) if scores else 0.0,
                "model_version": job.version or self.model_version}

    # -- /predict ---------------------------------------------------------------------------------
    def predict(self, tasks: list) -> tuple[list, list[dict]]:
        """One answer per task (``[]`` when late or failed) and ``{"task", "detail"}`` per failure."""
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
                errors.append({"task": job.task.get("id"), "detail": task_error(job.task.get("id"), e)})
                answers.append([])
        return answers, errors

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
            if any(p.get("model_version") == pred["model_version"] for p in client.predictions(job.task["id"])):
                return
            client.create_prediction(job.task["id"], pred)
            log.info("pushed prediction for task %s (%d regions)", job.task["id"], len(pred["result"]))
        except Exception as e:  # a callback thread: log, never raise into the pool
            log.error("could not push the prediction for task %s: %s", job.task.get("id"), e)

    def client(self) -> LabelStudioClient:
        return LabelStudioClient(self.ls_url, None, auth=self.auth)

    def fit(self, *args, **kwargs):
        return {}  # learning from corrections is backend.learning's, driven by /webhook events
