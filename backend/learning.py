"""Learning from corrections: annotation events -> debounced fine-tune and adaptation rounds.

With ``CLIPVIS_LEARN=1`` every project gets a model line (``clipvis_core.versions``) named after
its pinned Label Studio host and id, started from ``CLIPVIS_CHECKPOINT`` on first use; the project
is served from the line's promoted version. Annotation created / updated events and Label Studio's
"Start training" (a ``START_TRAINING`` webhook) only arm a timer: ``CLIPVIS_LEARN_DEBOUNCE``
seconds after the last event a round is submitted to the job layer (a fine-tune job when the
config has brush labels on images, then an adaptation job) and the request has long returned.
A round that is queued absorbs later events (no duplicate jobs); a running one gets a follow-up
round once it ended. Nothing is read from Label Studio here: the jobs export the project.
"""
from __future__ import annotations

import json
import logging
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

from clipvis_core.errors import ClipvisError, InputError
from clipvis_core.jobs.settings import env_float

log = logging.getLogger("clipvis.labelstudio")

EVENTS = ("ANNOTATION_CREATED", "ANNOTATIONS_CREATED", "ANNOTATION_UPDATED", "START_TRAINING")
RUNNING = ("STARTED", "PROGRESS")


class LearningOff(ClipvisError):
    """"Start training" on a backend that does not learn from corrections (HTTP 409)."""


@dataclass(frozen=True)
class LearnSettings:
    enabled: bool = False
    debounce_s: float = 30.0  # quiet time after the last annotation event before a round starts
    min_new: int = 20  # new corrected masks a fine-tune round needs (adaptation needs none)
    steps: int = 200
    batch_size: int = 2
    lr: float | None = None
    held_out: float = 0.25
    config: dict = field(default_factory=dict)  # TrainConfig overrides (CLIPVIS_LEARN_CONFIG, a JSON file)

    @classmethod
    def from_env(cls) -> "LearnSettings":
        import os

        flag = os.environ.get("CLIPVIS_LEARN", "").strip().lower()
        if flag not in ("", "0", "1", "true", "false", "yes", "no", "on", "off"):
            raise InputError(f"CLIPVIS_LEARN={flag!r}: set it to 1 (learn from corrections) or 0")
        config = {}
        path = os.environ.get("CLIPVIS_LEARN_CONFIG")
        if path:
            try:
                config = json.loads(Path(path).expanduser().read_text())
            except (OSError, ValueError) as e:
                raise InputError(f"CLIPVIS_LEARN_CONFIG {path}: {e.__class__.__name__}: point it at a training "
                                 "config JSON") from None
        lr = os.environ.get("CLIPVIS_LEARN_LR")
        return cls(enabled=flag in ("1", "true", "yes", "on"), debounce_s=env_float("CLIPVIS_LEARN_DEBOUNCE", 30.0),
                   min_new=int(env_float("CLIPVIS_LEARN_MIN_NEW", 20)), steps=int(env_float("CLIPVIS_LEARN_STEPS", 200)),
                   batch_size=int(env_float("CLIPVIS_LEARN_BATCH_SIZE", 2)),
                   lr=env_float("CLIPVIS_LEARN_LR", 0.0) if lr else None,
                   held_out=env_float("CLIPVIS_LEARN_HELD_OUT", 0.25), config=config)


def line_name(ls_url: str | None, project_key: str) -> str:
    """``ls-<host>-<port>-p<id>``: a project's line, distinct per Label Studio instance."""
    host = re.sub(r"^[a-z]+://", "", (ls_url or "local").lower()).rstrip("/")
    return f"ls-{re.sub(r'[^a-z0-9.]+', '-', host).strip('-.')[:70]}-p{project_key}"


@dataclass
class Round:
    """What one project's learning is doing: a pending timer and the last job of each kind."""

    timer: threading.Timer | None = None
    spec_args: dict = field(default_factory=dict)
    jobs: dict = field(default_factory=dict)  # kind -> LearnJobHandle
    events: int = 0
    last_outcome: dict = field(default_factory=dict)  # kind -> outcome of the last finished job


