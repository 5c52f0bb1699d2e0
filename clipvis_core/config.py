"""Typed configuration: the architecture (``ModelConfig``) and test-time settings (``InferenceConfig``).

Released variants are JSON files in ``model_configs/``; ``ModelConfig.from_reference`` reads the
fixture format (``tiny_config.json``) and ``from_detectron2_yaml`` an upstream config dump.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

CONFIG_DIR = Path(__file__).parent / "model_configs"

CLIP_PIXEL_MEAN = (122.7709383, 116.7460125, 104.09373615)
CLIP_PIXEL_STD = (68.5005327, 66.6321579, 70.32316305)


@dataclass(frozen=True)
class PixelDecoderConfig:
    conv_dim: int = 256
    mask_dim: int = 256
    norm: str = "GN"
    in_features: tuple[str, ...] = ("res2", "res3", "res4", "res5")
    encoder_in_features: tuple[str, ...] = ("res3", "res4", "res5")
    encoder_layers: int = 6
    encoder_heads: int = 8
    encoder_ffn_dim: int = 1024  # hard-coded upstream, not DIM_FEEDFORWARD
    encoder_points: int = 4
    common_stride: int = 4


@dataclass(frozen=True)
class DecoderConfig:
    hidden_dim: int = 256
    num_heads: int = 8
    ffn_dim: int = 2048
    num_queries: int = 100
    dec_layers: int = 10  # upstream DEC_LAYERS: it builds dec_layers - 1 transformer layers
    pre_norm: bool = False
    enforce_input_proj: bool = False

    @property
    def num_layers(self) -> int:
        return self.dec_layers - 1


@dataclass(frozen=True)
class InferenceConfig:
    memory_len: int = 9  # TEST.NUM_FRAME: frames kept in the matcher's memory (T)
    top_k: int = 5  # TEST.NUM_TOPK: best memory frames that vote (K)
    detections: int = 50  # TEST.DETECTIONS_PER_IMAGE
    window: int = 10  # frames per network forward (hard-coded upstream)
    min_size: int = 480  # INPUT.MIN_SIZE_TEST: shorter side
    max_size: int = 1333  # INPUT.MAX_SIZE_TEST: cap on the longer side
    logit_scale_max: float = 100.0


@dataclass(frozen=True)
class ModelConfig:
    name: str
    clip_model_name: str
    # open_clip model config dict for architectures open_clip does not ship (e.g. test models).
    clip_model_cfg: dict[str, Any] | None = None
    # open_clip pretrained tag used to fill CLIP weights a checkpoint does not carry.
    clip_pretrained: str | None = None
    embed_dim: int = 640
    pixel_decoder: PixelDecoderConfig = field(default_factory=PixelDecoderConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    pixel_mean: tuple[float, float, float] = CLIP_PIXEL_MEAN
    pixel_std: tuple[float, float, float] = CLIP_PIXEL_STD
    size_divisibility: int = 32

    # ---- (de)serialisation -------------------------------------------------------------
    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        d = dict(d)
        d["pixel_decoder"] = _build(PixelDecoderConfig, d.get("pixel_decoder", {}))
        d["decoder"] = _build(DecoderConfig, d.get("decoder", {}))
        d["inference"] = _build(InferenceConfig, d.get("inference", {}))
        for k in ("pixel_mean", "pixel_std"):
            if k in d:
                d[k] = tuple(d[k])
        return _build(cls, d)

    @classmethod
    def from_json(cls, path: str | Path) -> "ModelConfig":
        return cls.from_dict(json.loads(Path(path).read_text()))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2))

    def with_inference(self, **changes) -> "ModelConfig":
        return replace(self, inference=replace(self.inference, **changes))

    # ---- foreign formats ----------------------------------------------------------------
    @classmethod
    def from_reference(cls, ref: dict | str | Path) -> "ModelConfig":
        """Build from the golden-fixture ``tiny_config.json`` (keys may carry "(comment)" suffixes)."""
        if not isinstance(ref, dict):
            ref = json.loads(Path(ref).read_text())
        hp = {k.split("(")[0]: v for k, v in ref["hyperparameters"].items()}
        return cls(
            name=f"reference-{ref.get('case', 'tiny')}",
            clip_model_name=ref["clip_model_name"],
            clip_model_cfg=ref.get("open_clip_model_cfg"),
            embed_dim=hp["MODEL.FC_CLIP.EMBED_DIM"],
            pixel_decoder=PixelDecoderConfig(
                conv_dim=hp["MODEL.SEM_SEG_HEAD.CONVS_DIM"],
                mask_dim=hp["MODEL.SEM_SEG_HEAD.MASK_DIM"],
                norm=hp["MODEL.SEM_SEG_HEAD.NORM"],
                in_features=tuple(hp["MODEL.SEM_SEG_HEAD.IN_FEATURES"]),
                encoder_in_features=tuple(hp["MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES"]),
                encoder_layers=hp["MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS"],
                encoder_heads=hp.get("pixel_decoder.deformable_encoder.nheads", hp["MODEL.MASK_FORMER.NHEADS"]),
                encoder_ffn_dim=hp.get("pixel_decoder.deformable_encoder.dim_feedforward", 1024),
                encoder_points=hp.get("pixel_decoder.deformable_encoder.n_points", 4),
                common_stride=hp["MODEL.SEM_SEG_HEAD.COMMON_STRIDE"],
            ),
            decoder=DecoderConfig(
                hidden_dim=hp["MODEL.MASK_FORMER.HIDDEN_DIM"],
                num_heads=hp["MODEL.MASK_FORMER.NHEADS"],
                ffn_dim=hp["MODEL.MASK_FORMER.DIM_FEEDFORWARD"],
                num_queries=hp["MODEL.MASK_FORMER.NUM_OBJECT_QUERIES"],
                dec_layers=hp["MODEL.MASK_FORMER.DEC_LAYERS"],
                pre_norm=hp["MODEL.MASK_FORMER.PRE_NORM"],
                enforce_input_proj=hp["MODEL.MASK_FORMER.ENFORCE_INPUT_PROJ"],
            ),
            inference=InferenceConfig(
                memory_len=hp["TEST.NUM_FRAME"],
                top_k=hp["TEST.NUM_TOPK"],
                detections=hp["TEST.DETECTIONS_PER_IMAGE"],
                window=hp.get("run_window_inference.window_size", 10),
            ),
            pixel_mean=tuple(hp["MODEL.PIXEL_MEAN"]),
            pixel_std=tuple(hp["MODEL.PIXEL_STD"]),
            size_divisibility=hp["MODEL.MASK_FORMER.SIZE_DIVISIBILITY"],
        )

    @classmethod
    def from_detectron2_yaml(cls, path: str | Path, name: str | None = None) -> "ModelConfig":
        """Read an upstream detectron2 config (a ``cfg.dump()`` or a config file without ``_BASE_``)."""
        import yaml

        cfg = yaml.safe_load(Path(path).read_text())
        m, t, i = cfg.get("MODEL", {}), cfg.get("TEST", {}), cfg.get("INPUT", {})
        fc, head, mf = m.get("FC_CLIP", {}), m.get("SEM_SEG_HEAD", {}), m.get("MASK_FORMER", {})
        base = cls(name=name or Path(path).stem, clip_model_name=fc["CLIP_MODEL_NAME"])
        pd, dc, inf = base.pixel_decoder, base.decoder, base.inference
        return replace(
            base,
            clip_pretrained=fc.get("CLIP_PRETRAINED_WEIGHTS") or None,
            embed_dim=fc.get("EMBED_DIM", base.embed_dim),
            pixel_decoder=replace(
                pd,
                conv_dim=head.get("CONVS_DIM", pd.conv_dim),
                mask_dim=head.get("MASK_DIM", pd.mask_dim),
                norm=head.get("NORM", pd.norm),
                in_features=tuple(head.get("IN_FEATURES", pd.in_features)),
                encoder_in_features=tuple(head.get("DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES", pd.encoder_in_features)),
                encoder_layers=head.get("TRANSFORMER_ENC_LAYERS", pd.encoder_layers),
                encoder_heads=mf.get("NHEADS", pd.encoder_heads),
                common_stride=head.get("COMMON_STRIDE", pd.common_stride),
            ),
            decoder=replace(
                dc,
                hidden_dim=mf.get("HIDDEN_DIM", dc.hidden_dim),
                num_heads=mf.get("NHEADS", dc.num_heads),
                ffn_dim=mf.get("DIM_FEEDFORWARD", dc.ffn_dim),
                num_queries=mf.get("NUM_OBJECT_QUERIES", dc.num_queries),
                dec_layers=mf.get("DEC_LAYERS", dc.dec_layers),
                pre_norm=mf.get("PRE_NORM", dc.pre_norm),
                enforce_input_proj=mf.get("ENFORCE_INPUT_PROJ", dc.enforce_input_proj),
            ),
            inference=replace(
                inf,
                memory_len=t.get("NUM_FRAME", inf.memory_len),
                top_k=t.get("NUM_TOPK", inf.top_k),
                detections=t.get("DETECTIONS_PER_IMAGE", inf.detections),
                min_size=i.get("MIN_SIZE_TEST", inf.min_size),
                max_size=i.get("MAX_SIZE_TEST", inf.max_size),
            ),
            pixel_mean=tuple(m.get("PIXEL_MEAN", base.pixel_mean)),
            pixel_std=tuple(m.get("PIXEL_STD", base.pixel_std)),
            size_divisibility=mf.get("SIZE_DIVISIBILITY", base.size_divisibility),
        )


def _build(cls, d):
    """A typed config from a JSON dict (lists become tuples); an instance passes through."""
    if isinstance(d, cls):
        return d
    names = {f.name for f in fields(cls)}
    unknown = set(d) - names
    if unknown:
        raise ValueError(f"unknown {cls.__name__} keys: {sorted(unknown)} (known: {sorted(names)})")
    return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()})


def released_config(name: str) -> ModelConfig:
    """Architecture + test settings of a released variant (a JSON file in ``model_configs/``)."""
    path = CONFIG_DIR / f"{name}.json"
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.json")))
        raise ValueError(f"unknown model config {name!r}; known: {known}")
    return ModelConfig.from_json(path)
