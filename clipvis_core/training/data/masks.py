"""Encoded annotations -> bool masks: COCO polygons / RLE, and Label Studio brush RLE.

Rasterisation goes through pycocotools, as upstream's dataset mappers do (``polygons_to_bitmask``:
``frPyObjects`` + ``merge`` + ``decode``), so our masks are pixel-for-pixel upstream's.
"""
from __future__ import annotations

import numpy as np
from pycocotools import mask as mask_utils

from ...errors import InputError


def rasterize(seg, height: int, width: int, where: str) -> np.ndarray:
    """One instance in one frame -> bool [height, width]; ``None`` (absent) -> all False.

    ``seg``: COCO polygons (list of flat xy lists), a COCO RLE (compressed ``counts`` str/bytes or
    uncompressed list), ``{"brush_rle": [...]}`` (Label Studio), or a bool array of exactly this size.
    """
    if seg is None:
        return np.zeros((height, width), bool)
    if isinstance(seg, np.ndarray):
        if seg.shape != (height, width):
            raise InputError(f"{where}: mask is {seg.shape[1]}x{seg.shape[0]} but the image is {width}x{height}: "
                             "masks must be stored at the image's resolution")
        return seg.astype(bool)
    if isinstance(seg, dict) and "brush_rle" in seg:
        return decode_brush_rle(seg["brush_rle"], height, width, where)
    if isinstance(seg, dict):
        size = seg.get("size")
        if not (isinstance(size, (list, tuple)) and len(size) == 2) or "counts" not in seg:
            raise InputError(f"{where}: an RLE segmentation needs 'size' [h, w] and 'counts'")
        if tuple(int(v) for v in size) != (height, width):
            raise InputError(f"{where}: mask size {size[1]}x{size[0]} (RLE 'size' is [h, w]) does not match the image "
                             f"size {width}x{height}: fix the annotation's size or the image's height/width")
        rle = seg
        if isinstance(seg["counts"], list):  # uncompressed RLE
            if sum(seg["counts"]) != height * width:
                raise InputError(f"{where}: uncompressed RLE counts add up to {sum(seg['counts'])} pixels, "
                                 f"not {height}x{width}: the annotation is corrupt")
            rle = mask_utils.frPyObjects(seg, height, width)
        elif isinstance(seg["counts"], str):
            rle = {"size": [height, width], "counts": seg["counts"].encode("ascii")}
        return mask_utils.decode(rle).astype(bool)
    if isinstance(seg, list):
        polys = [p for p in seg if isinstance(p, (list, tuple)) and len(p) >= 6]  # < 3 points: nothing to fill
        if len(polys) != len(seg):
            bad = [p for p in seg if not isinstance(p, (list, tuple)) or len(p) % 2]
            if bad:
                raise InputError(f"{where}: a polygon must be a flat list [x1, y1, x2, y2, ...] of even length")
        if not polys:
            return np.zeros((height, width), bool)
        rles = mask_utils.frPyObjects([[float(v) for v in p] for p in polys], height, width)
        return mask_utils.decode(mask_utils.merge(rles)).astype(bool)
    raise InputError(f"{where}: unsupported segmentation {type(seg).__name__}: use polygons, a COCO RLE or null")


def encode_rle(mask: np.ndarray) -> dict:
    """bool [H, W] -> compact COCO RLE (counts as str), the picklable form records carry."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


# -- Label Studio brush RLE ---------------------------------------------------------------------

class _Bits:
    """MSB-first bit reader over a byte sequence."""

    def __init__(self, data):
        self.bits = np.unpackbits(np.asarray(data, dtype=np.uint8))
        self.pos = 0

    def read(self, n: int) -> int:
        if self.pos + n > self.bits.size:
            raise ValueError("truncated")
        chunk = self.bits[self.pos:self.pos + n]
        self.pos += n
        return int(chunk.dot(1 << np.arange(n - 1, -1, -1, dtype=np.int64))) if n else 0

    def read_words(self, count: int, width: int) -> np.ndarray:
        end = self.pos + count * width
        if end > self.bits.size:
            raise ValueError("truncated")
        words = self.bits[self.pos:end].reshape(count, width).astype(np.int64)
        self.pos = end
        return words.dot(1 << np.arange(width - 1, -1, -1, dtype=np.int64))


def decode_brush_rle(rle, height: int, width: int, where: str = "brush") -> np.ndarray:
    """Label Studio brush RLE (``@thi.ng/rle-pack`` of the RGBA canvas) -> bool [height, width].

    Inverts ``backend/brush.py``'s encoder and reads everything the format allows (literal and
    repeat chunks, any word size). A pixel is in the mask when its alpha is at least half opaque:
    the LS brush anti-aliases stroke edges with partial alpha.
    """
    try:
        bits = _Bits(rle)
        total = bits.read(32)
        word = bits.read(5) + 1
        widths = [bits.read(4) + 1 for _ in range(4)]
        out = np.empty(total, np.int64)
        n = 0
        while n < total:
            repeat = bits.read(1)
            count = bits.read(widths[bits.read(2)]) + 1
            if n + count > total:
                raise ValueError("overlong chunk")
            if repeat:
                out[n:n + count] = bits.read(word)
            else:
                out[n:n + count] = bits.read_words(count, word)
            n += count
    except (ValueError, TypeError) as e:
        raise InputError(f"{where}: corrupt brush RLE ({e}): re-export the Label Studio project") from None
    if total != height * width * 4:
        raise InputError(f"{where}: brush mask holds {total // 4} pixels but the image is {width}x{height} "
                         f"({height * width}): original_width/original_height do not match the mask")
    alpha = out.reshape(height, width, 4)[..., 3]
    return alpha >= 128