class Learner:
    def __init__(self, settings: LearnSettings, checkpoint: str, size: tuple[int | None, int | None] = (None, None)):
        self.settings = settings
        self.checkpoint = checkpoint
        self.size = size  # the backend's segmentation size: rounds adapt and judge at it
        self._lock = threading.Lock()
        self._rounds: dict[str, Round] = {}

    def ensure_line(self, name: str) -> None:
        from clipvis_core.versions import ModelLine

        ModelLine.create(name, self.checkpoint, exist_ok=True)

    def schedule(self, key: str, line: str, ls_url: str | None, token: str | None, targets,
                 immediate: bool = False) -> Round:
        """Arm (or re-arm) the project's debounce timer and return at once; ``immediate`` (the
        "Start training" button) submits the round now instead."""
        if not ls_url:
            raise InputError(f"project {key} has no Label Studio URL to read annotations from: set LABEL_STUDIO_URL")
        self.ensure_line(line)
        labels = {lab: prompt for t in targets for lab, prompt in zip(t.labels, t.prompts)}
        kinds = (["finetune"] if any(t.strategy.control == "BrushLabels" and t.kind == "image" for t in targets) else [])
        args = dict(line=line, project=int(key), ls_url=ls_url, ls_token=token, labels=labels, kinds=kinds + ["adapt"],
                    min_size=self.size[0], max_size=self.size[1])
        with self._lock:
            rnd = self._rounds.setdefault(key, Round())
            rnd.events += 1
            rnd.spec_args = args
            if not immediate:
                self._arm(key, rnd)
                return rnd
            if rnd.timer is not None:
                rnd.timer.cancel()
        self._fire(key)
        return rnd

    def _arm(self, key: str, rnd: Round) -> None:
        if rnd.timer is not None:
            rnd.timer.cancel()
        rnd.timer = threading.Timer(self.settings.debounce_s, self._fire, args=(key,))
        rnd.timer.daemon = True
        rnd.timer.start()

    def _fire(self, key: str) -> None:
        from clipvis_core.jobs.learning import LearnJobSpec, submit_learning

        with self._lock:
            rnd = self._rounds[key]
            rnd.timer = None
            args = dict(rnd.spec_args)
            if any(self._state(h) in RUNNING for h in rnd.jobs.values()):
                self._arm(key, rnd)  # a running round has not seen these events: follow up after it
                return
        s = self.settings
        try:
            for kind in args.pop("kinds"):  # fine-tune first: the adaptation then fits the new weights
                spec = LearnJobSpec(kind=kind, min_new=s.min_new, steps=s.steps, batch_size=s.batch_size, lr=s.lr,
                                    held_out=s.held_out, config=s.config or None, **args)
                h = submit_learning(spec)  # a queued job of this line is returned, not duplicated
                with self._lock:
                    rnd.jobs[kind] = h
                log.info("project %s: %s job %s for line %s", key, kind, h.id, spec.line)
        except Exception:  # a timer thread: log it; the next event tries again
            log.exception("project %s: could not submit the learning round", key)

    @staticmethod
    def _state(h) -> str:
        try:
            return h.status().state
        except Exception as e:  # a broker hiccup: treated as not running; the next event retries
            log.warning("job %s: status unavailable (%s)", h.id, e)
            return "UNKNOWN"

    def status(self, key: str) -> dict:
        """``{"is_training", "state", "events", "jobs": {kind: {id, state, step, steps_total, outcome}}}``."""
        with self._lock:
            rnd = self._rounds.get(key)
            jobs = dict(rnd.jobs) if rnd else {}
            pending = bool(rnd and rnd.timer is not None)
            events = rnd.events if rnd else 0
        out = {}
        for kind, h in jobs.items():
            try:
                st = h.status()
            except Exception as e:  # a broker hiccup: say so instead of failing the poll
                log.warning("job %s: status unavailable (%s)", h.id, e)
                from clipvis_core.jobs import JobStatus

                st = JobStatus("UNKNOWN", error=f"status unavailable: {e}")
            entry = {"id": h.id, "state": st.state, "step": st.step, "steps_total": st.steps_total}
            if st.state == "SUCCESS" and st.result:
                entry["outcome"] = json.loads(st.result)
            elif st.error:
                entry["error"] = st.error
            out[kind] = entry
        live = [j["state"] for j in out.values() if j["state"] not in ("SUCCESS", "FAILURE", "REVOKED")]
        state = "training" if any(s in RUNNING for s in live) else "queued" if live else (
            "scheduled" if pending else "idle")
        return {"is_training": bool(live) or pending, "state": state, "events": events, "jobs": out}

    def job_status(self, job_id: str) -> str | None:
        """Label Studio's train-job vocabulary for one of our job ids (None: not ours)."""
        with self._lock:
            handles = [h for rnd in self._rounds.values() for h in rnd.jobs.values() if h.id == job_id]
        if not handles:
            return None
        state = handles[0].status().state
        return {"SUCCESS": "finished", "FAILURE": "failed", "REVOKED": "cancelled",
                "PENDING": "queued"}.get(state, "started")
