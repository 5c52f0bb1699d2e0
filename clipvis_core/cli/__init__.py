"""`clipvis` command line. Each sub-command lives in its own module with ``register(subparsers)``."""
from __future__ import annotations

import argparse
import errno
import importlib
import signal
import sys
import threading

from ..errors import ClipvisError

# Modules under clipvis_core.cli, each adding its sub-commands.
COMMAND_MODULES = [
    "segment",
    "checkpoints",
    "card",
    "vocab",
    "evaluate",
    "train",
    "adapt",
    "models",
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


# OSErrors no retry can fix: a full or read-only disk, a file too large for its filesystem.
DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG}


class Terminated(BaseException):
    """SIGTERM, raised like Ctrl-C so ``with`` blocks (the per-frame store) clean up."""


def _on_sigterm(signum, frame):
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:2] == ["submit", "train"]:  # `clipvis submit train ...`: the training job's own parser
        argv[:2] = ["submit-train"]
    args = parser.parse_args(argv)
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if in_main else None
    try:
        rc = args.func(args)
    except ClipvisError as e:
        print(f"clipvis: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        if e.errno not in DISK_ERRNOS:
            raise
        where = f" writing {e.filename}" if e.filename else ""
        print(f"clipvis: error: {e.strerror}{where}: free space or write to another disk "
              "(--output, CLIPVIS_TMPDIR, CLIPVIS_CACHE_DIR)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("clipvis: interrupted", file=sys.stderr)
        return 130
    except Terminated:
        print("clipvis: terminated", file=sys.stderr)
        return 143
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
    return int(rc or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
