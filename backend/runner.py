"""Tasks -> clipvis jobs: fetch the media (guarded), look the result up, else submit and wait.

Each (media URL, vocabulary, options) request becomes one ``Future`` in a per-process pool, shared
by every caller asking for the same thing at the same time (20 concurrent ``/predict`` calls for
one task start one job). Computation itself is the job layer's: in-process by default, Celery
workers when ``CLIPVIS_BROKER_URL`` is set; results live in its content-addressed store.
"""
from __future__ import annotations

import json
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from clipvis_core.jobs import JobSpec, lookup, submit
from clipvis_core.tracks import VideoTracks
from clipvis_core.video import open_video

from .media import MediaFetcher

POOL_THREADS = 16  # threads mostly wait (downloads, job polling); inference runs in the job layer

_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_inflight: dict[tuple, Future] = {}


@dataclass(frozen=True)
class Request:
    media_url: str
    kind: str  # "video" or "image"
    prompts: tuple[str, ...]
    checkpoint: str
    options: tuple[tuple[str, object], ...] = ()
    adapter: str | None = None  # classifier adapter file

    @property
    def ident(self) -> tuple:
        return (self.media_url, self.prompts, self.checkpoint, json.dumps(self.options, default=str), self.adapter)


@dataclass(frozen=True)
class Outcome:
    tracks: VideoTracks
    media_path: Path
    frames_count: int  # frames of the whole source video (1 for an image)


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _lock:
        if _pool is None:  # created on first use: importing this module starts nothing
            _pool = ThreadPoolExecutor(max_workers=POOL_THREADS, thread_name_prefix="clipvis-ls")
        return _pool


def start(request: Request, fetcher: MediaFetcher) -> Future:
    """A future of ``Outcome`` for ``request`` (the running one if an identical request is in flight).

    Media that is already local with its result in the store comes back as a finished future,
    so ``/predict`` answers stored results at once whatever its budget."""
    path = fetcher.fetch(request.media_url, _suffix(request), download=False)  # refusals raise here
    if path is not None:
        tracks = lookup(_spec(request, path))
        if tracks is not None:
            done: Future = Future()
            done.set_result(_outcome(request, path, tracks))
            return done
    pool = _executor()
    ident = (fetcher.ls_url,) + request.ident  # relative URLs mean different files on other hosts
    with _lock:
        running = _inflight.get(ident)
        if running is not None:
            return running
        fut = pool.submit(_produce, request, fetcher)
        _inflight[ident] = fut
    # Finished results live in the job store; dropping the future keeps memory flat.
    fut.add_done_callback(lambda f: _forget(ident, f))
    return fut


def _forget(ident: tuple, fut: Future) -> None:
    with _lock:
        if _inflight.get(ident) is fut:
            del _inflight[ident]


def _suffix(request: Request) -> str:
    return ".mp4" if request.kind == "video" else ".jpg"


def _spec(request: Request, path: Path) -> JobSpec:
    return JobSpec(media=str(path), vocabulary=list(request.prompts), checkpoint=request.checkpoint,
                   options=dict(request.options), adapter=request.adapter)


def _produce(request: Request, fetcher: MediaFetcher) -> Outcome:
    path = fetcher.fetch(request.media_url, _suffix(request))
    spec = _spec(request, path)
    tracks = lookup(spec)
    if tracks is None:
        tracks = submit(spec).wait()
    return _outcome(request, path, tracks)


def _outcome(request: Request, path: Path, tracks: VideoTracks) -> Outcome:
    info = tracks.video
    frames = info.num_frames
    if request.kind == "video" and info.frame_indices and info.frame_indices != list(range(info.num_frames)):
        # A strided run skipped frames: count the source once (a demux pass, no colour conversion).
        frames = open_video(path).source_frame_count or info.frame_indices[-1] + 1
    return Outcome(tracks, path, frames)
