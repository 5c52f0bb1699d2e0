"""The inference decoder (attention masks from resized mask features) against the training path
(full-resolution masks at every layer, as upstream), on the parity fixture's tiny checkpoint."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from clipvis_core.modeling import deform_attn
from clipvis_core.segmenter import Segmenter


@pytest.fixture(scope="module")
def seg(tiny_card):
    return Segmenter.load(str(tiny_card), device="cpu")


@pytest.mark.parametrize("impl", ["bag", "grid_sample"])
def test_inference_decoder_equals_full_resolution_path(seg, ref_dir, impl, monkeypatch):
    monkeypatch.setattr(deform_attn.MSDeformAttn, "impl", impl)
    x = torch.from_numpy(np.load(ref_dir / "video_input.npz")["images_tensor"])
    with torch.inference_mode():
        fast = seg.model.forward_frames(x).decoder
        full = seg.model.forward_frames(x, keep_intermediates=True).decoder
    assert not fast.aux and len(full.aux) == seg.model.sem_seg_head.predictor.num_layers
    for a, b in ((fast.masks, full.masks), (fast.object_logits, full.object_logits), (fast.ious, full.ious),
                 (fast.embeds, full.embeds)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("batch,heads,dim,points,shapes,spread", [
    (2, 8, 32, 4, [(15, 27), (30, 54), (60, 108)], 3.0),  # ConvNeXt-B's pixel decoder at 480x864
    (1, 4, 8, 2, [(3, 5), (6, 10)], 20.0),  # most points far outside the maps: zero padding
])
def test_bag_deformable_attention_equals_grid_sample(batch, heads, dim, points, shapes, spread):
    """The fast kernel's level-by-level index arithmetic against upstream's grid_sample formulation,
    with several frames (per-frame value tables) and points on, near and past every border."""
    from clipvis_core.modeling.pixel_decoder import DeformableEncoder

    g = torch.Generator().manual_seed(7)
    levels, tokens = len(shapes), sum(h * w for h, w in shapes)
    value = torch.randn(batch, tokens, heads, dim, generator=g)
    ref = DeformableEncoder.reference_points(shapes, "cpu").expand(batch, -1, -1, -1)
    offsets = torch.randn(batch, tokens, heads, levels, points, 2, generator=g) * spread
    offsets[0, :5] = torch.tensor([-0.5, 0.5]).view(1, 1, 1, 1, 2) * 1e4  # far past the top-right corner
    attn = torch.randn(batch, tokens, heads, levels * points, generator=g).softmax(-1).view(batch, tokens, heads, levels, points)
    size = torch.tensor([[w, h] for h, w in shapes], dtype=torch.float32).view(1, 1, 1, levels, 1, 2)
    locations = ref[:, :, None, :, None, :] + offsets / size
    assert (locations < 0).any() and (locations > 1).any()
    fast = deform_attn.ms_deform_attn_bag(value, shapes, ref, offsets, attn)
    reference = deform_attn.ms_deform_attn_grid_sample(value, shapes, locations, attn)
    torch.testing.assert_close(fast, reference, atol=2e-5, rtol=1e-5)
    assert fast[0, :5].abs().max() == 0  # every sample of those queries fell outside: zeros, as grid_sample


def test_short_softmax_matches_torch_and_is_stable():
    """The fast path's softmax over levels x points equals F.softmax to float rounding, also for
    logits large enough to overflow exp without the max shift."""
    from clipvis_core.modeling.deform_attn import _softmax_short

    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 300, 8, 12, generator=g) * 4
    x[0, 0, 0] = torch.linspace(80.0, 120.0, 12)  # exp(120) overflows float32
    x[1, 1, 1] = -1e4  # all far below: no row of zeros
    got, want = _softmax_short(x.clone()), F.softmax(x, -1)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)
