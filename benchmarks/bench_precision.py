"""What bf16 / fp16 autocast change against fp32, and how fast each is (prints figures; not a test).

  python benchmarks/bench_precision.py full    [--frames 8] [--video PATH] [--device cpu|cuda]
      full-size ConvNeXt-B (random weights) on a real video (OpenCV's vtest.avi when fetched, else a
      generated 480x854 clip), resized to the model's 480 px test size.
  python benchmarks/bench_precision.py fixture [--device cpu|cuda]
      the parity fixture's tiny checkpoint on its 2-frame video.

Every precision runs on the same loaded model in one process (after a warm-up), so the speed ratios
are side by side. Tracks of a low precision are paired with fp32's by Hungarian matching on
(1 - video mask IoU) + (1 where the class differs); reported:
  top-k agreement  share of fp32's k best tracks whose partner is among the other run's k best, with
                   the same class and video mask IoU >= 0.5 (k = 10 and every track)
  mask IoU         mean / min video mask IoU (intersection and union summed over frames) of the pairs
                   among fp32's 10 best
  score diff       mean / max |score difference| of those pairs
  class changes    pairs (IoU >= 0.5) whose class differs, among all tracks
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
VTEST = ROOT / ".cache/debian/opencv-doc/usr/share/doc/opencv-doc/examples/data/vtest.avi"


def video_iou(a, b) -> np.ndarray:
    """[len(a), len(b)] video mask IoU of two track lists (RLEs per frame)."""
    from pycocotools import mask as mask_utils

    inter = np.zeros((len(a), len(b)))
    union = np.zeros((len(a), len(b)))
    for f in range(len(a[0].masks) if a else 0):
        ra = [_rle(t.masks[f]) for t in a]
        rb = [_rle(t.masks[f]) for t in b]
        area_a, area_b = mask_utils.area(ra).astype(float), mask_utils.area(rb).astype(float)
        iou = np.asarray(mask_utils.iou(ra, rb, [0] * len(rb))).reshape(len(a), len(b))
        sums = area_a[:, None] + area_b[None, :]
        i = iou * sums / (1 + iou)  # iou = i / (sums - i)
        inter += i
        union += sums - i
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 1.0)  # two empty tracks agree


def _rle(r: dict) -> dict:
    return {"size": r["size"], "counts": r["counts"].encode() if isinstance(r["counts"], str) else r["counts"]}


def agreement(ref, other) -> dict:
    from scipy.optimize import linear_sum_assignment

    a, b = ref.tracks, other.tracks
    iou = video_iou(a, b)
    same = np.array([[x.category_id == y.category_id for y in b] for x in a])
    rows, cols = linear_sum_assignment((1 - iou) + (~same))
    partner = dict(zip(rows.tolist(), cols.tolist()))

    def topk(k):
        hits = sum(1 for i in range(min(k, len(a))) if i in partner and partner[i] < k
                   and same[i, partner[i]] and iou[i, partner[i]] >= 0.5)
        return hits / max(min(k, len(a)), 1)

    top = [(i, partner[i]) for i in range(min(10, len(a))) if i in partner]
    ious = [iou[i, j] for i, j in top]
    dscore = [abs(a[i].score - b[j].score) for i, j in top]
    changes = sum(1 for i, j in partner.items() if iou[i, j] >= 0.5 and not same[i, j])
    return {"top10": topk(10), "top_all": topk(len(a)), "iou_mean": float(np.mean(ious)), "iou_min": float(np.min(ious)),
            "dscore_mean": float(np.mean(dscore)), "dscore_max": float(np.max(dscore)), "class_changes": changes,
            "tracks": len(a)}


def run_all(seg, source, vocab, opts_kw: dict, precisions, repeats: int = 1) -> dict:
    """precision -> (VideoTracks, seconds per frame, median of ``repeats``)."""
    from clipvis_core.segmenter import SegmentOptions

    out = {}
    for p in precisions:
        opts = SegmentOptions(precision=p, **opts_kw)
        seg.segment(_first_frames(source, 1), vocab, opts)  # warm-up (one-off allocations, autocast caches)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            res = seg.segment(source, vocab, opts)
            times.append((time.perf_counter() - t0) / res.video.num_frames)
        out[p] = (res, float(np.median(times)))
    return out


def _first_frames(source, n):
    if isinstance(source, np.ndarray):
        return source[:n]
    from clipvis_core.video import open_video

    with open_video(source, max_frames=n) as r:
        return np.stack([f for _, f in r])


def report(title: str, runs: dict) -> None:
    print(title)
    print(f"  load average {os.getloadavg()[0]:.1f} (1 min), {os.environ.get('BENCH_THREADS', '2')} threads")
    print("  | precision | s/frame | speed vs fp32 | top-10 agree | top-all agree | mask IoU mean / min | "
          "score diff mean / max | class changes |")
    print("  | --- | --- | --- | --- | --- | --- | --- | --- |")
    ref, t_ref = runs["fp32"]
    for p, (res, t) in runs.items():
        if p == "fp32":
            print(f"  | fp32 | {t:.3f} | 1.00x | - | - | - | - | - ({len(res.tracks)} tracks) |")
            continue
        g = agreement(ref, res)
        print(f"  | {p} | {t:.3f} | {t_ref / t:.2f}x | {g['top10']:.2f} | {g['top_all']:.2f} | "
              f"{g['iou_mean']:.3f} / {g['iou_min']:.3f} | {g['dscore_mean']:.2e} / {g['dscore_max']:.2e} | "
              f"{g['class_changes']} |")


def _precisions(device: str):
    if device.startswith("cuda"):
        return ("fp32", "bf16", "fp16")
    from clipvis_core.errors import InputError
    from clipvis_core.precision import check_precision

    try:
        check_precision("bf16", "cpu")
    except InputError as e:  # emulated bf16 takes minutes a frame: nothing to compare
        print(f"bf16 skipped: {e}")
        return ("fp32",)
    return ("fp32", "bf16")


def cmd_full(args) -> None:
    import torch

    from clipvis_core.builtin_vocabularies import load_vocabulary
    from clipvis_core.segmenter import Segmenter

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    video = Path(args.video) if args.video else (VTEST if VTEST.exists() else None)
    if video is None:
        from videogen import make_video

        video = make_video(Path(tempfile.mkdtemp(prefix="clipvis-prec-")) / "v.mp4", num_frames=args.frames,
                           height=480, width=854, fps=25)
    seg = Segmenter.load(args.checkpoint, device=args.device)
    vocab = load_vocabulary(args.vocab)
    seg.text_classifier(vocab)
    runs = run_all(seg, str(video), vocab, {"max_frames": args.frames, "window": args.window}, _precisions(seg.device.type))
    report(f"{args.checkpoint} (random weights), {video.name}, {args.frames} frames at the model's test size, "
           f"vocabulary {args.vocab}, device {seg.device}", runs)


def cmd_fixture(args) -> None:
    import torch

    from clipvis_core.config import ModelConfig
    from clipvis_core.segmenter import Segmenter

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    ref = Path(os.environ.get("CLIPVIS_REFERENCE_DIR", ROOT.parent / "shared" / "reference"))
    cfg = ModelConfig.from_reference(ref / "tiny_config.json")
    card = Path(tempfile.mkdtemp(prefix="clipvis-prec-")) / "tiny_card.json"
    card.write_text(json.dumps({"config": cfg.to_dict(), "checkpoint": str(ref / "tiny_model.pth")}))
    seg = Segmenter.load(str(card), device=args.device)
    frames = np.load(ref / "video_input.npz")["frames_uint8"]
    vocab = json.loads((ref / "tiny_config.json").read_text())["vocabulary"]
    runs = run_all(seg, frames, vocab, {"min_size": 0}, _precisions(seg.device.type), repeats=5)
    report(f"parity fixture (tiny checkpoint, {len(frames)} frames {frames.shape[1]}x{frames.shape[2]}, "
           f"{len(vocab)} classes), device {seg.device}", runs)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("full")
    f.add_argument("--frames", type=int, default=8)
    f.add_argument("--video")
    f.add_argument("--vocab", default="ytvis2019")
    f.add_argument("--checkpoint", default="random:clipvis-convnext-b-dec10")
    f.add_argument("--window", type=int)
    f.add_argument("--device", default="cpu")
    x = sub.add_parser("fixture")
    x.add_argument("--device", default="cpu")
    args = p.parse_args()
    {"full": cmd_full, "fixture": cmd_fixture}[args.cmd](args)


if __name__ == "__main__":
    main()
