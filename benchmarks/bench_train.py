"""Training speed and memory (prints figures; not a test).

  python benchmarks/bench_train.py step   [--batch 1 2] [--size 1024] [--steps 2] [--device cpu|cuda]
      full-size ConvNeXt-B (random:clipvis-convnext-b-dec10, random weights) at upstream's crop size:
      seconds per optimizer step and peak memory (RSS on CPU, allocated GPU memory on CUDA), each batch
      size in a fresh process; upstream's loss settings (12544 points), AMP on CUDA as upstream.
  python benchmarks/bench_train.py loader [--images 32] [--workers 0 2] [--size 1024]
      data-loader throughput: generated COCO photos-sized images (640x480 JPEG, polygon masks) through
      decode + large-scale jitter + collate, samples/s per worker count.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODEL = "random:clipvis-convnext-b-dec10"


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _samples(batch: int, size: int, instances: int = 6):
    """Random RGB images with rectangles and ellipses as instances (the loss only needs masks)."""
    import cv2
    import numpy as np

    from clipvis_core.training.data.sample import Sample

    rng = np.random.default_rng(0)
    out = []
    for _ in range(batch):
        frames = rng.integers(0, 255, size=(1, size, size, 3), dtype=np.uint8)
        masks = np.zeros((instances, 1, size, size), bool)
        for k in range(instances):
            layer = np.zeros((size, size), np.uint8)
            c = tuple(int(v) for v in rng.integers(size // 8, size - size // 8, 2))
            axes = tuple(int(v) for v in rng.integers(size // 32, size // 6, 2))
            cv2.ellipse(layer, c, axes, 0, 0, 360, 1, -1)
            masks[k, 0] = layer > 0
        out.append(Sample(frames=frames, masks=masks, categories=[None] * instances))
    return out


def step_worker(args) -> None:
    """One batch size in this (fresh) process; prints one JSON line."""
    import torch

    from clipvis_core.training.config import TrainConfig
    from clipvis_core.training.criterion import SetCriterion
    from clipvis_core.training.optim import build_optimizer, build_scheduler
    from clipvis_core.training.sampling import PointSampler
    from clipvis_core.training.step import forward_losses, prepare_for_training
    from clipvis_core.training.targets import Collator
    from clipvis_core.weights import load_model, resolve_checkpoint

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", os.cpu_count() or 2)))
    device = torch.device(args.device)
    cfg = TrainConfig()
    resolved = resolve_checkpoint(MODEL)
    model = load_model(resolved, device)
    fwd = prepare_for_training(model)
    opt = build_optimizer(model, cfg.optim)
    sched = build_scheduler(opt, cfg.schedule, cfg.max_iter)
    criterion = SetCriterion(cfg.loss, model.cfg.decoder.dec_layers - 1)
    sampler = PointSampler.seeded(0)
    amp = device.type == "cuda" and cfg.amp
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    batch = Collator.from_model_config(model.cfg)(_samples(args.batch, args.size)).to(device)

    def step() -> float:
        with torch.autocast("cuda", dtype=torch.float16, enabled=amp):
            losses = forward_losses(fwd, batch, criterion, sampler)
        scaler.scale(losses.total).backward()
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
        sched.step()
        return float(losses.total)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    t0 = time.perf_counter()
    step()  # warm-up: one-off allocations and kernel selection are not timed
    sync()
    warm = time.perf_counter() - t0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else peak_rss_mib()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(json.dumps({"batch": args.batch, "size": args.size, "device": args.device, "amp": amp,
                      "s_per_step": min(times), "s_per_step_all": times, "warmup_s": warm, "peak_mib": peak,
                      "trainable_params": trainable, "threads": torch.get_num_threads()}))


def run_step(args) -> None:
    rows = []
    for b in args.batch:
        cmd = [sys.executable, __file__, "_step", "--batch", str(b), "--size", str(args.size), "--steps",
               str(args.steps), "--device", args.device]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"batch {b}: failed\n{proc.stderr[-2000:]}", file=sys.stderr)
            continue
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    print(f"full-size ConvNeXt-B ({MODEL}), crop {args.size}x{args.size}, upstream loss settings, {args.device}:")
    for r in rows:
        mem = "peak GPU memory allocated" if r["device"] == "cuda" else "peak RSS"
        print(f"  batch {r['batch']}: {r['s_per_step']:.2f} s/step (best of {len(r['s_per_step_all'])}; "
              f"{r['s_per_step'] / r['batch']:.2f} s/image), {mem} {r['peak_mib']:.0f} MiB, amp={r['amp']}, "
              f"threads={r['threads']}, {r['trainable_params'] / 1e6:.1f} M trainable parameters")


def run_loader(args) -> None:
    import cv2
    import numpy as np
    import torch

    from clipvis_core.config import released_config
    from clipvis_core.training.config import AugmentConfig
    from clipvis_core.training.data import TrainDataset, open_source
    from clipvis_core.training.targets import Collator

    with tempfile.TemporaryDirectory() as tmp:
        rng = np.random.default_rng(0)
        images, anns = [], []
        for i in range(args.images):
            img = rng.integers(0, 255, size=(480, 640, 3), dtype=np.uint8)
            cv2.imwrite(f"{tmp}/{i:04d}.jpg", img)
            images.append({"id": i + 1, "file_name": f"{i:04d}.jpg", "height": 480, "width": 640})
            for k in range(6):
                x, y = int(rng.integers(40, 560)), int(rng.integers(40, 400))
                poly = [float(v) for v in (x, y, x + 60, y + 10, x + 70, y + 70, x - 10, y + 60)]
                anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": 1, "segmentation": [poly],
                             "iscrowd": 0, "area": 4000.0, "bbox": [x - 10, y, 80, 70]})
        Path(f"{tmp}/ann.json").write_text(json.dumps({"images": images, "annotations": anns,
                                                       "categories": [{"id": 1, "name": "thing"}]}))
        records = open_source(f"{tmp}/ann.json")
        collate = Collator.from_model_config(released_config("clipvis-convnext-b-dec10"))
        ds = TrainDataset(records, AugmentConfig(image_size=args.size), seed=0)
        print(f"data loader: {len(records)} 640x480 JPEG images, 6 polygons each -> LSJ crop {args.size}, batch 2:")
        for workers in args.workers:
            loader = torch.utils.data.DataLoader(ds, batch_size=2, shuffle=True, num_workers=workers, collate_fn=collate,
                                                 prefetch_factor=2 if workers else None)
            t0 = time.perf_counter()
            n = sum(b.images.shape[0] for b in loader)
            dt = time.perf_counter() - t0
            print(f"  {workers} workers: {n / dt:.1f} samples/s ({dt / n * 1000:.0f} ms/sample incl. worker start)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("step")
    s.add_argument("--batch", type=int, nargs="+", default=[1, 2])
    s.add_argument("--size", type=int, default=1024)
    s.add_argument("--steps", type=int, default=2)
    s.add_argument("--device", default="cpu")
    w = sub.add_parser("_step")
    w.add_argument("--batch", type=int, required=True)
    w.add_argument("--size", type=int, required=True)
    w.add_argument("--steps", type=int, required=True)
    w.add_argument("--device", default="cpu")
    d = sub.add_parser("loader")
    d.add_argument("--images", type=int, default=32)
    d.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    d.add_argument("--size", type=int, default=1024)
    args = p.parse_args()
    {"step": run_step, "_step": step_worker, "loader": run_loader}[args.mode](args)


if __name__ == "__main__":
    main()
