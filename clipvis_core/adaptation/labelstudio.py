"""Label Studio annotations -> labelled instances: brush masks, image rectangles and video rectangles.

Per task the latest annotation that was not cancelled counts (as for training). ``brushlabels``
give masks; ``rectanglelabels`` (image) and ``videorectangle`` (video) give boxes, which only the
classifier can learn from. Coordinates are percentages of the media size. A video rectangle's
keyframes are its observations: frame ``time`` (seconds) times the container's frame rate when
Label Studio stored it, else its 1-based ``frame``. One region (result ``id``) is one instance; a
region carrying several different labels is a conflict and is left out.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import InputError
from ..training.data import labelstudio as ls
from .examples import Example, ExampleSet, Observation, merge

BRUSH, RECT, VIDEO_RECT = "brushlabels", "rectanglelabels", "videorectangle"


def _labels(value: dict, kind: str) -> list[str]:
    return list(value.get(kind) or value.get("labels") or [])


def _media(task: dict, where: str, video: bool) -> str:
    data = task.get("data") or {}
    key = "video" if video else "image"
    if isinstance(data.get(key), str):
        return data[key]
    return ls._image_url(task, where)


def _video_info(path: Path, where: str) -> tuple[int, int, float]:
    import cv2

    cap = cv2.VideoCapture(str(path))
    try:
        h, w = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)), int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
    finally:
        cap.release()
    if not (h and w):
        raise InputError(f"{where}: cannot read video {path}: re-encode it (ffmpeg -i IN -c:v libx264 out.mp4)")
    return h, w, fps


def _pct_box(v: dict, w: int, h: int) -> tuple[float, float, float, float]:
    return (float(v["x"]) * w / 100, float(v["y"]) * h / 100, float(v["width"]) * w / 100, float(v["height"]) * h / 100)


def examples_from_tasks(tasks: list, name: str, resolve) -> ExampleSet:
    """``resolve(url, where) -> local path`` finds each task's media (as training's export reader)."""
    keyed: dict = {}
    order: list[str] = []
    for task in tasks:
        ann = ls._latest(task)
        if ann is None:
            continue
        where = f"{name}: task {task.get('id')}"
        results = [r for r in ann["result"] if r.get("type") in (BRUSH, RECT, VIDEO_RECT)]
        if not results:
            continue
        video = any(r["type"] == VIDEO_RECT for r in results)
        path = Path(resolve(_media(task, where, video), where))
        fps, size = 0.0, None
        if video:
            *size, fps = _video_info(path, where)
        for r in results:
            value = r.get("value") or {}
            labels = _labels(value, r["type"])
            order += labels
            if r["type"] == VIDEO_RECT:
                h, w = size
                obs = []
                for k in value.get("sequence") or []:
                    t = round(float(k["time"]) * fps) if k.get("time") is not None and fps else int(k.get("frame", 1)) - 1
                    obs.append(Observation((str(path), max(t, 0)), None, _pct_box(k, w, h)))
            else:
                try:
                    h, w = int(r["original_height"]), int(r["original_width"])
                except (KeyError, TypeError, ValueError):
                    raise InputError(f"{where}: result {r.get('id')} lacks original_width/original_height") from None
                if r["type"] == BRUSH:
                    if not isinstance(value.get("rle"), list):
                        raise InputError(f"{where}: brush result {r.get('id')} has no 'rle' list: re-export in JSON format")
                    obs = [Observation(str(path), {"brush_rle": value["rle"]})]
                else:
                    obs = [Observation(str(path), None, _pct_box(value, w, h))]
            ident = (task.get("id"), r.get("id") or f"#{len(keyed)}")
            seen, ex = keyed.setdefault(ident, ([], Example("", [], h, w, f"{where} ({path.name})", video)))
            # Several labels on one region count as disagreeing labels for that instance.
            seen.extend(labels if labels else [None])
            ex.observations.extend(o for o in obs if o.box is None or (o.box[2] > 0 and o.box[3] > 0))
    return merge(keyed, order, ExampleSet([]))


def open_export(path: Path, tasks: list, images_dir: str | None) -> ExampleSet:
    resolve = ls.export_resolver(path, images_dir, ls.LabelStudioClient.from_env())
    return examples_from_tasks(tasks, path.name, resolve)


def open_project(project: str) -> ExampleSet:
    if not project.isdigit():
        raise InputError(f"labelstudio:{project}: use the numeric project id, e.g. labelstudio:3")
    client = ls.LabelStudioClient.from_env()
    if client is None:
        raise InputError("labelstudio:PROJECT needs LABEL_STUDIO_URL (e.g. http://localhost:8080) and LABEL_STUDIO_API_KEY")
    return examples_from_tasks(client.export(int(project)), f"labelstudio:{project}", client.download)
