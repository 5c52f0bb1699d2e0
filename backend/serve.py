"""The WSGI app (label-studio-ml's Flask app around ``ClipvisBackend``) and its production server.

label-studio-ml keeps one model object per process and re-creates it on every ``/setup``; our
manager keeps that cheap, reports our ``model_version`` (checkpoint + vocabulary hash) instead of
``INITIAL``, predicts with the config each ``/predict`` carries, and turns task-creation
webhooks into queued jobs instead of one training process per event.
"""
from __future__ import annotations

import logging

from clipvis_core.errors import ClipvisError

from .lsml import LabelStudioMLManager, ModelWrapper, api
from .model import ClipvisBackend
from .settings import BackendSettings

log = logging.getLogger("clipvis.labelstudio")


class ClipvisManager(LabelStudioMLManager):
    @classmethod
    def fetch(cls, project=None, label_config=None, force_reload=False, **kwargs):
        kwargs.update(cls.init_kwargs)
        kwargs.pop("model_version", None)  # ours derives from checkpoint + labels, not from LS
        model = cls.model_class(label_config=label_config, **kwargs)
        cls._current_model = ModelWrapper(model=model, model_version=model.model_version)
        return cls._current_model

    @classmethod
    def _model_for(cls, label_config: str | None) -> ClipvisBackend:
        if not cls._current_model:
            raise ValueError("the backend is not set up: connect it from Label Studio (POST /setup) first")
        model = cls._current_model.model
        if label_config and label_config != model.label_config:
            # Another project's config: build its (cheap) model instead of using the last /setup's.
            model = cls.model_class(label_config=label_config, hostname=model.hostname,
                                    access_token=model.access_token, **cls.init_kwargs)
        return model

    @classmethod
    def predict(cls, tasks, project=None, label_config=None, force_reload=False, try_fetch=True, **kwargs):
        model = cls._model_for(label_config)
        return model.predict(tasks, **kwargs), ModelWrapper(model=model, model_version=model.model_version)

    @classmethod
    def webhook(cls, event, data):
        if event != "TASKS_CREATED":
            return {"event": event, "status": "ignored"}  # pre-annotation only: nothing to train
        project = data.get("project") if isinstance(data.get("project"), dict) else {}
        try:
            model = cls._model_for(project.get("label_config"))
            queued = model.enqueue([t for t in data.get("tasks") or [] if isinstance(t, dict) and "id" in t])
        except (ClipvisError, ValueError) as e:
            log.warning("webhook %s not handled: %s", event, e)
            return {"event": event, "status": "error", "error": str(e)}
        return {"event": event, "status": "queued", "tasks": queued}


def create_app(settings: BackendSettings | None = None):
    """label-studio-ml's Flask app serving ``ClipvisBackend`` with ``settings`` (default: env)."""
    settings = settings or BackendSettings.from_env()
    api._manager = ClipvisManager()  # the routes call the module-level manager
    return api.init_app(ClipvisBackend, model_dir=str(settings.cache_dir / "ml"), settings=settings)


def serve(settings: BackendSettings, host: str = "127.0.0.1", port: int = 9090, threads: int = 8) -> None:
    """Run the app under gunicorn: one process (jobs, dedupe and pushes are per process), N threads."""
    from gunicorn.app.base import BaseApplication

    app = create_app(settings)

    class Server(BaseApplication):
        def load_config(self):
            for key, value in {
                "bind": f"{host}:{port}", "workers": 1, "worker_class": "gthread", "threads": threads,
                # /predict holds a request for up to the budget: keep the worker heartbeat above it.
                "timeout": int(settings.predict_budget_s) + 60, "graceful_timeout": 10,
                "accesslog": "-", "errorlog": "-", "loglevel": "info",
                "control_socket_disable": True,  # no ~/.gunicorn socket shared between instances
            }.items():
                self.cfg.set(key, value)

        def load(self):
            return app

    Server().run()
