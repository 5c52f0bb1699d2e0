"""A vocabulary: the class names a user asks for, each with prompt synonyms.

A class is written as upstream CLIP-VIS writes it: comma-separated synonyms, e.g.
``"car, automobile"``. The first synonym is the display label.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Iterable, Sequence

from .errors import InputError

# ViLD prompt templates, verbatim from the CLIP-VIS evaluation (some have no trailing period).
PROMPT_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "This is a photo of a {}",
    "There is a {} in the scene",
    "There is the {} in the scene",
    "a photo of a {} in the scene",
    "a photo of a small {}.",
    "a photo of a medium {}.",
    "a photo of a large {}.",
    "This is a photo of a small {}.",
    "This is a photo of a medium {}.",
    "This is a photo of a large {}.",
    "There is a small {} in the scene.",
    "There is a medium {} in the scene.",
    "There is a large {} in the scene.",
)


class VocabularyError(InputError):
    """A vocabulary that cannot be used (empty, blank class names)."""


def split_synonyms(entry: str) -> list[str]:
    # Upstream rule: ", " -> "," then split on ","; nothing else is stripped (parity).
    return entry.replace(", ", ",").split(",")


@dataclass(frozen=True)
class Vocabulary:
    """Ordered class entries; ``entries[i]`` is the raw string of class ``i``."""

    entries: tuple[str, ...]
    # Optional per-class metadata (e.g. LV-VIS partition, LVIS frequency), same order as entries.
    meta: tuple[dict, ...] = field(default=(), compare=False)

    def __post_init__(self):
        if not self.entries:
            raise VocabularyError(
                "empty vocabulary: pass at least one class (--class NAME, a vocabulary file or a built-in name)"
            )
        for e in self.entries:
            if not isinstance(e, str) or not e.strip() or any(not s.strip() for s in split_synonyms(e)):
                raise VocabularyError(f"invalid class name {e!r}: class names and synonyms must be non-empty text")

    @classmethod
    def from_names(cls, names: Iterable[str], meta: Sequence[dict] | None = None) -> "Vocabulary":
        return cls(tuple(names), tuple(meta) if meta else ())

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def synonyms(self) -> list[list[str]]:
        return [split_synonyms(e) for e in self.entries]

    @property
    def labels(self) -> list[str]:
        """Display label per class: its first synonym, stripped."""
        return [s[0].strip() for s in self.synonyms]

    @property
    def num_synonyms(self) -> list[int]:
        return [len(s) for s in self.synonyms]

    def prompts(self, templates: Sequence[str] = PROMPT_TEMPLATES) -> list[str]:
        """Every templated prompt, ordered class -> synonym -> template (upstream order)."""
        return [t.format(s) for syns in self.synonyms for s in syns for t in templates]

    def deduplicated(self) -> tuple["Vocabulary", list[str]]:
        """Classes whose names match once case and spacing are normalised, merged into the first
        (its synonyms extended); also one note per merge to show the user."""
        def norm(text: str) -> str:
            return " ".join(text.split()).lower()

        first: dict[str, int] = {}
        entries: list[str] = []
        meta: list[dict] = []
        notes: list[str] = []
        for i, entry in enumerate(self.entries):
            syns = split_synonyms(entry)
            j = first.get(norm(syns[0]))
            if j is None:
                first[norm(syns[0])] = len(entries)
                entries.append(entry)
                meta.extend(self.meta[i:i + 1])
                continue
            have = {norm(s) for s in split_synonyms(entries[j])}
            extra = [s for s in syns if norm(s) not in have]
            merged = ",".join([entries[j], *extra]) if extra else entries[j]
            notes.append(f"class {entry!r} is the same as {entries[j]!r} after normalising case and spaces: "
                         f"merged into {merged!r}")
            entries[j] = merged
        return (Vocabulary(tuple(entries), tuple(meta) if len(meta) == len(entries) else ()), notes)

    def digest(self) -> str:
        """Short stable hash of the entries (used in model versions and job keys)."""
        return hashlib.sha256(json.dumps(list(self.entries)).encode()).hexdigest()[:12]
