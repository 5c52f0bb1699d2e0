"""Resumable long jobs (clipvis_core/resume.py): a run interrupted mid-video continues from its last
checkpointed window and its output equals an uninterrupted run - in-process, and with a real Celery
worker SIGKILLed mid-video and a second worker finishing the job. Checkpoints stay bounded."""
from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import redis
from test_jobs_celery import ROOT, Worker, purge_keys, wait_for
from test_long_video import long_video

from clipvis_core.jobs import JobCancelled, JobSettings, JobSpec, JobTimeout, run_job, submit
from clipvis_core.resume import STATE, ResumeDir, sweep
from clipvis_core.segmenter import SegmentOptions, get_segmenter
from clipvis_core.tracks import VideoTracks

VOCAB = ["person", "car, automobile", "red ball", "green box"]
OPTS = {"min_size": 64, "window": 3}  # windows of 3: an interrupt lands inside a window


class Interrupted(Exception):
    """Stands for a lost worker: not a ClipvisError, so the checkpoint is kept."""


def local_settings(tmp_path: Path, interval: float | None = 0.0) -> JobSettings:
    s = JobSettings.from_env()
    return dataclasses.replace(s, broker_url=None, result_backend=None, results_dir=tmp_path / "results",
                               resume_dir=tmp_path / "results" / ".resume", resume_interval=interval)


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    return long_video(tmp_path_factory.mktemp("resume") / "v.avi", 60)


@pytest.fixture(scope="module")
def reference(video, tiny_card, tmp_path_factory):
    """The uninterrupted result (resume off)."""
    settings = local_settings(tmp_path_factory.mktemp("ref"), interval=None)
    return run_job(JobSpec(str(video), VOCAB, str(tiny_card), OPTS), settings=settings).to_dict()


def stop_at(frame: int, exc: type[BaseException]):
    def progress(p):
        if p.frames_done == frame:
            raise exc(f"stopped at frame {frame}")
    return progress


def test_interrupted_job_resumes_from_last_window_with_identical_output(video, tiny_card, reference, tmp_path, caplog):
    settings = local_settings(tmp_path)
    spec = JobSpec(str(video), VOCAB, str(tiny_card), OPTS)
    ckpt = settings.resume_dir / spec.key()
    with pytest.raises(Interrupted):
        run_job(spec, stop_at(32, Interrupted), settings=settings)  # frame 32 is inside window 30..32
    assert (ckpt / STATE).exists() and not (settings.results_dir / f"{spec.key()}.json").exists()
    starts = []
    with caplog.at_level("INFO", logger="clipvis.jobs"):
        result = run_job(JobSpec(str(video), VOCAB, str(tiny_card), OPTS), lambda p: starts.append(p.start_frame),
                         settings=settings)
    assert set(starts) == {30}  # the last finished window, not frame 0 (and not the unfinished 31, 32)
    assert len(starts) == 60 - 30 + 1  # only the remaining frames went through the network (+ the result)
    assert f"resumed job key={spec.key()} at frame 30 of 60" in caplog.text
    assert result.to_dict() == reference
    assert not ckpt.exists()  # removed on success


def test_resume_twice_and_after_the_last_window(video, tiny_card, reference, tmp_path):
    """Interrupted again after resuming, then lost during the final pass: still the same output."""
    seg = get_segmenter(str(tiny_card), device="cpu")
    opts = SegmentOptions.from_dict(OPTS)
    rd = tmp_path / "ck"
    for frame in (10, 45):
        with pytest.raises(Interrupted):
            seg.segment(str(video), VOCAB, opts, progress=stop_at(frame, Interrupted), resume=ResumeDir(rd, 0))

    class _Lost(Exception):
        pass

    def lost_in_final_pass(p):
        if p.result is not None:
            raise _Lost  # every frame was checkpointed, the result was never stored
    with pytest.raises(_Lost):
        seg.segment(str(video), VOCAB, opts, progress=lost_in_final_pass, resume=ResumeDir(rd, 0))
    rd_last = ResumeDir(rd, 0)
    again = seg.segment(str(video), VOCAB, opts, resume=rd_last)
    assert rd_last.stats.resumed_from == 60 and rd_last.stats.saves == 0
    assert again.to_dict() == reference


def test_other_inputs_or_damaged_state_start_over(video, tiny_card, tmp_path):
    seg = get_segmenter(str(tiny_card), device="cpu")
    opts = SegmentOptions.from_dict(OPTS)
    rd = tmp_path / "ck"
    with pytest.raises(Interrupted):
        seg.segment(str(video), VOCAB, opts, progress=stop_at(20, Interrupted), resume=ResumeDir(rd, 0))
    other = SegmentOptions.from_dict({**OPTS, "window": 4})  # other windows: other boundaries
    d = ResumeDir(rd, 0)
    want = seg.segment(str(video), VOCAB, other)
    assert seg.segment(str(video), VOCAB, other, resume=d).to_dict() == want.to_dict()
    assert d.stats.resumed_from == 0
    # A damaged state and a store file shorter than the state says: both start over.
    with pytest.raises(Interrupted):
        seg.segment(str(video), VOCAB, opts, progress=stop_at(20, Interrupted), resume=ResumeDir(rd, 0))
    (rd / "rles.bin").write_bytes(b"")
    d = ResumeDir(rd, 0)
    full = seg.segment(str(video), VOCAB, opts)
    assert seg.segment(str(video), VOCAB, opts, resume=d).to_dict() == full.to_dict() and d.stats.resumed_from == 0
    (rd / STATE).write_bytes(b"not a checkpoint")
    d = ResumeDir(rd, 0)
    assert seg.segment(str(video), VOCAB, opts, resume=d).to_dict() == full.to_dict() and d.stats.resumed_from == 0


