"""The job layer in-process (no broker): keys, the results store, exactly-once, progress, cancel,
bad input, URL media behind an auth header, and the CLI. Real segmentation with the tiny card."""
import dataclasses
import http.server
import logging
import shutil
import threading
import time

import pytest
from videogen import make_video

from clipvis_core.cli import main
from clipvis_core.errors import InputError
from clipvis_core.jobs import JobCancelled, JobHandle, JobSettings, JobSpec, JobTimeout, lookup, run_job, submit
from clipvis_core.segmenter import SegmentOptions, get_segmenter

VOCAB = ["car, automobile", "person", "ball"]
OPTS = {"min_size": 0}  # native 96x128 frames keep the CPU runs short


@pytest.fixture(scope="module", autouse=True)
def _env(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CLIPVIS_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        mp.delenv("CLIPVIS_BROKER_URL", raising=False)
        mp.delenv("CLIPVIS_RESULT_BACKEND", raising=False)
        yield


@pytest.fixture
def settings(tmp_path):
    return dataclasses.replace(JobSettings.from_env(), results_dir=tmp_path / "results", broker_url=None,
                               result_backend=None, progress_interval=0.0)


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    d = tmp_path_factory.mktemp("media")
    bad = d / "corrupt.mp4"
    bad.write_bytes(bytes(range(256)) * 40)
    return {"short": make_video(d / "short.mp4", 8), "long": make_video(d / "long.mp4", 40, seed=1),
            "other": make_video(d / "other.mp4", 8, seed=2), "corrupt": bad}


def executions(caplog, key):
    return sum(1 for r in caplog.records if r.getMessage().startswith(f"executing job key={key}"))


def test_key_addresses_content_vocabulary_options_and_model(media, tiny_card, tmp_path):
    spec = JobSpec(str(media["short"]), VOCAB, str(tiny_card), OPTS)
    copy = shutil.copy(media["short"], tmp_path / "renamed.mp4")
    card_copy = shutil.copy(tiny_card, tmp_path / tiny_card.name)  # the name is the model name in results
    assert JobSpec(str(copy), VOCAB, str(card_copy), OPTS).key() == spec.key()
    # Options left at their defaults address the same result.
    assert JobSpec(str(copy), VOCAB, str(tiny_card), {**OPTS, "frame_stride": 1, "window": None}).key() == spec.key()
    others = [JobSpec(str(media["other"]), VOCAB, str(tiny_card), OPTS),
              JobSpec(str(media["short"]), VOCAB[:2], str(tiny_card), OPTS),
              JobSpec(str(media["short"]), VOCAB, str(tiny_card), {**OPTS, "frame_stride": 2}),
              JobSpec(str(media["short"]), VOCAB, "clipvis-convnext-b-lvis", OPTS)]
    keys = {o.key() for o in others}
    assert len(keys) == len(others) and spec.key() not in keys
    assert JobSpec.from_dict(spec.to_dict()).key() == spec.key()


def test_spec_rejects_bad_input_with_one_line(media, tiny_card):
    with pytest.raises(InputError, match="unknown inference option.*valid"):
        JobSpec(str(media["short"]), VOCAB, str(tiny_card), {"windw": 3})
    with pytest.raises(InputError, match="empty vocabulary"):
        JobSpec(str(media["short"]), [], str(tiny_card))
    with pytest.raises(InputError, match="media not found"):
        JobSpec("/nonexistent/clip.mp4", VOCAB, str(tiny_card)).key()
    with pytest.raises(InputError, match="misses the field 'checkpoint'"):
        JobSpec.from_dict({"media": "a.mp4", "vocabulary": VOCAB})


def test_run_job_equals_segmenter_and_executes_once(media, tiny_card, settings, caplog):
    caplog.set_level(logging.INFO, logger="clipvis.jobs")
    spec = JobSpec(str(media["short"]), VOCAB, str(tiny_card), OPTS)
    assert lookup(spec, settings) is None
    direct = get_segmenter(str(tiny_card)).segment(media["short"], VOCAB, SegmentOptions.from_dict(OPTS))
    got = run_job(spec, settings=settings)
    assert got.to_dict() == direct.to_dict() and len(got.tracks) > 0
    stored = settings.results_dir / f"{spec.key()}.json"
    mtime = stored.stat().st_mtime_ns
    assert run_job(JobSpec(str(media["short"]), VOCAB, str(tiny_card), OPTS), settings=settings).to_dict() == direct.to_dict()
    assert lookup(spec, settings).to_dict() == direct.to_dict()
    assert stored.stat().st_mtime_ns == mtime and executions(caplog, spec.key()) == 1
    assert [p.name for p in settings.results_dir.iterdir() if p.is_file()] == [stored.name]  # no temp files left


def test_concurrent_run_job_executes_once(media, tiny_card, settings, caplog):
    caplog.set_level(logging.INFO, logger="clipvis.jobs")
    spec = JobSpec(str(media["other"]), VOCAB, str(tiny_card), OPTS)
    results = []
    threads = [threading.Thread(target=lambda: results.append(run_job(spec, settings=settings))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 3 and all(r.to_dict() == results[0].to_dict() for r in results)
    assert executions(caplog, spec.key()) == 1


def test_submit_reports_progress_and_dedupes(media, tiny_card, settings, caplog):
    caplog.set_level(logging.INFO, logger="clipvis.jobs")
    spec = JobSpec(str(media["long"]), VOCAB, str(tiny_card), OPTS)
    h = submit(spec, settings=settings)
    assert submit(JobSpec(str(media["long"]), VOCAB, str(tiny_card), OPTS), settings=settings).id == h.id
    seen = []
    while not (st := h.status()).done:
        seen.append(st)
        time.sleep(0.05)
    tracks = h.wait(timeout=60)
    running = [s for s in seen if s.state == "PROGRESS"]
    assert running and all(s.frames_total == 40 for s in running)
    assert any(0 < s.frames_done < 40 and s.fps > 0 for s in running)
    assert JobHandle.from_id(h.id, settings).status().state == "SUCCESS"
    again = submit(spec, settings=settings)  # stored: nothing is queued
    assert again.id == spec.key() and again.wait().to_dict() == tracks.to_dict()
    assert executions(caplog, spec.key()) == 1


def test_cancel_stops_a_running_job(media, tiny_card, settings):
    spec = JobSpec(str(media["long"]), VOCAB[:1], str(tiny_card), OPTS)
    h = submit(spec, settings=settings)
    while h.status().frames_done < 2:
        assert not h.status().done
        time.sleep(0.02)
    h.cancel()
    with pytest.raises(JobCancelled):
        h.wait(timeout=30)
    st = h.status()
    assert st.state == "REVOKED" and lookup(spec, settings) is None


def test_time_limit_stops_a_job_between_frames(media, tiny_card, settings):
    spec = JobSpec(str(media["long"]), VOCAB[1:], str(tiny_card), OPTS)
    with pytest.raises(JobTimeout, match="CLIPVIS_JOB_TIME_LIMIT"):
        run_job(spec, settings=dataclasses.replace(settings, time_limit=0.0))
    assert lookup(spec, settings) is None


def test_oom_fallbacks_window_one_then_smaller(tiny_card):
    # What the CUDA OOM retries use (benchmarks/gpu_check.sh runs a real one on a GPU).
    from clipvis_core.jobs.runner import _fallbacks

    seg = get_segmenter(str(tiny_card))
    inf = seg.cfg.inference
    same, smaller = _fallbacks(SegmentOptions(frame_stride=2, window=6), seg)
    assert same == SegmentOptions(frame_stride=2, window=1)  # same resolution: the same outputs
    assert (smaller.window, smaller.min_size, smaller.max_size, smaller.frame_stride) == (
        1, int(inf.min_size * 0.75), int(inf.max_size * 0.75), 2)
    assert _fallbacks(SegmentOptions(window=1, min_size=400, max_size=800), seg) == \
        [SegmentOptions(window=1, min_size=300, max_size=600)]
    assert _fallbacks(SegmentOptions(min_size=0, window=4), seg) == [SegmentOptions(min_size=0, window=1)]
    assert _fallbacks(SegmentOptions(min_size=0, window=1), seg) == []


def test_oom_retries_in_order_then_gives_up(media, tiny_card, settings, caplog, monkeypatch):
    """The runner's retry loop on a real CPU segmenter whose first forwards raise CUDA's OOM error
    (no GPU here: the error type is what the loop keys on)."""
    import torch

    seg = get_segmenter(str(tiny_card))
    real, calls = seg.segment, []

    def segment(source, vocabulary, options, **kw):
        calls.append(options)
        if len(calls) <= fail[0]:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(source, vocabulary, options, **kw)

    monkeypatch.setattr(seg, "segment", segment)
    spec = JobSpec(str(media["short"]), VOCAB, str(tiny_card), {"min_size": 64, "window": 4})
    fail = [2]
    with caplog.at_level(logging.WARNING, logger="clipvis.jobs"):
        tracks = run_job(spec, settings=settings)
    assert [(o.window, o.min_size) for o in calls] == [(4, 64), (1, 64), (1, 48)]
    assert (tracks.options["window"], tracks.options["min_size"]) == (1, 48)
    assert sum("out of memory" in r.getMessage() for r in caplog.records) == 2
    calls.clear()
    fail = [3]
    with pytest.raises(torch.cuda.OutOfMemoryError):
        run_job(JobSpec(str(media["short"]), VOCAB, str(tiny_card), {"min_size": 60, "window": 4}), settings=settings)
    assert len(calls) == 3


def test_corrupt_video_fails_at_once_with_its_message(media, tiny_card, settings):
    h = submit(JobSpec(str(media["corrupt"]), VOCAB, str(tiny_card), OPTS), settings=settings)
    with pytest.raises(InputError, match="corrupt"):
        h.wait(timeout=60)
    st = h.status()
    assert st.state == "FAILURE" and st.error_type == "InputError" and "\n" not in st.error
    assert not any(settings.results_dir.glob("*.json"))


class _AuthHandler(http.server.SimpleHTTPRequestHandler):
    def _authorized(self):
        if self.headers.get("Authorization") != "Token s3cret":
            self.send_error(401)
            return False
        return True

    def do_HEAD(self):
        if self._authorized():
            super().do_HEAD()

    def do_GET(self):
        if self._authorized():
            super().do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture
def http_media(media):
    handler = lambda *a, **kw: _AuthHandler(*a, directory=str(media["short"].parent), **kw)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_url_media_with_auth_header(http_media, media, tiny_card, settings):
    url = f"{http_media}/short.mp4"
    with pytest.raises(InputError, match="HTTP 401.*auth"):
        JobSpec(url, VOCAB, str(tiny_card), OPTS).key()
    spec = JobSpec(url, VOCAB, str(tiny_card), OPTS, headers={"Authorization": "Token s3cret"})
    assert spec.key() == JobSpec(url, VOCAB, str(tiny_card), OPTS, headers={"Authorization": "Token s3cret"}).key()
    remote = run_job(spec, settings=settings)
    local = run_job(JobSpec(str(media["short"]), VOCAB, str(tiny_card), OPTS), settings=settings)
    assert remote.video.source == url
    assert [dataclasses.asdict(t) for t in remote.tracks] == [dataclasses.asdict(t) for t in local.tracks]
    assert not list((settings.cache_dir / "downloads").glob("*"))  # the temp download is gone


def test_cli_submit_status_wait_in_process(media, tiny_card, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CLIPVIS_RESULTS_DIR", str(tmp_path / "store"))
    out = tmp_path / "tracks.json"
    rc = main(["submit", str(media["short"]), "--checkpoint", str(tiny_card), "--class", "car, automobile",
               "--class", "person", "--min-size", "0", "--option", "detections=5", "-o", str(out)])
    job_id, path = capsys.readouterr().out.split()
    assert rc == 0 and path == str(out) and out.exists()
    assert main(["jobs", "status", job_id]) == 0 and capsys.readouterr().out.strip() == "SUCCESS"
    assert main(["jobs", "wait", job_id]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "store" / f"{job_id.split('-')[0]}.json")
    assert main(["jobs", "status", "not-a-job"]) == 2
    assert "not a clipvis job id" in capsys.readouterr().err
    assert main(["worker"]) == 2 and "CLIPVIS_BROKER_URL" in capsys.readouterr().err
