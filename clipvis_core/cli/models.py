"""`clipvis models`: model lines that learn from corrections - create, list, show lineage, fine-tune, promote.

Any command that takes --checkpoint accepts ``line:NAME`` (the promoted version) or ``line:NAME@vN``.
"""
from __future__ import annotations

import json


def register(sub) -> None:
    p = sub.add_parser("models", help="model lines: versions trained from corrections, with lineage")
    msub = p.add_subparsers(dest="models_command", required=True)

    c = msub.add_parser("create", help="start a model line from a checkpoint")
    c.add_argument("name")
    c.add_argument("--checkpoint", required=True, help="base checkpoint: a released name, card .json, .pth or random:<config>")
    c.set_defaults(func=_create)

    ls = msub.add_parser("list", help="model lines and their promoted versions")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=_list)

    sh = msub.add_parser("show", help="every version of a line with its lineage (parent, data, steps, metrics)")
    sh.add_argument("name")
    sh.add_argument("--json", action="store_true")
    sh.set_defaults(func=_show)

    ft = msub.add_parser("finetune", help="fine-tune the promoted version on corrections; promote it only if not worse")
    ft.add_argument("name")
    ft.add_argument("--data", action="append", required=True, metavar="SOURCE",
                    help="corrections: COCO / YTVIS JSON, fiftyone:DATASET[:FIELD][@VIEW], labelstudio:PROJECT_ID (repeatable)")
    ft.add_argument("--replay", action="append", default=[], metavar="SOURCE", help="earlier training data mixed in against forgetting")
    ft.add_argument("--held-out", type=float, default=0.25, help="share of the corrections kept aside to compare old and new (default 0.25)")
    ft.add_argument("--min-new", type=int, default=20, help="new corrected masks needed to start a round (default 20)")
    ft.add_argument("--steps", type=int, default=200)
    ft.add_argument("--batch-size", type=int, default=2)
    ft.add_argument("--lr", type=float)
    ft.add_argument("--config", help="training config JSON (clipvis_core.training.config.TrainConfig)")
    ft.add_argument("--images", help="image folder for COCO sources")
    ft.add_argument("--device", default="cpu")
    ft.add_argument("--quiet", action="store_true")
    ft.set_defaults(func=_finetune)

    pr = msub.add_parser("promote", help="make a version current (e.g. roll back)")
    pr.add_argument("name")
    pr.add_argument("version")
    pr.set_defaults(func=_promote)


def _create(args) -> int:
    from ..versions import ModelLine

    line = ModelLine.create(args.name, args.checkpoint)
    print(f"created model line '{line.name}' at {line.root} from {args.checkpoint}; use --checkpoint line:{line.name}")
    return 0


def _list(args) -> int:
    from ..versions import ModelLine, list_lines

    rows = []
    for name in list_lines():
        line = ModelLine.open(name)
        cur = line.current()
        rows.append({"line": name, "current": cur.version, "versions": len(line.versions()), "checkpoint": cur.checkpoint})
    if args.json:
        print(json.dumps(rows, indent=2))
    elif not rows:
        print("no model lines yet: `clipvis models create NAME --checkpoint SPEC`")
    for r in [] if args.json else rows:
        print(f"{r['line']:30s} current {r['current']:5s} ({r['versions']} versions)  {r['checkpoint']}")
    return 0


def _show(args) -> int:
    from ..versions import ModelLine

    line = ModelLine.open(args.name)
    current = line.current().version
    versions = line.versions()
    if args.json:
        print(json.dumps({"line": line.name, "current": current, "versions": [v.to_dict() for v in versions]}, indent=2))
        return 0
    print(f"model line '{line.name}' ({line.root}); current: {current}")
    for v in versions:
        mark = "*" if v.version == current else " "
        metrics = v.metrics.get("parent"), v.metrics.get("candidate")
        ap = ""
        if all(metrics):
            key = v.metrics.get("primary", "val/agnostic_AP")
            ap = f" held-out {key} {metrics[0].get(key, 0):.3f} -> {metrics[1].get(key, 0):.3f}"
        data = v.data.get("sources") or []
        print(f"{mark} {v.version:4s} {v.kind:9s} parent {v.parent or '-':4s} steps {v.steps:<6d} "
              f"{'promoted' if v.promoted else 'not promoted'}{ap}  {' '.join(data)}  [{v.reason}]")
    return 0


def _finetune(args) -> int:
    from ..finetune import FinetuneRequest, finetune
    from ..training.config import TrainConfig

    cfg = TrainConfig.from_json(args.config) if args.config else None
    out = finetune(FinetuneRequest(
        line=args.name, data=args.data, replay=args.replay, held_out=args.held_out, min_new=args.min_new,
        steps=args.steps, batch_size=args.batch_size, lr=args.lr, config=cfg, device=args.device,
        images_dir=args.images, quiet=args.quiet))
    where = f" ({out.lineage.version})" if out.lineage else ""
    print(f"{out.status}{where}: {out.reason}")
    return 0


def _promote(args) -> int:
    from ..versions import ModelLine

    line = ModelLine.open(args.name)
    lin = line.get(args.version)
    if not lin.checkpoint:
        from ..errors import InputError

        raise InputError(f"{args.version} of '{args.name}' has no checkpoint (its training did not finish): pick another version")
    line.promote(args.version)
    print(f"'{args.name}' now serves {args.version} ({lin.checkpoint})")
    return 0
