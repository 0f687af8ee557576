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
solver's tie-breaking decides; one perturbed ``linear_sum_assignment`` detects it) the matching is delegated to
``munkres`` on the official padded matrix, so the result
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


def _running_max(a: np.ndarray, k: int, axis: int) -> np.ndarray:
    """Maximum over a centred window of ``k`` cells along ``axis`` (outside the array: -inf)."""
    r, n = (k - 1) // 2, a.shape[axis]
    pad = [(0, 0)] * a.ndim
    pad[axis] = (r, r)
    p = np.pad(a, pad, constant_values=-np.inf)
    window = [slice(None)] * a.ndim
    window[axis] = slice(0, n)
    out = p[tuple(window)].copy()
    for s in range(1, k):
        window[axis] = slice(s, s + n)
        np.maximum(out, p[tuple(window)], out=out)
    return out


def top_k(heatmaps, tags, params: GroupingParams):
    """Peak NMS + top-k (official ``top_k``).

    Args:
        heatmaps: torch float ``[B, K, H, W]``. tags: torch float ``[B, K, H, W, L]``.

    Returns:
        ``(tag_k [B, K, M, L] float32, loc_k [B, K, M, 2] int64 (x, y), val_k [B, K, M] float32)`` NumPy arrays.
    """
    import torch

    # the k x k max-pool (padding -inf) as two 1-D running maxima of shifted views: the same maxima (max is exact)
    hm = heatmaps.detach().cpu().float().numpy()
    maxm = _running_max(_running_max(hm, params.nms_kernel, 3), params.nms_kernel, 2)
    det = torch.from_numpy(hm * (maxm == hm))
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


def _unique_optimum(cost: np.ndarray, rows: np.ndarray, cols: np.ndarray, delta: float = 1e-7) -> bool:
    """True when the optimal assignment ``(rows, cols)`` of ``cost`` is the only one (as a set of pairs).

    One more solve with the chosen pairs made ``delta`` dearer: an equally cheap assignment shares fewer pairs, so it
    becomes strictly cheaper and is found; a unique optimum ahead by more than ``delta * n`` is found again. (An
    alternative within ``delta * n`` of the optimum counts as a tie: munkres decides, as officially.)
    """
    from scipy.optimize import linear_sum_assignment

    work = cost.astype(np.float64, copy=True)
    work[rows, cols] += delta
    r2, c2 = linear_sum_assignment(work)
    return np.array_equal(r2, rows) and np.array_equal(c2, cols)


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


def refine(heatmaps: np.ndarray, tags: np.ndarray, person: np.ndarray, cache: dict | None = None) -> np.ndarray:
    """Official ``refine`` for one person: fill its missing joints (in place; returned).

    Args:
        heatmaps: float32 ``[K, H, W]``. tags: float32 ``[K, H, W, L]``. person: float32 ``[K, 3 + L]`` (adjusted).
        cache: ``{joint: _Tiles}`` shared by the people of an image.

    The official code evaluates ``heatmap - round(|tag - person mean tag|)`` on every cell of every joint's map.
    Here the map is cut into 8x8 tiles with their heatmap maximum and tag range: ``round`` is monotone, so a tile's
    score is at most ``max heatmap - round(distance of the person's tag to the tile's tag box)``; tiles are scored in
    decreasing order of that bound and the search stops when no remaining tile can reach (or tie) the best score.
    The result is the official whole-map argmax (first maximum in row-major order) in every case.
    """
    k, h, w = heatmaps.shape
    found = person[:, 2] > 0
    if found.all():
        return person
    xy = person[found, :2].astype(np.int32)
    prev = np.mean([tags[j, y, x] for j, (x, y) in zip(np.flatnonzero(found), xy)], axis=0)
    cache = {} if cache is None else cache
    for j in np.flatnonzero(~found):
        if j not in cache:
            cache[j] = _Tiles(heatmaps[j], tags[j])
        best = cache[j].argmax(prev)
        yy, xx = divmod(best, w)
        val = heatmaps[j, yy, xx]
        if not val > 0:
            continue
        x = xx + 0.5 + (0.25 if heatmaps[j, yy, min(xx + 1, w - 1)] > heatmaps[j, yy, max(xx - 1, 0)] else -0.25)
        y = yy + 0.5 + (0.25 if heatmaps[j, min(yy + 1, h - 1), xx] > heatmaps[j, max(0, yy - 1), xx] else -0.25)
        person[j, 0], person[j, 1], person[j, 2] = x, y, val
    return person


