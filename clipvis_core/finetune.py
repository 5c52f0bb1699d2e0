"""Fine-tune a model line's mask generator on annotators' corrections; promote only if not worse.

Once the corrections hold at least ``min_new`` masks that no earlier version has used, the current
version is fine-tuned on them (plus optional replay data against forgetting), the parent and the
candidate are scored with class-agnostic AP on a held-out share of the corrections, and the
candidate becomes current only when it is not worse. The held-out share is fixed per sample (a
hash of its source), so a corrected task never moves from held-out into training across rounds.
Every attempt leaves a lineage record, promoted or not; a crash leaves the current version as it was.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np

from .errors import InputError
from .training.config import TrainConfig
from .versions import Lineage, ModelLine

PRIMARY = "val/agnostic_AP"


@dataclass
class FinetuneRequest:
    line: str
    data: list[str]  # correction sources (labelstudio:ID, fiftyone:..., COCO / YTVIS JSON)
    replay: list[str] = field(default_factory=list)  # earlier data mixed in against forgetting
    held_out: float = 0.25
    min_new: int = 20  # new corrected masks needed before a round starts
    steps: int = 200
    batch_size: int = 2
    lr: float | None = None
    config: TrainConfig | None = None
    device: str = "cpu"
    images_dir: str | None = None
    quiet: bool = True
    progress: Callable | None = None
    should_stop: Callable[[], bool] | None = None
    records: list | None = None  # corrections the caller already opened (``data`` then only names them)
    # Parent and candidate are judged at the size predictions are served at (None: the model's).
    size: tuple[int | None, int | None] = (None, None)


@dataclass
class FinetuneOutcome:
    status: str  # "promoted" | "rejected" | "skipped"
    reason: str
    new_masks: int
    lineage: Lineage | None = None


def record_key(record) -> str:
    """Identity of a sample's annotation: its source plus the content of every segmentation."""
    h = hashlib.sha1(record.source.encode())
    for inst in record.instances:
        for seg in inst.segmentations:
            if isinstance(seg, np.ndarray):
                h.update(np.packbits(seg.astype(bool)).tobytes())
                h.update(str(seg.shape).encode())
            else:
                h.update(json.dumps(seg, sort_keys=True, default=str).encode())
    return h.hexdigest()[:20]


def mask_count(record) -> int:
    return sum(1 for inst in record.instances if any(s is not None for s in inst.segmentations))


