"""Per-project state: which Label Studio origin a project is pinned to, its token, its model.

``LABEL_STUDIO_URL`` pins every project. Without it, the first ``/setup`` of a project pins the
``hostname`` it names; a later ``/setup`` naming another origin is refused, so a caller cannot
move where the backend sends the project's token or fetches its media from.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from clipvis_core.errors import ClipvisError, InputError

from .media import MediaRefused, origin
from .model import ClipvisBackend
from .settings import BackendSettings

log = logging.getLogger("clipvis.labelstudio")


class HostRefused(ClipvisError):
    """A /setup naming another Label Studio origin than the one the project is pinned to (403)."""


class NotSetUp(ClipvisError):
    """A request for a project that no /setup has configured (409)."""


@dataclass
class Pin:
    url: str | None  # the project's Label Studio URL (None: relative media URLs are refused)
    token: str | None
    model: ClipvisBackend | None = None


def project_key(project) -> str:
    """Label Studio names a project ``"<id>.<created timestamp>"`` in /setup and /predict and
    ``{"id": ...}`` in webhooks: the id is the key."""
    if isinstance(project, dict):
        project = project.get("id")
    key = str(project if project is not None else "").split(".")[0].strip()
    if not key.isdigit():
        raise InputError(f"'project' must name a Label Studio project id (got {project!r})")
    return key


class Projects:
    def __init__(self, settings: BackendSettings, learner=None):
        self.settings = settings
        self.learner = learner  # backend.learning.Learner when CLIPVIS_LEARN is on
        self._lock = threading.Lock()
        self._pins: dict[str, Pin] = {}

    def setup(self, project, label_config, hostname, token) -> ClipvisBackend:
        key = project_key(project)
        url = self._pinned_url(key, hostname)
        model = ClipvisBackend(label_config, self.settings, ls_url=url, access_token=token or None,
                               line=self.line(key, url))
        with self._lock:
            current = self._pins.get(key)
            if current is not None and current.url and url and origin(current.url) != origin(url):
                # a concurrent /setup pinned another host first
                raise HostRefused(f"project {key} was just pinned to {current.url}; refusing {hostname}")
            self._pins[key] = Pin(url, token or None, model)
        return model

    def _pinned_url(self, key: str, hostname) -> str | None:
        if self.settings.ls_url:
            return self.settings.ls_url  # the operator's setting: /setup's hostname is never used
        with self._lock:
            pin = self._pins.get(key)
        if hostname in (None, ""):
            return pin.url if pin else None
        if not isinstance(hostname, str):
            raise InputError("'hostname' must be the Label Studio URL as a string")
        try:
            wanted = origin(hostname)
        except MediaRefused as e:
            raise InputError(f"'hostname' is not a usable Label Studio URL: {e}") from None
        if pin is not None and pin.url is not None and origin(pin.url) != wanted:
            raise HostRefused(
                f"project {key} is pinned to Label Studio at {origin(pin.url)}; /setup from {wanted} refused: "
                "set LABEL_STUDIO_URL to the right host and restart the backend to move it")
        return hostname.rstrip("/")

    def model(self, project, label_config) -> ClipvisBackend:
        """The project's model for ``label_config`` (a new one when the config changed)."""
        key = project_key(project)
        with self._lock:
            pin = self._pins.get(key)
        if pin is None:
            if not self.settings.ls_url:
                raise NotSetUp(f"project {key} is not set up: connect the backend from Label Studio "
                               "(Project > Settings > Model) or set LABEL_STUDIO_URL")
            pin = Pin(self.settings.ls_url, None)
        if pin.model is not None and (not label_config or label_config == pin.model.label_config):
            return pin.model
        model = ClipvisBackend(label_config, self.settings, ls_url=pin.url, access_token=pin.token,
                               line=self.line(key, pin.url))
        with self._lock:
            if self._pins.get(key) is pin or key not in self._pins:
                self._pins[key] = Pin(pin.url, pin.token, model)
        return model

    def line(self, key: str, url: str | None) -> str | None:
        """The project's model line (created from the configured checkpoint on first use), or None
        when the backend does not learn from corrections."""
        if self.learner is None or not self.learner.settings.enabled:
            return None
        from .learning import line_name

        name = line_name(url, key)
        self.learner.ensure_line(name)
        return name

    def credentials(self, project) -> tuple[str | None, str | None]:
        """(pinned Label Studio URL, API token) for reading the project's annotations."""
        key = project_key(project)
        with self._lock:
            pin = self._pins.get(key)
        url = self.settings.ls_url or (pin.url if pin else None)
        return url, self.settings.api_key or (pin.token if pin else None)

    def versions(self) -> list[str]:
        with self._lock:
            return sorted({p.model.model_version for p in self._pins.values() if p.model is not None})
