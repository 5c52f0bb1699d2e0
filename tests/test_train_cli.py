"""`clipvis train` as a user runs it, its one-line errors, and `clipvis eval --class-agnostic`."""
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from clipvis_core.cli import main
from shapes_data import write_ytvis
from train_helpers import random_tiny_card, small_config, write_config
from videogen import make_video

pytestmark = pytest.mark.training
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    return {"root": root, "train": write_ytvis(root, 4, seed=3, name="train"), "card": random_tiny_card(root),
            "config": write_config(root / "cfg.json", small_config(max_iter=2))}


def _args(setup, out, *extra):
    return ["train", "--data", str(setup["train"]), "--init", str(setup["card"]), "--output", str(out),
            "--config", str(setup["config"]), *extra]


def test_train_command_end_to_end(setup, tmp_path, capsys):
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "clipvis_core", *_args(setup, out, "--steps", "3", "--lr", "2e-4")],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "loss=" in proc.stderr and "3/3" in proc.stderr  # the progress bar: step, loss, rate, ETA
    assert "step/s" in proc.stderr or "s/step" in proc.stderr
    assert f"-> {out / 'model_card.json'}" in proc.stderr
    card = json.loads((out / "model_card.json").read_text())
    assert card["training"]["steps"] == 3 and card["training"]["config"]["optim"]["lr"] == 2e-4
    # The card works as --checkpoint for segmentation.
    video = make_video(tmp_path / "clip.mp4", num_frames=4, height=64, width=64)
    tracks = tmp_path / "tracks.json"
    assert main(["segment", str(video), "--checkpoint", str(out / "model_card.json"), "--class", "object",
                 "-o", str(tracks), "--quiet"]) == 0
    assert json.loads(tracks.read_text())["video"]["num_frames"] == 4
    # --resume with more steps continues from step 3.
    assert main(_args(setup, out, "--steps", "4", "--resume", "--quiet")) == 0
    assert json.loads((out / "model_card.json").read_text())["training"]["steps"] == 4
    assert [json.loads(x)["step"] for x in (out / "metrics.json").read_text().splitlines()] == [1, 2, 3, 4]


def _error(capsys, argv) -> str:
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2, err
    shown = err.split("\r")[-1].strip()  # what a terminal shows: a progress bar erases itself with \r
    assert shown.startswith("clipvis: error: ") and len(shown.splitlines()) == 1, err
    return shown


def _coco(path: Path, images: list[dict], anns: list[dict]) -> Path:
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": [{"id": 1, "name": "thing"}]}))
    return path


