"""Decode ahead of inference: a background thread fills a small queue from a frame iterator.

Video decoding (FFmpeg/OpenCV) releases the GIL, so the next frames are ready when the network
asks for them. The queue is bounded (RAM stays a few frames), an exception in the reader is raised
in the consumer at the position it happened, and ``close`` stops the thread before the caller
closes the underlying reader.
"""
from __future__ import annotations

import queue
import threading
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")
_END = object()


class Prefetch(Iterator[T]):
    def __init__(self, items: Iterable[T], depth: int = 4):
        self._q: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._fill, args=(iter(items),), name="clipvis-decode", daemon=True)
        self._thread.start()

    def _fill(self, it: Iterator[T]) -> None:
        try:
            for item in it:
                if not self._put(item):
                    return
            self._put(_END)
        except BaseException as e:  # re-raised in the consumer
            self._put(_Failure(e))

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def __next__(self) -> T:
        item = self._q.get()
        if item is _END:
            self._q.put(_END)  # later calls keep ending
            raise StopIteration
        if isinstance(item, _Failure):
            self._q.put(item)
            raise item.error
        return item

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


class _Failure:
    def __init__(self, error: BaseException):
        self.error = error
