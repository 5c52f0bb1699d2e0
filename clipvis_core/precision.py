"""Numeric precision of the network forward: fp32 (exact), or bf16 / fp16 autocast.

Only the network forward (backbone, pixel decoder, transformer decoder) runs under autocast;
matching, mask pooling, scoring and post-processing read its outputs back in float32.
bf16 runs on CPU and CUDA; fp16 on CUDA only (CPU fp16 kernels are slow or missing).
Agreement with fp32 is measured in benchmarks/bench_precision.py (docs/performance.md).
"""
from __future__ import annotations

import contextlib

from .errors import InputError

PRECISIONS = ("fp32", "bf16", "fp16")


def check_precision(precision: str, device_type: str | None = None) -> str:
    """The precision name, or a one-line InputError naming the fix."""
    if precision not in PRECISIONS:
        raise InputError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    if precision == "fp16" and device_type is not None and device_type != "cuda":
        raise InputError("precision fp16 needs a CUDA GPU; on CPU use bf16 (or fp32)")
    return precision


def autocast(precision: str, device):
    """Context for the network forward on ``device`` (a torch.device): a no-op for fp32."""
    import torch  # not at import time: the CLI reads PRECISIONS before torch is needed

    check_precision(precision, device.type)
    if precision == "fp32":
        if device.type != "cuda":
            return contextlib.nullcontext()
        # cuDNN convolutions default to TF32 on Ampere and later (10-bit mantissa): fp32 means fp32.
        cudnn = torch.backends.cudnn
        return cudnn.flags(enabled=cudnn.enabled, benchmark=cudnn.benchmark, deterministic=cudnn.deterministic,
                           allow_tf32=False)
    return torch.autocast(device.type, dtype={"bf16": torch.bfloat16, "fp16": torch.float16}[precision])


def device_type(device: str) -> str:
    """'cpu' or 'cuda' for a --device / CLIPVIS_DEVICE value ('auto': CUDA when visible)."""
    if device != "auto":
        return device.split(":")[0]
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
