"""Where operator inputs come from: vocabularies, base vocabularies, checkpoints, label fields.

Built-in vocabularies come from ``clipvis_core.builtin_vocabularies``; every lookup here fails
with an ``InputError`` naming the fix, before any sample is touched.
"""
from __future__ import annotations

import re
from pathlib import Path

from clipvis_core.errors import InputError
from clipvis_core.vocabulary import Vocabulary, split_synonyms

VOCAB_SOURCES = ("text", "builtin", "field")
BASE_SOURCES = ("lvis_base", "lvvis_base", "field", "list")


# ---- label fields ---------------------------------------------------------------------------
def label_field_info(dataset, name: str):
    """(path, is_frame_field, document type name) of a label field, or None when it does not exist."""
    if dataset.media_type == "video":
        frame_schema = dataset.get_frame_field_schema() or {}
        if name in frame_schema:
            return f"frames.{name}", True, _doc_type(frame_schema[name])
    schema = dataset.get_field_schema()
    if name in schema:
        return name, False, _doc_type(schema[name])
    return None


def _doc_type(field) -> str | None:
    doc = getattr(field, "document_type", None)
    return doc.__name__ if doc is not None else None


def label_fields(dataset, types=("Detections",)) -> list[str]:
    """Names of the dataset's label fields of the given types (frame fields for videos)."""
    names = []
    if dataset.media_type == "video":
        names += [n for n, f in (dataset.get_frame_field_schema() or {}).items() if _doc_type(f) in types]
    names += [n for n, f in dataset.get_field_schema().items() if _doc_type(f) in types]
    return sorted(set(names))


def check_label_field(dataset, name: str, param: str) -> str:
    info = label_field_info(dataset, name)
    if info is None or info[2] != "Detections":
        have = ", ".join(label_fields(dataset)) or "none"
        what = "not found" if info is None else f"is a {info[2] or 'non-label'} field, not Detections"
        raise InputError(f"{param} {name!r} {what} on dataset {dataset.name!r}: use one of the Detections fields ({have})")
    return info[0]


def check_writable(dataset, name: str) -> None:
    """The output field may be new or a Detections field at the level we write (frames for videos)."""
    info = label_field_info(dataset, name)
    if info is None:
        return
    path, is_frame, doc = info
    if doc != "Detections" or is_frame != (dataset.media_type == "video"):
        raise InputError(f"label_field {name!r} already exists as {path} ({doc or 'not a label'}): "
                         "choose a new name or an existing Detections field")


def check_summary_writable(dataset, name: str) -> None:
    field = dataset.get_field_schema().get(name)
    if field is not None and _doc_type(field) != "Classifications":
        raise InputError(f"the summary field {name!r} already exists as {_doc_type(field) or 'a non-label field'}: "
                         "choose another label_field name")


def distinct_labels(dataset, name: str, param: str) -> list[str]:
    path = check_label_field(dataset, name, param)
    return [str(v) for v in dataset.distinct(f"{path}.detections.label") if v]


# ---- vocabularies ---------------------------------------------------------------------------
def parse_class_text(text: str | None) -> list[str]:
    """Free text -> class entries: one class per line or per ';', synonyms separated by ','."""
    return [e.strip() for e in re.split(r"[;\n]", text or "") if e.strip()]


def builtin_names() -> list[str]:
    from clipvis_core import builtin_vocabularies as bv

    return bv.builtin_names()


def load_builtin(name: str) -> Vocabulary:
    from clipvis_core import builtin_vocabularies as bv

    if not name:
        raise InputError(f"builtin_vocabulary is required: choose one of {', '.join(builtin_names())}")
    return bv.load_vocabulary(name)  # its VocabularyError is an InputError naming the choices


def resolve_vocabulary(params: dict, dataset) -> Vocabulary:
    source = params.get("vocabulary_source") or "text"
    if source == "text":
        entries = parse_class_text(params.get("classes"))
        if not entries:
            raise InputError("empty vocabulary: enter class names (one per line or ';'-separated, synonyms after ',')")
        return Vocabulary.from_names(entries)
    if source == "builtin":
        return load_builtin(params.get("builtin_vocabulary") or "")
    if source == "field":
        name = (params.get("vocabulary_field") or "").strip()
        if not name:
            raise InputError("vocabulary_field is required: choose the label field whose classes to use")
        labels = distinct_labels(dataset, name, "vocabulary_field")
        if not labels:
            raise InputError(f"empty vocabulary: field {name!r} has no labels yet; pick another field or type classes")
        return Vocabulary.from_names(labels)
    raise InputError(f"vocabulary_source must be one of {', '.join(VOCAB_SOURCES)}, got {source!r}")


