"""Binary masks -> Label Studio brush RLE (the ``@thi.ng/rle-pack`` bit format LS decodes).

Label Studio stores a brush region as the RLE of the flattened RGBA image (4 bytes per pixel),
packed MSB-first: a 32-bit value count, the word size minus one (5 bits), four run-length field
widths minus one (4 bits each), then chunks ``flag(1) size_index(2) count-1(width) ...`` where
``flag=1`` is one word repeated ``count`` times and ``flag=0`` is ``count`` literal words.
"""
from __future__ import annotations

import numpy as np

WORD_BITS = 8
RUN_FIELD_BITS = (3, 4, 8, 16)  # widths of the "count - 1" field, chosen per chunk
MAX_CHUNK = 1 << RUN_FIELD_BITS[-1]


def _pixel_runs(flat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Run lengths and values of a 1-D array."""
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    starts = np.concatenate(([0], change))
    ends = np.concatenate((change, [flat.size]))
    return ends - starts, flat[starts]


def mask_to_rle(mask: np.ndarray) -> list[int]:
    """HxW boolean mask -> LS brush RLE bytes (foreground is opaque white)."""
    flat = np.ascontiguousarray(mask, dtype=bool).ravel()
    if flat.size == 0:
        raise ValueError("cannot encode an empty (0-pixel) mask")
    lengths, values = _pixel_runs(flat)
    # Every pixel is 4 equal RGBA bytes, so each pixel run is a byte run 4x as long:
    # only "repeat" chunks are needed, split where a run exceeds the widest count field.
    fields: list[str] = [
        format(flat.size * 4, "032b"),
        format(WORD_BITS - 1, "05b"),
        *(format(b - 1, "04b") for b in RUN_FIELD_BITS),
    ]
    for length, value in zip((lengths * 4).tolist(), values.tolist()):
        word = format(255 if value else 0, f"0{WORD_BITS}b")
        while length > 0:
            n = min(length, MAX_CHUNK)
            idx = next(i for i, b in enumerate(RUN_FIELD_BITS) if n - 1 < (1 << b))
            fields.append(f"1{idx:02b}{n - 1:0{RUN_FIELD_BITS[idx]}b}{word}")
            length -= n
    bits = "".join(fields)
    bits += "0" * (-len(bits) % 8)
    return list(int(bits, 2).to_bytes(len(bits) // 8, "big"))
