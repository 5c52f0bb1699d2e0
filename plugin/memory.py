"""Form values remembered per dataset: the last parameters a form ran with become its defaults.

Kept in FiftyOne's execution store (``ctx.store``, one store per dataset), not in the dataset, so
remembering a form never changes the dataset's ``last_modified_at``.
"""
from __future__ import annotations

STORE = "clipvis_forms"
KEYS = {
    "segment": ("run_mode", "vocabulary_source", "classes", "builtin_vocabulary", "vocabulary_field", "checkpoint",
                "adapter", "score_threshold", "max_tracks", "frame_stride", "precision", "label_field", "store_masks"),
    "novelty": ("pred_field", "base", "base_field", "base_classes", "min_score"),
    "evaluate": ("pred_field", "gt_field", "protocol", "split", "split_classes"),
}


def defaults(ctx, form: str, standard: dict) -> dict:
    """``standard`` overlaid with what the form last ran with on this dataset."""
    last = ctx.store(STORE).get(form) or {} if ctx.dataset is not None else {}
    return {**standard, **{k: v for k, v in last.items() if k in KEYS[form] and v not in (None, "")}}


def remember(ctx, form: str) -> None:
    if ctx.dataset is not None:
        ctx.store(STORE).set(form, {k: ctx.params.get(k) for k in KEYS[form] if ctx.params.get(k) is not None})
