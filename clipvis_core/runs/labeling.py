"""Segment the samples of a FiftyOne dataset and write each one's labels as soon as it is done.

``iter_label_samples`` is a generator: it submits one job per sample to the job layer (Celery
workers when ``CLIPVIS_BROKER_URL`` is set, else the job layer's worker thread in this process),
yields a ``RunProgress`` while they run and writes a sample the moment its job ends. The App's
immediate runs and the background worker (``clipvis_core.runs.worker``) both drive it.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterator

from ..errors import InputError

POLL_S = 0.2


@dataclass(frozen=True)
class RunSpec:
    """What to segment with and how to write it: JSON-safe, so a run record can carry it."""

    vocabulary: tuple[str, ...]
    checkpoint: str
    label_field: str
    score_threshold: float = 0.1
    max_tracks: int | None = 20  # None: keep every track
    frame_stride: int = 1
    store_masks: bool = True
    adapter: str | None = None
    precision: str = "fp32"

    def job_spec(self, path: str):
        from ..jobs import JobSpec

        return JobSpec(media=path, vocabulary=list(self.vocabulary), checkpoint=self.checkpoint,
                       options={"frame_stride": self.frame_stride, "score_threshold": self.score_threshold,
                                "precision": self.precision},  # fp32 is the default: not part of the job key
                       adapter=self.adapter)

    def to_dict(self) -> dict:
        return {**asdict(self), "vocabulary": list(self.vocabulary)}

    @classmethod
    def from_dict(cls, d: dict) -> "RunSpec":
        return cls(**{**d, "vocabulary": tuple(d["vocabulary"])})


@dataclass
class RunProgress:
    samples_done: int
    samples_total: int
    tracks: int = 0
    active: dict[str, tuple[int, int]] = field(default_factory=dict)  # sample name -> (frames done, total)

    @property
    def fraction(self) -> float:
        part = sum(d / t for d, t in self.active.values() if t)
        return min(1.0, (self.samples_done + part) / max(self.samples_total, 1))

    def label(self) -> str:
        frames = ", ".join(f"{n}: frame {d}/{t or '?'}" for n, (d, t) in self.active.items())
        return f"{self.samples_done}/{self.samples_total} samples" + (f" - {frames}" if frames else "")


@dataclass
class RunSummary:
    samples: int
    tracks: int
    classes: list[str]
    label_field: str
    model: str


def check_media(paths: list[str], frame_stride: int) -> None:
    """Open every sample's media before the first write: unreadable files fail the run up front.

    Opening decodes one frame and counts frames, so this costs little next to the segmentation.
    """
    from ..video import open_video

    for path in paths:
        try:
            with open_video(path, frame_stride=frame_stride):
                pass
        except InputError as e:
            raise InputError(f"sample {path}: {e}") from None


def iter_label_samples(dataset, ids: list[str], paths: list[str], spec: RunSpec,
                       should_stop: Callable[[], bool] | None = None) -> Iterator[RunProgress]:
    """Yield progress while the samples are segmented; each sample is written when its job ends.

    Returns (``StopIteration.value``) the ``RunSummary``. ``should_stop()`` cancels the remaining
    jobs and raises ``JobCancelled``; a failed job cancels the others and raises its error.
    Samples written before a failure or a cancel keep their new labels.
    """
    from ..export.fiftyone import tracks_to_labels, write_sample
    from ..jobs import JobCancelled, submit

    check_media(paths, spec.frame_stride)
    names = {i: p.rsplit("/", 1)[-1] for i, p in zip(ids, paths)}
    # All jobs at once: Celery spreads them over its workers; the local runner takes them in order.
    pending = {i: submit(spec.job_spec(p)) for i, p in zip(ids, paths)}
    progress = RunProgress(0, len(ids))
    classes, model = set(), ""
    try:
        while pending:
            if should_stop is not None and should_stop():
                raise JobCancelled("the run was cancelled")
            progress.active = {}
            for sample_id, handle in list(pending.items()):
                st = handle.status()
                if not st.done:
                    if st.state in ("STARTED", "PROGRESS"):
                        progress.active[names[sample_id]] = (st.frames_done, st.frames_total or 0)
                    continue
                tracks = handle.wait()  # raises the job's own error (InputError, JobCancelled...)
                del pending[sample_id]
                labels = tracks_to_labels(tracks, spec.score_threshold, spec.max_tracks, spec.store_masks)
                write_sample(dataset[sample_id], labels, spec.label_field)
                progress.samples_done += 1
                progress.tracks += labels.num_tracks
                classes.update(labels.classes)
                model = tracks.model or model
            yield progress
            if pending:
                time.sleep(POLL_S)
    finally:
        for handle in pending.values():  # failure, cancel or an abandoned generator: stop the rest
            handle.cancel()
    record_field(dataset, spec, model, progress)
    return RunSummary(samples=len(ids), tracks=progress.tracks, classes=sorted(classes),
                      label_field=spec.label_field, model=model)


def label_samples(dataset, ids, paths, spec: RunSpec, progress: Callable[[RunProgress], None] | None = None,
                  should_stop: Callable[[], bool] | None = None) -> RunSummary:
    """``iter_label_samples`` run to the end, ``progress`` called with each update."""
    it = iter_label_samples(dataset, ids, paths, spec, should_stop)
    while True:
        try:
            p = next(it)
        except StopIteration as stop:
            return stop.value
        if progress is not None:
            progress(p)


def record_field(dataset, spec: RunSpec, model: str, progress: RunProgress) -> None:
    """Keep what produced the field in ``dataset.info["clipvis_runs"]`` (model version, vocabulary, options)."""
    from ..export.fiftyone import summary_field

    dataset.reload()  # another process (the App, a worker) may have changed info since we loaded it
    runs = dict(dataset.info.get("clipvis_runs", {}))
    runs[spec.label_field] = {
        "model": model,
        "checkpoint": spec.checkpoint,
        "adapter": spec.adapter,
        "vocabulary": list(spec.vocabulary),
        "score_threshold": spec.score_threshold,
        "max_tracks": spec.max_tracks,
        "frame_stride": spec.frame_stride,
        "precision": spec.precision,
        "masks": spec.store_masks,
        "summary_field": summary_field(spec.label_field),
        "samples": progress.samples_done,
        "tracks": progress.tracks,
    }
    dataset.info["clipvis_runs"] = runs
    dataset.save()
