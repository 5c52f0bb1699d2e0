"""Incremental JSON: big containers are written element by element, so a 100 000-frame result
never becomes one string in memory. The text equals ``json.dumps(obj)`` (same separators and
escaping); generators are written as lists, which lets exporters build per-frame items lazily."""
from __future__ import annotations

import json
from typing import BinaryIO, Iterator

_SMALL = 64  # containers up to this many items (a mask dict, a box) are dumped in one call
_FLUSH = 1 << 16  # bytes gathered before each write


def dump(obj, f: BinaryIO) -> None:
    buf: list[str] = []
    size = 0
    for piece in _pieces(obj):
        buf.append(piece)
        size += len(piece)
        if size >= _FLUSH:
            f.write("".join(buf).encode())
            buf, size = [], 0
    f.write("".join(buf).encode())


def _big(obj) -> bool:
    if isinstance(obj, Iterator):
        return True
    if isinstance(obj, dict):
        return len(obj) > _SMALL or any(_big(v) for v in obj.values())
    return isinstance(obj, (list, tuple)) and len(obj) > _SMALL


def _pieces(obj) -> Iterator[str]:
    if not _big(obj):
        yield json.dumps(obj)
    elif isinstance(obj, dict):
        yield "{"
        for i, (k, v) in enumerate(obj.items()):
            yield (", " if i else "") + json.dumps(str(k)) + ": "
            yield from _pieces(v)
        yield "}"
    else:
        yield "["
        for i, v in enumerate(obj):
            if i:
                yield ", "
            yield from _pieces(v)
        yield "]"
