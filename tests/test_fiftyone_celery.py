"""The segment operator with the job layer configured for Celery: a real `clipvis worker` process
on Redis (127.0.0.1:6379) computes the tracks, the operator polls and writes them."""
from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid

import pytest

from test_fiftyone_env import (  # noqa: F401  (fixtures)
    ROOT, fo_session, make_video_dataset, run_op, small_card, videos,
)
from test_fiftyone_plugin import CLASSES, check_video_labels

pytestmark = pytest.mark.e2e
REDIS_URL = "redis://127.0.0.1:6379/13"  # a db of its own


@pytest.fixture
def celery_env(fo_session, small_card, tmp_path, monkeypatch):
    import redis

    redis.Redis.from_url(REDIS_URL).ping()  # fails (never skips) without Redis: scripts/start_redis.sh
    run = uuid.uuid4().hex[:8]
    env = {"CLIPVIS_BROKER_URL": REDIS_URL, "CLIPVIS_RESULT_BACKEND": REDIS_URL,
           "CLIPVIS_RESULTS_DIR": str(tmp_path / "results"), "CLIPVIS_CACHE_DIR": str(tmp_path / "cache"),
           "CLIPVIS_REDIS_PREFIX": f"clipvis-fo-{run}", "CLIPVIS_QUEUE": f"clipvis-fo-{run}", "CLIPVIS_DEVICE": "cpu"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    log = tmp_path / "worker.log"
    with open(log, "wb") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "clipvis_core", "worker", "--pool", "solo", "--hostname", f"fo-{run}@%h",
             "--warmup", str(small_card)], env={**fo_session.env, **env}, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while " ready." not in log.read_text(errors="replace"):
            assert worker.poll() is None, f"worker exited:\n{log.read_text()[-2000:]}"
            assert time.monotonic() < deadline, "worker not ready after 120s"
            time.sleep(0.3)
        yield log
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(20)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
        r = redis.Redis.from_url(REDIS_URL)
        for pattern in (f"clipvis-fo-{run}*", f"_kombu.binding.clipvis-fo-{run}*"):
            for key in r.scan_iter(pattern):
                r.delete(key)


def test_segment_operator_runs_on_celery_workers(celery_env, videos, small_card):
    from clipvis_core.jobs import JobSettings, JobSpec, lookup

    dataset = make_video_dataset(f"clipvis-celery-{uuid.uuid4().hex[:8]}", videos, gt_field=None)
    try:
        run_op("segment_video_instances", dataset, dict(classes=CLASSES, checkpoint=str(small_card),
                                                        score_threshold=0.0, max_tracks=0, label_field="pred"))
        dataset.reload()
        assert dataset.info["clipvis_runs"]["pred"]["samples"] == 3
        worker_log = celery_env.read_text(errors="replace")
        assert worker_log.count("Task clipvis.segment[") >= 3 and worker_log.count("executed job") == 3, worker_log[-2000:]
        settings = JobSettings.from_env()
        for sample in dataset:
            spec = JobSpec(media=sample.filepath, vocabulary=["disc", "rectangle, box", "square"],
                           checkpoint=str(small_card), options={"frame_stride": 1, "score_threshold": 0.0})
            tracks = lookup(spec, settings)
            assert tracks is not None, "the worker did not store the result"
            check_video_labels(sample, "pred", tracks)

        # A background run with Celery configured: the clipvis worker submits every sample to the
        # Celery workers (new settings: new jobs) and writes each result.
        from clipvis_core.runs import get_run, list_runs

        run_op("segment_video_instances", dataset, dict(classes=CLASSES, checkpoint=str(small_card), score_threshold=0.05,
                                                        max_tracks=0, label_field="bg", run_mode="background"))
        rec = list_runs(str(dataset._doc.id), 1)[0]
        assert rec.backend == "celery"
        deadline = time.monotonic() + 240
        while not (rec := get_run(rec.id)).done:
            assert time.monotonic() < deadline, rec.describe()
            time.sleep(0.3)
        assert rec.state == "completed" and rec.samples_done == 3, rec.describe()
        assert celery_env.read_text(errors="replace").count("executed job") == 6  # the Celery worker computed them
        dataset.reload()
        assert all(s.bg_summary is not None for s in dataset)
    finally:
        dataset.delete()
