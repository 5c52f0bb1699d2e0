"""Training as a job: in-process without a broker, and on a real Celery worker's train queue (real Redis)."""
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import redis

from clipvis_core.jobs import JobCancelled, JobHandle, JobSettings, JobSpec, submit
from clipvis_core.jobs.training import TrainJobSpec, submit_train
from clipvis_core.training import checkpointing as ckpt
from clipvis_core.training.metrics import read_metrics
from clipvis_core.weights import load_model, resolve_checkpoint
from shapes_data import write_ytvis
from train_helpers import random_tiny_card, small_config
from videogen import make_video

pytestmark = pytest.mark.training
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("jobs")
    return {"train": str(write_ytvis(root, 4, seed=7, name="train")), "card": str(random_tiny_card(root)),
            "config": small_config(checkpoint_period=1).to_dict()}


def _spec(data, out, steps, resume=False):
    return TrainJobSpec(data=[data["train"]], init=data["card"], output=str(out), steps=steps, config=data["config"],
                        resume=resume)


def _until(handle, cond, timeout=300):
    deadline = time.monotonic() + timeout
    while not cond(st := handle.status()):
        assert not st.done or cond(st), st
        assert time.monotonic() < deadline, st
        time.sleep(0.05)
    return st


def test_in_process_job_progress_cancel_resume(data, tmp_path, monkeypatch):
    monkeypatch.delenv("CLIPVIS_BROKER_URL", raising=False)
    monkeypatch.setenv("CLIPVIS_RESULTS_DIR", str(tmp_path / "results"))
    monkeypatch.setenv("CLIPVIS_PROGRESS_INTERVAL", "0")
    out = tmp_path / "run"
    h = submit_train(_spec(data, out, 200))
    st = _until(h, lambda s: s.state == "PROGRESS" and s.step >= 2)
    assert st.steps_total == 200 and st.loss > 0 and st.fps > 0
    assert submit_train(_spec(data, out, 200)).id == h.id  # one live job per output directory
    # Another process sees the same status through the results store.
    other = JobHandle.from_id(h.id, JobSettings.from_env())
    assert other.status().state in ("PROGRESS", "REVOKED")
    h.cancel()
    with pytest.raises(JobCancelled, match="resume"):
        h.wait(timeout=120)
    stopped = int(ckpt.load_training_checkpoint(ckpt.latest_checkpoint(out))["trainer"]["steps_done"])
    assert 2 <= stopped < 200
    resumed = submit_train(_spec(data, out, stopped + 2, resume=True))
    card = resumed.wait(timeout=300)
    assert card == out / "model_card.json"
    assert [r["step"] for r in read_metrics(out)] == list(range(1, stopped + 3))
    load_model(resolve_checkpoint(str(card)))  # strict
    # The trained card is a checkpoint for segmentation jobs too.
    video = make_video(tmp_path / "clip.mp4", num_frames=3, height=64, width=64)
    tracks = submit(JobSpec(media=str(video), vocabulary=["object"], checkpoint=str(card))).wait(timeout=300)
    assert tracks.video.num_frames == 3 and tracks.model.startswith("run@")


def test_submit_train_cli_in_process(data, tmp_path):
    """`clipvis submit train` without a broker runs here, prints the id, waits and prints the card."""
    env = {**os.environ, "CLIPVIS_RESULTS_DIR": str(tmp_path / "results")}
    env.pop("CLIPVIS_BROKER_URL", None)
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps(data["config"]))
    proc = subprocess.run([sys.executable, "-m", "clipvis_core", "submit", "train", "--data", data["train"], "--init",
                           data["card"], "--output", str(tmp_path / "run"), "--steps", "2", "--config", str(cfg)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    job_id, card = proc.stdout.split()
    assert Path(card) == tmp_path / "run" / "model_card.json" and Path(card).is_file()
    status = subprocess.run([sys.executable, "-m", "clipvis_core", "jobs", "status", job_id, "--json"], env=env,
                            capture_output=True, text=True, timeout=120)
    assert json.loads(status.stdout)["state"] == "SUCCESS" and json.loads(status.stdout)["result"] == card


@pytest.fixture
def celery_env(tmp_path, monkeypatch):
    run = uuid.uuid4().hex[:8]
    url = "redis://127.0.0.1:6379/13"
    redis.Redis.from_url(url).ping()  # fails (never skips) when Redis is not running: scripts/start_redis.sh
    env = {"CLIPVIS_BROKER_URL": url, "CLIPVIS_RESULT_BACKEND": url, "CLIPVIS_RESULTS_DIR": str(tmp_path / "results"),
           "CLIPVIS_REDIS_PREFIX": f"clipvis-train-test-{run}", "CLIPVIS_QUEUE": f"clipvis-train-test-{run}",
           "CLIPVIS_PROGRESS_INTERVAL": "0", "CLIPVIS_DEVICE": "cpu"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    log = tmp_path / "worker.log"
    settings = JobSettings.from_env()
    cmd = [sys.executable, "-m", "clipvis_core", "worker", "--pool", "solo", "--queues", settings.queue_for("train"),
           "--hostname", f"train-{run}@%h"]
    with open(log, "wb") as f:
        proc = subprocess.Popen(cmd, env={**os.environ, **env}, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        deadline = time.monotonic() + 120
        while " ready." not in log.read_text(errors="replace"):
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text(errors="replace")[-3000:]
            time.sleep(0.2)
        yield settings
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_celery_train_queue_progress_cancel_resume(data, tmp_path, celery_env):
    out = tmp_path / "run"
    h = submit_train(_spec(data, out, 200), celery_env)
    st = _until(h, lambda s: s.state == "PROGRESS" and s.step >= 2)
    assert st.steps_total == 200 and st.loss > 0
    h.cancel()
    with pytest.raises(JobCancelled):
        h.wait(timeout=120)
    stopped = int(ckpt.load_training_checkpoint(ckpt.latest_checkpoint(out))["trainer"]["steps_done"])
    assert 2 <= stopped < 200
    card = submit_train(_spec(data, out, stopped + 1, resume=True), celery_env).wait(timeout=300)
    assert card == out / "model_card.json"
    assert [r["step"] for r in read_metrics(out)] == list(range(1, stopped + 2))
