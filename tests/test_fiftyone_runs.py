"""Background runs (a worker process of their own, run records, cancel), form validation before
Execute, remembered form values, novelty naming, evaluation output, and `clipvis card`."""
from __future__ import annotations

import json
import os
import time
import uuid

import pytest

from test_fiftyone_env import (  # noqa: F401  (fixtures)
    HEIGHT, WIDTH, fo_session, make_video_dataset, run_cli, run_op, small_card, videos,
)
from test_fiftyone_plugin import check_video_labels, stored_tracks
from videogen import shape_frames, write_video

CLASSES = "disc; rectangle, box; square"


def wait_run(run_id: str, until, timeout: float = 240.0, seen: list | None = None):
    from clipvis_core.runs import get_run

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rec = get_run(run_id)
        if seen is not None:
            seen.append(rec)
        if until(rec):
            return rec
        time.sleep(0.1)
    raise AssertionError(f"run {run_id} still {rec.describe()} after {timeout}s")


def latest_run(ds):
    from clipvis_core.runs import list_runs

    runs = list_runs(str(ds._doc.id), 1)
    assert runs, "the operator queued no run"
    return runs[0]


def form_json(form: str, dataset, params: dict) -> dict:
    from fiftyone.operators.executor import ExecutionContext

    from plugin import forms

    ctx = ExecutionContext({"dataset_name": dataset.name, "params": params})
    return getattr(forms, form)(ctx).to_json()


def problem(form: dict) -> str | None:
    p = form["type"]["properties"].get("problem")
    return p["error_message"] if p else None


@pytest.fixture(scope="module")
def ds(fo_session, videos):
    dataset = make_video_dataset(f"clipvis-runs-{uuid.uuid4().hex[:8]}", videos)
    yield dataset
    dataset.delete()


def test_background_run_returns_at_once_and_a_worker_process_writes_every_sample(ds, small_card):
    r = run_op("segment_video_instances", ds, dict(classes=CLASSES, checkpoint=str(small_card), score_threshold=0.0,
                                                   max_tracks=0, label_field="bg", run_mode="background"))
    assert r.error is None, r.error
    rec = latest_run(ds)
    assert rec.label_field == "bg" and rec.samples_total == 3 and rec.backend == "local"
    # The operator only queued: nothing segmented or written in this process.
    assert rec.state in ("queued", "running") and rec.samples_done == 0
    assert "bg_summary" not in ds.get_field_schema()
    seen = []
    rec = wait_run(rec.id, lambda r: r.done, seen=seen)
    assert rec.state == "completed", rec.describe()
    assert rec.samples_done == 3 and rec.fraction == 1.0 and rec.error is None
    # The worker is another process (not a thread of this one, as it would be of the App server).
    assert rec.worker["pid"] != os.getpid()
    assert [s.samples_done for s in seen] == sorted(s.samples_done for s in seen)  # progress only grows
    ds.reload()
    for sample in ds:
        check_video_labels(sample, "bg", stored_tracks(sample, small_card))
    assert ds.info["clipvis_runs"]["bg"]["samples"] == 3
    assert ds.info["clipvis_runs"]["bg"]["tracks"] == rec.tracks > 0

    # A second run is taken by the same worker (its models stay loaded).
    run_op("segment_video_instances", ds, dict(classes="disc", checkpoint=str(small_card), label_field="bg2",
                                               run_mode="background"))
    second = wait_run(latest_run(ds).id, lambda r: r.done)
    assert second.state == "completed" and second.worker["pid"] == rec.worker["pid"]


def test_cancel_stops_a_running_run_and_a_queued_one_never_starts(ds, small_card, tmp_path):
    import fiftyone as fo

    from clipvis_core.runs import request_cancel

    long = [write_video(tmp_path / f"long{k}.avi", shape_frames(60, HEIGHT, WIDTH, seed=10 + k)) for k in range(3)]
    dataset = fo.Dataset(f"clipvis-cancel-{uuid.uuid4().hex[:8]}")
    try:
        dataset.add_samples([fo.Sample(filepath=str(p)) for p in long])
        params = dict(classes=CLASSES, checkpoint=str(small_card), label_field="c", run_mode="background")
        run_op("segment_video_instances", dataset, params)
        first = latest_run(dataset)
        run_op("segment_video_instances", dataset, {**params, "label_field": "c2"})
        second = latest_run(dataset)
        assert second.id != first.id and second.state == "queued"
        assert request_cancel(second.id).state == "cancelled"  # queued: cancelled at once
        running = wait_run(first.id, lambda r: r.state == "running" and any(a["frames_done"] > 0 for a in r.active))
        assert "frame" in running.describe()
        request_cancel(first.id)
        done = wait_run(first.id, lambda r: r.done, timeout=60)
        assert done.state == "cancelled" and done.samples_done < 3, done.describe()
        dataset.reload()
        written = sum(1 for s in dataset if s.has_field("c_summary") and s.c_summary is not None)
        assert written == done.samples_done  # labels of finished samples stay, nothing half-written
        time.sleep(1.5)
        from clipvis_core.runs import get_run

        assert get_run(second.id).state == "cancelled" and get_run(second.id).worker is None  # never claimed
    finally:
        dataset.delete()