def normalize(name: str) -> str:
    """Compare class names loosely: 'Aerosol_Can' == 'aerosol can'."""
    return " ".join(name.replace("_", " ").lower().split())


def names_of(vocab: Vocabulary) -> frozenset[str]:
    return frozenset(normalize(s) for entry in vocab.entries for s in split_synonyms(entry) if s.strip())


def resolve_base_names(params: dict, dataset) -> tuple[frozenset[str], str]:
    """The base vocabulary of the novelty search, as normalised names + a one-line description."""
    source = params.get("base") or "lvis_base"
    if source == "lvis_base":
        return names_of(load_builtin("lvis:base")), "LVIS base (frequent + common)"
    if source == "lvvis_base":
        return names_of(load_builtin("lvvis:base")), "LV-VIS base partition"
    if source == "field":
        name = (params.get("base_field") or "").strip()
        if not name:
            raise InputError("base_field is required: choose the ground-truth field whose classes are the base")
        labels = distinct_labels(dataset, name, "base_field")
        if not labels:
            raise InputError(f"empty base vocabulary: field {name!r} has no labels")
        return frozenset(normalize(v) for v in labels), f"classes of {name}"
    if source == "list":
        entries = parse_class_text(params.get("base_classes"))
        if not entries:
            raise InputError("empty base vocabulary: enter base class names (one per line or ';'-separated)")
        return names_of(Vocabulary.from_names(entries)), f"{len(entries)} listed classes"
    raise InputError(f"base must be one of {', '.join(BASE_SOURCES)}, got {source!r}")


# ---- checkpoints ----------------------------------------------------------------------------
def local_checkpoints() -> list[str]:
    """Registered checkpoint names whose weights are on this machine, then every model line as
    ``line:NAME`` (its promoted version: what fine-tuning from corrections registered)."""
    from clipvis_core import weights
    from clipvis_core.versions import list_lines

    return sorted(weights.available_checkpoints()) + [f"line:{name}" for name in list_lines()]


_RANDOM_HINT = "random:tiny (random weights: tries the tool without downloads)"


def check_checkpoint(value: str | None, param: str = "checkpoint") -> str:
    """A registered name available locally, ``random:<config>``, ``line:NAME[@vN]``, or a model card (.json) / .pth
    path whose weights fit its architecture (checked here, so a wrong file is refused in the form)."""
    from clipvis_core import weights

    value = (value or "").strip()
    local = local_checkpoints()
    if not value:
        if len(local) == 1:
            return local[0]
        raise InputError(f"{param} is required: use one of {', '.join(local) or '(none downloaded)'}, {_RANDOM_HINT}, "
                         "or a model card .json / .pth path")
    path = Path(value).expanduser()
    if value in local or value in weights.RELEASED or value.startswith(("random:", "line:")) or \
            (path.suffix == ".json" and path.is_file()):
        _verify(value)
        return value
    if path.suffix in (".pth", ".pt") and path.is_file():
        _verify(str(path))
        return str(path)
    raise InputError(f"unknown {param} {value!r}: use a locally available name "
                     f"({', '.join(local) or 'none downloaded; see clipvis checkpoints'}), {_RANDOM_HINT}, "
                     "or an existing .json/.pth file")


# The form re-checks on every change: results are kept per file version (size, mtime).
_head_checked: dict[tuple, str | None] = {}


def _stamp(path: Path | None):
    try:
        st = path.stat()
    except (OSError, AttributeError):
        return None
    return str(path.resolve()), st.st_size, st.st_mtime_ns


def _verify(spec: str) -> None:
    """Resolve the spec (a registered name not downloaded, a bad card, a .pth of no released architecture
    fail with the weights module's one-line message) and check its weights fit the architecture."""
    from clipvis_core import weights
    from clipvis_core.errors import WeightsError

    path = Path(spec).expanduser()
    bare = path.suffix in (".pth", ".pt")  # resolving reads the whole state dict: cache it too
    key = ("pth", _stamp(path)) if bare else None
    if key not in _head_checked:
        try:
            resolved = weights.resolve_checkpoint(spec)
            if not bare:
                key = ("head", _stamp(resolved.path), repr(resolved.config))
                if key in _head_checked:
                    return _raise(_head_checked[key])
            weights.check_head(resolved)
            error = None
        except WeightsError as e:
            if not bare and key is None:
                raise InputError(str(e)) from None  # cheap to redo: not cached (the user may fix it)
            error = str(e)
        _head_checked[key] = error
    _raise(_head_checked[key])


def _raise(error: str | None) -> None:
    if error:
        raise InputError(error)
