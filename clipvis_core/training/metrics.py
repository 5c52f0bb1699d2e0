"""Training metrics: ``DIR/metrics.json`` (one JSON object per line, detectron2's file name) and
TensorBoard scalars in ``DIR`` when the ``tensorboard`` package is installed.

Only the main process writes. Lines are appended and flushed one at a time, so a resumed run
continues the same file; entries past the resumed step (written after the last checkpoint of the
interrupted run) are dropped on resume so every step appears once.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

METRICS = "metrics.json"


def tensorboard_available() -> bool:
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return False
    return True


class MetricsWriter:
    def __init__(self, out_dir: Path, enabled: bool = True, resume_step: int | None = None):
        self.path = Path(out_dir) / METRICS
        self.enabled = enabled
        self.resume_step = resume_step
        self._tb = None
        self._opened = False  # files are created on the first write: a run failing at once leaves none

    def _open(self) -> None:
        self._opened = True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.resume_step is not None:
            self._truncate_after(self.resume_step)
        elif self.path.exists():
            self.path.unlink()  # a fresh run in a reused directory starts a fresh log
        if tensorboard_available():
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=str(self.path.parent), purge_step=self.resume_step)

    def _truncate_after(self, step: int) -> None:
        if not self.path.exists():
            return
        keep = []
        for line in self.path.read_text().splitlines():
            try:
                if json.loads(line).get("step", 0) <= step:
                    keep.append(line)
            except ValueError:
                break  # a torn last line of a killed run
        self.path.write_text("".join(k + "\n" for k in keep))

    def write(self, step: int, values: dict[str, float]) -> None:
        """One line ``{"step": step, **values}``; TensorBoard gets every numeric value as a scalar."""
        if not self.enabled:
            return
        if not self._opened:
            self._open()
        row = {"step": step, **{k: _plain(v) for k, v in values.items()}}
        with open(self.path, "a") as f:
            f.write(json.dumps(row, allow_nan=True) + "\n")
        if self._tb is not None:
            for k, v in row.items():
                if k != "step" and isinstance(v, (int, float)) and math.isfinite(v):
                    self._tb.add_scalar(k, v, step)
            self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def _plain(v):
    if hasattr(v, "item"):
        v = v.item()
    return v


def read_metrics(out_dir: Path) -> list[dict]:
    path = Path(out_dir) / METRICS
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
