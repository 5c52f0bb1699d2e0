"""Wall time of ``clipvis_core.evaluation.evaluate`` on a synthetic LV-VIS-val-sized set.

LV-VIS val: ~840 videos, 1 196 categories (base/novel partitions), ~4 GT tracks per video.
Here: moving boxes at a small frame size (RAM stays low; IoU cost per frame is RLE-based and
grows with mask complexity, not pixel count), ``--preds`` predictions per video: some shifted
copies of GT tracks with the right class, the rest wrong-class or random false positives.

    .venv/bin/python benchmarks/bench_eval.py [--videos 800] [--preds 40] [--protocol lvvis]
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _track(rng, n, h, w, present=None):
    """Moving box masks (h, w, n) fortran uint8, with frames outside ``present`` left empty."""
    bh, bw = int(rng.integers(6, h // 2)), int(rng.integers(6, w // 2))
    y, x = int(rng.integers(0, h - bh)), int(rng.integers(0, w - bw))
    vy, vx = (int(v) for v in rng.integers(-2, 3, size=2))
    m = np.zeros((h, w, n), dtype=np.uint8, order="F")
    for f in range(n):
        if present is None or present[f]:
            yy, xx = min(max(y + vy * f, 0), h - bh), min(max(x + vx * f, 0), w - bw)
            m[yy:yy + bh, xx:xx + bw, f] = 1
    return m


def _jitter(rng, m):
    """A prediction near a GT track: shifted by a few pixels, sometimes extended in time."""
    dy, dx = rng.integers(-3, 4, size=2)
    out = np.roll(np.roll(m, dy, axis=0), dx, axis=1)
    if rng.random() < 0.3:
        f = rng.integers(0, m.shape[2])
        out[:, :, f] = m[:, :, max(f - 1, 0)]
    return np.asfortranarray(out)


def _rles(m):
    from pycocotools import mask as mask_utils

    rles = mask_utils.encode(m)
    return [{"size": r["size"], "counts": r["counts"].decode("ascii")} for r in rles]


def make_dataset(videos: int, categories: int, preds_per_video: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    h, w = 48, 64
    cats = [{"id": i + 1, "name": f"class_{i + 1}", "partition": int(i % 4)} for i in range(categories)]
    vids, anns, results = [], [], []
    for v in range(1, videos + 1):
        n = int(rng.integers(8, 33))
        vids.append({"id": v, "height": h, "width": w, "length": n})
        gts = []
        for _ in range(int(rng.integers(1, 8))):
            present = np.ones(n, bool)
            if rng.random() < 0.4:  # enters late / leaves early
                a, b = sorted(rng.integers(0, n, size=2))
                present[:] = False
                present[a:b + 1] = True
            m = _track(rng, n, h, w, present)
            cid = int(rng.integers(1, categories + 1))
            segs = _rles(m)
            anns.append({"id": len(anns) + 1, "video_id": v, "category_id": cid, "iscrowd": int(rng.random() < 0.02),
                         "segmentations": [s if p else None for s, p in zip(segs, present)],
                         "areas": [int(m[:, :, f].sum()) if p else None for f, p in enumerate(present)]})
            gts.append((cid, m))
        for _ in range(preds_per_video):
            r = rng.random()
            if r < 0.35:
                cid, m = gts[rng.integers(len(gts))]
                m = _jitter(rng, m)
                if r < 0.1:
                    cid = int(rng.integers(1, categories + 1))  # right place, wrong class
            else:
                cid, m = int(rng.integers(1, categories + 1)), _track(rng, n, h, w)
            results.append({"video_id": v, "category_id": cid, "score": float(rng.random()), "segmentations": _rles(m)})
    return {"videos": vids, "categories": cats, "annotations": anns}, results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=int, default=800)
    ap.add_argument("--categories", type=int, default=1196)
    ap.add_argument("--preds", type=int, default=40, help="predictions per video")
    ap.add_argument("--protocol", default="lvvis", choices=["ytvis", "lvvis"])
    args = ap.parse_args()

    from clipvis_core.evaluation import evaluate

    t0 = time.perf_counter()
    gt, results = make_dataset(args.videos, args.categories, args.preds)
    with tempfile.TemporaryDirectory() as tmp:
        gt_path, res_path = Path(tmp) / "gt.json", Path(tmp) / "results.json"
        gt_path.write_text(json.dumps(gt))
        res_path.write_text(json.dumps(results))
        frames = sum(v["length"] for v in gt["videos"])
        print(f"synthetic set: {len(gt['videos'])} videos, {frames} frames, {len(gt['categories'])} categories, "
              f"{len(gt['annotations'])} GT tracks, {len(results)} predictions "
              f"(generated in {time.perf_counter() - t0:.1f} s; results.json {res_path.stat().st_size / 2**20:.0f} MiB)")
        del gt, results
        t1 = time.perf_counter()
        report = evaluate(gt_path, res_path, args.protocol)
        wall = time.perf_counter() - t1
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"evaluate(protocol={args.protocol}) wall time incl. JSON loading: {wall:.1f} s; peak RSS {rss:.0f} MiB")
    print("AP {AP:.4f}  AP50 {AP50:.4f}  AR100 {AR100:.4f}".format(**report.stats)
          + (f"  APb {report.base_novel['AP']['base']:.4f}  APn {report.base_novel['AP']['novel']:.4f}"
             if report.base_novel else ""))


if __name__ == "__main__":
    main()
