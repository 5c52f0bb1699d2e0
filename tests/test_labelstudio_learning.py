"""Learning from corrections with a real Label Studio: annotators' brush masks, submitted through
the API the way the editor's Submit does, reach the backend as webhooks; debounced rounds run as
jobs (in-process, and on real Celery workers); the project's model_version moves only on promotion.

Images are generated shapes (disc / box / triangle) with exact masks; the model is the fixture's
tiny checkpoint, whose text embeddings cannot tell the classes apart."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import cv2
import numpy as np
import pytest
import redis
import requests
from shapes_data import shapes_video
from test_backend_helpers import free_port, stop, wait_http
from test_jobs_celery import purge_keys
from test_labelstudio_e2e import BASIC, TOKEN, _connect

from backend.brush import mask_to_rle
from clipvis_core.training.data.masks import decode_brush_rle

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]
CONFIG = """<View>
  <Image name="image" value="$image"/>
  <BrushLabels name="brush" toName="image"><Label value="disc"/><Label value="box"/><Label value="triangle"/></BrushLabels>
</View>"""
H, W = 64, 96
# Image fine-tuning crops at 256 px, near the 240 px the backend serves the tiny model at (upstream's
# 1024 px LSJ crops of these 64x96 images made every step ~10x slower).
FAST = {"loss": {"num_points": 1024}, "augment": {"image_size": 256, "video_min_sizes": [64], "video_max_size": 128},
        "num_workers": 0}
AUTH = BASIC


def make_images(d: Path, n: int, seed: int) -> list[tuple[Path, np.ndarray, list[str]]]:
    """n generated images: (png, masks [N, H, W], class names)."""
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        frames, masks, kinds = shapes_video(rng, 1, H, W)
        p = d / f"s{seed}-{i:02d}.png"
        cv2.imwrite(str(p), cv2.cvtColor(frames[0], cv2.COLOR_RGB2BGR))
        out.append((p, masks[:, 0], kinds))
    return out


def import_images(ls, project: int, images) -> dict[int, tuple]:
    """Upload the images as tasks; task id -> (png, masks, kinds)."""
    before = {t["id"] for t in ls.api("GET", "/api/tasks", params={"project": project, "page_size": 1000})["tasks"]}
    handles = [open(p, "rb") for p, _, _ in images]
    try:
        ls.api("POST", f"/api/projects/{project}/import",
               files=[(f"file{i}", (p.name, f, "image/png")) for i, ((p, _, _), f) in enumerate(zip(images, handles))])
    finally:
        for f in handles:
            f.close()
    by_name = {p.name: item for item in images for p in [item[0]]}
    tasks = {}
    for t in ls.api("GET", "/api/tasks", params={"project": project, "page_size": 1000})["tasks"]:
        if t["id"] not in before:
            name = next(n for n in by_name if t["data"]["image"].endswith(n))
            tasks[t["id"]] = by_name[name]
    assert len(tasks) == len(images)
    return tasks


def submit_annotation(ls, task: int, masks: np.ndarray, kinds: list[str]) -> None:
    """What the editor's Submit posts: brush regions (LS RLE) with their labels."""
    result = [{"id": uuid.uuid4().hex[:10], "from_name": "brush", "to_name": "image", "type": "brushlabels",
               "original_width": W, "original_height": H, "image_rotation": 0,
               "value": {"format": "rle", "rle": mask_to_rle(m), "brushlabels": [k]}}
              for m, k in zip(masks, kinds) if m.any()]
    ls.api("POST", f"/api/tasks/{task}/annotations/", json={"result": result, "lead_time": 4.2, "task": task})


def agreement(preds: list[dict], masks: np.ndarray, kinds: list[str]) -> tuple[list[float], list[bool]]:
    """Per annotated instance: best IoU over the predicted brush masks and whether that region's label is right."""
    regions = [(decode_brush_rle(r["value"]["rle"], H, W).astype(bool), r["value"]["brushlabels"][0])
               for r in preds if r["type"] == "brushlabels"]
    ious, right = [], []
    for m, k in zip(masks, kinds):
        if not m.any():
            continue
        scores = [(np.logical_and(m, p).sum() / max(np.logical_or(m, p).sum(), 1), lab) for p, lab in regions]
        iou, lab = max(scores, default=(0.0, None))
        ious.append(float(iou))
        right.append(lab == k)
    return ious, right


