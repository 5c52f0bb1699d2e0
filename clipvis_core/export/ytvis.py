"""VideoTracks -> YouTube-VIS results JSON, the format the YTVIS / LV-VIS / OVIS evaluators read.

One result per track: ``{"video_id", "category_id", "score", "segmentations"}`` with one COCO RLE
(``counts`` as str) per processed frame. With a frame stride > 1 those are the processed frames
only; the official evaluators expect every frame, so evaluate on stride-1 runs.
"""
from __future__ import annotations

import os
from typing import Iterable, Iterator, Sequence

from ..tracks import VideoTracks, write_atomic
from ..vocabulary import Vocabulary
from .jsonstream import dump


def category_ids(vocabulary: Vocabulary | Sequence[str]) -> list[int]:
    """Category id per class: the vocabulary's own ids when every class has a distinct one
    (built-in dataset vocabularies), else 1-based positions (YTVIS ids start at 1)."""
    n = len(vocabulary)
    meta = getattr(vocabulary, "meta", ())
    ids = [m.get("id") for m in meta] if len(meta) == n else []
    if ids and all(isinstance(i, int) and not isinstance(i, bool) for i in ids) and len(set(ids)) == n:
        return ids
    return list(range(1, n + 1))


def _rle(rle: dict) -> dict:
    counts = rle["counts"]
    return {"size": [int(v) for v in rle["size"]],
            "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts}


def iter_ytvis_results(tracks: VideoTracks, video_id: int | str = 1,
                       vocabulary: Vocabulary | Sequence[str] | None = None) -> Iterator[dict]:
    """Results one track at a time, ``segmentations`` a generator (for ``write_ytvis_results``)."""
    ids = category_ids(vocabulary if vocabulary is not None else tracks.vocabulary)
    if len(ids) != len(tracks.vocabulary):
        raise ValueError(f"vocabulary has {len(ids)} classes but the tracks were made with {len(tracks.vocabulary)}")
    for t in tracks.tracks:
        yield {"video_id": video_id, "category_id": ids[t.category_id], "score": float(t.score),
               "segmentations": (_rle(m) for m in t.masks)}


def to_ytvis_results(tracks: VideoTracks, video_id: int | str = 1,
                     vocabulary: Vocabulary | Sequence[str] | None = None) -> list[dict]:
    """Results for one video; pass the ``Vocabulary`` used to keep a dataset's own category ids."""
    return [{**r, "segmentations": list(r["segmentations"])} for r in iter_ytvis_results(tracks, video_id, vocabulary)]


def write_ytvis_results(path: str | os.PathLike, results: Iterable[dict]) -> os.PathLike:
    """Write results atomically (temp file + rename: never half a file), element by element:
    ``iter_ytvis_results`` output streams with RAM flat in the video's length."""
    return write_atomic(path, lambda f: dump(results, f))
