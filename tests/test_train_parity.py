"""One training step equals upstream's (fixture folder ``training/`` under CLIPVIS_REFERENCE_DIR).

Both paths (images; a video whose third track is absent in frame 1) run through the public
pieces - Collator, TrainForward, SetCriterion, the optimizer - with the recorded random draws
replayed through a PointSampler subclass. Every setting (loss weights, points, matcher order, the
optimizer) is read from the fixture's files; tolerances follow its README's determinism figures.
"""
import json

import numpy as np
import pytest
import torch

from clipvis_core.config import ModelConfig
from clipvis_core.training.config import LossConfig, TrainConfig
from clipvis_core.training.criterion import SetCriterion
from clipvis_core.training.data.sample import Sample
from clipvis_core.training.optim import build_optimizer, build_scheduler
from clipvis_core.training.points import uncertain_point_coords
from clipvis_core.training.sampling import PointSampler
from clipvis_core.training.step import forward_losses, prepare_for_training, trainable_parameters
from clipvis_core.training.targets import Collator
from clipvis_core.weights import ResolvedCheckpoint, load_model

pytestmark = [pytest.mark.parity, pytest.mark.training]
PATHS = ["image", "video"]


class ReplaySampler(PointSampler):
    """Hands out the fixture's draws in upstream's order: per layer B matcher draws, then the mask points."""

    def __init__(self, arrays, layers):
        super().__init__()
        self.a, self.layers, self.layer, self.entry = arrays, layers, 0, 0

    def matcher_points(self, num_points, device):
        x = self.a[f"match/{self.layers[self.layer]}/b{self.entry}/point_coords"]
        assert x.shape == (1, num_points, 2)
        self.entry += 1
        return torch.from_numpy(x).to(device)

    def mask_points(self, logits, num_points, oversample_ratio, importance_ratio):
        x = self.a[f"loss_masks/{self.layers[self.layer]}/point_coords"]
        assert x.shape == (logits.shape[0], num_points, 2)
        self.layer, self.entry = self.layer + 1, 0
        return torch.from_numpy(x).to(logits.device)


def loss_config(meta) -> LossConfig:
    c = meta["criterion"]
    costs = c["matcher_costs"]
    w = meta["weight_dict"]
    assert (costs["cost_object"], costs["cost_mask"], costs["cost_dice"]) == (w["loss_object_ce"], w["loss_mask"], w["loss_dice"])
    return LossConfig(
        object_weight=w["loss_object_ce"], mask_weight=w["loss_mask"], dice_weight=w["loss_dice"], iou_weight=w["loss_iou"],
        empty_object_weight=tuple(c["empty_object_weight"]), num_points=c["num_points"],
        oversample_ratio=c["oversample_ratio"], importance_sample_ratio=c["importance_sample_ratio"],
    )


def fixture_samples(a, path) -> list[Sample]:
    if path == "image":
        out, i = [], 0
        while f"in/image{i}_uint8" in a:
            m = a[f"in/gt_masks{i}"].astype(bool)
            out.append(Sample(a[f"in/image{i}_uint8"][None], m[:, None], [None] * len(m)))
            i += 1
        return out
    frames = a["in/frames_uint8"]
    masks = np.stack([a[f"in/frame{t}_gt_masks"] for t in range(frames.shape[0])], 1).astype(bool)
    return [Sample(frames, masks, [None] * len(masks))]


@pytest.fixture(scope="module", params=PATHS)
def step(request, ref_dir):
    torch.set_num_threads(2)
    path = request.param
    a = dict(np.load(ref_dir / "training" / f"train_{path}.npz"))
    meta = json.loads((ref_dir / "training" / "train_meta.json").read_text())[path]
    cfg = ModelConfig.from_reference(ref_dir / "tiny_config.json")
    model = load_model(ResolvedCheckpoint("tiny", cfg, ref_dir / "tiny_model.pth"))
    fwd = prepare_for_training(model)
    batch = Collator.from_model_config(cfg)(fixture_samples(a, path))
    criterion = SetCriterion(loss_config(meta), cfg.decoder.num_layers)
    record = {}
    losses = forward_losses(fwd, batch, criterion, ReplaySampler(a, meta["matcher_layer_order"]), record)
    losses.total.backward()
    return dict(path=path, a=a, meta=meta, cfg=cfg, model=model, batch=batch, criterion=criterion, record=record, losses=losses)


