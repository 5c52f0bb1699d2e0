"""Decode-ahead thread: order kept, reader errors surface in the consumer, close stops the reader."""
import threading

import pytest

from clipvis_core.prefetch import Prefetch


def test_items_in_order_and_end_repeats():
    p = Prefetch(iter(range(50)), depth=3)
    assert list(p) == list(range(50))
    with pytest.raises(StopIteration):
        next(p)
    p.close()


def test_reader_error_raised_at_its_position():
    def items():
        yield 1
        yield 2
        raise OSError("corrupt packet")

    p = Prefetch(items())
    assert [next(p), next(p)] == [1, 2]
    with pytest.raises(OSError, match="corrupt packet"):
        next(p)
    p.close()


def test_close_mid_stream_stops_reading():
    read = []

    def items():
        for i in range(10_000):
            read.append(i)
            yield i

    p = Prefetch(items(), depth=2)
    assert next(p) == 0
    p.close()
    assert not any(t.name == "clipvis-decode" and t.is_alive() for t in threading.enumerate())
    assert len(read) <= 5  # bounded by the queue, not the video length
