"""Disk-backed per-frame storage for the final instance selection.

Which (track, class) pairs become instances is only known after the last frame, but their masks
are needed for every frame. Rather than keeping all frames' masks in RAM (upstream grows ~8-30 MiB
per frame), each frame's matched mask logits and class probabilities are written to temp files
with plain file I/O (no mmap, so they never count towards RSS) and read back once at the end.
"""
from __future__ import annotations

import os
import shutil
import tempfile

import numpy as np
import torch


class FrameStore:
    def __init__(self, shapes: dict[str, tuple[int, ...]], tmp_dir: str | None = None):
        self.dir = tempfile.mkdtemp(prefix="clipvis-frames-", dir=tmp_dir or os.environ.get("CLIPVIS_TMPDIR"))
        self.shapes = shapes
        self.nbytes = {k: int(np.prod(s)) * 4 for k, s in shapes.items()}
        self.files = {k: open(os.path.join(self.dir, f"{k}.f32"), "w+b") for k in shapes}
        self.frames = 0

    def write(self, t: int, **arrays: torch.Tensor) -> None:
        for k, a in arrays.items():
            f = self.files[k]
            f.seek(t * self.nbytes[k])
            f.write(a.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
        self.frames = max(self.frames, t + 1)

    def read(self, t: int, key: str) -> torch.Tensor:
        f = self.files[key]
        f.seek(t * self.nbytes[key])
        buf = f.read(self.nbytes[key])
        return torch.from_numpy(np.frombuffer(buf, dtype=np.float32).reshape(self.shapes[key]).copy())

    def close(self) -> None:
        for f in self.files.values():
            f.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
