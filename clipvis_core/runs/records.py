"""Run records: one document per background run in the ``clipvis_runs`` collection of FiftyOne's database.

A record is the queue entry the worker claims, the progress the panel shows (samples done, the
frames of the samples being segmented) and the cancel flag the panel sets. Every change is one
atomic update of one document, so the App, the worker and the CLI can touch it at the same time.
"""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from datetime import datetime, timezone

from ..errors import InputError

COLLECTION = "clipvis_runs"
ACTIVE = ("queued", "running")
TERMINAL = ("completed", "failed", "cancelled")


def _coll():
    import fiftyone.core.odm as foo

    return foo.get_db_conn()[COLLECTION]


def _now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class RunRecord:
    id: str
    dataset_id: str
    dataset_name: str
    label_field: str
    spec: dict  # clipvis_core.runs.labeling.RunSpec.to_dict()
    sample_ids: list[str]  # empty in list_runs (not loaded)
    samples_total: int = 0
    state: str = "queued"  # queued, running, completed, failed, cancelled
    backend: str = "local"  # where the frames are segmented: "local" (the worker process) or "celery"
    samples_done: int = 0
    tracks: int = 0
    active: list[dict] = field(default_factory=list)  # [{"name", "frames_done", "frames_total"}]
    fraction: float = 0.0
    error: str | None = None
    cancel_requested: bool = False
    worker: dict | None = None  # {"pid", "host"} of the worker that claimed it
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None

    @property
    def done(self) -> bool:
        return self.state in TERMINAL

    def describe(self) -> str:
        """One line for the panel and the CLI."""
        text = f"{self.state}: {self.samples_done}/{self.samples_total} samples, {self.tracks} tracks"
        frames = ", ".join(f"{a['name']} frame {a['frames_done']}/{a['frames_total'] or '?'}" for a in self.active)
        if frames and self.state == "running":
            text += f" - {frames}"
        if self.cancel_requested and self.state == "running":
            text += " (cancelling)"
        if self.error:
            text += f" - {self.error}"
        return text

    @classmethod
    def from_doc(cls, d: dict) -> "RunRecord":
        d = dict(d)
        d["id"] = str(d.pop("_id"))
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in known})


def create_run(dataset, spec: dict, sample_ids: list[str], backend: str) -> RunRecord:
    from bson import ObjectId

    rec = RunRecord(id="", dataset_id=str(dataset._doc.id), dataset_name=dataset.name, label_field=spec["label_field"],
                    spec=spec, sample_ids=list(sample_ids), samples_total=len(sample_ids), backend=backend,
                    created_at=_now())
    doc = {k: v for k, v in rec.__dict__.items() if k != "id"}
    doc["_id"] = ObjectId()
    _coll().insert_one(doc)
    rec.id = str(doc["_id"])
    return rec


def _oid(run_id: str):
    from bson import ObjectId
    from bson.errors import InvalidId

    try:
        return ObjectId(run_id)
    except (InvalidId, TypeError):
        raise InputError(f"not a clipvis run id: {run_id!r} (see the clipvis runs panel)") from None


def get_run(run_id: str) -> RunRecord:
    d = _coll().find_one({"_id": _oid(run_id)})
    if d is None:
        raise InputError(f"no clipvis run {run_id}: it was deleted or belongs to another database")
    return RunRecord.from_doc(d)


def list_runs(dataset_id: str, limit: int = 20) -> list[RunRecord]:
    """The dataset's runs, newest first."""
    docs = _coll().find({"dataset_id": str(dataset_id)}, {"sample_ids": 0}).sort("created_at", -1).limit(limit)
    return [RunRecord.from_doc({**d, "sample_ids": []}) for d in docs]


def request_cancel(run_id: str) -> RunRecord:
    """A queued run is cancelled at once; a running one stops at the worker's next check (within a frame)."""
    c = _coll()
    c.update_one({"_id": _oid(run_id), "state": "queued"},
                 {"$set": {"state": "cancelled", "cancel_requested": True, "finished_at": _now()}})
    c.update_one({"_id": _oid(run_id), "state": "running"}, {"$set": {"cancel_requested": True}})
    return get_run(run_id)


def cancel_requested(run_id: str) -> bool:
    d = _coll().find_one({"_id": _oid(run_id)}, {"cancel_requested": 1})
    return d is None or bool(d.get("cancel_requested"))  # a deleted record stops its run too


def claim_next() -> RunRecord | None:
    """Atomically take the oldest queued run (several workers never take the same one)."""
    from pymongo import ReturnDocument

    d = _coll().find_one_and_update(
        {"state": "queued"},
        {"$set": {"state": "running", "started_at": _now(), "worker": {"pid": os.getpid(), "host": socket.gethostname()}}},
        sort=[("created_at", 1)], return_document=ReturnDocument.AFTER)
    return RunRecord.from_doc(d) if d is not None else None


def update_progress(run_id: str, samples_done: int, tracks: int, active: list[dict], fraction: float) -> None:
    _coll().update_one({"_id": _oid(run_id)}, {"$set": {"samples_done": samples_done, "tracks": tracks,
                                                        "active": active, "fraction": fraction}})


def finish(run_id: str, state: str, error: str | None = None) -> None:
    assert state in TERMINAL, state
    update = {"state": state, "active": [], "finished_at": _now(), "error": error}
    if state == "completed":
        update["fraction"] = 1.0
    _coll().update_one({"_id": _oid(run_id)}, {"$set": update})


def fail_orphans() -> int:
    """Runs left 'running' by a worker of this host that no longer exists (killed, machine rebooted)."""
    host, n = socket.gethostname(), 0
    for d in _coll().find({"state": "running", "worker.host": host}, {"worker": 1}):
        pid = (d.get("worker") or {}).get("pid")
        if pid and not _alive(pid):
            finish(str(d["_id"]), "failed", f"the clipvis worker (pid {pid}) stopped; run it again")
            n += 1
    return n


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
