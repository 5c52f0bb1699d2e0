"""Learn from corrections in FiftyOne: the operator fine-tunes a model line on a ground-truth field of
generated videos (real MongoDB, real video files), registers and promotes a new version, records a
run with before/after held-out metrics; the segment operator then runs with ``line:NAME`` and the
evaluate operator shows the gain over the base model on videos neither version trained on."""
from __future__ import annotations

import json
import os
import uuid

import pytest

import numpy as np

from shapes_data import shapes_video
from test_fiftyone_env import fo_session, run_op, snapshot, wait_delegated  # noqa: F401  (fixtures)
from videogen import write_video

pytestmark = pytest.mark.training

TRAIN, EVAL = 8, 2  # videos with corrections (the saved view), videos only evaluated
NUM_FRAMES, SIZE = 4, 64
# Small enough for 2 CPU cores (as in test_model_lines): 64 px one-frame clips, 1024 points per mask.
FAST = {"loss": {"num_points": 1024}, "augment": {"video_min_sizes": [64], "video_max_size": 128}, "num_workers": 0}
LEARN = dict(gt_field="gt", steps=40, batch_size=4, learning_rate=1e-3, min_new=5, held_out=0.25)


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    # Set in os.environ (not monkeypatch): module-scoped, and the delegated launcher inherits it.
    path = tmp_path_factory.mktemp("models")
    saved = os.environ.get("CLIPVIS_MODELS_DIR")
    os.environ["CLIPVIS_MODELS_DIR"] = str(path)
    yield path
    if saved is None:
        os.environ.pop("CLIPVIS_MODELS_DIR", None)
    else:
        os.environ["CLIPVIS_MODELS_DIR"] = saved


@pytest.fixture(scope="module")
def small_card(tmp_path_factory):
    """The tiny random-weight model (seeded, the same weights on every load) at a 64 px test size:
    it finds almost nothing before fine-tuning, so a gain shows after a few dozen CPU steps."""
    from clipvis_core.weights import TINY_RANDOM

    config = json.loads(json.dumps(TINY_RANDOM))
    config["inference"]["min_size"] = SIZE
    path = tmp_path_factory.mktemp("learn-card") / "tiny_random_64.json"
    path.write_text(json.dumps({"name": "tiny-random-64", "config": config}))
    return path


@pytest.fixture(scope="module")
def ds(fo_session, models_dir, tmp_path_factory):
    """Generated shape videos (tests/shapes_data.py); ``gt``: their exact masks labelled "object"
    (class-agnostic), ``boxes``: the same detections without masks; the first TRAIN videos are
    tagged and saved as the view "corrected", the others are only evaluated."""
    import fiftyone as fo

    d = tmp_path_factory.mktemp("learn-videos")
    dataset = fo.Dataset(f"clipvis-learn-{uuid.uuid4().hex[:8]}")
    rng = np.random.default_rng(7)
    samples = []
    for v in range(TRAIN + EVAL):
        frames, masks, _ = shapes_video(rng, NUM_FRAMES, SIZE, SIZE)
        s = fo.Sample(filepath=str(write_video(d / f"clip{v}.avi", frames)), tags=["train" if v < TRAIN else "eval"])
        for i in range(NUM_FRAMES):
            dets = [fo.Detection.from_mask(masks[k, i], label="object", index=k)
                    for k in range(len(masks)) if masks[k, i].any()]
            s.frames[i + 1]["gt"] = fo.Detections(detections=dets)
            s.frames[i + 1]["boxes"] = fo.Detections(detections=[
                fo.Detection(label=x.label, bounding_box=x.bounding_box, index=x.index) for x in dets])
        samples.append(s)
    dataset.add_samples(samples)
    dataset.compute_metadata()
    dataset.save_view("corrected", dataset.match_tags("train"))
    yield dataset
    dataset.delete()


def config_file(tmp_path) -> str:
    path = tmp_path / "fast.json"
    path.write_text(json.dumps(FAST))
    return str(path)


def learn_params(card, tmp_path, **kw) -> dict:
    return {**LEARN, "base_model": str(card), "train_config": config_file(tmp_path), **kw}


def corrected(dataset):
    return dict(view=dataset.load_saved_view("corrected"), view_name="corrected")


def form_json(form: str, dataset, params: dict, **request) -> str:
    """The operator form as the App receives it (resolved in this process)."""
    from fiftyone.operators.executor import ExecutionContext

    from plugin import forms

    ctx = ExecutionContext({"dataset_name": dataset.name, "params": params, **request})
    return json.dumps(getattr(forms, form)(ctx).to_json())


