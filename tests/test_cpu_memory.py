"""Freed memory is reused while a CPU run holds ``reuse_freed_memory``, and handed back after."""
import resource

import numpy as np
import pytest
import torch

from clipvis_core import cpu_memory
from clipvis_core.segmenter import Segmenter

BLOCK = 64 << 20  # over glibc's largest adaptive mmap threshold (32 MB): always fresh pages by default


def faults_of_a_large_block(nbytes: int = BLOCK) -> int:
    """Minor page faults of allocating, writing and freeing one tensor of ``nbytes``."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    x = torch.ones(nbytes // 4)
    del x
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


def faults_after_a_larger_one() -> int:
    """Faults of a 48 MB block right after a 64 MB one was freed. (Small allocations in between may
    split the freed block, so a second block of the same size may not fit in it; a smaller one does,
    as a frame's temporaries fit in the previous frame's.)"""
    faults_of_a_large_block(BLOCK)
    return faults_of_a_large_block(48 << 20)


def test_large_blocks_reuse_pages_only_while_held():
    default = faults_after_a_larger_one()  # fresh pages every time (fewer faults with transparent huge pages)
    assert default > 0
    with cpu_memory.reuse_freed_memory():
        with cpu_memory.reuse_freed_memory():  # nested / concurrent runs share one count
            assert cpu_memory.holders() == 2
        reused = faults_after_a_larger_one()
        assert reused * 10 < default
    assert cpu_memory.holders() == 0
    assert faults_after_a_larger_one() > 10 * reused  # back to the default, the heap trimmed


def test_switched_off_by_environment(monkeypatch):
    monkeypatch.setenv("CLIPVIS_MALLOC_TUNING", "0")
    with cpu_memory.reuse_freed_memory():
        assert cpu_memory.holders() == 0
        assert faults_after_a_larger_one() > 0


def test_held_for_a_cpu_run_and_released_when_it_stops(tiny_card):
    seg = Segmenter.load(str(tiny_card), device="cpu")
    frames = np.random.default_rng(0).integers(0, 255, (3, 64, 96, 3), dtype=np.uint8)
    it = seg.iter_segment(frames, ["cat", "dog"])
    next(it)
    assert cpu_memory.holders() == 1
    it.close()  # a caller that stops reading mid-video
    assert cpu_memory.holders() == 0
    seg.segment(frames, ["cat", "dog"])
    assert cpu_memory.holders() == 0
    with pytest.raises(Exception):
        seg.segment(frames[:0], ["cat"])
    assert cpu_memory.holders() == 0
