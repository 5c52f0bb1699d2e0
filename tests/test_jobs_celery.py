"""The job layer against a real Redis (127.0.0.1:6379) and real `clipvis worker` (Celery) processes.

Two solo-pool workers are shared by the module; each run uses its own queue, Redis key prefix
and results store. A short visibility timeout makes a SIGKILLed worker's job come back in seconds.
"""
import dataclasses
import http.server
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
import redis
from videogen import make_video

from clipvis_core.cli import main
from clipvis_core.errors import InputError
from clipvis_core.jobs import JobCancelled, JobHandle, JobSettings, JobSpec, run_job, submit

pytestmark = pytest.mark.e2e

REDIS_DB = int(os.environ.get("CLIPVIS_TEST_REDIS_DB", "12"))  # a db of its own: kombu's unacked index is per db
VOCAB = ["car, automobile", "person", "ball"]
OPTS = {"min_size": 0}
ROOT = Path(__file__).resolve().parents[1]


def purge_keys(url: str, prefix: str) -> None:
    """Drop a test's Redis keys: its queues, records and kombu's bindings (names start with ``prefix``)."""
    r = redis.Redis.from_url(url)
    for pattern in (f"{prefix}*", f"_kombu.binding.{prefix}*"):
        for k in r.scan_iter(pattern):
            r.delete(k)


class Worker:
    def __init__(self, name: str, env: dict, log: Path, card: Path):
        self.name, self.log = name, log
        cmd = [sys.executable, "-m", "clipvis_core", "worker", "--pool", "solo", "--hostname", f"{name}@%h",
               "--warmup", str(card), "--loglevel", "info"]
        with open(log, "wb") as f:
            self.proc = subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while " ready." not in self.text():
            assert self.proc.poll() is None, f"worker {self.name} exited:\n{self.text()[-3000:]}"
            assert time.monotonic() < deadline, f"worker {self.name} not ready after {timeout}s:\n{self.text()[-3000:]}"
            time.sleep(0.2)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, tiny_card):
    """Environment + two running workers; yields (settings, workers)."""
    run = uuid.uuid4().hex[:8]
    base = tmp_path_factory.mktemp("celery")
    url = f"redis://127.0.0.1:6379/{REDIS_DB}"
    redis.Redis.from_url(url).ping()  # fails (never skips) when Redis is not running: scripts/start_redis.sh
    env_vars = {
        "CLIPVIS_BROKER_URL": url, "CLIPVIS_RESULT_BACKEND": url, "CLIPVIS_RESULTS_DIR": str(base / "results"),
        "CLIPVIS_CACHE_DIR": str(base / "cache"), "CLIPVIS_REDIS_PREFIX": f"clipvis-test-{run}",
        "CLIPVIS_QUEUE": f"clipvis-test-{run}", "CLIPVIS_VISIBILITY_TIMEOUT": "4", "CLIPVIS_LOCK_TTL": "3",
        "CLIPVIS_PROGRESS_INTERVAL": "0.1", "CLIPVIS_DEVICE": "cpu", "CLIPVIS_RETRY_BACKOFF": "0.5",
    }
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env_vars.items():
            mp.setenv(k, v)
        env = {**os.environ, **env_vars}
        workers = [Worker(f"w{i}-{run}", env, base / f"w{i}.log", tiny_card) for i in range(2)]
        try:
            for w in workers:
                w.wait_ready()
            yield JobSettings.from_env(), workers
        finally:
            for w in workers:
                w.stop()
            purge_keys(url, f"clipvis-test-{run}")


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    d = tmp_path_factory.mktemp("media")
    bad = d / "corrupt.mp4"
    bad.write_bytes(os.urandom(20000))
    # long: progress is seen mid-job; long2: cancelled early; long3: its worker is killed early.
    return {"short": make_video(d / "short.mp4", 8), "long": make_video(d / "long.mp4", 60, height=240, width=320, seed=1),
            "long2": make_video(d / "long2.mp4", 120, seed=2), "long3": make_video(d / "long3.mp4", 80, seed=3),
            "corrupt": bad}


def count(workers, needle: str) -> int:
    return sum(w.text().count(needle) for w in workers)


