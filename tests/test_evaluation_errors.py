"""Malformed ground truth / results fail with one clear line; ``clipvis eval`` end to end."""
import copy
import json

import pytest

from clipvis_core.cli import main
from clipvis_core.errors import InputError
from clipvis_core.evaluation import evaluate, get_protocol
from clipvis_core.tracks import encode_mask

from test_evaluation import PERSON, box, det, gt_json

GT = gt_json([(1, 1, 1, PERSON, 0)])
GOOD = det(1, 1, 0.9, PERSON)


def _with(**changes):
    d = copy.deepcopy(GOOD)
    d.update(changes)
    return d


@pytest.mark.parametrize(
    "result, message",
    [
        (_with(video_id=7), "video_id 7 is not in the ground truth"),
        (_with(category_id=9), "category_id 9 is not a GT category"),
        (_with(segmentations=[encode_mask(box(0, 0, 3, 3, 20, 20))] * 3), "does not match the video's 40x60"),
        (_with(segmentations=GOOD["segmentations"][:2]), "2 per-frame segmentations but video 1 has 3 frames"),
        (_with(score=float("nan")), "'score' must be a finite number"),
        ({"video_id": 1, "category_id": 1, "segmentations": GOOD["segmentations"]}, "missing 'score'"),
        (_with(segmentations=[{"counts": "abc"}] * 3), "COCO RLE"),
    ],
)
def test_bad_results_raise_one_line(result, message):
    with pytest.raises(InputError) as err:
        evaluate(GT, [result])
    assert message in str(err.value) and "\n" not in str(err.value)
    assert "result #0" in str(err.value)


def test_bad_ground_truth():
    bad = copy.deepcopy(GT)
    bad["annotations"][0]["category_id"] = 5
    with pytest.raises(InputError, match="category_id 5 is not among the GT categories"):
        evaluate(bad, [GOOD])
    bad = copy.deepcopy(GT)
    bad["annotations"][0]["video_id"] = 3
    with pytest.raises(InputError, match="video_id 3 is not in the ground truth"):
        evaluate(bad, [GOOD])
    bad = copy.deepcopy(GT)
    del bad["annotations"]
    with pytest.raises(InputError, match="no 'annotations' list"):
        evaluate(bad, [GOOD])
    bad = copy.deepcopy(GT)
    bad["annotations"][0]["segmentations"][1] = {"size": [10, 10], "counts": [100]}
    with pytest.raises(InputError, match="mask size"):
        evaluate(bad, [GOOD])
    bad = copy.deepcopy(GT)
    bad["annotations"].append(copy.deepcopy(bad["annotations"][0]))
    with pytest.raises(InputError, match="duplicate annotation id"):
        evaluate(bad, [GOOD])


def test_bad_files_and_protocol(tmp_path):
    with pytest.raises(InputError, match="not found"):
        evaluate(tmp_path / "missing.json", [GOOD])
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        evaluate(tmp_path / "broken.json", [GOOD])
    with pytest.raises(InputError, match="unknown evaluation protocol 'coco'"):
        get_protocol("coco")


def test_cli_prints_table_and_writes_json(tmp_path, capsys):
    gt, res, out = tmp_path / "gt.json", tmp_path / "res.json", tmp_path / "out" / "metrics.json"
    gt.write_text(json.dumps(GT))
    res.write_text(json.dumps([GOOD]))
    assert main(["eval", "--gt", str(gt), "--results", str(res), "--protocol", "lvvis", "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "AP" in printed and "100.00" in printed and "novel" in printed
    data = json.loads(out.read_text())
    assert data["protocol"] == "lvvis" and data["stats"]["AP"] == pytest.approx(1.0)
    assert [p.name for p in out.parent.iterdir()] == ["metrics.json"]  # no temp file left


def test_cli_bad_input_exits_2_with_one_line(tmp_path, capsys):
    gt, res, out = tmp_path / "gt.json", tmp_path / "res.json", tmp_path / "metrics.json"
    gt.write_text(json.dumps(GT))
    res.write_text(json.dumps([_with(video_id=42)]))
    assert main(["eval", "--gt", str(gt), "--results", str(res), "--output", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("clipvis: error: result #0") and "\n" not in err
    assert not out.exists()
