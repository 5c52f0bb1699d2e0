"""`clipvis` command line. Each sub-command lives in its own module with ``register(subparsers)``."""
from __future__ import annotations

import argparse
import importlib
import sys

from ..errors import ClipvisError

# Modules under clipvis_core.cli, each adding its sub-commands.
COMMAND_MODULES = [
    "segment",
    "checkpoints",
    "vocab",
    "evaluate",
    "train",
    "jobs",
    "fiftyone_cmd",
    "labelstudio_cmd",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clipvis", description="Open-vocabulary video instance segmentation")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        try:
            mod = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"{__name__}.{name}":
                continue  # sub-command not present in this build
            raise
        mod.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        rc = args.func(args)
    except ClipvisError as e:
        print(f"clipvis: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("clipvis: interrupted", file=sys.stderr)
        return 130
    return int(rc or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
