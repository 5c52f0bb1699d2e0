"""DistributedDataParallel: two real gloo processes under torchrun equal one process with the same total batch."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from shapes_data import write_ytvis
from train_helpers import random_tiny_card, small_config, write_config

pytestmark = pytest.mark.training
ROOT = Path(__file__).resolve().parents[1]
WORKER = ROOT / "tests" / "ddp_train_worker.py"
STEPS = 2


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=f"{ROOT / 'tests'}{os.pathsep}{ROOT}")
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    return env


def _load(dump: Path, rank: int, step: int):
    return torch.load(dump / f"rank{rank}_step{step}.pt", weights_only=True)


def test_two_gloo_processes_equal_one_process(tmp_path):
    # One shape per video: every sample has one instance, so the per-process object-loss weights
    # sum alike and upstream's per-process mean of the 2-way CE equals the one-process mean.
    data = write_ytvis(tmp_path / "data", 4, seed=5, name="train", num_shapes=1)
    card = random_tiny_card(tmp_path)
    cfg = write_config(tmp_path / "cfg.json", small_config(batch_size=2, max_iter=STEPS))
    args = [str(data), str(card), str(cfg)]
    one = subprocess.run([sys.executable, str(WORKER), *args, str(tmp_path / "out1"), str(tmp_path / "dump1")],
                         env=_env(), capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-3000:]
    torchrun = Path(sys.executable).with_name("torchrun")
    two = subprocess.run([str(torchrun), "--standalone", "--nnodes", "1", "--nproc_per_node", "2", str(WORKER), *args,
                          str(tmp_path / "out2"), str(tmp_path / "dump2")],
                         env=_env(), capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]

    d1, d2 = tmp_path / "dump1", tmp_path / "dump2"
    for step in range(1, STEPS + 1):
        single, r0, r1 = _load(d1, 0, step), _load(d2, 0, step), _load(d2, 1, step)
        assert r0["loss"] == pytest.approx(single["loss"], rel=1e-5, abs=1e-6), step
        assert r1["loss"] == r0["loss"]  # the logged loss is all-reduced
        assert single["grads"].keys() == r0["grads"].keys() and len(r0["grads"]) > 100
        # Float tolerance: relative per parameter, plus a floor of 1e-6 x the largest gradient for
        # parameters whose exact gradient is zero (conv biases before GroupNorm carry rounding noise only).
        floor = 1e-6 * max(g.abs().max().item() for g in single["grads"].values())
        for name, g in single["grads"].items():
            assert torch.equal(r0["grads"][name], r1["grads"][name]), name  # DDP averaged: identical on all ranks
            atol = 1e-5 * g.abs().max().item() + floor
            torch.testing.assert_close(r0["grads"][name], g, rtol=1e-4, atol=atol, msg=f"step {step} {name}")
    # Only rank 0 writes the run directory; its weights equal the single process's.
    a = torch.load(tmp_path / "out1" / "model_final.pth", weights_only=True)["model"]
    b = torch.load(tmp_path / "out2" / "model_final.pth", weights_only=True)["model"]
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-6, msg=k)


def test_gradient_accumulation_equals_one_batch(tmp_path):
    """grad_accum=2 (two micro-batches of 1, one optimizer step) gives the gradients of one batch of 2."""
    from clipvis_core.training.loop import TrainRequest, train
    from ddp_train_worker import RowConstantSampler

    data = write_ytvis(tmp_path / "data", 4, seed=5, name="train", num_shapes=1)
    card = random_tiny_card(tmp_path)
    runs = {}
    for accum in (1, 2):
        grads = {}

        def keep(step, loss, module, grads=grads):
            grads[step] = (loss, {n: p.grad.detach().clone() for n, p in module.named_parameters() if p.grad is not None})

        train(TrainRequest([str(data)], str(card), tmp_path / f"out{accum}", small_config(batch_size=2, max_iter=STEPS,
                                                                                           grad_accum=accum),
                           sampler=RowConstantSampler(), on_backward=keep))
        runs[accum] = grads
    for step in range(1, STEPS + 1):
        (l1, g1), (l2, g2) = runs[1][step], runs[2][step]
        assert l2 == pytest.approx(l1, rel=1e-5)
        floor = 1e-6 * max(g.abs().max().item() for g in g1.values())
        for name, g in g1.items():
            torch.testing.assert_close(g2[name], g, rtol=1e-4, atol=1e-5 * g.abs().max().item() + floor, msg=name)