def backend_env(tiny_card, base: Path, ls_url: str, **extra) -> dict:
    config = base / "learn_config.json"
    config.write_text(json.dumps(FAST))
    env = dict(os.environ, CLIPVIS_CHECKPOINT=str(tiny_card), CLIPVIS_CACHE_DIR=str(base / "cache"),
               CLIPVIS_RESULTS_DIR=str(base / "results"), CLIPVIS_MODELS_DIR=str(base / "models"),
               CLIPVIS_SCORE_THRESHOLD="0", CLIPVIS_MIN_SIZE="64", CLIPVIS_MAX_SIZE="96", CLIPVIS_DEVICE="cpu",
               PYTHONPATH=str(ROOT), BASIC_AUTH_USER=BASIC[0], BASIC_AUTH_PASS=BASIC[1], LABEL_STUDIO_URL=ls_url,
               LABEL_STUDIO_API_KEY=TOKEN, CLIPVIS_LEARN="1", CLIPVIS_LEARN_DEBOUNCE="2", CLIPVIS_LEARN_MIN_NEW="4",
               CLIPVIS_LEARN_STEPS="40", CLIPVIS_LEARN_BATCH_SIZE="4", CLIPVIS_LEARN_LR="0.001",
               CLIPVIS_LEARN_CONFIG=str(config), CLIPVIS_PROGRESS_INTERVAL="0.1", OMP_NUM_THREADS="2")
    env.pop("CLIPVIS_BROKER_URL", None)
    env.update(extra)
    return env