def is_held_out(record, share: float) -> bool:
    digest = hashlib.sha1(record.source.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


def split(records, share: float) -> tuple[list, list]:
    train = [r for r in records if not is_held_out(r, share)]
    held = [r for r in records if is_held_out(r, share)]
    if share > 0 and not held and len(train) > 1:  # tiny sets: keep at least one sample aside
        held, train = train[-1:], train[:-1]
    if not train and len(held) > 1:
        train, held = held[:1], held[1:]
    return train, held


def default_config(req: FinetuneRequest) -> TrainConfig:
    """Upstream's recipe, shortened: the given steps, a poly decay to zero, a checkpoint at the end."""
    cfg = req.config or TrainConfig()
    cfg = replace(cfg, max_iter=req.steps, batch_size=req.batch_size, checkpoint_period=max(req.steps, 1),
                  eval_period=0, schedule=replace(cfg.schedule, kind="poly", warmup_iters=0))
    if req.lr is not None:
        cfg = replace(cfg, optim=replace(cfg.optim, lr=req.lr))
    return cfg


def score(checkpoint: str, records, device: str, size: tuple[int | None, int | None] = (None, None)) -> dict[str, float]:
    import torch

    from .training.validation import evaluate_records
    from .weights import load_model, resolve_checkpoint

    device = torch.device(device)
    resolved = resolve_checkpoint(checkpoint)
    model = load_model(resolved, device)
    return evaluate_records(model, resolved, records, device, size)


def finetune(req: FinetuneRequest) -> FinetuneOutcome:
    from .training.data import open_source
    from .training.loop import TrainRequest, train

    if not 0 < req.held_out < 1:
        raise InputError(f"held-out share {req.held_out}: use a fraction between 0 and 1 (e.g. 0.25)")
    line = ModelLine.open(req.line)
    parent = line.current()
    records = list(req.records) if req.records is not None else \
        [r for spec in req.data for r in open_source(spec, images_dir=req.images_dir)]
    records = [r for r in records if mask_count(r)]
    if not records:
        raise InputError(f"{' '.join(req.data)} holds no corrected masks: submit annotations with masks (brush / polygons) first")
    seen = line.seen_keys()
    keys = [record_key(r) for r in records]
    new_masks = sum(mask_count(r) for r, k in zip(records, keys) if k not in seen)
    if new_masks < req.min_new:
        return FinetuneOutcome("skipped", f"{new_masks} new corrected masks, fewer than the threshold {req.min_new}", new_masks)
    train_records, held = split(records, req.held_out)
    if not held or not train_records:
        return FinetuneOutcome("skipped", f"{len(records)} corrected samples: need at least 2 (one held out)", new_masks)

    version, vdir = line.next_version()
    lineage = Lineage(version, parent.version, "finetune", "", adapter=None,
                      data={"sources": list(req.data), "replay": list(req.replay), "samples": len(records),
                            "train_samples": len(train_records), "held_out_samples": len(held),
                            "new_masks": new_masks, "keys": keys},
                      steps=req.steps, reason="training (interrupted if this stays)")
    line.record(lineage)  # an interrupted round stays visible, the current version untouched
    result = train(TrainRequest(data=list(req.replay), records=train_records, init=parent.checkpoint,
                                output=vdir / "run", config=default_config(req), device=req.device,
                                images_dir=req.images_dir, quiet=req.quiet, progress=req.progress,
                                should_stop=req.should_stop))
    return judge(line, lineage, parent, str(result.card), held, req.device, new_masks, req.size)


def judge(line: ModelLine, lineage: Lineage, parent: Lineage, card: str, held, device: str,
          new_masks: int = 0, size: tuple[int | None, int | None] = (None, None)) -> FinetuneOutcome:
    """Score parent and candidate on ``held``; record the lineage; promote the candidate if not worse."""
    before = score(parent.checkpoint, held, device, size)
    after = score(card, held, device, size)
    lineage.checkpoint = str(Path(card).resolve())
    lineage.metrics = {"parent": before, "candidate": after, "primary": PRIMARY}
    lineage.created = time.time()
    change = f"held-out {PRIMARY} {before.get(PRIMARY, 0):.4f} -> {after.get(PRIMARY, 0):.4f}"
    if after.get(PRIMARY, 0.0) >= before.get(PRIMARY, 0.0):
        lineage.promoted, lineage.reason = True, f"{change}: not worse"
        line.record(lineage)
        line.promote(lineage.version)
        return FinetuneOutcome("promoted", lineage.reason, new_masks, lineage)
    lineage.reason = f"{change}: worse, kept {parent.version}"
    line.record(lineage)
    return FinetuneOutcome("rejected", lineage.reason, new_masks, lineage)


def promote_trained_run(init: str, card: str, val: list[str], data: list[str], steps: int, device: str,
                        images_dir: str | None = None) -> FinetuneOutcome:
    """``clipvis train --promote-if-better``: a run started from ``line:NAME`` joins that line as a
    version, promoted when it is not worse than its parent on the ``--val`` data."""
    from .training.data import open_source

    line_ref = init[5:] if init.startswith("line:") else None
    if not line_ref:
        raise InputError("--promote-if-better needs --init line:NAME (the model line the run should join)")
    if not val:
        raise InputError("--promote-if-better needs --val SOURCE: held-out data to compare the run with its parent")
    name, _, version = line_ref.partition("@")
    line = ModelLine.open(name)
    parent = line.get(version) if version else line.current()
    held = [r for spec in val for r in open_source(spec, images_dir=images_dir) if mask_count(r)]
    if not held:
        raise InputError(f"--val {' '.join(val)} holds no masks to compare on")
    new_version, _ = line.next_version()
    lineage = Lineage(new_version, parent.version, "finetune", "", data={"sources": list(data), "val": list(val)},
                      steps=steps, reason="evaluating")
    line.record(lineage)
    return judge(line, lineage, parent, card, held, device)
