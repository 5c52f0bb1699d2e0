"""``clipvis labelstudio prelabel``: queue every task of a project, push each prediction as it lands."""
from __future__ import annotations

import logging
import sys
from concurrent.futures import FIRST_COMPLETED, wait
from dataclasses import dataclass, field

from clipvis_core.errors import ClipvisError

from .model import ClipvisBackend, TaskJob
from .push import LabelStudioClient
from .settings import BackendSettings

log = logging.getLogger("clipvis.labelstudio")


@dataclass
class PrelabelReport:
    tasks: int = 0
    skipped: int = 0  # already had a prediction of this model version
    pushed: int = 0
    failed: dict[int, str] = field(default_factory=dict)  # task id -> one-line error


def _has_version(client: LabelStudioClient, task: dict, version: str) -> bool:
    preds = task.get("predictions")
    if preds and all(isinstance(p, dict) for p in preds):
        return any(p.get("model_version") == version for p in preds)
    if preds or task.get("total_predictions"):
        return any(p.get("model_version") == version for p in client.predictions(task["id"]))
    return False


def prelabel(project_id: int, settings: BackendSettings, force: bool = False, progress: bool = True) -> PrelabelReport:
    client = LabelStudioClient(settings.ls_url, settings.api_key)
    project = client.project(project_id)
    model = ClipvisBackend(project.get("label_config"), settings, ls_url=client.url, access_token=settings.api_key)
    report = PrelabelReport()
    jobs: list[TaskJob] = []
    for task in client.tasks(project_id):
        report.tasks += 1
        if not force and _has_version(client, task, model.model_version):
            report.skipped += 1
            continue
        jobs.append(model.start(task))
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(jobs), unit="task", desc=f"project {project_id}", file=sys.stderr)
    pending = list(jobs)
    while pending:
        wait([f for j in pending for _, f in j.parts if not f.done()], return_when=FIRST_COMPLETED)
        for job in [j for j in pending if j.done]:
            pending.remove(job)
            task_id = job.task["id"]
            try:
                client.create_prediction(task_id, model.prediction(job))
                report.pushed += 1
            except ClipvisError as e:
                report.failed[task_id] = str(e)
                log.error("task %s: %s", task_id, e)
            except Exception as e:  # one broken task must not stop the project's other pushes
                report.failed[task_id] = f"{type(e).__name__}: {e}"
                log.exception("task %s failed", task_id)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(pushed=report.pushed, failed=len(report.failed))
    if bar is not None:
        bar.close()
    return report
