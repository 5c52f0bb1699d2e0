"""The training loop: it learns, resume is exact, NaN and full-disk stop cleanly, checkpoints round-trip."""
import json
import os
import subprocess

import pytest
import torch

from clipvis_core.training import checkpointing as ckpt
from clipvis_core.training.data import open_source
from clipvis_core.training.loop import TrainingCancelled, TrainRequest, train
from clipvis_core.training.metrics import read_metrics
from clipvis_core.training.validation import evaluate_records
from clipvis_core.weights import load_model, read_state_dict, resolve_checkpoint
from shapes_data import write_ytvis
from train_helpers import random_tiny_card, small_config

pytestmark = pytest.mark.training


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    return {"train": write_ytvis(root, 24, seed=1, name="train"), "val": write_ytvis(root, 6, seed=2, name="val"),
            "card": random_tiny_card(root)}


def test_it_learns_from_random_weights(shapes, tmp_path):
    """Random tiny model, 40 steps on moving shapes: class-agnostic mask AP50 on held-out videos rises."""
    resolved = resolve_checkpoint(str(shapes["card"]))
    val = open_source(str(shapes["val"]))
    before = evaluate_records(load_model(resolved), resolved, val, torch.device("cpu"))
    cfg = small_config(batch_size=4, max_iter=40, optim={"lr": 1e-3})
    result = train(TrainRequest([str(shapes["train"])], str(shapes["card"]), tmp_path / "run", cfg, val=[str(shapes["val"])]))
    after = result.validation
    print(f"\nclass-agnostic AP50 on held-out shape videos: before {100 * before['val/agnostic_AP50']:.1f}, "
          f"after 40 steps {100 * after['val/agnostic_AP50']:.1f} (AP {100 * before['val/agnostic_AP']:.1f} -> "
          f"{100 * after['val/agnostic_AP']:.1f}; loss {result.losses[0]:.2f} -> {result.losses[-1]:.2f})")
    assert before["val/agnostic_AP50"] < 0.05
    assert after["val/agnostic_AP50"] > 0.4
    assert after["val/agnostic_AP50"] > before["val/agnostic_AP50"] + 0.35
    assert "val/AP50" in after  # the data has categories: AP with its vocabulary too
    rows = read_metrics(tmp_path / "run")
    assert [r["step"] for r in rows if "total_loss" in r] == list(range(1, 41))
    assert any("val/agnostic_AP50" in r for r in rows)


def _run(shapes, out, cfg, **kw):
    return train(TrainRequest([str(shapes["train"])], str(shapes["card"]), out, cfg, **kw))


def test_resume_gives_identical_losses(shapes, tmp_path):
    """Killed at step 3 (checkpoint of step 2), resumed, cancelled before step 6, resumed: same run."""
    cfg = small_config(max_iter=6, checkpoint_period=2, num_workers=2)
    full = _run(shapes, tmp_path / "a", cfg)

    def kill_at_3(step, loss, module):
        if step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _run(shapes, tmp_path / "b", cfg, on_backward=kill_at_3)
    assert ckpt.latest_checkpoint(tmp_path / "b").name == ckpt.periodic_name(2)
    first = [r["total_loss"] for r in read_metrics(tmp_path / "b")]  # steps 1-3 were logged before the kill
    calls = []

    def stop_at_5():
        calls.append(1)
        return len(calls) == 3  # polled before steps 3, 4, 5: stop before the 5th

    with pytest.raises(TrainingCancelled, match="after step 4"):
        _run(shapes, tmp_path / "b", cfg, resume=True, should_stop=stop_at_5)
    assert ckpt.latest_checkpoint(tmp_path / "b").name == ckpt.periodic_name(4)
    last = _run(shapes, tmp_path / "b", cfg, resume=True)
    assert last.losses == full.losses[4:]
    assert first[:2] == full.losses[:2]
    rows = read_metrics(tmp_path / "b")
    assert [r["step"] for r in rows] == list(range(1, 7))
    assert [r["total_loss"] for r in rows] == full.losses
    a, b = read_state_dict(full.final), read_state_dict(last.final)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_checkpoints_round_trip(shapes, tmp_path, ref_dir):
    result = _run(shapes, tmp_path / "run", small_config(max_iter=2))
    final = torch.load(result.final, weights_only=True)
    assert set(final) == {"model"}
    upstream = torch.load(ref_dir / "tiny_model.pth", weights_only=True)["model"]
    assert {k: v.shape for k, v in final["model"].items()} .keys() == upstream.keys()
    # TensorBoard scalars beside metrics.json (tensorboard is part of the [all] extra).
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "run"))
    events.Reload()
    logged = {r["step"]: r["total_loss"] for r in read_metrics(tmp_path / "run")}
    assert {e.step: e.value for e in events.Scalars("total_loss")} == pytest.approx(logged)
    card = json.loads(result.card.read_text())
    assert card["checkpoint"] == "model_final.pth"  # relative to the card: the run directory can move
    moved = tmp_path / "moved"
    os.rename(tmp_path / "run", moved)
    model = load_model(resolve_checkpoint(str(moved / "model_card.json")))  # strict
    assert torch.equal(model.sem_seg_head.predictor.query_feat.weight,
                       final["model"]["sem_seg_head.predictor.query_feat.weight"])
    training = torch.load(moved / ckpt.periodic_name(2), weights_only=True)
    assert training["iteration"] == 1 and training["trainer"]["steps_done"] == 2
    assert training["model"].keys() == final["model"].keys()


