"""Job-layer figures on loopback Redis with real `clipvis worker` processes (prints, asserts nothing).

1. submit-to-start overhead: time from ``submit()`` to the task body starting on a warm worker,
   and the whole round trip minus the worker's own run time (tiny 2-frame jobs, one at a time);
2. throughput on N short clips: 1 worker vs 2 workers, each worker with --threads torch threads
   (default 1: on a small CPU box more threads per worker mostly fight each other).

    .venv/bin/python benchmarks/bench_jobs.py --checkpoint CARD.json [--clips 50]

Needs Redis on 127.0.0.1:6379 (scripts/start_redis.sh); uses Redis db 11 and a temp results store.
"""
from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # videogen: real moving-shape videos

VOCAB = ["car, automobile", "person", "ball"]


def start_workers(n: int, env: dict, checkpoint: str, threads: int, logdir: Path) -> list[subprocess.Popen]:
    procs = []
    for i in range(n):
        log = logdir / f"worker{i}-{uuid.uuid4().hex[:6]}.log"
        wenv = {**env, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        cmd = [sys.executable, "-m", "clipvis_core", "worker", "--pool", "solo", "--warmup", checkpoint,
               "--hostname", f"bench{i}-{uuid.uuid4().hex[:6]}@%h", "--loglevel", "info"]
        procs.append(subprocess.Popen(cmd, env=wenv, stdout=open(log, "wb"), stderr=subprocess.STDOUT, cwd=ROOT))
        procs[-1].log = log  # type: ignore[attr-defined]
    for p in procs:
        deadline = time.monotonic() + 180
        while " ready." not in p.log.read_text(errors="replace"):  # type: ignore[attr-defined]
            if p.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"worker did not start:\n{p.log.read_text()[-2000:]}")  # type: ignore[attr-defined]
            time.sleep(0.2)
    return procs


def stop_workers(procs) -> None:
    for p in procs:
        p.send_signal(signal.SIGTERM)
    for p in procs:
        p.wait(30)


def configure(run: str, base: Path, url: str) -> dict:
    env = {"CLIPVIS_BROKER_URL": url, "CLIPVIS_RESULTS_DIR": str(base / f"results-{run}"),
           "CLIPVIS_REDIS_PREFIX": f"clipvis-bench-{run}", "CLIPVIS_QUEUE": f"clipvis-bench-{run}",
           "CLIPVIS_CACHE_DIR": str(base / "cache"), "CLIPVIS_DEVICE": os.environ.get("CLIPVIS_DEVICE", "auto")}
    os.environ.update(env)
    return {**os.environ, **env}


def wait_result(handle, poll: float = 0.002) -> None:
    while not handle.status().done:
        time.sleep(poll)
    handle.wait(timeout=0)


def bench_overhead(args, base: Path, url: str, clip: Path) -> None:
    from celery.result import AsyncResult

    from clipvis_core.jobs import JobSpec, submit
    from clipvis_core.jobs.celery_app import get_app

    env = configure(uuid.uuid4().hex[:8], base, url)
    procs = start_workers(1, env, args.checkpoint, args.threads, base)
    try:
        # One untimed job builds the text classifier of the vocabulary in the worker.
        wait_result(submit(JobSpec(str(clip), VOCAB, args.checkpoint, {"min_size": 0, "score_threshold": 0.5})))
        to_start, round_trip, run_time = [], [], []
        for i in range(args.overhead_jobs):
            spec = JobSpec(str(clip), VOCAB, args.checkpoint, {"min_size": 0, "score_threshold": 1e-6 * (i + 1)})
            spec.key()  # hashing the media is the caller's cost, not the queue's
            t0 = time.time()
            handle = submit(spec)
            wait_result(handle)
            t1 = time.time()
            meta = AsyncResult(handle.id, app=get_app()).get(timeout=60)  # the task returns just after the store write
            to_start.append(meta["started_at"] - t0)
            run_time.append(meta["seconds"])
            round_trip.append(t1 - t0 - meta["seconds"])
        t0 = time.perf_counter()
        for _ in range(20):
            submit(spec).wait()  # stored: answered from the store, nothing queued
        hit = (time.perf_counter() - t0) / 20
    finally:
        stop_workers(procs)
    ms = lambda xs: f"median {1000 * statistics.median(xs):.1f} ms, p90 {1000 * sorted(xs)[int(0.9 * len(xs))]:.1f} ms"  # noqa: E731
    print(f"submit -> task start ({args.overhead_jobs} jobs, warm worker, loopback Redis): {ms(to_start)}")
    print(f"round trip minus run time (submit, queue, lock, store write, result, client poll): {ms(round_trip)}")
    print(f"  (worker run time of the 2-frame job itself: {ms(run_time)})")
    print(f"submit of an already stored spec: {1000 * hit:.2f} ms")


def bench_throughput(args, base: Path, url: str, clips: list[Path]) -> None:
    from clipvis_core.jobs import JobSpec, submit

    results = {}
    for workers in (1, 2):
        env = configure(uuid.uuid4().hex[:8], base, url)  # fresh store and prefix: nothing is cached
        procs = start_workers(workers, env, args.checkpoint, args.threads, base)
        try:
            # Untimed: each worker builds (or loads) the vocabulary's text classifier once.
            warm = [submit(JobSpec(str(clips[0]), VOCAB, args.checkpoint, {"min_size": 0, "score_threshold": 0.9 + i / 100}))
                    for i in range(workers)]
            for h in warm:
                wait_result(h, 0.05)
            t0 = time.perf_counter()
            handles = [submit(JobSpec(str(c), VOCAB, args.checkpoint, {"min_size": 0})) for c in clips]
            for h in handles:
                wait_result(h, 0.05)
            elapsed = time.perf_counter() - t0
        finally:
            stop_workers(procs)
        results[workers] = elapsed
        frames = len(clips) * args.frames
        print(f"{workers} worker(s) x {args.threads} thread(s): {len(clips)} clips in {elapsed:.1f} s = "
              f"{len(clips) / elapsed:.2f} clips/s, {frames / elapsed:.1f} frames/s")
    load = os.getloadavg()[0]
    print(f"speed-up 2 workers vs 1: {results[1] / results[2]:.2f}x (machine: {os.cpu_count()} cores, load average {load:.1f})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True, help="model name / card (the tiny test card is fine)")
    ap.add_argument("--clips", type=int, default=50)
    ap.add_argument("--frames", type=int, default=8, help="frames per short clip")
    ap.add_argument("--size", default="96x128", help="HxW of the clips")
    ap.add_argument("--overhead-jobs", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per worker (default 1)")
    ap.add_argument("--redis-db", type=int, default=11)
    args = ap.parse_args()

    import redis
    from videogen import make_video

    url = f"redis://127.0.0.1:6379/{args.redis_db}"
    redis.Redis.from_url(url).ping()
    h, w = (int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory(prefix="clipvis-bench-") as tmp:
        base = Path(tmp)
        tiny = make_video(base / "tiny.mp4", 2, h, w)
        clips = [make_video(base / f"clip{i:03d}.mp4", args.frames, h, w, seed=i) for i in range(args.clips)]
        print(f"clips: {args.clips} x {args.frames} frames {h}x{w}; checkpoint {args.checkpoint}")
        bench_overhead(args, base, url, tiny)
        bench_throughput(args, base, url, clips)


if __name__ == "__main__":
    main()