def test_orphaned_running_record_is_failed_with_a_message(ds):
    import subprocess
    import sys

    from clipvis_core.runs import get_run, records

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    rec = records.create_run(ds, {"label_field": "x", "vocabulary": ["a"], "checkpoint": "random:tiny"}, [], "local")
    import socket

    records._coll().update_one({"_id": records._oid(rec.id)},
                               {"$set": {"state": "running", "worker": {"pid": proc.pid, "host": socket.gethostname()}}})
    assert records.fail_orphans() >= 1
    got = get_run(rec.id)
    assert got.state == "failed" and f"pid {proc.pid}" in got.error
    with pytest.raises(Exception, match="not a clipvis run id"):
        get_run("nope")


def test_form_refuses_wrong_architecture_and_unknown_values_before_execute(ds, small_card, ref_dir, tmp_path):
    base = dict(classes="disc", label_field="f")
    # a .pth of no released architecture: refused in the form, naming the fix
    msg = problem(form_json("segment_form", ds, {**base, "checkpoint": str(ref_dir / "tiny_model.pth")}))
    assert msg and "does not match any released CLIP-VIS architecture" in msg and "clipvis card" in msg
    # a card whose weights do not fit its config
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"config": "clipvis-rn50-dec7", "checkpoint": str(ref_dir / "tiny_model.pth")}))
    msg = problem(form_json("segment_form", ds, {**base, "checkpoint": str(bad)}))
    assert msg and "does not fit the architecture 'clipvis-rn50-dec7'" in msg
    assert problem(form_json("segment_form", ds, {**base, "checkpoint": str(small_card)})) is None
    assert problem(form_json("segment_form", ds, {**base, "checkpoint": "random:tiny"})) is None
    assert "random:tiny" in problem(form_json("segment_form", ds, {**base, "checkpoint": ""}))
    assert "run_mode must be one of" in problem(form_json("segment_form", ds, {**base, "checkpoint": "random:tiny",
                                                                                 "run_mode": "later"}))
    # Executing anyway fails with the same one line, before any write
    from fiftyone.operators.executor import ExecutionError

    with pytest.raises(ExecutionError, match="does not fit the architecture"):
        run_op("segment_video_instances", ds, {**base, "checkpoint": str(bad)})


def test_classes_field_is_multiline_and_forms_remember_values_per_dataset(ds, small_card, fo_session):
    form = form_json("segment_form", ds, {})
    classes = form["type"]["properties"]["classes"]
    assert classes["view"]["multiline"] is True and "One class per line" in classes["view"]["description"]
    assert "random:tiny" in form["type"]["properties"]["checkpoint"]["view"]["description"]
    assert form["type"]["properties"]["run_mode"]["default"] == "background"
    import fiftyone as fo

    other = fo.Dataset(f"clipvis-mem-{uuid.uuid4().hex[:8]}")
    try:
        run_op("segment_video_instances", ds, dict(classes="disc\nsquare", checkpoint=str(small_card),
                                                   label_field="remembered", score_threshold=0.3))
        props = form_json("segment_form", ds, {})["type"]["properties"]
        assert props["classes"]["default"] == "disc\nsquare" and props["label_field"]["default"] == "remembered"
        assert props["score_threshold"]["default"] == 0.3 and props["checkpoint"]["default"] == str(small_card)
        fresh = form_json("segment_form", other, {})["type"]["properties"]  # per dataset: not on another one
        assert fresh["label_field"]["default"] == "clipvis" and fresh["classes"].get("default") is None
        ds.reload()
        assert ds.first().frames.first().remembered is not None  # "disc\nsquare" = two classes, not "discsquare"
        assert sorted(ds.info["clipvis_runs"]["remembered"]["vocabulary"]) == ["disc", "square"]
    finally:
        other.delete()


