"""The 'clipvis runs' panel: the dataset's background runs with progress and a cancel button.

It polls the run records every second while it is open (a timer in the panel) and reloads the
App's dataset whenever a run has written more samples or ended, so new labels show up by themselves.
"""
from __future__ import annotations

import fiftyone.operators as foo
import fiftyone.operators.types as types

POLL_MS = 1000
SHOWN = 8  # most recent runs listed


def _runs(ctx) -> list:
    from clipvis_core.runs import list_runs

    return list_runs(str(ctx.dataset._doc.id), SHOWN) if ctx.dataset is not None else []


class ClipvisRunsPanel(foo.Panel):
    @property
    def config(self):
        return foo.PanelConfig(
            name="clipvis_runs",
            label="clipvis runs",
            icon="sync",
            surfaces="grid",
            help_markdown="Background runs of *Segment video instances* on this dataset: progress per sample and "
                          "frame, cancel. The view reloads as samples are written.",
        )

    def on_load(self, ctx):
        self.refresh(ctx)

    def on_change_dataset(self, ctx):
        ctx.panel.state.seen = {}
        self.refresh(ctx)

    def refresh(self, ctx):
        runs = _runs(ctx)
        seen = ctx.panel.state.seen or {}
        now = {r.id: [r.state, r.samples_done] for r in runs}
        # A sample written or a run ended since the last look: reload so the grid/modal show the labels.
        if seen and any(seen.get(i) != v for i, v in now.items() if i in seen or v[1] > 0):
            ctx.ops.reload_dataset()
        ctx.panel.state.seen = now
        ctx.panel.state.runs = [_row(r) for r in runs]
        for r in runs:
            ctx.panel.set_state(f"progress_{r.id}", r.fraction)

    def cancel(self, ctx):
        from clipvis_core.runs import request_cancel

        run_id = ctx.params.get("run_id")
        if run_id:
            rec = request_cancel(run_id)
            ctx.ops.notify(f"clipvis run {rec.label_field}: {rec.state}"
                           + (" (stops within a frame)" if rec.state == "running" else ""), variant="info")
        self.refresh(ctx)

    def render(self, ctx):
        panel = types.Object()
        runs = ctx.panel.state.runs or []
        if not runs:
            panel.md("No clipvis runs on this dataset yet. Run *Segment video instances* (backtick key opens the "
                     "operator browser) with **Run: in the background**.", name="empty")
        for r in runs:
            panel.md(f"**{r['label_field']}** &middot; {r['created']} &middot; {r['backend']}  \n{r['text']}",
                     name=f"text_{r['id']}")
            panel.float(f"progress_{r['id']}", view=types.ProgressView(label=r["samples"]))
            if r["active"]:
                panel.btn(f"cancel_{r['id']}", label="Cancel", on_click=self.cancel, params={"run_id": r["id"]},
                          variant="outlined")
        panel.view("timer", types.TimerView(interval=POLL_MS, on_interval=self.refresh))
        return types.Property(panel, view=types.GridView(orientation="vertical", gap=1, px=2, py=2))


def _row(r) -> dict:
    return {"id": r.id, "label_field": r.label_field, "text": r.describe(), "samples": f"{r.samples_done}/{r.samples_total} samples",
            "active": not r.done, "backend": f"{r.backend} worker" if r.backend == "local" else "Celery workers",
            "created": r.created_at.strftime("%H:%M:%S") if r.created_at else ""}