class Served:
    """``clipvis labelstudio serve`` (gunicorn) as a process we can also SIGKILL."""

    def __init__(self, env: dict, log: Path):
        self.env, self.log, self.port = env, log, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.start()

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "clipvis_core", "labelstudio", "serve", "--port",
                                          str(self.port), "--budget", "30", "--threads", "8"], cwd=ROOT, env=self.env,
                                         stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        wait_http(self.url + "/health", self.proc, self.log, timeout=90)

    def kill(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)  # the process group we started: a crash, no cleanup
        self.proc.wait()

    def training(self, project: int) -> dict:
        r = requests.get(self.url + "/is_training", params={"project": project}, auth=AUTH, timeout=30)
        assert r.status_code == 200, r.text
        return r.json()

    def wait_idle(self, project: int, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            st = self.training(project)
            if not st["is_training"] and st["jobs"]:
                return st
            time.sleep(1)
        pytest.fail(f"learning of project {project} not done after {timeout:.0f}s: {st}\n{self.log.read_text()[-3000:]}")


def new_project(ls, title: str) -> int:
    return ls.api("POST", "/api/projects", json={"title": title, "label_config": CONFIG})["id"]


def start_training(ls, project: int) -> None:
    """The project's "Start training" button (Settings > Model)."""
    (ml,) = ls.api("GET", "/api/ml", params={"project": project})
    r = requests.post(f"{ls.url}/api/ml/{ml['id']}/train", headers={"Authorization": f"Token {TOKEN}"}, timeout=120)
    assert r.status_code == 200, r.text[:300]


# -- in-process jobs: empty project, debounce, a crash mid fine-tune ---------------------------------
@pytest.fixture(scope="module")
def local_backend(label_studio, tiny_card, tmp_path_factory):
    base = tmp_path_factory.mktemp("learn-local")
    # 4000 steps: still running when killed; 5 s debounce: longer than submitting 4 annotations
    env = backend_env(tiny_card, base, label_studio.url, CLIPVIS_LEARN_STEPS="4000", CLIPVIS_LEARN_DEBOUNCE="5")
    served = Served(env, base / "backend.log")
    yield served, base
    stop(served.proc)


def test_start_training_on_an_empty_project_says_so_and_promotes_nothing(label_studio, local_backend):
    ls, (backend, base) = label_studio, local_backend
    project = new_project(ls, "learn empty")
    version = _connect(ls, project, backend.url)
    assert "@v0-" in version  # served from the project's model line, started from the checkpoint
    start_training(ls, project)
    st = backend.wait_idle(project, timeout=120)
    assert st["current"] == "v0"
    for kind in ("finetune", "adapt"):
        out = st["jobs"][kind]["outcome"]
        assert out["status"] == "skipped" and f"labelstudio:{project} has no submitted" in out["reason"], out
    line = st["line"]
    assert not (base / "models" / line / "versions" / "v1").exists()
    r = requests.post(backend.url + "/setup", auth=AUTH, timeout=30,
                      json={"project": f"{project}.1", "schema": CONFIG, "hostname": label_studio.url})
    assert r.json()["model_version"] == version


def test_debounced_round_and_a_crash_mid_finetune_leave_the_model_untouched(label_studio, local_backend, tmp_path):
    ls, (backend, _) = label_studio, local_backend
    project = new_project(ls, "learn crash")
    version = _connect(ls, project, backend.url)
    tasks = import_images(ls, project, make_images(tmp_path, 4, seed=11))
    for task, (_, masks, kinds) in tasks.items():
        submit_annotation(ls, task, masks, kinds)  # each fires ANNOTATION_CREATED at the backend
    deadline = time.monotonic() + 30
    while (st := backend.training(project))["events"] < len(tasks):
        assert time.monotonic() < deadline, st
        time.sleep(0.2)
    assert st["state"] == "scheduled" and st["jobs"] == {}, st  # debounced: nothing submitted yet
    deadline = time.monotonic() + 120
    while not ((j := backend.training(project)["jobs"].get("finetune")) and j["state"] == "PROGRESS" and j["step"] >= 2):
        assert time.monotonic() < deadline, backend.log.read_text()[-3000:]
        time.sleep(0.5)
    # another correction while the round runs: no second job, a follow-up round is scheduled instead
    requests.post(backend.url + "/webhook", auth=AUTH, timeout=30,
                  json={"action": "ANNOTATION_UPDATED", "project": {"id": project}}).raise_for_status()
    time.sleep(6)  # past the debounce
    jobs = backend.training(project)["jobs"]
    assert jobs["finetune"]["id"] == j["id"] and jobs["finetune"]["state"] == "PROGRESS"
    backend.kill()
    backend.start()
    r = requests.post(backend.url + "/setup", auth=AUTH, timeout=30,
                      json={"project": f"{project}.1", "schema": CONFIG, "hostname": label_studio.url})
    assert r.status_code == 200 and r.json()["model_version"] == version
    line = backend.training(project)["line"]
    shown = subprocess.run([sys.executable, "-m", "clipvis_core", "models", "show", line, "--json"], cwd=ROOT,
                           env=backend.env, capture_output=True, text=True, timeout=120)
    lineage = json.loads(shown.stdout)
    assert lineage["current"] == "v0"
    (crashed,) = [v for v in lineage["versions"] if v["kind"] == "finetune"]
    assert not crashed["promoted"] and "interrupted" in crashed["reason"]


VIDEO_CONFIG = """<View>
  <Video name="video" value="$video" framerate="10"/>
  <VideoRectangle name="box" toName="video"/>
  <Labels name="videoLabels" toName="video"><Label value="disc"/><Label value="box"/><Label value="triangle"/></Labels>
</View>"""


def track_result(masks: np.ndarray, kind: str, fps: float) -> dict:
    """A corrected video track: one keyframe per frame (percent boxes, 1-based frames at 10 fps)."""
    seq = []
    for t, m in enumerate(masks):
        ys, xs = np.nonzero(m)
        if not len(xs):
            continue
        x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
        seq.append({"frame": t + 1, "enabled": True, "rotation": 0, "time": t / fps, "x": 100 * x0 / W,
                    "y": 100 * y0 / H, "width": 100 * (x1 - x0) / W, "height": 100 * (y1 - y0) / H})
    seq[-1]["enabled"] = False
    return {"id": uuid.uuid4().hex[:10], "from_name": "box", "to_name": "video", "type": "videorectangle",
            "value": {"framesCount": len(masks), "duration": len(masks) / fps, "labels": [kind], "sequence": seq}}


def test_corrected_video_tracks_adapt_the_classifier(label_studio, local_backend, tmp_path):
    from videogen import write_video

    ls, (backend, base) = label_studio, local_backend
    project = ls.api("POST", "/api/projects", json={"title": "learn video", "label_config": VIDEO_CONFIG})["id"]
    version = _connect(ls, project, backend.url)
    rng = np.random.default_rng(31)
    tasks = {}
    for i in range(6):
        frames, masks, kinds = shapes_video(rng, 4, H, W)
        path = write_video(tmp_path / f"v{i}.mp4", frames, fps=10.0, codec="h264")
        with open(path, "rb") as f:
            ls.api("POST", f"/api/projects/{project}/import", files={"file": (path.name, f, "video/mp4")})
        task = max(t["id"] for t in ls.api("GET", "/api/tasks", params={"project": project})["tasks"])
        tasks[task] = (masks, kinds)
    for task, (masks, kinds) in tasks.items():  # the annotator corrects each track's label and submits
        result = [track_result(m, k, 10.0) for m, k in zip(masks, kinds) if m.any()]
        ls.api("POST", f"/api/tasks/{task}/annotations/", json={"result": result, "lead_time": 9.0, "task": task})
    st = backend.wait_idle(project, timeout=600)
    assert set(st["jobs"]) == {"adapt"}, st  # no brush masks: no fine-tune round
    out = st["jobs"]["adapt"]["outcome"]
    print(f"video project: {out['reason']}")
    assert out["status"] == "promoted" and st["current"] == out["version"]
    new = requests.post(backend.url + "/setup", auth=AUTH, timeout=30, json={
        "project": f"{project}.1", "schema": VIDEO_CONFIG, "hostname": ls.url}).json()["model_version"]
    assert new != version and new.startswith(f"{st['line']}@{out['version']}-")
    lineage = json.loads((base / "models" / st["line"] / "versions" / out["version"] / "lineage.json").read_text())
    assert lineage["kind"] == "adapter" and lineage["adapter"] and lineage["parent"] == "v0"
    assert lineage["data"]["examples"] == sum(1 for masks, _ in tasks.values() for m in masks if m.any())


def test_start_training_when_learning_is_off_is_409(tiny_card):
    from backend.app import create_app
    from backend.learning import LearnSettings
    from backend.settings import BackendSettings

    app = create_app(BackendSettings(checkpoint=str(tiny_card), ls_url="http://127.0.0.1:1"), LearnSettings(enabled=False))
    c = app.test_client()
    r = c.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 3, "label_config": CONFIG}})
    assert r.status_code == 409 and "CLIPVIS_LEARN=1" in r.get_json()["detail"]
    r = c.post("/webhook", json={"action": "ANNOTATION_CREATED", "project": {"id": 3}})
    assert r.status_code == 201 and r.get_json()["status"] == "ignored"


