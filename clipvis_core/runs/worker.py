"""The local background worker: a process of its own that executes queued runs, one at a time.

``ensure_worker()`` starts it (detached, so it outlives the App request and is no thread of the
App server) unless one already serves this FiftyOne database; the live worker holds an flock on
``<cache>/runs/worker-<db>.lock``, which the kernel releases if it dies. It keeps its models
loaded between runs and exits after ``CLIPVIS_RUN_WORKER_IDLE`` seconds (default 600) without work.

    python -m clipvis_core.runs.worker      # what ensure_worker() starts; its log: worker-<db>.log
"""
from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

from ..errors import ClipvisError

log = logging.getLogger("clipvis.runs")
POLL_S = 0.5
PROGRESS_S = 0.5  # at most two record writes a second per run


def _paths() -> tuple[Path, Path]:
    import fiftyone as fo

    from ..jobs import JobSettings

    # One worker per database: tests and users may run several FiftyOne databases side by side.
    db = fo.config.database_uri or f"dir:{fo.config.database_dir}"
    tag = hashlib.sha256(db.encode()).hexdigest()[:12]
    root = JobSettings.from_env().cache_dir / "runs"
    root.mkdir(parents=True, exist_ok=True)
    return root / f"worker-{tag}.lock", root / f"worker-{tag}.log"


def worker_alive() -> bool:
    lock_path, _ = _paths()
    with open(lock_path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
        return False


def ensure_worker() -> Path:
    """Start the worker unless one is alive; returns its log file. A second worker started by a
    race finds the lock taken and exits at once."""
    lock_path, log_path = _paths()
    if not worker_alive():
        with open(log_path, "ab") as out:
            subprocess.Popen([sys.executable, "-m", "clipvis_core.runs.worker"], stdin=subprocess.DEVNULL, stdout=out,
                             stderr=subprocess.STDOUT, start_new_session=True, env=dict(os.environ))
    return log_path


def execute(rec) -> None:
    """Run one claimed record to its end state (completed, failed or cancelled)."""
    import fiftyone as fo

    from ..jobs import JobCancelled
    from . import records
    from .labeling import RunSpec, iter_label_samples

    try:
        if not fo.dataset_exists(rec.dataset_name):
            raise ClipvisError(f"dataset {rec.dataset_name!r} no longer exists")
        dataset = fo.load_dataset(rec.dataset_name)
        if str(dataset._doc.id) != rec.dataset_id:
            raise ClipvisError(f"dataset {rec.dataset_name!r} was replaced by another one of that name")
        found = dict(zip(*dataset.select(rec.sample_ids).values(["id", "filepath"])))
        ids = [i for i in rec.sample_ids if i in found]  # samples deleted since the run was queued are skipped
        last_check, stop = [0.0], [False]

        def should_stop() -> bool:
            if time.monotonic() - last_check[0] >= PROGRESS_S:
                last_check[0] = time.monotonic()
                stop[0] = records.cancel_requested(rec.id)
            return stop[0]

        last_write, done = 0.0, -1
        for p in iter_label_samples(dataset, ids, [found[i] for i in ids], RunSpec.from_dict(rec.spec), should_stop):
            if p.samples_done != done or time.monotonic() - last_write >= PROGRESS_S:
                last_write, done = time.monotonic(), p.samples_done
                active = [{"name": n, "frames_done": d, "frames_total": t} for n, (d, t) in p.active.items()]
                records.update_progress(rec.id, p.samples_done, p.tracks, active, p.fraction)
        records.finish(rec.id, "completed")
        log.info("run %s completed (%d samples)", rec.id, len(ids))
    except JobCancelled:
        records.finish(rec.id, "cancelled")
        log.info("run %s cancelled", rec.id)
    except ClipvisError as e:  # bad input, weights, a failed job: one line for the panel
        records.finish(rec.id, "failed", str(e))
        log.error("run %s failed: %s", rec.id, e)
    except Exception as e:
        records.finish(rec.id, "failed", f"{type(e).__name__}: {e}")
        log.exception("run %s failed", rec.id)


def serve(idle_timeout: float) -> None:
    from . import records

    records.fail_orphans()
    idle_since = time.monotonic()
    while True:
        rec = records.claim_next()
        if rec is None:
            if time.monotonic() - idle_since > idle_timeout:
                log.info("no run for %.0fs: exiting", idle_timeout)
                return
            time.sleep(POLL_S)
            continue
        log.info("run %s: %d samples of %s into %s", rec.id, rec.samples_total, rec.dataset_name, rec.label_field)
        execute(rec)
        idle_since = time.monotonic()


def main() -> int:
    from ..jobs.settings import env_float

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    lock_path, _ = _paths()
    lock = open(lock_path, "a+")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held for the life of this process
    except BlockingIOError:
        return 0  # another worker serves this database
    lock.seek(0)
    lock.truncate()
    lock.write(str(os.getpid()))
    lock.flush()
    log.info("clipvis run worker pid %d", os.getpid())
    serve(env_float("CLIPVIS_RUN_WORKER_IDLE", 600.0))
    return 0


if __name__ == "__main__":
    sys.exit(main())