def wait_for(pred, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not (v := pred()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return v


def test_worker_result_equals_in_process_result(cluster, media, tiny_card, tmp_path):
    settings, workers = cluster
    spec = JobSpec(str(media["short"]), VOCAB, str(tiny_card), OPTS)
    handle = submit(spec)
    remote = handle.wait(timeout=120)
    local_settings = dataclasses.replace(settings, broker_url=None, result_backend=None, results_dir=tmp_path)
    local = run_job(JobSpec(str(media["short"]), VOCAB, str(tiny_card), OPTS), settings=local_settings)
    assert remote.to_dict() == local.to_dict() and len(remote.tracks) > 0
    assert (settings.results_dir / f"{spec.key()}.json").exists()
    assert JobHandle.from_id(handle.id).status().state == "SUCCESS"


def test_progress_is_observable_and_duplicates_execute_once(cluster, media, tiny_card):
    settings, workers = cluster
    make = lambda: JobSpec(str(media["long"]), VOCAB, str(tiny_card), OPTS)  # noqa: E731
    handles = []
    threads = [threading.Thread(target=lambda: handles.append(submit(make()))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # A fourth submission from another process while the job runs (started now: its imports take seconds).
    cli = subprocess.Popen([sys.executable, "-m", "clipvis_core", "submit", str(media["long"]), "--checkpoint",
                            str(tiny_card), *sum((["--class", c] for c in VOCAB), []), "--min-size", "0"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    handle = handles[0]
    running = wait_for(lambda: (s := handle.status()).state == "PROGRESS" and 0 < s.frames_done < s.frames_total and s,
                       120, "PROGRESS state")
    assert running.frames_total == 60 and running.fps > 0
    out, err = cli.communicate(timeout=120)
    assert cli.returncode == 0, err
    ids = {h.id for h in handles} | {out.strip()}
    assert len(ids) == 1
    handle.wait(timeout=180)
    assert count(workers, f"executing job key={handle.key}") == 1
    assert count(workers, f"executed job key={handle.key}") == 1


def test_corrupt_video_fails_fast_without_retry(cluster, media, tiny_card):
    settings, workers = cluster
    handle = submit(JobSpec(str(media["corrupt"]), VOCAB, str(tiny_card), OPTS))
    started = time.monotonic()
    with pytest.raises(InputError, match="corrupt"):
        handle.wait(timeout=60)
    assert time.monotonic() - started < 30
    st = handle.status()
    assert st.state == "FAILURE" and st.error_type == "InputError"
    time.sleep(1.0)  # a retry would be re-queued at once (countdown 5 s at most on the first one)
    assert count(workers, f"Task clipvis.segment[{handle.id}] received") == 1
    assert count(workers, f"Task clipvis.segment[{handle.id}] retry") == 0


class _FlakyHandler(http.server.SimpleHTTPRequestHandler):
    """HEAD always answers; the first GET of each file gets a 503 (a transient server error)."""

    failed: set = set()

    def do_GET(self):
        if self.path not in self.failed:
            self.failed.add(self.path)
            self.send_error(503)
            return
        super().do_GET()

    def log_message(self, *args):
        pass


def test_transient_failure_is_retried_with_backoff(cluster, media, tiny_card):
    settings, workers = cluster
    handler = lambda *a, **kw: _FlakyHandler(*a, directory=str(media["short"].parent), **kw)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/short.mp4"
        handle = submit(JobSpec(url, VOCAB, str(tiny_card), OPTS))
        tracks = handle.wait(timeout=120)
    finally:
        server.shutdown()
    assert tracks.video.source == url and tracks.video.num_frames == 8
    assert count(workers, f"transient failure of job {handle.id} (ConnectionError") == 1
    assert count(workers, f"Task clipvis.segment[{handle.id}] retry") == 1


def test_cancel_revokes_a_running_job(cluster, media, tiny_card):
    settings, workers = cluster
    spec = JobSpec(str(media["long2"]), VOCAB, str(tiny_card), OPTS)
    handle = submit(spec)
    wait_for(lambda: handle.status().frames_done > 0, 120, "the job to start")
    cancelled_at = time.monotonic()
    assert main(["jobs", "cancel", handle.id]) == 0
    with pytest.raises(JobCancelled):
        handle.wait(timeout=60)
    assert handle.status().state == "REVOKED"
    # The running worker stops at its next progress report (after the current window of frames).
    wait_for(lambda: count(workers, f"cancelled job {handle.id}"), 30, "the worker to stop the job")
    assert time.monotonic() - cancelled_at < 30
    assert not (settings.results_dir / f"{spec.key()}.json").exists()
    assert count(workers, f"executed job key={spec.key()}") == 0
    # The spec can be submitted again afterwards: a new job, not the cancelled one.
    again = submit(JobSpec(str(media["long2"]), VOCAB, str(tiny_card), OPTS))
    assert again.id != handle.id
    again.cancel()


def test_sigkill_mid_job_is_finished_once_by_another_worker(cluster, media, tiny_card):
    settings, workers = cluster
    spec = JobSpec(str(media["long3"]), VOCAB, str(tiny_card), OPTS)
    handle = submit(spec)
    wait_for(lambda: handle.status().frames_done > 0, 120, "the job to start")
    victim = next(w for w in workers if f"executing job key={spec.key()}" in w.text())
    survivor = next(w for w in workers if w is not victim)
    victim.proc.send_signal(signal.SIGKILL)
    victim.proc.wait()
    assert not (settings.results_dir / f"{spec.key()}.json").exists()
    tracks = handle.wait(timeout=180)
    assert tracks.video.num_frames == 80
    assert survivor.text().count(f"executed job key={spec.key()}") == 1
    assert f"executed job key={spec.key()}" not in victim.text()
    assert handle.status().state == "SUCCESS"


def test_first_submissions_from_many_threads_all_get_the_app():
    """The Label Studio backend submits from 16 threads at once; celery's lazy top-level module
    once failed one of them with "cannot import name 'Celery'" (a task silently got no prediction).
    Each try is a fresh interpreter, where the first import happens."""
    code = ("import threading\n"
            "from clipvis_core.jobs.celery_app import get_app\n"
            "from clipvis_core.jobs.handle import JobHandle\n"
            "from clipvis_core.jobs.settings import JobSettings\n"
            "s = JobSettings.from_env(); errors = []\n"
            "def go(i):\n"
            "    try:\n"
            "        JobHandle('x', 'k', s).status() if i == 0 else get_app(s)\n"
            "    except Exception as e:\n"
            "        errors.append(repr(e))\n"
            "ts = [threading.Thread(target=go, args=(i,)) for i in range(16)]\n"
            "[t.start() for t in ts]; [t.join() for t in ts]\n"
            "assert not errors, errors[:2]\n")
    env = {**os.environ, "CLIPVIS_BROKER_URL": "redis://127.0.0.1:6379/12", "CLIPVIS_RESULT_BACKEND":
           "redis://127.0.0.1:6379/12"}
    for _ in range(12):  # the race hit about 3 tries in 10 before the fix
        proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr[-2000:]
