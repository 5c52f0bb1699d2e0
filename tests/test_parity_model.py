"""Numerical parity with the upstream CLIP-VIS reference (fixture folder from CLIPVIS_REFERENCE_DIR).

Every hyper-parameter comes from the fixture's tiny_config.json; tolerances follow its README.
"""
import json
import os

import numpy as np
import pytest
import torch

from clipvis_core.config import ModelConfig
from clipvis_core.modeling import deform_attn
from clipvis_core.segmenter import SegmentOptions, SegmentTrace, Segmenter
from clipvis_core.text import encode_prompts, ensemble
from clipvis_core.tracks import decode_mask
from clipvis_core.vocabulary import PROMPT_TEMPLATES, Vocabulary

pytestmark = pytest.mark.parity
ATOL = 1e-4


@pytest.fixture(scope="module")
def ref(ref_dir):
    out = dict(np.load(ref_dir / "reference_outputs.npz"))
    out.update({f"input_{k}": v for k, v in np.load(ref_dir / "video_input.npz").items()})
    out["meta"] = json.loads((ref_dir / "reference_meta.json").read_text())
    out["config"] = json.loads((ref_dir / "tiny_config.json").read_text())
    return out


@pytest.fixture(scope="module")
def seg(tiny_card):
    torch.set_num_threads(2)
    # CLIPVIS_TEST_DEVICE=cuda runs the same tolerances on a GPU (benchmarks/gpu_check.sh).
    return Segmenter.load(str(tiny_card), device=os.environ.get("CLIPVIS_TEST_DEVICE", "cpu"))


@pytest.fixture(scope="module")
def run(seg, ref):
    """The fixture video through the public streaming API, with a trace of the intermediates."""
    trace = SegmentTrace()
    frames = ref["input_frames_uint8"]
    h, w = (int(v) for v in ref["input_output_hw"])
    # The fixture frames are already at test size: no resize; masks come back at (height, width).
    opts = SegmentOptions(min_size=0, output_size=(h, w))
    result = Segmenter.segment(seg, frames, ref["config"]["vocabulary"], opts, trace=trace)
    return result, trace


def close(a, b, atol=ATOL, rtol=ATOL):
    a = a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
    np.testing.assert_allclose(a, b, atol=atol, rtol=rtol)


def test_config_read_from_fixture(ref):
    cfg = ModelConfig.from_reference(ref["config"])
    assert cfg.decoder.num_queries == ref["dec_pred_masks"].shape[1]
    assert cfg.decoder.num_layers == ref["dec_aux_pred_masks"].shape[0]


@pytest.mark.parametrize("impl", ["bag", "grid_sample"])
def test_network_stages(seg, ref, impl, monkeypatch):
    monkeypatch.setattr(deform_attn.MSDeformAttn, "impl", impl)
    x = torch.from_numpy(ref["input_images_tensor"]).to(seg.device)
    with torch.inference_mode(), seg._autocast("fp32"):
        out = seg.model.forward_frames(x, keep_intermediates=True)
    for k in ("res2", "res3", "res4", "res5"):
        close(out.features[k], ref[f"backbone_{k}"])
    close(out.dense, ref["backbone_clip_vis_dense"])
    close(out.pixel.mask_features, ref["pixdec_mask_features"])
    close(out.pixel.encoder_features, ref["pixdec_transformer_encoder_features"])
    for i in range(3):
        close(out.pixel.multi_scale[i], ref[f"pixdec_multi_scale_{i}"])
    d = out.decoder
    close(d.object_logits, ref["dec_pred_object_logits"])
    close(d.masks, ref["dec_pred_masks"])
    close(d.ious, ref["dec_pred_ious"])
    close(d.embeds, ref["dec_pred_embds"])
    close(torch.stack([a[0] for a in d.aux]), ref["dec_aux_pred_object_logits"])
    close(torch.stack([a[1] for a in d.aux]), ref["dec_aux_pred_ious"])
    close(torch.stack([a[2] for a in d.aux]), ref["dec_aux_pred_masks"])


def test_text_classifier(seg, ref):
    vocab = Vocabulary.from_names(ref["config"]["vocabulary"])
    assert vocab.prompts() == ref["meta"]["prompts"]
    assert vocab.num_synonyms == list(ref["num_templates"])
    tokens = seg.tokenizer(vocab.prompts())
    np.testing.assert_array_equal(tokens.numpy(), ref["text_tokens"])
    raw = encode_prompts(seg.model.backbone, seg.tokenizer, vocab.prompts())
    close(raw, ref["text_features_raw"])
    close(ensemble(raw, len(PROMPT_TEMPLATES)), ref["text_classifier"])
    close(seg.model.backbone.logit_scale.reshape(1), ref["logit_scale_param"], atol=0, rtol=0)


def test_matching_permutations_exact(run, ref):
    _, trace = run
    perms = np.stack([m.perm for m in trace.matches])
    np.testing.assert_array_equal(perms, ref["match_perm"])
    for m, rec in zip(trace.matches[1:], ref["meta"]["matching"]):
        assert (m.memory_len, m.topk_path) == (rec["memory_len"], rec["topk_path"])


def test_per_frame_outputs(run, ref):
    _, trace = run
    close(torch.stack(trace.obj_logits, 1), ref["post_pred_per_frame_obj_logits"][0])
    close(torch.stack(trace.ious, 1), ref["post_pred_ious"][0])
    close(torch.stack(trace.cls_logits), ref["per_frame_cls_logits"], atol=5e-4)
    close(trace.video_obj_logits, ref["video_obj_logits"])


def test_final_scores_and_topk(run, ref):
    _, trace = run
    close(trace.final_scores, ref["final_cls_score"], atol=1e-5)
    sel = trace.selection
    assert sorted(sel.flat_indices.tolist()) == sorted(ref["topk_flat_indices"].tolist())
    order = {int(i): n for n, i in enumerate(ref["topk_flat_indices"])}
    pos = [order[int(i)] for i in sel.flat_indices]
    np.testing.assert_array_equal(sel.labels.numpy(), ref["inst_pred_classes"][pos])
    close(trace.instances.scores, ref["inst_scores"][pos], atol=1e-5)
    # Frames blanked by the mask-ignore rule match the reference (-1 everywhere).
    ignored_ref = (ref["inst_pred_masks"][pos] == -1).all(axis=(2, 3))
    keep = torch.stack(trace.instances.keep, 1).numpy()
    np.testing.assert_array_equal(~keep, ignored_ref)


def test_final_masks_at_output_resolution(run, ref):
    _, trace = run
    k = [int(i) for i in trace.selection.flat_indices].index(int(ref["topk_flat_indices"][0]))
    close(torch.stack([f[k] for f in trace.instances.logits]), ref["inst0_mask_logits_orig_res"])


def test_results_match_upstream_json(run, ref, ref_dir):
    result, _ = run
    upstream = json.loads((ref_dir / "model_results.json").read_text())
    assert len(result.tracks) == len(upstream)
    h, w = (int(v) for v in ref["input_output_hw"])
    ours = sorted(result.tracks, key=lambda t: -t.score)
    theirs = sorted(upstream, key=lambda r: -r["score"])
    for t, u in zip(ours, theirs):
        assert t.category_id + 1 == u["category_id"]
        assert abs(t.score - u["score"]) < 1e-5
        assert len(t.masks) == len(u["segmentations"]) == len(ref["input_frames_uint8"])
        for rle, urle in zip(t.masks, u["segmentations"]):
            a, b = decode_mask(rle), decode_mask(urle)
            assert a.shape == (h, w)
            assert int((a != b).sum()) <= 4
