"""Examples + a segmenter -> a ``ClassifierAdapter`` (seconds on CPU: one network pass per annotated frame).

Labels map to vocabulary classes by any synonym (case-insensitive); labels the vocabulary lacks are
appended as new classes. Without a vocabulary, the source's categories (in their order) form it.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..vocabulary import Vocabulary, split_synonyms
from .adapter import ClassifierAdapter, model_identity
from .embed import embed_examples
from .examples import ExampleSet
from .prototypes import choose_alpha, class_sums

log = logging.getLogger(__name__)


@dataclass
class AdaptOptions:
    frames_per_instance: int = 3  # annotated frames pooled per instance (evenly spaced)
    box_iou: float = 0.5  # a box uses the predicted mask whose box matches at least this well
    mask_iou: float | None = 0.3  # a mask also pools the predicted mask overlapping it this well (None: off)
    min_size: int | None = None  # the size predictions are made at (SegmentOptions'; None: the model's)
    max_size: int | None = None


def extend_vocabulary(vocab: Vocabulary | None, labels: list[str]) -> tuple[Vocabulary, list[int]]:
    """(vocabulary with unknown labels appended, class index of each label)."""
    entries = list(vocab.entries) if vocab is not None else []
    index: dict[str, int] = {}
    for c, entry in enumerate(entries):
        for s in [entry, *split_synonyms(entry)]:
            index.setdefault(s.strip().casefold(), c)
    out = []
    for lab in labels:
        # A label may itself be a whole entry ("car, automobile"): matched by the entry or a synonym.
        hit = next((index[k] for k in (s.strip().casefold() for s in [lab, *split_synonyms(lab)]) if k in index), None)
        if hit is None:
            hit = len(entries)
            entries.append(lab.strip())
            for s in [lab, *split_synonyms(lab)]:
                index.setdefault(s.strip().casefold(), hit)
        out.append(hit)
    return Vocabulary.from_names(entries), out


def fit_adapter(segmenter, found: ExampleSet, vocab: Vocabulary | None = None,
                options: AdaptOptions | None = None, source: str = "") -> ClassifierAdapter:
    opts = options or AdaptOptions()
    t0 = time.perf_counter()
    given = len(vocab) if vocab is not None else None
    if vocab is None:  # the source's categories first, so classes without examples are kept too
        vocab, _ = extend_vocabulary(None, found.labels or [ex.label for ex in found.examples])
    vocab, y = extend_vocabulary(vocab, [ex.label for ex in found.examples])
    added = list(vocab.entries[given:]) if given is not None else []  # unknown labels that extended it
    emb = embed_examples(segmenter, found.examples, opts.frames_per_instance, opts.box_iou, opts.mask_iou,
                         (opts.min_size, opts.max_size))
    text = segmenter.text_classifier(vocab)
    y_t = torch.tensor(y)
    scale = float(torch.clamp(segmenter.model.backbone.logit_scale.exp(), max=segmenter.cfg.inference.logit_scale_max))
    choice = choose_alpha(emb.embeddings, y_t, text.embeddings, text.num_synonyms, scale)
    sums, counts = class_sums(emb.embeddings, y_t, len(vocab))
    report = {
        "source": source, "examples": len(found.examples), "conflicting_left_out": found.conflicting,
        "unlabelled_left_out": found.unlabelled, "boxes_only_instances": found.boxes_only,
        "pooled_from": emb.pooled_from, "alpha": choice.alpha,
        "loo_accuracy_text": choice.text_accuracy, "loo_accuracy_adapted": choice.adapted_accuracy,
        "loo_accuracy_by_alpha": {str(a): v for a, v in choice.loo_accuracy.items()},
        "seconds": round(time.perf_counter() - t0, 2), "added_classes": added,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    adapter = ClassifierAdapter(segmenter.name, model_identity(segmenter.model), list(vocab.entries),
                                F.normalize(sums, dim=-1), counts.tolist(), choice.alpha, report)
    log.info("adapter: %d examples, alpha %.2f, leave-one-out accuracy %.3f -> %.3f", len(found.examples),
             choice.alpha, choice.text_accuracy, choice.adapted_accuracy)
    return adapter
