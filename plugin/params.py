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
RUN_MODES = ("background", "operator")
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
    # "operator": inside the operator run (the default from Python: it returns when labels are written);
    # "background": queued for the clipvis worker (the App form's default).
    run_mode: str = "operator"

    def run_spec(self):
        from clipvis_core.runs import RunSpec

        return RunSpec(vocabulary=tuple(self.vocabulary.entries), checkpoint=self.checkpoint, label_field=self.label_field,
                       score_threshold=self.score_threshold, max_tracks=self.max_tracks, frame_stride=self.frame_stride,
                       store_masks=self.store_masks, adapter=self.adapter, precision=self.precision)


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
    base_names: frozenset[str] | None = None  # GT classes in it score as base, the others as novel
    base_description: str = ""


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
        run_mode=run_mode(params),
    )


def run_mode(params: dict) -> str:
    mode = (params.get("run_mode") or "operator").strip()
    if mode not in RUN_MODES:
        raise InputError(f"run_mode must be one of {', '.join(RUN_MODES)}, got {mode!r}")
    return mode


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
        tag=_tag(params.get("tag"), f"{pred}_novel"),
        view_name=(params.get("view_name") or f"{pred} novel categories").strip(),
        min_score=_number(params, "min_score", 0.0, float, lo=0.0, hi=1.0),
    )


def _tag(value, default: str) -> str:
    tag = (value or "").strip() or default
    if any(c in tag for c in ",\n"):
        raise InputError(f"tag {tag!r} may not contain commas or line breaks: use one tag name")
    return tag


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
    base, description = None, ""
    split = params.get("split") or "none"
    if split != "none":  # the novelty search's base vocabularies, under this form's own keys
        base, description = sources.resolve_base_names(
            {"base": split, "base_field": params.get("split_field"), "base_classes": params.get("split_classes")}, dataset)
    return EvalRequest(pred_field=pred, gt_field=gt, protocol=protocol, eval_key=key, base_names=base,
                       base_description=description)


@dataclass(frozen=True)
class LearnRequest:
    gt_field: str
    line: str  # model line name (created from base_model when absent)
    base_model: str  # checkpoint spec the line starts from ("" when the line exists)
    held_out: float
    min_new: int
    steps: int
    batch_size: int
    lr: float | None
    config: object | None  # clipvis_core.training.config.TrainConfig, or None for the defaults
    device: str


def default_line_name(dataset) -> str:
    """A valid model line name from the dataset's name ("My data 2" -> "My-data-2")."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", dataset.name).strip("-._")[:100]
    return name or "fiftyone"


def parse_learn(params: dict, dataset) -> LearnRequest:
    from clipvis_core.versions import ModelLine, list_lines

    gt = _field_name(params, "gt_field")
    sources.check_label_field(dataset, gt, "gt_field")
    line = (params.get("model_line") or "").strip() or default_line_name(dataset)
    ModelLine.path_for(line)  # invalid names fail here
    base = ""
    if line not in list_lines():  # a new line needs a base; an existing one continues from its current version
        base = sources.check_checkpoint(params.get("base_model"), "base_model")
    held_out = _number(params, "held_out", 0.25, float, lo=0.0, hi=1.0)
    if not 0 < held_out < 1:
        raise InputError(f"held_out must be a fraction between 0 and 1 (e.g. 0.25), got {held_out!r}")
    lr = _number(params, "learning_rate", None, float, lo=0.0)
    if lr == 0:
        raise InputError("learning_rate must be above 0 (leave it empty for the training config's rate)")
    config = None
    if (path := (params.get("train_config") or "").strip()):
        from clipvis_core.training.config import TrainConfig

        config = TrainConfig.from_json(path)
    return LearnRequest(
        gt_field=gt, line=line, base_model=base, held_out=held_out,
        min_new=_number(params, "min_new", 20, int, lo=0),
        steps=_number(params, "steps", 200, int, lo=1),
        batch_size=_number(params, "batch_size", 2, int, lo=1),
        lr=lr, config=config, device=(params.get("device") or "").strip() or "auto",
    )
