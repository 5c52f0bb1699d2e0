"""The FiftyOne App, headless on 127.0.0.1: it lists and resolves our operators, and a headless
Chromium screenshot shows the dataset with the labels the operator wrote (kept in artifacts/)."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import uuid
from pathlib import Path

import pytest
import requests

from test_fiftyone_env import (  # noqa: F401  (fixtures)
    HEIGHT, NUM_FRAMES, OP_PREFIX, ROOT, WIDTH, fiftyone_cli, fo_session, free_port, make_video_dataset, run_op,
    small_card, wait_port,
)
from videogen import shape_frames, write_video

ARTIFACT = ROOT / "artifacts" / "fiftyone_app.png"
OPERATORS = ("segment_video_instances", "find_novel_categories", "evaluate_video_instances", "learn_from_corrections")


@pytest.fixture
def app_dataset(fo_session, small_card, tmp_path):
    # H.264: the App's browser player decodes it (OpenCV's mp4v would show no frames).
    clips = []
    for seed in range(3):
        frames = shape_frames(NUM_FRAMES, HEIGHT, WIDTH, seed=seed)
        clips.append((write_video(tmp_path / f"app{seed}.mp4", frames, fps=10.0, codec="h264"), frames))
    ds = make_video_dataset(f"clipvis-app-{uuid.uuid4().hex[:8]}", clips, gt_field=None)
    ds.persistent = True  # the App server is another process
    run_op("segment_video_instances", ds, dict(classes="disc; rectangle; square", checkpoint=str(small_card),
                                               score_threshold=0.0, max_tracks=3, label_field="clipvis"))
    yield ds
    ds.delete()


@pytest.fixture
def app(fo_session, app_dataset, tmp_path):
    port = free_port()
    log = open(tmp_path / "app.log", "wb")
    proc = subprocess.Popen([fiftyone_cli(), "app", "launch", app_dataset.name, "--remote", "-A", "127.0.0.1",
                             "-p", str(port), "-w", "-1"], env=fo_session.env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        wait_port(port, 90, proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
        log.close()


def screenshot(url: str, out: Path, profile: Path) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "chromium is required for the App screenshot (apt-get install chromium)"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={profile}", "--window-size=1400,900", "--virtual-time-budget=20000",
                    f"--screenshot={out}", url], capture_output=True, timeout=180, check=True)


@pytest.mark.e2e
def test_app_lists_operators_and_shows_written_labels(app, app_dataset, tmp_path):
    import cv2
    import numpy as np

    listed = requests.post(f"{app}/operators", json={"dataset_name": app_dataset.name}, timeout=60).json()
    uris = {o["uri"]: o for o in listed["operators"]}
    for op in OPERATORS:
        assert OP_PREFIX + op in uris, f"{op} not listed by the App server: {listed['errors'][:1]}"
    seg = uris[OP_PREFIX + "segment_video_instances"]["config"]
    assert seg["allow_delegated_execution"] and seg["default_choice_to_delegated"]
    # The App resolves our form: the inputs are there and an empty vocabulary is flagged before running.
    form = requests.post(f"{app}/operators/resolve-type", timeout=60, json={
        "operator_uri": OP_PREFIX + "segment_video_instances", "dataset_name": app_dataset.name,
        "target": "inputs", "params": {"vocabulary_source": "text"}}).json()
    props = form["type"]["properties"]
    assert {"view_target", "classes", "checkpoint", "score_threshold", "max_tracks", "frame_stride", "label_field",
            "store_masks", "precision"} <= set(props)
    assert props["problem"]["invalid"] and "empty vocabulary" in props["problem"]["error_message"]

    screenshot(f"{app}/datasets/{app_dataset.name}", ARTIFACT, tmp_path / "chrome")
    img = cv2.imread(str(ARTIFACT))
    assert img is not None and img.shape[:2] == (900, 1400)
    # The sample grid (right of the sidebar) holds the three thumbnails with their overlays: it must
    # not be the empty dark background.
    grid = img[140:360, 300:1100].astype(float)
    assert grid.std() > 20, "the App grid looks empty"
    assert len(np.unique(grid.reshape(-1, 3), axis=0)) > 200
