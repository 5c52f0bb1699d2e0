"""Labeling-config strategies: one small class per control tag.

Each strategy finds the controls of its kind in a parsed labeling config (``Target``s: where
results go, which task field holds the media, the label vocabulary) and turns segmentation
tracks into that tag's Label Studio regions.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import cv2
import numpy as np

from clipvis_core.errors import InputError
from clipvis_core.tracks import VideoTracks, decode_mask
from clipvis_core.vocabulary import Vocabulary

from .brush import mask_to_rle

SUPPORTED_TAGS = (
    "<Video> + <VideoRectangle> + <Labels>",
    "<Image> + <BrushLabels>",
    "<Image> + <RectangleLabels>",
    "<Image> + <PolygonLabels>",
)


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

    @property
    def kind(self) -> str:
        return self.strategy.kind

    @property
    def vocabulary(self) -> Vocabulary:
        return Vocabulary.from_names(self.prompts)

    def regions(self, tracks: VideoTracks, frames_count: int | None = None) -> list[dict]:
        return self.strategy().regions(self, tracks, frames_count)


def _vocabulary(label_attrs: dict[str, dict]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    labels, prompts = [], []
    for value, attrs in label_attrs.items():
        labels.append(value)
        # predicted_values lists the prompt synonyms; without it the label itself is the prompt.
        prompts.append((attrs.get("predicted_values") or value).strip())
    return tuple(labels), tuple(prompts)


def _percent(v: float, size: int) -> float:
    return float(v) * 100.0 / size


class Strategy:
    control = ""  # control tag type
    obj = ""  # object tag type it must point at
    kind = "image"  # media kind the segmenter gets

    @classmethod
    def targets(cls, parsed: dict) -> list[Target]:
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
            out.append(Target(cls, name, info["to_name"][0], info["inputs"][0]["value"], labels, prompts))
        return out

    labels_hint = ""

    @classmethod
    def label_attrs(cls, parsed: dict, name: str, info: dict) -> dict[str, dict]:
        return info.get("labels_attrs") or {}

    def regions(self, target: Target, tracks: VideoTracks, frames_count: int | None) -> list[dict]:
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

    def regions(self, target, tracks, frames_count):
        info = tracks.video
        fps = info.fps if info.fps and info.fps > 0 else 25.0
        frames_count = frames_count or (max(info.frame_indices) + 1 if info.frame_indices else info.num_frames)
        out = []
        for tr in tracks.tracks:
            present = tr.present_frames()
            if not present:
                continue
            sequence = []
            for j, i in enumerate(present):
                x, y, w, h = tr.boxes[i]
                frame = info.frame_indices[i] + 1 if info.frame_indices else i + 1  # LS frames are 1-based
                # Interpolate to the next keyframe only when the track continues on the next
                # processed frame; a gap or the track's end turns the box off after this frame.
                continues = j + 1 < len(present) and present[j + 1] == i + 1
                sequence.append({
                    "frame": frame, "enabled": continues, "rotation": 0,
                    "x": _percent(x, info.width), "y": _percent(y, info.height),
                    "width": _percent(w, info.width), "height": _percent(h, info.height),
                    "time": (frame - 1) / fps,
                })
            out.append({
                "id": f"clipvis-{tr.id}", "from_name": target.from_name, "to_name": target.to_name,
                "type": "videorectangle", "origin": "prediction", "score": float(tr.score),
                "value": {"framesCount": int(frames_count), "duration": frames_count / fps,
                          "labels": [target.labels[tr.category_id]], "sequence": sequence},
            })
        return out


STRATEGIES: tuple[type[Strategy], ...] = (VideoRectangleStrategy, BrushStrategy, RectangleStrategy, PolygonStrategy)


def plan(parsed: dict) -> list[Target]:
    """Every control this backend fills; a clear error when there is none."""
    targets = [t for s in STRATEGIES for t in s.targets(parsed)]
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
    return hashlib.sha256(json.dumps(payload).encode()).hexdigest()[:10]
