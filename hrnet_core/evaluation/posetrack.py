"""PoseTrack metrics: per-joint AP / mAP of multi-person pose and MOTA / MOTP / precision / recall of pose tracking.

The definitions of the PoseTrack benchmark (Andriluka et al., CVPR 2018; its evaluation kit ``poseval``), evaluated on
the labelled frames only:

- a predicted joint matches a ground-truth joint when their distance is at most ``0.5 *`` the head size (PCKh 0.5),
  head size ``= 0.6 *`` the diagonal of the person's ``bbox_head``;
- ignore regions: ground-truth and predicted joints inside an ignore polygon of the frame are removed, and people
  left without joints are removed;
- AP: per frame, predicted and ground-truth people are paired one-to-one by PCKh (the fraction of a ground-truth
  person's joints that the prediction matches: each prediction keeps only its best person, each person takes the best
  remaining prediction); every predicted joint is a detection with its score, a true positive when its person is
  paired and the joint matches. Per joint, AP is the area under the interpolated precision-recall curve over all
  frames (VOC style, precision made monotone), in percent; ``mAP`` is the mean over the joints that have ground
  truth (the ears of PoseTrack 2018 have none);
- tracking: per joint, a CLEAR MOT accumulator (``motmetrics``) per sequence sees the track ids of the ground-truth
  and predicted people that have the joint, with the normalised distance ``d / head size`` as cost and pairs beyond
  0.5 not allowed. ``MOTA_j = 1 - (misses + switches + false positives) / objects``, ``MOTP_j = 1 - sum of matched
  costs / matches``, precision ``= matches / (matches + false positives)``, recall ``= matches / objects``; the
  totals are the means over joints with ground truth, in percent.

Predictions are the PoseTrack results json (:func:`results_json`, read by :func:`read_results`): ``images``
(``id``, ``file_name``) and ``annotations`` with ``image_id``, ``track_id``, ``keypoints`` (K x (x, y, score)) and
``scores`` (K); a joint with score 0 is absent.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from ..data.keypoints import POSETRACK_KEYPOINTS
from ..data.posetrack import PoseTrackVideos

__all__ = ["results_json", "read_results", "evaluate_posetrack", "average_precision", "JOINT_GROUPS", "PCKH_THR"]

PCKH_THR = 0.5
HEAD_SIZE_FACTOR = 0.6
# the column groups of the PoseTrack tables (poseval: Head = head top, head bottom (neck), nose)
JOINT_GROUPS: dict[str, tuple[int, ...]] = {
    "Head": (0, 1, 2), "Shoulder": (5, 6), "Elbow": (7, 8), "Wrist": (9, 10), "Hip": (11, 12), "Knee": (13, 14),
    "Ankle": (15, 16),
}


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


def read_results(results: Iterable[Mapping[str, Any]]) -> dict[int, list[tuple[int, np.ndarray]]]:
    """Results jsons -> ``image_id -> [(track_id, keypoints [K, 3] (x, y, score))]``.

    Raises:
        ValueError: an annotation without ``track_id`` / 51 keypoint values, or a track id twice in one frame.
    """
    out: dict[int, list[tuple[int, np.ndarray]]] = {}
    for res in results:
        for a in res.get("annotations", []):
            if "track_id" not in a or len(a.get("keypoints", ())) % 3:
                raise ValueError(f"result for image {a.get('image_id')} has no track_id or malformed keypoints")
            k = np.asarray(a["keypoints"], np.float64).reshape(-1, 3)
            if a.get("scores") is not None:
                k[:, 2] = np.asarray(a["scores"], np.float64)
            lst = out.setdefault(int(a["image_id"]), [])
            if any(t == int(a["track_id"]) for t, _ in lst):
                raise ValueError(f"track id {a['track_id']} twice in image {a['image_id']}")
            lst.append((int(a["track_id"]), k))
    return out


def average_precision(scores: np.ndarray, labels: np.ndarray, num_gt: int) -> float:
    """Area under the interpolated precision-recall curve (percent; NaN without ground truth).

    Args:
        scores: ``[N]`` detection scores; labels: ``[N]`` bool true positives; num_gt: ground-truth count.
    Detections are ranked by score (stable for ties); precision is made monotone from the right and summed over
    the recall steps.
    """
    if num_gt <= 0:
        return float("nan")
    order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
    lab = np.asarray(labels, bool)[order]
    tp, fp = np.cumsum(lab), np.cumsum(~lab)
    rec = tp / num_gt
    prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    mrec = np.concatenate([[0.0], rec, [1.0]])
    mpre = np.concatenate([[0.0], prec, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    i = np.flatnonzero(mrec[1:] != mrec[:-1]) + 1
    return float(100.0 * np.sum((mrec[i] - mrec[i - 1]) * mpre[i]))


def _inside(points: np.ndarray, regions: Sequence[np.ndarray]) -> np.ndarray:
    """``[K]`` bool: point inside (or on) any polygon."""
    import cv2

    hit = np.zeros(len(points), bool)
    for poly in regions:
        contour = poly.astype(np.float32).reshape(-1, 1, 2)
        for j, (x, y) in enumerate(points):
            if not hit[j] and cv2.pointPolygonTest(contour, (float(x), float(y)), False) >= 0:
                hit[j] = True
    return hit


def _frame_people(gt: PoseTrackVideos, iid: int, preds: Sequence[tuple[int, np.ndarray]]):
    """Ground truth and predictions of a frame after ignore regions: (gt ids, gt joints [G,K,2], gt mask [G,K],
    head sizes [G], pred ids, pred joints [P,K,2], pred mask [P,K], pred scores [P,K])."""
    regions = gt.frames[iid].ignore_regions
    g_ids, g_xy, g_m, g_head = [], [], [], []
    for p in gt.people[iid]:
        m = p.keypoints[:, 2] > 0
        if regions:
            m &= ~_inside(p.keypoints[:, :2], regions)
        if not m.any():
            continue
        if p.bbox_head is None:
            raise ValueError(f"ground-truth person {p.ann_id} of image {iid} ({gt.frames[iid].file_name}) has "
                             f"labelled joints but no bbox_head (the PCKh normaliser)")
        g_ids.append(p.track_id)
        g_xy.append(p.keypoints[:, :2])
        g_m.append(m)
        g_head.append(HEAD_SIZE_FACTOR * float(np.hypot(p.bbox_head[2], p.bbox_head[3])))
    p_ids, p_xy, p_m, p_s = [], [], [], []
    for tid, k in preds:
        m = k[:, 2] > 0
        if regions:
            m &= ~_inside(k[:, :2], regions)
        if not m.any():
            continue
        p_ids.append(tid)
        p_xy.append(k[:, :2])
        p_m.append(m)
        p_s.append(k[:, 2])
    kk = POSETRACK_KEYPOINTS.num_joints

    def arr(v, shape, dtype=np.float64):
        return np.asarray(v, dtype).reshape(shape)

    return (g_ids, arr(g_xy, (-1, kk, 2)), arr(g_m, (-1, kk), bool), np.asarray(g_head, np.float64),
            p_ids, arr(p_xy, (-1, kk, 2)), arr(p_m, (-1, kk), bool), arr(p_s, (-1, kk)))


def _norm_dist(g_xy, g_m, head, p_xy, p_m) -> np.ndarray:
    """``[G, P, K]`` distance / head size; inf where either joint is absent."""
    d = np.linalg.norm(g_xy[:, None] - p_xy[None], axis=-1) / np.maximum(head, 1e-9)[:, None, None]
    return np.where(g_m[:, None] & p_m[None], d, np.inf)


def _pair(match: np.ndarray, g_m: np.ndarray) -> np.ndarray:
    """One-to-one pairing by PCKh: ``[P]`` ground-truth index per prediction (-1: unpaired)."""
    n_g, n_p = match.shape[:2]
    out = -np.ones(n_p, int)
    if n_g == 0 or n_p == 0:
        return out
    pck = match.sum(-1) / np.maximum(g_m.sum(-1), 1)[:, None]  # [G, P]
    best_g = pck.argmax(0)
    keep = np.zeros_like(pck)
    keep[best_g, np.arange(n_p)] = pck[best_g, np.arange(n_p)]
    for g in range(n_g):
        p = int(keep[g].argmax())
        if keep[g, p] > 0:
            out[p] = g
    return out


def evaluate_posetrack(gt: PoseTrackVideos, predictions: Mapping[int, Sequence[tuple[int, np.ndarray]]],
                       thr: float = PCKH_THR, tracking: bool = True) -> dict[str, float]:
    """PoseTrack metrics of predictions (``image_id -> [(track_id, [K, 3])]``, :func:`read_results`) against the
    labelled frames of ``gt`` (module docstring).

    Returns:
        ``mAP``, ``AP/<joint>`` and ``AP/<group>`` (:data:`JOINT_GROUPS`), and with ``tracking`` ``MOTA``, ``MOTP``,
        ``precision``, ``recall``, ``MOTA/<joint>``, ``num_switches``, ``num_misses``, ``num_false_positives``,
        ``num_objects`` (summed over joints); percent except the counts. Joints without ground truth are left out.
    Raises:
        ValueError: a labelled ground-truth person with joints but no ``bbox_head``.
    """
    import motmetrics as mm

    names = POSETRACK_KEYPOINTS.joint_names
    kk = len(names)
    scores: list[list[np.ndarray]] = [[] for _ in range(kk)]
    labels: list[list[np.ndarray]] = [[] for _ in range(kk)]
    n_gt = np.zeros(kk, int)
    mot = {key: np.zeros(kk) for key in ("num_objects", "num_misses", "num_switches", "num_false_positives",
                                         "num_detections", "sum_d")}
    for vid, ids in gt.sequences.items():
        accs = [mm.MOTAccumulator(auto_id=True) for _ in range(kk)] if tracking else []
        for iid in ids:
            if not gt.frames[iid].is_labeled:
                continue
            g_ids, g_xy, g_m, head, p_ids, p_xy, p_m, p_s = _frame_people(gt, iid, predictions.get(iid, ()))
            d = _norm_dist(g_xy, g_m, head, p_xy, p_m)
            match = d <= thr
            paired = _pair(match, g_m)
            n_gt += g_m.sum(0)
            for p in range(len(p_ids)):
                tp = match[paired[p], p] if paired[p] >= 0 else np.zeros(kk, bool)
                for j in np.flatnonzero(p_m[p]):
                    scores[j].append(p_s[p, j:j + 1])
                    labels[j].append(tp[j:j + 1])
            for j in range(kk) if tracking else ():
                gi, pi = np.flatnonzero(g_m[:, j]), np.flatnonzero(p_m[:, j])
                cost = d[np.ix_(gi, pi, [j])][..., 0] if len(gi) and len(pi) else np.zeros((len(gi), len(pi)))
                cost = np.where(cost <= thr, cost, np.nan)
                accs[j].update([g_ids[i] for i in gi], [p_ids[i] for i in pi], cost)
        if tracking:
            mh = mm.metrics.create()
            for j in range(kk):
                s = mh.compute(accs[j], metrics=["num_objects", "num_misses", "num_switches", "num_false_positives",
                                                 "num_detections"], return_dataframe=False)
                for key, v in s.items():
                    mot[key][j] += float(v)
                ev = accs[j].mot_events
                if len(ev):  # the cost of each matched pair (a switch is a match; TRANSFER rows repeat it)
                    mot["sum_d"][j] += float(np.nansum(ev.loc[ev["Type"].isin(["MATCH", "SWITCH"]), "D"]))
    out: dict[str, float] = {}
    ap = np.array([average_precision(np.concatenate(scores[j]) if scores[j] else np.zeros(0),
                                     np.concatenate(labels[j]) if labels[j] else np.zeros(0, bool), int(n_gt[j]))
                   for j in range(kk)])
    valid = ~np.isnan(ap)
    out["mAP"] = float(ap[valid].mean()) if valid.any() else 0.0
    for j in np.flatnonzero(valid):
        out[f"AP/{names[j]}"] = float(ap[j])
    for group, js in JOINT_GROUPS.items():
        v = [ap[j] for j in js if valid[j]]
        if v:
            out[f"AP/{group}"] = float(np.mean(v))
    if tracking:
        obj = mot["num_objects"]
        has = obj > 0
        o = np.where(has, obj, 1)
        mota = 100.0 * (1.0 - (mot["num_misses"] + mot["num_switches"] + mot["num_false_positives"]) / o)
        det = mot["num_detections"]
        motp = np.where(det > 0, 100.0 * (1.0 - mot["sum_d"] / np.maximum(det, 1)), 0.0)
        prec = np.where(det + mot["num_false_positives"] > 0,
                        100.0 * det / np.maximum(det + mot["num_false_positives"], 1), 0.0)
        rec = 100.0 * det / o
        for key, v in (("MOTA", mota), ("MOTP", motp), ("precision", prec), ("recall", rec)):
            out[key] = float(v[has].mean()) if has.any() else 0.0
        for j in np.flatnonzero(has):
            out[f"MOTA/{names[j]}"] = float(mota[j])
        for key in ("num_switches", "num_misses", "num_false_positives", "num_objects"):
            out[key] = float(mot[key].sum())
    out["num_labeled_frames"] = float(sum(1 for f in gt.frames.values() if f.is_labeled))
    return out
