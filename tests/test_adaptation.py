"""Classifier adaptation end to end with the tiny random model on generated videos.

The tiny model's text tower is random, so its text classifier cannot tell the generated classes
apart (held-out accuracy near chance); a handful of labelled instances per class must lift held-out
accuracy and AP far above it. Also: the adapter through the CLI and the job layer, a checkpoint
mismatch, boxes-only corrections, conflicting labels and empty input.
"""
import dataclasses
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from test_fiftyone_env import fo_session  # noqa: F401  (one FiftyOne database per test session)
from videogen import write_frame_dir, write_video

from clipvis_core.adaptation import ClassifierAdapter, open_examples
from clipvis_core.adaptation.embed import embed_examples
from clipvis_core.adaptation.prototypes import class_scores
from clipvis_core.cli import main
from clipvis_core.evaluation import evaluate
from clipvis_core.jobs import JobSettings, JobSpec, run_job
from clipvis_core.segmenter import get_segmenter

# Each class is one shape in one colour family: easy to see, impossible to read off random text weights.
CLASSES = {"apple": ("disc", (210, 40, 40)), "leaf": ("box", (40, 190, 60)), "ice": ("triangle", (60, 90, 230)),
           "sand": ("disc", (225, 205, 120))}
NAMES = list(CLASSES)
PER_CLASS = 5  # labelled instances per class (the issue allows at most 5)
# 10 videos take each class 5 times, 4 videos twice, 12 videos 6 times.
PAIRS = [(0, 1), (2, 3), (0, 2), (1, 3), (0, 3), (1, 2)]


def _draw(kind, canvas, cx, cy, r, colour):
    c, r = (int(round(cx)), int(round(cy))), int(round(r))
    if kind == "disc":
        cv2.circle(canvas, c, r, colour, -1)
    elif kind == "box":
        cv2.rectangle(canvas, (c[0] - r, c[1] - r), (c[0] + r, c[1] + r), colour, -1)
    else:
        cv2.fillPoly(canvas, [np.array([[c[0], c[1] - r], [c[0] - r, c[1] + r], [c[0] + r, c[1] + r]], np.int32)], colour)


def _video(rng, classes, t=2, h=96, w=128):
    """Frames [T, H, W, 3] and visible masks [N, T, H, W]: one object per class, side by side."""
    frames = np.clip(rng.integers(10, 80, size=3) + rng.integers(-10, 11, size=(t, h, w, 3)), 0, 255).astype(np.uint8)
    shapes = []
    for k, name in enumerate(classes):
        kind, colour = CLASSES[name]
        colour = tuple(int(np.clip(c + rng.integers(-25, 26), 0, 255)) for c in colour)
        r = rng.uniform(0.2, 0.28) * min(h, w)
        x = (k + 0.5) * w / len(classes) + rng.uniform(-0.05, 0.05) * w
        shapes.append((kind, x, rng.uniform(r, h - r), rng.uniform(-0.04, 0.04) * h, r, colour))
    masks = np.zeros((len(classes), t, h, w), bool)
    for f in range(t):
        owner = np.full((h, w), -1)
        for k, (kind, x, y, vy, r, colour) in enumerate(shapes):
            cy = np.clip(y + vy * f, r, h - r)
            _draw(kind, frames[f], x, cy, r, colour)
            layer = np.zeros((h, w), np.uint8)
            _draw(kind, layer, x, cy, r, 1)
            owner[layer > 0] = k
        masks[:, f] = owner[None] == np.arange(len(classes))[:, None, None]
    return frames, masks


