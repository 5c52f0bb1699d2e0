"""`clipvis segment`: segment one video (file, frame directory or image) and write its tracks.

Only parses arguments and calls the core: vocabulary -> Segmenter.iter_segment (with a progress
bar) -> tracks JSON or YTVIS results (atomic write) -> optional overlay video.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from ..errors import InputError
from ..precision import PRECISIONS


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "segment", help="segment a video with an open vocabulary and write instance tracks",
        description="Segment and track every instance of the given classes in a video, a frame directory "
                    "(YouTube-VIS / LV-VIS layout) or an image.",
    )
    p.add_argument("input", help="video file, directory of frames, or image")
    p.add_argument("--checkpoint", required=True, metavar="NAME|CARD|PTH",
                   help="registered model name, model-card .json or .pth checkpoint")
    p.add_argument("--output", "-o", required=True, type=Path, metavar="OUT.json", help="where to write the results")
    voc = p.add_argument_group("vocabulary (at least one; several are concatenated)")
    voc.add_argument("--class", dest="classes", action="append", default=[], metavar="NAME",
                     help='a class; repeat for more; synonyms comma-separated: --class "car, automobile"')
    voc.add_argument("--vocab-file", type=Path, metavar="FILE", help="text file, one class per line (# comments)")
    voc.add_argument("--vocab", metavar="BUILTIN", help="built-in vocabulary, e.g. lvvis, lvvis:novel, ytvis2019 "
                                                         "(see `clipvis vocab list`)")
    p.add_argument("--adapter", metavar="FILE", help="classifier adapter from `clipvis adapt` (its classes are the "
                                                     "vocabulary when none is given)")
    p.add_argument("--format", choices=("tracks", "ytvis"), default="tracks",
                   help="tracks: clipvis track JSON (default); ytvis: YouTube-VIS results list")
    p.add_argument("--video-id", default=1, type=_video_id, help="video_id written in ytvis results (default 1)")
    p.add_argument("--overlay", type=Path, metavar="OUT.mp4", help="also write an overlay video (.mp4 or .webm)")
    p.add_argument("--overlay-min-score", type=float, default=0.0, metavar="S",
                   help="draw only tracks scoring at least S (default: all)")
    sel = p.add_argument_group("frame selection")
    sel.add_argument("--stride", type=int, default=1, metavar="N", help="process every N-th frame (default 1)")
    sel.add_argument("--start", type=float, metavar="SEC", help="first second to process")
    sel.add_argument("--end", type=float, metavar="SEC", help="stop before this second")
    sel.add_argument("--max-frames", type=int, metavar="N", help="process at most N frames")
    model = p.add_argument_group("inference")
    model.add_argument("--min-size", type=int, metavar="PX", help="resize the short side to PX (default: the model's)")
    model.add_argument("--max-size", type=int, metavar="PX", help="cap the long side at PX (default: the model's)")
    model.add_argument("--window", type=int, metavar="N", help="frames per inference window (default: the model's)")
    model.add_argument("--score-threshold", type=float, default=0.0, metavar="S", help="drop tracks scoring below S")
    model.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="default: cuda when available")
    model.add_argument("--precision", choices=PRECISIONS, default="fp32",
                       help="network arithmetic: fp32 (default, exact), bf16 (CPU or CUDA autocast), fp16 (CUDA "
                            "only); see docs/performance.md for how much bf16/fp16 change the results")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar or summary")
    p.set_defaults(func=run)


def _video_id(text: str) -> int | str:
    return int(text) if text.lstrip("-").isdigit() else text


def _check_paths(args: argparse.Namespace) -> None:
    """Fail before any model is built on arguments that can never work."""
    from ..export.overlay import SUFFIXES

    src = Path(args.input).expanduser()
    if not src.exists():
        raise InputError(f"input not found: {src}: pass a video file, a directory of frames or an image")
    out = args.output.expanduser()
    if out.is_dir():
        raise InputError(f"--output {out} is a directory: give a file name, e.g. {out / 'tracks.json'}")
    if out.resolve() == src.resolve():
        raise InputError("--output would overwrite the input video: choose another file name")
    for target in (out, args.overlay):
        if target is not None:
            _check_writable(target.expanduser())
            if target.expanduser().is_symlink() or (target.expanduser().exists() and not target.expanduser().is_file()):
                raise InputError(f"{target} is not a regular file (a symlink or device): the atomic write would "
                                 "replace it; write to a plain file path")
    tmp = os.environ.get("CLIPVIS_TMPDIR")
    if tmp:  # a real probe: permission bits say nothing for root or on a read-only mount
        try:
            os.rmdir(tempfile.mkdtemp(prefix=".clipvis-probe-", dir=tmp))
        except OSError as e:
            raise InputError(f"CLIPVIS_TMPDIR={tmp} cannot hold the per-frame store ({e.strerror}): point it at "
                             "a writable directory, or unset it") from None
    if args.overlay is not None:
        if args.overlay.suffix.lower() not in SUFFIXES:
            raise InputError(f"--overlay {args.overlay.name!r}: use a .mp4 or .webm file name (formats browsers play)")
        if args.overlay.expanduser().resolve() in (src.resolve(), out.resolve()):
            raise InputError("--overlay must differ from the input and from --output")


def _check_writable(path: Path) -> None:
    # The nearest existing ancestor decides whether the (atomic) write can create the file later.
    parent = path.parent.resolve()
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"cannot write {path}: {parent} is not a writable directory; choose another output path")


def _check_video(args: argparse.Namespace) -> int:
    # Probe + count now (a fast decode pass, ~1000 frames/s at 480p) so a corrupt video or an
    # empty range fails in a second, not after the model has loaded.
    from ..video import open_video

    with open_video(args.input, frame_stride=args.stride, start_time=args.start, end_time=args.end,
                    max_frames=args.max_frames) as reader:
        return reader.info.num_frames


def _check_device(device: str) -> None:
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise InputError("--device cuda: no CUDA GPU is visible to this process; use --device cpu (or auto)")


def run(args: argparse.Namespace) -> int:
    from ..builtin_vocabularies import resolve_vocabulary

    _check_paths(args)
    adapter = None
    if args.adapter:  # read now: a missing or foreign file fails before the model loads
        from ..adaptation import load_adapter

        adapter = load_adapter(args.adapter)
    if adapter is not None and not (args.classes or args.vocab_file or args.vocab):
        vocabulary, merges = adapter.vocab, []
    else:
        vocabulary, merges = resolve_vocabulary(args.classes, args.vocab_file, args.vocab).deduplicated()
    for note in merges:
        print(f"clipvis: warning: {note}", file=sys.stderr)
    num_frames = _check_video(args)
    _check_device(args.device)
    from ..precision import check_precision, device_type

    check_precision(args.precision, device_type(args.device))

    from ..segmenter import SegmentOptions, get_segmenter

    opts = SegmentOptions(frame_stride=args.stride, start_time=args.start, end_time=args.end,
                          max_frames=args.max_frames, min_size=args.min_size, max_size=args.max_size,
                          window=args.window, score_threshold=args.score_threshold, precision=args.precision)
    seg = get_segmenter(args.checkpoint, device=args.device)
    t0 = time.perf_counter()
    tracks = _segment_with_progress(seg, args.input, vocabulary, opts, num_frames, quiet=args.quiet, adapter=adapter)
    elapsed = time.perf_counter() - t0

    if args.format == "ytvis":
        from ..export.ytvis import iter_ytvis_results, write_ytvis_results

        write_ytvis_results(args.output, iter_ytvis_results(tracks, args.video_id, vocabulary))
    else:
        tracks.save(args.output)
    if not args.quiet:
        n = tracks.video.num_frames
        print(f"{len(tracks.tracks)} tracks over {n} frames ({n / max(elapsed, 1e-9):.2f} frames/s) "
              f"-> {args.output}", file=sys.stderr)

    if args.overlay is not None:
        _overlay_with_progress(tracks, args, quiet=args.quiet)
    return 0


def _segment_with_progress(seg, source, vocabulary, opts, num_frames: int, quiet: bool, adapter=None):
    from tqdm import tqdm

    result = None
    # smoothing=0: frames arrive in bursts (one network window at a time), so the rate and ETA
    # are the average since the start, not the burst rate.
    with tqdm(total=num_frames, unit="frame", desc="segment", disable=quiet, smoothing=0,
              dynamic_ncols=True, file=sys.stderr) as bar:
        for p in seg.iter_segment(source, vocabulary, opts, adapter=adapter):
            if p.frames_total != bar.total:
                bar.total = p.frames_total
            bar.update(p.frames_done - bar.n)
            if p.result is not None:
                result = p.result
    if result is None:  # the streaming API promises a result on its last item
        raise RuntimeError("segmentation finished without a result")
    return result


def _overlay_with_progress(tracks, args: argparse.Namespace, quiet: bool) -> None:
    from tqdm import tqdm

    from ..export.overlay import write_overlay

    with tqdm(total=tracks.video.num_frames, unit="frame", desc="overlay", disable=quiet,
              dynamic_ncols=True, file=sys.stderr) as bar:
        write_overlay(tracks, args.overlay, source=args.input, min_score=args.overlay_min_score,
                      progress=lambda done, total: bar.update(done - bar.n))
    if not quiet:
        print(f"overlay -> {args.overlay}", file=sys.stderr)