def test_full_size_layout_matches_manifests(ref_dir):
    """The state dict a training run writes for ConvNeXt-B / RN50 has the released checkpoints' keys and shapes."""
    from clipvis_core.config import released_config
    from clipvis_core.modeling.model import ClipVisModel
    from clipvis_core.training.config import LossConfig

    for path in sorted((ref_dir / "manifests").glob("manifest_clipvis_video_*_dec10.json")):
        m = json.loads(path.read_text())
        backbone = "convnext-b" if "convnext" in m["MODEL.FC_CLIP.CLIP_MODEL_NAME"].lower() else "rn50"
        with torch.device("meta"):
            model = ClipVisModel(released_config(f"clipvis-{backbone}-dec10"))
        sd = ckpt.upstream_state_dict(model, LossConfig().empty_object_weight)
        assert {k: list(v.shape) for k, v in sd.items()} == {k: list(s) for k, s in m["keys"].items()}, path.name


def test_nan_loss_stops_and_keeps_last_good_checkpoint(shapes, tmp_path, capsys):
    from clipvis_core.cli import main
    from train_helpers import write_config

    cfg = write_config(tmp_path / "cfg.json", small_config(checkpoint_period=1, max_iter=10, optim={"clip_grad_norm": 0.0}))
    out = tmp_path / "run"
    rc = main(["train", "--data", str(shapes["train"]), "--init", str(shapes["card"]), "--output", str(out),
               "--config", str(cfg), "--lr", "1e30", "--quiet"])
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert err.startswith("clipvis: error: the loss became") and len(err.splitlines()) == 1
    step = int(err.split(" at step ")[1].split(":")[0])
    kept = ckpt.latest_checkpoint(out)
    assert kept.name == ckpt.periodic_name(step - 1) and kept.name in err
    assert all(torch.isfinite(v).all() for v in torch.load(kept, weights_only=True)["model"].values())
    assert not (out / ckpt.FINAL).exists()


@pytest.fixture
def small_disk(tmp_path):
    """A real size-limited filesystem (tmpfs; the tests run as root, as CI does)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    size = 48  # MiB: one tiny-model checkpoint (~30 MB) fits, a second does not
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}m", "tmpfs", str(mnt)], check=True)
    yield mnt
    subprocess.run(["umount", str(mnt)], check=True)


def test_disk_full_leaves_previous_checkpoint(shapes, small_disk):
    out = small_disk / "run"
    with pytest.raises(ckpt.CheckpointError) as e:
        _run(shapes, out, small_config(checkpoint_period=1, max_iter=3))
    msg = str(e.value)
    assert "the disk is full" in msg and ckpt.periodic_name(1) in msg and "\n" not in msg
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [ckpt.periodic_name(1), ckpt.LAST, "metrics.json"] + [p.name for p in out.glob("events.out.tfevents.*")])
    assert ckpt.latest_checkpoint(out).name == ckpt.periodic_name(1)
    assert ckpt.load_training_checkpoint(out / ckpt.periodic_name(1))["trainer"]["steps_done"] == 1
