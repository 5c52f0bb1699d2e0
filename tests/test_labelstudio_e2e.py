"""End to end with a real Label Studio (its own virtualenv, on 127.0.0.1) and the backend served
by `clipvis labelstudio serve` (gunicorn) behind basic auth, connected through Label Studio's own
ML-backend settings: prelabel, "retrieve predictions", deferred pushes, task-creation webhooks and
20 concurrent /predict calls."""
from __future__ import annotations

import base64
import json
import math
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
import requests
from lsconfigs import IMAGE_CONFIG
from test_backend_helpers import free_port as _free_port, stop as _stop, wait_http as _wait_http
from videogen import make_video, shape_frames

from backend.brush import mask_to_rle

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]
LS_BIN = ROOT / ".venv-ls" / "bin"
TOKEN = "clipvis-e2e-token"
CONFIG = """<View>
  <Video name="video" value="$video"/>
  <VideoRectangle name="box" toName="video"/>
  <Labels name="videoLabels" toName="video">
    <Label value="Vehicle" predicted_values="car, automobile"/>
    <Label value="Ball"/>
  </Labels>
</View>"""
LABELS = {"Vehicle", "Ball"}
BASIC = ("clipvis-e2e", "e2e-backend-pass")  # BASIC_AUTH_USER / BASIC_AUTH_PASS of the backend
ADMIN = ("e2e@example.com", "e2e-password")  # Label Studio's user (the browser tests log in with it)


@dataclass
class LS:
    url: str
    tmp: Path
    pat: str | None = None

    def api(self, method: str, path: str, token: str = TOKEN, **kw):
        r = requests.request(method, self.url + path, headers={"Authorization": f"Token {token}"}, timeout=120, **kw)
        assert r.status_code < 400, f"{method} {path}: {r.status_code} {r.text[:500]}"
        return r.json()

    def project(self, title: str) -> int:
        return self.api("POST", "/api/projects", json={"title": title, "label_config": CONFIG})["id"]

    def upload(self, project: int, path: Path) -> int:
        with open(path, "rb") as f:
            self.api("POST", f"/api/projects/{project}/import", files={"file": (path.name, f, "video/mp4")})
        return max(t["id"] for t in self.api("GET", "/api/tasks", params={"project": project})["tasks"])

    def predictions(self, task: int) -> list[dict]:
        return self.api("GET", "/api/predictions", params={"task": task})

    def personal_token(self) -> str:
        """The admin's personal access token; Label Studio gives one per user, so it is made once a session."""
        if self.pat is None:
            self.pat = self.api("POST", "/api/token/")["token"]
        return self.pat


def start_label_studio(tmp_path_factory):
    """Generator behind conftest's session fixture ``label_studio``: one server for every test module."""
    assert (LS_BIN / "label-studio").exists(), (
        "Label Studio is not installed: python3.11 -m venv .venv-ls && .venv-ls/bin/pip install label-studio==1.23.2")
    tmp = tmp_path_factory.mktemp("labelstudio")
    port = _free_port()
    env = dict(os.environ, LABEL_STUDIO_USER_TOKEN=TOKEN, LABEL_STUDIO_USERNAME=ADMIN[0], LABEL_STUDIO_PASSWORD=ADMIN[1])
    log = tmp / "label-studio.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(["bash", str(ROOT / "scripts" / "labelstudio_server.sh"), str(tmp / "data"), str(port)],
                                stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        _wait_http(f"http://127.0.0.1:{port}/health", proc, log, timeout=240)
        yield LS(f"http://127.0.0.1:{port}", tmp)
    finally:
        _stop(proc)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    d = tmp_path_factory.mktemp("videos")
    return {
        "a": make_video(d / "a.mp4", 10, 96, 128, fps=10.0, codec="h264"),
        "b": make_video(d / "b.mp4", 12, 96, 128, fps=12.0, seed=2, codec="h264"),
        "long": make_video(d / "long.mp4", 40, 96, 128, fps=10.0, seed=4, codec="h264"),
        "hook": make_video(d / "hook.mp4", 8, 96, 128, fps=8.0, seed=7, codec="h264"),
    }


