"""Reuse freed memory while the streaming segmenter runs on the CPU (glibc only).

One ConvNeXt-B frame at 480p allocates and frees several hundred MB of temporaries. glibc serves
large blocks (always those over 32 MB) with fresh ``mmap`` pages and gives them back on free, so
every frame pays the kernel to fault in and zero them again: 40-140 thousand page faults and
0.1-0.3 CPU-s a frame, measured in docs/performance.md. While a run holds ``reuse_freed_memory``,
malloc takes every block from its heap and keeps what is freed, so after the first frame the same
pages are reused. When the last run ends, the settings go to what glibc's own adaptive thresholds
settle at, and the heap is trimmed so the process hands the memory back. The settings are
process-wide, so concurrent runs share one count. ``CLIPVIS_MALLOC_TUNING=0`` turns it off.
"""
from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import threading

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_MMAP_MAX = -1, -3, -4  # glibc's mallopt parameters
_lock = threading.Lock()
_holders = 0


@functools.lru_cache(maxsize=1)  # looked up once, not per run
def _glibc():
    try:
        lib = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (macOS, musl): nothing to tune
        return None
    return lib if hasattr(lib, "mallopt") and hasattr(lib, "malloc_trim") else None


def enabled() -> bool:
    return os.environ.get("CLIPVIS_MALLOC_TUNING", "1") != "0"


@contextlib.contextmanager
def reuse_freed_memory(on: bool = True):
    global _holders
    libc = _glibc() if on and enabled() else None
    if libc is None:
        yield
        return
    with _lock:
        _holders += 1
        if _holders == 1:
            libc.mallopt(_M_MMAP_MAX, 0)  # every block from the heap
            libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)  # and freed memory kept there
    try:
        yield
    finally:
        with _lock:
            _holders -= 1
            if _holders == 0:
                libc.mallopt(_M_MMAP_MAX, 65536)  # glibc's default
                libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20)  # where its adaptive threshold ends up
                libc.mallopt(_M_TRIM_THRESHOLD, 64 << 20)  # twice that, as glibc sets it
                libc.malloc_trim(0)


def holders() -> int:
    """Runs holding the setting now (for tests)."""
    return _holders
