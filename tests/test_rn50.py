"""The RN50 path (attention-pool head on mask-pooled features) runs end to end with random weights."""
import torch

from clipvis_core.modeling.clip_adapter import mask_pool
from clipvis_core.segmenter import SegmentOptions, Segmenter
from videogen import shape_frames


def test_rn50_segments_and_zeroes_empty_masks():
    seg = Segmenter.load("random:clipvis-rn50-dec7", device="cpu")
    bb = seg.model.backbone
    assert bb.kind == "resnet"
    # Channel counts come from the model: RN50 stem 64, res2..res5 256..2048.
    assert bb.channels == {"stem": 64, "res2": 256, "res3": 512, "res4": 1024, "res5": 2048}
    dense = torch.randn(1, 2048, 3, 4)
    masks = torch.randn(1, 3, 3, 4)
    masks[0, 1] = -1.0  # an empty mask
    with torch.inference_mode():
        emb = bb.embed_masks(dense, masks)
    assert emb.shape == (1, 3, seg.cfg.embed_dim)
    assert torch.all(emb[0, 1] == 0) and torch.any(emb[0, 0] != 0)
    assert mask_pool(dense, masks)[0, 1].abs().sum() == 0
    result = seg.segment(shape_frames(4, 64, 80), ["person", "car, automobile"], SegmentOptions(min_size=64))
    assert result.video.num_frames == 4 and len(result.tracks) == min(seg.cfg.inference.detections, 2 * seg.cfg.decoder.num_queries)
    assert all(len(t.masks) == 4 for t in result.tracks)