@pytest.fixture(scope="module")
def backend_env(tiny_card, tmp_path_factory):
    cache = tmp_path_factory.mktemp("clipvis-cache")
    env = dict(os.environ, CLIPVIS_CHECKPOINT=str(tiny_card), CLIPVIS_CACHE_DIR=str(cache), CLIPVIS_SCORE_THRESHOLD="0",
               CLIPVIS_MIN_SIZE="96", CLIPVIS_MAX_SIZE="128", PYTHONPATH=str(ROOT),
               BASIC_AUTH_USER=BASIC[0], BASIC_AUTH_PASS=BASIC[1])
    env.pop("CLIPVIS_BROKER_URL", None)
    return env


@pytest.fixture(scope="module")
def backend(backend_env, tmp_path_factory):
    port = _free_port()
    log = tmp_path_factory.mktemp("backend") / "backend.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "clipvis_core", "labelstudio", "serve", "--port", str(port),
                                 "--budget", "1.5", "--threads", "24"], cwd=ROOT, env=backend_env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_http(f"http://127.0.0.1:{port}/health", proc, log, timeout=60)
        yield f"http://127.0.0.1:{port}"
    finally:
        _stop(proc)


def _frames(path: Path) -> tuple[int, float]:
    cap = cv2.VideoCapture(str(path))
    fps = cap.get(cv2.CAP_PROP_FPS)
    n = 0
    while cap.grab():
        n += 1
    cap.release()
    return n, fps


def _check_prediction(pred: dict, video: Path, version: str) -> None:
    assert pred["model_version"] == version
    n, fps = _frames(video)
    frames = math.floor(n / fps * 24 + 0.5)  # the config sets no <Video framerate>: LS counts at 24 fps
    assert pred["result"], "no tracks"
    for region in pred["result"]:
        assert (region["type"], region["from_name"], region["to_name"]) == ("videorectangle", "box", "video")
        v = region["value"]
        assert set(v["labels"]) <= LABELS and len(v["labels"]) == 1
        assert v["framesCount"] == frames and v["duration"] == pytest.approx(n / fps)
        seq = v["sequence"]
        assert all(1 <= s["frame"] <= frames for s in seq) and seq[-1]["enabled"] is False
        assert all(s["frame"] == math.floor(s["time"] * 24 + 0.5) + 1 for s in seq)
        assert [s["frame"] for s in seq] == sorted({s["frame"] for s in seq})
        for s in seq:
            assert 0 <= s["x"] <= 100 and 0 <= s["y"] <= 100 and 0 < s["width"] <= 100 and 0 < s["height"] <= 100


def _connect(ls: LS, project: int, backend: str) -> str:
    """Project > Settings > Model > Connect Model with "Basic Auth", as a user does it; then the
    backend's webhook gets the same credentials as a header (Label Studio creates it without)."""
    # Without credentials Label Studio cannot set the backend up.
    bare = requests.post(ls.url + "/api/ml", headers={"Authorization": f"Token {TOKEN}"}, timeout=60,
                         json={"project": project, "url": backend, "title": "no auth"})
    assert bare.status_code >= 400 or bare.json()["state"] != "CO", bare.text[:300]
    if bare.status_code < 400:
        ls.api("DELETE", f"/api/ml/{bare.json()['id']}")
    ml = ls.api("POST", "/api/ml", json={"project": project, "url": backend, "title": "clipvis",
                                         "auth_method": "BASIC_AUTH", "basic_auth_user": BASIC[0],
                                         "basic_auth_pass": BASIC[1]})
    assert ml["state"] == "CO", ml
    basic = base64.b64encode(":".join(BASIC).encode()).decode()
    for hook in ls.api("GET", "/api/webhooks/", params={"project": project}):
        if hook["url"].rstrip("/") == backend + "/webhook":
            ls.api("PATCH", f"/api/webhooks/{hook['id']}/", json={"headers": {"Authorization": f"Basic {basic}"}})
    return ml["model_version"]


def _retrieve(ls: LS, project: int) -> dict:
    return ls.api("POST", "/api/dm/actions", params={"id": "retrieve_tasks_predictions", "project": project},
                  json={"selectedItems": {"all": True, "excluded": []}})


