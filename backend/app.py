"""The HTTP API Label Studio calls, on Flask 3: ``/health``, ``/setup``, ``/predict``, ``/webhook``.

Every route but ``/health`` (and ``/``) needs HTTP basic auth when ``BASIC_AUTH_USER`` /
``BASIC_AUTH_PASS`` are set. Errors are JSON ``{"detail": "<one line>"}`` with a status that
says whose fault it is (400 body, 401 credentials, 403 pinned host, 409 not set up, 413 too big,
422 unsupported config, 500 ours), and the same line as the HTTP reason phrase (what Label Studio
shows); tracebacks go to the server log only.
"""
from __future__ import annotations

import hmac
import logging

from flask import Flask, jsonify, request
from werkzeug.exceptions import HTTPException

from clipvis_core.errors import ClipvisError, InputError

from .learning import EVENTS as LEARN_EVENTS
from .learning import Learner, LearningOff, LearnSettings
from .model import ConfigTooLarge
from .projects import HostRefused, NotSetUp, Projects, project_key
from .settings import BackendSettings
from .strategies import ConfigError

log = logging.getLogger("clipvis.labelstudio")

OPEN_PATHS = ("/health", "/")
MAX_BODY_BYTES = 64 << 20  # /predict batches carry task data, not media
STATUS = ((ConfigTooLarge, 413), (ConfigError, 422), (HostRefused, 403), (NotSetUp, 409), (LearningOff, 409),
          (InputError, 400))


def reason_phrase(detail: str, limit: int = 400) -> str:
    """``detail`` as an HTTP reason phrase (printable ASCII, one line). Label Studio reports a failed
    backend call as ``str(requests.HTTPError)``, "<status> Client Error: <reason> for url: ...",
    and never reads the body: the reason phrase is the only text of ours its UI shows. The UI
    renders it as HTML, so tags become [Video]: visible, and config text cannot inject markup."""
    text = " ".join("".join(c if " " <= c <= "~" else "?" for c in line) for line in detail.splitlines())
    text = text.replace("<", "[").replace(">", "]")
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _error(status: int, detail: str, headers: dict | None = None):
    response = jsonify({"detail": detail})
    response.status = f"{status} {reason_phrase(detail)}" if detail else status
    response.headers.update(headers or {})
    return response


def _body() -> dict:
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise InputError("the request body must be a JSON object (Content-Type: application/json)")
    return data


def _authorized(settings: BackendSettings) -> bool:
    auth = request.authorization
    if auth is None or auth.type != "basic":
        return False
    # Both compared in constant time, and both always compared: no early exit to time.
    user_ok = hmac.compare_digest((auth.username or "").encode(), settings.basic_auth_user.encode())
    pass_ok = hmac.compare_digest((auth.password or "").encode(), settings.basic_auth_pass.encode())
    return user_ok & pass_ok


def create_app(settings: BackendSettings | None = None, learn: LearnSettings | None = None) -> Flask:
    settings = settings or BackendSettings.from_env()
    learner = Learner(learn or LearnSettings.from_env(), settings.checkpoint, (settings.min_size, settings.max_size))
    projects = Projects(settings, learner)
    app = Flask("clipvis.labelstudio")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES

    @app.before_request
    def check_credentials():
        if settings.auth_enabled and request.path not in OPEN_PATHS and not _authorized(settings):
            return _error(401, "missing or wrong credentials: set the backend's BASIC_AUTH_USER / BASIC_AUTH_PASS "
                               "in Label Studio's model settings (Authentication method: Basic Auth)",
                          {"WWW-Authenticate": 'Basic realm="clipvis"'})
        return None

    @app.errorhandler(HTTPException)
    def http_error(e: HTTPException):
        return _error(e.code or 500, e.description or e.name)

    @app.errorhandler(Exception)
    def any_error(e: Exception):
        for cls, status in STATUS:
            if isinstance(e, cls):  # the caller's fault: one line, no traceback
                log.warning("%s %s refused (HTTP %d): %s", request.method, request.path, status, e)
                return _error(status, str(e))
        if isinstance(e, ClipvisError):  # ours, e.g. a missing checkpoint: the message says the fix
            log.error("%s %s: %s", request.method, request.path, e)
            return _error(500, str(e))
        log.exception("%s %s failed", request.method, request.path)
        return _error(500, f"internal error ({type(e).__name__}): see the backend log")

    @app.get("/")
    @app.get("/health")
    def health():
        return jsonify({"status": "UP", "model_class": "ClipvisBackend"})

    @app.post("/setup")
    def setup():
        data = _body()
        model = projects.setup(data.get("project"), data.get("schema"), data.get("hostname"),
                               data.get("access_token"))
        return jsonify({"model_version": model.model_version})

    @app.post("/predict")
    def predict():
        data = _body()
        tasks = data.get("tasks")
        if not isinstance(tasks, list):
            raise InputError("'tasks' must be a list of Label Studio tasks")
        model = projects.model(data.get("project"), data.get("label_config"))
        results, errors = model.predict(tasks)
        return jsonify({"results": results, "model_version": model.model_version, "errors": errors})

    @app.post("/webhook")
    def webhook():
        data = _body()
        event = data.get("action")
        if event in LEARN_EVENTS:
            return learn(event, data.get("project") if isinstance(data.get("project"), dict) else {})
        if event != "TASKS_CREATED":
            return jsonify({"event": event, "status": "ignored"}), 201  # pre-annotation only: nothing to train
        project = data.get("project") if isinstance(data.get("project"), dict) else {}
        tasks = data.get("tasks") or []
        if not isinstance(tasks, list):
            raise InputError("'tasks' must be a list of Label Studio tasks")
        model = projects.model(project, project.get("label_config"))
        queued = model.enqueue([t for t in tasks if isinstance(t, dict) and "id" in t])
        return jsonify({"event": event, "status": "queued", "tasks": queued}), 201

    def learn(event: str, project: dict):
        """Annotation events and "Start training": schedule a learning round, return at once."""
        if not learner.settings.enabled:
            if event == "START_TRAINING":
                raise LearningOff("this backend does not learn from corrections: start it with CLIPVIS_LEARN=1")
            return jsonify({"event": event, "status": "ignored",
                            "detail": "learning from corrections is off (CLIPVIS_LEARN=1 turns it on)"}), 201
        model = projects.model(project, project.get("label_config"))
        key = project_key(project)
        url, token = projects.credentials(project)
        learner.schedule(key, model.line, url, token, model.targets, immediate=event == "START_TRAINING")
        body = {"event": event, "line": model.line, "model_version": model.model_version, **learner.status(key)}
        if event == "START_TRAINING" and body["jobs"]:
            body["job"] = next(iter(body["jobs"].values()))["id"]  # Label Studio polls /job_status with it
        return jsonify(body), 201

    @app.route("/is_training", methods=["GET", "POST"])
    def is_training():
        project = request.args.get("project") or (request.get_json(silent=True) or {}).get("project")
        key = project_key(project)
        body = {"project": key, **learner.status(key)}
        url = projects.credentials(key)[0]
        line = projects.line(key, url) if url else None
        if line:
            from clipvis_core.versions import ModelLine

            body["line"], body["current"] = line, ModelLine.open(line).current().version
        return jsonify(body)

    @app.post("/job_status")
    def job_status():
        state = learner.job_status(str(_body().get("job") or ""))
        if state is None:
            return _error(410, "no such learning job in this backend process")
        return jsonify({"job_status": state})

    @app.route("/versions", methods=["GET", "POST"])
    def versions():
        return jsonify({"versions": projects.versions()})

    return app