def test_bad_input_fails_in_one_line_and_registers_nothing(ds, small_card, models_dir, tmp_path):
    from fiftyone.operators.executor import ExecutionError

    from clipvis_core.versions import list_lines

    before = snapshot(ds)
    runs = ds.list_runs()
    params = learn_params(small_card, tmp_path, model_line="bad")
    cases = [
        (dict(gt_field="boxes"), corrected(ds), "has no instance masks"),
        ({}, dict(view=ds.match({"filepath": "nothing"})), "the target has no samples"),
        ({}, dict(view=ds.limit(3)), "save this view"),
        (dict(held_out=1.5), corrected(ds), "held_out must be"),
        (dict(base_model=""), corrected(ds), "base_model is required"),
        (dict(base_model="no-such-model"), corrected(ds), "unknown base_model 'no-such-model'"),
        (dict(model_line="../x"), corrected(ds), "invalid model line name"),
        (dict(gt_field="nope"), corrected(ds), "gt_field 'nope' not found"),
    ]
    for override, ctx, message in cases:
        for delegated in (False, True):
            with pytest.raises(ExecutionError) as err:
                run_op("learn_from_corrections", ds, {**params, **override}, delegated=delegated, **ctx)
            text = str(err.value)
            assert message in text, (override, text[-300:])
    # boxes only: the message names the one thing boxes can still drive
    with pytest.raises(ExecutionError) as err:
        run_op("learn_from_corrections", ds, {**params, "gt_field": "boxes"}, **corrected(ds))
    line = next(x for x in str(err.value).splitlines() if "no instance masks" in x)
    assert "classifier adaptation is the only option" in line and "clipvis adapt" in line
    assert snapshot(ds) == before and ds.list_runs() == runs and list_lines() == []

    # the App's form shows the same message (and blocks the run) while the field has no masks
    assert "no instance masks" in form_json("learn_form", ds, dict(params, gt_field="boxes"), view_name="corrected")
    assert "no instance masks" not in form_json("learn_form", ds, params, view_name="corrected")

    # a threshold the corrections do not reach: skipped, said so, no line and no version registered
    r = run_op("learn_from_corrections", ds, {**params, "min_new": 10_000}, **corrected(ds))
    assert r.result["status"] == "skipped" and "threshold 10000" in r.result["reason"], r.result
    assert r.result["version"] is None and r.result["model"] == ""
    assert list_lines() == [] and not (models_dir / "bad").exists()
    results = ds.load_run_results(r.result["run_key"])
    assert results.status == "skipped" and results.version is None
    assert snapshot(ds) == before  # labels, schema and info untouched; only the run record was added


def test_learn_registers_a_better_model_that_segment_and_evaluate_use(ds, small_card, models_dir, tmp_path, capsys):
    from clipvis_core.versions import ModelLine
    from plugin.sources import local_checkpoints

    line_name = "corrections"
    r = run_op("learn_from_corrections", ds, learn_params(small_card, tmp_path, model_line=line_name), **corrected(ds))
    out = r.result
    assert r.error is None, r.error
    assert out["status"] == "promoted", out["reason"]
    assert out["version"] == "v1" and out["serving"] == f"{line_name}@v1" and out["model"] == f"line:{line_name}"
    tracks = sum(len({d.index for f in s.frames.values() for d in f.gt.detections}) for s in ds.load_saved_view("corrected"))
    assert out["new_masks"] == tracks  # every corrected track is new to the line
    line = ModelLine.open(line_name)
    assert line.current().version == "v1" and line.get("v1").parent == "v0"
    assert line.get("v1").data["sources"] == [f"fiftyone:{ds.name}:gt@corrected"]

    # the run record on the dataset: what was asked (config) and what came of it (results)
    ds.reload()
    info = ds.get_run_info(out["run_key"])
    assert info.config.line == line_name and info.config.source == f"fiftyone:{ds.name}:gt@corrected"
    assert info.config.steps == LEARN["steps"] and info.config.method == "clipvis_learn_from_corrections"
    results = ds.load_run_results(out["run_key"])
    assert results.status == "promoted" and results.version == "v1"
    key = results.primary
    assert results.after[key] >= results.before[key]
    assert results.before == pytest.approx(out["before"]) and results.after == pytest.approx(out["after"])

    # the segment operator's checkpoint suggestions list the line; segment + evaluate show the gain
    assert f"line:{line_name}" in local_checkpoints()
    assert f'"line:{line_name}"' in form_json("segment_form", ds, {})
    held_out = ds.match_tags("eval")
    ap = {}
    for field, checkpoint in (("pred_base", str(small_card)), ("pred_line", f"line:{line_name}")):
        seg = run_op("segment_video_instances", ds, dict(classes="object", checkpoint=checkpoint, score_threshold=0.0,
                                                         max_tracks=0, label_field=field), view=held_out)
        assert seg.error is None, seg.error
        ev = run_op("evaluate_video_instances", ds, dict(pred_field=field, gt_field="gt"), view=held_out)
        ap[field] = ev.result["stats"]["AP"]
    ds.reload()
    assert ds.info["clipvis_runs"]["pred_line"]["model"].startswith(f"{line_name}@v1")
    with capsys.disabled():
        print(f"\nheld-out (training split) {key}: {results.before[key]:.3f} -> {results.after[key]:.3f}; "
              f"evaluate operator on {EVAL} unseen videos, AP: base {ap['pred_base']:.3f} -> {line_name}@v1 {ap['pred_line']:.3f}")
    assert ap["pred_line"] > ap["pred_base"]


def test_learn_delegated_runs_in_the_launcher(ds, small_card, models_dir, fo_session, tmp_path):
    from clipvis_core.versions import ModelLine

    params = learn_params(small_card, tmp_path, model_line="delegated", steps=8)
    queued = run_op("learn_from_corrections", ds, params, delegated=True, **corrected(ds))
    assert queued.delegated and not (models_dir / "delegated").exists()  # queuing trains nothing
    env = dict(os.environ, CLIPVIS_MODELS_DIR=str(models_dir))
    doc = wait_delegated([queued.result["id"]], env)[queued.result["id"]]
    assert doc.run_state == "completed", doc.result and doc.result.error
    out = doc.result.result
    assert out["status"] in ("promoted", "rejected") and out["version"] == "v1"
    assert doc.status is not None and doc.status.progress == pytest.approx(1.0)  # set_progress reached the doc
    lineage = ModelLine.open("delegated").get("v1")
    assert lineage.steps == 8 and lineage.metrics["parent"] and lineage.metrics["candidate"]
    ds.reload()
    assert ds.load_run_results(out["run_key"]).status == out["status"]
