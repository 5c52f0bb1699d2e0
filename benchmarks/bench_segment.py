"""Segmentation speed and memory (prints figures; not a test).

  python benchmarks/bench_segment.py speed  [--frames 20] [--height 480 --width 854] [--device cpu|cuda]
      (a)+(c): full-size ConvNeXt-B (random weights) streaming vs upstream's whole-video algorithm,
      each in a fresh process: frames/s, peak RSS, identical-output check.
  python benchmarks/bench_segment.py memory [--short 200 --long 2000]
      (b): peak RSS of the streaming API at two video lengths (must stay flat, <= 1.2x).
  python benchmarks/bench_segment.py text   [--vocab lvvis]
      (d): text classifier cold vs cached for a built-in vocabulary (full-size text tower).
  python benchmarks/bench_segment.py stages [--frames 4] [--precision fp32|bf16]
      where the streaming segmenter's time goes, per stage (full-size ConvNeXt-B, 480x854).
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
sys.path.insert(0, str(ROOT / "tests"))


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def stage_timer(acc: dict[str, float]):
    """``timed(name, fn)``: ``fn`` wrapped to add its wall time to ``acc[name]``."""
    def timed(name, fn):
        def wrapper(*a, **k):
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                acc[name] = acc.get(name, 0.0) + time.perf_counter() - t0
        return wrapper
    return timed


def synthetic_video(path: Path, frames: int, h: int, w: int) -> Path:
    from videogen import make_video

    if not path.exists():
        make_video(path, num_frames=frames, height=h, width=w, fps=25)
    return path


def worker(args) -> None:
    """Runs in a fresh process; prints one JSON line."""
    import numpy as np
    import torch

    from clipvis_core.builtin_vocabularies import load_vocabulary
    from clipvis_core.segmenter import SegmentOptions, Segmenter
    from clipvis_core.video import open_video

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    seg = Segmenter.load(args.checkpoint, device=args.device)
    vocab = load_vocabulary(args.vocab)
    opts = SegmentOptions(min_size=args.min_size) if args.min_size is not None else SegmentOptions()
    seg.text_classifier(vocab)  # text encoding is measured separately (bench `text`)
    # Warm-up on a few frames so one-off allocations are not timed.
    with open_video(args.video, max_frames=2) as r:
        warm = np.stack([f for _, f in r])
    seg.segment(warm, vocab, opts)
    rss_before = peak_rss_mib()
    t0 = time.perf_counter()
    if args.impl == "stream":
        result = seg.segment(args.video, vocab, opts)
    else:
        from clipvis_core.whole_video import segment_whole_video

        with open_video(args.video) as r:
            frames = np.stack([f for _, f in r])
        result = segment_whole_video(seg, frames, vocab, opts)
    elapsed = time.perf_counter() - t0
    if args.save:
        result.save(args.save)
    print(json.dumps({"impl": args.impl, "frames": result.video.num_frames, "seconds": elapsed,
                      "fps": result.video.num_frames / elapsed, "peak_rss_mib": peak_rss_mib(),
                      "rss_after_warmup_mib": rss_before}))


def run_worker(**kw) -> dict:
    cmd = [sys.executable, __file__, "_worker"] + [f"--{k.replace('_', '-')}={v}" for k, v in kw.items() if v is not None]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def compare(a: str, b: str) -> str:
    from clipvis_core.tracks import VideoTracks, decode_mask

    x, y = VideoTracks.load(a), VideoTracks.load(b)
    same_cls = [t.category_id for t in x.tracks] == [t.category_id for t in y.tracks]
    dscore = max(abs(s.score - t.score) for s, t in zip(x.tracks, y.tracks))
    flips = sum(int((decode_mask(m) != decode_mask(n)).sum()) for s, t in zip(x.tracks, y.tracks) for m, n in zip(s.masks, t.masks))
    return f"same classes/order: {same_cls}, max score diff {dscore:.2e}, mask pixels differing {flips}"


def cmd_speed(args) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="clipvis-bench-"))
    video = synthetic_video(tmp / "video.mp4", args.frames, args.height, args.width)
    ck = "random:clipvis-convnext-b-dec10"
    print(f"full-size ConvNeXt-B (random weights), {args.frames} frames {args.height}x{args.width}, "
          f"vocabulary {args.vocab}, device {args.device}, {os.environ.get('BENCH_THREADS', '2')} threads")
    rows = {}
    for impl in ("whole", "stream"):
        rows[impl] = run_worker(impl=impl, checkpoint=ck, video=video, vocab=args.vocab, device=args.device,
                                save=tmp / f"{impl}.json")
        r = rows[impl]
        print(f"  {impl:6s}: {r['fps']:.3f} frames/s ({r['seconds']:.1f} s), peak RSS {r['peak_rss_mib'] / 1024:.2f} GiB")
    print(f"  speed-up streaming vs upstream whole-video: {rows['stream']['fps'] / rows['whole']['fps']:.2f}x; "
          f"peak RSS ratio {rows['stream']['peak_rss_mib'] / rows['whole']['peak_rss_mib']:.2f}")
    print("  outputs:", compare(tmp / "stream.json", tmp / "whole.json"))


def cmd_memory(args) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="clipvis-bench-"))
    rows = []
    for n in (args.short, args.long):
        video = synthetic_video(tmp / f"v{n}.mp4", n, args.height, args.width)
        r = run_worker(impl="stream", checkpoint=args.checkpoint, video=video, vocab="ytvis2019", device="cpu")
        rows.append(r)
        print(f"  {n:5d} frames: peak RSS {r['peak_rss_mib']:.0f} MiB, {r['fps']:.1f} frames/s")
    print(f"  peak RSS ratio {args.long}/{args.short} frames: {rows[1]['peak_rss_mib'] / rows[0]['peak_rss_mib']:.3f} (goal <= 1.2)")


def cmd_text(args) -> None:
    import torch

    from clipvis_core.builtin_vocabularies import load_vocabulary
    from clipvis_core.modeling.clip_adapter import build_tokenizer
    from clipvis_core.text import build_text_classifier
    from clipvis_core.weights import load_model, resolve_checkpoint

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    model = load_model(resolve_checkpoint(args.checkpoint))
    tok = build_tokenizer(model.cfg.clip_model_name)
    vocab = load_vocabulary(args.vocab)
    cache = Path(tempfile.mkdtemp(prefix="clipvis-textcache-"))
    n_prompts = len(vocab.prompts())
    t0 = time.perf_counter()
    build_text_classifier(model.backbone, tok, vocab, cache)
    cold = time.perf_counter() - t0
    t0 = time.perf_counter()
    build_text_classifier(model.backbone, tok, vocab, cache)
    warm = time.perf_counter() - t0
    print(f"  {args.vocab}: {len(vocab)} classes, {n_prompts} prompts; cold {cold:.1f} s ({n_prompts / cold:.0f} prompts/s), "
          f"cached {warm:.3f} s ({100 * warm / cold:.2f} % of cold)")


def cmd_stages(args) -> None:
    """Per-stage wall time of one streaming run: hooks on the network's three modules, wrappers
    around decode, preprocessing, the per-frame store write (mask resize + RLE) and the final pass."""
    import numpy as np
    import torch

    import clipvis_core.segmenter as S
    from clipvis_core.builtin_vocabularies import load_vocabulary

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    tmp = Path(tempfile.mkdtemp(prefix="clipvis-bench-"))
    video = synthetic_video(tmp / "video.mp4", args.frames + 1, args.height, args.width)
    seg = S.Segmenter.load(args.checkpoint, device="cpu")
    vocab = load_vocabulary(args.vocab)
    seg.text_classifier(vocab)
    acc: dict[str, float] = {}
    timed = stage_timer(acc)

    seg.model.backbone.forward_fast = timed("backbone (trunk)", seg.model.backbone.forward_fast)
    for name, mod in (("backbone (trunk)", seg.model.backbone), ("pixel decoder", seg.model.sem_seg_head.pixel_decoder),
                      ("transformer decoder", seg.model.sem_seg_head.predictor)):
        mod.forward = timed(name, mod.forward)
    src = S._frames_source

    def frames_source(source, opts):
        info, open_frames, close = src(source, opts)

        def gen(start=0):
            it = iter(open_frames(start))
            step = timed("video decode", lambda: next(it, None))
            while (f := step()) is not None:
                yield f
        return info, gen, close
    S._frames_source = frames_source
    S.prepare_frames = timed("preprocess", S.prepare_frames)
    S.FrameStore.write = timed("store write (resize + RLE of every query)", S.FrameStore.write)
    S.build_tracks = timed("final pass (build tracks)", S.build_tracks)
    from clipvis_core.segmenter import SegmentOptions

    with __import__("clipvis_core.video", fromlist=["open_video"]).open_video(video, max_frames=1) as r:
        seg.segment(np.stack([f for _, f in r]), vocab, SegmentOptions(precision=args.precision))  # warm-up
    acc.clear()
    t0 = time.perf_counter()
    res = seg.segment(str(video), vocab, SegmentOptions(max_frames=args.frames, precision=args.precision))
    total = time.perf_counter() - t0
    n = res.video.num_frames
    acc["other (matching, mask pooling, scoring)"] = total - sum(acc.values())
    print(f"{args.checkpoint}, {n} frames {args.height}x{args.width}, {args.precision}, "
          f"{os.environ.get('BENCH_THREADS', '2')} threads, load average {os.getloadavg()[0]:.1f}")
    print("  | stage | s/frame | share |\n  | --- | --- | --- |")
    for k, v in acc.items():
        print(f"  | {k} | {v / n:.3f} | {100 * v / total:.0f} % |")
    print(f"  | **total** | **{total / n:.3f}** ({n / total:.3f} frames/s) | |")


def main() -> None:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("speed")
    s.add_argument("--frames", type=int, default=20)
    s.add_argument("--height", type=int, default=480)
    s.add_argument("--width", type=int, default=854)
    s.add_argument("--vocab", default="ytvis2019")
    s.add_argument("--device", default="cpu")
    m = sub.add_parser("memory")
    m.add_argument("--short", type=int, default=200)
    m.add_argument("--long", type=int, default=2000)
    m.add_argument("--height", type=int, default=240)
    m.add_argument("--width", type=int, default=320)
    m.add_argument("--checkpoint", default="random:tiny")
    t = sub.add_parser("text")
    t.add_argument("--vocab", default="lvvis")
    t.add_argument("--checkpoint", default="random:clipvis-convnext-b-dec10")
    g = sub.add_parser("stages")
    g.add_argument("--frames", type=int, default=4)
    g.add_argument("--height", type=int, default=480)
    g.add_argument("--width", type=int, default=854)
    g.add_argument("--vocab", default="ytvis2019")
    g.add_argument("--precision", default="fp32")
    g.add_argument("--checkpoint", default="random:clipvis-convnext-b-dec10")
    w = sub.add_parser("_worker")
    for a in ("impl", "checkpoint", "video", "vocab", "device", "save"):
        w.add_argument(f"--{a}")
    w.add_argument("--min-size", type=int)
    args = p.parse_args()
    {"speed": cmd_speed, "memory": cmd_memory, "text": cmd_text, "stages": cmd_stages, "_worker": worker}[args.cmd](args)


if __name__ == "__main__":
    main()
