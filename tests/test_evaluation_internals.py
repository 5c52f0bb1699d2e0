"""The vectorised pieces checked against plain, slow versions: video IoU and greedy matching."""
import numpy as np
import pytest

from clipvis_core.evaluation.dataset import load_ground_truth, load_results
from clipvis_core.evaluation.iou import video_iou_matrix
from clipvis_core.evaluation.matching import match_pair
from clipvis_core.tracks import decode_mask


def _decoded_iou(dt, gt, shape):
    inter = union = 0
    for d, g in zip(dt, gt):
        dm = np.zeros(shape, bool) if d is None else decode_mask(d)
        gm = np.zeros(shape, bool) if g is None else decode_mask(g)
        inter += int((dm & gm).sum())
        union += int((dm | gm).sum())
    return inter / union if union else 0.0


def test_video_iou_equals_decoded_masks_on_fixture(ref_dir):
    gt = load_ground_truth(ref_dir / "gt.json")
    dets = load_results(ref_dir / "results.json", gt)
    checked = 0
    for v in gt.videos.values():
        g = [t for t in gt.tracks if t.video_id == v.id]
        d = [x for x in dets if x.video_id == v.id]
        if not g or not d:
            continue
        ious = video_iou_matrix([x.masks for x in d], [t.masks for t in g], v.num_frames)
        for i, x in enumerate(d):
            for j, t in enumerate(g):
                assert ious[i, j] == _decoded_iou(x.masks, t.masks, (v.height, v.width))
                checked += 1
    assert checked > 20


def test_video_iou_random_masks_exact():
    from clipvis_core.tracks import encode_mask

    rng = np.random.default_rng(0)
    shape, frames = (37, 53), 4
    def track():
        return [None if rng.random() < 0.2 else encode_mask(rng.random(shape) < rng.uniform(0.05, 0.6))
                for _ in range(frames)]
    dts, gts = [track() for _ in range(6)], [track() for _ in range(4)]
    ious = video_iou_matrix(dts, gts, frames)
    for i in range(6):
        for j in range(4):
            assert ious[i, j] == _decoded_iou(dts[i], gts[j], shape)


def _reference_match(ious, gt_ig, crowd, gt_ids, dt_oor, thrs):
    """Straight transcription of the greedy rule, one threshold and one GT at a time."""
    order = sorted(range(len(gt_ig)), key=lambda j: gt_ig[j])  # stable: ignored last
    T, D = len(thrs), ious.shape[0]
    matched = np.zeros((T, D), bool)
    ignored = np.zeros((T, D), bool)
    for t, thr in enumerate(thrs):
        taken = set()
        for d in range(D):
            best, m = min(thr, 1 - 1e-10), -1
            for j in order:
                if j in taken and not crowd[j]:
                    continue
                if m > -1 and not gt_ig[m] and gt_ig[j]:
                    break
                if ious[d, j] < best:
                    continue
                best, m = ious[d, j], j
            if m == -1:
                continue
            taken.add(m)
            ignored[t, d] = gt_ig[m]
            matched[t, d] = gt_ids[m] != 0
        ignored[t] |= ~matched[t] & dt_oor
    return matched, ignored


@pytest.mark.parametrize("seed", range(40))
def test_vectorised_matching_equals_greedy_loop(seed):
    rng = np.random.default_rng(seed)
    D, G = rng.integers(0, 9), rng.integers(1, 6)
    ious = np.round(rng.random((D, G)), 1)  # coarse values: many ties and exact threshold hits
    gt_ig = rng.random(G) < 0.3
    crowd = rng.random(G) < 0.25
    gt_ids = rng.integers(0 if seed % 5 == 0 else 1, 50, G)
    dt_oor = rng.random(D) < 0.3
    thrs = np.linspace(0.5, 0.95, 10)
    pm = match_pair(ious, gt_ig, crowd, gt_ids, dt_oor, thrs)
    ref_m, ref_i = _reference_match(ious, gt_ig, crowd, gt_ids, dt_oor, thrs)
    np.testing.assert_array_equal(pm.dt_matched, ref_m)
    np.testing.assert_array_equal(pm.dt_ignored, ref_i)

