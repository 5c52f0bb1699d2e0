"""Checkpoints: the released-weights registry, resolving a ``--checkpoint`` spec, strict loading.

A spec is one of
- a registered name (``clipvis-convnext-b-lvis``): the file must already sit in the cache dir;
- a model card ``.json``: ``{"config": <ModelConfig dict or released config name>, "checkpoint": path}``;
- a ``.pth`` path: the architecture is recognised from the state dict's keys and shapes;
- ``random:<config name>`` or ``random:tiny``: random weights (demos, benchmarks, tests).
Nothing is ever downloaded at run time.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from .config import CONFIG_DIR, ModelConfig, released_config
from .errors import WeightsError

CLIP_PREFIX = "backbone.clip_model."
TRAINING_ONLY_PREFIXES = ("criterion.",)
NON_PERSISTENT = {"pixel_mean", "pixel_std", "backbone.clip_model.attn_mask"}


@dataclass(frozen=True)
class ReleasedCheckpoint:
    name: str
    config: str  # a file in model_configs/
    training_data: str
    url: str
    upstream_file: str | None = None  # the file name upstream's scripts use, also accepted

    @property
    def filename(self) -> str:
        return f"{self.name}.pth"


_GDRIVE = "https://drive.google.com/file/d/{}/view"
RELEASED = {
    c.name: c
    for c in (
        ReleasedCheckpoint("clipvis-convnext-b-lvis", "clipvis-convnext-b-dec7", "LVIS", _GDRIVE.format("1R7qGowGbY9Al7ygU2fZ-Y5uG5xfgmDyT")),
        ReleasedCheckpoint("clipvis-r50-lvis", "clipvis-rn50-dec7", "LVIS", _GDRIVE.format("1taVBPVTX-MVQkp5nc0QgreiaJqFhYgtJ"), "clipvis_lvis_r50_7.pth"),
        ReleasedCheckpoint("clipvis-convnext-b-ytvis19", "clipvis-convnext-b-dec10", "COCO + YTVIS19", _GDRIVE.format("1fxujJmjMLAkXubzYSqiv2cVgDYIIp64f")),
        ReleasedCheckpoint("clipvis-r50-ytvis19", "clipvis-rn50-dec10", "COCO + YTVIS19", _GDRIVE.format("14Oed2SbCVZcAtV1yaZIzuc7adGXuHiyZ")),
    )
}

# A small random-weight architecture for demos on machines without released weights.
TINY_RANDOM = {
    "name": "tiny-random",
    "clip_model_name": "convnext_atto_clipvis_tiny",
    "clip_model_cfg": {
        "embed_dim": 64,
        "vision_cfg": {"timm_model_name": "convnext_atto", "timm_model_pretrained": False, "timm_pool": "",
                       "timm_proj": "linear", "timm_drop": 0.0, "timm_drop_path": 0.0, "image_size": 320},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
    },
    "embed_dim": 64,
    "pixel_decoder": {"conv_dim": 32, "mask_dim": 32, "encoder_layers": 2, "encoder_heads": 4},
    "decoder": {"hidden_dim": 32, "num_heads": 4, "ffn_dim": 64, "num_queries": 16, "dec_layers": 4},
    "inference": {"memory_len": 3, "top_k": 2, "detections": 10, "min_size": 240},
}


def cache_dir() -> Path:
    return Path(os.environ.get("CLIPVIS_CACHE_DIR") or Path.home() / ".cache" / "clipvis")


def checkpoints_dir() -> Path:
    return cache_dir() / "checkpoints"


@dataclass(frozen=True)
class ResolvedCheckpoint:
    name: str  # used in model versions
    config: ModelConfig
    path: Path | None  # None: random weights
    clip_weights: str | None = None  # local open_clip weights file to fill a checkpoint without CLIP weights


def available_checkpoints() -> list[str]:
    """Registered names whose file is present in the cache dir."""
    return [n for n, c in RELEASED.items() if _released_path(c) is not None]


def _released_path(c: ReleasedCheckpoint) -> Path | None:
    for fname in filter(None, (c.filename, c.upstream_file)):
        p = checkpoints_dir() / fname
        if p.is_file():
            return p
    return None


def resolve_checkpoint(spec: str) -> ResolvedCheckpoint:
    spec = str(spec).strip()
    if not spec:
        raise WeightsError("no checkpoint given: pass --checkpoint NAME|CARD.json|FILE.pth (see `clipvis checkpoints`)")
    if spec.startswith("line:"):
        # A model line (clipvis_core.versions): its promoted version, or NAME@vN for a given one.
        from .versions import resolve_line

        version, checkpoint = resolve_line(spec[5:])
        inner = resolve_checkpoint(checkpoint)
        return ResolvedCheckpoint(version, inner.config, inner.path, inner.clip_weights)
    if spec.startswith("random:"):
        what = spec.split(":", 1)[1]
        cfg = ModelConfig.from_dict(TINY_RANDOM) if what == "tiny" else _config_or_error(what)
        return ResolvedCheckpoint(spec, cfg, None)
    if spec in RELEASED:
        c = RELEASED[spec]
        path = _released_path(c)
        if path is None:
            raise WeightsError(
                f"checkpoint '{spec}' is not on this machine: download it from {c.url} and save it as "
                f"{checkpoints_dir() / c.filename} (or set CLIPVIS_CACHE_DIR)"
            )
        return ResolvedCheckpoint(spec, released_config(c.config), path)
    p = Path(spec).expanduser()
    if p.suffix == ".json":
        if not p.is_file():
            raise WeightsError(f"model card {p} not found: pass an existing .json card, a .pth file or a registered name")
        try:
            card = json.loads(p.read_text())
            cfg = card["config"]
            cfg = _config_or_error(cfg) if isinstance(cfg, str) else ModelConfig.from_dict(cfg)
            ckpt = card.get("checkpoint")
            path = (p.parent / ckpt).resolve() if ckpt else None
        except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as e:
            raise WeightsError(f"model card {p} is malformed ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}): "
                               "it must be JSON like {\"config\": {...} or a config name, \"checkpoint\": \"model.pth\"}") from None
        if path is not None and not path.is_file():
            raise WeightsError(f"model card {p} points at {path}, which does not exist: fix its \"checkpoint\" path")
        return ResolvedCheckpoint(card.get("name") or p.stem, cfg, path, card.get("clip_weights"))
    if p.suffix in (".pth", ".pt", ".pkl"):
        if not p.is_file():
            raise WeightsError(f"checkpoint file {p} not found: check the path")
        return ResolvedCheckpoint(p.stem, detect_config(read_state_dict(p)), p)
    known = ", ".join(RELEASED)
    raise WeightsError(f"unknown checkpoint '{spec}': use one of {known}, a model card .json, a .pth file, line:<model line> or random:<config>")


def _config_or_error(name: str) -> ModelConfig:
    try:
        return released_config(name)
    except ValueError as e:
        raise WeightsError(str(e)) from None


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The model state dict of a detectron2 checkpoint (``{"model": ...}``) or a bare state dict."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt files raise anything from the unpickler
        raise WeightsError(f"cannot read checkpoint {path}: {str(e).splitlines()[0]} (is it a PyTorch .pth file?)") from None
    sd = obj.get("model", obj) if isinstance(obj, dict) else None
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise WeightsError(f"{path} holds no model state dict (expected a detectron2 checkpoint {{'model': state_dict}})")
    return sd


def detect_config(sd: dict[str, torch.Tensor]) -> ModelConfig:
    """Pick the released architecture whose keys and shapes match the state dict (CLIP keys optional)."""
    head = {k: tuple(v.shape) for k, v in sd.items() if k.startswith("sem_seg_head.")}
    for path in sorted(CONFIG_DIR.glob("*.json")):
        cfg = ModelConfig.from_json(path)
        if _head_shapes(cfg) == head:
            return cfg
    raise WeightsError(
        "checkpoint does not match any released CLIP-VIS architecture (ConvNeXt-B / RN50, 7 or 10 decoder layers): "
        "write a model card for it: clipvis card FILE.pth --config CONFIG"
    )


_shape_cache: dict[str, dict[str, tuple]] = {}


def check_head(resolved: ResolvedCheckpoint) -> None:
    """The weights file's head (``sem_seg_head.*``) keys and shapes against the config, without
    building the network: a card whose weights belong to another architecture fails here, in one line."""
    if resolved.path is None:
        return
    head = {k: tuple(v.shape) for k, v in read_state_dict(resolved.path).items() if k.startswith("sem_seg_head.")}
    want = _head_shapes(resolved.config)
    if head == want:
        return
    missing = sorted(set(want) - set(head))
    wrong = sorted(k for k in want if k in head and head[k] != want[k])
    if not head:
        why = "it has no sem_seg_head.* weights (is it a CLIP-VIS checkpoint?)"
    elif wrong:
        why = f"{len(wrong)} head weights differ in shape, e.g. {wrong[0]} {head[wrong[0]]} != {want[wrong[0]]}"
    else:
        why = f"{len(missing)} head weights missing, e.g. {missing[0]}" if missing else \
            f"{len(set(head) - set(want))} unexpected head weights, e.g. {sorted(set(head) - set(want))[0]}"
    raise WeightsError(f"{resolved.path.name} does not fit the architecture {resolved.config.name!r}: {why}; "
                       "pick the config it was trained with (clipvis card CHECKPOINT --config ...)")


class _quiet:
    def __init__(self, level: int):
        self.level = level

    def __enter__(self):
        import logging

        logging.disable(self.level)

    def __exit__(self, *exc):
        import logging

        logging.disable(logging.NOTSET)


def _head_shapes(cfg: ModelConfig) -> dict[str, tuple]:
    key = json.dumps(cfg.to_dict(), sort_keys=True, default=str)  # two configs may share a name
    if key not in _shape_cache:
        from .modeling.model import SemSegHead
        from .modeling.clip_adapter import ClipAdapter, build_clip_model

        import logging

        # Shapes only: open_clip's "no pretrained weights loaded" warning means nothing here.
        with torch.device("meta"), _quiet(logging.WARNING):
            channels = ClipAdapter(build_clip_model(cfg.clip_model_name, cfg.clip_model_cfg)).channels
            head = SemSegHead(cfg, channels)
        _shape_cache[key] = {f"sem_seg_head.{k}": tuple(v.shape) for k, v in head.state_dict().items()}
    return _shape_cache[key]


def check_state_dict(expected: dict[str, torch.Tensor], sd: dict[str, torch.Tensor]) -> None:
    """Raise WeightsError naming every missing, unexpected and wrong-shape key."""
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    wrong = [f"{k} {tuple(sd[k].shape)} != {tuple(v.shape)}" for k, v in expected.items() if k in sd and sd[k].shape != v.shape]
    if missing or unexpected or wrong:
        parts = []
        for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
            if items:
                more = f" (+{len(items) - 5} more)" if len(items) > 5 else ""
                parts.append(f"{label}: {', '.join(items[:5])}{more}")
        raise WeightsError("checkpoint does not fit the model config - " + "; ".join(parts))


def prepare_state_dict(sd: dict[str, torch.Tensor], model, resolved: ResolvedCheckpoint) -> dict[str, torch.Tensor]:
    """Drop training-only entries, fill CLIP weights if the checkpoint has none, then check strictly."""
    sd = {k: v for k, v in sd.items() if not k.startswith(TRAINING_ONLY_PREFIXES) and k not in NON_PERSISTENT}
    if not any(k.startswith(CLIP_PREFIX) for k in sd):
        sd.update({CLIP_PREFIX + k: v for k, v in _pretrained_clip(resolved).items() if k != "attn_mask"})
    check_state_dict(model.state_dict(), sd)
    return sd


def _pretrained_clip(resolved: ResolvedCheckpoint) -> dict[str, torch.Tensor]:
    from .modeling.clip_adapter import load_pretrained_clip

    cfg = resolved.config
    source = resolved.clip_weights or os.environ.get("CLIPVIS_CLIP_WEIGHTS") or cfg.clip_pretrained
    if not source:
        raise WeightsError("checkpoint has no CLIP weights (backbone.clip_model.*) and no CLIP weights are configured: set CLIPVIS_CLIP_WEIGHTS=/path/to/open_clip_weights.bin")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never download at run time
    try:
        return load_pretrained_clip(cfg.clip_model_name, cfg.clip_model_cfg, source, cache_dir=os.environ.get("CLIPVIS_OPEN_CLIP_CACHE"))
    except Exception as e:  # open_clip raises RuntimeError / HF errors / OSError for absent weights
        raise WeightsError(
            f"checkpoint has no CLIP weights and open_clip '{cfg.clip_model_name}' / '{source}' is not in the local cache "
            f"({type(e).__name__}): put the open_clip weights file on this machine and set CLIPVIS_CLIP_WEIGHTS=/path/to/it"
        ) from None


def load_model(resolved: ResolvedCheckpoint, device: str | torch.device = "cpu"):
    """Build the network for ``resolved`` and load its weights strictly; returns the model in eval mode."""
    from .modeling.model import ClipVisModel

    torch.manual_seed(0)  # deterministic random-weight models (demos, benchmarks)
    model = ClipVisModel(resolved.config)
    if resolved.path is not None:
        sd = prepare_state_dict(read_state_dict(resolved.path), model, resolved)
        model.load_state_dict(sd, strict=True)
    return model.to(device).eval()
