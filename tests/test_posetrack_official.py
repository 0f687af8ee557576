"""PoseTrack scoring against poseval, the benchmark's evaluation kit (leonid-pishchulin/poseval: py/eval_helpers.py
``cleanupData`` / ``removeIgnoredPoints`` / ``assignGTmulti`` / ``computeRPC`` / ``VOCap``, py/evaluateAP.py,
py/evaluateTracking.py ``computeMetrics``, py/convert.py ``Person.from_new`` / ``to_old``).

``_poseval`` below is our own transcription of poseval's rules on the raw jsons (loops over frames, people and joints
as the kit walks them; shapely's strict ``contains`` written as a ray-crossing test with an explicit boundary check).
Each test drives ``read_results`` + ``evaluate_posetrack`` on a hand-built sequence where the code before this change
(commit 499a1c0, "old") gave a different figure; old and new figures are in each case's note.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hrnet_core.data.keypoints import POSETRACK_KEYPOINTS
from hrnet_core.data.posetrack import load_posetrack
from hrnet_core.evaluation.posetrack import average_precision, evaluate_posetrack, read_results

NAMES = POSETRACK_KEYPOINTS.joint_names
POSEVAL_JOINTS = [j for j, n in enumerate(NAMES) if n not in ("left_ear", "right_ear")]  # convert.py's 15 names
REGION = [[500, 100], [639, 100], [639, 400], [500, 400]]

# ------------------------------------------------------------------------------------------------ the official rule


def _strictly_inside(x: float, y: float, poly) -> bool:
    """shapely ``Polygon.contains(Point)``: interior only (a point on an edge or vertex is not contained)."""
    inside = False
    for i in range(len(poly)):
        (x1, y1), (x2, y2) = poly[i], poly[(i + 1) % len(poly)]
        on_line = (x2 - x1) * (y - y1) - (y2 - y1) * (x - x1) == 0
        if on_line and min(x1, x2) <= x <= max(x1, x2) and min(y1, y2) <= y <= max(y1, y2):
            return False
        if (y1 > y) != (y2 > y) and x < x1 + (y - y1) * (x2 - x1) / (y2 - y1):
            inside = not inside
    return inside


def _people(anns, regions, predicted: bool) -> list[dict]:
    """convert.py + removeIgnoredPoints: the 15 joints not written as (0, 0, 0); scores from ``scores`` or -9999;
    in a frame with regions, joints strictly inside one are dropped and so is a person left without joints."""
    out = []
    for a in anns:
        k = np.asarray(a["keypoints"], float).reshape(17, 3)
        pts = {}
        for j in POSEVAL_JOINTS:
            if k[j, 0] == 0 and k[j, 1] == 0 and k[j, 2] == 0:
                continue
            score = (a["scores"][j] if a.get("scores") else -9999.0) if predicted else None
            pts[j] = (k[j, 0], k[j, 1], score)
        if regions:
            pts = {j: p for j, p in pts.items() if not any(_strictly_inside(p[0], p[1], r) for r in regions)}
            if not pts:
                continue
        head = None
        if not predicted and a.get("bbox_head") is not None:
            x1, y1, w, h = a["bbox_head"]
            head = 0.6 * np.linalg.norm(np.subtract([x1 + w, y1 + h], [x1, y1]))
        out.append({"tid": a["track_id"], "pts": pts, "head": head})
    return out


def _assign(gts, prs, thr=0.5):
    """One frame of assignGTmulti: (detections per joint [(score, tp)], GT joints per joint, MOT input per joint)."""
    dets = {j: [] for j in POSEVAL_JOINTS}
    n_gt = {j: sum(j in g["pts"] for g in gts) for j in POSEVAL_JOINTS}
    if not gts or not prs:
        for p in prs:  # no ground truth: every predicted joint is a false positive
            for j, (_, _, s) in p["pts"].items():
                dets[j].append((s, False))
        return dets, n_gt, {j: ([-1], [-1], np.full((1, 1), np.nan)) for j in POSEVAL_JOINTS}
    dist = np.full((len(prs), len(gts), 17), np.inf)
    for a, p in enumerate(prs):
        for b, g in enumerate(gts):
            for j in POSEVAL_JOINTS:
                if j in p["pts"] and j in g["pts"]:
                    dx, dy = p["pts"][j][0] - g["pts"][j][0], p["pts"][j][1] - g["pts"][j][1]
                    with np.errstate(invalid="ignore", divide="ignore"):  # poseval divides plainly: 0 / 0 is NaN
                        dist[a, b, j] = np.hypot(dx, dy) / g["head"]
    match = dist <= thr
    pck = match.sum(2).astype(float)
    for b, g in enumerate(gts):
        if g["pts"]:
            pck[:, b] /= len(g["pts"])
    for a in range(len(prs)):  # a prediction keeps its best person only
        best = int(np.argmax(pck[a]))
        pck[a, [b for b in range(len(gts)) if b != best]] = 0
    owner = {}
    for b in range(len(gts)):  # a person takes its best prediction
        a = int(np.argmax(pck[:, b]))
        if pck[a, b] > 0:
            owner[a] = b
    for a, p in enumerate(prs):
        for j, (_, _, s) in p["pts"].items():
            dets[j].append((s, a in owner and bool(match[a, owner[a], j])))
    mot = {}
    for j in POSEVAL_JOINTS:
        gi = [b for b, g in enumerate(gts) if j in g["pts"]]
        pi = [a for a, p in enumerate(prs) if j in p["pts"]]
        cost = np.array([[dist[a, b, j] if match[a, b, j] else np.nan for a in pi] for b in gi])
        cost = cost.reshape(len(gi), len(pi))
        mot[j] = ([gts[b]["tid"] for b in gi], [prs[a]["tid"] for a in pi], cost)
    return dets, n_gt, mot


def _voc_ap(dets, n_gt) -> float:
    """computeRPC + VOCap: numpy argsort of the scores reversed; 0 without detections."""
    if not dets:
        return 0.0
    if n_gt == 0:
        return float("nan")
    scores = np.array([s for s, _ in dets])
    tps = np.array([t for _, t in dets])[np.argsort(scores)[::-1]]
    rec, prec, hits = [], [], 0
    for i, t in enumerate(tps):
        hits += int(t)
        rec.append(hits / n_gt)
        prec.append(hits / (i + 1))
    rec, prec = [0.0, *rec, 1.0], [0.0, *prec, 0.0]
    for i in range(len(prec) - 2, -1, -1):
        prec[i] = max(prec[i], prec[i + 1])
    return 100.0 * sum((rec[i] - rec[i - 1]) * prec[i] for i in range(1, len(rec)) if rec[i] != rec[i - 1])


def _poseval(gt_jsons, res_jsons) -> dict[str, float]:
    """mAP / MOTA / MOTP / precision / recall (percent) and per-joint AP / MOTA, as poseval computes them."""
    import motmetrics as mm

    dets = {j: [] for j in POSEVAL_JOINTS}
    n_gt = dict.fromkeys(POSEVAL_JOINTS, 0)
    mid = {j: dict.fromkeys(("obj", "miss", "sw", "fp", "det", "d"), 0.0) for j in POSEVAL_JOINTS}
    preds = {}
    for r in res_jsons:
        for a in r["annotations"]:
            preds.setdefault(a["image_id"], []).append(a)
    for g in gt_jsons:
        anns = {}
        for a in g["annotations"]:
            anns.setdefault(a["image_id"], []).append(a)
        frames = [im for im in g["images"] if anns.get(im["id"])]  # cleanupData: frames with GT entries
        accs = {j: mm.MOTAccumulator(auto_id=True) for j in POSEVAL_JOINTS}
        for t, im in enumerate(frames):
            regions = [list(zip(x, y)) for x, y in zip(im.get("ignore_regions_x", []), im.get("ignore_regions_y", []))]
            gt_people = _people(anns[im["id"]], regions, False)
            d, n, mot = _assign(gt_people, _people(preds.get(im["id"], []), regions, True))
            for j in POSEVAL_JOINTS:
                dets[j] += d[j]
                n_gt[j] += n[j]
                if t < len(frames) - 1:  # computeMetrics: imgidxs[:-1]
                    accs[j].update(*mot[j])
        for j, acc in accs.items():
            s = mm.metrics.create().compute(acc, metrics=["num_objects", "num_misses", "num_switches",
                                                          "num_false_positives", "num_detections"],
                                            return_dataframe=False)
            ev = acc.mot_events
            for key, name in (("obj", "num_objects"), ("miss", "num_misses"), ("sw", "num_switches"),
                              ("fp", "num_false_positives"), ("det", "num_detections")):
                mid[j][key] += s[name]
            mid[j]["d"] += ev[ev["Type"].isin(["MATCH", "SWITCH", "MISS", "FP"])]["D"].sum() if len(ev) else 0.0
    out = {f"AP/{NAMES[j]}": _voc_ap(dets[j], n_gt[j]) for j in POSEVAL_JOINTS}
    out["mAP"] = float(np.nanmean([out[f"AP/{NAMES[j]}"] for j in POSEVAL_JOINTS]))
    per = {k: [] for k in ("MOTA", "MOTP", "precision", "recall")}
    for j in POSEVAL_JOINTS:
        c = mid[j]
        obj = c["obj"] if c["obj"] > 0 else np.nan
        per["MOTA"].append(100 * (1 - (c["miss"] + c["sw"] + c["fp"]) / obj))
        per["MOTP"].append(0.0 if c["det"] == 0 else 100 * (1 - c["d"] / c["det"]))
        per["precision"].append(100 * c["det"] / (c["det"] + c["fp"] if c["det"] + c["fp"] > 0 else np.nan))
        per["recall"].append(100 * c["det"] / obj)
        out[f"MOTA/{NAMES[j]}"] = per["MOTA"][-1]
    out.update({k: float(np.nanmean(v)) for k, v in per.items()})
    out["num_switches"] = sum(c["sw"] for c in mid.values())
    return out


# ------------------------------------------------------------------------------------------------ hand-built data


def _pose(cx, cy, ears=False, score=None):
    """A PoseTrack-layout person: ``[17, 3]`` (x, y, v=1; ears (0, 0, 0) unless ``ears``) and its head box."""
    offs = np.array([[0, -40], [0, -30], [0, -50], [-5, -42], [5, -42], [-12, -25], [12, -25], [-18, -8], [18, -8],
                     [-20, 8], [20, 8], [-8, 5], [8, 5], [-9, 25], [9, 25], [-9, 48], [9, 48]], float)
    k = np.concatenate([offs + [cx, cy], np.ones((17, 1))], 1)
    if not ears:
        k[3:5] = 0
    return k, [cx - 10, cy - 52, 20, 24]


def _sequence(vid: str, people_per_frame, labeled=None, regions=None, ears=False, head=None) -> dict:
    """GT json of one sequence: ``people_per_frame[t] = [(track_id, cx, cy)]``; ``regions``: frame -> polygon."""
    images, anns = [], []
    for t, people in enumerate(people_per_frame):
        iid = int(f"1{vid}{t:04d}")
        im = {"id": iid, "file_name": f"images/val/{vid}/{t:06d}.jpg", "vid_id": vid, "frame_id": iid,
              "is_labeled": True if labeled is None else labeled[t], "width": 640, "height": 480}
        if regions and t in regions:
            im["ignore_regions_x"] = [[p[0] for p in regions[t]]]
            im["ignore_regions_y"] = [[p[1] for p in regions[t]]]
        images.append(im)
        for n, (tid, cx, cy) in enumerate(people):
            k, box = _pose(cx, cy, ears)
            anns.append({"id": iid * 10 + n, "image_id": iid, "track_id": tid, "keypoints": k.reshape(-1).tolist(),
                         "bbox_head": box if head is None else head, "bbox": [0, 0, 1, 1]})
    return {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "person",
                                                                   "keypoints": list(NAMES)}]}


def _pred(iid, tid, k, score=1.0, scores=True) -> dict:
    k = np.asarray(k, float).copy()
    a = {"image_id": iid, "track_id": tid, "keypoints": k.reshape(-1).tolist()}
    if scores:
        a["scores"] = [0.0 if np.all(r == 0) else score for r in k]
    return a


def _gt_as_results(gt: dict, skip=(), swap=()) -> dict:
    """The ground-truth poses as predictions (score 1), without the frames in ``skip``, ids swapped in ``swap``."""
    anns = []
    for a in gt["annotations"]:
        t = a["image_id"] % 10000
        if t in skip:
            continue
        tid = (1 - a["track_id"]) if t in swap else a["track_id"]
        anns.append(_pred(a["image_id"], tid, np.reshape(a["keypoints"], (17, 3))))
    return {"images": [{"id": im["id"], "file_name": im["file_name"]} for im in gt["images"]], "annotations": anns}


def _frame_id(gt: dict, t: int) -> int:
    return gt["images"][t]["id"]


def _case_last_frame():
    """Ids of both people swapped in the last frame of each of two sequences: poseval never sees it (MOTA 66.67
    old -> 100 new)."""
    frames = [[(0, 100 + 5 * t, 200), (1, 300 + 5 * t, 200)] for t in range(3)]
    gts = [_sequence(v, frames) for v in ("000001", "000002")]
    return gts, [_gt_as_results(g, swap=(2,)) for g in gts]


def _case_dummy_no_predictions():
    """Frame 1 of 4 has ground truth and no predictions: one dummy object + hypothesis per joint instead of two misses
    (old: MOTA 75.0, precision 100, recall 75.0 -> new: MOTA 60.0, precision 80.0, recall 80.0)."""
    g = _sequence("000003", [[(0, 100, 200), (1, 300, 200)]] * 4)
    return [g], [_gt_as_results(g, skip=(1,))]


def _case_dummy_ignored_gt():
    """Frame 1's people lie inside an ignore region, a false positive outside it: the frame keeps its place
    (cleanupData runs first), has no ground truth left and becomes the dummy pair; the false positive is an AP false
    positive (old: MOTA 66.67, precision 75.0, recall 100 -> new: 33.33, 66.67, 66.67; mAP 75.0 both)."""
    g = _sequence("000004", [[(0, 560, 200)], [(0, 560, 200)], [(0, 565, 200)], [(0, 570, 200)]],
                  regions={1: REGION})
    r = _gt_as_results(g)
    r["annotations"].append(_pred(_frame_id(g, 1), 7, _pose(200, 200)[0], score=2.0))
    return [g], [r]


def _case_person_without_joints():
    """Frame 1's only prediction has the ears alone (none of poseval's 15 joints): it still counts as a predicted
    person (no ignore region there), so no dummy: both people are misses (old 75.0 -> new MOTA 66.67)."""
    g = _sequence("000005", [[(0, 100, 200), (1, 300, 200)]] * 4)
    r = _gt_as_results(g, skip=(1,))
    k = np.zeros((17, 3))
    k[3:5] = [[95, 158, 1], [105, 158, 1]]
    r["annotations"].append(_pred(_frame_id(g, 1), 0, k))
    return [g], [r]


def _case_edge_of_ignore_region():
    """A false-positive person whose joints lie on the left edge (one on a vertex) of frame 0's ignore region:
    shapely ``contains`` keeps them (old ``pointPolygonTest >= 0`` removed them: mAP 100, MOTA 100 -> new mAP 75.0,
    MOTA 50.0)."""
    g = _sequence("000006", [[(0, 100, 200)]] * 3, regions={0: REGION})
    r = _gt_as_results(g)
    k = np.zeros((17, 3))
    k[:, 0], k[:, 1], k[:, 2] = 500.0, 100.0 + 10 * np.arange(17), 1.0
    r["annotations"].append(_pred(_frame_id(g, 0), 5, k, score=2.0))
    return [g], [r]


def _case_frame_without_people():
    """A labelled frame without ground-truth people, a (high-scored) prediction there: poseval drops the frame
    (old: mAP 75.0, MOTA 66.67 -> new 100, 100)."""
    g = _sequence("000007", [[(0, 100, 200)], [], [(0, 110, 200)], [(0, 115, 200)]])
    r = _gt_as_results(g)
    r["annotations"].append(_pred(_frame_id(g, 1), 3, _pose(300, 200)[0], score=2.0))
    return [g], [r]


def _case_ears():
    """Labelled ears, predicted 40 px off: poseval's 15 joints have no ears (old mAP 88.24 = (15 x 100 + 2 x 0) / 17,
    MOTA 76.47 = (15 x 100 - 2 x 100) / 17 -> new 100, 100)."""
    g = _sequence("000008", [[(0, 100, 200)]] * 3, ears=True)
    r = _gt_as_results(g)
    for a in r["annotations"]:
        a["keypoints"][9] += 40.0
        a["keypoints"][12] += 40.0
    return [g], [r]


def _case_tied_scores():
    """A false positive with the same score as the true positives, collected second of four: poseval's reversed
    argsort ranks it third (AP 91.67 for every joint); old (stable, collection order) ranked it second (83.33)."""
    g = _sequence("000009", [[(0, 100, 200)]] * 3)
    r = _gt_as_results(g)
    r["annotations"].insert(1, _pred(_frame_id(g, 0), 4, _pose(400, 200)[0]))
    return [g], [r]


def _case_joint_never_labelled():
    """The left ankle is labelled nowhere and never predicted: poseval's AP for it stays 0 and counts in the mean, its
    MOTP is 0 and counts too (old: mAP 100, MOTP 100 -> new: 93.33, 93.33)."""
    g = _sequence("000010", [[(0, 100, 200)]] * 3)
    for a in g["annotations"]:
        a["keypoints"][45:48] = [0, 0, 0]
    return [g], [_gt_as_results(g)]


def _case_joint_never_predicted():
    """The left ankle is labelled but never predicted: no matches, no false positives -> poseval's precision for it
    is NaN and stays out of the mean (old: precision 93.33 -> new 100)."""
    g = _sequence("000011", [[(0, 100, 200)]] * 3)
    r = _gt_as_results(g)
    for a in r["annotations"]:
        a["keypoints"][45:48] = [0, 0, 0]
        a["scores"][15] = 0.0
    return [g], [r]


def _case_missing_scores():
    """Results without ``scores``: poseval gives every joint its fallback -9999 (all tied; AP 91.67); old ranked by
    the third keypoint value (0.95 for the false positive, 0.9 for the rest: AP 75.0)."""
    g = _sequence("000012", [[(0, 100, 200)]] * 3)
    r = _gt_as_results(g)
    for a in r["annotations"]:
        del a["scores"]
        k = np.reshape(a["keypoints"], (17, 3))
        k[k[:, 2] > 0, 2] = 0.9
        a["keypoints"] = k.reshape(-1).tolist()
    fp = _pred(_frame_id(g, 0), 4, _pose(400, 200)[0], scores=False)
    fp["keypoints"] = [v if i % 3 != 2 or v == 0 else 0.95 for i, v in enumerate(fp["keypoints"])]
    r["annotations"].insert(1, fp)
    return [g], [r]


def _case_zero_score_joints_present():
    """A predicted person written with joint scores 0 but real coordinates: poseval counts its joints (only
    (0, 0, 0) is absent), ranked last (old: MOTA 100 -> new 50.0; AP 100 both)."""
    g = _sequence("000013", [[(0, 100, 200)]] * 3)
    r = _gt_as_results(g)
    k = _pose(400, 200)[0]
    k[:, 2] = 0.0
    r["annotations"].append(_pred(_frame_id(g, 0), 4, k, score=0.0))
    return [g], [r]


def _case_unlabelled_frame_with_people():
    """A frame flagged ``is_labeled: false`` that has ground-truth people, no predictions: poseval reads no flag and
    scores it (old: mAP 100, recall 100, MOTA 100 -> new: 75.0, 66.67, 33.33)."""
    g = _sequence("000014", [[(0, 100, 200)]] * 4, labeled=[True, False, True, True])
    return [g], [_gt_as_results(g, skip=(1,))]


def _case_zero_head_box():
    """A zero-size head box: poseval's distance 0 / 0 is NaN and never matches (old clamped the head size to 1e-9
    and matched: mAP 100 -> new 0)."""
    g = _sequence("000015", [[(0, 100, 200)]] * 3, head=[90, 148, 0, 0])
    return [g], [_gt_as_results(g)]


CASES = {f.__name__[6:]: f for f in (
    _case_last_frame, _case_dummy_no_predictions, _case_dummy_ignored_gt, _case_person_without_joints,
    _case_edge_of_ignore_region, _case_frame_without_people, _case_ears, _case_tied_scores, _case_joint_never_labelled,
    _case_joint_never_predicted, _case_missing_scores, _case_zero_score_joints_present,
    _case_unlabelled_frame_with_people, _case_zero_head_box)}

# measured figures of the new code (the note of each case gives the old ones); the reference must agree with them
EXPECTED = {
    "last_frame": {"MOTA": 100.0, "num_switches": 0.0},
    "dummy_no_predictions": {"MOTA": 60.0, "precision": 80.0, "recall": 80.0},
    "dummy_ignored_gt": {"MOTA": 100 / 3, "mAP": 75.0, "recall": 200 / 3},
    "person_without_joints": {"MOTA": 200 / 3},
    "edge_of_ignore_region": {"mAP": 75.0, "MOTA": 50.0},
    "frame_without_people": {"mAP": 100.0, "MOTA": 100.0},
    "ears": {"mAP": 100.0, "MOTA": 100.0},
    "tied_scores": {"mAP": 100 * 11 / 12},
    "joint_never_labelled": {"mAP": 100 * 14 / 15, "MOTP": 100 * 14 / 15},
    "joint_never_predicted": {"precision": 100.0},
    "missing_scores": {"mAP": 100 * 11 / 12},
    "zero_score_joints_present": {"MOTA": 50.0, "mAP": 100.0},
    "unlabelled_frame_with_people": {"mAP": 75.0, "recall": 200 / 3, "MOTA": 100 / 3},
    "zero_head_box": {"mAP": 0.0},
}


def _ours(tmp: Path, gts, results) -> dict[str, float]:
    for g in gts:
        (tmp / f"{g['images'][0]['vid_id']}.json").write_text(json.dumps(g))
    return evaluate_posetrack(load_posetrack(tmp), read_results(json.loads(json.dumps(results))))


@pytest.mark.parametrize("case", sorted(CASES))
def test_scoring_follows_poseval(case, tmp_path):
    """Every metric equals the transcription of poseval's rule; the case's figures are the measured new ones."""
    gts, results = CASES[case]()
    ours, ref = _ours(tmp_path, gts, results), _poseval(gts, results)
    for key in ("mAP", "MOTA", "MOTP", "precision", "recall", "num_switches"):
        assert ours[key] == pytest.approx(ref[key], abs=1e-9), key
    for key, v in ref.items():
        if key.startswith(("AP/", "MOTA/")) and not np.isnan(v):
            assert ours[key] == pytest.approx(v, abs=1e-9), key
    assert not any(k.endswith("_ear") for k in ours)  # poseval's 15 joints
    for key, v in EXPECTED[case].items():
        assert ours[key] == pytest.approx(v, abs=1e-6), key


def test_last_frame_of_each_sequence_is_left_out_of_tracking(tmp_path):
    """3 + 3 evaluated frames, 1 tracked person-pair each: 2 x 2 frames x 2 people x 15 joints objects (old 180)."""
    gts, results = _case_last_frame()
    m = _ours(tmp_path, gts, results)
    assert m["num_objects"] == 2 * 2 * 2 * 15 and m["num_tracking_frames"] == 4 and m["num_eval_frames"] == 6


def test_motp_sums_the_matched_costs_not_the_raw_rows(tmp_path):
    """Two people 8 px apart (head size 0.6 x hypot(20, 24) = 18.74 px), each predicted 3 px to the right: MOTP =
    1 - (3 / 18.74) = 83.99 (unchanged: old 83.99 too). poseval run with motmetrics 1.4 sums ``events['D']``, which
    also holds the RAW rows: every allowed pair again, here both matched costs and the cross pair person 1 ->
    prediction 0 (5 px): 1 - (3 + 3 + 5 + 3 + 3) / 18.74 / 2 = 54.65, what poseval's code gave before motmetrics 1.2
    added those rows is the 83.99."""
    g = _sequence("000016", [[(0, 100, 200), (1, 108, 200)]] * 3)
    r = _gt_as_results(g)
    for a in r["annotations"]:
        a["keypoints"] = [v + 3.0 if i % 3 == 0 and v != 0 else v for i, v in enumerate(a["keypoints"])]
    m = _ours(tmp_path, [g], [r])
    head = 0.6 * np.hypot(20, 24)
    assert m["MOTP"] == pytest.approx(100 * (1 - 3 / head)) == pytest.approx(_poseval([g], [r])["MOTP"])
    assert m["MOTP"] != pytest.approx(100 * (1 - (3 + 3 + 5 + 3 + 3) / head / 2), abs=1.0)
    assert m["mAP"] == pytest.approx(100.0) and m["num_switches"] == 0


def test_average_precision_follows_computeRPC_and_VOCap():
    """Ties ranked by the reversed numpy argsort; no detections -> 0 (old NaN without ground truth); detections
    without ground truth -> NaN."""
    s, lab = np.array([0.5, 0.5]), np.array([True, False])
    # old 100 (stable ranking: the true positive first)
    assert average_precision(s, lab, 1) == pytest.approx(_voc_ap(list(zip(s, lab)), 1)) == pytest.approx(50.0)
    assert average_precision(np.zeros(0), np.zeros(0, bool), 0) == 0.0  # old NaN
    assert np.isnan(average_precision(np.array([0.3]), np.array([False]), 0))


def test_point_on_polygon_edge_is_not_inside():
    """shapely ``contains``: strict interior (old: the edge and the vertex counted as inside)."""
    from hrnet_core.evaluation.posetrack import _inside

    pts = np.array([[500.0, 200.0], [500.0, 100.0], [560.0, 200.0], [499.0, 200.0], [570.0, 400.0]])
    ours = _inside(pts, [np.array(REGION, float)])
    assert ours.tolist() == [_strictly_inside(x, y, REGION) for x, y in pts] == [False, False, True, False, False]
