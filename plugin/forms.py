"""Operator forms, built from small helpers.

Fields are optional in the schema and defaults live in ``params``: the parse functions are the one
place that checks values, and a form shows their message (and refuses to run) while it is wrong.
"""
from __future__ import annotations

from typing import Callable

import fiftyone.operators.types as types

from clipvis_core.errors import InputError

from . import memory
from . import params as P
from . import sources


def _radio(inputs, name: str, choices: list[tuple[str, str]], default: str, label: str, **kw):
    view = types.RadioGroup()
    for value, text in choices:
        view.add_choice(value, label=text)
    # A string, not an enum: an unknown value gets our message (naming the choices), not "Invalid enum value".
    inputs.str(name, default=default, label=label, view=view, **kw)


def _suggest(inputs, name: str, choices: list[str], label: str, description: str, default=None):
    # `default` may be a remembered value outside the list: keep it selectable.
    choices = choices + [default] if default and default not in choices else choices
    # Autocomplete rather than an enum: a typed value outside the list reaches our own check.
    view = types.AutocompleteView()
    for c in choices:
        view.add_choice(c, label=c)
    inputs.str(name, label=label, description=description, view=view, default=default)


def check_target(view) -> None:
    if len(view) == 0:
        raise InputError("the target has no samples: pick the dataset, a non-empty view or select samples")


def _report(inputs, ctx, parse: Callable) -> None:
    """Show the first problem of the current parameters; an invalid property blocks execution."""
    try:
        parse(ctx.params, ctx.dataset)
        check_target(ctx.target_view())
    except InputError as e:
        inputs.view("problem", types.Error(label=str(e)), invalid=True, error_message=str(e))


def vocabulary_inputs(inputs, ctx, d: dict) -> None:
    _radio(inputs, "vocabulary_source",
           [("text", "Type classes"), ("builtin", "Built-in vocabulary"), ("field", "Classes of a label field")],
           d["vocabulary_source"], "Vocabulary")
    source = ctx.params.get("vocabulary_source") or d["vocabulary_source"]
    if source == "text":
        inputs.str("classes", label="Classes", default=d.get("classes"),
                   description="One class per line (Enter for a new line) or ';'-separated; synonyms after a comma: "
                               "car, automobile",
                   view=types.TextFieldView(multiline=True, rows=4))
    elif source == "builtin":
        _suggest(inputs, "builtin_vocabulary", sources.builtin_names(), "Built-in vocabulary",
                 "e.g. lvvis, lvis:base, ytvis2019", default=d.get("builtin_vocabulary"))
    else:
        _suggest(inputs, "vocabulary_field", sources.label_fields(ctx.dataset), "Label field",
                 "Use the classes found in this Detections field", default=d.get("vocabulary_field"))


RUN_MODES = [
    ("background", "In the background: a clipvis worker segments, labels appear sample by sample; "
                   "follow and cancel it in the 'clipvis runs' panel"),
    ("operator", "In this operator run: a progress bar here (Execute), or Schedule it for `fiftyone delegated launch`"),
]


def segment_form(ctx):
    inputs = types.Object()
    inputs.view_target(ctx, action_description="Segment")
    local = sources.local_checkpoints()
    d = memory.defaults(ctx, "segment", dict(
        run_mode="background", vocabulary_source="text", checkpoint=local[0] if len(local) == 1 else None,
        score_threshold=0.1, max_tracks=20, frame_stride=1, precision="fp32", label_field=P.DEFAULT_FIELD,
        store_masks=True))
    _radio(inputs, "run_mode", RUN_MODES, d["run_mode"], "Run")
    vocabulary_inputs(inputs, ctx, d)
    _suggest(inputs, "checkpoint", local, "Checkpoint",
             "A checkpoint on this machine, random:tiny (random weights, to try the tool), or a model card .json / "
             ".pth path (`clipvis card FILE.pth --config ...` writes a card)", default=d.get("checkpoint"))
    inputs.str("adapter", label="Classifier adapter (optional)", default=d.get("adapter"),
               description="An adapter file from `clipvis adapt`: the classifier learnt from your corrections")
    inputs.float("score_threshold", default=d["score_threshold"], label="Score threshold",
                 description="Drop tracks below this score (0-1)")
    inputs.int("max_tracks", default=d["max_tracks"], label="Maximum tracks per video", description="0 keeps every track")
    inputs.int("frame_stride", default=d["frame_stride"], label="Frame stride", description="Segment every n-th frame")
    _radio(inputs, "precision", [("fp32", "fp32 (exact)"), ("bf16", "bf16 (faster; CPU or GPU)"), ("fp16", "fp16 (GPU only)")],
           d["precision"], "Precision")
    inputs.str("label_field", default=d["label_field"], label="Label field",
               description="Frame-level Detections field to write (replaced if it exists)")
    inputs.bool("store_masks", default=d["store_masks"], label="Store masks", view=types.CheckboxView())
    _report(inputs, ctx, P.parse_segment)
    return types.Property(inputs, view=types.View(label="Segment video instances (clipvis)"))