# -- end to end on real Celery workers -----------------------------------------------------------
class Worker:
    def __init__(self, env: dict, queues: str, log: Path):
        self.log = log
        with open(log, "wb") as f:
            self.proc = subprocess.Popen([sys.executable, "-m", "clipvis_core", "worker", "--pool", "solo", "--queues",
                                          queues, "--hostname", f"{log.stem}-{uuid.uuid4().hex[:6]}@%h"],
                                         env=env, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while " ready." not in log.read_text(errors="replace"):
            assert self.proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def retrieve(ls, project: int, tasks) -> None:
    """Data Manager > Retrieve predictions for ``tasks``."""
    ls.api("POST", "/api/dm/actions", params={"id": "retrieve_tasks_predictions", "project": project},
           json={"selectedItems": {"all": False, "included": list(tasks)}})


def _wait_version(ls, task: int, version: str, log: Path, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        preds = [p for p in ls.api("GET", "/api/predictions", params={"task": task}) if p["model_version"] == version]
        if preds:
            return preds[0]
        time.sleep(0.5)
    pytest.fail(f"no prediction of {version} for task {task} after {timeout:.0f}s; backend log:\n"
                + log.read_text(errors="replace")[-3000:])


def test_corrections_improve_predictions_end_to_end_on_celery(label_studio, tiny_card, tmp_path):
    ls, run = label_studio, uuid.uuid4().hex[:8]
    url = f"redis://127.0.0.1:6379/{int(os.environ.get('CLIPVIS_TEST_REDIS_DB', '12'))}"
    r = redis.Redis.from_url(url)
    r.ping()  # fails (never skips) without Redis: scripts/start_redis.sh
    queue = f"clipvis-learn-{run}"
    # The recipe tests/test_model_lines.py measures on these shapes: 40 steps of 4 from random:tiny.
    # Served at the model's own test size (240 px): at 64 px the 40-step model is no better.
    env = backend_env(tiny_card, tmp_path, ls.url, CLIPVIS_BROKER_URL=url, CLIPVIS_RESULT_BACKEND=url,
                      CLIPVIS_QUEUE=queue, CLIPVIS_REDIS_PREFIX=queue, CLIPVIS_CHECKPOINT="random:tiny",
                      CLIPVIS_MIN_SIZE="0", CLIPVIS_MAX_SIZE="0")
    segment_worker = Worker(env, queue, tmp_path / "segment-worker.log")
    backend = Served(env, tmp_path / "backend.log")
    train_worker = None
    try:
        project = new_project(ls, "learn e2e")
        v0 = _connect(ls, project, backend.url)
        held = make_images(tmp_path / "held", 12, seed=21)  # ~25 instances: 4 images move by single instances
        held_tasks = import_images(ls, project, held)
        retrieve(ls, project, held_tasks)
        before = [agreement(_wait_version(ls, t, v0, backend.log)["result"], m, k)
                  for t, (_, m, k) in held_tasks.items()]

        train = import_images(ls, project, make_images(tmp_path / "train", 12, seed=22))
        for task, (_, masks, kinds) in train.items():
            submit_annotation(ls, task, masks, kinds)
        deadline = time.monotonic() + 60
        while (first := backend.training(project))["events"] < len(train) or len(first["jobs"]) < 2:
            assert time.monotonic() < deadline, (first, backend.log.read_text()[-3000:])  # debounced, then queued
            time.sleep(0.5)
        assert first["state"] == "queued", first  # no train worker yet
        # a fit event (here "Start training") while the round is queued: the same two jobs, nothing new
        start_training(ls, project)
        again = backend.training(project)
        assert {k: j["id"] for k, j in again["jobs"].items()} == {k: j["id"] for k, j in first["jobs"].items()}
        assert r.llen(f"{queue}.train") == 2

        train_worker = Worker(env, f"{queue}.train", tmp_path / "train-worker.log")
        t0 = time.monotonic()
        done = backend.wait_idle(project, timeout=1500)  # ~25 s on 2 free cores; generous for busy CI
        outcomes = {k: j["outcome"] for k, j in done["jobs"].items()}
        print(f"round took {time.monotonic() - t0:.1f}s: " + "; ".join(f"{k}: {o['status']} ({o['reason']})"
                                                                        for k, o in outcomes.items()))
        # The fine-tune is promoted only if it is not worse on its held-out share; that share follows
        # Label Studio's random upload names (below), so either outcome is a correct round here.
        assert outcomes["finetune"]["status"] in ("promoted", "rejected") and outcomes["adapt"]["status"] == "promoted", outcomes
        v_new = requests.post(backend.url + "/setup", auth=AUTH, timeout=30, json={
            "project": f"{project}.1", "schema": CONFIG, "hostname": ls.url}).json()["model_version"]
        assert v_new != v0 and v_new.startswith(f"{done['line']}@{outcomes['adapt']['version']}-")

        fresh = import_images(ls, project, held)  # the held-out images again, as new tasks
        retrieve(ls, project, fresh)
        after = [agreement(_wait_version(ls, t, v_new, backend.log)["result"], m, k)
                 for t, (_, m, k) in fresh.items()]
        iou_b, iou_a = (float(np.mean([i for x in runs for i in x[0]])) for runs in (before, after))
        acc_b, acc_a = (float(np.mean([c for x in runs for c in x[1]])) for runs in (before, after))
        print(f"held-out agreement {v0} -> {v_new}: mean best IoU {iou_b:.3f} -> {iou_a:.3f}, "
              f"label accuracy {acc_b:.3f} -> {acc_a:.3f}")
        # Labels: the adapter lifts them every run (0.074 -> 0.30-0.52 measured). Masks: which 9 of the
        # 12 corrected images train and which 3 judge hangs on Label Studio's random upload names, and
        # 40 steps of the tiny model on 9 images move the served masks' IoU by -0.05..+0.06 between
        # runs (each promoted by its own held-out AP), so the mask check here is "not broken"; the
        # fine-tune's gain on held-out data is asserted in test_train_loop.py and test_fiftyone_learn.py.
        assert acc_a > acc_b + 0.1
        assert iou_a > iou_b - 0.15  # a broken generator drops it to ~0
        lin = json.loads((tmp_path / "models" / done["line"] / "versions" / outcomes["adapt"]["version"]
                          / "lineage.json").read_text())
        assert lin["metrics"]["loo_accuracy_adapted"] > lin["metrics"]["loo_accuracy_text"]
    finally:
        for proc in (train_worker, segment_worker):
            if proc is not None:
                proc.stop()
        stop(backend.proc)
        purge_keys(url, queue)
