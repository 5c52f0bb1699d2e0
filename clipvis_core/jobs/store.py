"""The results store (``<results_dir>/<key>.json``) and the per-key execution locks.

Exactly-once: a job holds the lock of its key while it computes; whoever gets the lock next
finds the stored result and returns it without computing. Results are written atomically, so a
reader sees either nothing or the whole file. Redis locks carry a TTL renewed by a heartbeat:
a SIGKILLed worker's lock lapses after ``lock_ttl`` seconds and a redelivered job proceeds.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

from ..tracks import VideoTracks, write_atomic

log = logging.getLogger("clipvis.jobs")


class ResultStore:
    def __init__(self, root: Path):
        self.root = Path(root)

    def path(self, key: str) -> Path:
        return self.root / f"{key}.json"

    def get(self, key: str) -> VideoTracks | None:
        p = self.path(key)
        try:
            return VideoTracks.load(p)
        except FileNotFoundError:
            return None

    def has(self, key: str) -> bool:
        return self.path(key).exists()

    def put(self, key: str, tracks: VideoTracks) -> Path:
        return tracks.save(self.path(key))

    # In-process jobs keep their status here so another process (the CLI) can follow them.
    def status_path(self, job_id: str) -> Path:
        return self.root / ".jobs" / f"{job_id}.json"

    def write_status(self, job_id: str, status: dict) -> None:
        write_atomic(self.status_path(job_id), json.dumps(status))

    def read_status(self, job_id: str) -> dict | None:
        try:
            return json.loads(self.status_path(job_id).read_text())
        except (FileNotFoundError, ValueError):
            return None

    def cancel_path(self, job_id: str) -> Path:
        return self.root / ".jobs" / f"{job_id}.cancel"


@contextlib.contextmanager
def file_lock(store: ResultStore, key: str, ready: Callable[[], bool]) -> Iterator[bool]:
    """Exclusive flock on ``<results>/.locks/<key>.lock``; yields False if ``ready()`` became true
    while waiting (the result exists: nothing to compute)."""
    path = store.root / ".locks" / f"{key}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # released by the kernel if this process dies
        try:
            yield not ready()
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


class _Heartbeat(threading.Thread):
    """Extends a Redis lock every ttl/3 seconds while the job runs."""

    def __init__(self, lock):
        super().__init__(daemon=True, name="clipvis-lock-heartbeat")
        self.lock = lock
        self.stop = threading.Event()

    def run(self) -> None:
        import redis

        while not self.stop.wait(self.lock.timeout / 3):
            try:
                self.lock.reacquire()
            except redis.exceptions.LockNotOwnedError:
                # The TTL ran out between beats (process stalled): another worker may take the job.
                log.warning("lost execution lock %s; a duplicate run may start", self.lock.name)
                return
            except redis.exceptions.RedisError as e:  # Redis hiccup: the next beat tries again
                log.warning("could not extend execution lock %s: %s", self.lock.name, e)


@contextlib.contextmanager
def redis_lock(client, name: str, ttl: float, ready: Callable[[], bool], poll: float = 0.2) -> Iterator[bool]:
    """Redis lock (SET NX PX + heartbeat); yields False if ``ready()`` turned true while waiting."""
    lock = client.lock(name, timeout=ttl, thread_local=False)  # redis-py picks a unique token per acquire
    while not lock.acquire(blocking=False):
        if ready():
            yield False
            return
        time.sleep(poll)
    beat = _Heartbeat(lock)
    beat.start()
    try:
        yield not ready()
    finally:
        beat.stop.set()
        import redis

        with contextlib.suppress(redis.exceptions.RedisError):  # expired already: nothing to release
            lock.release()


def redis_client(url: str):
    import redis

    return redis.Redis.from_url(url, socket_timeout=30, socket_connect_timeout=10, health_check_interval=30)
