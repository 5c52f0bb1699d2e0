"""Model lines: the versions a team's corrections produce, each with a lineage record.

A line (one per Label Studio project or FiftyOne dataset, or any name) starts from a base
checkpoint. Every fine-tune or classifier adaptation adds a version directory holding its
artefacts and ``lineage.json`` (parent, data, steps, held-out metrics, time, promoted or not and
why). ``current.json`` names the promoted version; it is replaced atomically and only after a
candidate has been evaluated, so a crash mid fine-tune leaves the served model untouched.

Layout under ``$CLIPVIS_MODELS_DIR`` (default ``<cache>/models``)::

    <line>/line.json                 base checkpoint, created time
    <line>/current.json              {"version": "v3"}
    <line>/versions/v3/lineage.json  + model_card.json, model_final.pth, adapter.json ...
"""
from __future__ import annotations

import json
import os
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .errors import InputError
from .tracks import write_atomic

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
BASE = "v0"


def models_dir() -> Path:
    from .weights import cache_dir

    return Path(os.environ.get("CLIPVIS_MODELS_DIR") or cache_dir() / "models")


@dataclass
class Lineage:
    version: str
    parent: str | None  # the version it was trained / adapted from (None for the base)
    kind: str  # "base" | "finetune" | "adapter"
    checkpoint: str  # a --checkpoint spec: the base spec, or a model card path inside the version dir
    adapter: str | None = None  # classifier adapter file, when the version has one
    data: dict = field(default_factory=dict)  # sources, sample / mask counts, keys of the corrections used
    steps: int = 0
    metrics: dict = field(default_factory=dict)  # held-out: {"parent": {...}, "candidate": {...}}
    promoted: bool = False
    reason: str = ""
    created: float = field(default_factory=time.time)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["created_iso"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.created))
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Lineage":
        d = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**d)


class ModelLine:
    def __init__(self, root: Path):
        self.root = Path(root)

    @property
    def name(self) -> str:
        return self.root.name

    # ---- creation / lookup ----------------------------------------------------------------
    @classmethod
    def path_for(cls, name: str) -> Path:
        if not _NAME.match(name or ""):
            raise InputError(f"invalid model line name {name!r}: use letters, digits, '.', '_' or '-' (max 100)")
        return models_dir() / name

    @classmethod
    def open(cls, name: str) -> "ModelLine":
        line = cls(cls.path_for(name))
        if not (line.root / "line.json").is_file():
            known = ", ".join(list_lines()) or "none yet"
            raise InputError(f"no model line '{name}' (known: {known}): create it with `clipvis models create {name} --checkpoint SPEC`")
        return line

    @classmethod
    def create(cls, name: str, base_checkpoint: str, exist_ok: bool = False) -> "ModelLine":
        """Start a line from ``base_checkpoint`` (any --checkpoint spec; resolved now, so a bad one fails early)."""
        from .weights import resolve_checkpoint

        line = cls(cls.path_for(name))
        if (line.root / "line.json").is_file():
            if exist_ok:
                return line
            raise InputError(f"model line '{name}' already exists: use it, or pick another name")
        spec = _absolute_spec(base_checkpoint)
        resolve_checkpoint(spec)
        write_atomic(line.root / "line.json", json.dumps({"name": name, "base": spec, "created": time.time()}, indent=2))
        line.record(Lineage(BASE, None, "base", spec, promoted=True, reason="base checkpoint"))
        line.promote(BASE)
        return line

    # ---- versions ---------------------------------------------------------------------------
    def versions(self) -> list[Lineage]:
        out = []
        vdir = self.root / "versions"
        for p in sorted(vdir.glob("v*/lineage.json"), key=lambda p: int(p.parent.name[1:])) if vdir.is_dir() else []:
            out.append(Lineage.from_dict(json.loads(p.read_text())))
        return out

    def get(self, version: str) -> Lineage:
        p = self.root / "versions" / version / "lineage.json"
        if not p.is_file():
            raise InputError(f"model line '{self.name}' has no version {version!r}: see `clipvis models show {self.name}`")
        return Lineage.from_dict(json.loads(p.read_text()))

    def current(self) -> Lineage:
        cur = json.loads((self.root / "current.json").read_text())["version"]
        return self.get(cur)

    def version_dir(self, version: str) -> Path:
        return self.root / "versions" / version

    def next_version(self) -> tuple[str, Path]:
        """Reserve a new version directory (mkdir is atomic, so two writers never share one)."""
        vdir = self.root / "versions"
        vdir.mkdir(parents=True, exist_ok=True)
        n = max((int(p.name[1:]) for p in vdir.glob("v*") if p.name[1:].isdigit()), default=0) + 1
        while True:
            try:
                (vdir / f"v{n}").mkdir()
                return f"v{n}", vdir / f"v{n}"
            except FileExistsError:
                n += 1

    def record(self, lineage: Lineage) -> Path:
        return write_atomic(self.version_dir(lineage.version) / "lineage.json", json.dumps(lineage.to_dict(), indent=2))

    def promote(self, version: str) -> None:
        self.get(version)
        write_atomic(self.root / "current.json", json.dumps({"version": version, "promoted_at": time.time()}))

    def seen_keys(self) -> set[str]:
        """Correction keys already used by any version (promoted or not): what is not new any more."""
        keys: set[str] = set()
        for v in self.versions():
            keys.update(v.data.get("keys", []))
        return keys

    # ---- what hosts serve ---------------------------------------------------------------------
    def serving(self) -> tuple[str, str | None, str]:
        """(checkpoint spec, adapter path or None, model version string) of the promoted version."""
        cur = self.current()
        return cur.checkpoint, cur.adapter, f"{self.name}@{cur.version}"


def resolve_line(ref: str) -> tuple[str, str]:
    """``NAME`` or ``NAME@vN`` -> ("NAME@vN", checkpoint spec of that version)."""
    name, _, version = ref.partition("@")
    line = ModelLine.open(name)
    lin = line.get(version) if version else line.current()
    if not lin.checkpoint:
        raise InputError(f"version {lin.version} of model line '{name}' has no checkpoint (its training did not finish)")
    return f"{name}@{lin.version}", lin.checkpoint


def list_lines() -> list[str]:
    root = models_dir()
    return sorted(p.parent.name for p in root.glob("*/line.json")) if root.is_dir() else []


def _absolute_spec(spec: str) -> str:
    """File specs become absolute so the line works from any working directory."""
    p = Path(spec).expanduser()
    return str(p.resolve()) if p.suffix in (".json", ".pth", ".pt", ".pkl") and p.exists() else spec
