"""The backend as an attacker and a careless user meet it: served by gunicorn on loopback
(`clipvis labelstudio serve`), with a real HTTP server as the pinned Label Studio and a second,
logging server standing in for every other origin. Nothing may reach that other origin."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import requests
from lsconfigs import VIDEO_CONFIG
from test_backend_helpers import LEGACY_TOKEN, PASSWORD, PAT, ROOT, USER, MediaServer, served_backend
from videogen import make_video

LIMITS = {"CLIPVIS_MAX_CONFIG_KB": "32", "CLIPVIS_MAX_LABELS": "40", "CLIPVIS_MEDIA_TIMEOUT": "2"}


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    root = tmp_path_factory.mktemp("security")
    (root / "ls").mkdir()
    (root / "other").mkdir()
    make_video(root / "ls" / "clip.mp4", num_frames=4, height=64, width=96, fps=8.0)
    (root / "other" / "clip.mp4").write_bytes((root / "ls" / "clip.mp4").read_bytes())
    ls, other = MediaServer(root / "ls"), MediaServer(root / "other")
    yield ls, other
    ls.close()
    other.close()


@pytest.fixture(scope="module")
def backend(tiny_card, servers, tmp_path_factory):
    d = tmp_path_factory.mktemp("backend")
    env = dict(os.environ, CLIPVIS_CHECKPOINT=str(tiny_card), CLIPVIS_CACHE_DIR=str(d / "cache"),
               CLIPVIS_SCORE_THRESHOLD="0", CLIPVIS_MIN_SIZE="64", CLIPVIS_MAX_SIZE="96", PYTHONPATH=str(ROOT),
               BASIC_AUTH_USER=USER, BASIC_AUTH_PASS=PASSWORD, **LIMITS)
    for name in ("CLIPVIS_BROKER_URL", "LABEL_STUDIO_URL", "LABEL_STUDIO_API_KEY"):
        env.pop(name, None)
    with served_backend(env, d / "backend.log", "--budget", "40", "--threads", "8") as url:
        yield url


def call(backend, path, body=None, auth=(USER, PASSWORD), **kw):
    return requests.post(backend + path, json=body, auth=auth, timeout=90, **kw)


def setup(backend, project, hostname, token=LEGACY_TOKEN, config=VIDEO_CONFIG, **kw):
    return call(backend, "/setup", {"project": f"{project}.1700000000", "schema": config, "hostname": hostname,
                                    "access_token": token}, **kw)


def predict(backend, project, tasks, config=VIDEO_CONFIG):
    return call(backend, "/predict", {"tasks": tasks, "project": f"{project}.1700000000", "label_config": config})


GOOD = {"id": 1, "data": {"video": "/data/upload/1/clip.mp4"}}


# -- 1. authentication -----------------------------------------------------------------------------
@pytest.mark.parametrize("auth", [None, (USER, "wrong"), ("someone", PASSWORD), (USER, PASSWORD + "x")])
@pytest.mark.parametrize("path", ["/setup", "/predict", "/webhook", "/versions"])
def test_every_endpoint_but_health_needs_credentials(backend, servers, auth, path):
    ls, other = servers
    r = call(backend, path, {"project": "1.1", "schema": VIDEO_CONFIG, "hostname": other.url, "tasks": [],
                             "action": "TASKS_CREATED"}, auth=auth)
    assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Basic")
    assert "BASIC_AUTH_USER" in r.json()["detail"]
    assert other.requests == []
    assert requests.get(backend + "/health", timeout=5).json()["status"] == "UP"  # open for Label Studio's check


def test_serving_beyond_loopback_without_credentials_refuses_to_start(tiny_card, tmp_path):
    env = dict(os.environ, CLIPVIS_CHECKPOINT=str(tiny_card), CLIPVIS_CACHE_DIR=str(tmp_path), PYTHONPATH=str(ROOT))
    env.pop("BASIC_AUTH_USER", None)
    env.pop("BASIC_AUTH_PASS", None)
    run = subprocess.run([sys.executable, "-m", "clipvis_core", "labelstudio", "serve", "--host", "0.0.0.0",
                          "--port", "1"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 2
    (line,) = run.stderr.strip().splitlines()
    assert line.startswith("clipvis: error: refusing to serve on 0.0.0.0 without authentication")
    assert "BASIC_AUTH_USER" in line and "--allow-unauthenticated" in line
    run = subprocess.run([sys.executable, "-m", "clipvis_core", "labelstudio", "serve", "--host", "0.0.0.0"],
                         cwd=ROOT, env=dict(env, BASIC_AUTH_USER=USER), capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and "set both BASIC_AUTH_USER and BASIC_AUTH_PASS" in run.stderr


# -- 2. the pinned Label Studio host ---------------------------------------------------------------
def test_setup_naming_another_host_is_refused_and_that_host_never_called(backend, servers):
    ls, other = servers
    assert setup(backend, 1, ls.url).status_code == 200  # the first /setup pins project 1 to `ls`
    r = setup(backend, 1, other.url, token="attacker-token")
    assert r.status_code == 403
    assert f"pinned to Label Studio at {ls.url}" in r.json()["detail"] and "LABEL_STUDIO_URL" in r.json()["detail"]
    (pred,) = predict(backend, 1, [GOOD]).json()["results"]  # relative media still come from `ls`
    assert pred["result"]
    assert ("/data/upload/1/clip.mp4", f"Token {LEGACY_TOKEN}") in ls.requests
    assert other.requests == []


def test_personal_access_token_is_refreshed_only_at_the_pinned_host(backend, servers):
    ls, other = servers
    assert setup(backend, 2, ls.url, token=PAT).status_code == 200
    assert setup(backend, 2, other.url + "/", token=PAT).status_code == 403
    task = {"id": 21, "data": {"video": "/data/upload/2/clip.mp4?fresh"}}  # a new URL: a new download
    (pred,) = predict(backend, 2, [task]).json()["results"]
    assert pred["result"]
    assert ("/api/token/refresh", None) in ls.requests and other.requests == []


# -- 3. media URLs parsed once ---------------------------------------------------------------------
def tricks(ls: MediaServer, other: MediaServer) -> dict[str, str]:
    a, o = ls.url.split("//")[1], other.url.split("//")[1]  # 127.0.0.1:<port>
    port = o.split(":")[1]
    return {
        "backslash": f"http://{o}\\@{a}/data/upload/1/clip.mp4",
        "encoded backslash": f"http://{o}%5C@{a}/data/upload/1/clip.mp4",
        "#@": f"http://{o}#@{a}/data/upload/1/clip.mp4",
        "?@": f"http://{o}?@{a}/data/upload/1/clip.mp4",
        "userinfo": f"http://{a}@{o}/open/clip.mp4",
        "userinfo with password": f"http://user:pw@{o}/open/clip.mp4",
        "tab": f"http://{o}\t@{a}/data/upload/1/clip.mp4",
        "newline": f"http://{o}/open/clip.mp4\n{ls.url}/data/upload/1/clip.mp4",
        "leading space": f" http://{o}/open/clip.mp4",
        "short IPv4": f"http://127.1:{port}/open/clip.mp4",
        "hex IPv4": f"http://0x7f.0.0.1:{port}/open/clip.mp4",
        "decimal IPv4": f"http://2130706433:{port}/open/clip.mp4",
        "port with leading zero": f"http://127.0.0.1:0{port}/open/clip.mp4",
        "bad port": f"http://127.0.0.1:{port}x/open/clip.mp4",
        "redirect to another port": f"{ls.url}/redirect?to=http://{o}/open/clip.mp4",
        "redirect with a backslash": f"{ls.url}/redirect?to=http://{o}%5C@{a}/data/upload/1/clip.mp4",
        "protocol-relative": f"//{o}/open/clip.mp4",
    }


@pytest.mark.parametrize("name", ["backslash", "encoded backslash", "#@", "?@", "userinfo", "userinfo with password",
                                  "tab", "newline", "leading space", "short IPv4", "hex IPv4", "decimal IPv4",
                                  "port with leading zero", "bad port", "redirect to another port",
                                  "redirect with a backslash", "protocol-relative"])
def test_url_parser_tricks_reach_no_other_origin(backend, servers, name):
    ls, other = servers
    assert setup(backend, 1, ls.url).status_code == 200
    url = tricks(ls, other)[name]
    r = predict(backend, 1, [{"id": 99, "data": {"video": url}}, GOOD])
    assert r.status_code == 200, r.text
    bad, good = r.json()["results"]
    assert bad == [] and good["result"]  # the trick fails alone; the good task is answered
    (err,) = r.json()["errors"]
    assert err["task"] == 99 and err["detail"] and "\n" not in err["detail"]
    assert other.requests == []  # never reached, so never saw the token


def test_slow_and_cut_short_downloads_are_one_line_media_errors(backend, servers):
    ls, other = servers
    assert setup(backend, 1, ls.url).status_code == 200
    r = predict(backend, 1, [{"id": 31, "data": {"video": f"{ls.url}/drip"}},
                             {"id": 32, "data": {"video": f"{ls.url}/short"}}, GOOD])
    slow, short, good = r.json()["results"]
    assert slow == [] and short == [] and good["result"]
    errors = {e["task"]: e["detail"] for e in r.json()["errors"]}
    assert "took longer than 2 s" in errors[31] and "CLIPVIS_MEDIA_TIMEOUT" in errors[31]
    assert "cut short after 100 bytes of 1048576" in errors[32]


# -- 4. batch isolation and HTTP semantics ---------------------------------------------------------
def test_a_batch_with_malformed_tasks_answers_the_good_one(backend, servers):
    ls, other = servers
    assert setup(backend, 1, ls.url).status_code == 200
    r = predict(backend, 1, ["not a task", {"id": 41, "data": "not a dict"}, {"id": 42, "data": {"video": 7}},
                             {"id": 43, "data": {"video": "http://127.0.0.1:8080x/a.mp4"}}, {"id": 44}, GOOD])
    assert r.status_code == 200
    *bad, good = r.json()["results"]
    assert bad == [[]] * 5 and good["result"]
    details = {e["task"]: e["detail"] for e in r.json()["errors"]}
    assert set(details) == {None, 41, 42, 43, 44}
    assert "'data'" in details[41] and "must be a media URL" in details[42] and "8080x" in details[43]
    assert other.requests == []


@pytest.mark.parametrize("path", ["/setup", "/predict", "/webhook"])
@pytest.mark.parametrize("body", [b"{not json", b"[1, 2]", b"\xff\xfe", b""])
def test_malformed_bodies_are_400_without_a_traceback(backend, path, body):
    r = requests.post(backend + path, data=body, auth=(USER, PASSWORD), timeout=30,
                      headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    assert "JSON object" in r.json()["detail"] and "Traceback" not in r.text


def test_bad_fields_are_400(backend, servers):
    ls, _ = servers
    assert call(backend, "/predict", {"tasks": "nope", "project": "1.1", "label_config": VIDEO_CONFIG}).status_code == 400
    r = call(backend, "/setup", {"project": "not-a-project", "schema": VIDEO_CONFIG, "hostname": ls.url})
    assert r.status_code == 400 and "project id" in r.json()["detail"]


def test_config_status_codes(backend, servers):
    ls, other = servers
    labels = "".join(f'<Label value="c{i}"/>' for i in range(40))  # with "Vehicle": 41 > CLIPVIS_MAX_LABELS=40
    many = VIDEO_CONFIG.replace('<Label value="Ball"/>', labels)
    r = setup(backend, 5, ls.url, config=many)
    assert r.status_code == 413 and "41 labels" in r.json()["detail"] and "CLIPVIS_MAX_LABELS" in r.json()["detail"]
    big = VIDEO_CONFIG.replace("</View>", "<!--" + "x" * (33 * 1024) + "--></View>")  # over 32 KB
    r = setup(backend, 5, ls.url, config=big)
    assert r.status_code == 413 and "CLIPVIS_MAX_CONFIG_KB" in r.json()["detail"]
    r = setup(backend, 5, ls.url, config='<View><Text name="t" value="$t"/></View>')
    assert r.status_code == 422 and "not supported" in r.json()["detail"]
    r = setup(backend, 5, ls.url, config="<View><Video name='v'")
    assert r.status_code == 422 and "could not be parsed" in r.json()["detail"]
    r = predict(backend, 6, [GOOD])  # never set up (and no LABEL_STUDIO_URL)
    assert r.status_code == 409 and "not set up" in r.json()["detail"]
    assert other.requests == []
