"""The plugin's operators: each parses its form and calls one function of the sibling modules."""
from __future__ import annotations

import time

import fiftyone.operators as foo
import fiftyone.operators.types as types

from . import forms
from . import params as P

_THROTTLE_S = 0.5


def _progress(ctx):
    """``ctx.set_progress`` for delegated runs, at most every half second (immediate runs: none,
    the App shows its own spinner and each call would be a message to the browser)."""
    last = [0.0]

    def report(fraction: float, label: str) -> None:
        now = time.monotonic()
        if ctx.delegated and (now - last[0] >= _THROTTLE_S or fraction >= 1.0):
            last[0] = now
            ctx.set_progress(progress=min(max(fraction, 0.0), 1.0), label=label)

    return report


def _target(ctx):
    view = ctx.target_view()
    forms.check_target(view)
    return view


def _summary_output(ctx, fields: list[tuple[str, str]]):
    outputs = types.Object()
    for name, label in fields:
        outputs.str(name, label=label)
    return types.Property(outputs, view=types.View(label="Done"))


class SegmentVideoInstances(foo.Operator):
    @property
    def config(self):
        return foo.OperatorConfig(
            name="segment_video_instances",
            label="Segment video instances (open vocabulary)",
            description="Track and segment the instances of any classes you name, with CLIP-VIS",
            dynamic=True,
            allow_immediate_execution=True,
            allow_delegated_execution=True,
            default_choice_to_delegated=True,
        )

    def resolve_input(self, ctx):
        return forms.segment_form(ctx)

    def execute(self, ctx):
        from .segment import segment_view

        req = P.parse_segment(ctx.params, ctx.dataset)
        summary = segment_view(ctx.dataset, _target(ctx), req, _progress(ctx))
        if not ctx.delegated:
            ctx.trigger("reload_dataset")
        return {"samples": summary.samples, "tracks": summary.tracks, "classes": summary.classes,
                "label_field": summary.label_field, "model": summary.model}

    def resolve_output(self, ctx):
        return _summary_output(ctx, [("samples", "Samples segmented"), ("tracks", "Tracks written"),
                                     ("label_field", "Label field"), ("model", "Model")])


class FindNovelCategories(foo.Operator):
    @property
    def config(self):
        return foo.OperatorConfig(
            name="find_novel_categories",
            label="Find novel categories",
            description="Score samples by predicted classes outside a base vocabulary, tag them, save a sorted view",
            dynamic=True,
            allow_immediate_execution=True,
            allow_delegated_execution=True,
        )

    def resolve_input(self, ctx):
        return forms.novelty_form(ctx)

    def execute(self, ctx):
        from .novel import find_novel

        req = P.parse_novelty(ctx.params, ctx.dataset)
        summary = find_novel(ctx.dataset, _target(ctx), req)
        if not ctx.delegated:
            ctx.trigger("reload_dataset")
            ctx.ops.set_view(name=summary.view_name)
        return {"samples": summary.samples, "tagged": summary.tagged, "novel_classes": summary.novel_classes,
                "view_name": summary.view_name}

    def resolve_output(self, ctx):
        return _summary_output(ctx, [("tagged", "Samples tagged"), ("view_name", "Saved view")])


class EvaluateVideoInstances(foo.Operator):
    @property
    def config(self):
        return foo.OperatorConfig(
            name="evaluate_video_instances",
            label="Evaluate video instances",
            description="YouTube-VIS / LV-VIS video AP of a predictions field against a ground-truth field",
            dynamic=True,
            allow_immediate_execution=True,
            allow_delegated_execution=True,
        )

    def resolve_input(self, ctx):
        return forms.evaluate_form(ctx)

    def execute(self, ctx):
        from .evaluate import evaluate_view

        req = P.parse_evaluate(ctx.params, ctx.dataset)
        result = evaluate_view(ctx.dataset, _target(ctx), req)
        if not ctx.delegated:
            ctx.trigger("reload_dataset")
        return {"eval_key": req.eval_key, "stats": result["stats"], "samples": result["samples"]}

    def resolve_output(self, ctx):
        return _summary_output(ctx, [("eval_key", "Stored as")])


class LearnFromCorrections(foo.Operator):
    @property
    def config(self):
        return foo.OperatorConfig(
            name="learn_from_corrections",
            label="Learn from corrections",
            description="Fine-tune a model line on corrected masks; the new version is promoted only if it is not worse",
            dynamic=True,
            allow_immediate_execution=True,
            allow_delegated_execution=True,
            default_choice_to_delegated=True,
        )

    def resolve_input(self, ctx):
        return forms.learn_form(ctx)

    def execute(self, ctx):
        from .learn import learn

        req = P.parse_learn(ctx.params, ctx.dataset)
        s = learn(ctx.dataset, _target(ctx), req, _progress(ctx))
        return {"status": s.status, "reason": s.reason, "line": s.line, "version": s.version,
                "model": f"line:{s.line}" if s.serving else "", "serving": s.serving, "new_masks": s.new_masks,
                "before": s.before, "after": s.after, "run_key": s.run_key}

    def resolve_output(self, ctx):
        return _summary_output(ctx, [("status", "Status"), ("reason", "Why"), ("model", "Segment with"),
                                     ("run_key", "Run record")])
