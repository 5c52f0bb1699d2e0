"""open_video on real files: several codecs/containers, frame directories, images, and bad input."""
import subprocess

import cv2
import numpy as np
import pytest
from videogen import make_video, shape_frames, write_frame_dir, write_video

from clipvis_core.errors import InputError
from clipvis_core.video import DEFAULT_FPS, open_video

T, H, W = 13, 97, 131


def _decoded_size_ok(info):
    # OpenCV's writers round odd sizes down to even for some codecs; the reader reports what decodes.
    return info.height in (H, H - 1) and info.width in (W, W - 1)


@pytest.mark.parametrize("name,codec", [
    ("v.mp4", None), ("v.avi", None), ("v.mkv", None), ("v.webm", None), ("v.mov", None), ("h264.mp4", "h264"),
])
def test_containers_decode_every_frame(tmp_path, name, codec):
    src = shape_frames(T, H, W)
    path = write_video(tmp_path / name, src, fps=10, codec=codec)
    with open_video(path) as reader:
        info = reader.info
        assert info.num_frames == T and len(reader) == T
        assert info.frame_indices == list(range(T))
        assert info.fps == pytest.approx(10)
        assert _decoded_size_ok(info)
        got = 0
        for pos, frame in reader:
            assert pos == got
            assert frame.dtype == np.uint8 and frame.shape == (info.height, info.width, 3)
            ref = src[pos, : info.height, : info.width].astype(int)
            assert np.abs(frame.astype(int) - ref).mean() < 12  # same picture, RGB order, lossy codec
            got += 1
        assert got == T


@pytest.mark.parametrize("name,codec", [("one.mp4", None), ("one.webm", None), ("one_h264.mp4", "h264")])
def test_one_frame_video(tmp_path, name, codec):
    reader = open_video(make_video(tmp_path / name, 1, H, W, codec=codec))
    assert reader.info.num_frames == 1 and reader.info.frame_indices == [0]
    assert [p for p, _ in reader] == [0]


def test_animated_gif(tmp_path):
    src = make_video(tmp_path / "v.avi", 6, 40, 56)
    gif = tmp_path / "v.gif"
    subprocess.run(["ffmpeg", "-y", "-loglevel", "error", "-i", str(src), str(gif)], check=True)
    reader = open_video(gif)
    assert reader.info.num_frames == 6 and sum(1 for _ in reader) == 6


def test_frame_count_when_container_lies(tmp_path):
    src = make_video(tmp_path / "src.avi", T, 48, 64)
    for fmt, suffix, codec in [("webm", ".webm", "libvpx"), ("matroska", ".mkv", "libx264")]:
        out = tmp_path / f"piped{suffix}"
        # Written to a pipe, the muxer cannot go back to store the duration: the header has no count.
        with open(out, "wb") as f:
            subprocess.run(["ffmpeg", "-loglevel", "error", "-i", str(src), "-c:v", codec, "-f", fmt, "pipe:1"],
                           stdout=f, check=True)
        cap = cv2.VideoCapture(str(out))
        claimed = cap.get(cv2.CAP_PROP_FRAME_COUNT)
        cap.release()
        assert claimed != T  # the container really misreports, so the test means something
        reader = open_video(out)
        assert reader.info.num_frames == T
        assert sum(1 for _ in reader) == T


def test_selection_stride_time_range_and_max(tmp_path):
    path = make_video(tmp_path / "v.avi", 30, 48, 64, fps=10)
    full = [f for _, f in open_video(path)]
    cases = [
        (dict(frame_stride=4), list(range(0, 30, 4))),
        (dict(start_time=0.5, end_time=1.2), list(range(5, 12))),
        (dict(start_time=1.0, frame_stride=3, max_frames=4), [10, 13, 16, 19]),
        (dict(max_frames=1), [0]),
        (dict(end_time=100.0), list(range(30))),
    ]
    for kwargs, expected in cases:
        reader = open_video(path, **kwargs)
        assert reader.info.frame_indices == expected, kwargs
        assert reader.info.num_frames == len(expected)
        frames = list(reader)
        assert [p for p, _ in frames] == list(range(len(expected)))
        for (_, f), idx in zip(frames, expected):
            assert np.array_equal(f, full[idx])  # the same decoder gives the same pixels


