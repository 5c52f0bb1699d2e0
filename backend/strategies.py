"""Labeling-config strategies: one small class per control tag.

Each strategy finds the controls of its kind in a parsed labeling config (``Target``s: where
results go, which task field holds the media, the label vocabulary) and turns segmentation
tracks into that tag's Label Studio regions.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from xml.etree import ElementTree

import cv2
import numpy as np

from clipvis_core.errors import InputError
from clipvis_core.keyframes import DEFAULT_TOLERANCE, parse_tolerance, sparse_sequence
from clipvis_core.tracks import VideoTracks, decode_mask
from clipvis_core.vocabulary import Vocabulary

from .brush import mask_to_rle

KEYFRAME_TOLERANCE_FIELD = "clipvis_keyframe_tolerance"  # task data key: per-task keyframe tolerance
SUPPORTED_TAGS = (
    "<Video> + <VideoRectangle> + <Labels>",
    "<Image> + <BrushLabels>",
    "<Image> + <RectangleLabels>",
    "<Image> + <PolygonLabels>",
)


LS_DEFAULT_FRAMERATE = "24"  # <Video framerate> when the config does not set one


class ConfigError(InputError):
    """A labeling config this backend cannot pre-annotate."""


@dataclass(frozen=True)
class Target:
    """One control to fill: results go ``from_name`` -> ``to_name``; media is ``task.data[data_key]``."""

    strategy: "type[Strategy]"
    from_name: str
    to_name: str
    data_key: str
    labels: tuple[str, ...]  # Label Studio label values, in vocabulary order
    prompts: tuple[str, ...]  # vocabulary entries ("car, automobile" = synonyms)
    # The object tag's `framerate` attribute ("25", or "$fps" from task data): Label Studio
    # numbers video frames at this rate, not at the file's.
    frame_rate: str = LS_DEFAULT_FRAMERATE

    @property
    def kind(self) -> str:
        return self.strategy.kind

    @property
    def vocabulary(self) -> Vocabulary:
        return Vocabulary.from_names(self.prompts)

    def ls_fps(self, task_data: dict | None = None) -> float:
        """Label Studio's frame rate for this task, resolved the way its editor does."""
        raw = self.frame_rate
        if raw.startswith("$"):
            raw = str((task_data or {}).get(raw[1:], ""))
        try:
            fps = float(raw)
        except ValueError:
            return float(LS_DEFAULT_FRAMERATE)
        if not math.isfinite(fps) or fps <= 0:
            return float(LS_DEFAULT_FRAMERATE)
        return 1.0 / fps if fps < 1 else fps

    def regions(self, tracks: VideoTracks, frames_count: int | None = None, task_data: dict | None = None,
                keyframe_tolerance: float = DEFAULT_TOLERANCE) -> list[dict]:
        return self.strategy().regions(self, tracks, frames_count, task_data, keyframe_tolerance)


