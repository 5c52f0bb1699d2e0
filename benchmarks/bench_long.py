"""Long videos: temp disk per frame, RAM, time, output sizes, keyframes (prints figures; not a test).

  python benchmarks/bench_long.py disk [--checkpoint random:clipvis-convnext-b-dec10] [--frames 6]
      temp disk per frame of the frame store vs raw float32 logits (ConvNeXt-B at 480p by default).
  python benchmarks/bench_long.py long [--lengths 1000 10000 50000] [--height 96 --width 128]
      tiny model, each length in a fresh process: time, peak RSS, temp disk per frame, output file
      sizes (tracks JSON, YTVIS JSON) and Label Studio keyframes per track before/after.
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


def moving_shapes(path: Path, frames: int, h: int, w: int) -> Path:
    """A long synthetic video written frame by frame (never all frames in RAM)."""
    import cv2
    from videogen import shape_frames

    if not path.exists():
        out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, (w, h))
        period = 200  # the shapes cross the frame every 200 frames
        for t in range(frames):
            f = shape_frames(period, h, w, seed=t // period)[t % period]
            out.write(f[..., ::-1].copy())
        out.release()
    return path


def worker(args) -> None:
    import torch

    from clipvis_core.export.ytvis import iter_ytvis_results, write_ytvis_results
    from clipvis_core.keyframes import KeyframeOptions, sparse_keyframes
    from clipvis_core.segmenter import SegmentOptions, Segmenter

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    seg = Segmenter.load(args.checkpoint, device="cpu")
    vocab = ["person", "car", "red ball", "green box"]
    opts = SegmentOptions(min_size=args.min_size, max_frames=args.frames)
    seg.segment(args.video, vocab, SegmentOptions(min_size=args.min_size, max_frames=2))  # warm-up
    rss0 = peak_rss_mib()
    t0 = time.perf_counter()
    last = None
    for p in seg.iter_segment(args.video, vocab, opts):
        last = p
    elapsed = time.perf_counter() - t0
    result = last.result
    out = Path(args.out)
    result.save(out / "tracks.json")
    write_ytvis_results(out / "ytvis.json", iter_ytvis_results(result))
    kopt = KeyframeOptions()
    before = after = 0
    for tr in result.tracks:
        boxes = tr.boxes
        before += sum(b is not None for b in boxes)
        after += len(sparse_keyframes(boxes, result.video.width, result.video.height, kopt))
    n = result.video.num_frames
    print(json.dumps({"frames": n, "seconds": elapsed, "peak_rss_mib": peak_rss_mib(), "rss_after_warmup_mib": rss0,
                      "temp_bytes_per_frame": last.temp_bytes / n,
                      "tracks_json_mb": (out / "tracks.json").stat().st_size / 1e6,
                      "ytvis_json_mb": (out / "ytvis.json").stat().st_size / 1e6,
                      "keyframes_before": before / max(len(result.tracks), 1),
                      "keyframes_after": after / max(len(result.tracks), 1)}))


def run_worker(**kw) -> dict:
    cmd = [sys.executable, __file__, "_worker"] + [f"--{k.replace('_', '-')}={v}" for k, v in kw.items() if v is not None]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def cmd_disk(args) -> None:
    import numpy as np
    import torch

    from clipvis_core.segmenter import SegmentOptions, Segmenter
    from videogen import shape_frames

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    seg = Segmenter.load(args.checkpoint, device="cpu")
    frames = shape_frames(args.frames, args.height, args.width)
    vocab = ["person", "car", "dog", "bicycle"] * (args.classes // 4)
    vocab = [f"{v} {i}" for i, v in enumerate(vocab)]
    last = None
    for p in seg.iter_segment(frames, vocab, SegmentOptions()):
        last = p
    q, c = seg.cfg.decoder.num_queries, len(vocab)
    h, w = args.height, args.width
    from clipvis_core.preprocess import geometry

    inf = seg.cfg.inference
    g = geometry(h, w, inf.min_size, inf.max_size, seg.cfg.size_divisibility)
    raw = 4 * q * (g.padded_hw[0] // 4 * g.padded_hw[1] // 4 + c + 2)
    per = last.temp_bytes / last.frames_done
    print(f"{args.checkpoint}, {args.frames} frames {h}x{w} (padded {g.padded_hw}), Q={q}, C={c}")
    print(f"  raw float32 store: {raw:,} bytes/frame; compact store: {per:,.0f} bytes/frame "
          f"({per / 2**20:.3f} MiB, {raw / per:.0f}x smaller); tracks {len(last.result.tracks)}, "
          f"{np.mean([len(t.present_frames()) for t in last.result.tracks]):.1f} present frames/track")


def cmd_long(args) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="clipvis-bench-long-"))
    video = moving_shapes(tmp / "long.avi", max(args.lengths), args.height, args.width)
    print(f"tiny model ({args.checkpoint}), {args.height}x{args.width}, min_size {args.min_size}, "
          f"{os.environ.get('BENCH_THREADS', '2')} threads")
    for n in args.lengths:
        out = tmp / f"out{n}"
        out.mkdir()
        r = run_worker(checkpoint=args.checkpoint, video=video, frames=n, out=out, min_size=args.min_size)
        print(f"  {n:6d} frames: {r['seconds']:8.1f} s ({r['seconds'] / n * 1000:.1f} ms/frame), peak RSS "
              f"{r['peak_rss_mib']:.0f} MiB (after warm-up {r['rss_after_warmup_mib']:.0f}), temp disk "
              f"{r['temp_bytes_per_frame']:.0f} B/frame, tracks.json {r['tracks_json_mb']:.1f} MB, "
              f"ytvis.json {r['ytvis_json_mb']:.1f} MB, keyframes/track {r['keyframes_before']:.0f} -> "
              f"{r['keyframes_after']:.0f}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("disk")
    d.add_argument("--checkpoint", default="random:clipvis-convnext-b-dec10")
    d.add_argument("--frames", type=int, default=6)
    d.add_argument("--height", type=int, default=480)
    d.add_argument("--width", type=int, default=854)
    d.add_argument("--classes", type=int, default=40)
    lo = sub.add_parser("long")
    lo.add_argument("--checkpoint", default="random:tiny")
    lo.add_argument("--lengths", type=int, nargs="+", default=[1000, 10000, 50000])
    lo.add_argument("--height", type=int, default=96)
    lo.add_argument("--width", type=int, default=128)
    lo.add_argument("--min-size", type=int, default=96)
    w = sub.add_parser("_worker")
    for a in ("--checkpoint", "--video", "--out"):
        w.add_argument(a)
    w.add_argument("--frames", type=int)
    w.add_argument("--min-size", type=int)
    args = ap.parse_args()
    {"disk": cmd_disk, "long": cmd_long, "_worker": worker}[args.cmd](args)


if __name__ == "__main__":
    main()
