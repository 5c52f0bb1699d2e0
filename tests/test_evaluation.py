"""Hand-made evaluation cases with numbers worked out by hand."""
import json

import numpy as np
import pytest

from clipvis_core.evaluation import evaluate, results_from_tracks
from clipvis_core.tracks import encode_mask

H, W = 40, 60


def box(y0, x0, h, w, height=H, width=W):
    m = np.zeros((height, width), dtype=bool)
    m[y0:y0 + h, x0:x0 + w] = True
    return m


def gt_json(tracks, num_frames=3, videos=(1,), categories=((1, "person", 0), (2, "car", 2)), height=H, width=W):
    """tracks: (id, video_id, category_id, [mask or None per frame], iscrowd)."""
    anns = []
    for tid, vid, cid, masks, crowd in tracks:
        anns.append({
            "id": tid, "video_id": vid, "category_id": cid, "iscrowd": int(crowd),
            "segmentations": [None if m is None else encode_mask(m) for m in masks],
            "areas": [None if m is None else int(m.sum()) for m in masks],
        })
    return {
        "videos": [{"id": v, "height": height, "width": width, "length": num_frames} for v in videos],
        "categories": [{"id": c, "name": n, "partition": p} for c, n, p in categories],
        "annotations": anns,
    }


def det(vid, cid, score, masks):
    return {"video_id": vid, "category_id": cid, "score": score,
            "segmentations": [encode_mask(np.zeros((H, W), bool) if m is None else m) for m in masks]}


PERSON = [box(5, 5, 10, 10), box(6, 6, 10, 10), box(7, 7, 10, 10)]


@pytest.mark.parametrize("protocol", ["ytvis", "lvvis"])
def test_perfect_prediction_scores_one(protocol):
    gt = gt_json([(1, 1, 1, PERSON, 0)])
    rep = evaluate(gt, [det(1, 1, 0.9, PERSON)], protocol)
    for name in ("AP", "AP50", "AP75", "APs", "AR1", "AR10", "AR100", "ARs"):
        assert rep.stats[name] == pytest.approx(1.0), name
    for name in ("APm", "APl", "ARm", "ARl"):  # no GT in those ranges
        assert rep.stats[name] == -1.0
    assert rep.per_category[0].ap == pytest.approx(1.0)
    assert rep.per_category[1].ap is None  # car: no GT, no detections
    assert rep.per_video[0].mean_best_iou == pytest.approx(1.0)
    assert rep.per_video[0].matched_50 == 1 and rep.per_video[0].false_positives_50 == 0


def test_no_predictions_scores_zero():
    rep = evaluate(gt_json([(1, 1, 1, PERSON, 0)]), [], "ytvis")
    assert rep.stats["AP"] == 0.0 and rep.stats["AR100"] == 0.0
    assert rep.per_video[0].mean_best_iou == 0.0
    assert rep.num_predictions == 0


def test_track_present_in_some_frames_and_empty_frames():
    gt_masks = [None, box(5, 5, 10, 10), box(5, 5, 10, 10)]  # absent in frame 0
    exact = evaluate(gt_json([(1, 1, 1, gt_masks, 0)]), [det(1, 1, 0.8, gt_masks)], keep_details=True)
    assert exact.details.ious[1, 1][0, 0] == 1.0 and exact.stats["AP"] == pytest.approx(1.0)
    # Predicting the object in the frame where GT is absent adds that area to the union only.
    extra = [box(0, 0, 10, 10), box(5, 5, 10, 10), box(5, 5, 10, 10)]
    rep = evaluate(gt_json([(1, 1, 1, gt_masks, 0)]), [det(1, 1, 0.8, extra)], keep_details=True)
    assert rep.details.ious[1, 1][0, 0] == pytest.approx(200 / 300)
    # IoU 2/3 passes thresholds 0.50..0.65 (4 of 10): AP = 0.4.
    assert rep.stats["AP"] == pytest.approx(0.4)
    # A prediction that is empty in every frame matches nothing and is a false positive.
    empty = evaluate(gt_json([(1, 1, 1, gt_masks, 0)]), [det(1, 1, 0.9, [None] * 3), det(1, 1, 0.5, gt_masks)],
                     keep_details=True)
    assert empty.details.ious[1, 1][:, 0].tolist() == [0.0, 1.0]
    assert empty.stats["AR100"] == 1.0 and empty.stats["AR1"] == 0.0
    assert empty.stats["AP"] == pytest.approx(0.5, abs=0.01)  # precision 1/2 at every recall


def test_partial_overlap_iou_sums_over_frames():
    g = [box(0, 0, 10, 10)] * 3
    d = [box(0, 0, 10, 10), box(0, 0, 10, 5), None]  # 100 + 50 + 0 of 300
    rep = evaluate(gt_json([(1, 1, 1, g, 0)]), [det(1, 1, 0.7, d)], keep_details=True)
    assert rep.details.ious[1, 1][0, 0] == pytest.approx(150 / 300)
    assert rep.stats["AP50"] == pytest.approx(1.0) and rep.stats["AP75"] == 0.0


def test_max_dets_ar1_vs_ar10():
    a, b = [box(0, 0, 8, 8)] * 3, [box(20, 30, 8, 8)] * 3
    rep = evaluate(gt_json([(1, 1, 1, a, 0), (2, 1, 1, b, 0)]), [det(1, 1, 0.9, a), det(1, 1, 0.8, b)])
    assert rep.stats["AR1"] == pytest.approx(0.5) and rep.stats["AR10"] == pytest.approx(1.0)


