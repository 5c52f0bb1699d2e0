"""`clipvis labelstudio serve|prelabel`: the Label Studio ML backend and bulk pre-annotation."""
from __future__ import annotations

import argparse
import os


def _settings(args, **extra):
    from backend.settings import BackendSettings

    return BackendSettings.from_env(checkpoint=args.checkpoint, score_threshold=args.score_threshold,
                                    frame_stride=args.frame_stride, **extra)


def _serve(args) -> int:
    from backend.serve import serve

    allowed = tuple(args.allow_host or ()) or None
    settings = _settings(args, predict_budget_s=args.budget, allowed_hosts=allowed)
    from backend.model import checkpoint_name

    checkpoint_name(settings.checkpoint)  # a missing checkpoint fails now, not at the first /setup
    serve(settings, host=args.host, port=args.port, threads=args.threads,
          allow_unauthenticated=args.allow_unauthenticated)
    return 0


def _prelabel(args) -> int:
    from backend.prelabel import prelabel

    settings = _settings(args, ls_url=args.url, api_key=args.token)
    report = prelabel(args.project, settings, force=args.force, progress=not args.quiet)
    print(f"project {args.project}: {report.tasks} tasks, {report.pushed} predictions pushed, "
          f"{report.skipped} already pre-annotated, {len(report.failed)} failed")
    for task_id, err in report.failed.items():
        print(f"  task {task_id}: {err}")
    return 1 if report.failed else 0


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", help="registered name, model card .json or .pth (default: $CLIPVIS_CHECKPOINT)")
    p.add_argument("--score-threshold", type=float, help="drop tracks scoring below this (default 0.3)")
    p.add_argument("--frame-stride", type=int, help="segment every N-th frame; Label Studio interpolates between")


def register(subparsers) -> None:
    ls = subparsers.add_parser("labelstudio", help="Label Studio ML backend and bulk pre-annotation")
    sub = ls.add_subparsers(dest="labelstudio_command", required=True)

    s = sub.add_parser("serve", help="run the ML backend (connect it under Project > Settings > Model)")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=9090)
    s.add_argument("--threads", type=int, default=8, help="request threads (default 8)")
    s.add_argument("--budget", type=float, help="seconds /predict waits for a job (default 60, < 100)")
    s.add_argument("--allow-host", action="append", metavar="ORIGIN",
                   help="extra origin task media may come from (repeatable)")
    s.add_argument("--allow-unauthenticated", action="store_true",
                   help="serve beyond loopback without BASIC_AUTH_USER/BASIC_AUTH_PASS (trusted networks only)")
    _common(s)
    s.set_defaults(func=_serve)

    p = sub.add_parser("prelabel", help="pre-annotate every task of a project, pushing predictions as they finish")
    p.add_argument("--project", type=int, required=True, help="Label Studio project id")
    p.add_argument("--url", default=os.environ.get("LABEL_STUDIO_URL"), help="Label Studio URL ($LABEL_STUDIO_URL)")
    p.add_argument("--token", default=os.environ.get("LABEL_STUDIO_API_KEY"),
                   help="legacy token or personal access token ($LABEL_STUDIO_API_KEY)")
    p.add_argument("--force", action="store_true", help="also tasks that already have this model version's prediction")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _common(p)
    p.set_defaults(func=_prelabel)
