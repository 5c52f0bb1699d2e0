"""FiftyOne frame labels of a long video are written in bulk (a few database writes for thousands of
frames, labels built a chunk at a time) and equal what the per-frame Sample API path writes."""
from __future__ import annotations

import collections
import time
import uuid

import numpy as np
import pymongo
import pytest
from test_fiftyone_env import fo_session  # noqa: F401  (the session's private MongoDB)
from test_long_video import long_video

from clipvis_core.export.fiftyone import summary_field, tracks_to_labels, write_sample
from clipvis_core.tracks import Track, VideoInfo, VideoTracks, encode_mask, rle_box

N, H, W = 2000, 64, 96


def moving_tracks(frame_indices: list[int]) -> VideoTracks:
    """Three boxes moving across the frame; the third one leaves for a while (absent frames)."""
    tracks = []
    for tid in range(3):
        rles = []
        for i in frame_indices:
            m = np.zeros((H, W), bool)
            if not (tid == 2 and 500 <= i < 900):
                x = (i * (tid + 1)) % (W - 12)
                m[10 + 12 * tid: 20 + 12 * tid, x: x + 12] = True
            rles.append(encode_mask(m))
        tracks.append(Track(id=tid + 1, label=["car", "person", "ball"][tid], category_id=tid, score=0.9 - 0.1 * tid,
                            masks=rles, boxes=[rle_box(r) for r in rles], frame_scores=[0.5 + 0.1 * tid] * len(rles)))
    info = VideoInfo("long.avi", W, H, 25.0, len(frame_indices), list(frame_indices))
    return VideoTracks(video=info, vocabulary=["car", "person", "ball"], tracks=tracks, model="test")


def per_frame_write(sample, labels, label_field: str) -> None:
    """The Sample API path the bulk writer replaced: every frame through ``sample.frames``, one save."""
    for fn, frame in sample.frames.items():
        if fn not in labels.frames and frame.has_field(label_field) and frame[label_field] is not None:
            frame[label_field] = None
    for fn, dets in labels.frames.items():
        sample.frames[fn][label_field] = dets
    sample[summary_field(label_field)] = labels.summary
    sample.save()


class Commands(pymongo.monitoring.CommandListener):
    """Database round trips of this process (pymongo's command monitoring), by command name."""

    def __init__(self):
        self.seen: collections.Counter = collections.Counter()

    def started(self, event):
        if event.command_name not in ("hello", "isMaster", "ismaster", "ping", "endSessions"):
            self.seen[event.command_name] += 1

    def succeeded(self, event):
        pass

    def failed(self, event):
        pass

    def count(self, fn) -> tuple[int, dict]:
        before = collections.Counter(self.seen)
        fn()
        diff = self.seen - before
        return sum(diff.values()), dict(diff)


def stored(sample, field: str) -> dict[int, list[tuple]]:
    """Frame -> comparable detections (every attribute except the per-object id)."""
    out = {}
    for fn, frame in sample.frames.items():
        dets = frame[field] if frame.has_field(field) else None
        if dets is not None:
            out[fn] = [(d.label, tuple(d.bounding_box), d.mask.tobytes(), d.mask.shape, d.confidence, d.index,
                        d.frame_score, d.instance.id if d.instance else None) for d in dets.detections]
    return out


@pytest.fixture(scope="module")
def commands(fo_session):  # noqa: F811
    import fiftyone.core.odm.database as fodb

    listener = Commands()
    pymongo.monitoring.register(listener)  # applies to clients created from now on:
    fodb._disconnect()  # FiftyOne reconnects on its next call
    # ...but its repository factory keeps collections of the closed client (delegated operations,
    # execution stores): later modules' dataset deletes and operator stores would use them.
    import fiftyone.factory.repo_factory as repo_factory

    repo_factory.RepositoryFactory.repos.clear()
    repo_factory._db = None
    return listener


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return long_video(tmp_path_factory.mktemp("bulk") / "long.avi", N, H, W)


