"""The adapter file: per-class prototypes + blend weight, keyed by checkpoint identity and vocabulary.

Saved atomically (``torch.save`` of plain tensors and types, loadable with ``weights_only``). The
checkpoint identity is a hash of the model's weights, so an adapter follows its weights wherever the
file is copied and refuses any other model with a one-line error. Applied to a segmentation
vocabulary class by class: a class whose label (any synonym, case-insensitive) the adapter knows
gets its prototype blended in; the others stay text-only.
"""
from __future__ import annotations

import hashlib
import io
import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import InputError
from ..text import TextClassifier
from ..tracks import write_atomic
from ..vocabulary import Vocabulary
from .prototypes import blend_rows

FORMAT = "clipvis-classifier-adapter"
VERSION = 1


def model_identity(model) -> str:
    """sha256 over the model's state dict (names, shapes, bytes); cached on the model object."""
    cached = getattr(model, "_clipvis_identity", None)
    if cached:
        return cached
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    model._clipvis_identity = h.hexdigest()[:24]
    return model._clipvis_identity


def _key(label: str) -> str:
    return label.strip().casefold()


@dataclass
class ClassifierAdapter:
    checkpoint: str  # the name it was built with (messages only)
    checkpoint_id: str  # model_identity of those weights
    vocabulary: list[str]  # class entries, including labels the examples added
    prototypes: torch.Tensor  # [C, D] normalised; rows of classes without examples are zero
    counts: list[int]  # examples per class
    alpha: float
    report: dict = field(default_factory=dict)  # figures and counts from `clipvis adapt`

    @property
    def vocab(self) -> Vocabulary:
        return Vocabulary.from_names(self.vocabulary)

    def digest(self) -> str:
        h = hashlib.sha256(json.dumps([self.checkpoint_id, self.vocabulary, self.alpha, self.counts]).encode())
        h.update(self.prototypes.float().contiguous().numpy().tobytes())
        return h.hexdigest()[:12]

    def check(self, model, name: str) -> None:
        ident = model_identity(model)
        if ident != self.checkpoint_id:
            raise InputError(f"adapter built for checkpoint '{self.checkpoint}' (weights {self.checkpoint_id[:12]}) "
                             f"cannot be used with '{name}' (weights {ident[:12]}): pass the checkpoint it was built "
                             f"for, or rebuild it with `clipvis adapt --checkpoint {name}`")

    def prototype_table(self) -> dict[str, int]:
        """label/synonym (case-folded) -> adapter class with examples."""
        table: dict[str, int] = {}
        for c, syns in enumerate(self.vocab.synonyms):
            if self.counts[c] > 0:
                for s in syns:
                    table.setdefault(_key(s), c)
        return table

    def apply(self, text: TextClassifier, vocab: Vocabulary) -> TextClassifier:
        """The text classifier of ``vocab`` with this adapter's prototypes blended in."""
        table = self.prototype_table()
        match = [next((table[_key(s)] for s in syns if _key(s) in table), None) for syns in vocab.synonyms]
        if all(m is None for m in match):
            raise InputError(f"the adapter knows the classes {self.vocab.labels} but the vocabulary "
                             f"{vocab.labels[:10]} has none of them: segment with the adapter's vocabulary "
                             "(give no classes) or adapt again with these classes")
        protos = torch.stack([self.prototypes[m] if m is not None else torch.zeros(self.prototypes.shape[1])
                              for m in match])
        has = torch.tensor([m is not None for m in match])
        rows = blend_rows(text.embeddings, text.num_synonyms, protos, has, self.alpha)
        return TextClassifier(rows, list(text.num_synonyms))

    # ---- file ----------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        torch.save({"format": FORMAT, "version": VERSION, "checkpoint": self.checkpoint,
                    "checkpoint_id": self.checkpoint_id, "vocabulary": list(self.vocabulary),
                    "prototypes": self.prototypes.float().cpu().contiguous(), "counts": list(self.counts),
                    "alpha": float(self.alpha), "report": json.dumps(self.report)}, buf)
        return buf.getvalue()

    def save(self, path: str | Path) -> Path:
        return write_atomic(Path(path).expanduser(), self.to_bytes())

    @classmethod
    def load(cls, path: str | Path) -> "ClassifierAdapter":
        p = Path(path).expanduser()
        if not p.is_file():
            raise InputError(f"adapter file {p} not found: create one with `clipvis adapt --data ... --output {p.name}`")
        try:
            d = torch.load(p, map_location="cpu", weights_only=True)
        except Exception:  # the unpickler raises anything on a foreign or damaged file
            raise InputError(f"cannot read adapter {p}: it is not a clipvis adapter file (or it is damaged); "
                             "rebuild it with `clipvis adapt`") from None
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise InputError(f"{p} is not a clipvis adapter file: rebuild it with `clipvis adapt`")
        if d.get("version") != VERSION:
            raise InputError(f"adapter {p} has format version {d.get('version')}, this clipvis reads {VERSION}: "
                             "rebuild it with `clipvis adapt`")
        return cls(d["checkpoint"], d["checkpoint_id"], list(d["vocabulary"]), d["prototypes"], list(d["counts"]),
                   float(d["alpha"]), json.loads(d.get("report") or "{}"))


_cache: dict[tuple, ClassifierAdapter] = {}
_cache_lock = threading.Lock()


def load_adapter(adapter) -> ClassifierAdapter:
    """A loaded adapter, or a path loaded once per process (reloaded when the file changes)."""
    if isinstance(adapter, ClassifierAdapter):
        return adapter
    p = Path(adapter).expanduser()
    try:
        st = p.stat()
        key = (str(p.resolve()), st.st_mtime_ns, st.st_size)
    except OSError:
        key = None
    with _cache_lock:
        if key is None or key not in _cache:
            loaded = ClassifierAdapter.load(p)  # raises the one-line "not found" when key is None
            _cache.clear()  # adapters are small; keep the latest one
            _cache[key] = loaded
        return _cache[key]


def adapter_vocabulary(adapter) -> Vocabulary:
    return load_adapter(adapter).vocab


def record_in_card(card: str | Path, adapter_path: Path, adapter: ClassifierAdapter) -> bool:
    """Add (or refresh) the adapter's entry under "adapters" in a model card .json; False if not a card."""
    p = Path(card).expanduser()
    if p.suffix != ".json" or not p.is_file():
        return False
    data = json.loads(p.read_text())
    entry = {"path": str(Path(adapter_path).expanduser().resolve()), "digest": adapter.digest(),
             "vocabulary": adapter.vocab.digest(), "classes": len(adapter.vocabulary),
             "examples": sum(adapter.counts), "alpha": adapter.alpha,
             "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    data["adapters"] = [a for a in data.get("adapters") or [] if a.get("path") != entry["path"]] + [entry]
    write_atomic(p, json.dumps(data, indent=2))
    return True
