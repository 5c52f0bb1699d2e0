"""The one-call GPU check (run through benchmarks/gpu_check.sh): prints one table.

Sections, each independent (a failure is a FAIL row, the rest still runs; exit 1 if any failed):
  parity     tests/test_parity_model.py on CUDA (fp32, the fixture's tolerances)
  autocast   bf16 / fp16 against fp32: parity fixture and full-size ConvNeXt-B (bench_precision.py)
  oom        a real CUDA out-of-memory (memory capped at 0.8 x the full run's peak) -> the job
             runner's retry with one frame per forward at the same resolution
  speed      full-size ConvNeXt-B (random weights), 480x854: frames/s for windows 1/5/10 x precisions
  text       cold text classifier, LV-VIS (1196 classes)
  train      one full-size training step (benchmarks/bench_train.py, AMP as upstream)
"""
from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))
CKPT = "random:clipvis-convnext-b-dec10"
SECTIONS = ("parity", "speed", "autocast", "oom", "text", "train")
ROWS: list[tuple[str, str, str]] = []  # (check, result, detail)
TMP = Path(tempfile.mkdtemp(prefix="clipvis-gpucheck-"))


def row(check: str, result: str, detail: str = "") -> None:
    ROWS.append((check, result, detail))
    print(f"  {check}: {result} {detail}", flush=True)


def section(name: str):
    def wrap(fn):
        def run(*a):
            t0 = time.perf_counter()
            try:
                fn(*a)
            except Exception as e:  # one failing section must not hide the others' figures
                row(name, "FAIL", f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}")
            print(f"[{name}] {time.perf_counter() - t0:.0f} s", flush=True)
        return run
    return wrap


