"""Run one sample's media through the job layer.

``CLIPVIS_BROKER_URL`` set: the job goes to the Celery workers and is polled for progress; unset:
it runs here, synchronously. Either way results are content-addressed, so re-running an operator
on unchanged media with the same settings reuses the stored tracks.
"""
from __future__ import annotations

import time
from typing import Callable

from clipvis_core.tracks import VideoTracks

from .params import SegmentRequest

# progress(frames_done, frames_total)
FrameProgress = Callable[[int, int], None]
POLL_S = 0.5


def job_spec(path: str, req: SegmentRequest):
    from clipvis_core.jobs import JobSpec

    return JobSpec(media=path, vocabulary=list(req.vocabulary.entries), checkpoint=req.checkpoint,
                   options={"frame_stride": req.frame_stride, "score_threshold": req.score_threshold,
                            "precision": req.precision},  # fp32 is the default: not part of the job key
                   adapter=req.adapter)


def segment_media(path: str, req: SegmentRequest, progress: FrameProgress | None = None) -> VideoTracks:
    """Tracks of one video (an image is a one-frame video) for the request's vocabulary and checkpoint."""
    from clipvis_core.jobs import JobSettings, run_job, submit

    spec = job_spec(path, req)
    settings = JobSettings.from_env()
    report = progress or (lambda done, total: None)
    if not settings.distributed:
        return run_job(spec, lambda p: report(p.frames_done, p.frames_total), settings=settings)
    handle = submit(spec, settings=settings)
    while not (st := handle.status()).done:
        report(st.frames_done, st.frames_total or 0)
        time.sleep(POLL_S)
    return handle.wait()
