"""Built-in vocabularies (the benchmarks' category lists) and the one way hosts turn user input into a Vocabulary.

Names are kept exactly as the datasets spell them (``action_camera``): upstream CLIP-VIS put these
raw names into its prompts, so results stay comparable. LVIS-taxonomy lists carry synonyms; a class
becomes ``"name, synonym, ..."`` (the dataset name first, so it is the display label).

A built-in is addressed as ``NAME`` or ``NAME:SPLIT``, e.g. ``lvvis:novel``, ``lvis:base``.
Per-class metadata (dataset ``id``, ``partition`` / ``frequency``) is kept in ``Vocabulary.meta``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

from .vocabulary import Vocabulary, VocabularyError

_LVIS_SPLITS: dict[str, Callable[[dict], bool]] = {
    # Open-vocabulary protocols train on LVIS "norare": frequent + common are base, rare is novel.
    "base": lambda c: c["frequency"] in ("f", "c"),
    "novel": lambda c: c["frequency"] == "r",
    "rare": lambda c: c["frequency"] == "r",
    "common": lambda c: c["frequency"] == "c",
    "frequent": lambda c: c["frequency"] == "f",
}
_LVVIS_SPLITS: dict[str, Callable[[dict], bool]] = {
    # LV-VIS partition: 0/1 = LVIS frequent/common (base), 2 = LVIS rare, 3 = not in LVIS (novel).
    "base": lambda c: c["partition"] in (0, 1),
    "novel": lambda c: c["partition"] in (2, 3),
}


@dataclass(frozen=True)
class _Builtin:
    file: str
    description: str
    splits: dict[str, Callable[[dict], bool]]


_BUILTINS: dict[str, _Builtin] = {
    "lvvis": _Builtin("lvvis.json", "LV-VIS (splits: base = partition 0/1, novel = 2/3)", _LVVIS_SPLITS),
    "lvis": _Builtin("lvis_v1.json", "LVIS v1 with synonyms (splits: base = frequent+common, novel/rare, common, frequent)", _LVIS_SPLITS),
    "ytvis2019": _Builtin("ytvis_2019.json", "YouTube-VIS 2019", {}),
    "ytvis2021": _Builtin("ytvis_2021.json", "YouTube-VIS 2021", {}),
    "ovis": _Builtin("ovis.json", "OVIS (occluded video instance segmentation)", {}),
    "burst": _Builtin("burst.json", "BURST (LVIS taxonomy, with synonyms; splits as lvis)", _LVIS_SPLITS),
    "coco": _Builtin("coco.json", "COCO things (ids are COCO's own, not contiguous)", {}),
}
_ALIASES = {"lvis_v1": "lvis", "lv-vis": "lvvis", "ytvis_2019": "ytvis2019", "ytvis19": "ytvis2019",
            "ytvis_2021": "ytvis2021", "ytvis21": "ytvis2021"}


class BuiltinInfo(NamedTuple):
    name: str
    count: int
    description: str


@lru_cache(maxsize=None)
def _categories(name: str) -> tuple[dict, ...]:
    text = resources.files("clipvis_core").joinpath("data", "vocabularies", _BUILTINS[name].file).read_text("utf-8")
    return tuple(json.loads(text)["categories"])


def _entry(cat: dict) -> str:
    syns = [s for s in cat.get("synonyms", []) if s != cat["name"]]
    return ", ".join([cat["name"], *syns])


def _class_meta(dataset: str, cat: dict) -> dict:
    meta = {"dataset": dataset, "id": cat["id"], "name": cat["name"]}
    for key in ("partition", "frequency"):
        if key in cat:
            meta[key] = cat[key]
    return meta


def list_vocabularies() -> list[BuiltinInfo]:
    """Every built-in vocabulary: (name, number of classes, description)."""
    return [BuiltinInfo(n, len(_categories(n)), b.description) for n, b in _BUILTINS.items()]


def builtin_names() -> list[str]:
    """Every accepted ``NAME`` / ``NAME:SPLIT`` (for help texts and form choices)."""
    return [f"{n}:{s}" if s else n for n, b in _BUILTINS.items() for s in ("", *b.splits)]


def load_vocabulary(name: str, split: str | None = None) -> Vocabulary:
    """A built-in vocabulary by name (``lvvis``, ``lvis:rare``, ...); ``split`` may also be passed apart."""
    key = name.strip().lower()
    if ":" in key:
        if split is not None:
            raise VocabularyError(f"vocabulary {name!r} already names a split; do not pass split={split!r} too")
        key, split = key.split(":", 1)
    key = _ALIASES.get(key, key)
    if key not in _BUILTINS:
        raise VocabularyError(
            f"unknown built-in vocabulary {name!r}: choose one of {', '.join(_BUILTINS)} (see `clipvis vocab list`)"
        )
    builtin = _BUILTINS[key]
    cats = _categories(key)
    if split:
        split = split.strip().lower()
        if split not in builtin.splits:
            have = ", ".join(builtin.splits) or "none"
            raise VocabularyError(f"vocabulary {key!r} has no split {split!r}: its splits are {have}")
        cats = tuple(c for c in cats if builtin.splits[split](c))
    return Vocabulary.from_names([_entry(c) for c in cats], [_class_meta(key, c) for c in cats])


def read_vocabulary_file(path: str | Path) -> Vocabulary:
    """One class per line (``"car, automobile"`` for synonyms; blank lines and ``#`` comments skipped),
    or JSON: a list of class strings, or ``{"categories": [{"id", "name", "synonyms"?}, ...]}``."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise VocabularyError(f"vocabulary file not found: {path}: check the path (a text file, one class per line)")
    try:
        text = path.read_text("utf-8-sig")  # -sig: tolerate the BOM some editors write
    except UnicodeDecodeError:
        raise VocabularyError(f"vocabulary file {path} is not UTF-8 text: save it as UTF-8, one class per line") from None
    if path.suffix.lower() == ".json":
        return _vocabulary_from_json(path, text)
    names = [s for s in (line.strip() for line in text.splitlines()) if s and not s.startswith("#")]
    if not names:
        raise VocabularyError(f"vocabulary file {path} lists no classes: write one class name per line")
    return Vocabulary.from_names(names)


def _vocabulary_from_json(path: Path, text: str) -> Vocabulary:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise VocabularyError(f"vocabulary file {path} is not valid JSON ({e.msg}, line {e.lineno}): fix it or use a text file") from None
    if isinstance(data, list) and all(isinstance(s, str) for s in data):
        return Vocabulary.from_names([s.strip() for s in data])
    cats = data.get("categories") if isinstance(data, dict) else None
    if not isinstance(cats, list) or not all(isinstance(c, dict) and isinstance(c.get("name"), str) for c in cats):
        raise VocabularyError(
            f"vocabulary file {path}: expected a JSON list of class names or {{\"categories\": [{{\"id\", \"name\"}}, ...]}}"
        )
    meta = [{k: v for k, v in c.items() if k != "synonyms"} for c in cats]
    return Vocabulary.from_names([_entry(c) for c in cats], meta)


def resolve_vocabulary(classes: Sequence[str] | None = None, file: str | Path | None = None,
                       builtin: str | None = None) -> Vocabulary:
    """The vocabulary a user asked for: ``--class`` values, a vocabulary file and/or a built-in name.

    Several sources are concatenated in that order; a class given twice is kept once (first wins).
    Nothing given, or only blanks, raises ``VocabularyError``.
    """
    parts: list[Vocabulary] = []
    names = [c.strip() for c in (classes or []) if c is not None and c.strip()]
    if names:
        parts.append(Vocabulary.from_names(names))
    if file:
        parts.append(read_vocabulary_file(file))
    if builtin and builtin.strip():
        parts.append(load_vocabulary(builtin))
    if not parts:
        raise VocabularyError(
            "empty vocabulary: pass class names (--class NAME, repeatable; synonyms comma-separated), "
            "a vocabulary file (--vocab-file) or a built-in vocabulary (--vocab, see `clipvis vocab list`)"
        )
    entries: list[str] = []
    meta: list[dict] = []
    for voc in parts:
        voc_meta = voc.meta or ({},) * len(voc)
        for entry, m in zip(voc.entries, voc_meta):
            if entry not in entries:
                entries.append(entry)
                meta.append(m)
    return Vocabulary.from_names(entries, meta if any(meta) else None)