@pytest.fixture
def dataset(commands, video):
    import fiftyone as fo

    ds = fo.Dataset(f"bulk-{uuid.uuid4().hex[:8]}")
    ds.add_samples([fo.Sample(filepath=str(video)) for _ in range(2)])
    ds.compute_metadata()
    yield ds
    ds.delete()


def test_long_video_written_in_bulk_equals_per_frame_path(dataset, commands):
    bulk, ref = dataset.first(), dataset.last()
    # Labels from an earlier run on every frame, and another field the write must leave alone.
    gt = tracks_to_labels(moving_tracks([6])).frames[7]
    for s in (bulk, ref):
        per_frame_write(s, tracks_to_labels(moving_tracks(list(range(N)))), "clipvis")
        s.frames[7]["gt"] = gt
        s.save()
    # This run labels every 2nd frame only: the others must lose the earlier run's labels.
    labels = tracks_to_labels(moving_tracks(list(range(0, N, 2))), keyframe_tolerance=0.005)
    s_bulk, s_ref = dataset[bulk.id], dataset[ref.id]
    t0 = time.perf_counter()
    bulk_ops, bulk_by = commands.count(lambda: write_sample(s_bulk, labels, "clipvis", chunk=300))
    t1 = time.perf_counter()
    ref_ops, ref_by = commands.count(lambda: per_frame_write(s_ref, labels, "clipvis"))
    print(f"{N // 2} labelled frames of {N}: bulk {bulk_ops} round trips {bulk_by} in {t1 - t0:.2f} s; "
          f"per-frame path {ref_ops} {ref_by} in {time.perf_counter() - t1:.2f} s")
    # Per chunk of 300 frames one bulk write, which FiftyOne's latency batcher sends as a few growing
    # batches (1, 8, 64, ...: at most 6 for 300), plus a fixed few: clears, frame ids, summary, reload.
    assert bulk_ops <= 6 * 4 + 10, bulk_by
    got, want = stored(dataset[bulk.id], "clipvis"), stored(dataset[ref.id], "clipvis")
    assert sorted(got) == list(range(1, N + 1, 2)) and got == want
    assert any(len(v) == 2 for v in got.values()) and any(len(v) == 3 for v in got.values())  # a track left
    assert stored(dataset[bulk.id], "gt") == stored(dataset[ref.id], "gt") != {}
    kf = [d.keyframe for fr in dataset[bulk.id].frames.values() if fr["clipvis"] is not None
          for d in fr["clipvis"].detections]
    assert 0 < sum(kf) < len(kf) / 10  # keyframe tags travel with the bulk write: few keyframes on linear motion
    assert dataset[bulk.id][summary_field("clipvis")] == dataset[ref.id][summary_field("clipvis")]


def test_fresh_sample_frames_created_in_one_write_not_one_read_per_frame(dataset, commands):
    """Samples without frame documents: the bulk writer creates only the labelled frames, in one insert;
    the per-frame path reads every frame it creates (``sample.frames[n]`` asks the database first)."""
    labels = tracks_to_labels(moving_tracks(list(range(0, N, 4))))
    s_bulk, s_ref = dataset.first(), dataset.last()
    ops, by = commands.count(lambda: write_sample(s_bulk, labels, "clipvis"))
    ref_ops, ref_by = commands.count(lambda: per_frame_write(s_ref, labels, "clipvis"))
    print(f"fresh sample, {N // 4} labelled frames: bulk {ops} round trips {by}; per-frame path {ref_ops} {ref_by}")
    # One bulk insert and one bulk update (each a few growing batches), plus a fixed few.
    assert by.get("insert", 0) <= 6 and ops <= 30, by
    assert ref_by.get("find", 0) >= N // 4
    assert len(s_bulk.frames) == N // 4  # no empty documents for the frames the run skipped
    assert s_bulk[summary_field("clipvis")] is not None  # the caller's sample object was reloaded
    assert stored(dataset[s_bulk.id], "clipvis") == stored(dataset[s_ref.id], "clipvis")
