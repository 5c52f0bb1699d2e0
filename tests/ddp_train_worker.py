"""Run by test_train_distributed.py, alone or under ``torchrun``: train and dump every step's loss and gradients.

Usage: ddp_train_worker.py DATA.json CARD.json CONFIG.json OUT_DIR DUMP_DIR

The point sampler gives every batch entry and every mask the same draws (a fixed pattern per
point count), so splitting a batch between processes cannot change which points are sampled:
what remains to compare is exactly the distributed arithmetic (sharding, all-reduced mask count,
gradient averaging).
"""
import sys
from pathlib import Path

import torch

from clipvis_core.training.config import TrainConfig
from clipvis_core.training.distributed import from_env
from clipvis_core.training.loop import TrainRequest, train
from clipvis_core.training.sampling import PointSampler


class RowConstantSampler(PointSampler):
    def _rand(self, shape, device):
        g = torch.Generator().manual_seed(1000 + shape[-2])
        return torch.rand(shape[-2:], generator=g).expand(shape).contiguous().to(device)


def main() -> None:
    data, card, config, out, dump = sys.argv[1:6]
    rank = from_env().rank
    dump = Path(dump)
    dump.mkdir(parents=True, exist_ok=True)

    def on_backward(step, loss, module):
        grads = {n: p.grad.detach().clone() for n, p in module.named_parameters() if p.grad is not None}
        torch.save({"loss": loss, "grads": grads}, dump / f"rank{rank}_step{step}.pt")

    result = train(TrainRequest([data], card, Path(out), TrainConfig.from_json(config), sampler=RowConstantSampler(),
                                on_backward=on_backward))
    torch.save({"losses": result.losses}, dump / f"rank{rank}_result.pt")


if __name__ == "__main__":
    main()