def _rle(h, w):
    m = np.zeros((h, w), np.uint8)
    m[h // 4: h // 2, w // 4: w // 2] = 1
    rle = mask_utils.encode(np.asfortranarray(m))
    return {"size": [h, w], "counts": rle["counts"].decode()}


def test_bad_input_is_one_line_and_writes_nothing(setup, tmp_path, capsys):
    card, cfg = str(setup["card"]), str(setup["config"])
    img = tmp_path / "a.png"
    cv2.imwrite(str(img), np.full((48, 48, 3), 90, np.uint8))

    def run(data, out_name, *extra):
        out = tmp_path / out_name
        err = _error(capsys, ["train", "--data", str(data), "--init", card, "--output", str(out), "--config", cfg, *extra])
        assert not out.exists() or not any(out.iterdir()), sorted(out.iterdir())
        return err

    empty = _coco(tmp_path / "empty.json", [{"id": 1, "file_name": "a.png", "height": 48, "width": 48}], [])
    assert "no annotated images" in run(empty, "o1")

    missing = _coco(tmp_path / "missing.json",
                    [{"id": 1, "file_name": "a.png", "height": 48, "width": 48},
                     {"id": 2, "file_name": "gone.png", "height": 48, "width": 48}],
                    [{"id": k, "image_id": k, "category_id": 1, "segmentation": _rle(48, 48), "iscrowd": 0} for k in (1, 2)])
    err = run(missing, "o2")
    assert "gone.png" in err and "--images" in err

    wrong = _coco(tmp_path / "wrong.json", [{"id": 1, "file_name": "a.png", "height": 64, "width": 64}],
                  [{"id": 1, "image_id": 1, "category_id": 1, "segmentation": _rle(64, 64), "iscrowd": 0}])
    assert "a.png" in run(wrong, "o3", "--steps", "1")

    bad_cfg = tmp_path / "bad_cfg.json"
    bad_cfg.write_text(json.dumps({"optim": {"learning_rate": 1}}))
    assert "learning_rate" in _error(capsys, _args(setup, tmp_path / "o4", "--config", str(bad_cfg)))
    assert "multiple" in _error(capsys, _args(setup, tmp_path / "o5", "--batch-size", "3", "--config",
                                              str(write_config(tmp_path / "acc.json", small_config(grad_accum=2)))))
    assert "--steps" in _error(capsys, _args(setup, tmp_path / "o6", "--steps", "0"))


def test_existing_run_and_other_architecture(setup, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_args(setup, out, "--steps", "1", "--quiet")) == 0
    before = sorted((p.name, p.stat().st_mtime_ns) for p in out.iterdir())
    assert "--resume" in _error(capsys, _args(setup, out, "--steps", "2"))
    err = _error(capsys, ["train", "--data", str(setup["train"]), "--init", "random:clipvis-rn50-dec7", "--output",
                          str(out), "--resume", "--steps", "2"])
    assert "tiny-random-64" in err and "clipvis-rn50-dec7" in err
    assert sorted((p.name, p.stat().st_mtime_ns) for p in out.iterdir()) == before  # untouched


def test_eval_class_agnostic(tmp_path, capsys):
    """A perfect mask labelled with the wrong class: AP 0 with the vocabulary, 100 class-agnostic."""
    h, w = 32, 32
    seg = _rle(h, w)
    gt = {"videos": [{"id": 1, "height": h, "width": w, "length": 2}],
          "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
          "annotations": [{"id": 1, "video_id": 1, "category_id": 1, "iscrowd": 0, "segmentations": [seg, seg]}]}
    res = [{"video_id": 1, "category_id": 2, "score": 0.9, "segmentations": [seg, seg]}]
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "res.json").write_text(json.dumps(res))
    base = ["eval", "--gt", str(tmp_path / "gt.json"), "--results", str(tmp_path / "res.json")]
    assert main([*base, "-o", str(tmp_path / "a.json")]) == 0
    assert main([*base, "--class-agnostic", "-o", str(tmp_path / "b.json")]) == 0
    capsys.readouterr()
    assert json.loads((tmp_path / "a.json").read_text())["stats"]["AP"] == 0.0
    agnostic = json.loads((tmp_path / "b.json").read_text())
    assert agnostic["stats"]["AP"] == pytest.approx(1.0)
    assert [c["name"] for c in agnostic["per_category"]] == ["object"]


def test_real_photographs_loss_falls(tmp_path):
    """Debian's labelme-examples (real photographs, COCO polygons nobody here drew): the loss falls."""
    subprocess.run(["bash", str(ROOT / "scripts" / "fetch_examples.sh")], check=True, capture_output=True)
    coco = ROOT / ".cache/debian/labelme-examples/usr/share/doc/labelme-examples/examples/instance_segmentation/data_dataset_coco/annotations.json"
    steps = 30
    cfg = write_config(tmp_path / "cfg.json", small_config(batch_size=3, augment={"image_size": 128, "min_scale": 0.8,
                                                                                  "max_scale": 1.2}))
    out = tmp_path / "run"
    assert main(["train", "--data", str(coco), "--init", "random:tiny", "--output", str(out), "--config", str(cfg),
                 "--steps", str(steps), "--lr", "1e-3", "--quiet"]) == 0
    losses = [json.loads(x)["total_loss"] for x in (out / "metrics.json").read_text().splitlines()]
    assert len(losses) == steps
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    print(f"\nlabelme photographs, random:tiny, {steps} steps: mean loss of the first 5 steps {first:.2f}, last 5 {last:.2f}")
    assert last < 0.8 * first
