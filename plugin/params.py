"""Operator parameters: parsed into typed requests and checked before anything is written.

FiftyOne does not apply ``resolve_input`` defaults when an operator runs from Python, so every
parameter has its default here. Each check raises ``InputError`` with a one-line fix.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from clipvis_core.errors import InputError
from clipvis_core.vocabulary import Vocabulary

from . import sources

DEFAULT_FIELD = "clipvis"
_FIELD_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class SegmentRequest:
    vocabulary: Vocabulary
    checkpoint: str
    score_threshold: float
    max_tracks: int | None  # None: keep every track
    frame_stride: int
    label_field: str
    store_masks: bool
    adapter: str | None = None  # classifier adapter file from `clipvis adapt`
    precision: str = "fp32"  # network arithmetic (clipvis_core.precision)


@dataclass(frozen=True)
class NoveltyRequest:
    base_names: frozenset[str]  # normalised names (and synonyms) of the base vocabulary
    base_description: str
    pred_field: str
    novelty_field: str
    classes_field: str
    tag: str
    view_name: str
    min_score: float


@dataclass(frozen=True)
class EvalRequest:
    pred_field: str
    gt_field: str
    protocol: str
    eval_key: str


def _number(params: dict, key: str, default, kind, lo=None, hi=None):
    raw = params.get(key)
    if raw is None or raw == "":
        return default
    try:
        value = kind(raw)
    except (TypeError, ValueError):
        raise InputError(f"{key} must be a number, got {raw!r}") from None
    if kind is int and value != raw and not isinstance(raw, str):
        raise InputError(f"{key} must be a whole number, got {raw!r}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise InputError(f"{key} must be between {lo} and {hi if hi is not None else 'any'}, got {raw!r}")
    return value


def _field_name(params: dict, key: str, default: str | None = None) -> str:
    name = (params.get(key) or default or "").strip()
    if not name:
        raise InputError(f"{key} is required: choose a label field")
    if not _FIELD_RE.match(name):
        raise InputError(f"{key} {name!r} is not a valid field name: use letters, digits and underscores")
    return name


def parse_segment(params: dict, dataset) -> SegmentRequest:
    field = _field_name(params, "label_field", DEFAULT_FIELD)
    sources.check_writable(dataset, field)
    sources.check_summary_writable(dataset, f"{field}_summary")
    max_tracks = _number(params, "max_tracks", 20, int, lo=0)
    return SegmentRequest(
        vocabulary=sources.resolve_vocabulary(params, dataset),
        checkpoint=sources.check_checkpoint(params.get("checkpoint")),
        score_threshold=_number(params, "score_threshold", 0.1, float, lo=0.0, hi=1.0),
        max_tracks=max_tracks or None,
        frame_stride=_number(params, "frame_stride", 1, int, lo=1),
        label_field=field,
        store_masks=params.get("store_masks") is not False,  # unset / None (form untouched) -> masks
        adapter=_adapter(params.get("adapter")),
        precision=_precision(params.get("precision")),
    )


def _precision(value) -> str:
    """fp32 / bf16 / fp16. fp16 is refused here when inference runs in this process without a GPU
    (Celery workers, CLIPVIS_BROKER_URL set, check their own device when the job runs)."""
    import os

    from clipvis_core.precision import check_precision, device_type

    device = None if os.environ.get("CLIPVIS_BROKER_URL") else device_type(os.environ.get("CLIPVIS_DEVICE", "auto"))
    return check_precision(str(value or "fp32").strip(), device)


def _adapter(value) -> str | None:
    """An adapter file that can be read (its match with the checkpoint is checked when the model loads)."""
    if value is None or not str(value).strip():
        return None
    from clipvis_core.adaptation import load_adapter

    load_adapter(str(value).strip())  # one-line InputError for a missing or foreign file
    return str(value).strip()


def parse_novelty(params: dict, dataset) -> NoveltyRequest:
    pred = _field_name(params, "pred_field")
    sources.check_label_field(dataset, pred, "pred_field")
    base, description = sources.resolve_base_names(params, dataset)
    out = _field_name(params, "novelty_field", f"{pred}_novelty")
    return NoveltyRequest(
        base_names=base,
        base_description=description,
        pred_field=pred,
        novelty_field=out,
        classes_field=f"{out}_classes",
        tag=(params.get("tag") or "novel").strip() or "novel",
        view_name=(params.get("view_name") or f"{pred} novel categories").strip(),
        min_score=_number(params, "min_score", 0.0, float, lo=0.0, hi=1.0),
    )


def parse_evaluate(params: dict, dataset) -> EvalRequest:
    pred = _field_name(params, "pred_field")
    gt = _field_name(params, "gt_field")
    if pred == gt:
        raise InputError("pred_field and gt_field are the same field: pick the ground truth and the predictions")
    sources.check_label_field(dataset, pred, "pred_field")
    sources.check_label_field(dataset, gt, "gt_field")
    protocol = (params.get("protocol") or "ytvis").lower()
    from clipvis_core.evaluation.protocol import get_protocol

    get_protocol(protocol)  # unknown names raise the evaluator's own message
    key = _field_name(params, "eval_key", f"{pred}_eval")
    return EvalRequest(pred_field=pred, gt_field=gt, protocol=protocol, eval_key=key)