def test_time_limit_keeps_the_checkpoint_cancel_removes_it(video, tiny_card, tmp_path):
    settings = local_settings(tmp_path)
    spec = JobSpec(str(video), VOCAB, str(tiny_card), OPTS)
    state = settings.resume_dir / spec.key() / STATE
    with pytest.raises(Interrupted):
        run_job(spec, stop_at(32, Interrupted), settings=settings)
    with pytest.raises(JobTimeout):
        run_job(spec, settings=dataclasses.replace(settings, time_limit=0.0))
    assert state.exists()  # a re-run with a larger limit continues from here
    with pytest.raises(JobCancelled):
        run_job(spec, should_stop=lambda: True, settings=settings)
    assert not state.parent.exists()


def test_sweep_removes_finished_and_old_checkpoints_only(tmp_path):
    root = tmp_path / "resume"
    for name in ("running", "old", "done", "current"):
        (root / name).mkdir(parents=True)
        (root / name / STATE).write_bytes(b"x")
    week = time.time() - 7 * 24 * 3600
    for name in ("old", "current"):
        for p in [root / name, root / name / STATE]:
            os.utime(p, (week, week))
    removed = sweep(root, max_age=24 * 3600, finished=lambda key: key == "done", keep="current")
    assert sorted(p.name for p in removed) == ["done", "old"]
    assert sorted(p.name for p in root.iterdir()) == ["current", "running"]


# -- a real Celery worker SIGKILLed mid-video, a second one finishing the job --------------------------
@pytest.mark.e2e
def test_sigkilled_worker_job_resumes_on_another_worker(tiny_card, tmp_path, monkeypatch):
    run = uuid.uuid4().hex[:8]
    url = "redis://127.0.0.1:6379/11"  # a db of its own (kombu's unacked index is per db)
    redis.Redis.from_url(url).ping()  # fails (never skips) when Redis is not running: scripts/start_redis.sh
    env_vars = {
        "CLIPVIS_BROKER_URL": url, "CLIPVIS_RESULT_BACKEND": url, "CLIPVIS_RESULTS_DIR": str(tmp_path / "results"),
        "CLIPVIS_CACHE_DIR": str(tmp_path / "cache"), "CLIPVIS_REDIS_PREFIX": f"clipvis-resume-{run}",
        "CLIPVIS_QUEUE": f"clipvis-resume-{run}", "CLIPVIS_VISIBILITY_TIMEOUT": "4", "CLIPVIS_LOCK_TTL": "3",
        "CLIPVIS_PROGRESS_INTERVAL": "0.1", "CLIPVIS_DEVICE": "cpu", "CLIPVIS_RESUME_INTERVAL": "0.2",
    }
    for k, v in env_vars.items():
        monkeypatch.setenv(k, v)
    env = {**os.environ, **env_vars}
    media = long_video(tmp_path / "long.avi", 200)
    spec = JobSpec(str(media), VOCAB, str(tiny_card), OPTS)
    settings = JobSettings.from_env()
    state = settings.resume_dir / spec.key() / STATE
    workers = [Worker(f"victim-{run}", env, tmp_path / "victim.log", tiny_card)]
    try:
        workers[0].wait_ready()
        handle = submit(spec)
        wait_for(lambda: state.exists() and handle.status().frames_done >= 24, 300, "a checkpoint mid-video")
        at_kill = handle.status().frames_done
        assert at_kill < 200, "the job ended before the kill: make the video longer"
        workers[0].proc.send_signal(signal.SIGKILL)
        workers[0].proc.wait()
        assert state.exists()  # the checkpoint survives the SIGKILL
        workers.append(Worker(f"survivor-{run}", env, tmp_path / "survivor.log", tiny_card))
        workers[1].wait_ready()
        tracks = handle.wait(timeout=600)
        log = workers[1].text()
        m = re.search(rf"resumed job key={spec.key()} at frame (\d+) of 200", log)
        assert m, log[-3000:]
        start = int(m.group(1))
        assert 0 < start < 200 and start % 3 == 0  # from a window boundary, not frame 0
        assert f"executed job key={spec.key()} frames=200" in log and "(resumed at frame" in log
        assert not state.parent.exists()  # removed on success
    finally:
        for w in workers:
            w.stop()
        purge_keys(url, f"clipvis-resume-{run}")
    # The uninterrupted reference runs in a fresh process, as the workers do: this long-lived test
    # process has run other modules' models, and its floats need not match a fresh worker's bit for bit.
    ref = tmp_path / "uninterrupted.json"
    code = ("import json, sys, dataclasses; from pathlib import Path\n"
            "from clipvis_core.jobs import JobSettings, JobSpec, run_job\n"
            "s = dataclasses.replace(JobSettings.from_env(), broker_url=None, result_backend=None,\n"
            "    results_dir=Path(sys.argv[1]) / 'results', resume_interval=None)\n"
            "t = run_job(JobSpec(sys.argv[2], json.loads(sys.argv[3]), sys.argv[4], json.loads(sys.argv[5])), settings=s)\n"
            "Path(sys.argv[6]).write_text(t.to_json())\n")
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "ref"), str(media), json.dumps(VOCAB), str(tiny_card),
                    json.dumps(OPTS), str(ref)], env=env, cwd=ROOT, check=True, timeout=600)
    local = VideoTracks.from_json(ref.read_text())
    assert tracks.to_dict() == local.to_dict() and len(local.tracks) > 0
