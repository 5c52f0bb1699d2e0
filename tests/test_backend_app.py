"""The ML backend's Flask app (test client; tests/test_backend_security.py runs it under gunicorn):
/health, /setup, /predict with the fixture's tiny checkpoint on generated videos and images
served over real HTTP."""
from __future__ import annotations

import dataclasses
import time

import cv2
import numpy as np
import pytest
from test_backend_helpers import LEGACY_TOKEN, MediaServer, decode_ls_rle
from videogen import make_video, shape_frames

from backend.serve import create_app
from backend.settings import BackendSettings
from clipvis_core.jobs import JobSpec, lookup
from clipvis_core.segmenter import SegmentOptions, get_segmenter, _segmenters

from lsconfigs import IMAGE_CONFIG, VIDEO_CONFIG  # noqa: E402
OPTIONS = dict(score_threshold=0.0, min_size=96, max_size=128)  # the tiny model at test resolution


@pytest.fixture(scope="module")
def env(tiny_card, tmp_path_factory):
    root = tmp_path_factory.mktemp("backend")
    media = root / "media"
    make_video(media / "clip.mp4", num_frames=10, height=96, width=128, fps=10.0)
    make_video(media / "late.mp4", num_frames=6, height=96, width=128, fps=5.0, seed=3)
    cv2.imwrite(str(media / "still.png"), cv2.cvtColor(shape_frames(1, 96, 128, seed=1)[0], cv2.COLOR_RGB2BGR))
    server = MediaServer(media)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CLIPVIS_CACHE_DIR", str(root / "cache"))  # fresh job store and media cache
        mp.delenv("CLIPVIS_BROKER_URL", raising=False)
        settings = BackendSettings(checkpoint=str(tiny_card), predict_budget_s=60.0, cache_dir=root / "cache" / "ls",
                                   **OPTIONS)
        yield dataclasses.make_dataclass("Env", ["settings", "server", "media", "card"])(settings, server, media, tiny_card)
    server.close()


def _setup(client, env, config):
    return client.post("/setup", json={"project": "1.1700000000", "schema": config, "hostname": env.server.url,
                                       "access_token": LEGACY_TOKEN})


def _predict(client, tasks, config):
    return client.post("/predict", json={"tasks": tasks, "project": "1.1700000000", "label_config": config})


def test_health_and_setup_are_cheap(env):
    _segmenters.clear()  # start without a cached network: /health and /setup must not build one
    client = create_app(env.settings).test_client()
    t = time.monotonic()
    assert client.get("/health").get_json()["status"] == "UP"
    r = _setup(client, env, VIDEO_CONFIG)
    assert r.status_code == 200 and time.monotonic() - t < 1.0
    assert r.get_json()["model_version"].startswith("tiny_card-")
    assert not _segmenters
    # The version follows the vocabulary: other labels, other version.
    other = _setup(client, env, VIDEO_CONFIG.replace('value="Ball"', 'value="Cube"')).get_json()["model_version"]
    assert other != r.get_json()["model_version"]


def test_predict_before_setup_is_an_error(env):
    client = create_app(env.settings).test_client()
    r = client.post("/predict", json={"tasks": [{"id": 1, "data": {}}], "project": "1.2", "label_config": VIDEO_CONFIG})
    assert r.status_code == 409 and "not set up" in r.get_json()["detail"]


