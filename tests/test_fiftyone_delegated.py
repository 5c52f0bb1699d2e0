"""Delegated runs (queued, then executed by `fiftyone delegated launch`) and bad parameters."""
from __future__ import annotations

import uuid

import numpy as np
import pytest

from test_fiftyone_env import (  # noqa: F401  (fixtures)
    fo_session, make_video_dataset, run_op, small_card, snapshot, videos, wait_delegated,
)

CLASSES = "disc; rectangle, box; square"


@pytest.fixture(scope="module")
def ds(fo_session, videos, small_card):
    dataset = make_video_dataset(f"clipvis-del-{uuid.uuid4().hex[:8]}", videos)
    run_op("segment_video_instances", dataset, dict(classes=CLASSES, checkpoint=str(small_card), score_threshold=0.0,
                                                    max_tracks=0, label_field="pred"))
    dataset.reload()
    yield dataset
    dataset.delete()


def frame_labels(dataset, field):
    """Per sample: {frame number: {track id: fo.Detection}}."""
    return [{fn: {d.index: d for d in fr[field].detections} for fn, fr in s.frames.items() if fr[field] is not None}
            for s in dataset]


def assert_same_labels(got, want) -> None:
    """Same frames, tracks, labels; scores, boxes and masks equal up to float noise (another
    process may sum in another order: ~1e-8 on scores, at most a border pixel on masks)."""
    assert [{fn: sorted(d) for fn, d in s.items()} for s in got] == [{fn: sorted(d) for fn, d in s.items()} for s in want]
    for gs, ws in zip(got, want):
        for fn, dets in gs.items():
            for idx, g in dets.items():
                w = ws[fn][idx]
                assert g.label == w.label and g.confidence == pytest.approx(w.confidence, abs=1e-5)
                assert np.allclose(g.bounding_box, w.bounding_box, atol=2 / 96)
                if g.mask.shape == w.mask.shape:
                    assert (g.mask == w.mask).mean() > 0.98


def test_delegated_runs_execute_in_the_launcher(ds, small_card, fo_session, tmp_path):
    from fiftyone.operators.delegated import DelegatedOperationService

    before = snapshot(ds)
    queued = [
        run_op("segment_video_instances", ds, dict(classes=CLASSES, checkpoint=str(small_card), score_threshold=0.0,
                                                   max_tracks=0, label_field="pred_delegated"), delegated=True),
        run_op("find_novel_categories", ds, dict(pred_field="pred", base="list", base_classes="disc"), delegated=True),
        run_op("evaluate_video_instances", ds, dict(pred_field="pred", gt_field="gt"), delegated=True),
    ]
    assert all(q.delegated for q in queued)
    ids = [q.result["id"] for q in queued]
    dos = DelegatedOperationService()
    assert [dos.get(i).run_state for i in ids] == ["queued"] * 3
    assert snapshot(ds) == before  # queuing writes nothing
    # The launcher gets its own result store: it must really run the model, not reuse ours.
    env = dict(fo_session.env, CLIPVIS_CACHE_DIR=str(tmp_path / "launcher-cache"))
    docs = wait_delegated(ids, env)
    for i, d in docs.items():
        assert d.run_state == "completed", (d.operator, d.result and d.result.error)
    seg = docs[ids[0]]
    assert seg.status is not None and seg.status.progress == pytest.approx(1.0)  # set_progress reached the doc
    assert seg.result.result["samples"] == 3
    assert any((tmp_path / "launcher-cache").rglob("*.json")), "the launcher did not run the job layer"
    ds.reload()
    assert_same_labels(frame_labels(ds, "pred_delegated"), frame_labels(ds, "pred"))
    assert [c.label for c in ds.first().pred_delegated_summary.classifications] == \
        [c.label for c in ds.first().pred_summary.classifications]
    novel = {s.id: s.pred_novelty_classes for s in ds}
    expected = {s.id: sorted({d.label for fr in s.frames.values() for d in fr.pred.detections} - {"disc"}) for s in ds}
    assert novel == expected
    assert "pred novel categories" in ds.list_saved_views()
    assert ds.info["clipvis_evaluations"]["pred_eval"]["samples"] == 3


