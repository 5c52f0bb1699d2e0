"""Label Studio backend parts without a network: brush RLE, per-tag strategies, config planning,
and the media fetcher's policy against a real HTTP server on 127.0.0.1."""
from __future__ import annotations

import math

import numpy as np
import pytest
from label_studio_tools.core.label_config import parse_config
from test_backend_helpers import ACCESS, LEGACY_TOKEN, PAT, decode_ls_rle, media_root, media_server, other_server  # noqa: F401
from videogen import shape_frames

from backend.brush import mask_to_rle
from backend.media import LabelStudioAuth, MediaFetcher, MediaRefused
from backend.strategies import ConfigError, plan, vocabulary_hash
from clipvis_core.tracks import Track, VideoInfo, VideoTracks, encode_mask, rle_box

from lsconfigs import VIDEO_CONFIG  # noqa: E402


# -- brush RLE -------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(1, 1), (7, 5), (96, 128), (300, 700)])
def test_brush_rle_round_trips_through_reference_decoder(shape):
    rng = np.random.default_rng(sum(shape))
    mask = rng.random(shape) > 0.6
    mask[: shape[0] // 2, : shape[1] // 3] = True  # long runs: exercises 8/16-bit count fields
    flat = decode_ls_rle(mask_to_rle(mask))
    assert flat.size == mask.size * 4
    rgba = flat.reshape(*shape, 4)
    assert np.array_equal(rgba[..., 3] == 255, mask)
    assert set(np.unique(rgba)) <= {0, 255}


def test_brush_rle_all_empty_and_full():
    for mask in (np.zeros((480, 640), bool), np.ones((480, 640), bool)):  # runs over 65536 bytes split
        assert np.array_equal(decode_ls_rle(mask_to_rle(mask)).reshape(480, 640, 4)[..., 3] == 255, mask)


# -- strategies ------------------------------------------------------------------------------------
def _tracks_from_shapes(num_frames=8, present=None, frame_indices=None, fps=10.0) -> VideoTracks:
    """Tracks made from the generated disc (drawn red): masks where the red channel dominates."""
    frames = shape_frames(num_frames, 96, 128)
    present = present if present is not None else list(range(num_frames))
    masks, boxes = [], []
    for t, f in enumerate(frames):
        m = (f[..., 0] > 150) & (f[..., 1] < 100) if t in present else np.zeros(f.shape[:2], bool)
        rle = encode_mask(m)
        masks.append(rle)
        boxes.append(rle_box(rle))
    track = Track(id=3, label="car", category_id=0, score=0.8, masks=masks, boxes=boxes, frame_scores=[0.8] * num_frames)
    info = VideoInfo("v.mp4", 128, 96, fps, num_frames, frame_indices or list(range(num_frames)))
    return VideoTracks(info, ["car, automobile", "Ball"], [track])


def test_video_config_plan_uses_project_labels_and_synonyms():
    (target,) = plan(parse_config(VIDEO_CONFIG))
    assert (target.from_name, target.to_name, target.data_key, target.kind) == ("box", "video", "video", "video")
    assert target.labels == ("Vehicle", "Ball")
    assert target.vocabulary.synonyms == [["car", "automobile"], ["Ball"]]


@pytest.mark.parametrize("rate_attr, task_data, ls_fps", [
    ('framerate="20"', {}, 20.0),  # the file's own rate: LS frames are the source frames, 1-based
    ("", {}, 24.0),  # Label Studio's default
    ('framerate="$fps"', {"fps": "12.5"}, 12.5),  # from task data, as the editor resolves it
])
def test_videorectangle_sequence_frames_percent_and_gaps(rate_attr, task_data, ls_fps):
    present = [0, 1, 2, 5, 6]  # a gap at processed frames 3-4
    tracks = _tracks_from_shapes(8, present=present, frame_indices=[0, 2, 4, 6, 8, 10, 12, 14], fps=20.0)
    config = VIDEO_CONFIG.replace('framerate="10"', rate_attr)
    (target,) = plan(parse_config(config), config)
    (region,) = target.regions(tracks, frames_count=15, task_data=task_data)
    assert region["type"] == "videorectangle" and region["from_name"] == "box" and region["to_name"] == "video"
    assert region["score"] == pytest.approx(0.8)
    value = region["value"]
    assert value["labels"] == ["Vehicle"] and value["duration"] == pytest.approx(15 / 20.0)
    assert value["framesCount"] == math.floor(15 / 20.0 * ls_fps + 0.5)
    seq = value["sequence"]
    times = [tracks.video.frame_indices[i] / 20.0 for i in present]
    assert [s["frame"] for s in seq] == [math.floor(t * ls_fps + 0.5) + 1 for t in times]  # JS Math.round
    if ls_fps == 20.0:
        assert [s["frame"] for s in seq] == [tracks.video.frame_indices[i] + 1 for i in present]
    assert [s["time"] for s in seq] == pytest.approx(times)
    assert [s["enabled"] for s in seq] == [True, True, False, True, False]
    for s, i in zip(seq, present):
        x, y, w, h = tracks.tracks[0].boxes[i]
        assert (s["x"], s["y"]) == pytest.approx((x / 128 * 100, y / 96 * 100))
        assert (s["width"], s["height"]) == pytest.approx((w / 128 * 100, h / 96 * 100))
        assert s["rotation"] == 0 and 0 <= s["x"] <= 100 and 0 < s["width"] <= 100


def test_videorectangle_keeps_one_keyframe_per_label_studio_frame():
    """A 20 fps file shown at framerate 5: four source frames fall on each LS frame."""
    tracks = _tracks_from_shapes(12, fps=20.0)
    config = VIDEO_CONFIG.replace('framerate="10"', 'framerate="5"')
    (target,) = plan(parse_config(config), config)
    (region,) = target.regions(tracks, frames_count=12)
    seq = region["value"]["sequence"]
    assert region["value"]["framesCount"] == 3  # 0.6 s at 5 fps
    assert [s["frame"] for s in seq] == [1, 2, 3]
    # The latest source frame on each LS frame wins (its box and time).
    assert [s["time"] for s in seq] == pytest.approx([0.05, 0.25, 0.55])
    assert seq[-1]["enabled"] is False and seq[0]["enabled"] is True


IMAGE_CONFIG = """<View>
  <Image name="image" value="$image"/>
  <BrushLabels name="brush" toName="image"><Label value="Ball" predicted_values="disc,circle"/></BrushLabels>
  <RectangleLabels name="rect" toName="image"><Label value="Ball" predicted_values="disc,circle"/></RectangleLabels>
  <PolygonLabels name="poly" toName="image"><Label value="Ball" predicted_values="disc,circle"/></PolygonLabels>
</View>"""


def test_image_strategies_brush_rectangle_polygon():
    tracks = _tracks_from_shapes(1)
    mask = tracks.tracks[0].mask(0)
    targets = plan(parse_config(IMAGE_CONFIG))
    by_type = {t.strategy.control: t.regions(tracks)[0] for t in targets}
    assert set(by_type) == {"BrushLabels", "RectangleLabels", "PolygonLabels"}
    for control, region in by_type.items():
        assert region["type"] == control.lower() and region["value"][control.lower()] == ["Ball"]
        assert (region["original_width"], region["original_height"]) == (128, 96)
    brush = by_type["BrushLabels"]["value"]
    assert brush["format"] == "rle"
    assert np.array_equal(decode_ls_rle(brush["rle"]).reshape(96, 128, 4)[..., 3] == 255, mask)
    rect = by_type["RectangleLabels"]["value"]
    x, y, w, h = tracks.tracks[0].boxes[0]
    assert (rect["x"], rect["y"], rect["width"], rect["height"]) == pytest.approx((x / 1.28, y / 0.96, w / 1.28, h / 0.96))
    pts = np.array(by_type["PolygonLabels"]["value"]["points"])
    assert len(pts) >= 3
    # Polygon vertices lie on the mask outline: inside its box (in percent), spanning most of it.
    assert pts[:, 0].min() >= x / 1.28 - 1 and pts[:, 0].max() <= (x + w) / 1.28 + 1
    assert pts[:, 1].max() - pts[:, 1].min() > 0.7 * h / 0.96


def test_unsupported_config_names_supported_tags():
    with pytest.raises(ConfigError) as e:
        plan(parse_config('<View><Text name="t" value="$text"/><Choices name="c" toName="t"><Choice value="a"/></Choices></View>'))
    msg = str(e.value)
    assert "Choices" in msg and "VideoRectangle" in msg and "BrushLabels" in msg and "\n" not in msg


def test_videorectangle_without_labels_is_explained():
    with pytest.raises(ConfigError, match="Label value"):
        plan(parse_config('<View><Video name="v" value="$video"/><VideoRectangle name="b" toName="v"/></View>'))


def test_vocabulary_hash_changes_with_labels_synonyms_and_frame_rate():
    def version(config):
        return vocabulary_hash(plan(parse_config(config), config))

    a = version(VIDEO_CONFIG)
    assert a == version(VIDEO_CONFIG)
    assert a != version(VIDEO_CONFIG.replace("car, automobile", "car"))
    assert a != version(VIDEO_CONFIG.replace('framerate="10"', 'framerate="25"'))


# -- media -----------------------------------------------------------------------------------------
def _fetcher(server, tmp_path, token=LEGACY_TOKEN, **kw):
    return MediaFetcher(server.url, LabelStudioAuth(server.url, token), cache_dir=tmp_path / "cache", **kw)


def test_upload_url_fetched_with_legacy_token(media_server, media_root, tmp_path):
    (media_root / "clip.mp4").write_bytes(b"video-bytes")
    path = _fetcher(media_server, tmp_path).fetch("/data/upload/1/clip.mp4")
    assert path.read_bytes() == b"video-bytes" and path.suffix == ".mp4"
    assert media_server.requests == [("/data/upload/1/clip.mp4", f"Token {LEGACY_TOKEN}")]


def test_personal_access_token_is_exchanged_for_bearer(media_server, media_root, tmp_path):
    (media_root / "a.png").write_bytes(b"png")
    path = _fetcher(media_server, tmp_path, token=PAT).fetch(media_server.url + "/data/local-files/?d=a.png")
    assert path.read_bytes() == b"png"
    assert media_server.requests[-1][1] == f"Bearer {ACCESS}"


def test_local_files_read_from_document_root_without_download(media_server, media_root, tmp_path):
    (media_root / "sub").mkdir()
    (media_root / "sub" / "v.mp4").write_bytes(b"x")
    f = _fetcher(media_server, tmp_path, document_root=media_root)
    assert f.fetch("/data/local-files/?d=sub/v.mp4") == (media_root / "sub" / "v.mp4").resolve()
    assert f.fetch(str(media_root / "sub" / "v.mp4")) == (media_root / "sub" / "v.mp4").resolve()
    assert media_server.requests == []


@pytest.mark.parametrize("url, why", [
    ("file:///etc/passwd", "file://"),
    ("/data/local-files/?d=../../etc/passwd", "refused"),
    ("/data/upload/../../secret.mp4", ".."),
    ("/etc/passwd", "outside LOCAL_FILES_DOCUMENT_ROOT"),
    ("s3://bucket/clip.mp4", "s3://"),
    ("", "no media URL"),
])
def test_refused_urls(media_server, media_root, tmp_path, url, why):
    with pytest.raises(MediaRefused, match=why.replace(".", r"\.")):
        _fetcher(media_server, tmp_path, document_root=media_root).fetch(url)
    assert media_server.requests == []


def test_other_hosts_refused_unless_allow_listed_and_never_get_the_token(media_server, other_server, tmp_path):
    (other_server.root / "c.mp4").write_bytes(b"cdn")
    url = other_server.url + "/open/c.mp4"
    with pytest.raises(MediaRefused, match="not allowed"):
        _fetcher(media_server, tmp_path).fetch(url)
    assert other_server.requests == []
    path = _fetcher(media_server, tmp_path, allowed_hosts=[other_server.url]).fetch(url)
    assert path.read_bytes() == b"cdn" and other_server.requests == [("/open/c.mp4", None)]


def test_redirect_to_another_host_refused(media_server, other_server, tmp_path):
    (other_server.root / "c.mp4").write_bytes(b"cdn")
    url = f"{media_server.url}/redirect?to={other_server.url}/open/c.mp4"
    with pytest.raises(MediaRefused, match="redirect to host"):
        _fetcher(media_server, tmp_path).fetch(url)
    assert other_server.requests == []
    path = _fetcher(media_server, tmp_path, allowed_hosts=[other_server.url]).fetch(url)
    assert path.read_bytes() == b"cdn" and other_server.requests[-1][1] is None


def test_size_limit(media_server, media_root, tmp_path):
    (media_root / "big.mp4").write_bytes(b"0" * 5000)
    with pytest.raises(MediaRefused, match="limit"):
        _fetcher(media_server, tmp_path, max_bytes=4096).fetch("/data/upload/1/big.mp4")
    assert not list((tmp_path / "cache").rglob("*big*")) and not list((tmp_path / "cache" / "media").glob("*.mp4"))


def test_wrong_token_is_a_clear_error(media_server, media_root, tmp_path):
    from backend.media import MediaError

    (media_root / "clip.mp4").write_bytes(b"v")
    with pytest.raises(MediaError, match="HTTP 401"):
        _fetcher(media_server, tmp_path, token="wrong-token").fetch("/data/upload/1/clip.mp4")


@pytest.mark.parametrize("url, text, origin", [
    ("http://127.0.0.1:8080/data/upload/1/a.mp4", "http://127.0.0.1:8080/data/upload/1/a.mp4", "http://127.0.0.1:8080"),
    ("HTTPS://LS.Example.com/data/a.mp4?x=1#frag", "https://ls.example.com/data/a.mp4?x=1", "https://ls.example.com:443"),
    ("http://[0:0::1]:9000", "http://[::1]:9000/", "http://[::1]:9000"),
    ("http://label_studio:8080/a", "http://label_studio:8080/a", "http://label_studio:8080"),  # docker service
    ("http://127.0.0.1:80/a", "http://127.0.0.1/a", "http://127.0.0.1:80"),
])
def test_plain_urls_have_one_canonical_reading(url, text, origin):
    from backend.urls import canonical

    c = canonical(url)
    assert (c.text, c.origin) == (text, origin)
    assert canonical(c.text) == c  # stable


@pytest.mark.parametrize("url", ["http://a:1\\@b:2/", "http://a:1%5C@b:2/", "http://u@a/", "http://a:1 /x",
                                 "http://127.1/", "http://0x7f.0.0.1/", "http://2130706433/", "http://a:08/",
                                 "http://a:99999/", "http://a:/", "http://é.com/", "http://[::1%25eth0]/", "ftp://a/"])
def test_ambiguous_urls_are_refused(url):
    from backend.urls import UrlRefused, canonical

    with pytest.raises(UrlRefused):
        canonical(url)