def _wait_predictions(ls: LS, task: int, timeout: float = 120) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        preds = ls.predictions(task)
        if preds:
            time.sleep(1)  # a duplicate push would show up now
            return ls.predictions(task)
        time.sleep(0.5)
    pytest.fail(f"no prediction for task {task} after {timeout:.0f}s")


def test_prelabel_then_retrieve(label_studio, backend, backend_env, videos):
    ls = label_studio
    project = ls.project("clipvis prelabel")
    tasks = {ls.upload(project, videos["a"]): videos["a"], ls.upload(project, videos["b"]): videos["b"]}
    pat = ls.personal_token()  # a personal access token: the Bearer flow
    run = subprocess.run([sys.executable, "-m", "clipvis_core", "labelstudio", "prelabel", "--project", str(project),
                          "--url", ls.url, "--token", pat], cwd=ROOT, env=backend_env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "2 predictions pushed" in run.stdout and "100%" in run.stderr  # the progress bar ran to the end
    version = _connect(ls, project, backend)
    for task, video in tasks.items():
        (pred,) = ls.predictions(task)
        _check_prediction(pred, video, version)
    # Label Studio's own action finds every task already pre-annotated by this model version.
    _retrieve(ls, project)
    assert all(len(ls.predictions(t)) == 1 for t in tasks)


def test_retrieve_answers_stored_results_and_pushes_late_ones(label_studio, backend, videos):
    ls = label_studio
    project = ls.project("clipvis retrieve")
    stored = ls.upload(project, videos["a"])  # same bytes as a prelabelled task: answered at once
    late = ls.upload(project, videos["long"])  # needs longer than the 1.5 s budget: pushed later
    version = _connect(ls, project, backend)
    t = time.monotonic()
    _retrieve(ls, project)
    assert time.monotonic() - t < 30
    # Only the stored result came back in the /predict answer (the late job loads the network
    # and segments 40 frames, far beyond the 1.5 s budget); the late one is pushed when done.
    assert ls.predictions(late) == []
    (pred,) = ls.predictions(stored)
    _check_prediction(pred, videos["a"], version)
    (pred,) = _wait_predictions(ls, late)
    _check_prediction(pred, videos["long"], version)
    # A task created now reaches the backend through the webhook and is pushed when done.
    hooked = ls.upload(project, videos["hook"])
    (pred,) = _wait_predictions(ls, hooked)
    _check_prediction(pred, videos["hook"], version)
    # Retrieving again adds nothing: every task has this version's prediction.
    _retrieve(ls, project)
    assert [len(ls.predictions(t)) for t in (stored, late, hooked)] == [1, 1, 1]


def test_local_files_storage_media_is_fetched_with_the_token(label_studio, backend, videos):
    """Tasks from Label Studio local-files storage (/data/local-files/?d=...) are downloaded through
    Label Studio with the project token (the backend has no LOCAL_FILES_DOCUMENT_ROOT of its own)."""
    ls = label_studio
    project = ls.project("clipvis local files")
    folder = ls.tmp / "data" / "files" / "clips"  # under the script's LOCAL_FILES_DOCUMENT_ROOT
    folder.mkdir(parents=True)
    (folder / "b.mp4").write_bytes(videos["b"].read_bytes())
    storage = ls.api("POST", "/api/storages/localfiles", json={"project": project, "path": str(folder),
                                                               "use_blob_urls": True, "title": "clips"})
    ls.api("POST", f"/api/storages/localfiles/{storage['id']}/sync")
    (task,) = ls.api("GET", "/api/tasks", params={"project": project, "fields": "all"})["tasks"]
    assert "/data/local-files/" in json.dumps(task["data"])
    version = _connect(ls, project, backend)
    _retrieve(ls, project)
    (pred,) = _wait_predictions(ls, task["id"])
    _check_prediction(pred, videos["b"], version)




def _sdk_errors(config: str, prediction: dict, tmp: Path) -> list[str]:
    """Label Studio SDK's own validation of a stored prediction against the labeling config."""
    (tmp / "check.json").write_text(json.dumps({"config": config, "prediction": prediction}))
    code = ("import json,sys; from label_studio_sdk.label_interface import LabelInterface; "
            "d=json.load(open(sys.argv[1])); "
            "print(json.dumps(LabelInterface(d['config']).validate_prediction(d['prediction'], return_errors=True)))")
    out = subprocess.run([str(LS_BIN / "python"), "-c", code, str(tmp / "check.json")], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_image_project_gets_masks_boxes_polygons_label_studio_accepts(label_studio, backend, tmp_path):
    ls = label_studio
    image = tmp_path / "still.png"
    cv2.imwrite(str(image), cv2.cvtColor(shape_frames(1, 96, 128, seed=1)[0], cv2.COLOR_RGB2BGR))
    project = ls.api("POST", "/api/projects", json={"title": "clipvis images", "label_config": IMAGE_CONFIG})["id"]
    with open(image, "rb") as f:
        ls.api("POST", f"/api/projects/{project}/import", files={"file": (image.name, f, "image/png")})
    (task,) = ls.api("GET", "/api/tasks", params={"project": project})["tasks"]
    version = _connect(ls, project, backend)
    _retrieve(ls, project)
    (pred,) = _wait_predictions(ls, task["id"])
    assert pred["model_version"] == version
    counts = {t: sum(r["type"] == t for r in pred["result"]) for t in ("brushlabels", "rectanglelabels", "polygonlabels")}
    assert counts["brushlabels"] > 0 and len(set(counts.values())) == 1 and sum(counts.values()) == len(pred["result"])
    assert _sdk_errors(IMAGE_CONFIG, {"result": pred["result"]}, tmp_path) == []
    for project_id in (p["id"] for p in ls.api("GET", "/api/projects")["results"] if p["title"] == "clipvis prelabel"):
        for t in ls.api("GET", "/api/tasks", params={"project": project_id})["tasks"]:
            (video_pred,) = ls.predictions(t["id"])
            assert _sdk_errors(CONFIG, {"result": video_pred["result"]}, tmp_path) == []


def test_twenty_concurrent_predict_calls(label_studio, backend, videos, tmp_path):
    ls = label_studio
    project = next(p["id"] for p in ls.api("GET", "/api/projects")["results"] if p["title"] == "clipvis retrieve")
    fresh_video = make_video(tmp_path / "fresh.mp4", 16, 96, 128, fps=10.0, seed=11, codec="h264")
    fresh = ls.upload(project, fresh_video)  # not computed yet (its webhook job starts now)
    tasks = ls.api("GET", "/api/tasks", params={"project": project, "fields": "all"})["tasks"]
    assert len(tasks) == 4

    def call(i):
        task = {"id": tasks[i % 4]["id"], "project": project, "data": tasks[i % 4]["data"]}
        return requests.post(backend + "/predict", json={"tasks": [task], "project": f"{project}.0",
                                                         "label_config": CONFIG}, timeout=100, auth=BASIC)

    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(call, range(20)))
    assert [r.status_code for r in answers] == [200] * 20
    for i, r in enumerate(answers):
        (pred,) = r.json()["results"]
        if tasks[i % 4]["id"] == fresh:
            assert pred == [] or pred["result"]  # in budget or not: never an error
        else:
            assert pred["result"] and all(x["type"] == "videorectangle" for x in pred["result"])
    # One job served the webhook and every concurrent call for the new task: one prediction.
    (pred,) = _wait_predictions(ls, fresh)
    _check_prediction(pred, fresh_video, pred["model_version"])


def test_brush_rle_decodes_with_label_studio_sdk(tmp_path):
    """Our encoder against the decoder Label Studio's own SDK ships."""
    rng = np.random.default_rng(0)
    mask = np.zeros((61, 83), bool)
    mask[10:40, 5:70] = True
    mask |= rng.random(mask.shape) > 0.9
    (tmp_path / "rle.json").write_text(json.dumps(mask_to_rle(mask)))
    code = ("import json,sys,numpy as np; from label_studio_sdk.converter.brush import decode_rle; "
            "a=decode_rle(json.load(open(sys.argv[1]))); np.save(sys.argv[2], a)")
    subprocess.run([str(LS_BIN / "python"), "-c", code, str(tmp_path / "rle.json"), str(tmp_path / "out.npy")], check=True)
    flat = np.load(tmp_path / "out.npy")
    assert np.array_equal(flat.reshape(61, 83, 4)[..., 3] == 255, mask)
