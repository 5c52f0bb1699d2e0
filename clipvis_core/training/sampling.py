"""The one source of randomness of a training step: point coordinates in [0, 1]^2 (x, y).

Upstream draws ``torch.rand`` from the global generator in two places: the matcher (one set of
points per batch entry, shared by all queries and targets) and the importance sampler of the mask
losses (oversampled candidates, then uniform points). Routing every draw through a ``PointSampler``
makes a step reproducible with a seed (and resumable: ``get_state`` / ``set_state``) and lets tests
replay recorded draws by subclassing it.
"""
from __future__ import annotations

import torch

from .points import uncertain_point_coords


class PointSampler:
    def __init__(self, generator: torch.Generator | None = None):
        # Draws happen on the CPU generator and are moved to the device: identical numbers on CPU
        # and CUDA for one seed (the draws are small next to the network).
        self.generator = generator if generator is not None else torch.Generator()

    @classmethod
    def seeded(cls, seed: int) -> "PointSampler":
        g = torch.Generator()
        g.manual_seed(int(seed))
        return cls(g)

    def _rand(self, shape: tuple[int, ...], device) -> torch.Tensor:
        return torch.rand(shape, generator=self.generator).to(device)

    def matcher_points(self, num_points: int, device) -> torch.Tensor:
        """[1, P, 2]: the matcher's points for one batch entry."""
        return self._rand((1, num_points, 2), device)

    def candidates(self, num_masks: int, num_points: int, device) -> torch.Tensor:
        """[M, n, 2]: oversampled candidates for the importance sampler."""
        return self._rand((num_masks, num_points, 2), device)

    def uniform(self, num_masks: int, num_points: int, device) -> torch.Tensor:
        """[M, n, 2]: the uniform share of the importance sampler's points."""
        return self._rand((num_masks, num_points, 2), device)

    def mask_points(self, logits: torch.Tensor, num_points: int, oversample_ratio: float,
                    importance_ratio: float) -> torch.Tensor:
        """[M, P, 2]: the mask losses' points for logits [M, 1, h, w] (importance sampling)."""
        return uncertain_point_coords(logits, num_points, oversample_ratio, importance_ratio, self)

    def get_state(self) -> torch.Tensor:
        return self.generator.get_state()

    def set_state(self, state: torch.Tensor) -> None:
        self.generator.set_state(state)