def _vocabulary(label_attrs: dict[str, dict]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    labels, prompts = [], []
    for value, attrs in label_attrs.items():
        labels.append(value)
        # predicted_values lists the prompt synonyms; without it the label itself is the prompt.
        prompts.append((attrs.get("predicted_values") or value).strip())
    return tuple(labels), tuple(prompts)


def _js_round(x: float) -> int:
    # Label Studio's editor rounds like JavaScript's Math.round (halves up), not like round().
    return math.floor(x + 0.5)


def _percent(v: float, size: int) -> float:
    return float(v) * 100.0 / size


class Strategy:
    control = ""  # control tag type
    obj = ""  # object tag type it must point at
    kind = "image"  # media kind the segmenter gets

    @classmethod
    def targets(cls, parsed: dict, objects: dict[str, dict] | None = None) -> list[Target]:
        out = []
        for name, info in parsed.items():
            if info["type"] != cls.control or len(info["inputs"]) != 1 or info["inputs"][0]["type"] != cls.obj:
                continue
            attrs = cls.label_attrs(parsed, name, info)
            if not attrs:
                raise ConfigError(
                    f'<{cls.control} name="{name}"> has no labels: add <Label value="..."/> entries '
                    f"(the class names to detect){cls.labels_hint}"
                )
            labels, prompts = _vocabulary(attrs)
            Vocabulary.from_names(prompts)  # a blank synonym fails at /setup, not at /predict
            to_name = info["to_name"][0]
            rate = (objects or {}).get(to_name, {}).get("framerate") or LS_DEFAULT_FRAMERATE
            out.append(Target(cls, name, to_name, info["inputs"][0]["value"], labels, prompts, rate))
        return out

    labels_hint = ""

    @classmethod
    def label_attrs(cls, parsed: dict, name: str, info: dict) -> dict[str, dict]:
        return info.get("labels_attrs") or {}

    def regions(self, target: Target, tracks: VideoTracks, frames_count: int | None, task_data=None,
                keyframe_tolerance: float = DEFAULT_TOLERANCE) -> list[dict]:
        w, h = tracks.video.width, tracks.video.height
        out = []
        for tr in tracks.tracks:
            if not tr.boxes or tr.boxes[0] is None:
                continue
            value = self.value(tr, w, h)
            if value is None:
                continue
            value[self.control.lower()] = [target.labels[tr.category_id]]
            out.append({
                "id": f"clipvis-{tr.id}", "from_name": target.from_name, "to_name": target.to_name,
                "type": self.control.lower(), "original_width": w, "original_height": h,
                "image_rotation": 0, "score": float(tr.score), "value": value,
            })
        return out

    def value(self, track, width: int, height: int) -> dict | None:
        raise NotImplementedError


class RectangleStrategy(Strategy):
    control, obj = "RectangleLabels", "Image"

    def value(self, track, width, height):
        x, y, w, h = track.boxes[0]
        return {"x": _percent(x, width), "y": _percent(y, height), "width": _percent(w, width),
                "height": _percent(h, height), "rotation": 0}


class BrushStrategy(Strategy):
    control, obj = "BrushLabels", "Image"

    def value(self, track, width, height):
        return {"format": "rle", "rle": mask_to_rle(decode_mask(track.masks[0]))}


class PolygonStrategy(Strategy):
    control, obj = "PolygonLabels", "Image"

    def value(self, track, width, height):
        mask = decode_mask(track.masks[0]).astype(np.uint8)
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        if not contours:
            return None
        contour = max(contours, key=cv2.contourArea)
        # Simplify to ~0.5 % of the outline length: annotators edit vertices by hand.
        poly = cv2.approxPolyDP(contour, 0.005 * cv2.arcLength(contour, True), True).reshape(-1, 2)
        if len(poly) < 3:
            x, y, w, h = track.boxes[0]
            poly = np.array([[x, y], [x + w, y], [x + w, y + h], [x, y + h]])
        points = [[_percent(px, width), _percent(py, height)] for px, py in poly.tolist()]
        return {"points": points, "closed": True}


class VideoRectangleStrategy(Strategy):
    control, obj, kind = "VideoRectangle", "Video", "video"
    labels_hint = ' in a <Labels toName="..."> for the same <Video>'

    @classmethod
    def label_attrs(cls, parsed, name, info):
        # Track labels live in separate <Labels> controls pointing at the same video.
        video = info["to_name"][0]
        attrs: dict[str, dict] = {}
        for other in parsed.values():
            if other["type"] == "Labels" and video in other["to_name"]:
                attrs.update(other.get("labels_attrs") or {})
        return attrs

    def regions(self, target, tracks, frames_count, task_data=None, keyframe_tolerance=DEFAULT_TOLERANCE):
        info = tracks.video
        # Sparse keyframes (Label Studio interpolates between them); a task may set its own tolerance.
        override = (task_data or {}).get(KEYFRAME_TOLERANCE_FIELD) if isinstance(task_data, dict) else None
        tolerance = parse_tolerance(override if override is not None else keyframe_tolerance)
        fps = info.fps if info.fps and info.fps > 0 else 25.0
        frames_count = frames_count or (max(info.frame_indices) + 1 if info.frame_indices else info.num_frames)
        duration = frames_count / fps
        # Label Studio counts frames at the <Video framerate> (24 unless set), whatever the file's
        # rate: place each keyframe by its time, so boxes line up with the picture.
        ls_fps = target.ls_fps(task_data)
        ls_frames = max(1, _js_round(duration * ls_fps))
        out = []
        for tr in tracks.tracks:
            present = tr.present_frames()
            if not present:
                continue
            sequence: list[dict] = []
            for j, i in enumerate(present):
                x, y, w, h = tr.boxes[i]
                t = (info.frame_indices[i] if info.frame_indices else i) / fps
                frame = min(ls_frames, _js_round(t * ls_fps) + 1)  # LS frames are 1-based
                # Interpolate to the next keyframe only when the track continues on the next
                # processed frame; a gap or the track's end turns the box off after this frame.
                continues = j + 1 < len(present) and present[j + 1] == i + 1
                key = {
                    "frame": frame, "enabled": continues, "rotation": 0,
                    "x": _percent(x, info.width), "y": _percent(y, info.height),
                    "width": _percent(w, info.width), "height": _percent(h, info.height), "time": t,
                }
                if sequence and sequence[-1]["frame"] == frame:
                    sequence[-1] = key  # several source frames on one LS frame: keep the latest
                else:
                    sequence.append(key)
            out.append({
                "id": f"clipvis-{tr.id}", "from_name": target.from_name, "to_name": target.to_name,
                "type": "videorectangle", "origin": "prediction", "score": float(tr.score),
                "value": {"framesCount": ls_frames, "duration": duration,
                          "labels": [target.labels[tr.category_id]],
                          "sequence": sparse_sequence(sequence, tolerance)},
            })
        return out


STRATEGIES: tuple[type[Strategy], ...] = (VideoRectangleStrategy, BrushStrategy, RectangleStrategy, PolygonStrategy)


def object_attributes(label_config: str | None) -> dict[str, dict]:
    """Attributes of every named tag of a labeling config (e.g. a <Video>'s framerate)."""
    if not label_config:
        return {}
    try:
        root = ElementTree.fromstring(label_config)
    except ElementTree.ParseError as e:
        raise ConfigError(f"labeling config is not valid XML: {e}") from None
    return {el.attrib["name"]: dict(el.attrib) for el in root.iter() if "name" in el.attrib}


def plan(parsed: dict, label_config: str | None = None) -> list[Target]:
    """Every control this backend fills; a clear error when there is none."""
    objects = object_attributes(label_config)
    targets = [t for s in STRATEGIES for t in s.targets(parsed, objects)]
    if not targets:
        found = sorted({info["type"] for info in parsed.values()}) or ["no control tags"]
        raise ConfigError(
            f"labeling config not supported (found: {', '.join(found)}): use one of "
            f"{'; '.join(SUPPORTED_TAGS)}"
        )
    return targets


def vocabulary_hash(targets: list[Target]) -> str:
    """Short digest of every target's labels and prompts: part of ``model_version``."""
    payload = [[t.from_name, list(t.labels), list(t.prompts)] for t in targets]
    if any(t.frame_rate != LS_DEFAULT_FRAMERATE for t in targets):  # frame numbering is part of the output
        payload.append([t.frame_rate for t in targets])
    return hashlib.sha256(json.dumps(payload).encode()).hexdigest()[:10]
