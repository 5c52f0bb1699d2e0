"""A small Label Studio API client: read a project's config and tasks, create predictions."""
from __future__ import annotations

from typing import Iterator

import requests

from clipvis_core.errors import ClipvisError, InputError

from .media import LabelStudioAuth

PAGE_SIZE = 100


class LabelStudioAPIError(ClipvisError):
    """Label Studio answered an API call with an error."""


class LabelStudioClient:
    def __init__(self, url: str, token: str | None, auth: LabelStudioAuth | None = None):
        if not url:
            raise InputError("no Label Studio URL: pass --url or set LABEL_STUDIO_URL (e.g. http://127.0.0.1:8080)")
        self.url = url.rstrip("/")
        self.auth = auth or LabelStudioAuth(self.url, token)
        self.session = requests.Session()

    def request(self, method: str, path: str, **kwargs) -> dict | list:
        for attempt in range(2):
            try:
                r = self.session.request(method, self.url + path, headers=self.auth.header(refresh=attempt > 0),
                                         timeout=(5, 60), **kwargs)
            except requests.RequestException as e:
                raise LabelStudioAPIError(f"cannot reach Label Studio at {self.url}: {e.__class__.__name__}") from None
            if r.status_code == 401 and attempt == 0 and self.auth.is_personal_access_token:
                continue  # the short-lived access token expired: refresh once
            break
        if r.status_code in (401, 403):
            raise LabelStudioAPIError(f"Label Studio refused {method} {path} (HTTP {r.status_code}): check the API "
                                      "token (LABEL_STUDIO_API_KEY / --token; legacy tokens need "
                                      "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN=true)")
        if r.status_code == 404:
            raise LabelStudioAPIError(f"Label Studio has no {path} (HTTP 404): check the project / task id")
        if r.status_code >= 400:
            raise LabelStudioAPIError(f"Label Studio answered {method} {path} with HTTP {r.status_code}: {r.text[:200]}")
        return r.json() if r.content else {}

    def project(self, project_id: int) -> dict:
        return self.request("GET", f"/api/projects/{int(project_id)}")

    def tasks(self, project_id: int) -> Iterator[dict]:
        """Every task of a project, page by page (with their predictions' model versions)."""
        page, seen = 1, 0
        while True:
            body = self.request("GET", "/api/tasks", params={"project": int(project_id), "page": page,
                                                             "page_size": PAGE_SIZE, "fields": "all"})
            tasks = body.get("tasks", []) if isinstance(body, dict) else body
            yield from tasks
            seen += len(tasks)
            total = body.get("total", seen) if isinstance(body, dict) else seen
            if not tasks or seen >= total:
                return
            page += 1

    def predictions(self, task_id: int) -> list[dict]:
        body = self.request("GET", "/api/predictions", params={"task": int(task_id)})
        return body if isinstance(body, list) else body.get("results", [])

    def create_prediction(self, task_id: int, prediction: dict) -> dict:
        payload = {"task": int(task_id), "result": prediction["result"], "score": prediction.get("score"),
                   "model_version": prediction["model_version"]}
        return self.request("POST", "/api/predictions", json=payload)
