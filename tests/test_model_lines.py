"""Model lines: versions with lineage, promotion only when not worse, crash safety, line:NAME everywhere."""
import json
import shutil

import pytest
import torch

from clipvis_core.cli import main
from clipvis_core.errors import ClipvisError, InputError
from clipvis_core.finetune import FinetuneRequest, finetune, record_key, split
from clipvis_core.jobs.spec import checkpoint_identity
from clipvis_core.training.config import TrainConfig
from clipvis_core.training.data import open_source
from clipvis_core.versions import Lineage, ModelLine
from clipvis_core.weights import resolve_checkpoint
from shapes_data import write_ytvis

pytestmark = pytest.mark.training

# Small enough for 2 CPU cores: 64 px clips of one frame, 1024 points per mask.
FAST = {"loss": {"num_points": 1024}, "augment": {"video_min_sizes": [64], "video_max_size": 128}, "num_workers": 0}


@pytest.fixture
def models_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("CLIPVIS_MODELS_DIR", str(tmp_path / "models"))
    return tmp_path / "models"


def test_line_versions_promotion_and_job_keys(models_dir, tiny_card, capsys):
    line = ModelLine.create("team-a", "random:tiny")
    assert resolve_checkpoint("line:team-a").name == "team-a@v0"
    key_v0 = checkpoint_identity("line:team-a")
    version, vdir = line.next_version()
    line.record(Lineage(version, "v0", "finetune", str(tiny_card), steps=3, promoted=False, reason="by hand"))
    # recorded but not promoted: still v0 everywhere
    assert resolve_checkpoint("line:team-a").name == "team-a@v0"
    assert resolve_checkpoint(f"line:team-a@{version}").config.decoder.num_queries > 0
    line.promote(version)
    assert resolve_checkpoint("line:team-a").name == f"team-a@{version}"
    assert checkpoint_identity("line:team-a") != key_v0  # a promotion invalidates cached job results
    assert main(["models", "show", "team-a"]) == 0
    out = capsys.readouterr().out
    assert f"* {version}" in out and "v0" in out
    assert main(["models", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["line"] == "team-a" and rows[0]["current"] == version
    assert main(["models", "promote", "team-a", "v0"]) == 0
    assert resolve_checkpoint("line:team-a").name == "team-a@v0"


def test_line_bad_input(models_dir, capsys):
    for argv, hint in ((["models", "show", "nope"], "clipvis models create nope"),
                       (["models", "create", "../x", "--checkpoint", "random:tiny"], "invalid model line name"),
                       (["models", "create", "x", "--checkpoint", "nope.pth"], "not found"),
                       (["models", "promote", "nope", "v1"], "no model line")):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("clipvis: error:") and hint in err and len(err.strip().splitlines()) == 1
    ModelLine.create("b", "random:tiny")
    assert main(["models", "create", "b", "--checkpoint", "random:tiny"]) == 2
    with pytest.raises(ClipvisError, match="no version"):
        resolve_checkpoint("line:b@v7")


def test_held_out_split_is_stable(tmp_path):
    records = open_source(str(write_ytvis(tmp_path, 12, seed=3, num_frames=1)))
    train_a, held_a = split(records, 0.25)
    train_b, held_b = split(list(reversed(records)), 0.25)
    assert {r.source for r in held_a} == {r.source for r in held_b} and held_a and train_a
    assert len({record_key(r) for r in records}) == len(records)


def test_finetune_promotes_rejects_worse_and_survives_a_crash(models_dir, tmp_path):
    torch.set_num_threads(2)
    first = str(write_ytvis(tmp_path / "a", 16, seed=1, num_frames=1))
    second = str(write_ytvis(tmp_path / "b", 12, seed=2, num_frames=1))
    line = ModelLine.create("shapes", "random:tiny")
    cfg = TrainConfig.from_dict(FAST)

    with pytest.raises(InputError, match="held-out share"):
        finetune(FinetuneRequest("shapes", [first], held_out=1.5))
    skipped = finetune(FinetuneRequest("shapes", [first], min_new=10_000, config=cfg))
    assert skipped.status == "skipped" and "threshold" in skipped.reason
    assert line.current().version == "v0"

    good = finetune(FinetuneRequest("shapes", [first], steps=40, batch_size=4, lr=1e-3, config=cfg, min_new=5))
    before, after = good.lineage.metrics["parent"], good.lineage.metrics["candidate"]
    print(f"round 1: held-out class-agnostic AP {before['val/agnostic_AP']:.3f} -> {after['val/agnostic_AP']:.3f}")
    assert good.status == "promoted" and line.current().version == good.lineage.version
    assert after["val/agnostic_AP"] >= before["val/agnostic_AP"]
    assert good.lineage.parent == "v0" and good.lineage.steps == 40 and good.lineage.data["held_out_samples"] > 0

    # the same corrections again are not new
    again = finetune(FinetuneRequest("shapes", [first], min_new=1, config=cfg))
    assert again.status == "skipped"

    # a forced worse candidate (a learning rate that wrecks the head) is recorded but not promoted
    bad = finetune(FinetuneRequest("shapes", [second], steps=3, batch_size=2, lr=5.0, config=cfg, min_new=1))
    assert bad.status == "rejected", bad.reason
    assert line.current().version == good.lineage.version
    assert not line.get(bad.lineage.version).promoted

    # a crash mid fine-tune leaves the promoted version serving
    third = str(write_ytvis(tmp_path / "c", 6, seed=5, num_frames=1))
    calls = iter(range(100))
    with pytest.raises(ClipvisError):
        finetune(FinetuneRequest("shapes", [third], steps=20, batch_size=2, config=cfg, min_new=1,
                                 should_stop=lambda: next(calls) >= 2))
    assert line.current().version == good.lineage.version
    crashed = line.versions()[-1]
    assert not crashed.promoted and "interrupted" in crashed.reason
    assert resolve_checkpoint("line:shapes").name == f"shapes@{good.lineage.version}"
    shutil.rmtree(models_dir)


def test_train_promote_if_better_joins_the_line(models_dir, tmp_path, capsys):
    data = str(write_ytvis(tmp_path / "d", 6, seed=1, num_frames=1))
    cfg = tmp_path / "fast.json"
    cfg.write_text(json.dumps(FAST))
    base = ["train", "--data", data, "--output", str(tmp_path / "run"), "--steps", "2", "--batch-size", "2",
            "--config", str(cfg), "--device", "cpu", "--quiet"]
    assert main(base + ["--init", "random:tiny", "--promote-if-better", "--val", data]) == 2
    assert "--init line:NAME" in capsys.readouterr().err
    line = ModelLine.create("cli-line", "random:tiny")
    assert main(base + ["--init", "line:cli-line", "--promote-if-better"]) == 2
    assert "--val SOURCE" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # refused before anything was written
    assert main(base + ["--init", "line:cli-line", "--promote-if-better", "--val", data]) == 0
    v = line.versions()[-1]
    assert v.version == "v1" and v.parent == "v0" and v.steps == 2 and v.data["val"] == [data]
    key = v.metrics["primary"]
    assert v.promoted == (v.metrics["candidate"][key] >= v.metrics["parent"][key])
    assert line.current().version == ("v1" if v.promoted else "v0")
    assert ("promoted as v1" if v.promoted else "rejected as v1") in capsys.readouterr().err
