"""Associative-embedding grouping of bottom-up heatmaps and tags into people (HigherHRNet paper Sec. 3.5; the official
parser, HRNet/HigherHRNet-Human-Pose-Estimation ``lib/core/group.py``; FACTS.md section 2).

The procedure, per image (heatmaps ``[K, H, W]``, tags ``[K, H, W, L]`` with ``L`` tag maps per joint, e.g. the
original and the flipped one):

1. peak NMS: keep cells equal to the ``nms_kernel`` max-pool of their map; top ``max_num_people`` per joint;
2. joints in the order ``joint_order`` (COCO: nose, eyes, ears, shoulders, hips, elbows, wrists, knees, ankles);
   candidates above ``detection_threshold``; the first joint type with candidates starts one person per candidate;
   each next type is matched to the first ``max_num_people`` people by the Hungarian algorithm on the cost
   ``round(|tag - person mean tag|) * 100 - score`` (``use_detection_val``); a candidate joins its matched person
   when the L2 tag distance is ``< tag_threshold``, else it starts a new person. People are keyed by the first tag
   value of the joint that started them (the official dict semantics, kept exactly);
3. adjust: each found joint moves 0.25 cell toward its higher neighbour in x and y, then +0.5 (cell centres);
4. person score: the mean over all joints of the heatmap values (0 for missing joints), before refinement;
5. refine: every missing joint of a person is filled by the argmax of ``heatmap - round(|tag - person mean tag|)``
   (adjusted by 0.25 toward the higher neighbour) when its value is > 0.

Speed: the official parser runs the pure-Python ``munkres`` solver and per-joint Python loops. Here the matching uses
``scipy.optimize.linear_sum_assignment`` on the unpadded cost, adjust is vectorised, and refine evaluates the
argmax only over the strongest heatmap cells (exact: ``heatmap - round(distance) <= heatmap``, so cells weaker than
the best candidate value cannot win; the full map is used when the bound does not decide). The Hungarian optimum is
the same for every solver when it is unique; when the optimum is tied (several assignments of equal cost, where a
solver's tie-breaking decides) the matching is delegated to ``munkres`` on the official padded matrix, so the result
is the official one in every case. :func:`group` returns identical people, joints and scores as the official
procedure (``benchmarks/grouping_reference.py`` is a straightforward ``munkres`` implementation; tests compare).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["GroupingParams", "official_joint_order", "top_k", "match_by_tag", "adjust", "refine", "group",
           "GroupingStats"]

# official joint order (1-based in the official code): head, shoulders, hips, elbows, wrists, knees, ankles (COCO)
_OFFICIAL_ORDER = (0, 1, 2, 3, 4, 5, 6, 11, 12, 7, 8, 9, 10, 13, 14, 15, 16)


def official_joint_order(num_joints: int) -> tuple[int, ...]:
    """The first ``num_joints`` entries of the official order (COCO 17; CrowdPose 14 takes the first 14, as the
    official parser does for any joint count).

    Raises:
        ValueError: more than 17 joints.
    """
    if not 0 < num_joints <= len(_OFFICIAL_ORDER):
        raise ValueError(f"official joint order has 17 entries, got num_joints={num_joints}")
    order = _OFFICIAL_ORDER[:num_joints]
    if sorted(order) != list(range(num_joints)):  # CrowdPose: entries >= K would be out of range
        order = tuple(j for j in _OFFICIAL_ORDER if j < num_joints)
    return order


@dataclass(frozen=True)
class GroupingParams:
    """Settings of the parser (official ``TEST`` keys; defaults are the published ones).

    Attributes:
        num_joints: K.
        max_num_people: top-k per joint and people matched per joint type (30).
        detection_threshold: candidate score threshold (0.1).
        tag_threshold: L2 tag distance below which a candidate joins its matched person (1.0).
        use_detection_val: cost ``round(d) * 100 - score`` (True) instead of ``d``.
        ignore_too_much: skip a joint type when ``max_num_people`` people exist (False).
        nms_kernel: peak NMS max-pool size (5).
        joint_order: matching order (:func:`official_joint_order` when empty).
    """

    num_joints: int
    max_num_people: int = 30
    detection_threshold: float = 0.1
    tag_threshold: float = 1.0
    use_detection_val: bool = True
    ignore_too_much: bool = False
    nms_kernel: int = 5
    joint_order: tuple[int, ...] = field(default_factory=tuple)

    @property
    def order(self) -> tuple[int, ...]:
        return self.joint_order or official_joint_order(self.num_joints)


@dataclass
class GroupingStats:
    """Counters of :func:`match_by_tag`: matchings solved by the unique-argmin shortcut, by ``linear_sum_assignment``
    with a unique optimum, and delegated to ``munkres`` (tied optimum)."""

    argmin: int = 0
    lsa: int = 0
    munkres: int = 0


def top_k(heatmaps, tags, params: GroupingParams):
    """Peak NMS + top-k (official ``top_k``).

    Args:
        heatmaps: torch float ``[B, K, H, W]``. tags: torch float ``[B, K, H, W, L]``.

    Returns:
        ``(tag_k [B, K, M, L] float32, loc_k [B, K, M, 2] int64 (x, y), val_k [B, K, M] float32)`` NumPy arrays.
    """
    import torch

    k, pad = params.nms_kernel, (params.nms_kernel - 1) // 2
    # the k x k max-pool as a 1 x k then a k x 1 pool: the same maxima (max is exact), ~5x less work
    maxm = torch.nn.functional.max_pool2d(heatmaps, (1, k), 1, (0, pad))
    maxm = torch.nn.functional.max_pool2d(maxm, (k, 1), 1, (pad, 0))
    det = heatmaps * torch.eq(maxm, heatmaps).float()
    b, nj, h, w = det.shape
    val_k, ind = det.view(b, nj, -1).topk(params.max_num_people, dim=2)
    t = tags.reshape(b, nj, h * w, -1)
    tag_k = torch.stack([torch.gather(t[..., i], 2, ind) for i in range(t.shape[3])], dim=3)
    loc_k = torch.stack((ind % w, torch.div(ind, w, rounding_mode="floor")), dim=3)
    return tag_k.cpu().numpy(), loc_k.cpu().numpy(), val_k.cpu().numpy()


def _assignment(cost: np.ndarray, stats: GroupingStats | None) -> np.ndarray:
    """Column of each row (``-1``: a padded column, i.e. no person) of the official Hungarian matching of
    ``cost`` ``[n_added, n_grouped]`` (the official code pads the columns with 1e10 to a square when
    ``n_added > n_grouped`` and runs ``munkres``)."""
    from scipy.optimize import linear_sum_assignment

    n, g = cost.shape
    if n <= g:
        best = cost.argmin(axis=1)
        srt = np.sort(cost, axis=1)
        strict = g == 1 or bool((srt[:, 0] < srt[:, 1]).all())
        if strict and len(np.unique(best)) == n:
            if stats is not None:
                stats.argmin += 1
            return best
    rows, cols = linear_sum_assignment(cost)
    if _unique_optimum(cost, rows, cols):
        if stats is not None:
            stats.lsa += 1
        out = np.full(n, -1, dtype=np.int64)
        out[rows] = cols
        return out
    if stats is not None:
        stats.munkres += 1
    from munkres import Munkres

    padded = cost
    if n > g:
        padded = np.concatenate((cost, np.zeros((n, n - g)) + 1e10), axis=1)
    out = np.full(n, -1, dtype=np.int64)
    for r, c in Munkres().compute(padded):
        if c < g:
            out[r] = c
    return out


def _unique_optimum(cost: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> bool:
    """True when no other assignment (set of matched pairs) reaches the optimum ``cost[rows, cols].sum()``: forbidding
    each matched pair in turn must make the optimum strictly worse."""
    from scipy.optimize import linear_sum_assignment

    base = float(cost[rows, cols].sum())
    tol = 1e-9 * (1.0 + abs(base))
    work = cost.astype(np.float64, copy=True)
    for r, c in zip(rows, cols):
        saved = work[r, c]
        work[r, c] = np.inf
        try:
            r2, c2 = linear_sum_assignment(work)
            alt = float(work[r2, c2].sum())
        except ValueError:  # no assignment without this pair
            alt = np.inf
        work[r, c] = saved
        if alt <= base + tol:
            return False
    return True


def match_by_tag(tag_k: np.ndarray, loc_k: np.ndarray, val_k: np.ndarray, params: GroupingParams,
                 stats: GroupingStats | None = None) -> np.ndarray:
    """Group the candidates of one image (official ``match_by_tag``).

    Args:
        tag_k: ``[K, M, L]``. loc_k: ``[K, M, 2]`` (x, y cells). val_k: ``[K, M]``.

    Returns:
        float32 ``[P, K, 3 + L]``: per person and joint ``(x, y, score, tags...)``, zeros for missing joints; people
        in the order they were started.
    """
    k = params.num_joints
    nl = tag_k.shape[2]
    cap = k * tag_k.shape[1] + 1
    people = np.zeros((cap, k, 3 + nl))
    tag_buf = np.zeros((cap, k, nl), dtype=tag_k.dtype)
    tag_cnt = np.zeros(cap, dtype=np.int64)
    means = np.zeros((cap, nl), dtype=tag_k.dtype)
    stale = np.zeros(cap, dtype=bool)
    keys: dict = {}
    n_people = 0

    def start(key, idx: int, joint: np.ndarray, tag: np.ndarray) -> None:
        nonlocal n_people
        p = keys.get(key)
        if p is None:
            p = keys[key] = n_people
            n_people += 1
        people[p, idx] = joint
        tag_buf[p, 0] = tag
        tag_cnt[p] = 1
        stale[p] = True

    for i, idx in enumerate(params.order):
        sel = val_k[idx] > params.detection_threshold
        if not sel.any():
            continue
        tags = tag_k[idx][sel]
        joints = np.concatenate((loc_k[idx][sel], val_k[idx][sel][:, None], tags), 1)
        if i == 0 or n_people == 0:
            for tag, joint in zip(tags, joints):
                start(tag[0], idx, joint, tag)
            continue
        g = min(n_people, params.max_num_people)
        if params.ignore_too_much and g == params.max_num_people:
            continue
        for p in np.flatnonzero(stale[:g]):
            means[p] = np.mean(tag_buf[p, :tag_cnt[p]], axis=0)
            stale[p] = False
        diff = joints[:, None, 3:] - means[:g][None]
        dist = np.linalg.norm(diff, ord=2, axis=2)
        cost = np.round(dist) * 100 - joints[:, 2:3] if params.use_detection_val else dist
        cols = _assignment(cost, stats)
        for row, col in enumerate(cols):
            if col >= 0 and dist[row, col] < params.tag_threshold:
                people[col, idx] = joints[row]
                tag_buf[col, tag_cnt[col]] = tags[row]
                tag_cnt[col] += 1
                stale[col] = True
            else:
                start(tags[row][0], idx, joints[row], tags[row])
    return people[:n_people].astype(np.float32)


def adjust(people: np.ndarray, heatmaps: np.ndarray) -> np.ndarray:
    """Official ``adjust`` (vectorised): found joints (score > 0) move 0.25 cell toward the higher neighbour in x and
    y, then +0.5. ``people`` float32 ``[P, K, 3 + L]`` (x, y cells), ``heatmaps`` float32 ``[K, H, W]``; in place,
    returned."""
    if not len(people):
        return people
    h, w = heatmaps.shape[1:]
    p_idx, j_idx = np.nonzero(people[:, :, 2] > 0)
    x = people[p_idx, j_idx, 0]
    y = people[p_idx, j_idx, 1]
    xi, yi = x.astype(np.int64), y.astype(np.int64)
    right = heatmaps[j_idx, yi, np.minimum(xi + 1, w - 1)] > heatmaps[j_idx, yi, np.maximum(xi - 1, 0)]
    down = heatmaps[j_idx, np.minimum(yi + 1, h - 1), xi] > heatmaps[j_idx, np.maximum(yi - 1, 0), xi]
    q = np.float32(0.25)
    x = np.where(right, x + q, x - q) + np.float32(0.5)
    y = np.where(down, y + q, y - q) + np.float32(0.5)
    people[p_idx, j_idx, 0] = x
    people[p_idx, j_idx, 1] = y
    return people


def refine(heatmaps: np.ndarray, tags: np.ndarray, person: np.ndarray, order: dict | None = None) -> np.ndarray:
    """Official ``refine`` for one person: fill its missing joints (in place; returned).

    Args:
        heatmaps: float32 ``[K, H, W]``. tags: float32 ``[K, H, W, L]``. person: float32 ``[K, 3 + L]`` (adjusted).
        order: cache ``{joint: [(cells, bound), ...]}`` of the candidate tiers, shared by the people of an image.

    Exactness: ``heatmap - round(distance) <= heatmap``, so when the best score among the cells of the strongest
    heatmap values exceeds every value outside them, no other cell can reach (or tie) it; the tiers grow (64, 1024,
    16384 cells) and the whole map is the last resort, so the result is the official whole-map argmax
    (first maximum in row-major order) in every case.
    """
    k, h, w = heatmaps.shape
    found = person[:, 2] > 0
    if found.all():
        return person
    xy = person[found, :2].astype(np.int32)
    prev = np.mean([tags[j, y, x] for j, (x, y) in zip(np.flatnonzero(found), xy)], axis=0)
    flat_hm = heatmaps.reshape(k, -1)
    flat_tag = tags.reshape(k, h * w, -1)
    order = {} if order is None else order
    for j in np.flatnonzero(~found):
        hm = flat_hm[j]
        if j not in order:
            order[j] = [_candidates(hm, n) for n in _TIERS]
        best = -1
        for cand, outside in order[j]:
            tt = (((flat_tag[j, cand] - prev[None, :]) ** 2).sum(axis=1)) ** 0.5
            score = hm[cand] - np.round(tt)
            b = int(np.argmax(score))
            if score[b] > outside:  # every other cell has a lower heatmap value, hence a lower score
                best = int(cand[b])
                break
        if best < 0:  # the bounds did not decide: the whole map, as officially
            tt = (((flat_tag[j] - prev[None, :]) ** 2).sum(axis=1)) ** 0.5
            best = int(np.argmax(hm - np.round(tt)))
        yy, xx = divmod(best, w)
        val = heatmaps[j, yy, xx]
        if not val > 0:
            continue
        x = xx + 0.5 + (0.25 if heatmaps[j, yy, min(xx + 1, w - 1)] > heatmaps[j, yy, max(xx - 1, 0)] else -0.25)
        y = yy + 0.5 + (0.25 if heatmaps[j, min(yy + 1, h - 1), xx] > heatmaps[j, max(0, yy - 1), xx] else -0.25)
        person[j, 0], person[j, 1], person[j, 2] = x, y, val
    return person


# cells examined, in tiers, before the whole map (refine)
_TIERS = (64, 1024, 16384)


def _candidates(hm: np.ndarray, n: int) -> tuple[np.ndarray, float]:
    """``(cells, bound)``: the cells of the ``n`` highest values of ``hm`` (all cells tied with the n-th included),
    in increasing index order, and the highest value outside them (``-inf`` when none)."""
    if hm.size <= n:
        return np.arange(hm.size), -np.inf
    cut = hm[np.argpartition(-hm, n - 1)[n - 1]]
    inside = hm >= cut
    rest = hm[~inside]
    return np.flatnonzero(inside), (float(rest.max()) if rest.size else -np.inf)


def group(heatmaps, tags, params: GroupingParams, adjust_joints: bool = True, refine_joints: bool = True,
          stats: GroupingStats | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The full parser for one image (official ``HeatmapParser.parse``).

    Args:
        heatmaps: torch float ``[1, K, H, W]``. tags: torch float ``[1, K, H, W, L]``.
        params: :class:`GroupingParams`. adjust_joints, refine_joints: official ``TEST.ADJUST`` / ``TEST.REFINE``.
        stats: optional counters of the matching paths.

    Returns:
        ``(people float32 [P, K, 3 + L] (x, y in map cells, score, tags), scores float32 [P])``.
    """
    tag_k, loc_k, val_k = top_k(heatmaps, tags, params)
    people = match_by_tag(tag_k[0], loc_k[0], val_k[0], params, stats)
    hm = heatmaps[0].detach().cpu().numpy()
    if adjust_joints:
        people = adjust(people, hm)
    scores = np.array([p[:, 2].mean() for p in people], dtype=np.float32)  # official per-person mean
    if refine_joints and len(people):
        tg = tags[0].detach().cpu().numpy()
        cache: dict = {}
        for p in range(len(people)):
            refine(hm, tg, people[p], cache)
    return people, scores
