"""Interleaved A/B speed comparisons in ONE process (prints figures; not a test).

On a shared machine, runs minutes apart see different load; alternating A and B round by round and
taking medians of the per-round ratios cancels most of it. Wall and process CPU time are printed
with the load average.

  python benchmarks/bench_ab.py speed   [--frames 10] [--rounds 3]
      upstream's whole-video algorithm (windows of 10) vs the streaming segmenter on the same
      frames (full-size ConvNeXt-B, random weights, 480x854), alternating; output check on round 1.
  python benchmarks/bench_ab.py kernels [--rounds 4]
      one frame's network forward with plain PyTorch/MKL kernels vs the oneDNN path
      (modeling/cpu_kernels.py), per stage (trunk, pixel decoder, decoder), alternating.
"""
from __future__ import annotations

import argparse
import os
import statistics as st
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))
CHECKPOINT = "random:clipvis-convnext-b-dec10"


def clock():
    return time.perf_counter(), time.process_time()


def since(t):
    w, c = clock()
    return w - t[0], c - t[1]


def load() -> str:
    return "load " + "/".join(f"{v:.1f}" for v in os.getloadavg())


def cmd_speed(args) -> None:
    import numpy as np

    from bench_segment import synthetic_video
    from clipvis_core.builtin_vocabularies import load_vocabulary
    from clipvis_core.segmenter import SegmentOptions, Segmenter
    from clipvis_core.tracks import VideoTracks
    from clipvis_core.video import open_video
    from clipvis_core.whole_video import segment_whole_video

    tmp = Path(tempfile.mkdtemp(prefix="clipvis-ab-"))
    video = synthetic_video(tmp / "video.mp4", args.frames, args.height, args.width)
    seg = Segmenter.load(CHECKPOINT, device="cpu")
    vocab = load_vocabulary(args.vocab)
    opts = SegmentOptions()
    seg.text_classifier(vocab)
    with open_video(video) as r:
        frames = np.stack([f for _, f in r])
    seg.segment(frames[:2], vocab, opts)  # warm-up both paths
    segment_whole_video(seg, frames[:2], vocab, opts)
    print(f"{CHECKPOINT}, {args.frames} frames {args.height}x{args.width}, {torch_threads()} threads, {load()}")
    ratios, walls = [], {"whole": [], "stream": []}
    for rnd in range(args.rounds):
        order = ("whole", "stream") if rnd % 2 == 0 else ("stream", "whole")
        res, row = {}, {}
        for impl in order:
            t = clock()
            # The streaming side decodes the file itself, as in bench_segment.py speed; the
            # whole-video side gets the decoded frames (upstream decodes before inference).
            res[impl] = seg.segment(str(video), vocab, opts) if impl == "stream" else segment_whole_video(seg, frames, vocab, opts)
            row[impl] = since(t)
            walls[impl].append(row[impl][0])
        ratios.append(row["whole"][0] / row["stream"][0])
        print(f"  round {rnd + 1}: whole {row['whole'][0] / args.frames:.2f} s/frame (cpu {row['whole'][1] / args.frames:.2f}), "
              f"stream {row['stream'][0] / args.frames:.2f} s/frame (cpu {row['stream'][1] / args.frames:.2f}), "
              f"speed-up {ratios[-1]:.2f}x (cpu {row['whole'][1] / row['stream'][1]:.2f}x), {load()}", flush=True)
        if rnd == 0:
            a, b = tmp / "s.json", tmp / "w.json"
            res["stream"].save(a)
            res["whole"].save(b)
            print("  outputs:", compare(VideoTracks.load(a), VideoTracks.load(b)))
    print(f"  median speed-up streaming vs upstream whole-video: {st.median(ratios):.2f}x "
          f"(whole {args.frames / st.median(walls['whole']):.3f} frames/s, stream {args.frames / st.median(walls['stream']):.3f})")


