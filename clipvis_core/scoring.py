"""Weighted open-vocabulary classification and instance selection (upstream math, streaming form).

Per frame: matched masks pool the dense CLIP feature, the CLIP head embeds them, and cosine
similarity to the text classifier gives class logits. Per video:
``final = sqrt(mean_t sqrt(softmax(logits_t) * iou_t) * softmax(mean_t obj_t)[object])``;
the top-k (query, class) pairs become instances; frames where an instance's per-frame score is below
a tenth of its video score are blanked (mask := -1), and the score is multiplied by the mean
foreground probability of its mask.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .text import TextClassifier


def frame_class_logits(adapter, text: TextClassifier, dense: torch.Tensor, masks: torch.Tensor, max_scale: float) -> torch.Tensor:
    """dense [1, C, h, w], masks [Q, H/4, W/4] (one frame, track order) -> class logits [Q, C]."""
    m = F.interpolate(masks[None], size=dense.shape[-2:], mode="bilinear", align_corners=False)
    emb = adapter.embed_masks(dense, m)
    return text.logits(emb, adapter.logit_scale, max_scale)[0]


class VideoScores:
    """Running per-track sums over frames (RAM independent of video length)."""

    def __init__(self):
        self.frames = 0
        self.obj_sum: torch.Tensor | None = None  # [Q, 2] matched object logits, summed in frame order
        self.mask_iou_sum: torch.Tensor | None = None  # [Q, C] sum_t sqrt(p_t * iou_t)

    def add(self, probs: torch.Tensor, ious: torch.Tensor, obj_logits: torch.Tensor) -> None:
        term = (probs * ious) ** 0.5
        if self.frames == 0:
            self.obj_sum, self.mask_iou_sum = obj_logits.clone(), term
        else:
            self.obj_sum = self.obj_sum + obj_logits
            self.mask_iou_sum = self.mask_iou_sum + term
        self.frames += 1

    def restore(self, frames: int, obj_sum: torch.Tensor | None, mask_iou_sum: torch.Tensor | None) -> None:
        """Continue the sums of a checkpointed run (the same float32 values: the same rounding after)."""
        self.frames, self.obj_sum, self.mask_iou_sum = frames, obj_sum, mask_iou_sum

    @property
    def video_obj_logits(self) -> torch.Tensor:
        return self.obj_sum / self.frames

    def final(self) -> torch.Tensor:
        """[Q, C] final per-track class scores."""
        s_mask = self.mask_iou_sum / self.frames
        s_obj = F.softmax(self.video_obj_logits, dim=-1)[:, :1]
        return (s_mask * s_obj) ** 0.5


@dataclass
class Selection:
    flat_indices: torch.Tensor  # [K] into final.flatten(), in torch.topk(sorted=False) order
    scores: torch.Tensor  # [K] video-level class scores (before the mask-score factor)
    queries: torch.Tensor  # [K] track slot
    labels: torch.Tensor  # [K] 0-based class


def select_instances(final: torch.Tensor, k: int) -> Selection:
    q, c = final.shape
    scores, idx = final.flatten().topk(min(k, q * c), sorted=False)
    return Selection(idx, scores, torch.div(idx, c, rounding_mode="trunc"), idx % c)


def frame_keep(sel: Selection, probs: torch.Tensor, obj_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """([K] bool, [K] float): whether each instance keeps its mask in this frame, and its per-frame score.

    Per-frame score = sqrt(sigmoid(p) * softmax(obj)[object]); upstream applies the sigmoid to the
    softmax *probabilities* - kept for parity.
    """
    p = probs[sel.queries, sel.labels]
    o = F.softmax(obj_logits[sel.queries], dim=-1)[:, 0]
    per_frame = (p.sigmoid() * o) ** 0.5
    return ~(per_frame < sel.scores * 0.1), per_frame


class MaskScore:
    """Accumulates sum(sigmoid(m) * (m > 0)) and count(m > 0) per instance over all frames."""

    def __init__(self, k: int):
        self.num = torch.zeros(k, dtype=torch.float64)
        self.den = torch.zeros(k, dtype=torch.float64)

    def add(self, masks: torch.Tensor) -> None:
        pos = (masks > 0).to(masks.dtype)
        self.add_sums((masks.sigmoid() * pos).flatten(1).sum(1), pos.flatten(1).sum(1))

    def add_sums(self, num: torch.Tensor, den: torch.Tensor) -> None:
        """Per-frame float32 sums, as ``add`` computes them (the frame store precomputes them)."""
        self.num += num.double()
        self.den += den.double()

    def value(self) -> torch.Tensor:
        return (self.num / (self.den + 1e-6)).float()


def masks_to_output_logits(masks: torch.Tensor, padded_hw, image_hw, out_hw) -> torch.Tensor:
    """[K, h/4, w/4] logits -> [K, H_out, W_out] logits, as the upstream evaluator post-processes:
    bilinear to the padded size, crop to the image size, bilinear to the output size."""
    x = F.interpolate(masks[None], size=tuple(padded_hw), mode="bilinear", align_corners=False)
    x = x[:, :, : image_hw[0], : image_hw[1]]
    if tuple(out_hw) == tuple(x.shape[-2:]):
        # Same size: bilinear weights are exactly (1, 0), so the resize is the identity bit for bit
        # (and half of this function's time at 480p).
        return x[0]
    return F.interpolate(x, size=tuple(out_hw), mode="bilinear", align_corners=False)[0]
