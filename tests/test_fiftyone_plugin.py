"""The plugin's operators run immediately on real FiftyOne + MongoDB, generated videos and the
fixture's tiny model: written labels, re-runs, novelty on known labels, evaluation vs `clipvis eval`."""
from __future__ import annotations

import json
import uuid

import numpy as np
import pytest

from clipvis_core.export.fiftyone import paste_mask
from test_fiftyone_env import (  # noqa: F401  (fixtures)
    HEIGHT, NUM_FRAMES, WIDTH, fo_session, make_video_dataset, run_cli, run_op, shape_masks, small_card, videos,
)

CLASSES = "disc; rectangle, box; square"


def seg_params(card, **kw) -> dict:
    return {**dict(classes=CLASSES, checkpoint=str(card), score_threshold=0.0, max_tracks=0, label_field="pred"), **kw}


@pytest.fixture(scope="module")
def ds(fo_session, videos, small_card):
    """Three clips with exact GT, segmented once immediately into ``pred``."""
    dataset = make_video_dataset(f"clipvis-fo-{uuid.uuid4().hex[:8]}", videos)
    result = run_op("segment_video_instances", dataset, seg_params(small_card))
    dataset.reload()
    yield dataset, result
    dataset.delete()


def stored_tracks(sample, card, stride=1):
    """The job layer's stored VideoTracks for a sample (what the operator converted)."""
    from clipvis_core.jobs import JobSpec, lookup

    spec = JobSpec(media=sample.filepath, vocabulary=["disc", "rectangle, box", "square"], checkpoint=str(card),
                   options={"frame_stride": stride, "score_threshold": 0.0})
    tracks = lookup(spec)
    assert tracks is not None, "the operator's result is not in the job store"
    return tracks


def check_video_labels(sample, field: str, tracks) -> None:
    """Frame numbers, masks vs boxes, track ids, confidences and the summary against the tracks."""
    labelled = {fn: fr[field] for fn, fr in sample.frames.items() if fr[field] is not None}
    assert sorted(labelled) == [i + 1 for i in tracks.video.frame_indices]
    by_id = {t.id: t for t in tracks.tracks}
    instances = {}
    for fn, dets in labelled.items():
        k = tracks.video.frame_indices.index(fn - 1)
        for d in dets.detections:
            t = by_id[d.index]  # index = track id
            assert d.label == t.label and d.confidence == pytest.approx(t.score)
            assert 0.0 <= d.confidence <= 1.0
            assert instances.setdefault(d.index, d.instance.id) == d.instance.id
            x, y, w, h = d.bounding_box
            assert d.mask.shape == (round(h * HEIGHT), round(w * WIDTH))
            assert np.array_equal(paste_mask(d, WIDTH, HEIGHT), t.mask(k)), (fn, d.index)
        present = {t.id for t in tracks.tracks if tracks.tracks and t.boxes[k] is not None}
        assert {d.index for d in dets.detections} == present
    assert len(set(instances.values())) == len(instances)
    summary = {c.label: c for c in sample[f"{field}_summary"].classifications}
    assert set(summary) == {t.label for t in tracks.tracks}
    for label, c in summary.items():
        mine = [t.score for t in tracks.tracks if t.label == label]
        assert c.confidence == pytest.approx(max(mine)) and c["num_tracks"] == len(mine)


def test_segment_immediate_writes_frame_detections(ds, small_card):
    dataset, result = ds
    # A generator operator (its progress streams to the App): the summary is read from the dataset.
    requests = [r["operator_uri"] for r in result.executor.to_json()["requests"]]
    assert "set_progress" in requests and requests[-2:] == ["reload_dataset", "show_output"]
    run = dataset.info["clipvis_runs"]["pred"]
    assert run["samples"] == 3
    total = 0
    for sample in dataset:
        tracks = stored_tracks(sample, small_card)
        assert tracks.tracks, "the tiny model found nothing to check"
        check_video_labels(sample, "pred", tracks)
        total += len(tracks.tracks)
    assert run["tracks"] == total
    assert run["vocabulary"] == ["disc", "rectangle, box", "square"] and run["model"].startswith("tiny_96@")