def close(x, ref, atol, rtol=0.0):
    x = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    assert x.shape == ref.shape, (x.shape, ref.shape)
    np.testing.assert_allclose(x, ref, atol=atol, rtol=rtol)


def test_inputs_and_targets(step):
    a, batch = step["a"], step["batch"]
    close(batch.images, a["in/images_tensor"], 1e-5)
    assert [list(s) for s in batch.image_sizes] == a["in/image_sizes"].tolist()
    assert len(batch.targets) == step["meta"]["num_targets_entries"]
    for b, t in enumerate(batch.targets):
        ref = a[f"tgt/{b}/masks"]
        close(t.masks, ref.reshape(ref.shape[0], *ref.shape[-2:]), 0)
        assert t.labels.tolist() == a[f"tgt/{b}/labels"].tolist()


def test_frozen_trunk_and_pixel_decoder(step):
    a, model, batch = step["a"], step["model"], step["batch"]
    with torch.no_grad():
        feats = model.backbone(batch.images)
        pixel = model.sem_seg_head.pixel_decoder(feats)
    for k in ("res2", "res3", "res4", "res5", "clip_vis_dense"):
        close(feats[k], a[f"backbone/{k}"], 1e-4)
    assert not model.backbone.training and all(not m.training for m in model.backbone.modules())
    close(pixel.mask_features, a["pixdec/mask_features"], 1e-4)
    close(pixel.encoder_features, a["pixdec/transformer_encoder_features"], 1e-4)
    for i in range(3):
        close(pixel.multi_scale[i], a[f"pixdec/multi_scale_{i}"], 1e-4)


def test_head_outputs(step):
    a, out = step["a"], step["losses"].outputs
    layers = [("out", (out.object_logits, out.ious, out.masks))] + [(f"out/aux{k}", aux) for k, aux in enumerate(out.aux)]
    assert len(out.aux) == step["meta"]["num_aux_outputs"]
    for prefix, (obj, ious, masks) in layers:
        close(obj, a[f"{prefix}/pred_object_logits"], 5e-4)
        close(ious, a[f"{prefix}/pred_ious"], 1e-4)
        close(masks, a[f"{prefix}/pred_masks"].reshape(masks.shape), 1e-4)


def test_matcher_costs_and_assignments(step):
    a, record = step["a"], step["record"]
    assert list(record) == step["meta"]["matcher_layer_order"]
    for layer, rec in record.items():
        for b, ((src, tgt), costs) in enumerate(zip(rec.indices, rec.costs)):
            key = f"match/{layer}/b{b}"
            close(costs.cost_mask, a[f"{key}/cost_mask"], 1e-4)
            close(costs.cost_dice, a[f"{key}/cost_dice"], 1e-4)
            close(costs.total, a[f"{key}/C"], 1e-4)
            assert src.tolist() == a[f"{key}/src"].tolist() and tgt.tolist() == a[f"{key}/tgt"].tolist(), key


def test_iou_targets(step):
    for layer, rec in step["record"].items():
        # README: a point whose logit sits within ~1e-6 of 0 may flip; allow one point's worth.
        close(rec.gt_iou, step["a"][f"loss_masks/{layer}/gt_iou"], 2e-3)


def test_losses(step):
    a, meta, losses = step["a"], step["meta"], step["losses"]
    assert list(losses.unweighted) == meta["loss_names_in_order"]
    assert step["criterion"].weight_dict == meta["weight_dict"]
    for name in meta["loss_names_in_order"]:
        for kind, got in (("unweighted", losses.unweighted), ("weighted", losses.weighted)):
            ref = float(a[f"loss/{kind}/{name}"])
            assert abs(float(got[name].detach()) - ref) <= 1e-5 + 1e-5 * abs(ref), (kind, name, float(got[name].detach()), ref)
    assert abs(float(losses.total.detach()) - float(a["loss/total"])) <= 1e-4