def test_video_task_gets_one_videorectangle_per_track(env):
    client = create_app(env.settings).test_client()
    version = _setup(client, env, VIDEO_CONFIG).get_json()["model_version"]
    r = _predict(client, [{"id": 7, "project": 1, "data": {"video": "/data/upload/1/clip.mp4"}}], VIDEO_CONFIG)
    assert r.status_code == 200, r.get_data(as_text=True)
    (pred,) = r.get_json()["results"]
    assert pred["model_version"] == version
    # The media was fetched from the Label Studio host with the project token.
    assert ("/data/upload/1/clip.mp4", f"Token {LEGACY_TOKEN}") in env.server.requests

    # Same tracks as running the segmenter directly with the labels' prompts (synonyms included).
    expected = get_segmenter(str(env.card)).segment(str(env.media / "clip.mp4"), ["car, automobile", "Ball"],
                                                     SegmentOptions(**OPTIONS))
    kept = [t for t in expected.tracks if t.present_frames()]
    assert kept and len(pred["result"]) == len(kept)
    cap = cv2.VideoCapture(str(env.media / "clip.mp4"))
    frames, fps = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)), cap.get(cv2.CAP_PROP_FPS)
    for region, track in zip(pred["result"], kept):
        assert (region["type"], region["from_name"], region["to_name"]) == ("videorectangle", "box", "video")
        v = region["value"]
        assert v["labels"] == [("Vehicle", "Ball")[track.category_id]]
        assert v["framesCount"] == frames and v["duration"] == pytest.approx(frames / fps)
        assert region["score"] == pytest.approx(track.score)
        seq = v["sequence"]
        assert [s["frame"] for s in seq] == [i + 1 for i in track.present_frames()]  # 1-based
        assert seq[-1]["enabled"] is False
        for s in seq:
            assert 0 <= s["x"] <= 100 and 0 <= s["y"] <= 100 and 0 < s["width"] <= 100 and 0 < s["height"] <= 100
            assert s["time"] == pytest.approx((s["frame"] - 1) / fps)
        x, y, w, h = track.boxes[track.present_frames()[0]]
        assert (seq[0]["x"], seq[0]["width"]) == pytest.approx((x / 128 * 100, w / 128 * 100))
        assert (seq[0]["y"], seq[0]["height"]) == pytest.approx((y / 96 * 100, h / 96 * 100))
    assert pred["score"] == pytest.approx(np.mean([t.score for t in kept]))


def test_synonyms_are_the_prompts(env):
    """The job the backend ran is stored under the predicted_values vocabulary, not the label names."""
    create_app(env.settings)
    clip = (env.media / "clip.mp4").read_bytes()
    path = next(p for p in (env.settings.cache_dir / "media").glob("*.mp4") if p.read_bytes() == clip)
    opts = dict(OPTIONS)
    assert lookup(JobSpec(str(path), ["car, automobile", "Ball"], str(env.card), opts)) is not None
    assert lookup(JobSpec(str(path), ["Vehicle", "Ball"], str(env.card), opts)) is None


def test_image_task_gets_masks_boxes_and_polygons(env):
    client = create_app(env.settings).test_client()
    _setup(client, env, IMAGE_CONFIG)
    r = _predict(client, [{"id": 8, "project": 1, "data": {"image": f"{env.server.url}/data/upload/1/still.png"}}],
                 IMAGE_CONFIG)
    assert r.status_code == 200, r.get_data(as_text=True)
    (pred,) = r.get_json()["results"]
    expected = get_segmenter(str(env.card)).segment(str(env.media / "still.png"), ["disc, circle", "Box"],
                                                     SegmentOptions(**OPTIONS))
    kept = [t for t in expected.tracks if t.boxes[0] is not None]
    by_type = {}
    for region in pred["result"]:
        by_type.setdefault(region["type"], []).append(region)
    assert {k: len(v) for k, v in by_type.items()} == {"brushlabels": len(kept), "rectanglelabels": len(kept),
                                                       "polygonlabels": len(kept)}
    for brush, track in zip(by_type["brushlabels"], kept):
        assert brush["from_name"] == "brush" and brush["to_name"] == "image"
        assert brush["value"]["brushlabels"] == [("Ball", "Box")[track.category_id]]
        assert (brush["original_width"], brush["original_height"]) == (128, 96)
        rgba = decode_ls_rle(brush["value"]["rle"]).reshape(96, 128, 4)
        assert np.array_equal(rgba[..., 3] == 255, track.mask(0))
    for rect, track in zip(by_type["rectanglelabels"], kept):
        x, y, w, h = track.boxes[0]
        v = rect["value"]
        assert (v["x"], v["y"], v["width"], v["height"]) == pytest.approx((x / 1.28, y / 0.96, w / 1.28, h / 0.96))
    for poly in by_type["polygonlabels"]:
        pts = np.array(poly["value"]["points"])
        assert pts.shape[1] == 2 and len(pts) >= 3 and pts.min() >= 0 and pts.max() <= 100


def test_unsupported_config_error_names_supported_tags(env, caplog):
    client = create_app(env.settings).test_client()
    with caplog.at_level("INFO", logger="clipvis"):
        r = _setup(client, env, '<View><Text name="t" value="$text"/><Choices name="c" toName="t"><Choice value="a"/></Choices></View>')
    assert r.status_code == 422
    detail = r.get_json()["detail"]
    assert "not supported" in detail and "<VideoRectangle>" in detail and "<BrushLabels>" in detail
    # Label Studio shows only the reason phrase, as HTML: the same line, tags in brackets.
    assert r.status == "422 " + detail.replace("<", "[").replace(">", "]")
    (record,) = [rec for rec in caplog.records if rec.name.startswith("clipvis")]
    assert record.levelname == "WARNING" and "POST /setup refused (HTTP 422)" in record.getMessage()
    assert record.exc_info is None  # one line, no traceback


