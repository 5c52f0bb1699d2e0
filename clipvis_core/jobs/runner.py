"""Run one job in this process: store lookup, execution lock, media fetch, segmentation, store write.

Both the in-process mode and the Celery task call ``run_job``; it is the only place that
computes, so the exactly-once rule lives here.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import time
from pathlib import Path
from typing import Callable

from ..errors import ClipvisError, InputError
from ..tracks import VideoTracks
from ..vocabulary import Vocabulary
from . import media as media_mod
from .settings import JobSettings
from .spec import JobSpec
from .store import ResultStore, file_lock, redis_client, redis_lock

log = logging.getLogger("clipvis.jobs")


class JobError(ClipvisError):
    """A job that did not produce a result (failed, cancelled, timed out)."""


class JobCancelled(JobError):
    pass


class JobTimeout(JobError):
    pass


def lookup(spec: JobSpec, settings: JobSettings | None = None) -> VideoTracks | None:
    """The stored result of ``spec``, or None; never computes."""
    settings = settings or JobSettings.from_env()
    return ResultStore(settings.results_dir).get(spec.key())


def run_job(spec: JobSpec, progress: Callable | None = None, *, should_stop: Callable[[], bool] | None = None,
            settings: JobSettings | None = None) -> VideoTracks:
    """Synchronously produce ``spec``'s result in this process, computing it at most once per key.

    ``progress(p)`` gets the segmenter's per-frame progress (``frames_done``, ``frames_total``,
    ``fps``); ``should_stop()`` is polled per frame and cancels the job when it returns True.
    """
    settings = settings or JobSettings.from_env()
    store = ResultStore(settings.results_dir)
    key = spec.key()
    hit = store.get(key)
    if hit is not None:
        return hit
    ready = lambda: store.has(key)  # noqa: E731
    if settings.redis_url:
        lock = redis_lock(redis_client(settings.redis_url), f"{settings.redis_prefix}:lock:{key}", settings.lock_ttl, ready)
    else:
        lock = file_lock(store, key, ready)
    with lock as must_compute:
        if not must_compute:
            return store.get(key)
        started = time.monotonic()
        log.info("executing job key=%s media=%s", key, spec.media)
        resume = _resume_dir(key, store, settings)
        try:
            tracks = _execute(spec, settings, progress, should_stop, resume)
        except BaseException as e:
            if resume is not None and _ends_resume(e):
                resume.remove()
            raise
        store.put(key, tracks)
        if resume is not None:
            resume.remove()
        log.info("executed job key=%s frames=%d tracks=%d in %.2fs%s", key, tracks.video.num_frames,
                 len(tracks.tracks), time.monotonic() - started,
                 f" (resumed at frame {resume.stats.resumed_from})" if resume is not None and resume.stats.resumed_from else "")
        return tracks


def _resume_dir(key: str, store: ResultStore, settings: JobSettings):
    """This job's checkpoint directory (None when resume is off); sweeps stale ones of other jobs first."""
    if settings.resume_interval is None:
        return None
    from ..resume import ResumeDir, sweep

    sweep(settings.resume_dir, settings.resume_max_age, finished=store.has, keep=key)
    return ResumeDir(settings.resume_dir / key, settings.resume_interval)


def _ends_resume(e: BaseException) -> bool:
    """Cancel and permanent errors end a job for good; a lost worker, a transient error or the time
    limit leave its checkpoint for the redelivery, retry or re-submission to resume from."""
    return isinstance(e, ClipvisError) and not isinstance(e, JobTimeout)


@contextlib.contextmanager
def _local_media(spec: JobSpec, settings: JobSettings):
    """Path of the media to read: the local path, or a temp download of the URL (removed after)."""
    if not spec.is_url:
        path = Path(spec.media).expanduser()
        if not path.exists():
            raise InputError(f"media not found: {spec.media} (is the results/media storage shared with this worker?)")
        yield path
        return
    path = media_mod.download(spec.media, spec.headers, settings.cache_dir / "downloads",
                              max_bytes=int(settings.max_download_mb * (1 << 20)))
    try:
        yield path
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)


def _is_cuda_oom(exc: BaseException) -> bool:
    import torch

    return isinstance(exc, torch.cuda.OutOfMemoryError)


def _fallbacks(options, seg) -> list:
    """The retries after a CUDA OOM, in order: one frame per forward at the same resolution (the
    outputs do not depend on the window), then also 3/4 of the resolution.

    Not half the window: on an H200, ConvNeXt-B fp32 at 480p took 2.7 GiB in windows of 10 and
    1.0 GiB in windows of 1, but 34 GiB in windows of 5 (cuDNN's workspace at that batch size).
    ``min_size=0`` (native frames) has no known size to shrink from: only the window retry is left.
    """
    from ..config import InferenceConfig

    inf = getattr(getattr(seg, "cfg", None), "inference", None) or InferenceConfig()
    out = [dataclasses.replace(options, window=1)] if (options.window or inf.window) > 1 else []
    min_size = inf.min_size if options.min_size is None else options.min_size
    if min_size:
        max_size = options.max_size or inf.max_size
        out.append(dataclasses.replace(options, window=1, min_size=max(32, int(min_size * 0.75)),
                                       max_size=max(32, int(max_size * 0.75))))
    return out


def _execute(spec: JobSpec, settings: JobSettings, progress, should_stop, resume=None) -> VideoTracks:
    from ..segmenter import SegmentOptions, get_segmenter

    deadline = time.monotonic() + settings.time_limit
    first = [True]

    def on_frame(p) -> None:
        if first[0] and p.start_frame:
            log.info("resumed job key=%s at frame %d of %d", spec.key(), p.start_frame, p.frames_total)
        first[0] = False
        # Cancel / time limit are checked between frames: works on every pool and in-process.
        if should_stop is not None and should_stop():
            raise JobCancelled(f"job for {spec.media} was cancelled")
        if time.monotonic() > deadline:
            raise JobTimeout(f"job for {spec.media} exceeded the time limit of {settings.time_limit:.0f}s "
                             "(raise CLIPVIS_JOB_TIME_LIMIT or use frame_stride/max_frames)")
        if progress is not None:
            progress(p)

    try:
        options = SegmentOptions.from_dict(spec.options)
    except TypeError as e:
        raise InputError(f"invalid inference options {spec.options}: {e}") from None
    vocabulary = Vocabulary.from_names(spec.vocabulary)
    seg = get_segmenter(spec.checkpoint, device=os.environ.get("CLIPVIS_DEVICE", "auto"))
    with _local_media(spec, settings) as source:
        if should_stop is not None and should_stop():
            raise JobCancelled(f"job for {spec.media} was cancelled")
        tracks, retries = None, _fallbacks(options, seg)
        while tracks is None:
            try:
                tracks = seg.segment(source, vocabulary, options, progress=on_frame, adapter=spec.adapter,
                                     resume=resume)
            except Exception as e:
                if not _is_cuda_oom(e) or not retries:
                    raise
                options = retries.pop(0)  # other options: the run starts over
                log.warning("CUDA out of memory on %s; retrying with window=%s min_size=%s", spec.media,
                            options.window, options.min_size)
                import torch

                torch.cuda.empty_cache()
    if spec.is_url:
        tracks.video.source = spec.media  # not the deleted temp download
    return tracks