def test_iou_loss_from_recorded_targets(step):
    """The L1 part exactly, from the recorded gt_iou (independent of point-flip margins)."""
    a, out, record = step["a"], step["losses"].outputs, step["record"]
    layers = [("final", "", out.ious)] + [(f"aux{k}", f"_{k}", aux[1]) for k, aux in enumerate(out.aux)]
    for layer, suffix, ious in layers:
        idx = record[layer].indices
        b = torch.cat([torch.full_like(s, i) for i, (s, _) in enumerate(idx)])
        q = torch.cat([s for s, _ in idx])
        gt = torch.from_numpy(a[f"loss_masks/{layer}/gt_iou"])
        pos = gt > 0
        got = ((ious[b, q, 0][pos] - gt[pos]).abs().sum() / pos.sum()).detach() if pos.any() else torch.tensor(0.0)
        ref = float(a[f"loss/unweighted/loss_iou{suffix}"])
        assert abs(float(got) - ref) <= 1e-5 + 1e-5 * abs(ref), (layer, float(got), ref)


def test_trainable_parameters_and_gradients(step):
    a, meta, model = step["a"], step["meta"], step["model"]
    trainable = trainable_parameters(model)
    assert [(n, list(p.shape)) for n, p in trainable] == [(n, list(s)) for n, s in meta["trainable_parameters"]]
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert set(meta["frozen_parameters"]) <= frozen and all(n.startswith("backbone.") for n in frozen)
    assert all(p.grad is None for n, p in model.named_parameters() if not p.requires_grad)
    for name, p in trainable:
        ref = a[f"grad/{name}"]
        assert p.grad is not None, name
        err = float(np.abs(p.grad.numpy() - ref).max())
        assert err <= 1e-4 + 1e-4 * float(np.abs(ref).max()), (name, err, float(np.abs(ref).max()))


def test_importance_sampler_replays_raw_draws(step):
    """Feeding the two recorded raw draws of the final layer reproduces its points bit-exactly."""
    a, meta, record = step["a"], step["meta"], step["record"]
    if "loss_masks/final/rand_oversample" not in a:
        pytest.fail("fixture lacks loss_masks/final/rand_oversample")
    idx = record["final"].indices
    b = torch.cat([torch.full_like(s, i) for i, (s, _) in enumerate(idx)])
    q = torch.cat([s for s, _ in idx])
    coords = a["loss_masks/final/point_coords"]
    c = meta["criterion"]
    k = int(c["importance_sample_ratio"] * c["num_points"])

    class Raw(PointSampler):
        def candidates(self, m, n, device):
            assert (m, n) == a["loss_masks/final/rand_oversample"].shape[:2]
            return torch.from_numpy(a["loss_masks/final/rand_oversample"])

        def uniform(self, m, n, device):
            return torch.from_numpy(coords[:, k:])

    # Upstream's own final-layer logits: ours differ by ~1e-6, which may reorder near-ties in top-k.
    logits = torch.from_numpy(a["out/pred_masks"])
    logits = logits.reshape(logits.shape[0], logits.shape[1], *logits.shape[-2:])[b, q][:, None]
    got = uncertain_point_coords(logits, c["num_points"], c["oversample_ratio"],
                                 c["importance_sample_ratio"], Raw())
    assert np.array_equal(got.numpy(), coords)


@pytest.mark.parametrize("step", ["image"], indirect=True)  # upstream's optimizer step is recorded on the image path
def test_optimizer_step_delta(step, ref_dir):
    a, meta, model = step["a"], step["meta"], step["model"]
    tc = TrainConfig.from_detectron2_yaml(ref_dir / "detectron2_cfg.yaml")
    opt = build_optimizer(model, tc.optim)
    sched = build_scheduler(opt, tc.schedule, tc.max_iter)
    ref_groups = {g["param"]: g for g in meta["optimizer"]["param_groups"]}
    assert [g["name"] for g in opt.param_groups] == list(ref_groups)
    for g in opt.param_groups:
        r = ref_groups[g["name"]]
        assert g["weight_decay"] == pytest.approx(r["weight_decay"]) and g["lr"] == pytest.approx(r["lr"]), g["name"]
    before = {n: p.detach().clone() for n, p in trainable_parameters(model)}
    opt.step()
    sched.step()
    for n, p in trainable_parameters(model):
        close(p.detach() - before[n], a[f"opt/delta/{n}"], 5e-6)