def test_crowd_handling_differs_between_protocols():
    crowd = [box(20, 30, 10, 10)] * 3
    gt = gt_json([(1, 1, 1, PERSON, 0), (2, 1, 1, crowd, 1)])
    dets = [det(1, 1, 0.9, PERSON)]
    assert evaluate(gt, dets, "ytvis").stats["AP"] == pytest.approx(1.0)  # crowd ignored
    # LV-VIS counts the crowd track: recall stops at 1/2 -> precision 1 on 51 of 101 recall points.
    assert evaluate(gt, dets, "lvvis").stats["AP"] == pytest.approx(51 / 101)


def test_lvvis_truncates_gt_area_before_the_range_test():
    big = box(0, 0, 128, 128, 200, 200)  # 16384 px = 128^2: the small/medium boundary
    gt = gt_json([(1, 1, 1, [big] * 2, 0)], num_frames=2, height=200, width=200)
    gt["annotations"][0]["areas"] = [16384.5, 16384.5]
    dets = [{"video_id": 1, "category_id": 1, "score": 1.0, "segmentations": [encode_mask(big)] * 2}]
    yt, lv = evaluate(gt, dets, "ytvis"), evaluate(gt, dets, "lvvis")
    assert yt.stats["APs"] == -1.0 and yt.stats["APm"] == pytest.approx(1.0)  # 16384.5 > 128^2
    assert lv.stats["APs"] == pytest.approx(1.0) and lv.stats["APm"] == pytest.approx(1.0)  # int -> 16384


def test_base_novel_split():
    car = [box(20, 30, 8, 8)] * 3
    gt = gt_json([(1, 1, 1, PERSON, 0), (2, 1, 2, car, 0)])
    rep = evaluate(gt, [det(1, 1, 0.9, PERSON)], "lvvis")
    assert rep.base_novel["AP"]["base"] == pytest.approx(1.0)
    assert rep.base_novel["AP"]["novel"] == 0.0
    assert rep.base_novel["AP"]["all"] == pytest.approx(0.5) == rep.stats["AP"]
    assert rep.base_novel["APl"]["base"] == -1.0


def test_gt_formats_uncompressed_rle_and_polygon():
    m = box(4, 6, 10, 12)
    from pycocotools import mask as mask_utils

    flat = m.T.reshape(-1).astype(np.uint8)  # column-major, as COCO RLE
    change = np.flatnonzero(np.diff(flat)) + 1
    counts = np.diff(np.concatenate([[0], change, [flat.size]])).tolist()
    if flat[0]:
        counts = [0] + counts
    poly = [[6, 4, 18, 4, 18, 14, 6, 14]]
    gt = gt_json([(1, 1, 1, [m] * 3, 0)])
    gt["annotations"][0]["segmentations"] = [{"size": [H, W], "counts": counts}, poly, None]
    rep = evaluate(gt, [det(1, 1, 0.9, [m, m, None])], keep_details=True)
    poly_area = float(mask_utils.area(mask_utils.merge(mask_utils.frPyObjects(poly, H, W))))
    inter_poly = float(mask_utils.area(mask_utils.merge(
        [mask_utils.merge(mask_utils.frPyObjects(poly, H, W)), mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))],
        intersect=True)))
    expected = (120 + inter_poly) / (240 + poly_area - inter_poly)
    assert rep.details.ious[1, 1][0, 0] == pytest.approx(expected)


def test_per_video_scores_and_worst_order():
    other = [box(0, 0, 10, 10)] * 3
    gt = gt_json([(1, 1, 1, PERSON, 0), (2, 2, 1, other, 0)], videos=(1, 2, 3))
    rep = evaluate(gt, [det(1, 1, 0.9, PERSON), det(2, 1, 0.8, [box(20, 30, 5, 5)] * 3), det(3, 2, 0.3, other)])
    by_id = {v.video_id: v for v in rep.per_video}
    assert by_id[2].mean_best_iou == 0.0 and by_id[2].false_positives_50 == 1
    assert by_id[3].mean_best_iou is None and by_id[3].num_predictions == 1
    assert [v.video_id for v in rep.worst_videos()] == [2, 1]


def test_report_json_and_table():
    rep = evaluate(gt_json([(1, 1, 1, PERSON, 0)]), [det(1, 1, 0.9, PERSON)], "lvvis")
    d = json.loads(rep.to_json())
    assert d["stats"]["AP"] == pytest.approx(1.0) and d["stats_x100"]["APl"] is None
    assert d["per_category"][1]["ap"] is None and d["protocol"] == "lvvis"
    table = rep.format_table()
    assert "AR100" in table and "base" in table and "person" in table


def test_results_from_tracks_roundtrip():
    from clipvis_core.tracks import Track, VideoInfo, VideoTracks

    masks = [encode_mask(m) for m in PERSON]
    vt = VideoTracks(VideoInfo("v.mp4", W, H, 10.0, 3, [0, 1, 2]), ["person", "car"],
                     [Track(0, "person", 0, 0.9, masks, [None] * 3, [0.9] * 3)])
    res = results_from_tracks(vt, video_id=1)
    assert res[0]["category_id"] == 1
    assert evaluate(gt_json([(1, 1, 1, PERSON, 0)]), res).stats["AP"] == pytest.approx(1.0)