def write_set(root: Path, name: str, num_videos: int, seed: int, boxes: bool = False, t: int = 2) -> Path:
    """YTVIS JSON + frame folders; videos cycle through every pair of classes (balanced counts)."""
    rng = np.random.default_rng(seed)
    videos, anns = [], []
    for v in range(num_videos):
        classes = [NAMES[i] for i in PAIRS[v % len(PAIRS)]]
        frames, masks = _video(rng, classes, t)
        folder = f"{name}/v{v:03d}"
        write_frame_dir(root / folder, frames, ext=".png")
        h, w = frames.shape[1:3]
        videos.append({"id": v + 1, "height": h, "width": w, "length": t,
                       "file_names": [f"{folder}/{i:05d}.png" for i in range(t)]})
        for k, c in enumerate(classes):
            rles = [mask_utils.encode(np.asfortranarray(masks[k, f].astype(np.uint8))) for f in range(t)]
            ann = {"id": len(anns) + 1, "video_id": v + 1, "category_id": NAMES.index(c) + 1, "iscrowd": 0}
            if boxes:
                ann["bboxes"] = [[float(b) for b in mask_utils.toBbox(r)] for r in rles]
            else:
                ann["segmentations"] = [{"size": [h, w], "counts": r["counts"].decode("ascii")} for r in rles]
            anns.append(ann)
    path = root / f"{name}.json"
    path.write_text(json.dumps({"videos": videos, "annotations": anns,
                                "categories": [{"id": i + 1, "name": c} for i, c in enumerate(NAMES)]}))
    return path


