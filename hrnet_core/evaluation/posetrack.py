"""PoseTrack metrics as the benchmark's evaluation kit ``poseval`` computes them: per-joint AP / mAP of multi-person
pose and MOTA / MOTP / precision / recall of pose tracking.

Every step follows leonid-pishchulin/poseval (``py/eval_helpers.py``, ``py/evaluateAP.py``, ``py/evaluateTracking.py``,
the same in ``poseval/*.py``; the COCO-style json is read as its ``py/convert.py`` reads it):

- joints: poseval's 15 (the PoseTrack 17 without the ears, which ``convert.py`` drops, :data:`EVAL_JOINTS`); a joint
  of a ground-truth or predicted person is present unless it is ``(0, 0, 0)`` (x, y and the third keypoint value all
  zero, ``Person.to_old``); a predicted joint's score is its entry of ``scores``, :data:`MIN_SCORE` without one;
- frames: a frame is evaluated when its ground truth has at least one person entry (``cleanupData``; ``is_labeled``
  is not read), a labelled frame without people is dropped with whatever was predicted there;
- ignore regions: in a frame with ignore polygons, ground-truth and predicted joints strictly inside a polygon are
  removed (shapely ``Polygon.contains``: a joint on the edge or a vertex stays) and people left without joints are
  removed (``removeIgnoredPoints``); elsewhere a person entry without joints stays (it counts as a person of the frame);
- a predicted joint matches a ground-truth joint when their distance is at most ``0.5 *`` the head size (PCKh 0.5),
  head size ``= 0.6 *`` the diagonal of the person's ``bbox_head`` (``getHeadSize``);
- AP (``assignGTmulti``, ``computeRPC``, ``VOCap``): per frame, predicted and ground-truth people are paired by PCKh
  (each prediction keeps its best person, each person takes its best remaining prediction; ties to the first); every
  predicted joint is a detection with its score, a true positive when its person is paired and the joint matches; in
  a frame without ground-truth people every predicted joint is a false positive. Per joint the detections of all
  frames are ranked by ``numpy.argsort`` of the scores, reversed (ties: the later detection first for small arrays),
  and AP is the area under the precision-recall curve with precision made monotone from the right, in percent: 0
  for a joint without detections, NaN for a joint with detections but no ground truth; ``mAP`` is the mean of the
  non-NaN joint APs;
- tracking (``evaluateTracking.computeMetrics``): per sequence, the last evaluated frame is left out; per joint a
  CLEAR MOT accumulator (``motmetrics``) sees, each frame, the track ids of the ground-truth and predicted people that
  have the joint with the normalised distance ``d / head size`` as cost (pairs beyond 0.5 not allowed). A frame
  without ground-truth people or without predicted people enters every joint's accumulator as one dummy object and
  one dummy hypothesis that may not match (one miss and one false positive). Counts are summed over sequences; per
  joint ``MOTA = 1 - (misses + switches + false positives) / objects`` (NaN without objects), ``MOTP = 1 - sum of
  matched costs / matches`` (0 without matches), precision ``= matches / (matches + false positives)`` (NaN
  without either), recall ``= matches / objects`` (NaN without objects); each total is the mean of its non-NaN
  joints, in percent. The matched costs are summed over the MATCH and SWITCH events, as poseval was written for
  (motmetrics <= 1.1): with motmetrics >= 1.2 poseval's ``acc.events['D'].sum()`` also adds the RAW rows (every
  allowed pair's cost), which we do not.

Predictions are the PoseTrack results json (:func:`results_json`, read by :func:`read_results`): ``images``
(``id``, ``file_name``) and ``annotations`` with ``image_id``, ``track_id``, ``keypoints`` (K x (x, y, score)) and
``scores`` (K); our writer writes a joint with score 0 as ``(0, 0, 0)`` (absent).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from ..data.keypoints import POSETRACK_KEYPOINTS
from ..data.posetrack import PoseTrackVideos

__all__ = ["results_json", "read_results", "evaluate_posetrack", "average_precision", "JOINT_GROUPS", "PCKH_THR",
           "EVAL_JOINTS", "MIN_SCORE", "PredictedPose", "evaluated_frames"]

PCKH_THR = 0.5
HEAD_SIZE_FACTOR = 0.6
MIN_SCORE = -9999.0  # poseval eval_helpers.MIN_SCORE: the score of a predicted joint that has none
# poseval's 15 joints: convert.py keeps the landmarks named in its 15-name list, so the ears never enter
EVAL_JOINTS: tuple[int, ...] = tuple(i for i, n in enumerate(POSETRACK_KEYPOINTS.joint_names)
                                     if n not in ("left_ear", "right_ear"))
_DUMMY_ID = -1  # poseval's dummy object / hypothesis (it uses id 0; never matched, so the counts do not depend on it)
# the column groups of the PoseTrack tables (poseval getCum: Head = head top, head bottom (neck), nose)
JOINT_GROUPS: dict[str, tuple[int, ...]] = {
    "Head": (0, 1, 2), "Shoulder": (5, 6), "Elbow": (7, 8), "Wrist": (9, 10), "Hip": (11, 12), "Knee": (13, 14),
    "Ankle": (15, 16),
}


@dataclass(frozen=True)
class PredictedPose:
    """One predicted person of a frame: ``keypoints`` float ``[K, 3]`` (x, y px, score), ``present`` bool ``[K]``."""

    track_id: int
    keypoints: np.ndarray
    present: np.ndarray


def results_json(frames: Sequence[Mapping[str, Any]], people: Mapping[int, Sequence[Mapping[str, Any]]]) -> dict:
    """PoseTrack results json of one sequence.

    Args:
        frames: ``[{"image_id", "file_name", "vid_id", "frame_id"}]`` in frame order.
        people: ``image_id -> [{"track_id": int, "keypoints": [K, 3] (x, y px, score; 0 = absent), "score": float}]``.
    Raises:
        ValueError: a track id twice in one frame (names the image).
    """
    images, anns = [], []
    for f in frames:
        iid = int(f["image_id"])
        images.append({"id": iid, "file_name": str(f["file_name"]), "vid_id": str(f.get("vid_id", "")),
                       "frame_id": int(f.get("frame_id", iid))})
        seen = set()
        for p in people.get(iid, []):
            tid = int(p["track_id"])
            if tid in seen:
                raise ValueError(f"track id {tid} twice in image {iid} ({f['file_name']})")
            seen.add(tid)
            k = np.asarray(p["keypoints"], np.float64).copy()
            k[k[:, 2] <= 0] = 0.0
            anns.append({"image_id": iid, "track_id": tid, "category_id": 1,
                         "keypoints": [round(float(v), 3) for v in k.reshape(-1)],
                         "scores": [round(float(v), 5) for v in k[:, 2]], "score": round(float(p.get("score", 1.0)), 5)})
    return {"images": images, "annotations": anns,
            "categories": [{"id": 1, "name": "person", "keypoints": list(POSETRACK_KEYPOINTS.joint_names)}]}


def read_results(results: Iterable[Mapping[str, Any]]) -> dict[int, list[PredictedPose]]:
    """Results jsons -> ``image_id -> [PredictedPose]`` as poseval reads them (``convert.py`` ``Person.from_new`` /
    ``to_old``): a joint is present unless its keypoint triplet is ``(0, 0, 0)``; its score is ``scores[j]`` when the
    annotation has a non-empty ``scores`` list, else :data:`MIN_SCORE` (poseval's fallback; the third keypoint value
    is not a score there).

    Raises:
        ValueError: an annotation without ``track_id`` / 51 keypoint values, or a track id twice in one frame.
    """
    out: dict[int, list[PredictedPose]] = {}
    for res in results:
        for a in res.get("annotations", []):
            kps = a.get("keypoints", ())
            if "track_id" not in a or len(kps) != 3 * POSETRACK_KEYPOINTS.num_joints:
                raise ValueError(f"result for image {a.get('image_id')} has no track_id or malformed keypoints")
            k = np.asarray(kps, np.float64).reshape(-1, 3)
            present = ~np.all(k == 0, axis=1)
            scores = a.get("scores")
            k[:, 2] = np.asarray(scores, np.float64) if scores else MIN_SCORE
            lst = out.setdefault(int(a["image_id"]), [])
            if any(p.track_id == int(a["track_id"]) for p in lst):
                raise ValueError(f"track id {a['track_id']} twice in image {a['image_id']}")
            lst.append(PredictedPose(int(a["track_id"]), k, present))
    return out


def average_precision(scores: np.ndarray, labels: np.ndarray, num_gt: int) -> float:
    """AP of one joint as poseval's ``computeRPC`` + ``VOCap`` (percent).

    Args:
        scores: ``[N]`` detection scores in the order the detections were collected; labels: ``[N]`` bool true
            positives; num_gt: ground-truth count.
    Returns:
        0.0 without detections (poseval leaves the joint's AP at 0), NaN with detections but ``num_gt == 0``, else
        the area under the precision-recall curve: detections ranked by ``numpy.argsort(scores)`` reversed (ties
        as poseval breaks them), precision made monotone from the right and summed over the recall steps.
    """
    scores = np.asarray(scores, np.float64)
    if len(scores) == 0:
        return 0.0
    if num_gt <= 0:
        return float("nan")
    lab = np.asarray(labels, bool)[np.argsort(scores)[::-1]]
    tp = np.cumsum(lab)
    rec = tp / num_gt
    prec = tp / np.arange(1, len(lab) + 1)
    mrec = np.concatenate([[0.0], rec, [1.0]])
    mpre = np.maximum.accumulate(np.concatenate([[0.0], prec, [0.0]])[::-1])[::-1]
    i = np.flatnonzero(mrec[1:] != mrec[:-1]) + 1
    return float(100.0 * np.sum((mrec[i] - mrec[i - 1]) * mpre[i]))


def _inside(points: np.ndarray, regions: Sequence[np.ndarray]) -> np.ndarray:
    """``[K]`` bool: point strictly inside any polygon (shapely ``Polygon.contains``, as poseval's
    ``removeIgnoredPointsRects``: a point on an edge or a vertex is not inside). ``points`` ``[K, 2]`` px, each
    region ``[V, 2]`` px; OpenCV's test runs in float32 coordinates."""
    import cv2

    hit = np.zeros(len(points), bool)
    for poly in regions:
        contour = poly.astype(np.float32).reshape(-1, 1, 2)
        for j, (x, y) in enumerate(points):
            if not hit[j] and cv2.pointPolygonTest(contour, (float(x), float(y)), False) > 0:
                hit[j] = True
    return hit


@dataclass(frozen=True)
class _Frame:
    """The people of one evaluated frame after ignore regions (G ground-truth, P predicted, K joints): ids, joints
    ``[., K, 2]`` px, presence ``[., K]`` (only :data:`EVAL_JOINTS`), head sizes ``[G]`` px, scores ``[P, K]``."""

    g_ids: list[int]
    g_xy: np.ndarray
    g_m: np.ndarray
    head: np.ndarray
    p_ids: list[int]
    p_xy: np.ndarray
    p_m: np.ndarray
    p_s: np.ndarray


def _joint_mask(present: np.ndarray, xy: np.ndarray, regions: Sequence[np.ndarray]) -> np.ndarray | None:
    """Presence ``[K]`` of a person's evaluated joints after ignore regions; None when the person is removed (a frame
    with regions and none of its joints outside them)."""
    m = np.zeros(len(present), bool)
    m[list(EVAL_JOINTS)] = present[list(EVAL_JOINTS)]
    if not regions:
        return m
    m &= ~_inside(xy, regions)
    return m if m.any() else None


def _frame_people(gt: PoseTrackVideos, iid: int, preds: Sequence[PredictedPose]) -> _Frame:
    """Ground truth and predictions of frame ``iid`` as poseval keeps them (module docstring).

    Raises:
        ValueError: a ground-truth person with evaluated joints but no ``bbox_head`` (names the image).
    """
    regions = gt.frames[iid].ignore_regions
    kk = POSETRACK_KEYPOINTS.num_joints
    g_ids, g_xy, g_m, g_head = [], [], [], []
    for p in gt.people[iid]:
        present = ~np.all(p.keypoints == 0, axis=1)
        m = _joint_mask(present, p.keypoints[:, :2], regions)
        if m is None:
            continue
        if p.bbox_head is None and m.any():
            raise ValueError(f"ground-truth person {p.ann_id} of image {iid} ({gt.frames[iid].file_name}) has "
                             f"labelled joints but no bbox_head (the PCKh normaliser)")
        g_ids.append(p.track_id)
        g_xy.append(p.keypoints[:, :2])
        g_m.append(m)
        g_head.append(np.nan if p.bbox_head is None else
                      HEAD_SIZE_FACTOR * float(np.hypot(p.bbox_head[2], p.bbox_head[3])))
    p_ids, p_xy, p_m, p_s = [], [], [], []
    for pose in preds:
        m = _joint_mask(pose.present, pose.keypoints[:, :2], regions)
        if m is None:
            continue
        p_ids.append(pose.track_id)
        p_xy.append(pose.keypoints[:, :2])
        p_m.append(m)
        p_s.append(pose.keypoints[:, 2])

    def arr(v, shape, dtype=np.float64):
        return np.asarray(v, dtype).reshape(shape)

    return _Frame(g_ids, arr(g_xy, (-1, kk, 2)), arr(g_m, (-1, kk), bool), np.asarray(g_head, np.float64),
                  p_ids, arr(p_xy, (-1, kk, 2)), arr(p_m, (-1, kk), bool), arr(p_s, (-1, kk)))


def _norm_dist(fr: _Frame) -> np.ndarray:
    """``[G, P, K]`` distance / head size (poseval's plain division: a zero head size gives inf, or NaN for a zero
    distance, which never matches); inf where either joint is absent."""
    with np.errstate(divide="ignore", invalid="ignore"):
        d = np.linalg.norm(fr.g_xy[:, None] - fr.p_xy[None], axis=-1) / fr.head[:, None, None]
    return np.where(fr.g_m[:, None] & fr.p_m[None], d, np.inf)


def _pair(match: np.ndarray, g_m: np.ndarray) -> np.ndarray:
    """One-to-one pairing by PCKh (``assignGTmulti``): ``[P]`` ground-truth index per prediction (-1: unpaired).

    Args:
        match: bool ``[G, P, K]`` joint matches; g_m: bool ``[G, K]`` ground-truth joints.
    """
    n_g, n_p = match.shape[:2]
    out = -np.ones(n_p, int)
    if n_g == 0 or n_p == 0:
        return out
    n_joints = g_m.sum(-1)
    pck = np.where(n_joints[:, None] > 0, match.sum(-1) / np.maximum(n_joints, 1)[:, None], match.sum(-1))  # [G, P]
    best_g = pck.argmax(0)
    keep = np.zeros_like(pck)
    keep[best_g, np.arange(n_p)] = pck[best_g, np.arange(n_p)]
    for g in range(n_g):
        p = int(keep[g].argmax())
        if keep[g, p] > 0:
            out[p] = g
    return out


def _ap_entries(fr: _Frame, d: np.ndarray, thr: float, scores: list, labels: list) -> None:
    """Append the frame's detections (score, true positive) per joint to ``scores[j]`` / ``labels[j]``."""
    if not fr.p_ids:
        return
    match = d <= thr
    paired = _pair(match, fr.g_m) if fr.g_ids else -np.ones(len(fr.p_ids), int)
    for p in range(len(fr.p_ids)):
        tp = match[paired[p], p] if paired[p] >= 0 else np.zeros(fr.p_m.shape[1], bool)
        for j in np.flatnonzero(fr.p_m[p]):
            scores[j].append(fr.p_s[p, j])
            labels[j].append(bool(tp[j]))


def _mot_update(accs: Mapping[int, Any], fr: _Frame, d: np.ndarray, thr: float) -> None:
    """One frame into the per-joint accumulators (``accs``: joint index -> ``motmetrics.MOTAccumulator``); a frame
    without ground-truth or without predicted people is poseval's dummy pair (module docstring)."""
    if not fr.g_ids or not fr.p_ids:
        for acc in accs.values():
            acc.update([_DUMMY_ID], [_DUMMY_ID], np.full((1, 1), np.nan))
        return
    for j, acc in accs.items():
        gi, pi = np.flatnonzero(fr.g_m[:, j]), np.flatnonzero(fr.p_m[:, j])
        cost = d[np.ix_(gi, pi, [j])][..., 0] if len(gi) and len(pi) else np.zeros((len(gi), len(pi)))
        acc.update([fr.g_ids[i] for i in gi], [fr.p_ids[i] for i in pi], np.where(cost <= thr, cost, np.nan))


_MOT_COUNTS = ("num_objects", "num_misses", "num_switches", "num_false_positives", "num_detections")


def _mot_counts(acc) -> dict[str, float]:
    """CLEAR MOT counts of one accumulator plus ``sum_d``, the costs of its MATCH and SWITCH events (not the RAW rows
    that motmetrics >= 1.2 adds to ``events``)."""
    import motmetrics as mm

    out = {k: float(v) for k, v in mm.metrics.create().compute(acc, metrics=list(_MOT_COUNTS),
                                                               return_dataframe=False).items()}
    ev = acc.mot_events
    out["sum_d"] = float(np.nansum(ev.loc[ev["Type"].isin(["MATCH", "SWITCH"]), "D"])) if len(ev) else 0.0
    return out


def evaluated_frames(gt: PoseTrackVideos, vid: str) -> list[int]:
    """The frames of sequence ``vid`` that poseval evaluates (``cleanupData``): those whose ground truth has at least
    one person entry, in frame order. The tracking metrics leave out the last of them."""
    return [iid for iid in gt.sequences[vid] if gt.people[iid]]


def _mot_totals(mot: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per-joint MOTA / MOTP / precision / recall (percent, NaN where poseval's ``computeMetrics`` gives NaN)."""
    obj, det, fp = mot["num_objects"], mot["num_detections"], mot["num_false_positives"]
    with np.errstate(divide="ignore", invalid="ignore"):
        obj_n = np.where(obj > 0, obj, np.nan)
        mota = 100.0 * (1.0 - (mot["num_misses"] + mot["num_switches"] + fp) / obj_n)
        motp = np.where(det > 0, 100.0 * (1.0 - mot["sum_d"] / det), 0.0)
        prec = 100.0 * det / np.where(det + fp > 0, det + fp, np.nan)
        rec = 100.0 * det / obj_n
    return {"MOTA": mota, "MOTP": motp, "precision": prec, "recall": rec}


def _nanmean(v: np.ndarray, empty: float = float("nan")) -> float:
    """Mean of the non-NaN values (poseval's totals over joints); ``empty`` when there are none."""
    v = v[~np.isnan(v)]
    return float(v.mean()) if len(v) else empty


def evaluate_posetrack(gt: PoseTrackVideos, predictions: Mapping[int, Sequence[PredictedPose]],
                       thr: float = PCKH_THR, tracking: bool = True) -> dict[str, float]:
    """PoseTrack metrics of predictions (``image_id -> [PredictedPose]``, :func:`read_results`) against ``gt``, as
    poseval computes them (module docstring; ``evaluateAP.evaluateAP`` and ``evaluateTracking.evaluateTracking``).

    Args:
        thr: PCKh threshold (fraction of the head size). tracking: also the CLEAR MOT metrics.
    Returns:
        ``mAP``, ``AP/<joint>`` (non-NaN joints of :data:`EVAL_JOINTS`), ``AP/<group>`` (:data:`JOINT_GROUPS`, mean of
        its non-NaN joints), and with ``tracking`` ``MOTA``, ``MOTP``, ``precision``, ``recall``, ``MOTA/<joint>``,
        ``num_switches``, ``num_misses``, ``num_false_positives``, ``num_objects`` (summed over the joints); percent
        except the counts; ``num_labeled_frames`` (``is_labeled`` frames), ``num_eval_frames`` (frames evaluated),
        ``num_tracking_frames`` (frames in the tracking metrics). A total without any non-NaN joint is 0.
    Raises:
        ValueError: a ground-truth person with evaluated joints but no ``bbox_head``.
    """
    import motmetrics as mm

    names = POSETRACK_KEYPOINTS.joint_names
    kk = len(names)
    scores: list[list[float]] = [[] for _ in range(kk)]
    labels: list[list[bool]] = [[] for _ in range(kk)]
    n_gt = np.zeros(kk, int)
    mot = {key: np.zeros(kk) for key in (*_MOT_COUNTS, "sum_d")}
    n_eval = n_track = 0
    for vid in gt.sequences:
        frames = evaluated_frames(gt, vid)
        accs = {j: mm.MOTAccumulator(auto_id=True) for j in EVAL_JOINTS} if tracking else {}
        for t, iid in enumerate(frames):
            fr = _frame_people(gt, iid, predictions.get(iid, ()))
            d = _norm_dist(fr)
            n_gt += fr.g_m.sum(0)
            _ap_entries(fr, d, thr, scores, labels)
            if tracking and t < len(frames) - 1:
                _mot_update(accs, fr, d, thr)
                n_track += 1
        n_eval += len(frames)
        for j, acc in accs.items():
            for key, v in _mot_counts(acc).items():
                mot[key][j] += v
    ev = list(EVAL_JOINTS)
    ap = np.full(kk, np.nan)
    for j in ev:
        ap[j] = average_precision(np.asarray(scores[j], np.float64), np.asarray(labels[j], bool), int(n_gt[j]))
    out: dict[str, float] = {"mAP": _nanmean(ap[ev], empty=0.0)}
    out.update({f"AP/{names[j]}": float(ap[j]) for j in ev if not np.isnan(ap[j])})
    for group, js in JOINT_GROUPS.items():
        v = _nanmean(ap[list(js)])
        if not np.isnan(v):
            out[f"AP/{group}"] = v
    if tracking:
        per_joint = _mot_totals(mot)
        out.update({key: _nanmean(v[ev], empty=0.0) for key, v in per_joint.items()})
        out.update({f"MOTA/{names[j]}": float(per_joint["MOTA"][j]) for j in ev if not np.isnan(per_joint["MOTA"][j])})
        out.update({key: float(mot[key].sum()) for key in ("num_switches", "num_misses", "num_false_positives",
                                                           "num_objects")})
        out["num_tracking_frames"] = float(n_track)
    out["num_labeled_frames"] = float(sum(1 for f in gt.frames.values() if f.is_labeled))
    out["num_eval_frames"] = float(n_eval)
    return out
