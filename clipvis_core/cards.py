"""Model cards: the ``.json`` that makes a weights file a ``--checkpoint`` for every host.

A card is ``{"name", "config": <released config name or ModelConfig dict>, "checkpoint": path}``
(path relative to the card when they share a folder). ``weights.resolve_checkpoint`` reads it;
``write_card`` writes one after checking that the weights fit the config.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from .config import CONFIG_DIR, ModelConfig
from .errors import InputError


def load_config(spec: str) -> tuple[ModelConfig, str | dict]:
    """(config, what the card stores) from a released config name, a ModelConfig JSON, the reference
    fixture's ``tiny_config.json`` or an upstream detectron2 YAML."""
    if (CONFIG_DIR / f"{spec}.json").is_file():
        from .config import released_config

        return released_config(spec), spec
    path = Path(spec).expanduser()
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.json")))
        raise InputError(f"--config {spec!r} is neither a released config ({known}) nor an existing .json/.yaml file")
    try:
        if path.suffix in (".yaml", ".yml"):
            cfg = ModelConfig.from_detectron2_yaml(path)
        else:
            d = json.loads(path.read_text())
            cfg = ModelConfig.from_reference(d) if "hyperparameters" in d else ModelConfig.from_dict(d)
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise InputError(f"--config {path} is not a model config ({type(e).__name__}: {str(e).splitlines()[0]}): "
                         "give a released config name, a ModelConfig JSON or a detectron2 YAML") from None
    return cfg, cfg.to_dict()


def write_card(checkpoint: str | Path, config: str, output: str | Path | None = None, name: str | None = None,
               force: bool = False) -> Path:
    """Check that ``checkpoint``'s weights fit ``config``, then write the card (default: beside the weights)."""
    from .weights import ResolvedCheckpoint, check_head, resolve_checkpoint

    weights = Path(checkpoint).expanduser().resolve()
    if weights.suffix not in (".pth", ".pt", ".pkl") or not weights.is_file():
        raise InputError(f"checkpoint {checkpoint} is not an existing .pth/.pt file")
    cfg, stored = load_config(config)
    check_head(ResolvedCheckpoint(weights.stem, cfg, weights))  # WeightsError naming the mismatch
    out = Path(output).expanduser() if output else weights.with_suffix(".json")
    if out.suffix != ".json":
        raise InputError(f"--output {out} must end in .json (hosts recognise a card by its suffix)")
    if out.exists() and not force:
        raise InputError(f"{out} exists: pass --force to replace it or choose another --output")
    out = out.resolve()
    ref = weights.name if weights.parent == out.parent else os.path.relpath(weights, out.parent)
    card = {"name": name or weights.stem, "config": stored, "checkpoint": ref}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(json.dumps(card, indent=2) + "\n")
    os.replace(tmp, out)
    resolve_checkpoint(str(out))  # reads back as a --checkpoint
    return out