def test_rerun_on_selection_replaces_the_field(ds, small_card):
    dataset, _ = ds
    first, others = dataset.first(), list(dataset)[1:]
    before = [[fr.pred for fr in s.frames.values()] for s in others]
    params = seg_params(small_card, frame_stride=2, max_tracks=2, view_target="SELECTED_SAMPLES")
    run_op("segment_video_instances", dataset, params, selected=[first.id])
    first.reload()
    tracks = stored_tracks(first, small_card, stride=2)
    kept = sorted(tracks.tracks, key=lambda t: -t.score)[:2]
    labelled = [fn for fn, fr in first.frames.items() if fr.pred is not None]
    assert labelled == [1, 3, 5, 7]  # stride 2: the old labels on frames 2, 4, 6, 8 are gone
    assert {d.index for fn in labelled for d in first.frames[fn].pred.detections} <= {t.id for t in kept}
    assert [[fr.pred for fr in s.frames.values()] for s in dataset.select([s.id for s in others])] == before
    # Put the full run back for the other tests (same spec: served from the job store).
    run_op("segment_video_instances", dataset, seg_params(small_card))
    first.reload()
    check_video_labels(first, "pred", stored_tracks(first, small_card))


def test_segment_in_bf16_is_its_own_job(ds, small_card, monkeypatch):
    monkeypatch.setenv("CLIPVIS_ALLOW_SLOW_BF16", "1")  # any CPU (test_precision.py tests the refusal)
    dataset, _ = ds
    first = dataset.first()
    run_op("segment_video_instances", dataset, seg_params(small_card, label_field="pred_bf16", precision="bf16",
                                                          view_target="SELECTED_SAMPLES"), selected=[first.id])
    first.reload()
    dataset.reload()
    from clipvis_core.jobs import JobSpec, lookup

    spec = JobSpec(media=first.filepath, vocabulary=["disc", "rectangle, box", "square"], checkpoint=str(small_card),
                   options={"frame_stride": 1, "score_threshold": 0.0, "precision": "bf16"})
    tracks = lookup(spec)
    assert tracks is not None and tracks.options["precision"] == "bf16"
    assert spec.key() != JobSpec(media=first.filepath, vocabulary=spec.vocabulary, checkpoint=str(small_card),
                                 options={"frame_stride": 1, "score_threshold": 0.0}).key()
    check_video_labels(first, "pred_bf16", tracks)
    assert dataset.info["clipvis_runs"]["pred_bf16"]["precision"] == "bf16"


