"""`clipvis checkpoints`: the released checkpoints, whether each is on this machine, and where it goes."""
from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("checkpoints", help="list released checkpoints and where their files go")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..weights import RELEASED, checkpoints_dir, _released_path

    print(f"checkpoint directory: {checkpoints_dir()}  (set CLIPVIS_CACHE_DIR to move it)")
    for name, c in RELEASED.items():
        path = _released_path(c)
        state = f"present: {path}" if path else f"missing: download {c.url} -> {checkpoints_dir() / c.filename}"
        print(f"  {name:28s} {c.config:26s} trained on {c.training_data:15s} {state}")
    print("also accepted: a model card .json, a detectron2 .pth file, random:<config> / random:tiny (random weights)")
    return 0
