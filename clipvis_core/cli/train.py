"""`clipvis train`: fine-tune the class-agnostic mask generator on COCO / YTVIS / FiftyOne / Label Studio data.

Only parses arguments and calls ``clipvis_core.training.loop.train``. Under ``torchrun`` every
process runs this same command (DistributedDataParallel; ``--batch-size`` is the total).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import InputError


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train", help="fine-tune the mask generator on your own annotated images and videos",
        description="Train CLIP-VIS's class-agnostic mask generator (the CLIP backbone stays frozen) from masks "
                    "alone; categories are optional. Leaves DIR/model_final.pth and DIR/model_card.json, "
                    "usable as --checkpoint everywhere. Multi-GPU / multi-node: run it under torchrun.")
    _add_run_args(p)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="default: cuda when available")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar or summary")
    p.add_argument("--promote-if-better", action="store_true",
                   help="with --init line:NAME and --val: add the run to that model line and promote it only if its "
                        "class-agnostic AP on --val is not worse than its parent's (see `clipvis models`)")
    p.set_defaults(func=run)

    s = subparsers.add_parser(
        "submit-train", prog="clipvis submit train", help="submit a training job (`clipvis submit train ...`)",
        description="Queue a training run on the 'train' Celery queue (CLIPVIS_BROKER_URL set; workers: "
                    "`clipvis worker --pool solo --queues clipvis.train`), or run it in this process without a broker. "
                    "Follow it with `clipvis jobs status|wait|cancel ID`; a cancelled run continues with --resume.")
    _add_run_args(s)
    s.add_argument("--wait", action="store_true", help="wait for the run to finish (always, without a broker)")
    s.set_defaults(func=run_submit)


def _add_run_args(p) -> None:
    p.add_argument("--data", action="append", required=True, metavar="SOURCE",
                   help="COCO or YouTube-VIS/LV-VIS JSON, fiftyone:DATASET[:FIELD][@VIEW], a Label Studio export "
                        "JSON or labelstudio:PROJECT_ID; repeat to combine")
    p.add_argument("--init", required=True, metavar="CHECKPOINT",
                   help="weights to start from: a released name, a model card .json, a .pth or random:<config>")
    p.add_argument("--output", "-o", required=True, type=Path, metavar="DIR", help="run directory (checkpoints, metrics)")
    p.add_argument("--steps", type=int, metavar="N", help="optimizer steps (default: the config's max_iter)")
    p.add_argument("--batch-size", type=int, metavar="B", help="samples per step, total over all processes")
    p.add_argument("--lr", type=float, metavar="LR", help="base learning rate (default: the config's, upstream 1e-4)")
    p.add_argument("--val", action="append", default=[], metavar="SOURCE",
                   help="held-out data for periodic validation (class-agnostic AP; AP with its categories)")
    p.add_argument("--config", type=Path, metavar="JSON", help="training config JSON (TrainConfig fields; see docs/training.md)")
    p.add_argument("--resume", action="store_true", help="continue the run in --output from its last checkpoint")
    p.add_argument("--images", metavar="DIR", help="image root for annotation files whose paths are relative elsewhere")


def _config_dict(path: Path | None) -> dict:
    if path is None:
        return {}
    if not path.is_file():
        raise InputError(f"--config {path} not found: pass a training config JSON file")
    try:
        d = json.loads(path.read_text())
    except ValueError as e:
        raise InputError(f"--config {path} is not valid JSON ({e})") from None
    if not isinstance(d, dict):
        raise InputError(f"--config {path}: expected a JSON object of TrainConfig fields")
    return d


def build_request(args: argparse.Namespace):
    from ..training.config import TrainConfig
    from ..training.loop import TrainRequest, override

    try:
        cfg = TrainConfig.from_dict(_config_dict(args.config))
    except (ValueError, TypeError) as e:
        raise InputError(f"--config {args.config}: {str(e).splitlines()[0]}") from None
    if args.steps is not None and args.steps < 1:
        raise InputError(f"--steps {args.steps}: train for at least one step")
    if args.batch_size is not None and args.batch_size < 1:
        raise InputError(f"--batch-size {args.batch_size}: use at least 1")
    cfg = override(cfg, max_iter=args.steps, batch_size=args.batch_size, lr=args.lr)
    output = args.output.expanduser()
    if output.exists() and not output.is_dir():
        raise InputError(f"--output {output} is a file: give a directory for the run")
    device = args.device
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    return TrainRequest(data=list(args.data), init=args.init, output=output, config=cfg, val=list(args.val),
                        device=device, resume=args.resume, images_dir=args.images, quiet=args.quiet)


def run(args: argparse.Namespace) -> int:
    from ..training.loop import train

    from ..training.distributed import from_env

    if args.promote_if_better:
        from ..versions import resolve_line

        if not args.init.startswith("line:") or not args.val:
            raise InputError("--promote-if-better needs --init line:NAME (the model line to join) and --val SOURCE "
                             "(held-out data to compare the run with its parent)")
        args.init = f"line:{resolve_line(args.init[5:])[0]}"  # the parent stays the version trained from
    req = build_request(args)
    result = train(req)
    if args.promote_if_better and from_env().is_main:
        from ..finetune import promote_trained_run

        out = promote_trained_run(args.init, str(result.card), args.val, args.data, result.steps, req.device, args.images)
        print(f"{out.status} as {out.lineage.version}: {out.reason}", file=sys.stderr)
    if not args.quiet:
        if from_env().is_main:
            last = f"; last loss {result.losses[-1]:.4f}" if result.losses else ""
            val = "".join(f"; {k} {100 * v:.1f}" for k, v in result.validation.items())
            print(f"trained {result.steps} steps{last}{val} -> {result.card} (use it as --checkpoint)", file=sys.stderr)
    return 0


def run_submit(args: argparse.Namespace) -> int:
    from ..jobs import JobSettings
    from ..jobs.training import TrainJobSpec, submit_train
    from .jobs import _wait

    spec = TrainJobSpec(data=list(args.data), init=args.init, output=str(args.output), steps=args.steps,
                        batch_size=args.batch_size, lr=args.lr, val=list(args.val), config=_config_dict(args.config),
                        images=args.images, resume=args.resume)
    settings = JobSettings.from_env()
    handle = submit_train(spec, settings)
    print(handle.id)
    sys.stdout.flush()
    if args.wait or not settings.distributed:
        return _wait(handle, None, None)
    return 0
