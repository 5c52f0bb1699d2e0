"""Per-class visual prototypes blended with the text classifier; the blend weight chosen by leave-one-out.

A class with examples gets prototype ``p_c`` = normalised mean of its examples' normalised
embeddings, and each of its synonym rows ``t_s`` becomes ``normalise((1 - alpha) * t_s + alpha * p_c)``;
classes without examples keep their text rows. The classifier keeps its shape (rows per synonym,
max over a class's synonyms, CLIP's logit scale), so scoring downstream is unchanged.

``alpha`` is chosen on the examples: every example is classified by a classifier whose prototype
for its own class leaves it out (a class with one example is text-only in its own fold); the alpha
with the best leave-one-out accuracy wins, ties broken by the lower leave-one-out cross-entropy,
then by the smaller alpha (closer to the text classifier).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

ALPHAS = tuple(round(a * 0.05, 2) for a in range(21))


@dataclass
class BlendChoice:
    alpha: float
    loo_accuracy: dict[float, float]  # alpha -> leave-one-out accuracy on the examples
    loo_nll: dict[float, float]

    @property
    def text_accuracy(self) -> float:
        """Leave-one-out accuracy of the text classifier alone (alpha 0): the "before" figure."""
        return self.loo_accuracy[0.0]

    @property
    def adapted_accuracy(self) -> float:
        return self.loo_accuracy[self.alpha]


def class_sums(emb: torch.Tensor, y: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """([C, D] sums of normalised embeddings, [C] counts)."""
    sums = torch.zeros(num_classes, emb.shape[1], dtype=emb.dtype).index_add_(0, y, emb)
    return sums, torch.bincount(y, minlength=num_classes)


def blend_rows(text_rows: torch.Tensor, num_synonyms: list[int], prototypes: torch.Tensor, has: torch.Tensor,
               alpha: float) -> torch.Tensor:
    """[S, D] text rows -> [S, D] blended rows (classes with ``has[c]`` False stay text-only)."""
    cls_of_row = torch.repeat_interleave(torch.arange(len(num_synonyms)), torch.tensor(num_synonyms))
    p = prototypes.to(text_rows)[cls_of_row]
    mixed = F.normalize((1 - alpha) * text_rows + alpha * p, dim=-1)
    keep = has.to(text_rows.device)[cls_of_row]
    return torch.where(keep[:, None], mixed, text_rows)


def class_scores(emb: torch.Tensor, rows: torch.Tensor, num_synonyms: list[int]) -> torch.Tensor:
    """[N, D] normalised embeddings -> [N, C] cosine per class (max over synonyms)."""
    sim = emb @ rows.T
    return torch.stack([s.max(-1).values for s in sim.split(num_synonyms, dim=-1)], -1)


def choose_alpha(emb: torch.Tensor, y: torch.Tensor, text_rows: torch.Tensor, num_synonyms: list[int],
                 scale: float, alphas=ALPHAS) -> BlendChoice:
    emb, text_rows = emb.float().cpu(), text_rows.float().cpu()
    c = len(num_synonyms)
    sums, counts = class_sums(emb, y, c)
    acc, nll = {}, {}
    for a in alphas:
        # Rows of every class with all examples; each example's own class is then redone without it.
        full = blend_rows(text_rows, num_synonyms, F.normalize(sums, dim=-1), counts > 0, a)
        scores = class_scores(emb, full, num_synonyms)
        start = torch.tensor([0] + list(num_synonyms)).cumsum(0)
        for i in range(len(emb)):
            k = int(y[i])
            rows = text_rows[start[k]:start[k + 1]]
            if counts[k] > 1:
                p = F.normalize(sums[k] - emb[i], dim=-1)
                rows = F.normalize((1 - a) * rows + a * p, dim=-1)
            scores[i, k] = (rows @ emb[i]).max()
        logits = scale * scores
        acc[a] = float((logits.argmax(1) == y).float().mean())
        nll[a] = float(F.cross_entropy(logits, y))
    best = max(alphas, key=lambda a: (acc[a], -nll[a], -a))
    return BlendChoice(best, acc, nll)
