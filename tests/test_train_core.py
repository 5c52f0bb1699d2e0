"""Training core behaviour beyond the fixture step: empty frames, clip batching, seeding, schedules, configs."""
import json

import numpy as np
import pytest
import torch

from clipvis_core.training.config import LossConfig, ScheduleConfig, TrainConfig
from clipvis_core.training.criterion import SetCriterion
from clipvis_core.training.data.sample import Sample
from clipvis_core.training.optim import build_optimizer, build_scheduler, lr_factor
from clipvis_core.training.sampling import PointSampler
from clipvis_core.training.step import forward_losses, prepare_for_training
from clipvis_core.training.targets import Collator
from clipvis_core.weights import load_model, resolve_checkpoint

pytestmark = pytest.mark.training


@pytest.fixture(scope="module")
def tiny():
    torch.set_num_threads(2)
    r = resolve_checkpoint("random:tiny")
    model = load_model(r)
    return r.config, model, prepare_for_training(model), SetCriterion(LossConfig(num_points=500), model.cfg.decoder.num_layers)


def blob_sample(n_frames=1, present=((10, 30),), size=64):
    masks = np.zeros((len(present), n_frames, size, size), bool)
    for i, (a, b) in enumerate(present):
        masks[i, :, a:b, a:b] = True
    frames = np.random.default_rng(0).integers(0, 255, (n_frames, size, size, 3), dtype=np.uint8)
    return Sample(frames, masks, [None] * len(present))


def test_frames_without_instances_train(tiny):
    cfg, model, fwd, crit = tiny
    empty = blob_sample(present=())
    batch = Collator.from_model_config(cfg)([empty, blob_sample()])
    assert [len(t.labels) for t in batch.targets] == [0, 1]
    losses = forward_losses(fwd, batch, crit, PointSampler.seeded(0))
    model.zero_grad()
    losses.total.backward()
    assert torch.isfinite(losses.total)
    assert float(losses.unweighted["loss_mask"].detach()) > 0  # the one instance counts
    grads = [p.grad for p in model.sem_seg_head.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_clip_absent_frames_and_dropped_instances(tiny):
    cfg = tiny[0]
    s = blob_sample(n_frames=3, present=((5, 15), (20, 40), (45, 60)))
    s.masks[1, 2] = False  # instance 1 absent in frame 2
    s.masks[2] = False  # instance 2 absent everywhere: dropped
    batch = Collator.from_model_config(cfg)([s])
    assert batch.clip_len == 3 and batch.images.shape[0] == 3
    assert [t.labels.tolist() for t in batch.targets] == [[0, 0], [0, 0], [0, 1]]
    assert batch.targets[2].masks[1].sum() == 0
    h, w = batch.images.shape[-2:]
    assert h % cfg.size_divisibility == 0 and w % cfg.size_divisibility == 0


def test_batch_of_mixed_clip_lengths_is_refused(tiny):
    with pytest.raises(ValueError, match="clips of one length"):
        Collator.from_model_config(tiny[0])([blob_sample(1), blob_sample(2)])


def test_seeded_sampler_reproduces_and_differs(tiny):
    cfg, _, fwd, crit = tiny
    batch = Collator.from_model_config(cfg)([blob_sample(), blob_sample(present=((3, 40),))])

    def run(seed):
        with torch.no_grad():
            return {k: float(v) for k, v in forward_losses(fwd, batch, crit, PointSampler.seeded(seed)).unweighted.items()}

    a, b, c = run(1), run(1), run(2)
    assert a == b
    assert a["loss_mask"] != c["loss_mask"]
    s = PointSampler.seeded(5)
    state = s.get_state()
    first = s.matcher_points(10, "cpu")
    s.set_state(state)
    assert torch.equal(first, s.matcher_points(10, "cpu"))


def test_schedules():
    ms = ScheduleConfig(kind="multistep", warmup_iters=10, warmup_factor=0.001, steps=(100, 200), gamma=0.1)
    assert lr_factor(0, ms, 300) == pytest.approx(0.001)
    assert lr_factor(5, ms, 300) == pytest.approx(0.001 * 0.5 + 0.5)
    assert lr_factor(50, ms, 300) == 1.0
    assert lr_factor(150, ms, 300) == pytest.approx(0.1)
    assert lr_factor(250, ms, 300) == pytest.approx(0.01)
    poly = ScheduleConfig(kind="poly", warmup_iters=0, poly_power=0.9)
    assert lr_factor(50, poly, 100) == pytest.approx(0.5 ** 0.9)
    assert lr_factor(100, poly, 100) == 0.0
    with pytest.raises(ValueError, match="multistep"):
        lr_factor(0, ScheduleConfig(kind="cosine"), 10)


def test_optimizer_groups_and_clipping(tiny):
    cfg, model, fwd, crit = tiny
    tc = TrainConfig()
    opt = build_optimizer(model, tc.optim)
    by_name = {g["name"]: g for g in opt.param_groups}
    assert by_name["sem_seg_head.predictor.query_feat.weight"]["weight_decay"] == tc.optim.weight_decay_embed
    assert by_name["sem_seg_head.predictor.decoder_norm.weight"]["weight_decay"] == tc.optim.weight_decay_norm
    assert by_name["sem_seg_head.predictor.mask_embed.layers.0.weight"]["weight_decay"] == tc.optim.weight_decay
    assert not any(n.startswith("backbone.") for n in by_name)
    sched = build_scheduler(opt, tc.schedule, tc.max_iter)
    assert opt.param_groups[0]["lr"] == pytest.approx(tc.optim.lr)
    batch = Collator.from_model_config(cfg)([blob_sample()])
    model.zero_grad()
    forward_losses(fwd, batch, crit, PointSampler.seeded(0)).total.backward()
    params = [p for g in opt.param_groups for p in g["params"]]
    opt.step()
    sched.step()
    # clip_grad_norm_ ran inside step(): the gradients were rescaled to the clip norm
    total = torch.norm(torch.stack([p.grad.norm() for p in params]))
    assert float(total) == pytest.approx(tc.optim.clip_grad_norm, rel=1e-3)


def test_config_json_and_upstream_yaml(tmp_path, ref_dir):
    c = TrainConfig.from_dict({"max_iter": 10, "loss": {"num_points": 64}, "augment": {"video_min_sizes": [320, 352]}})
    assert c.loss.num_points == 64 and c.augment.video_min_sizes == (320, 352) and c.optim.lr == TrainConfig().optim.lr
    p = tmp_path / "c.json"
    p.write_text(json.dumps(c.to_dict()))
    assert TrainConfig.from_json(p) == c
    with pytest.raises(ValueError, match="unknown LossConfig keys"):
        TrainConfig.from_dict({"loss": {"num_pts": 1}})
    hp = json.loads((ref_dir / "training" / "train_hparams.json").read_text())["fixture_tiny_config_values"]
    y = TrainConfig.from_detectron2_yaml(ref_dir / "detectron2_cfg.yaml")
    assert y.loss.object_weight == hp["MODEL.MASK_FORMER.OBJECT_WEIGHT"]
    assert y.loss.mask_weight == hp["MODEL.MASK_FORMER.MASK_WEIGHT"]
    assert y.loss.num_points == hp["MODEL.MASK_FORMER.TRAIN_NUM_POINTS"]
    assert y.loss.importance_sample_ratio == hp["MODEL.MASK_FORMER.IMPORTANCE_SAMPLE_RATIO"]