def test_find_novel_categories_on_known_labels(fo_session):
    import fiftyone as fo

    from clipvis_core.builtin_vocabularies import load_vocabulary

    rare = load_vocabulary("lvis:rare").labels[0]
    frequent = load_vocabulary("lvis:frequent").labels[0]
    dataset = fo.Dataset(f"clipvis-novel-{uuid.uuid4().hex[:8]}")
    # (label, confidence) per frame of each sample; labels written as users' fields would hold them.
    known = {
        "a": [[(frequent, 0.9), ("gizmo", 0.3)], [("gizmo", 0.6)]],
        "b": [[(frequent.replace("_", " ").title(), 0.95)], []],
        "c": [[(rare, 0.4)], [(frequent, 0.99), (rare, 0.2)]],
        "d": [[], []],
    }
    for name, frames in known.items():
        s = fo.Sample(filepath=f"/nonexistent/{name}.mp4", name=name)
        for i, dets in enumerate(frames):
            s.frames[i + 1]["pred"] = fo.Detections(detections=[
                fo.Detection(label=lab, confidence=c, bounding_box=[0.1, 0.1, 0.2, 0.2], index=j)
                for j, (lab, c) in enumerate(dets)])
            s.frames[i + 1]["gt"] = fo.Detections(detections=[fo.Detection(label="gizmo", bounding_box=[0, 0, 1, 1])])
        dataset.add_sample(s)
    try:
        r = run_op("find_novel_categories", dataset, dict(pred_field="pred", base="lvis_base"))
        assert r.result["tagged"] == 2 and r.result["novel_classes"] == sorted(["gizmo", rare])
        by = {s.name: s for s in dataset}
        assert by["a"].pred_novelty == pytest.approx(0.6) and by["a"].pred_novelty_classes == ["gizmo"]
        assert by["b"].pred_novelty == 0.0 and by["b"].pred_novelty_classes == []
        assert by["c"].pred_novelty == pytest.approx(0.4) and by["c"].pred_novelty_classes == [rare]
        assert [s.name for s in dataset.match_tags("pred_novel")] == ["a", "c"]
        view = dataset.load_saved_view("pred novel categories")
        assert [s.name for s in view] == ["a", "c"]  # sorted by novelty, highest first
        set_view = next(q for q in r.executor.to_json()["requests"] if q["operator_uri"] == "set_view")
        strip = lambda stages: [{k: v for k, v in st.items() if k != "_uuid"} for st in stages]  # noqa: E731
        # A new saved view is sent as its stages: the App has no view of that name loaded yet.
        assert strip(set_view["params"]["view"]) == strip(view._serialize())
        # Base = the classes of a ground-truth field ("gizmo"): re-running re-tags from scratch.
        run_op("find_novel_categories", dataset, dict(pred_field="pred", base="field", base_field="gt", min_score=0.5))
        by = {s.name: s for s in dataset}
        assert by["a"].pred_novelty == pytest.approx(0.9) and by["c"].pred_novelty == pytest.approx(0.99)
        assert sorted(s.name for s in dataset.match_tags("pred_novel")) == ["a", "b", "c"]
        run_op("find_novel_categories", dataset, dict(pred_field="pred", base="list",
                                                      base_classes=f"gizmo; {frequent}; {rare}"))
        assert dataset.match_tags("pred_novel").count() == 0 and set(dataset.values("pred_novelty")) == {0.0}
    finally:
        dataset.delete()


def noisy_predictions(frames) -> list[tuple[str, float, list[np.ndarray]]]:
    """Hand-made predictions of known quality: (label, score, per-frame masks)."""
    import cv2

    m = shape_masks(frames)
    half = [x if i < len(x) // 2 else np.zeros_like(x) for i, x in enumerate(m["disc"])]
    grown = [cv2.dilate(x.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool) for x in m["square"]]
    return [("disc", 0.9, m["disc"]), ("square", 0.8, m["rectangle"]), ("square", 0.6, grown), ("disc", 0.5, half)]


def write_field(dataset, videos, field, preds_of) -> None:
    import fiftyone as fo

    for sample, (_, frames) in zip(dataset, videos):
        for i in range(len(frames)):
            sample.frames[i + 1][field] = fo.Detections(detections=[
                fo.Detection.from_mask(masks[i], label=lab, confidence=score, index=k)
                for k, (lab, score, masks) in enumerate(preds_of(frames)) if masks[i].any()])
        sample.save()


def cli_report(gt, results, protocol, env, tmp_path) -> dict:
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "res.json").write_text(json.dumps(results))
    cli = run_cli(["eval", "--gt", str(tmp_path / "gt.json"), "--results", str(tmp_path / "res.json"),
                   "--protocol", protocol, "-o", str(tmp_path / "report.json")], env)
    assert cli.returncode == 0, cli.stderr
    return json.loads((tmp_path / "report.json").read_text())


