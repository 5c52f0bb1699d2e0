"""Temporal top-K enhanced matching: aligns each frame's queries to the tracks kept in memory.

Frame 0 defines the track order. For every later frame the current query embeddings are matched
(Hungarian on 1 - cosine) against each of the last T matched frames; with fewer than K frames in
memory the single cheapest assignment wins, otherwise the K cheapest memory frames vote: Hungarian
on the mean of their cost matrices, each weighted by its 1-based position in memory (newer frames
weigh more; the mean is not re-normalised, as upstream).
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment


@dataclass
class MatchRecord:
    frame: int
    memory_len: int
    topk_path: bool
    perm: np.ndarray


class TemporalMatcher:
    def __init__(self, memory_len: int, top_k: int):
        if memory_len < 1 or top_k < 1:
            raise ValueError("memory_len and top_k must be >= 1")
        self.top_k = top_k
        # Matched (track-ordered) embeddings of the last T frames, oldest first.
        self.memory: deque[torch.Tensor] = deque(maxlen=memory_len)
        self.frame = -1

    def state(self) -> tuple[int, torch.Tensor | None]:
        """(frame, memory [n, Q, D] oldest first): all a resumed run needs (``restore``)."""
        return self.frame, torch.stack(list(self.memory)) if self.memory else None

    def restore(self, frame: int, memory: torch.Tensor | None) -> None:
        self.frame = frame
        self.memory.clear()
        self.memory.extend(memory.unbind(0) if memory is not None else [])

    def match(self, embeds: torch.Tensor) -> MatchRecord:
        """embeds [Q, D] of the next frame -> permutation p with ``frame_matched = frame[p]``."""
        self.frame += 1
        embeds = embeds.detach().float().cpu()
        if not self.memory:
            rec = MatchRecord(self.frame, 0, False, np.arange(embeds.shape[0]))
        else:
            rec = self._vote(embeds)
        self.memory.append(embeds[torch.as_tensor(rec.perm)])
        return rec

    def _vote(self, cur: torch.Tensor) -> MatchRecord:
        cur = cur / cur.norm(dim=1)[:, None]
        perms, costs, weighted = [], [], []
        for j, mem in enumerate(self.memory):
            tgt = mem / mem.norm(dim=1)[:, None]
            cost = 1 - cur @ tgt.T  # [Q_cur, Q_mem]
            rows, cols = linear_sum_assignment(cost.T.numpy())  # memory track -> current query
            perms.append(cols)
            costs.append(cost[cols, rows].sum())
            weighted.append(cost * (j + 1))
        costs_t = torch.stack(costs)
        if len(self.memory) < self.top_k:
            best = int(torch.topk(costs_t, k=1, largest=False).indices[0])
            return MatchRecord(self.frame, len(self.memory), False, perms[best])
        chosen = torch.topk(costs_t, k=self.top_k, largest=False).indices
        vote = torch.stack(weighted)[chosen].mean(0)
        return MatchRecord(self.frame, len(self.memory), True, linear_sum_assignment(vote.T.numpy())[1])
