"""Learning rounds as job kinds, in-process: spec checks, one live job per kind and model line."""
import http.server
import threading
import time

import pytest

from clipvis_core.errors import InputError
from clipvis_core.jobs.learning import LearnJobSpec, submit_learning


class SlowLabelStudio(http.server.ThreadingHTTPServer):
    """Answers every request after ``delay`` seconds with a 404 (no such project)."""

    def __init__(self, delay: float):
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                time.sleep(delay)
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        threading.Thread(target=self.serve_forever, daemon=True).start()


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.delenv("CLIPVIS_BROKER_URL", raising=False)
    monkeypatch.setenv("CLIPVIS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("CLIPVIS_MODELS_DIR", str(tmp_path / "models"))
    return tmp_path


@pytest.mark.parametrize("kw, hint", [({"kind": "train"}, "use one of finetune, adapt"),
                                      ({"project": "abc"}, "numeric Label Studio project id"),
                                      ({"ls_url": ""}, "Label Studio URL"),
                                      ({"held_out": 1.0}, "held-out share"),
                                      ({"config": {"no_such_key": 1}}, "training config")])
def test_bad_specs_fail_at_submit(env, kw, hint):
    args = {"kind": "finetune", "line": "l", "project": 3, "ls_url": "http://127.0.0.1:1", **kw}
    with pytest.raises(InputError, match=hint):
        LearnJobSpec(**args)


def test_one_live_job_per_kind_and_line_then_a_new_round(env):
    ls = SlowLabelStudio(delay=1.5)
    spec = LearnJobSpec(kind="adapt", line="ls-x-p3", project=3, ls_url=ls.url, ls_token="t0ken1")
    first = submit_learning(spec)
    again = submit_learning(LearnJobSpec(**{**spec.to_dict(), "ls_token": "t0ken2"}))
    other = submit_learning(LearnJobSpec(**{**spec.to_dict(), "kind": "finetune"}))
    assert again.id == first.id and other.id != first.id  # same line and kind: the live job
    with pytest.raises(InputError, match="project 3 not found"):  # the job's error, one line
        first.wait(timeout=60)
    later = submit_learning(spec)
    assert later.id != first.id  # the previous round ended: a new one starts
    with pytest.raises(InputError):
        later.wait(timeout=60)
    other.cancel()
    ls.shutdown()
