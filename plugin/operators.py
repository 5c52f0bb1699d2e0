"""The plugin's operators: each parses its form and calls one function of the sibling modules."""
from __future__ import annotations

import time

import fiftyone.operators as foo
import fiftyone.operators.types as types

from . import forms
from . import memory
from . import params as P

RUNS_PANEL = "clipvis_runs"

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
            execute_as_generator=True,  # immediate runs stream their progress to the App
            allow_immediate_execution=True,
            allow_delegated_execution=True,
        )

    def resolve_execution_options(self, ctx):
        # A background run is queued by Execute itself; Schedule (delegated) only for in-operator runs.
        background = (ctx.params.get("run_mode") or "") == "background"
        return foo.ExecutionOptions(allow_immediate_execution=True, allow_delegated_execution=not background)

    def resolve_input(self, ctx):
        return forms.segment_form(ctx)

    def execute(self, ctx):
        from .segment import segment_view

        req = P.parse_segment(ctx.params, ctx.dataset)
        view = _target(ctx)
        memory.remember(ctx, "segment")
        if ctx.delegated:  # `fiftyone delegated launch`: progress goes to the delegated operation
            report = _progress(ctx)
            s = segment_view(ctx.dataset, view, req, lambda p: report(p.fraction, p.label()))
            return _segment_result(s)
        if req.run_mode == "background":
            return self._background(ctx, view, req)
        return self._immediate(ctx, view, req)

    def _background(self, ctx, view, req):
        from .segment import submit_background

        rec = submit_background(ctx.dataset, view, req)
        yield ctx.ops.open_panel(RUNS_PANEL, is_active=True, layout="horizontal")
        yield ctx.ops.notify(f"clipvis: {rec.samples_total} samples queued into '{req.label_field}'; "
                             "progress in the clipvis runs panel", variant="info")
        outputs = types.Object()
        outputs.str("run", label="Background run")
        outputs.str("where", label="Progress")
        yield ctx.ops.show_output(types.Property(outputs, view=types.View(label="Queued")).to_json(), {
            "run": f"{rec.id}: {rec.samples_total} samples into {req.label_field}",
            "where": "the 'clipvis runs' panel (opened beside the grid); labels appear as each sample finishes"})

    def _immediate(self, ctx, view, req):
        from .segment import iter_segment_view

        it, last = iter_segment_view(ctx.dataset, view, req), 0.0
        while True:
            try:
                p = next(it)
            except StopIteration as stop:
                summary = stop.value
                break
            if time.monotonic() - last >= _THROTTLE_S:
                last = time.monotonic()
                yield ctx.ops.set_progress(progress=p.fraction, label=p.label())
        yield ctx.ops.reload_dataset()
        result = _segment_result(summary)
        yield ctx.ops.show_output(self.resolve_output(ctx).to_json(), result)

    def resolve_output(self, ctx):
        return _summary_output(ctx, [("samples", "Samples segmented"), ("tracks", "Tracks written"),
                                     ("label_field", "Label field"), ("model", "Model")])


def _segment_result(s) -> dict:
    return {"samples": s.samples, "tracks": s.tracks, "classes": s.classes, "label_field": s.label_field, "model": s.model}


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
        existed = req.view_name in ctx.dataset.list_saved_views()
        summary = find_novel(ctx.dataset, _target(ctx), req)
        memory.remember(ctx, "novelty")
        if not ctx.delegated:
            ctx.ops.reload_dataset()
            # The App resolves a name against the saved views it has loaded: a view created just now
            # is not among them yet, so a new view is sent as its stages.
            if existed:
                ctx.ops.set_view(name=summary.view_name)
            else:
                ctx.ops.set_view(view=ctx.dataset.load_saved_view(summary.view_name))
        return {"samples": summary.samples, "tagged": summary.tagged, "novel_classes": summary.novel_classes,
                "view_name": summary.view_name, "tag": req.tag}

    def resolve_output(self, ctx):
        return _summary_output(ctx, [("tagged", "Samples tagged"), ("tag", "Tag"), ("view_name", "Saved view")])


METRICS = ("AP", "AP50", "AP75", "AR1", "AR10")


def _pct(v) -> str:
    return "n/a" if v is None or v < 0 else f"{100 * v:.1f}"


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
        memory.remember(ctx, "evaluate")
        if not ctx.delegated:
            ctx.ops.reload_dataset()
        split = result.get("base_novel")
        rows = [{"metric": m, "all": _pct(result["stats"].get(m)),
                 **({"base": _pct(split[m]["base"]), "novel": _pct(split[m]["novel"])} if split else {})}
                for m in METRICS]
        return {"eval_key": req.eval_key, "stats": result["stats"], "samples": result["samples"], "metrics": rows,
                "base": result.get("base") or "no split"}

    def resolve_output(self, ctx):
        outputs = types.Object()
        table = types.TableView()
        table.add_column("metric", label="Metric (x100)")
        table.add_column("all", label="All classes")
        if (ctx.params.get("split") or "none") != "none":
            table.add_column("base", label="Base")
            table.add_column("novel", label="Novel")
        outputs.list("metrics", types.Object(), label="Video instance metrics", view=table)
        outputs.str("base", label="Base vocabulary")
        outputs.int("samples", label="Samples")
        outputs.str("eval_key", label="Stored as (dataset.info['clipvis_evaluations'])")
        return types.Property(outputs, view=types.View(label="Evaluation"))


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
