"""Backend settings, read from the environment once per process (the serve command sets them)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from clipvis_core.errors import InputError
from clipvis_core.keyframes import DEFAULT_TOLERANCE, parse_tolerance
from clipvis_core.jobs.settings import env_float as _float


@dataclass(frozen=True)
class BackendSettings:
    checkpoint: str
    # Seconds /predict waits for a running job; Label Studio gives the whole request 100 s.
    predict_budget_s: float = 60.0
    # Label Studio origin and API key for pushing finished predictions (fall back to /setup's).
    ls_url: str | None = None
    api_key: str | None = None
    # Extra origins ("https://cdn.example.com") task media may come from.
    allowed_hosts: tuple[str, ...] = ()
    # Local files (Label Studio local storage) are read directly only under this root.
    document_root: Path | None = None
    max_media_bytes: int = 2 << 30
    max_media_seconds: float = 600.0  # one download, start to end
    # HTTP basic auth on every endpoint but /health (the names Label Studio's ML backends use).
    basic_auth_user: str | None = None
    basic_auth_pass: str | None = None
    # Labeling configs above these are refused (413): each label is a prompt the text encoder runs.
    max_config_bytes: int = 1 << 20
    max_labels: int = 2000
    cache_dir: Path = field(default_factory=lambda: Path.home() / ".cache" / "clipvis" / "labelstudio")
    score_threshold: float = 0.3
    frame_stride: int = 1
    # Inference resolution (shorter side / cap on the longer side); None = the checkpoint's.
    min_size: int | None = None
    max_size: int | None = None
    workers: int = 1  # inference jobs run at once in this process (fallback runner)
    precision: str = "fp32"  # CLIPVIS_PRECISION: fp32, bf16 (CPU/CUDA autocast) or fp16 (CUDA only)
    # Video box tracks keep a keyframe only where interpolation would be off by more than this
    # fraction of the frame size (0 = one keyframe per frame).
    keyframe_tolerance: float = DEFAULT_TOLERANCE
    # Classifier adapter file from `clipvis adapt` (CLIPVIS_ADAPTER); part of the model version.
    adapter: str | None = None

    @classmethod
    def from_env(cls, **overrides) -> "BackendSettings":
        env = os.environ
        checkpoint = overrides.pop("checkpoint", None) or env.get("CLIPVIS_CHECKPOINT")
        if not checkpoint:
            raise InputError("no checkpoint: set CLIPVIS_CHECKPOINT (a registered name, model card .json or .pth)")
        root = env.get("LOCAL_FILES_DOCUMENT_ROOT")
        values = dict(
            checkpoint=checkpoint,
            predict_budget_s=_float("CLIPVIS_PREDICT_BUDGET", 60.0),
            ls_url=(env.get("LABEL_STUDIO_URL") or None),
            api_key=(env.get("LABEL_STUDIO_API_KEY") or None),
            allowed_hosts=tuple(h.strip().rstrip("/") for h in env.get("CLIPVIS_ALLOWED_MEDIA_HOSTS", "").split(",") if h.strip()),
            document_root=Path(root).resolve() if root else None,
            max_media_bytes=int(_float("CLIPVIS_MAX_MEDIA_MB", 2048) * (1 << 20)),
            max_media_seconds=_float("CLIPVIS_MEDIA_TIMEOUT", 600.0),
            basic_auth_user=env.get("BASIC_AUTH_USER") or None,
            basic_auth_pass=env.get("BASIC_AUTH_PASS") or None,
            max_config_bytes=int(_float("CLIPVIS_MAX_CONFIG_KB", 1024) * 1024),
            max_labels=int(_float("CLIPVIS_MAX_LABELS", 2000)),
            cache_dir=Path(env["CLIPVIS_CACHE_DIR"]) / "labelstudio" if env.get("CLIPVIS_CACHE_DIR") else cls.__dataclass_fields__["cache_dir"].default_factory(),
            score_threshold=_float("CLIPVIS_SCORE_THRESHOLD", 0.3),
            frame_stride=int(_float("CLIPVIS_FRAME_STRIDE", 1)),
            min_size=int(_float("CLIPVIS_MIN_SIZE", 0)) or None,
            max_size=int(_float("CLIPVIS_MAX_SIZE", 0)) or None,
            precision=(env.get("CLIPVIS_PRECISION") or "fp32").strip(),
            keyframe_tolerance=parse_tolerance(env.get("CLIPVIS_KEYFRAME_TOLERANCE", DEFAULT_TOLERANCE)),
            adapter=env.get("CLIPVIS_ADAPTER") or None,
        )
        values.update({k: v for k, v in overrides.items() if v is not None})
        _check_precision(values["precision"])
        if values["predict_budget_s"] >= 95:
            raise InputError("CLIPVIS_PREDICT_BUDGET must stay well under Label Studio's 100 s /predict timeout (e.g. 60)")
        if values["adapter"] and not Path(values["adapter"]).expanduser().is_file():
            raise InputError(f"CLIPVIS_ADAPTER {values['adapter']} not found: point it at a file from `clipvis adapt`")
        if bool(values["basic_auth_user"]) != bool(values["basic_auth_pass"]):
            raise InputError("set both BASIC_AUTH_USER and BASIC_AUTH_PASS (or neither)")
        return cls(**values)

    @property
    def auth_enabled(self) -> bool:
        return bool(self.basic_auth_user and self.basic_auth_pass)


def _check_precision(precision: str) -> None:
    """CLIPVIS_PRECISION must name a mode this process can run (fp16 needs CUDA) when inference
    runs here; Celery workers (CLIPVIS_BROKER_URL set) check their own device per job."""
    from clipvis_core.precision import check_precision, device_type

    device = None if os.environ.get("CLIPVIS_BROKER_URL") else device_type(os.environ.get("CLIPVIS_DEVICE", "auto"))
    try:
        check_precision(precision, device)
    except InputError as e:
        raise InputError(f"CLIPVIS_PRECISION: {e}") from None