def test_max_frames_stops_counting_early(tmp_path):
    path = make_video(tmp_path / "long.avi", 200, 24, 32)
    assert open_video(path).source_frame_count == 200
    reader = open_video(path, max_frames=5, frame_stride=2)
    assert reader.source_frame_count is None  # counting stopped once the selection was known
    assert reader.info.frame_indices == [0, 2, 4, 6, 8]
    assert len(list(reader)) == 5


def test_lazy_partial_iteration_and_reiteration(tmp_path):
    path = make_video(tmp_path / "v.mp4", 20, 32, 48)
    reader = open_video(path)
    it = iter(reader)
    assert next(it)[0] == 0 and next(it)[0] == 1
    assert len(reader._caps) == 1  # one decoder open, frames pulled one at a time
    reader.close()
    assert reader._caps == []
    assert sum(1 for _ in reader) == 20  # iterating again starts over


def test_frame_directory_natural_order_and_odd_size(tmp_path):
    src = shape_frames(12, H, W, seed=3)
    d = tmp_path / "frames"
    d.mkdir()
    for i, f in enumerate(src):  # no zero padding: 'f10' must come after 'f9'
        cv2.imwrite(str(d / f"f{i}.png"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    (d / "notes.txt").write_text("ignored")
    (d / "._f0.png").write_bytes(b"macOS resource fork")  # hidden: ignored
    reader = open_video(d)
    assert (reader.info.height, reader.info.width, reader.info.fps) == (H, W, DEFAULT_FPS)
    assert reader.info.num_frames == 12
    for pos, frame in reader:
        assert np.array_equal(frame, src[pos])  # PNG is lossless
    sel = open_video(d, default_fps=6, start_time=0.5, frame_stride=2)
    assert sel.info.fps == 6 and sel.info.frame_indices == [3, 5, 7, 9, 11]


def test_jpeg_frame_dir_ytvis_layout(tmp_path):
    d = write_frame_dir(tmp_path / "JPEGImages" / "vid1", shape_frames(7, 40, 60))
    reader = open_video(d)
    assert reader.info.num_frames == 7 and (reader.info.height, reader.info.width) == (40, 60)
    assert len(list(reader)) == 7


def test_image_is_a_one_frame_video(tmp_path):
    src = shape_frames(1, H, W)[0]
    p = tmp_path / "img.png"
    cv2.imwrite(str(p), cv2.cvtColor(src, cv2.COLOR_RGB2BGR))
    reader = open_video(p)
    assert reader.info.num_frames == 1 and reader.info.frame_indices == [0]
    [(pos, frame)] = list(reader)
    assert pos == 0 and np.array_equal(frame, src)


def test_many_frames(tmp_path):
    path = make_video(tmp_path / "many.webm", 400, 24, 32)
    reader = open_video(path, frame_stride=7)
    assert reader.source_frame_count == 400
    assert reader.info.frame_indices == list(range(0, 400, 7))
    assert sum(1 for _ in reader) == len(range(0, 400, 7))


def _zero_frame_avi(path):
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    w.release()
    return path


def _bad_inputs(tmp_path):
    corrupt = tmp_path / "random.mp4"
    corrupt.write_bytes(np.random.default_rng(0).bytes(20000))
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    txt_dir = tmp_path / "txtonly"
    txt_dir.mkdir()
    (txt_dir / "a.txt").write_text("x")
    bad_jpg = tmp_path / "bad.jpg"
    bad_jpg.write_bytes(b"not a jpeg at all")
    doc = tmp_path / "notes.txt"
    doc.write_text("hello")
    return {
        "missing": (tmp_path / "nope.mp4", "not found"),
        "corrupt": (corrupt, "cannot decode"),
        "zero frames": (_zero_frame_avi(tmp_path / "zero.avi"), "no decodable frames"),
        "empty dir": (empty_dir, "no images"),
        "dir without images": (txt_dir, "no images"),
        "corrupt image": (bad_jpg, "cannot read image"),
        "unsupported suffix": (doc, "unsupported input"),
    }


def test_bad_sources_raise_one_line_input_error(tmp_path):
    for case, (path, words) in _bad_inputs(tmp_path).items():
        with pytest.raises(InputError) as e:
            open_video(path)
        msg = str(e.value)
        assert words in msg and "\n" not in msg, case


@pytest.mark.parametrize("kwargs,words", [
    (dict(frame_stride=0), "frame stride"),
    (dict(frame_stride=1.5), "frame stride"),
    (dict(max_frames=0), "max frames"),
    (dict(start_time=-1.0), "start time"),
    (dict(start_time="1"), "start time"),
    (dict(start_time=2.0, end_time=1.0), "time range"),
    (dict(end_time=0.0), "end time"),
    (dict(start_time=50.0), "no frames selected"),
])
def test_bad_options_raise_input_error(tmp_path, kwargs, words):
    path = make_video(tmp_path / "v.avi", 10, 24, 32, fps=10)
    with pytest.raises(InputError, match=words):
        open_video(path, **kwargs)


def test_mixed_frame_sizes_fail_when_opened(tmp_path):
    d = write_frame_dir(tmp_path / "mixed", shape_frames(3, 40, 60), ext=".png")
    write_frame_dir(tmp_path / "other", shape_frames(1, 20, 30), ext=".png")
    (tmp_path / "other" / "00000.png").rename(d / "00003.png")
    with pytest.raises(InputError, match="00003.png is 30x20 but 00000.png is 60x40.*one size"):
        open_video(d)  # from the image headers: before any model loads
    assert len(open_video(d, max_frames=3)) == 3  # a selection of same-size frames is fine


def test_explicit_frame_indices_reread_a_selection(tmp_path):
    path = make_video(tmp_path / "v.mkv", 25, 32, 48)
    first = open_video(path, frame_stride=3, start_time=0.2)
    again = open_video(path, frame_indices=first.info.frame_indices)
    assert again.info.frame_indices == first.info.frame_indices
    for (pa, fa), (pb, fb) in zip(first, again):
        assert pa == pb and np.array_equal(fa, fb)
    d = write_frame_dir(tmp_path / "fd", shape_frames(6, 20, 30))
    assert open_video(d, frame_indices=[1, 4]).info.num_frames == 2
    with pytest.raises(InputError, match="has 25 frames"):
        open_video(path, frame_indices=[0, 30])


def test_rotation_metadata_applied(tmp_path):
    src = make_video(tmp_path / "v.mp4", 5, 48, 80, codec="h264")
    rot = tmp_path / "rot.mp4"
    # A phone-style portrait clip: landscape pixels plus a 90 degree display rotation.
    subprocess.run(["ffmpeg", "-y", "-loglevel", "error", "-i", str(src), "-c", "copy",
                    "-metadata:s:v:0", "rotate=90", str(rot)], check=True)
    reader = open_video(rot)
    assert (reader.info.width, reader.info.height) == (48, 80)
    assert all(f.shape == (80, 48, 3) for _, f in reader)


def test_a_cut_off_video_is_segmented_as_far_as_it_decodes_and_said_once(tmp_path, caplog):
    """A copy cut short (moov atom first, so the container still declares every frame) decodes only
    its first frames: those are the video, and a warning names the file and both counts, once."""
    full = write_video(tmp_path / "full.mp4", shape_frames(40, 64, 96, seed=3), fps=10.0, codec="h264")
    faststart = tmp_path / "faststart.mp4"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(full), "-c", "copy", "-movflags", "+faststart",
                    str(faststart)], check=True)
    data = faststart.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) * 6 // 10])
    with caplog.at_level("WARNING", logger="clipvis_core.video"):
        assert open_video(full).info.num_frames == 40
        assert not caplog.records  # a whole file: nothing to say
        n = open_video(cut).info.num_frames
        again = open_video(cut)
    assert 0 < n < 36 and again.info.num_frames == n and len(list(again)) == n
    assert [r.getMessage() for r in caplog.records] == [
        f"video {cut}: only {n} of the 40 frames its container declares decode: the file looks truncated or "
        f"damaged; segmenting those {n} (re-encode or re-copy it to check)"]
