"""Freed memory is reused while a CPU run holds ``reuse_freed_memory``, and handed back after."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from clipvis_core import cpu_memory
from clipvis_core.segmenter import Segmenter

# Page faults are measured in a fresh interpreter: in a long test process the heap may already hold
# a large free block that earlier tests left behind, which hides the default's fresh pages.
PROBE = r"""
import json, resource, sys
import torch
from clipvis_core import cpu_memory

BLOCK = 64 << 20  # over glibc's largest adaptive mmap threshold (32 MB): always fresh pages by default

def faults_of_a_large_block(nbytes):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    x = torch.ones(nbytes // 4)
    del x
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

def faults_after_a_larger_one():
    # A 48 MB block right after a 64 MB one was freed: small allocations in between may split the
    # freed block, so one of the same size may not fit in it; a smaller one does, as a frame's
    # temporaries fit in the previous frame's.
    faults_of_a_large_block(BLOCK)
    return faults_of_a_large_block(48 << 20)

out = {"default": faults_after_a_larger_one()}
with cpu_memory.reuse_freed_memory():
    with cpu_memory.reuse_freed_memory():  # nested / concurrent runs share one count
        out["nested_holders"] = cpu_memory.holders()
    out["held"] = faults_after_a_larger_one()
out["holders_after"] = cpu_memory.holders()
out["after"] = faults_after_a_larger_one()
print(json.dumps(out))
"""


def probe(**env) -> dict:
    run = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True,
                         env={**os.environ, **env})
    return json.loads(run.stdout.strip().splitlines()[-1])


def test_large_blocks_reuse_pages_only_while_held():
    r = probe()
    assert r["default"] > 0  # fresh pages every time (fewer faults with transparent huge pages)
    assert r["nested_holders"] == 2
    assert r["held"] * 10 < r["default"]
    assert r["holders_after"] == 0
    assert r["after"] > 10 * r["held"]  # back to the default, the heap trimmed


def test_switched_off_by_environment():
    r = probe(CLIPVIS_MALLOC_TUNING="0")
    assert r["nested_holders"] == 0
    assert r["held"] > 0


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