def test_reason_phrase_is_one_printable_line_without_markup():
    from backend.app import reason_phrase

    assert reason_phrase('bad <img src=x onerror="a()">\nnext\tline \u00e9') == 'bad [img src=x onerror="a()"] next?line ?'
    assert len(reason_phrase("x" * 1000)) == 400


@pytest.mark.parametrize("url, message", [
    ("http://203.0.113.9/clip.mp4", "not allowed"),
    ("file:///etc/passwd", "file://"),
    ("/data/local-files/?d=../../etc/passwd", "refused"),
    (None, "has no 'video' field"),
])
def test_refused_media_urls(env, url, message):
    client = create_app(env.settings).test_client()
    _setup(client, env, VIDEO_CONFIG)
    before = len(env.server.requests)
    data = {"video": url} if url else {"image": "/data/upload/1/still.png"}
    r = _predict(client, [{"id": 9, "project": 1, "data": data}], VIDEO_CONFIG)
    assert r.status_code == 200 and r.get_json()["results"] == [[]]  # the task fails, not the request
    (error,) = r.get_json()["errors"]
    assert error["task"] == 9 and message in error["detail"]
    assert len(env.server.requests) == before


def test_budget_returns_what_is_done_then_the_stored_result(env):
    client = create_app(dataclasses.replace(env.settings, predict_budget_s=0.0)).test_client()
    _setup(client, env, VIDEO_CONFIG)
    task = {"id": 10, "project": 1, "data": {"video": "/data/upload/1/late.mp4"}}
    t = time.monotonic()
    r = _predict(client, [task], VIDEO_CONFIG)
    assert r.status_code == 200 and r.get_json()["results"] == [[]]  # nothing finished: no prediction yet
    assert time.monotonic() - t < 2.0
    path_glob = env.settings.cache_dir / "media"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        done = [p for p in path_glob.glob("*.mp4")
                if lookup(JobSpec(str(p), ["car, automobile", "Ball"], str(env.card), dict(OPTIONS))) is not None]
        if len(done) == 2:
            break
        time.sleep(0.2)
    else:
        pytest.fail("the deferred job did not finish within 60 s")
    t = time.monotonic()
    (pred,) = _predict(client, [task], VIDEO_CONFIG).get_json()["results"]
    assert pred["result"] and time.monotonic() - t < 2.0
    # 6 frames at 5 fps shown at the config's framerate 10: Label Studio counts 12 frames.
    assert {r["value"]["framesCount"] for r in pred["result"]} == {round(6 / 5.0 * 10)}


def test_webhooks_queue_new_tasks_and_ignore_training_events(env):
    import multiprocessing

    client = create_app(env.settings).test_client()
    _setup(client, env, VIDEO_CONFIG)
    r = client.post("/webhook", json={"action": "ANNOTATION_CREATED", "annotation": {"id": 1}, "project": {"id": 1}})
    assert r.status_code == 201 and r.get_json()["status"] == "ignored"
    assert not multiprocessing.active_children()  # no training process per event
    r = client.post("/webhook", json={"action": "TASKS_CREATED", "project": {"id": 1, "label_config": VIDEO_CONFIG},
                                      "tasks": [{"id": 11, "project": 1, "data": {"video": "/data/upload/1/clip.mp4"}}]})
    assert r.status_code == 201 and r.get_json() == {"event": "TASKS_CREATED", "status": "queued", "tasks": 1}
    r = client.post("/webhook", json={"action": "TASKS_CREATED", "project": {"id": 1, "label_config": "<View></View>"},
                                      "tasks": [{"id": 12, "data": {}}]})
    assert r.status_code == 422 and "not supported" in r.get_json()["detail"]


def test_blank_synonym_is_refused_at_setup(env):
    client = create_app(env.settings).test_client()
    r = _setup(client, env, VIDEO_CONFIG.replace("car, automobile", "car,,automobile"))
    assert r.status_code == 422 and "non-empty" in r.get_json()["detail"]


def test_missing_checkpoint_is_reported_at_setup(env, tmp_path):
    client = create_app(dataclasses.replace(env.settings, checkpoint=str(tmp_path / "gone.json"))).test_client()
    r = _setup(client, env, VIDEO_CONFIG)
    assert r.status_code == 500 and "gone.json not found" in r.get_json()["detail"]