BAD = [
    ("segment_video_instances", dict(classes="  ;  "), "empty vocabulary"),
    ("segment_video_instances", dict(classes=None), "empty vocabulary"),
    ("segment_video_instances", dict(vocabulary_source="field", vocabulary_field="nope"), "vocabulary_field 'nope' not found"),
    ("segment_video_instances", dict(vocabulary_source="builtin", builtin_vocabulary="nope"), "unknown built-in vocabulary"),
    ("segment_video_instances", dict(checkpoint="no-such-model"), "unknown checkpoint 'no-such-model'"),
    ("segment_video_instances", dict(checkpoint="clipvis-r50-ytvis19"), "is not on this machine: download it"),
    ("segment_video_instances", dict(label_field="filepath"), "already exists"),
    ("segment_video_instances", dict(label_field="gt bad"), "not a valid field name"),
    ("segment_video_instances", dict(frame_stride=0), "frame_stride must be"),
    ("segment_video_instances", dict(label_field="clash"), "summary field 'clash_summary' already exists"),
    ("segment_video_instances", dict(score_threshold=1.5), "score_threshold must be"),
    ("find_novel_categories", dict(pred_field="missing"), "pred_field 'missing' not found"),
    ("find_novel_categories", dict(pred_field="pred", base="list", base_classes=""), "empty base vocabulary"),
    ("find_novel_categories", dict(pred_field="pred", base="field", base_field="nope"), "base_field 'nope' not found"),
    ("evaluate_video_instances", dict(pred_field="pred", gt_field="nope"), "gt_field 'nope' not found"),
    ("evaluate_video_instances", dict(pred_field="pred", gt_field="pred"), "same field"),
    ("evaluate_video_instances", dict(pred_field="pred", gt_field="gt", protocol="coco"), "unknown evaluation protocol"),
]


def test_bad_parameters_fail_before_any_write(ds, small_card):
    from fiftyone.operators.delegated import DelegatedOperationService
    from fiftyone.operators.executor import ExecutionError

    import fiftyone as fo

    if "clash_summary" not in ds.get_field_schema():
        ds.add_sample_field("clash_summary", fo.StringField)  # the summary would land on a text field
    before = snapshot(ds)
    n_ops = len(DelegatedOperationService().list_operations(dataset_name=ds.name))
    empty = ds.match({"filepath": "nothing"})
    with pytest.raises(ExecutionError, match="the target has no samples"):
        run_op("find_novel_categories", ds, dict(pred_field="pred"), delegated=True, view=empty)
    for op, params, message in BAD:
        if op == "segment_video_instances":
            params = {**dict(classes=CLASSES, checkpoint=str(small_card)), **params}
        for delegated in (False, True):
            with pytest.raises(ExecutionError) as err:
                run_op(op, ds, params, delegated=delegated)
            assert message in str(err.value), (op, params, str(err.value)[-300:])
    assert len(DelegatedOperationService().list_operations(dataset_name=ds.name)) == n_ops  # nothing queued
    assert snapshot(ds) == before


def test_unreadable_media_fails_before_any_sample_is_written(fo_session, videos, small_card, tmp_path):
    from fiftyone.operators.executor import ExecutionError

    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video" * 100)
    dataset = make_video_dataset(f"clipvis-broken-{uuid.uuid4().hex[:8]}", [videos[0]], gt_field=None)
    try:
        import fiftyone as fo

        dataset.add_sample(fo.Sample(filepath=str(broken)))
        before = snapshot(dataset)
        with pytest.raises(ExecutionError) as err:
            run_op("segment_video_instances", dataset, dict(classes=CLASSES, checkpoint=str(small_card)))
        assert "broken.mp4" in str(err.value)
        assert snapshot(dataset) == before
    finally:
        dataset.delete()
