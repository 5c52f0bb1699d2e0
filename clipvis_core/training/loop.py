"""The training loop: sources -> data loader -> forward/loss -> AdamW step -> checkpoints, metrics, validation.

``train(TrainRequest) -> TrainResult`` is what ``clipvis train``, the job layer and ``torchrun``
call. One process or many (DistributedDataParallel over ``TrainForward``; gloo on CPU, nccl on
CUDA); the samples of a step depend only on the step number (``distributed.step_indices``), so a
resumed run replays the same data, point draws and RNG streams as an uninterrupted one.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..errors import ClipvisError, InputError
from . import checkpointing as ckpt
from . import distributed as D
from .config import TrainConfig
from .loader import Failed, build_loader, shared_records
from .metrics import MetricsWriter
from .sampling import PointSampler


class TrainingError(ClipvisError):
    """Training stopped (non-finite loss); the last good checkpoint is kept."""


class TrainingCancelled(ClipvisError):
    """``should_stop()`` returned True; a checkpoint of the last finished step was written."""


@dataclass
class TrainProgress:
    step: int  # optimizer steps finished
    total: int
    loss: float
    steps_per_s: float
    eta_s: float


@dataclass
class TrainRequest:
    data: list[str]
    init: str  # anything --checkpoint accepts
    output: Path
    config: TrainConfig = field(default_factory=TrainConfig)
    val: list[str] = field(default_factory=list)
    device: str = "cpu"
    resume: bool = False
    images_dir: str | None = None
    quiet: bool = True
    progress: Callable[[TrainProgress], None] | None = None
    should_stop: Callable[[], bool] | None = None  # polled every step (job cancel)
    sampler: PointSampler | None = None  # default: PointSampler.seeded(seed + rank)
    # Called after the backward of every step (before clipping and the optimizer): tests dump grads.
    on_backward: Callable[[int, float, "torch.nn.Module"], None] | None = None
    # Records already opened (e.g. a correction split), trained on together with those of ``data``.
    records: list | None = None


@dataclass
class TrainResult:
    output: Path
    final: Path  # model_final.pth
    card: Path  # model_card.json: usable as --checkpoint
    steps: int
    losses: list[float]  # total loss of every step this call ran (mean over processes)
    validation: dict[str, float] = field(default_factory=dict)


def train(req: TrainRequest) -> TrainResult:
    info, device = D.setup(req.device)
    try:
        return _train(req, info, device)
    finally:
        D.teardown()


def _check_config(cfg: TrainConfig, info: D.DistInfo) -> None:
    per = info.world_size * cfg.grad_accum
    if cfg.max_iter < 1:
        raise InputError(f"--steps {cfg.max_iter}: train for at least one step")
    if cfg.batch_size < 1 or cfg.batch_size % per:
        raise InputError(f"--batch-size {cfg.batch_size} must be a positive multiple of processes x grad_accum "
                         f"= {info.world_size} x {cfg.grad_accum}: it is the total over all processes")


def _resume_state(req: TrainRequest, resolved) -> tuple[dict | None, Path | None]:
    out = Path(req.output)
    last = ckpt.latest_checkpoint(out)
    if not req.resume:
        if last is not None or (out / ckpt.FINAL).exists():
            raise InputError(f"--output {out} already holds a training run: pass --resume to continue it, "
                             "or choose a new --output")
        return None, None
    if last is None:
        return None, None  # nothing to resume yet: start from --init (detectron2's resume does the same)
    state = ckpt.load_training_checkpoint(last)
    ckpt.check_resume_architecture(last, state, resolved.config, req.init)
    return state, last


def _rng_state(sampler: PointSampler, info: D.DistInfo) -> dict:
    np_state = np.random.get_state()
    own = {"sampler": sampler.get_state(), "torch": torch.get_rng_state(),
           "numpy": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]),
           "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        own["cuda"] = torch.cuda.get_rng_state()
    if not info.enabled:
        return {"ranks": [own]}
    ranks = [None] * info.world_size
    torch.distributed.all_gather_object(ranks, own)
    return {"ranks": ranks}


def _restore_rng(state: dict, sampler: PointSampler, info: D.DistInfo) -> bool:
    ranks = state.get("ranks") or []
    if len(ranks) != info.world_size:
        return False  # another process count: per-rank streams cannot be mapped; keep fresh seeds
    own = ranks[info.rank]
    sampler.set_state(own["sampler"])
    torch.set_rng_state(own["torch"])
    name, keys, *rest = own["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    random.setstate(own["python"])
    if "cuda" in own and torch.cuda.is_available():
        torch.cuda.set_rng_state(own["cuda"])
    return True


def _unwrap(module):
    return module.module if hasattr(module, "module") else module


def _train(req: TrainRequest, info: D.DistInfo, device: torch.device) -> TrainResult:
    from .criterion import SetCriterion
    from .optim import build_optimizer, build_scheduler
    from .step import forward_losses, prepare_for_training

    cfg = req.config
    _check_config(cfg, info)
    out = Path(req.output).expanduser()
    from ..weights import load_model, resolve_checkpoint

    resolved = resolve_checkpoint(req.init)
    resumed, resumed_path = _resume_state(req, resolved)  # before building: an architecture mismatch fails fast
    records = shared_records(req.data, req.images_dir, "--data", info) + list(req.records or [])
    if not records:
        raise InputError("nothing to train on: pass --data SOURCE (a COCO / YTVIS JSON, fiftyone:..., labelstudio:...)")
    val_records = shared_records(req.val, req.images_dir, "--val", info) if req.val else []
    model = load_model(resolved, device)  # after the data checks: bad input fails in a second

    if resumed is not None:
        model.load_state_dict(ckpt.model_state(resumed["model"]), strict=True)
    fwd = prepare_for_training(model)
    optimizer = build_optimizer(model, cfg.optim)
    scheduler = build_scheduler(optimizer, cfg.schedule, cfg.max_iter)
    amp = cfg.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    sampler = req.sampler or PointSampler.seeded(cfg.seed + info.rank)
    start = 0
    if resumed is not None:
        optimizer.load_state_dict(resumed["optimizer"])
        scheduler.load_state_dict(resumed["scheduler"])
        trainer = resumed["trainer"]
        start = int(trainer["steps_done"])
        if trainer.get("scaler"):
            scaler.load_state_dict(trainer["scaler"])
        if not _restore_rng(trainer["rng"], sampler, info) and info.is_main:
            print(f"clipvis: note: {resumed_path} was written by {len(trainer['rng']['ranks'])} processes; "
                  "random streams restart from the seed", file=sys.stderr)
    else:
        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed)
        random.seed(cfg.seed)
    if start >= cfg.max_iter:
        raise InputError(f"{out} already finished {start} steps: raise --steps above {start} to train further")

    train_module = fwd
    if info.enabled:
        from torch.nn.parallel import DistributedDataParallel

        train_module = DistributedDataParallel(fwd, device_ids=[device] if device.type == "cuda" else None)
    criterion = SetCriterion(cfg.loss, model.cfg.decoder.dec_layers - 1)
    metrics = MetricsWriter(out, enabled=info.is_main, resume_step=start if resumed is not None else None)
    loader = build_loader(records, cfg, model.cfg, start, info)

    def trainer_state(steps_done: int) -> dict:
        rng = _rng_state(sampler, info)  # collective: every rank calls it
        return {"model": ckpt.upstream_state_dict(model, cfg.loss.empty_object_weight), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "trainer": {"steps_done": steps_done, "rng": rng, "scaler": scaler.state_dict() if amp else None,
                            "model_config": model.cfg.to_dict(), "train_config": cfg.to_dict(),
                            "world_size": info.world_size, "init": req.init, "data": list(req.data)}}

    def save(steps_done: int) -> Path | None:
        state = trainer_state(steps_done)
        path = ckpt.save_training_checkpoint(out, steps_done, state) if info.is_main else None
        D.barrier()
        return path

    bar = _progress_bar(cfg.max_iter, start, req.quiet or not info.is_main)
    losses: list[float] = []
    validation: dict[str, float] = {}
    t0, step = time.perf_counter(), start
    try:
        batches = iter(loader)
        for step in range(start, cfg.max_iter):
            if req.should_stop is not None and D.any_rank(bool(req.should_stop()), device):
                if step > start:
                    save(step)
                raise TrainingCancelled(f"training cancelled after step {step}; resume with --resume")
            loss, terms = _one_step(step, batches, train_module, criterion, sampler, optimizer, scaler, amp, cfg,
                                    device, forward_losses, req, out)
            scheduler.step()
            losses.append(loss)
            done = step + 1
            rate = (done - start) / max(time.perf_counter() - t0, 1e-9)
            if req.progress is not None:
                req.progress(TrainProgress(done, cfg.max_iter, loss, rate, (cfg.max_iter - done) / rate))
            bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
            bar.update(1)
            if done % cfg.log_period == 0 or done == cfg.max_iter or done == start + 1:
                metrics.write(done, {"total_loss": loss, "lr": optimizer.param_groups[0]["lr"],
                                     "steps_per_s": rate, **terms})
            if done % cfg.checkpoint_period == 0 and done < cfg.max_iter:
                save(done)
            if val_records and cfg.eval_period and done % cfg.eval_period == 0 and done < cfg.max_iter:
                validation = _validate(model, resolved, val_records, device, info)
                metrics.write(done, validation)
        save(cfg.max_iter)
        if val_records:
            validation = _validate(model, resolved, val_records, device, info)
            metrics.write(cfg.max_iter, validation)
    except BaseException:
        bar.leave = False  # the error line stands alone, without a half-drawn bar above it
        raise
    finally:
        bar.close()
        metrics.close()
    final = out / ckpt.FINAL
    card = out / ckpt.CARD
    if info.is_main:
        card_dict = ckpt.model_card(out.name or "trained", model.cfg, req.init, cfg.to_dict(), cfg.max_iter, req.data)
        final, card = ckpt.save_final(out, ckpt.upstream_state_dict(model, cfg.loss.empty_object_weight), card_dict)
    D.barrier()
    return TrainResult(out, final, card, cfg.max_iter, losses, validation)


def _one_step(step, batches, module, criterion, sampler, optimizer, scaler, amp, cfg, device, forward_losses,
              req: TrainRequest, out: Path) -> tuple[float, dict[str, float]]:
    """grad_accum micro-batches -> one optimizer step; the mean total loss over processes."""
    total = torch.zeros((), device=device)
    terms: dict[str, torch.Tensor] = {}
    for micro in range(cfg.grad_accum):
        batch = next(batches)
        if isinstance(batch, Failed):
            raise InputError(f"{batch.message}")
        batch = batch.to(device)
        last = micro == cfg.grad_accum - 1
        sync = contextlib.nullcontext() if last or not hasattr(module, "no_sync") else module.no_sync()
        with sync:
            with torch.autocast("cuda", dtype=torch.float16, enabled=amp):
                losses = forward_losses(module, batch, criterion, sampler)
            loss = losses.total.float() / cfg.grad_accum
            if D.any_rank(not bool(torch.isfinite(loss)), device):
                last_good = ckpt.latest_checkpoint(out)
                kept = f"; the last good checkpoint {last_good} is kept" if last_good else "; no checkpoint was written yet"
                raise TrainingError(f"the loss became {loss.item()} at step {step + 1}: lower --lr (or check the data "
                                    f"of that step){kept}")
            scaler.scale(loss).backward()
        total += loss.detach()
        for k, v in losses.weighted.items():
            terms[k] = terms.get(k, 0.0) + float(v.detach()) / cfg.grad_accum
    mean_loss = float(D.all_reduce_mean(total))
    if req.on_backward is not None:
        req.on_backward(step + 1, mean_loss, _unwrap(module))
    scaler.step(optimizer)  # unscales (AMP) and clips inside optimizer.step(), as upstream
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    return mean_loss, terms


def _progress_bar(total: int, initial: int, disable: bool):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="step", desc="train", disable=disable, dynamic_ncols=True,
                file=sys.stderr, smoothing=0.1)


def _validate(model, resolved, records, device, info: D.DistInfo) -> dict[str, float]:
    """Class-agnostic AP (and AP with the data's vocabulary) on rank 0; the others wait."""
    from .validation import evaluate_records

    result = {}
    if info.is_main:
        result = evaluate_records(model, resolved, records, device)
    D.barrier()
    return result


def override(cfg: TrainConfig, **changes) -> TrainConfig:
    """``cfg`` with top-level fields (``max_iter``) and ``optim.lr`` replaced where given (not None)."""
    lr = changes.pop("lr", None)
    cfg = dataclasses.replace(cfg, **{k: v for k, v in changes.items() if v is not None})
    if lr is not None:
        if not (lr > 0 and math.isfinite(lr)):
            raise InputError(f"--lr {lr}: the learning rate must be a positive number")
        cfg = dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, lr=lr))
    return cfg