@section("parity")
def parity() -> None:
    env = dict(os.environ, CLIPVIS_TEST_DEVICE="cuda")  # `python -m pytest` in ROOT imports the repo
    env.setdefault("CLIPVIS_REFERENCE_DIR", str(ROOT.parent / "shared" / "reference"))
    if not (Path(env["CLIPVIS_REFERENCE_DIR"]) / "tiny_config.json").exists():
        raise FileNotFoundError(f"reference fixtures not in {env['CLIPVIS_REFERENCE_DIR']}: set CLIPVIS_REFERENCE_DIR")
    p = subprocess.run([sys.executable, "-m", "pytest", "tests/test_parity_model.py", "-q", "-p", "no:cacheprovider"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    last = (p.stdout.strip().splitlines() or ["no output"])[-1]
    row("parity tests on CUDA (fp32)", "ok" if p.returncode == 0 else "FAIL", last)
    if p.returncode != 0:
        print(p.stdout[-3000:], p.stderr[-2000:], sep="\n")


@section("autocast")
def autocast_agreement(seg, video, vocab) -> None:
    import bench_precision as bp

    ref = Path(os.environ.get("CLIPVIS_REFERENCE_DIR", ROOT.parent / "shared" / "reference"))
    if (ref / "tiny_config.json").exists():
        import numpy as np

        from clipvis_core.config import ModelConfig
        from clipvis_core.segmenter import Segmenter

        card = TMP / "tiny_card.json"
        card.write_text(json.dumps({"config": ModelConfig.from_reference(ref / "tiny_config.json").to_dict(),
                                    "checkpoint": str(ref / "tiny_model.pth")}))
        frames = np.load(ref / "video_input.npz")["frames_uint8"]
        names = json.loads((ref / "tiny_config.json").read_text())["vocabulary"]
        _agreement_rows("fixture", bp, bp.run_all(Segmenter.load(str(card), device="cuda"), frames, names,
                                                  {"min_size": 0}, ("fp32", "bf16", "fp16")))
    else:
        row("autocast agreement, fixture", "FAIL", f"reference fixtures not in {ref}")
    _agreement_rows("ConvNeXt-B 480p", bp, bp.run_all(seg, video, vocab, {"max_frames": 20}, ("fp32", "bf16", "fp16")))


def _agreement_rows(what, bp, runs) -> None:
    ref, _ = runs["fp32"]
    for p in ("bf16", "fp16"):
        g = bp.agreement(ref, runs[p][0])
        row(f"autocast {p} vs fp32, {what}", "ok",
            f"top-10 {g['top10']:.2f}, all {g['top_all']:.2f}, mask IoU mean {g['iou_mean']:.3f} min {g['iou_min']:.3f}, "
            f"score diff max {g['dscore_max']:.1e}, class changes {g['class_changes']}")


@section("oom")
def oom_fallback(seg, video, vocab) -> None:
    import torch

    from clipvis_core.jobs import JobSettings, JobSpec, run_job
    from clipvis_core.segmenter import SegmentOptions, _segmenters

    opts = SegmentOptions(window=10, max_frames=10)
    # Capped below the full run's peak; the retry in windows of 1 needs far less (1.0 vs 2.7 GiB on an H200).
    seg.segment(video, vocab, opts)  # warm-up: each new shape's first call tries cuDNN algorithms
    gc.collect()  # earlier sections' garbage (reference cycles) would count as this run's peak
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    seg.segment(video, vocab, opts)
    full_peak = torch.cuda.max_memory_reserved()
    cap = 0.8 * full_peak
    total = torch.cuda.get_device_properties(0).total_memory
    os.environ.update(CLIPVIS_DEVICE="cuda", CLIPVIS_RESULTS_DIR=str(TMP / "results"))
    os.environ.pop("CLIPVIS_BROKER_URL", None)
    _segmenters[(CKPT, "cuda", False)] = seg  # the job reuses this model (a second copy would move the cap)
    warnings: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda rec: warnings.append(rec.getMessage())
    logging.getLogger("clipvis.jobs").addHandler(handler)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    torch.cuda.set_per_process_memory_fraction(cap / total)
    try:
        tracks = run_job(JobSpec(str(video), list(vocab.entries), CKPT, options={"window": 10, "max_frames": 10}),
                         settings=JobSettings.from_env())
    finally:
        capped_peak = torch.cuda.max_memory_reserved()
        torch.cuda.set_per_process_memory_fraction(1.0)
        logging.getLogger("clipvis.jobs").removeHandler(handler)
    hit = [w for w in warnings if "out of memory" in w]
    ok = bool(hit) and tracks.video.num_frames == 10 and tracks.options.get("window") == 1
    row("CUDA OOM fallback", "ok" if ok else "FAIL",
        f"cap {cap / 2**30:.2f} GiB (0.8 x the full-size peak {full_peak / 2**30:.2f}), capped job's peak {capped_peak / 2**30:.2f} GiB; "
        f"{hit[0] if hit else 'no OOM was raised'}; result window {tracks.options.get('window')}")


@section("speed")
def speed(seg, video, vocab, frames: int) -> None:
    from clipvis_core.segmenter import SegmentOptions

    for p in ("fp32", "bf16", "fp16"):
        seg.segment(video, vocab, SegmentOptions(max_frames=2, precision=p))  # warm-up
        figs = []
        for w in (1, 5, 10):
            t0 = time.perf_counter()
            res = seg.segment(video, vocab, SegmentOptions(window=w, precision=p, max_frames=frames))
            figs.append(f"window {w}: {res.video.num_frames / (time.perf_counter() - t0):.2f}")
        row(f"ConvNeXt-B 480x854 frames/s, {p}", "ok", ", ".join(figs))


@section("text")
def text_speed(seg) -> None:
    from clipvis_core.builtin_vocabularies import load_vocabulary
    from clipvis_core.text import build_text_classifier

    vocab = load_vocabulary("lvvis")
    t0 = time.perf_counter()
    build_text_classifier(seg.model.backbone, seg.tokenizer, vocab, TMP / "textcache")
    el = time.perf_counter() - t0
    n = len(vocab.prompts())
    row("text classifier, LV-VIS cold", "ok", f"{len(vocab)} classes, {n} prompts: {el:.1f} s ({n / el:.0f} prompts/s)")


@section("train")
def train_step() -> None:
    cmd = [sys.executable, str(ROOT / "benchmarks/bench_train.py"), "_step", "--batch", "2", "--size", "1024",
           "--steps", "3", "--device", "cuda"]
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=240)
    if p.returncode != 0:
        raise RuntimeError((p.stderr.strip().splitlines() or ["bench_train failed"])[-1])
    r = json.loads(p.stdout.strip().splitlines()[-1])
    row("training step, ConvNeXt-B, batch 2, 1024 crop", "ok",
        f"{r['s_per_step']:.2f} s/step (best of {len(r['s_per_step_all'])}), peak {r['peak_mib']:.0f} MiB, amp={r['amp']}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=30, help="frames per speed run")
    ap.add_argument("--only", default=",".join(SECTIONS),
                    help=f"comma-separated sections to run (default all: {','.join(SECTIONS)})")
    args = ap.parse_args()
    only = set(args.only.split(","))
    if only - set(SECTIONS):
        ap.error(f"unknown section(s) {sorted(only - set(SECTIONS))}: choose from {','.join(SECTIONS)}")
    import torch

    if not torch.cuda.is_available():
        print("gpu_check: error: no CUDA GPU is visible to this process (torch.cuda.is_available() is False): "
              "run this on a machine with an NVIDIA GPU and a CUDA build of torch", file=sys.stderr)
        return 2
    from videogen import make_video

    from clipvis_core.builtin_vocabularies import load_vocabulary
    from clipvis_core.segmenter import Segmenter

    print(f"GPU: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}", flush=True)
    if "parity" in only:
        parity()
    if only & {"speed", "autocast", "oom", "text"}:
        video = str(make_video(TMP / "v480.mp4", num_frames=max(args.frames, 20), height=480, width=854, fps=25))
        seg = Segmenter.load(CKPT, device="cuda")
        vocab = load_vocabulary("ytvis2019")
        seg.text_classifier(vocab)
        for name, fn, fargs in (("speed", speed, (seg, video, vocab, args.frames)),
                                ("autocast", autocast_agreement, (seg, video, vocab)),
                                ("oom", oom_fallback, (seg, video, vocab)), ("text", text_speed, (seg,))):
            if name in only:
                fn(*fargs)
        del seg
        torch.cuda.empty_cache()
    if "train" in only:
        train_step()
    print("\n| check | result | figures |\n| --- | --- | --- |")
    for r in ROWS:
        print("| " + " | ".join(re.sub(r"\|", "/", x) for x in r) + " |")
    return 1 if any(r[1] == "FAIL" for r in ROWS) else 0


if __name__ == "__main__":
    sys.exit(main())