@pytest.fixture(scope="module", autouse=True)
def _env(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CLIPVIS_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        mp.delenv("CLIPVIS_BROKER_URL", raising=False)
        mp.delenv("CLIPVIS_RESULT_BACKEND", raising=False)
        yield


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("adapt")
    return {"train": write_set(root, "train", PER_CLASS * 2, seed=0),
            "boxes": write_set(root, "boxes", 4, seed=1, boxes=True),
            "test": write_set(root, "test", 12, seed=2)}


@pytest.fixture(scope="module")
def card(tiny_card, tmp_path_factory):
    """A private copy of the tiny card: `clipvis adapt` records its adapters in it."""
    d = json.loads(tiny_card.read_text())
    path = tmp_path_factory.mktemp("card") / "tiny_card.json"
    path.write_text(json.dumps(d))
    return path


@pytest.fixture(scope="module")
def adapter(data, card, tmp_path_factory):
    out = tmp_path_factory.mktemp("adapter") / "apple.pt"
    assert main(["adapt", "--data", str(data["train"]), "--checkpoint", str(card), "--output", str(out),
                 "--frames-per-instance", "1", "-q"]) == 0
    return out


@pytest.fixture(scope="module")
def held_out(data, card):
    """Embeddings of every held-out instance (its ground-truth mask, one frame), and their labels."""
    found = open_examples(str(data["test"]))
    return embed_examples(get_segmenter(str(card)), found.examples, frames_per_instance=1)


def _ap(probs: torch.Tensor, vocab, gt_path: Path) -> float:
    """AP with the project's evaluator: each held-out instance (its exact mask) is detected once per
    class with the classifier's probability, so AP measures the classification alone."""
    gt = json.loads(gt_path.read_text())
    results = []
    for ann, p in zip(gt["annotations"], probs):
        for c, name in enumerate(vocab.labels):
            results.append({"video_id": ann["video_id"], "category_id": NAMES.index(name) + 1,
                            "score": float(p[c]), "segmentations": ann["segmentations"]})
    return evaluate(gt, results).stats["AP"]


def _accuracy_and_ap(held_out, classifier, vocab, gt_path: Path, scale: float):
    scores = class_scores(held_out.embeddings, classifier.embeddings, classifier.num_synonyms)
    y = torch.tensor([vocab.labels.index(lab) for lab in held_out.labels])
    accuracy = float((scores.argmax(1) == y).float().mean())
    return accuracy, _ap(torch.softmax(scale * scores, -1), vocab, gt_path)


def test_adaptation_lifts_held_out_accuracy_and_ap(adapter, held_out, data, card, capsys):
    a = ClassifierAdapter.load(adapter)
    assert a.counts == [PER_CLASS] * len(NAMES) and a.vocabulary == NAMES
    seg = get_segmenter(str(card))
    vocab = a.vocab
    text = seg.text_classifier(vocab)
    scale = float(torch.clamp(seg.model.backbone.logit_scale.exp(), max=seg.cfg.inference.logit_scale_max))
    # Labels of held-out instances follow the order written in test.json, as embed_examples keeps it.
    found = open_examples(str(data["test"]))
    assert [e.label for e in found.examples] == held_out.labels
    before = _accuracy_and_ap(held_out, text, vocab, data["test"], scale)
    after = _accuracy_and_ap(held_out, a.apply(text, vocab), vocab, data["test"], scale)
    chance = 1 / len(NAMES)
    gen = torch.Generator().manual_seed(0)  # chance AP: the mean AP of random scores
    chance_ap = float(np.mean([_ap(torch.rand(len(held_out.labels), len(NAMES), generator=gen), vocab, data["test"])
                               for _ in range(5)]))
    with capsys.disabled():
        print(f"\nheld-out ({len(held_out.labels)} instances, {len(NAMES)} classes; chance accuracy {chance:.2f}, "
              f"chance AP {chance_ap:.3f}): "
              f"accuracy {before[0]:.3f} -> {after[0]:.3f}, AP {before[1]:.3f} -> {after[1]:.3f}; "
              f"blend weight {a.alpha}, leave-one-out {a.report['loo_accuracy_text']:.3f} -> "
              f"{a.report['loo_accuracy_adapted']:.3f}")
    assert before[0] <= chance + 0.15 and before[1] <= chance_ap + 0.2  # the text classifier is near chance
    assert after[0] >= 0.9 and after[1] >= max(0.8, chance_ap + 0.4)
    assert 0 < a.alpha <= 1 and a.report["loo_accuracy_adapted"] > a.report["loo_accuracy_text"]
    # Recorded in the model card, keyed by the adapter's digest and vocabulary.
    entries = json.loads(card.read_text())["adapters"]
    assert [(e["path"], e["digest"], e["vocabulary"]) for e in entries] == [(str(adapter.resolve()), a.digest(), vocab.digest())]


def test_adapter_through_cli_and_job_layer_gives_the_same_labels(adapter, data, card, tmp_path):
    frames = np.stack([cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB)
                       for p in sorted((data["test"].parent / "test" / "v000").glob("*.png"))])
    video = write_video(tmp_path / "held_out.avi", frames)
    out = tmp_path / "cli.json"
    assert main(["segment", str(video), "--checkpoint", str(card), "--adapter", str(adapter), "-o", str(out), "-q"]) == 0
    cli = json.loads(out.read_text())
    settings = dataclasses.replace(JobSettings.from_env(), results_dir=tmp_path / "results", broker_url=None, result_backend=None)
    spec = JobSpec(str(video), [], str(card), adapter=str(adapter))  # no classes: the adapter's
    job = run_job(JobSpec.from_dict(spec.to_dict()), settings=settings).to_dict()
    plain = get_segmenter(str(card)).segment(str(video), NAMES).to_dict()
    labels = lambda r: [(t["label"], round(t["score"], 5)) for t in r["tracks"]]  # noqa: E731
    assert cli["tracks"] and labels(cli) == labels(job)
    assert cli["model"] == job["model"] != plain["model"]
    assert ClassifierAdapter.load(adapter).digest() in cli["model"]
    assert labels(plain) != labels(cli)  # the adapter changes the class scores
    # The adapter is part of the job key: without it the same request is another result.
    assert JobSpec(str(video), NAMES, str(card)).key() != JobSpec(str(video), NAMES, str(card), adapter=str(adapter)).key()