def novelty_form(ctx):
    inputs = types.Object()
    inputs.view_target(ctx, action_description="Score")
    d = memory.defaults(ctx, "novelty", dict(base="lvis_base", min_score=0.0))
    _suggest(inputs, "pred_field", sources.label_fields(ctx.dataset), "Predictions field",
             "The Detections field written by Segment video instances", default=d.get("pred_field"))
    _radio(inputs, "base",
           [("lvis_base", "LVIS base (frequent + common)"), ("lvvis_base", "LV-VIS base partition"),
            ("field", "Classes of a ground-truth field"), ("list", "A list of classes")],
           d["base"], "Base vocabulary")
    base = ctx.params.get("base") or d["base"]
    if base == "field":
        _suggest(inputs, "base_field", sources.label_fields(ctx.dataset), "Ground-truth field", "Its classes are the base",
                 default=d.get("base_field"))
    elif base == "list":
        inputs.str("base_classes", label="Base classes", default=d.get("base_classes"),
                   description="One per line (Enter for a new line) or ';'-separated",
                   view=types.TextFieldView(multiline=True, rows=3))
    inputs.float("min_score", default=d["min_score"], label="Minimum novelty to tag", description="0-1")
    # Named after the predictions field: runs on two fields never share (and empty) each other's tag or view.
    pred = (ctx.params.get("pred_field") or d.get("pred_field") or "").strip() or "PRED"
    inputs.str("tag", label="Tag for matching samples", description=f"Empty: {pred}_novel")
    inputs.str("view_name", label="Saved view", description=f"Empty: {pred} novel categories (opened when done)")
    _report(inputs, ctx, P.parse_novelty)
    return types.Property(inputs, view=types.View(label="Find novel categories (clipvis)"))


def evaluate_form(ctx):
    inputs = types.Object()
    inputs.view_target(ctx, action_description="Evaluate")
    d = memory.defaults(ctx, "evaluate", dict(protocol="ytvis", split="none"))
    fields = sources.label_fields(ctx.dataset)
    _suggest(inputs, "pred_field", fields, "Predictions field", "Detections with confidences", default=d.get("pred_field"))
    _suggest(inputs, "gt_field", fields, "Ground-truth field", "Detections with masks (or boxes)", default=d.get("gt_field"))
    _radio(inputs, "protocol", [("ytvis", "YouTube-VIS"), ("lvvis", "LV-VIS")], d["protocol"], "Protocol")
    _radio(inputs, "split", [("none", "No base/novel split"), ("lvis_base", "Base = LVIS base (frequent + common)"),
                             ("lvvis_base", "Base = LV-VIS base partition"), ("list", "Base = a list of classes")],
           d["split"], "Base / novel split", description="Ground-truth classes in the base score as base, the rest as novel")
    if (ctx.params.get("split") or d["split"]) == "list":
        inputs.str("split_classes", label="Base classes", default=d.get("split_classes"),
                   description="One per line (Enter for a new line) or ';'-separated",
                   view=types.TextFieldView(multiline=True, rows=3))
    _report(inputs, ctx, P.parse_evaluate)
    return types.Property(inputs, view=types.View(label="Evaluate video instances (clipvis)"))


def learn_form(ctx):
    inputs = types.Object()
    inputs.view_target(ctx, action_description="Learn from")
    _suggest(inputs, "gt_field", sources.label_fields(ctx.dataset), "Ground-truth field",
             "The corrected labels: Detections with instance masks (frame-level for videos)")
    line = P.default_line_name(ctx.dataset)
    inputs.str("model_line", default=line, label="Model line",
               description="Versions trained from this dataset's corrections; the segment operator lists it as line:NAME")
    local = sources.local_checkpoints()
    _suggest(inputs, "base_model", local, "Base model",
             "Checkpoint (or line:NAME) a new line starts from; an existing line continues from its current version",
             default=local[0] if len(local) == 1 else None)
    inputs.float("held_out", default=0.25, label="Held-out share",
                 description="Corrections kept aside to compare the current and the new version (0-1)")
    inputs.int("min_new", default=20, label="Minimum new masks", description="Skip the round below this many unused corrected masks")
    inputs.int("steps", default=200, label="Training steps")
    inputs.int("batch_size", default=2, label="Batch size")
    inputs.float("learning_rate", label="Learning rate", description="Empty: the training config's rate")
    inputs.str("train_config", label="Training config (optional)", description="A TrainConfig JSON file")
    try:
        req = P.parse_learn(ctx.params, ctx.dataset)
        view = ctx.target_view()
        check_target(view)
        from .learn import check_source

        check_source(ctx.dataset, view, req.gt_field)
    except InputError as e:
        inputs.view("problem", types.Error(label=str(e)), invalid=True, error_message=str(e))
    return types.Property(inputs, view=types.View(label="Learn from corrections (clipvis)"))