def compare(x, y) -> str:
    from clipvis_core.tracks import decode_mask

    same = [t.category_id for t in x.tracks] == [t.category_id for t in y.tracks]
    dscore = max(abs(s.score - t.score) for s, t in zip(x.tracks, y.tracks))
    flips = sum(int((decode_mask(m) != decode_mask(n)).sum()) for s, t in zip(x.tracks, y.tracks) for m, n in zip(s.masks, t.masks))
    pixels = sum(decode_mask(m).size for t in x.tracks for m in t.masks)
    return f"same classes/order: {same}, max score diff {dscore:.2e}, mask pixels differing {flips} of {pixels}"


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def cmd_kernels(args) -> None:
    import torch

    from clipvis_core.modeling.model import ClipVisModel
    from clipvis_core.weights import load_model, resolve_checkpoint

    m = load_model(resolve_checkpoint(CHECKPOINT))
    x = torch.randn(1, 3, args.height, args.width, generator=torch.Generator().manual_seed(0))
    from bench_segment import stage_timer

    acc: dict[str, float] = {}
    timed = stage_timer(acc)

    m.backbone.forward = timed("trunk", m.backbone.forward)
    m.backbone.forward_fast = timed("trunk", m.backbone.forward_fast)
    for name, mod in (("pixel decoder", m.sem_seg_head.pixel_decoder), ("decoder", m.sem_seg_head.predictor)):
        mod.forward = timed(name, mod.forward)
    rows: dict[str, list[dict[str, float]]] = {"plain": [], "oneDNN": []}
    with torch.inference_mode():
        outs = {}
        for kind in rows:  # warm-up and output check
            ClipVisModel.upstream_kernels = kind == "plain"
            outs[kind] = m.forward_frames(x).decoder
        a, b = outs["plain"], outs["oneDNN"]
        print(f"{CHECKPOINT}, one frame {args.height}x{args.width}, {torch_threads()} threads, {load()}")
        print("  max abs diff: " + ", ".join(f"{k} {(getattr(a, k) - getattr(b, k)).abs().max().item():.1e}"
                                             for k in ("object_logits", "masks", "ious", "embeds"))
              + f"; mask sign flips {int(((a.masks > 0) != (b.masks > 0)).sum())} of {a.masks.numel()}")
        for rnd in range(args.rounds):
            for kind in (("plain", "oneDNN") if rnd % 2 == 0 else ("oneDNN", "plain")):
                ClipVisModel.upstream_kernels = kind == "plain"
                acc.clear()
                t = time.perf_counter()
                m.forward_frames(x)
                acc["total"] = time.perf_counter() - t
                rows[kind].append(dict(acc))
            print(f"  round {rnd + 1}: plain {rows['plain'][-1]['total']:.2f} s, oneDNN {rows['oneDNN'][-1]['total']:.2f} s, {load()}", flush=True)
    ClipVisModel.upstream_kernels = False
    print("  | stage | plain s/frame | oneDNN s/frame | speed-up (median of rounds) |\n  | --- | --- | --- | --- |")
    for k in ("trunk", "pixel decoder", "decoder", "total"):
        p, f = [r[k] for r in rows["plain"]], [r[k] for r in rows["oneDNN"]]
        print(f"  | {k} | {st.median(p):.3f} | {st.median(f):.3f} | {st.median(u / v for u, v in zip(p, f)):.2f}x |")


def main() -> None:
    import torch

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("speed")
    s.add_argument("--frames", type=int, default=10)
    s.add_argument("--rounds", type=int, default=3)
    s.add_argument("--vocab", default="ytvis2019")
    k = sub.add_parser("kernels")
    k.add_argument("--rounds", type=int, default=4)
    for sp, width in ((s, 854), (k, 864)):  # kernels: a frame already padded to the size divisibility
        sp.add_argument("--height", type=int, default=480)
        sp.add_argument("--width", type=int, default=width)
    args = p.parse_args()
    {"speed": cmd_speed, "kernels": cmd_kernels}[args.cmd](args)


if __name__ == "__main__":
    main()
