"""Training checkpoints in detectron2's layout, written atomically, and the model card beside them.

``DIR/model_0004999.pth`` = ``{"model": state_dict, "optimizer", "scheduler", "iteration",
"trainer"}`` (upstream key names; ``iteration`` is the last finished 0-based iteration, as
detectron2 writes it), ``DIR/last_checkpoint`` names the newest, ``DIR/model_final.pth`` is
``{"model": state_dict}`` and ``DIR/model_card.json`` makes it a ``--checkpoint`` for every host.

Every file goes to a temp name in the same directory, is fsynced, then renamed: a crash or a full
disk leaves the previous checkpoint and no partial file.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch

from ..config import ModelConfig
from ..errors import ClipvisError, InputError
from ..store import fsync_dir

FINAL = "model_final.pth"
CARD = "model_card.json"
LAST = "last_checkpoint"


class CheckpointError(ClipvisError):
    """A checkpoint could not be written (disk full, permissions); the previous one is intact."""


def upstream_state_dict(model: torch.nn.Module, empty_object_weight) -> dict[str, torch.Tensor]:
    """``model.state_dict()`` plus upstream's criterion buffer: exactly the keys of a detectron2
    CLIP-VIS checkpoint (the released files and the full-size manifests carry it)."""
    sd = dict(model.state_dict())
    sd["criterion.empty_object_weight"] = torch.tensor([float(w) for w in empty_object_weight])
    return sd


def model_state(saved: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A saved state dict without training-only entries, for ``model.load_state_dict(strict=True)``."""
    from ..weights import TRAINING_ONLY_PREFIXES

    return {k: v for k, v in saved.items() if not k.startswith(TRAINING_ONLY_PREFIXES)}


def periodic_name(steps_done: int) -> str:
    return f"model_{steps_done - 1:07d}.pth"


def write_atomic(path: Path, write: Callable[[Any], None], keep_hint: str = "") -> Path:
    """``write(file)`` into a temp file beside ``path``, fsync, rename; on failure remove the temp file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
        tmp = None
        fsync_dir(path.parent)
    except OSError as e:
        why = "the disk is full" if e.errno in (errno.ENOSPC, errno.EDQUOT) else (e.strerror or str(e))
        raise CheckpointError(f"cannot write {path}: {why}; free space or choose another --output{keep_hint}") from None
    except RuntimeError as e:  # torch.save reports a failed write as a RuntimeError from its zip writer
        why = "the disk is full" if _nearly_full(path.parent) else str(e).splitlines()[0]
        raise CheckpointError(f"cannot write {path}: {why}; free space or choose another --output{keep_hint}") from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _nearly_full(folder: Path) -> bool:
    try:
        return shutil.disk_usage(folder).free < (64 << 20)
    except OSError:
        return False


def _keep_hint(out_dir: Path) -> str:
    last = latest_checkpoint(out_dir)
    return f" (the previous checkpoint {last.name} is intact)" if last else ""


def save_training_checkpoint(out_dir: Path, steps_done: int, state: dict) -> Path:
    """``state``: model / optimizer / scheduler / trainer dicts; returns the checkpoint path."""
    out_dir = Path(out_dir)
    path = out_dir / periodic_name(steps_done)
    obj = {"model": state["model"], "optimizer": state["optimizer"], "scheduler": state["scheduler"],
           "iteration": steps_done - 1, "trainer": state["trainer"]}
    write_atomic(path, lambda f: torch.save(obj, f), _keep_hint(out_dir))
    write_atomic(out_dir / LAST, lambda f: f.write(path.name.encode()))
    return path


def save_final(out_dir: Path, model_state: dict, card: dict) -> tuple[Path, Path]:
    out_dir = Path(out_dir)
    final = write_atomic(out_dir / FINAL, lambda f: torch.save({"model": model_state}, f), _keep_hint(out_dir))
    card_path = write_atomic(out_dir / CARD, lambda f: f.write(json.dumps(card, indent=2).encode()))
    return final, card_path


def model_card(name: str, config: ModelConfig, init: str, train_config: dict, steps: int, data: list[str]) -> dict:
    """What ``resolve_checkpoint`` reads (``config``, ``checkpoint`` relative to the card) plus provenance."""
    return {"name": name, "config": config.to_dict(), "checkpoint": FINAL,
            "training": {"init": init, "data": list(data), "steps": steps, "config": train_config}}


def latest_checkpoint(out_dir: Path) -> Path | None:
    marker = Path(out_dir) / LAST
    if not marker.is_file():
        return None
    path = Path(out_dir) / marker.read_text().strip()
    return path if path.is_file() else None


def load_training_checkpoint(path: Path) -> dict:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated or foreign file: the unpickler raises anything
        raise InputError(f"cannot read training checkpoint {path}: {str(e).splitlines()[0]}; "
                         "delete it and its last_checkpoint entry, or start without --resume") from None
    if not isinstance(obj, dict) or not {"model", "optimizer", "trainer"} <= set(obj):
        raise InputError(f"{path} is not a clipvis training checkpoint (model, optimizer, trainer state): "
                         "--resume needs a directory written by `clipvis train`")
    return obj


def architecture(config: ModelConfig) -> dict:
    """What decides the state-dict layout: the config without its name and test-time settings."""
    d = config.to_dict()
    for k in ("name", "inference", "clip_pretrained"):
        d.pop(k, None)
    return d


def check_resume_architecture(path: Path, resumed: dict, init_config: ModelConfig, init: str) -> None:
    """Refuse to resume a run of one architecture with an --init of another."""
    saved = resumed["trainer"].get("model_config")
    if saved is not None and architecture(ModelConfig.from_dict(saved)) != architecture(init_config):
        raise InputError(
            f"--resume {path.parent}: that run trains architecture '{saved.get('name')}' but --init {init} is "
            f"'{init_config.name}': pass the run's own --init, or a new --output to start another run")