@pytest.mark.parametrize("protocol", ["ytvis", "lvvis"])
def test_evaluate_equals_clipvis_eval(ds, small_card, videos, fo_session, tmp_path, protocol):
    """Operator metrics == `clipvis eval` on GT made from the generator, for the model's tracks
    (from the job layer's store) and for hand-made predictions of known quality."""
    from clipvis_core.evaluation import results_from_tracks
    from clipvis_core.tracks import encode_mask

    dataset, _ = ds
    names = ["disc", "rectangle", "square"]
    gt = {"videos": [], "annotations": [], "categories": [{"id": i + 1, "name": n} for i, n in enumerate(names)]}
    model_results, noisy_results = [], []
    for vid, (sample, (path, frames)) in enumerate(zip(dataset, videos), start=1):
        assert sample.filepath == str(path)
        gt["videos"].append({"id": vid, "width": WIDTH, "height": HEIGHT, "length": NUM_FRAMES})
        for lab, masks in shape_masks(frames).items():
            gt["annotations"].append({"id": len(gt["annotations"]) + 1, "video_id": vid, "category_id": names.index(lab) + 1,
                                      "iscrowd": 0, "segmentations": [encode_mask(m) if m.any() else None for m in masks],
                                      "areas": [float(m.sum()) if m.any() else None for m in masks]})
        model_results += results_from_tracks(stored_tracks(sample, small_card), vid)
        noisy_results += [{"video_id": vid, "category_id": names.index(lab) + 1, "score": score,
                           "segmentations": [encode_mask(m) for m in masks]} for lab, score, masks in noisy_predictions(frames)]
    write_field(dataset, videos, "noisy", noisy_predictions)
    for field, results in (("pred", model_results), ("noisy", noisy_results)):
        r = run_op("evaluate_video_instances", dataset, dict(pred_field=field, gt_field="gt", protocol=protocol))
        stored = dataset.info["clipvis_evaluations"][f"{field}_eval"]
        report = cli_report(gt, results, protocol, fo_session.env, tmp_path)
        assert r.result["stats"] == stored["stats"]
        assert stored["stats"] == pytest.approx(report["stats"], abs=1e-12), field
        # Per-sample scores: one per video, sortable to find the worst ones.
        by_video = {v["video_id"]: v for v in report["per_video"]}
        ious = dataset.values(f"{field}_eval_iou")
        assert ious == pytest.approx([by_video[i]["mean_best_iou"] for i in (1, 2, 3)])
        assert dataset.values(f"{field}_eval_fp50") == [by_video[i]["false_positives_50"] for i in (1, 2, 3)]
        assert dataset.sort_by(f"{field}_eval_iou").first()[f"{field}_eval_iou"] == min(ious)
    # The hand-made predictions score in between: one right disc, one wrong label, one loose square.
    assert 0.2 < stored["stats"]["AP"] < 0.9 and stored["stats"]["AP50"] > stored["stats"]["AP75"]


def test_image_dataset_is_one_frame_videos(fo_session, small_card, videos, tmp_path):
    import cv2
    import fiftyone as fo

    dataset = fo.Dataset(f"clipvis-img-{uuid.uuid4().hex[:8]}")
    try:
        for k, (_, frames) in enumerate(videos[:2]):
            p = tmp_path / f"img{k}.png"
            cv2.imwrite(str(p), cv2.cvtColor(frames[0], cv2.COLOR_RGB2BGR))
            dataset.add_sample(fo.Sample(filepath=str(p)))
        run_op("segment_video_instances", dataset, seg_params(small_card))
        dataset.reload()
        assert dataset.info["clipvis_runs"]["pred"]["samples"] == 2
        for sample in dataset:
            tracks = stored_tracks(sample, small_card)
            dets = sample.pred.detections
            assert sorted(d.index for d in dets) == sorted(t.id for t in tracks.tracks if t.boxes[0] is not None)
            for d in dets:
                t = next(t for t in tracks.tracks if t.id == d.index)
                assert np.array_equal(paste_mask(d, WIDTH, HEIGHT), t.mask(0))
            assert {c.label for c in sample.pred_summary.classifications} == {t.label for t in tracks.tracks}
        # Target = the current view (here: the first sample only).
        run_op("segment_video_instances", dataset, seg_params(small_card, label_field="first_only"),
               view=dataset.limit(1))
        assert [s.has_field("first_only") and s.first_only is not None for s in dataset] == [True, False]
    finally:
        dataset.delete()
