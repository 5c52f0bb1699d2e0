"""Numeric precision of the network forward: fp32 (exact), or bf16 / fp16 autocast.

Only the network forward (backbone, pixel decoder, transformer decoder) runs under autocast;
matching, mask pooling, scoring and post-processing read its outputs back in float32.
bf16 runs on CPU and CUDA; fp16 on CUDA only (CPU fp16 kernels are slow or missing). On a CPU
without AVX-512 (or Arm bf16) oneDNN has no bfloat16 kernels and PyTorch falls back to reference
ones: ConvNeXt-B took 150-200 s a frame there instead of fp32's 4 s, so bf16 is refused on such a CPU
unless CLIPVIS_ALLOW_SLOW_BF16=1.
Agreement with fp32 is measured in benchmarks/bench_precision.py (docs/performance.md).
"""
from __future__ import annotations

import contextlib
import os

from .errors import InputError

PRECISIONS = ("fp32", "bf16", "fp16")


def check_precision(precision: str, device_type: str | None = None) -> str:
    """The precision name, or a one-line InputError naming the fix."""
    if precision not in PRECISIONS:
        raise InputError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    if precision == "fp16" and device_type is not None and device_type != "cuda":
        raise InputError("precision fp16 needs a CUDA GPU; on CPU use bf16 (or fp32)")
    if (precision == "bf16" and device_type == "cpu" and not cpu_has_fast_bf16()
            and os.environ.get("CLIPVIS_ALLOW_SLOW_BF16") != "1"):
        raise InputError("precision bf16 is emulated on this CPU (no AVX-512 bfloat16 kernels: ~40x slower than "
                         "fp32); use fp32, or set CLIPVIS_ALLOW_SLOW_BF16=1 to run it anyway")
    return precision


def cpu_has_fast_bf16() -> bool:
    """Whether oneDNN has bfloat16 kernels for this CPU (AVX-512 BW/VL/DQ, or Arm bf16)."""
    import torch

    probe = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    try:
        return bool(probe()) if probe is not None else torch.backends.cpu.get_cpu_capability() == "AVX512"
    except RuntimeError:  # a build without oneDNN
        return False


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
