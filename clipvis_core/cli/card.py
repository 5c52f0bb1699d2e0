"""``clipvis card CHECKPOINT --config CONFIG``: write the model card that makes a .pth a --checkpoint."""
from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("card", help="write a model card (.json) for a .pth: usable as --checkpoint everywhere")
    p.add_argument("checkpoint", help="the weights file (.pth), e.g. model_final.pth")
    p.add_argument("--config", required=True,
                   help="its architecture: a released config name (see clipvis_core/model_configs), a ModelConfig "
                        ".json or an upstream detectron2 .yaml")
    p.add_argument("--output", help="the card to write (default: the checkpoint's path with .json)")
    p.add_argument("--name", help="the model's name in versions and run records (default: the file's stem)")
    p.add_argument("--force", action="store_true", help="replace an existing card")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..cards import write_card

    out = write_card(args.checkpoint, args.config, args.output, args.name, args.force)
    print(f"wrote {out} (use it as --checkpoint / in the FiftyOne and Label Studio forms)")
    return 0
