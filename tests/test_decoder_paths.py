"""The inference decoder (attention masks from resized mask features) against the training path
(full-resolution masks at every layer, as upstream), on the parity fixture's tiny checkpoint."""
import numpy as np
import pytest
import torch

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
