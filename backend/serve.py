"""The production server: the Flask app (``backend.app``) under gunicorn, on one process.

Jobs, request de-duplication, project pins and deferred pushes live in the process, so it runs
one worker with N threads. It refuses to listen beyond loopback without credentials.
"""
from __future__ import annotations

import ipaddress
import logging

from clipvis_core.errors import InputError

from .app import create_app
from .settings import BackendSettings

log = logging.getLogger("clipvis.labelstudio")

__all__ = ["create_app", "serve", "check_exposure"]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything


def check_exposure(settings: BackendSettings, host: str, allow_unauthenticated: bool) -> None:
    """Anyone who reaches the port can run jobs and push predictions: beyond loopback, only
    with credentials (or an explicit opt-out for a trusted network)."""
    if settings.auth_enabled:
        return
    if is_loopback(host):
        log.warning("no BASIC_AUTH_USER / BASIC_AUTH_PASS: every local user and process can call the backend")
        return
    if not allow_unauthenticated:
        raise InputError(f"refusing to serve on {host} without authentication: set BASIC_AUTH_USER and "
                         "BASIC_AUTH_PASS (and the same under Basic Auth in Label Studio's model settings), "
                         "or pass --allow-unauthenticated on a trusted network")
    log.warning("serving on %s WITHOUT authentication (--allow-unauthenticated)", host)


LOG_FORMAT = "[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s"  # gunicorn's, plus the logger


def log_to_stderr(level: int = logging.INFO) -> None:
    """Show clipvis' info lines (``pushed prediction for task N``, refused requests) beside gunicorn's.
    gunicorn configures only its own loggers; without a handler Python prints warnings and up only."""
    root = logging.getLogger("clipvis")
    if not any(getattr(h, "clipvis_serve", False) for h in root.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(LOG_FORMAT, "%Y-%m-%d %H:%M:%S %z"))
        handler.clipvis_serve = True
        root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False  # once, even when the host process also logs the root logger


def serve(settings: BackendSettings, host: str = "127.0.0.1", port: int = 9090, threads: int = 8,
          allow_unauthenticated: bool = False) -> None:
    """Run the app under gunicorn: one process (jobs, dedupe and pushes are per process), N threads."""
    from gunicorn.app.base import BaseApplication

    log_to_stderr()
    check_exposure(settings, host, allow_unauthenticated)
    app = create_app(settings)

    class Server(BaseApplication):
        def load_config(self):
            for key, value in {
                "bind": f"[{host}]:{port}" if ":" in host else f"{host}:{port}", "workers": 1,
                "worker_class": "gthread", "threads": threads,
                # /predict holds a request for up to the budget: keep the worker heartbeat above it.
                "timeout": int(settings.predict_budget_s) + 60, "graceful_timeout": 10,
                "accesslog": "-", "errorlog": "-", "loglevel": "info",
                "control_socket_disable": True,  # no ~/.gunicorn socket shared between instances
            }.items():
                self.cfg.set(key, value)

        def load(self):
            return app

    Server().run()