def test_adapter_for_another_checkpoint_is_refused_with_one_line(adapter, data, tmp_path, capsys):
    video = tmp_path / "v.avi"
    write_video(video, np.zeros((2, 64, 64, 3), np.uint8))
    rc = main(["segment", str(video), "--checkpoint", "random:tiny", "--adapter", str(adapter),
               "-o", str(tmp_path / "o.json"), "-q"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err and err.startswith("clipvis: error: adapter built for checkpoint")
    assert "clipvis adapt --checkpoint random:tiny" in err and not (tmp_path / "o.json").exists()


def test_boxes_only_corrections_adapt_the_classifier(data, card, held_out, tmp_path):
    out = tmp_path / "boxes.pt"
    assert main(["adapt", "--data", str(data["boxes"]), "--checkpoint", str(card), "--output", str(out),
                 "--frames-per-instance", "1", "-q"]) == 0
    a = ClassifierAdapter.load(out)
    n = len(json.loads(data["boxes"].read_text())["annotations"])
    assert a.report["boxes_only_instances"] == n == sum(a.counts)
    assert sum(a.report["pooled_from"].get(k, 0) for k in ("box", "predicted mask")) == n
    assert "mask" not in a.report["pooled_from"]
    seg = get_segmenter(str(card))
    adapted = a.apply(seg.text_classifier(a.vocab), a.vocab)
    y = torch.tensor([a.vocab.labels.index(lab) for lab in held_out.labels])
    acc = float((class_scores(held_out.embeddings, adapted.embeddings, adapted.num_synonyms).argmax(1) == y).float().mean())
    assert acc >= 0.75, acc


def _ytvis(path: Path, anns: list, frames_root: Path) -> Path:
    files = [str(p.relative_to(frames_root)) for p in sorted((frames_root / "train" / "v000").glob("*.png"))]
    path.write_text(json.dumps({"videos": [{"id": 1, "height": 96, "width": 128, "file_names": files}],
                                "annotations": anns,
                                "categories": [{"id": i + 1, "name": c} for i, c in enumerate(NAMES)]}))
    return path


def test_conflicting_labels_leave_the_instance_out(data, card, tmp_path, capsys):
    train = json.loads(data["train"].read_text())
    first = [a for a in train["annotations"] if a["video_id"] == 1]
    # Instance 1 is labelled "apple" in one annotation and "ice" in another: it is left out, instance 2 kept.
    conflict = [dict(first[0], id=1, instance_id=7), dict(first[0], id=2, instance_id=7, category_id=3),
                dict(first[1], id=3)]
    src = _ytvis(tmp_path / "conflict.json", conflict, data["train"].parent)
    found = open_examples(str(src))
    assert (found.conflicting, len(found.examples)) == (1, 1)
    assert found.examples[0].label == NAMES[first[1]["category_id"] - 1]
    out = tmp_path / "c.pt"
    assert main(["adapt", "--data", str(src), "--images", str(data["train"].parent), "--checkpoint", str(card),
                 "--output", str(out), "-q"]) == 0
    assert ClassifierAdapter.load(out).report["conflicting_left_out"] == 1
    # Only conflicting instances: nothing to learn from, a one-line error and no file.
    only = _ytvis(tmp_path / "only.json", conflict[:2], data["train"].parent)
    rc = main(["adapt", "--data", str(only), "--checkpoint", str(card), "--output", str(tmp_path / "x.pt")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err and "1 with conflicting labels" in err and not (tmp_path / "x.pt").exists()


@pytest.mark.parametrize("kind", ["ytvis", "labelstudio"])
def test_empty_input_is_a_one_line_error(kind, data, card, tmp_path, capsys):
    if kind == "ytvis":
        src = _ytvis(tmp_path / "empty.json", [], data["train"].parent)
    else:  # a Label Studio project export whose tasks nobody annotated yet
        src = tmp_path / "project.json"
        src.write_text(json.dumps([{"id": 1, "data": {"image": "/data/upload/1/a.png"}, "annotations": []}]))
    out = tmp_path / "a.pt"
    rc = main(["adapt", "--data", str(src), "--checkpoint", str(card), "--output", str(out)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err and err.startswith("clipvis: error: no labelled instances in")
    assert not out.exists()


def test_hosts_pass_the_adapter_to_the_job_layer(adapter, card, tmp_path, monkeypatch):
    from backend import runner as ls_runner
    from backend.model import ClipvisBackend
    from backend.settings import BackendSettings
    from clipvis_core.errors import InputError
    from clipvis_core.vocabulary import Vocabulary
    from plugin import params as fo_params
    from plugin import runner as fo_runner

    digest = ClassifierAdapter.load(adapter).digest()
    # Label Studio backend: CLIPVIS_ADAPTER is part of the model version and of every job it starts.
    config = ('<View><Video name="video" value="$video"/><VideoRectangle name="box" toName="video"/>'
              '<Labels name="l" toName="video">' + "".join(f'<Label value="{n}"/>' for n in NAMES) + "</Labels></View>")
    monkeypatch.setenv("CLIPVIS_ADAPTER", str(adapter))
    adapted = ClipvisBackend(config, BackendSettings.from_env(checkpoint=str(card)))
    monkeypatch.delenv("CLIPVIS_ADAPTER")
    plain = ClipvisBackend(config, BackendSettings.from_env(checkpoint=str(card)))
    assert adapted.model_version == f"{plain.model_version}-{digest}"
    video = tmp_path / "v.avi"
    write_video(video, np.zeros((2, 64, 64, 3), np.uint8))
    request = ls_runner.Request("/data/v.avi", "video", tuple(NAMES), str(card), adapted.options(), str(adapter))
    assert ls_runner._spec(request, video).adapter == str(adapter)
    monkeypatch.setenv("CLIPVIS_ADAPTER", str(tmp_path / "missing.pt"))
    with pytest.raises(InputError, match="CLIPVIS_ADAPTER .* not found"):
        BackendSettings.from_env(checkpoint=str(card))
    # FiftyOne segment operator: the optional adapter parameter reaches the job spec.
    assert fo_params._adapter("") is None and fo_params._adapter(str(adapter)) == str(adapter)
    with pytest.raises(InputError, match="not a clipvis adapter file"):
        fo_params._adapter(str(card))  # a model card is not an adapter
    req = fo_params.SegmentRequest(Vocabulary.from_names(NAMES), str(card), 0.1, None, 1, "pred", True, str(adapter))
    assert fo_runner.job_spec(str(video), req).adapter == str(adapter)


def test_label_studio_video_and_image_rectangles(data, card, tmp_path):
    """A Label Studio export: video rectangles (keyframes) and an image rectangle adapt the classifier;
    a region carrying two different labels is a conflict."""
    train = json.loads(data["train"].read_text())
    video = train["videos"][0]
    frames = np.stack([cv2.cvtColor(cv2.imread(str(data["train"].parent / f)), cv2.COLOR_BGR2RGB)
                       for f in video["file_names"]])
    media = tmp_path / "media"
    write_video(media / "clip.avi", frames, fps=10.0)
    cv2.imwrite(str(media / "still.png"), cv2.cvtColor(frames[0], cv2.COLOR_RGB2BGR))
    h, w = video["height"], video["width"]
    anns = [a for a in train["annotations"] if a["video_id"] == video["id"]]
    pct = lambda b: {"x": 100 * b[0] / w, "y": 100 * b[1] / h, "width": 100 * b[2] / w, "height": 100 * b[3] / h}  # noqa: E731
    boxes = [[mask_utils.toBbox(s).tolist() for s in a["segmentations"]] for a in anns]
    label = [NAMES[a["category_id"] - 1] for a in anns]
    seq = [dict(pct(b), frame=t + 1, time=t / 10.0, enabled=True) for t, b in enumerate(boxes[0])]
    tasks = [
        {"id": 1, "data": {"video": "/data/upload/1/clip.avi"}, "annotations": [{"id": 10, "result": [
            {"id": "r1", "type": "videorectangle", "value": {"sequence": seq, "labels": [label[0]]}},
            {"id": "r2", "type": "videorectangle", "value": {"sequence": seq[:1], "labels": [label[1], label[0]]}}]}]},
        {"id": 2, "data": {"image": "/data/upload/1/still.png"}, "annotations": [{"id": 11, "result": [
            {"id": "r3", "type": "rectanglelabels", "original_width": w, "original_height": h,
             "value": dict(pct(boxes[1][0]), rotation=0, rectanglelabels=[label[1]])}]}]},
        {"id": 3, "data": {"image": "/data/upload/1/still.png"}, "annotations": []},  # not annotated yet
    ]
    export = tmp_path / "export.json"
    export.write_text(json.dumps(tasks))
    found = open_examples(str(export), str(media))
    assert (len(found.examples), found.conflicting, found.boxes_only) == (2, 1, 2)
    vid, img = found.examples
    assert vid.label == label[0] and [o.frame for o in vid.observations] == [(str(media / "clip.avi"), t) for t in range(len(seq))]
    assert np.allclose(vid.observations[0].box, boxes[0][0], atol=1e-6) and img.label == label[1]
    out = tmp_path / "ls.pt"
    assert main(["adapt", "--data", str(export), "--images", str(media), "--checkpoint", str(card),
                 "--output", str(out), "-q"]) == 0
    a = ClassifierAdapter.load(out)
    assert sum(a.report["pooled_from"].values()) == len(seq) + 1 and a.report["conflicting_left_out"] == 1
    assert sorted(n for n in a.counts if n) == [1, 1]


def test_fiftyone_detections_with_masks_boxes_and_a_conflict(fo_session, data, tmp_path):  # noqa: F811
    import fiftyone as fo

    from clipvis_core.export.fiftyone import crop_instance

    train = json.loads(data["train"].read_text())
    video = train["videos"][0]
    frames = np.stack([cv2.cvtColor(cv2.imread(str(data["train"].parent / f)), cv2.COLOR_BGR2RGB)
                       for f in video["file_names"]])
    path = write_video(tmp_path / "clip.avi", frames)
    anns = [a for a in train["annotations"] if a["video_id"] == video["id"]]
    label = [NAMES[a["category_id"] - 1] for a in anns]
    ds = fo.Dataset(f"clipvis-adapt-{tmp_path.name}")
    try:
        sample = fo.Sample(filepath=str(path))
        objects = [fo.Instance() for _ in range(3)]
        for t in range(len(frames)):
            masks = [mask_utils.decode(a["segmentations"][t]).astype(bool) for a in anns]
            crops = [crop_instance(m) for m in masks]
            dets = [fo.Detection(label=label[0], bounding_box=crops[0].box, mask=crops[0].mask, instance=objects[0]),
                    fo.Detection(label=label[1], bounding_box=crops[1].box, instance=objects[1]),  # a box only
                    # The same object called differently in two frames: a conflict.
                    fo.Detection(label=label[t % 2], bounding_box=crops[1].box, instance=objects[2])]
            sample.frames[t + 1] = fo.Frame(gt=fo.Detections(detections=dets))
        ds.add_sample(sample)
        found = open_examples(f"fiftyone:{ds.name}:gt")
    finally:
        ds.delete()
    assert (len(found.examples), found.conflicting, found.boxes_only) == (2, 1, 1)
    masked, boxed = found.examples
    assert (masked.label, boxed.label) == (label[0], label[1])
    assert [o.frame for o in masked.observations] == [(str(path), t) for t in range(len(frames))]
    assert all(o.mask is not None for o in masked.observations) and all(o.box is not None for o in boxed.observations)
    expected = mask_utils.toBbox(anns[1]["segmentations"][0]).tolist()
    assert np.allclose(boxed.observations[0].box, expected, atol=1.0)


def test_labels_map_to_classes_by_entry_or_synonym_and_unknown_labels_extend_the_vocabulary():
    from clipvis_core.adaptation import extend_vocabulary
    from clipvis_core.vocabulary import Vocabulary

    given = Vocabulary.from_names(["car, automobile", "Ball"])
    vocab, idx = extend_vocabulary(given, ["car, automobile", "AUTOMOBILE", "ball", "pear", "Pear "])
    assert vocab.entries == ("car, automobile", "Ball", "pear") and idx == [0, 0, 1, 2, 2]