def test_novelty_tag_and_view_are_named_after_the_field_and_evaluation_reports_metrics(ds, small_card):
    for field in ("pa", "pb"):
        run_op("segment_video_instances", ds, dict(classes=CLASSES, checkpoint=str(small_card), score_threshold=0.0,
                                                   max_tracks=0, label_field=field))
    ra = run_op("find_novel_categories", ds, dict(pred_field="pa", base="list", base_classes="disc"))
    rb = run_op("find_novel_categories", ds, dict(pred_field="pb", base="list", base_classes="disc\nrectangle\nsquare"))
    assert ra.result["tag"] == "pa_novel" and ra.result["view_name"] == "pa novel categories"
    assert rb.result["tag"] == "pb_novel" and rb.result["tagged"] == 0
    ds.reload()
    assert len(ds.load_saved_view("pa novel categories")) == ra.result["tagged"] > 0  # not emptied by the pb run
    requests = [q["operator_uri"] for q in ra.executor.to_json()["requests"]]
    set_view = next(q for q in ra.executor.to_json()["requests"] if q["operator_uri"] == "set_view")
    assert "reload_dataset" in requests and set_view["params"].get("view")  # stages: the App has no such name yet
    rerun = run_op("find_novel_categories", ds, dict(pred_field="pa", base="list", base_classes="disc"))
    assert next(q for q in rerun.executor.to_json()["requests"] if q["operator_uri"] == "set_view")["params"]["name"]

    ev = run_op("evaluate_video_instances", ds, dict(pred_field="pa", gt_field="gt", split="list",
                                                     split_classes="disc; square"))
    rows = {r["metric"]: r for r in ev.result["metrics"]}
    assert list(rows) == ["AP", "AP50", "AP75", "AR1", "AR10"]
    ds.reload()
    stored = ds.info["clipvis_evaluations"]["pa_eval"]
    assert rows["AP"]["all"] == f"{100 * stored['stats']['AP']:.1f}"
    assert rows["AP"]["base"] == f"{100 * stored['base_novel']['AP']['base']:.1f}"
    assert rows["AP"]["novel"] == f"{100 * stored['base_novel']['AP']['novel']:.1f}"
    assert stored["base"] == "2 listed classes"


def test_card_command_writes_a_usable_card_and_refuses_bad_input_in_one_line(fo_session, ref_dir, tmp_path):
    from clipvis_core.weights import resolve_checkpoint

    weights = tmp_path / "model.pth"
    weights.write_bytes((ref_dir / "tiny_model.pth").read_bytes())
    r = run_cli(["card", str(weights), "--config", str(ref_dir / "tiny_config.json")], fo_session.env)
    assert r.returncode == 0, r.stderr
    card = tmp_path / "model.json"
    assert json.loads(card.read_text())["checkpoint"] == "model.pth"
    assert resolve_checkpoint(str(card)).path == weights
    # The CLI: exit 2 and one line (each run imports torch: two cases here, the others in-process below)
    for args, message in (
        ([str(weights), "--config", "clipvis-rn50-dec7", "--output", str(tmp_path / "x.json")], "does not fit the architecture"),
        ([str(weights), "--config", str(ref_dir / "tiny_config.json")], "exists: pass --force"),
    ):
        r = run_cli(["card", *args], fo_session.env)
        assert r.returncode == 2 and message in r.stderr and r.stderr.count("\n") == 1, (args, r.stderr)
    from clipvis_core.cards import write_card
    from clipvis_core.errors import InputError

    for args, message in (
        ((tmp_path / "none.pth", "clipvis-rn50-dec7"), "is not an existing .pth"),
        ((weights, "nope"), "neither a released config"),
        ((weights, str(ref_dir / "tiny_config.json"), tmp_path / "c.txt"), "must end in .json"),
    ):
        with pytest.raises(InputError, match=message):
            write_card(*args)
    assert not (tmp_path / "x.json").exists() and not (tmp_path / "c.txt").exists()


def test_app_command_sets_what_each_mode_needs_and_refuses_an_unknown_dataset(fo_session, tmp_path, monkeypatch):
    from clipvis_core.cli.fiftyone_cmd import REPO_ROOT, app_env

    monkeypatch.delenv("FIFTYONE_ALLOW_LEGACY_ORCHESTRATORS", raising=False)
    background = app_env(tmp_path, delegated=False)
    assert background["FIFTYONE_PLUGINS_DIR"] == str(tmp_path) and str(REPO_ROOT) in background["PYTHONPATH"]
    assert "FIFTYONE_ALLOW_LEGACY_ORCHESTRATORS" not in background  # stock FiftyOne: no orchestrator flag
    assert app_env(tmp_path, delegated=True)["FIFTYONE_ALLOW_LEGACY_ORCHESTRATORS"] == "true"
    r = run_cli(["fiftyone", "app", "no-such-dataset", "--plugins-dir", str(fo_session.plugins_dir)], fo_session.env)
    assert r.returncode == 2 and "no FiftyOne dataset 'no-such-dataset'" in r.stderr and r.stderr.count("\n") == 1
