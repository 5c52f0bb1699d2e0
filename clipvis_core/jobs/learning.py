"""Learning from corrections as job kinds: ``finetune`` and ``adapt`` rounds of a model line.

``submit_learning(LearnJobSpec) -> LearnJobHandle``. Like training jobs they go to the
``<queue>.train`` Celery queue (``clipvis.learn`` task) or, without a broker, run in a background
thread of this process. One live job per (kind, model line): a second submit while one is queued
or running returns that job, and a new round can be submitted once it ended. The corrections are
read when the job starts (a Label Studio project export through the API), so a job that waited in
the queue sees every annotation submitted meanwhile. The result is the round's outcome:
``{"status": "promoted" | "rejected" | "skipped", "reason", "version"}``.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..errors import InputError
from .handle import JobHandle
from .runner import JobCancelled
from .settings import JobSettings
from .spec import KEY_LENGTH
from .training import TRAIN_QUEUE, _device, _LocalTrainRunner

LEARN_TASK = "clipvis.learn"
KINDS = ("finetune", "adapt")


@dataclass
class LearnJobSpec:
    """One round for model line ``line`` from Label Studio project ``project`` at ``ls_url``.

    ``ls_token``: the API token the job reads the project with (the worker's
    ``LABEL_STUDIO_API_KEY`` when empty). ``labels``: Label Studio label -> vocabulary entry
    (the prompts the backend segments with), so adapted prototypes land on the served classes.
    """

    kind: str
    line: str
    project: int
    ls_url: str
    ls_token: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    min_new: int = 20
    steps: int = 200
    batch_size: int = 2
    lr: float | None = None
    held_out: float = 0.25
    config: dict[str, Any] | None = None  # TrainConfig overrides
    # The size the backend segments at: prototypes pool and held-out scores are taken there.
    min_size: int | None = None
    max_size: int | None = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise InputError(f"learning job kind {self.kind!r}: use one of {', '.join(KINDS)}")
        if not str(self.project).isdigit():
            raise InputError(f"learning job needs a numeric Label Studio project id, got {self.project!r}")
        self.project = int(self.project)
        if not self.ls_url:
            raise InputError("learning job needs the Label Studio URL (LABEL_STUDIO_URL)")
        if not 0 < self.held_out < 1:
            raise InputError(f"held-out share {self.held_out}: use a fraction between 0 and 1 (e.g. 0.25)")
        self.train_config()  # unknown keys fail at submit time, not on the worker

    def train_config(self):
        from ..training.config import TrainConfig

        try:
            return TrainConfig.from_dict(self.config or {})
        except (ValueError, TypeError) as e:
            raise InputError(f"training config: {str(e).splitlines()[0]}") from None

    @property
    def source(self) -> str:
        return f"labelstudio:{self.project}"

    def key(self) -> str:
        """One live job per kind and model line."""
        blob = json.dumps({"kind": f"learn-{self.kind}", "line": self.line}).encode()
        return hashlib.sha256(blob).hexdigest()[:KEY_LENGTH]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "LearnJobSpec":
        if not isinstance(d, dict):
            raise InputError(f"learning job spec must be a JSON object, got {type(d).__name__}")
        try:
            return cls(**d)
        except TypeError as e:
            raise InputError(f"learning job spec: {e}") from None


def _export(spec: LearnJobSpec):
    """(tasks with their annotations, media downloader): one export of the project per job."""
    import os

    from ..training.data import labelstudio as ls

    token = spec.ls_token or os.environ.get("LABEL_STUDIO_API_KEY")
    if not token:
        raise InputError("no Label Studio token for the learning job: set LABEL_STUDIO_API_KEY on the worker")
    cache = JobSettings.from_env().cache_dir / "labelstudio" / "training-media"
    client = ls.LabelStudioClient(spec.ls_url, token, cache)
    return client.export(spec.project), client.download


@contextlib.contextmanager
def _line_lock(line_root: Path):
    """Serialises promotions of one line across processes (a lock that dies with its holder)."""
    line_root.mkdir(parents=True, exist_ok=True)
    with open(line_root / ".promote.lock", "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _finetune(spec: LearnJobSpec, progress, should_stop) -> dict:
    from ..finetune import FinetuneRequest, finetune, mask_count
    from ..training.data.labelstudio import parse_export
    from ..training.loop import TrainingCancelled

    tasks, download = _export(spec)
    records = [r for r in parse_export(tasks, spec.source, download) if mask_count(r)]
    if not records:
        return {"status": "skipped", "version": None,
                "reason": f"{spec.source} has no submitted brush masks yet: nothing to fine-tune on"}
    try:
        out = finetune(FinetuneRequest(spec.line, [spec.source], records=records, held_out=spec.held_out,
                                       min_new=spec.min_new, steps=spec.steps, batch_size=spec.batch_size,
                                       lr=spec.lr, config=spec.train_config(), device=_device(),
                                       size=(spec.min_size, spec.max_size),
                                       progress=progress, should_stop=should_stop))
    except TrainingCancelled as e:
        raise JobCancelled(f"{e}; the promoted version is unchanged") from None
    return {"status": out.status, "reason": out.reason, "version": out.lineage.version if out.lineage else None,
            "new_masks": out.new_masks}


def _adapt(spec: LearnJobSpec, should_stop) -> dict:
    from ..adaptation import AdaptOptions, fit_adapter, load_adapter
    from ..adaptation.labelstudio import examples_from_tasks
    from ..segmenter import get_segmenter
    from ..versions import Lineage, ModelLine
    from ..vocabulary import Vocabulary

    tasks, download = _export(spec)
    found = examples_from_tasks(tasks, spec.source, download)
    if not found.examples:
        return {"status": "skipped", "version": None,
                "reason": f"{spec.source} has no submitted labelled regions (brush, rectangles, video rectangles) yet"}
    for ex in found.examples:  # Label Studio label -> the vocabulary entry the backend segments with
        ex.label = spec.labels.get(ex.label, ex.label)
    vocab = Vocabulary.from_names(list(dict.fromkeys(spec.labels.values()))) if spec.labels else None
    line = ModelLine.open(spec.line)
    parent = line.current()
    if should_stop():
        raise JobCancelled(f"adaptation of {spec.line} cancelled before it started")
    segmenter = get_segmenter(f"line:{spec.line}@{parent.version}", device=_device())
    adapter = fit_adapter(segmenter, found, vocab, AdaptOptions(min_size=spec.min_size, max_size=spec.max_size),
                          source=spec.source)
    if parent.adapter and Path(parent.adapter).is_file() and load_adapter(parent.adapter).digest() == adapter.digest():
        return {"status": "skipped", "version": None,
                "reason": f"no new labelled instances since {parent.version}: its adapter is unchanged"}
    report = adapter.report
    version, vdir = line.next_version()
    path = adapter.save(vdir / "adapter.pt")
    lineage = Lineage(version, parent.version, "adapter", parent.checkpoint, adapter=str(path.resolve()),
                      data={"sources": [spec.source], "examples": report["examples"],
                            "conflicting_left_out": report["conflicting_left_out"],
                            "boxes_only_instances": report["boxes_only_instances"]},
                      metrics={"loo_accuracy_text": report["loo_accuracy_text"],
                               "loo_accuracy_adapted": report["loo_accuracy_adapted"], "alpha": report["alpha"]})
    with _line_lock(line.root):
        current = line.current().version
        if current != parent.version:  # a fine-tune was promoted meanwhile: this adapter fits the old weights
            lineage.reason = f"built for {parent.version} but {current} was promoted meanwhile; the next round adapts it"
            line.record(lineage)
            return {"status": "rejected", "reason": lineage.reason, "version": version}
        lineage.promoted = True
        lineage.reason = (f"{report['examples']} labelled instances, leave-one-out accuracy "
                          f"{report['loo_accuracy_text']:.3f} -> {report['loo_accuracy_adapted']:.3f}")
        line.record(lineage)
        line.promote(version)
    return {"status": "promoted", "reason": lineage.reason, "version": version}


def run_learning_job(spec: LearnJobSpec, progress: Callable | None = None,
                     should_stop: Callable[[], bool] | None = None) -> dict:
    """One round in this process (Celery task and local runner); returns the outcome dict."""
    stop = should_stop or (lambda: False)
    t0 = time.monotonic()
    out = _finetune(spec, progress, stop) if spec.kind == "finetune" else _adapt(spec, stop)
    return {**out, "kind": spec.kind, "line": spec.line, "seconds": round(time.monotonic() - t0, 2)}


class LearnJobHandle(JobHandle):
    """A JobHandle whose result is the round's outcome (``wait() -> dict``)."""

    def outcome(self) -> dict | None:
        st = self.status()
        return json.loads(st.result) if st.state == "SUCCESS" and st.result else None

    def wait(self, timeout: float | None = None, poll: float = 0.2) -> dict:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not (st := self.status()).done:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {self.id} still {st.state} after {timeout:g}s")
            time.sleep(poll)
        if st.state == "SUCCESS" and st.result:
            return json.loads(st.result)
        if st.state == "REVOKED":
            raise JobCancelled(st.error or f"learning job {self.id} was cancelled; the promoted version is unchanged")
        return super().wait(timeout=0)  # raises the job's error

    def cancel(self) -> None:
        if self.settings.distributed or not _LOCAL_LEARN.cancel(self.id):
            super().cancel()


def submit_learning(spec: LearnJobSpec, settings: JobSettings | None = None) -> LearnJobHandle:
    settings = settings or JobSettings.from_env()
    if settings.distributed:
        from .handle import _celery_submit

        h = _celery_submit(spec, settings.queue_for(TRAIN_QUEUE), settings, task=LEARN_TASK)
        return LearnJobHandle(h.id, h.key, settings)
    h = _LOCAL_LEARN.submit(spec, settings)
    return LearnJobHandle(h.id, h.key, settings)


class _LocalLearnRunner(_LocalTrainRunner):
    """Training's local runner (one thread, submission order), running learning rounds."""

    def execute(self, spec: LearnJobSpec, progress, should_stop) -> str:
        return json.dumps(run_learning_job(spec, progress, should_stop))


_LOCAL_LEARN = _LocalLearnRunner()


__all__ = ["LearnJobSpec", "LearnJobHandle", "submit_learning", "run_learning_job", "KINDS"]
