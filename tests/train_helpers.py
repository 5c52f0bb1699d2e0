"""Shared set-up of the training tests: a random tiny model card at the test resolution, a small config."""
from __future__ import annotations

import copy
import json
from pathlib import Path

from clipvis_core.training.config import TrainConfig
from clipvis_core.weights import TINY_RANDOM

SIZE = 64  # generated frames are SIZE x SIZE; the card segments at this size too


def random_tiny_card(folder: Path) -> Path:
    """``random:tiny`` as a model card whose inference size matches the generated videos."""
    cfg = copy.deepcopy(TINY_RANDOM)
    cfg["name"] = "tiny-random-64"
    cfg["inference"]["min_size"] = SIZE
    path = Path(folder) / "tiny_random_64.json"
    path.write_text(json.dumps({"config": cfg}))
    return path


def small_config(**changes) -> TrainConfig:
    """Upstream's recipe at toy scale: few points, SIZE-pixel clips, no workers unless asked."""
    d = {"loss": {"num_points": 1024},
         "augment": {"image_size": SIZE, "video_min_sizes": [SIZE], "video_max_size": 2 * SIZE},
         "batch_size": 2, "num_workers": 0, "checkpoint_period": 1000, "log_period": 1, "eval_period": 0, "amp": False,
         "max_iter": 4}
    for k, v in changes.items():
        if isinstance(v, dict):
            d.setdefault(k, {}).update(v)
        else:
            d[k] = v
    return TrainConfig.from_dict(d)


def write_config(path: Path, cfg: TrainConfig) -> Path:
    path.write_text(json.dumps(cfg.to_dict()))
    return path