def _tile_reduce(a: np.ndarray, t: int, ufunc) -> np.ndarray:
    """``ufunc``-reduction of ``a`` ``[H, W, ...]`` (H, W multiples of ``t``) over ``t x t`` tiles -> ``[H/t * W/t,
    ...]`` in row-major tile order (elementwise ufunc calls over strided views: no per-element Python work)."""
    h, w = a.shape[:2]
    v = a.reshape(h, w // t, t, *a.shape[2:])
    out = v[:, :, 0].copy()
    for s in range(1, t):
        ufunc(out, v[:, :, s], out=out)
    v2 = out.reshape(h // t, t, w // t, *a.shape[2:])
    out2 = v2[:, 0].copy()
    for s in range(1, t):
        ufunc(out2, v2[:, s], out=out2)
    return out2.reshape(-1, *a.shape[2:])


class _Tiles:
    """One joint's heatmap ``[H, W]`` and tags ``[H, W, L]`` seen as ``T x T`` tiles (maps padded to a multiple of
    ``T`` with heatmap -inf when needed): per tile the heatmap maximum and the tag range."""

    T = 8
    CHUNK = 8

    def __init__(self, hm: np.ndarray, tag: np.ndarray) -> None:
        t = self.T
        h, w = hm.shape
        hp, wp = -(-h // t) * t, -(-w // t) * t
        if (hp, wp) != (h, w):
            hm = np.pad(hm, ((0, hp - h), (0, wp - w)), constant_values=-np.inf)
            edge = np.pad(tag, ((0, hp - h), (0, wp - w), (0, 0)), mode="edge")  # range of real cells only
            tag = edge
        self.h, self.w, self.wp = h, w, wp
        nl = tag.shape[-1]
        self.hm_flat = hm.reshape(-1)
        self.tag_flat = tag.reshape(-1, nl)
        self.top = _tile_reduce(hm, t, np.maximum).astype(np.float64)       # [nT]
        self.lo = _tile_reduce(tag, t, np.minimum).astype(np.float64)       # [nT, L]
        self.hi = _tile_reduce(tag, t, np.maximum).astype(np.float64)
        tiles_x = wp // t
        tile = np.arange(self.top.size)
        self.base = (tile // tiles_x) * t * wp + (tile % tiles_x) * t
        self.offs = (np.arange(t)[:, None] * wp + np.arange(t)[None, :]).reshape(-1)

    def argmax(self, prev: np.ndarray) -> int:
        """Flat index of the first maximum of ``hm - round(||tag - prev||)`` over the map (official ``refine``)."""
        p = prev.astype(np.float64)
        gap = np.maximum(0.0, np.maximum(self.lo - p, p - self.hi))
        lb = np.sqrt((gap * gap).sum(axis=1)) * (1 - 1e-6) - 1e-6
        bound = self.top - np.round(np.maximum(lb, 0.0))
        order = np.argsort(-bound, kind="stable")
        best_val, best_idx = -np.inf, -1
        for start in range(0, len(order), self.CHUNK):
            sel = order[start:start + self.CHUNK]
            if best_idx >= 0 and bound[sel[0]] + 1e-5 * (1.0 + abs(best_val)) < best_val:
                break
            cells = (self.base[sel][:, None] + self.offs[None, :]).reshape(-1)
            tt = (((self.tag_flat[cells] - prev[None, :]) ** 2).sum(axis=1)) ** 0.5
            score = self.hm_flat[cells] - np.round(tt)
            top = score.max()
            if top >= best_val:
                y, x = np.divmod(cells[score == top], self.wp)
                inside = (y < self.h) & (x < self.w)
                if inside.any():
                    c = int((y[inside] * self.w + x[inside]).min())
                    if top > best_val or c < best_idx:
                        best_val, best_idx = float(top), c
        return best_idx


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
