"""``clipvis eval``: score YTVIS-format results against YTVIS-format ground truth."""
from __future__ import annotations

import argparse
import sys
import time


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "eval",
        aliases=["evaluate"],
        help="evaluate video instance segmentation results (YTVIS / LV-VIS AP, AR)",
        description="Evaluate YTVIS-format results against YTVIS-format ground truth with the "
        "YouTube-VIS or LV-VIS protocol; prints a table and optionally writes the metrics as JSON.",
    )
    p.add_argument("--gt", required=True, help="ground truth JSON (videos, categories, annotations)")
    p.add_argument("--results", required=True, help="results JSON: list of {video_id, category_id, score, segmentations}")
    p.add_argument("--protocol", choices=["ytvis", "lvvis"], default="ytvis",
                   help="ytvis: crowd GT ignored (YTVOSeval); lvvis: LVVISeval, adds AP-base / AP-novel (default: ytvis)")
    p.add_argument("--class-agnostic", action="store_true",
                   help="count every category as one: judges mask quality apart from the vocabulary")
    p.add_argument("--output", "-o", help="write the full report (stats, per-category AP, per-video scores) here as JSON")
    p.add_argument("--categories", type=int, default=30, help="per-category rows to print, lowest AP first (default 30)")
    p.add_argument("--worst", type=int, default=5, help="worst videos to print (default 5)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..evaluation import evaluate
    from ..tracks import write_atomic

    start = time.perf_counter()
    report = evaluate(args.gt, args.results, args.protocol, class_agnostic=args.class_agnostic)
    elapsed = time.perf_counter() - start
    if args.output:  # written before printing, so a closed stdout pipe cannot lose it
        write_atomic(args.output, report.to_json())
    print(report.format_table(max_categories=args.categories, worst=args.worst))
    print(f"\nevaluated in {elapsed:.1f} s" + (f"; wrote {args.output}" if args.output else ""), file=sys.stderr)
    return 0
