"""Resuming a long run after its process was lost, from the last checkpointed window.

A checkpointed run keeps its frame store as named files in its checkpoint directory (a job's is
``<results>/.resume/<job key>/``) instead of anonymous temp files. At a window boundary - at most
every ``interval`` seconds, and once after the last window - it fsyncs them and atomically
replaces ``state.pt`` (tmp + rename) with what the run continues from: the frames done, how long
each store file is valid, the temporal matcher's memory and the running score sums.

A re-run with the same inputs (same ``signature``) loads it, truncates the store files to the
recorded lengths (a window in flight when the process died is dropped), skips the frames done and
goes on. Every piece of state comes back bit for bit and windows keep their boundaries, so the
output equals an uninterrupted run. Other inputs, a damaged state or short files: start over.

The directory survives SIGKILL on purpose. It stays bounded: one per job key, removed when the
job ends (success, cancel, bad input), and ``sweep`` removes the ones of finished jobs and those
untouched for longer than a maximum age.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from .store import FrameStore, OutputGeometry, StoreMark, fsync_dir

log = logging.getLogger("clipvis.resume")

STATE = "state.pt"
_FORMAT = 1


def run_signature(**parts) -> str:
    """A digest of everything the output depends on (model, vocabulary, options, geometry, device)."""
    blob = json.dumps({"format": _FORMAT, **parts}, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()


@dataclass
class RunState:
    """What a resumed run continues from (``state.pt``)."""

    signature: str
    frames: int  # frames done; always a window boundary
    store: StoreMark
    matcher_frame: int
    matcher_memory: torch.Tensor | None  # [n <= T, Q, D] matched embeddings, oldest first
    score_frames: int
    obj_sum: torch.Tensor | None  # VideoScores' running sums, float32 as accumulated
    mask_iou_sum: torch.Tensor | None

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "store"}
        return {**d, "store": [self.store.frames, self.store.rles_end, self.store.bytes_written]}

    @classmethod
    def from_dict(cls, d: dict) -> "RunState":
        return cls(**{**d, "store": StoreMark(*d["store"])})


@dataclass
class CheckpointStats:
    """What checkpointing cost this run (``bench_long.py resume``)."""

    saves: int = 0
    state_bytes: int = 0  # state.pt bytes written, summed over saves
    seconds: float = 0.0  # flush + fsync + state write, summed
    resumed_from: int = 0  # frames restored at the start


class ResumeDir:
    """One run's checkpoint directory. ``begin`` -> ``open_store`` -> ``save`` ... -> ``remove``."""

    def __init__(self, directory: Path, interval: float = 10.0, sync: bool = True):
        self.dir = Path(directory)
        self.interval = interval
        self.sync = sync  # fsync store and state: survives a machine crash, not only a lost process
        self.signature: str | None = None
        self.stats = CheckpointStats()
        self._last = 0.0

    def begin(self, signature: str) -> RunState | None:
        """The state to resume from, or None (then any old state is removed before the store is reset)."""
        self.signature = signature
        self.dir.mkdir(parents=True, exist_ok=True)
        state = self._load()
        if state is None:
            (self.dir / STATE).unlink(missing_ok=True)  # never pair an old state with reset files
        else:
            self.stats.resumed_from = state.frames
        self._last = time.monotonic()
        return state

    def _load(self) -> RunState | None:
        path = self.dir / STATE
        if not path.exists():
            return None
        try:
            state = RunState.from_dict(torch.load(path, map_location="cpu", weights_only=True))
        except Exception as e:  # a damaged file is only a lost head start
            log.warning("ignoring unreadable checkpoint %s (%s: %s); starting over", path, type(e).__name__, e)
            return None
        if state.signature != self.signature:
            log.info("checkpoint %s is of other inputs; starting over", self.dir)
            return None
        return state

    def open_store(self, shapes: dict, geom: OutputGeometry, state: RunState | None) -> tuple[FrameStore, RunState | None]:
        """The run's store in this directory: continued from ``state``'s mark, else fresh (state None)."""
        if state is not None:
            try:
                return FrameStore(shapes, geom, directory=self.dir, resume=state.store), state
            except ValueError as e:  # files lost or short (a machine crash without fsync, a manual edit)
                log.warning("checkpoint %s does not match its store (%s); starting over", self.dir, e)
                (self.dir / STATE).unlink(missing_ok=True)
                self.stats.resumed_from = 0
        return FrameStore(shapes, geom, directory=self.dir), None

    def due(self) -> bool:
        return time.monotonic() - self._last >= self.interval

    def save(self, frames: int, store: FrameStore, matcher, scores) -> None:
        """Persist the state after ``frames`` frames (call at a window boundary)."""
        t0 = time.monotonic()
        mark = store.mark(sync=self.sync)
        m_frame, memory = matcher.state()
        state = RunState(self.signature, frames, mark, m_frame, memory, scores.frames,
                         _cpu(scores.obj_sum), _cpu(scores.mask_iou_sum))
        tmp = self.dir / f".{STATE}.{os.getpid()}.tmp"
        torch.save(state.to_dict(), tmp)
        if self.sync:
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        os.replace(tmp, self.dir / STATE)
        if self.sync:
            fsync_dir(self.dir)
        self._last = time.monotonic()
        self.stats.saves += 1
        self.stats.state_bytes += (self.dir / STATE).stat().st_size
        self.stats.seconds += self._last - t0

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def _cpu(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.detach().cpu()


def sweep(root: Path, max_age: float, finished: Callable[[str], bool], keep: str | None = None) -> list[Path]:
    """Remove checkpoint directories under ``root`` of finished jobs, or untouched for ``max_age`` s.

    ``keep``: the key about to run (its checkpoint is what it resumes from). A live run touches its
    state every checkpoint interval, far more often than any sensible ``max_age``.
    """
    removed = []
    try:
        entries = list(Path(root).iterdir())
    except FileNotFoundError:
        return removed
    now = time.time()
    for d in entries:
        if not d.is_dir() or d.name == keep:
            continue
        try:
            touched = max([d.stat().st_mtime, *(p.stat().st_mtime for p in d.iterdir())])
        except FileNotFoundError:  # removed meanwhile by its own run
            continue
        if finished(d.name) or now - touched > max_age:
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d)
    if removed:
        log.info("swept %d stale checkpoint(s) from %s", len(removed), root)
    return removed
