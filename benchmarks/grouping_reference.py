"""A straightforward ``munkres``-based implementation of the HigherHRNet grouping (the official parser's procedure,
HRNet/HigherHRNet-Human-Pose-Estimation ``lib/core/group.py``, re-written from its description): per-joint Python
loops, a dict of people keyed by tag value, the Hungarian matching by ``munkres.Munkres`` on the padded cost, loop
``adjust`` and whole-map ``refine``. It is the baseline of ``benchmarks/bench_grouping.py`` and the reference the
tests compare :func:`hrnet_core.codecs.grouping.group` with (identical people, joints and scores).
"""

from __future__ import annotations

import numpy as np
from munkres import Munkres

from hrnet_core.codecs.grouping import GroupingParams

__all__ = ["reference_group"]


def _top_k(det, tag, params: GroupingParams):
    import torch

    maxm = torch.nn.functional.max_pool2d(det, params.nms_kernel, 1, (params.nms_kernel - 1) // 2)
    det = det * torch.eq(maxm, det).float()
    num_images, num_joints, h, w = det.shape
    det = det.view(num_images, num_joints, -1)
    val_k, ind = det.topk(params.max_num_people, dim=2)
    tag = tag.view(tag.size(0), tag.size(1), w * h, -1)
    tag_k = torch.stack([torch.gather(tag[:, :, :, i], 2, ind) for i in range(tag.size(3))], dim=3)
    x = ind % w
    y = (ind / w).long()
    ind_k = torch.stack((x, y), dim=3)
    return tag_k.cpu().numpy(), ind_k.cpu().numpy(), val_k.cpu().numpy()


def _match(tag_k, loc_k, val_k, params: GroupingParams) -> np.ndarray:
    k = params.num_joints
    default = np.zeros((k, 3 + tag_k.shape[2]))
    joint_dict: dict = {}
    tag_dict: dict = {}
    for i in range(k):
        idx = params.order[i]
        tags = tag_k[idx]
        joints = np.concatenate((loc_k[idx], val_k[idx, :, None], tags), 1)
        mask = joints[:, 2] > params.detection_threshold
        tags = tags[mask]
        joints = joints[mask]
        if joints.shape[0] == 0:
            continue
        if i == 0 or len(joint_dict) == 0:
            for tag, joint in zip(tags, joints):
                key = tag[0]
                joint_dict.setdefault(key, np.copy(default))[idx] = joint
                tag_dict[key] = [tag]
            continue
        grouped_keys = list(joint_dict.keys())[:params.max_num_people]
        grouped_tags = [np.mean(tag_dict[g], axis=0) for g in grouped_keys]
        if params.ignore_too_much and len(grouped_keys) == params.max_num_people:
            continue
        diff = joints[:, None, 3:] - np.array(grouped_tags)[None, :, :]
        diff_normed = np.linalg.norm(diff, ord=2, axis=2)
        diff_saved = np.copy(diff_normed)
        if params.use_detection_val:
            diff_normed = np.round(diff_normed) * 100 - joints[:, 2:3]
        num_added, num_grouped = diff.shape[0], diff.shape[1]
        if num_added > num_grouped:
            diff_normed = np.concatenate((diff_normed, np.zeros((num_added, num_added - num_grouped)) + 1e10), axis=1)
        pairs = Munkres().compute(diff_normed)
        for row, col in pairs:
            if row < num_added and col < num_grouped and diff_saved[row][col] < params.tag_threshold:
                key = grouped_keys[col]
                joint_dict[key][idx] = joints[row]
                tag_dict[key].append(tags[row])
            else:
                key = tags[row][0]
                joint_dict.setdefault(key, np.copy(default))[idx] = joints[row]
                tag_dict[key] = [tags[row]]
    if not joint_dict:
        return np.zeros((0, k, 3 + tag_k.shape[2]), np.float32)
    return np.array([joint_dict[key] for key in joint_dict]).astype(np.float32)


def _adjust(people: np.ndarray, det: np.ndarray) -> np.ndarray:
    for p in range(len(people)):
        for j in range(people.shape[1]):
            joint = people[p, j]
            if joint[2] > 0:
                y, x = joint[0:2]
                xx, yy = int(x), int(y)
                tmp = det[j]
                if tmp[xx, min(yy + 1, tmp.shape[1] - 1)] > tmp[xx, max(yy - 1, 0)]:
                    y += 0.25
                else:
                    y -= 0.25
                if tmp[min(xx + 1, tmp.shape[0] - 1), yy] > tmp[max(0, xx - 1), yy]:
                    x += 0.25
                else:
                    x -= 0.25
                people[p, j, 0:2] = (y + 0.5, x + 0.5)
    return people


def _refine(det: np.ndarray, tag: np.ndarray, keypoints: np.ndarray) -> np.ndarray:
    tags = []
    for i in range(keypoints.shape[0]):
        if keypoints[i, 2] > 0:
            x, y = keypoints[i][:2].astype(np.int32)
            tags.append(tag[i, y, x])
    prev_tag = np.mean(tags, axis=0)
    ans = []
    for i in range(keypoints.shape[0]):
        tmp = det[i, :, :]
        tt = (((tag[i, :, :] - prev_tag[None, None, :]) ** 2).sum(axis=2) ** 0.5)
        tmp2 = tmp - np.round(tt)
        y, x = np.unravel_index(np.argmax(tmp2), tmp.shape)
        xx, yy = x, y
        val = tmp[y, x]
        x += 0.5
        y += 0.5
        if tmp[yy, min(xx + 1, tmp.shape[1] - 1)] > tmp[yy, max(xx - 1, 0)]:
            x += 0.25
        else:
            x -= 0.25
        if tmp[min(yy + 1, tmp.shape[0] - 1), xx] > tmp[max(0, yy - 1), xx]:
            y += 0.25
        else:
            y -= 0.25
        ans.append((x, y, val))
    ans = np.array(ans)
    for i in range(det.shape[0]):
        if ans[i, 2] > 0 and keypoints[i, 2] == 0:
            keypoints[i, :2] = ans[i, :2]
            keypoints[i, 2] = ans[i, 2]
    return keypoints


def reference_group(heatmaps, tags, params: GroupingParams, adjust: bool = True, refine: bool = True):
    """Same interface and output as :func:`hrnet_core.codecs.grouping.group` (``heatmaps`` ``[1, K, H, W]``, ``tags``
    ``[1, K, H, W, L]`` torch tensors) -> ``(people float32 [P, K, 3 + L], scores float32 [P])``."""
    tag_k, loc_k, val_k = _top_k(heatmaps, tags, params)
    people = _match(tag_k[0], loc_k[0], val_k[0], params)
    det = heatmaps[0].cpu().numpy()
    if adjust:
        people = _adjust(people, det)
    scores = np.array([p[:, 2].mean() for p in people], dtype=np.float32)
    if refine:
        tag = tags[0].cpu().numpy()
        for p in range(len(people)):
            people[p] = _refine(det, tag, people[p])
    return people, scores


def synthetic_maps(num_people: int, size: int = 128, num_joints: int = 17, seed: int = 0, noise: float = 0.0,
                   num_tags: int = 2, tag_spread: float = 0.0, missing: float = 0.0, grid: bool = False):
    """Heatmaps ``[1, K, H, W]`` and tags ``[1, K, H, W, L]`` (torch float32) of ``num_people`` random people, and
    their joints ``[P, K, 3]`` (x, y cell, 1 = drawn). Person ``p`` has tag ``3 p`` (+ ``tag_spread`` noise per
    joint) in a disc of radius 4 around each joint; Gaussians of std 2 cells peak at 1; ``noise`` adds uniform clutter;
    ``missing`` drops joints at random; ``grid`` places the people on a grid of 24-cell spacing (no two people's
    joints of one type closer than 8 cells: every peak survives NMS)."""
    import torch

    rng = np.random.default_rng(seed)
    k = num_joints
    hm = np.zeros((k, size, size), np.float32)
    tg = np.zeros((k, size, size, num_tags), np.float32)
    centres = rng.uniform(12, size - 12, size=(num_people, 2))
    if grid:
        side = int(np.ceil(np.sqrt(num_people)))
        if 24 * side + 12 > size:
            raise ValueError(f"{num_people} people do not fit a 24-cell grid in {size} cells")
        cells = np.array([(i % side, i // side) for i in range(num_people)], dtype=np.float64)
        centres = 24.0 * cells + 24.0 + rng.uniform(-3, 3, size=(num_people, 2))
    joints = np.zeros((num_people, k, 3))
    yy, xx = np.mgrid[0:size, 0:size]
    for p in range(num_people):
        spread = np.clip(rng.normal(0, 5, size=(k, 2)), -5, 5) if grid else rng.normal(0, 5, size=(k, 2))
        pts = np.clip(centres[p] + spread, 0, size - 1).round()
        for j in range(k):
            if rng.random() < missing:
                continue
            x, y = pts[j]
            joints[p, j] = (x, y, 1)
            g = np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / 8.0).astype(np.float32) * rng.uniform(0.6, 1.0)
            hm[j] = np.maximum(hm[j], g)
            near = (xx - x) ** 2 + (yy - y) ** 2 <= 16
            tg[j][near] = 3.0 * p + rng.normal(0, tag_spread, size=num_tags)
    if noise:
        hm += rng.uniform(0, noise, size=hm.shape).astype(np.float32)
        tg += rng.normal(0, noise, size=tg.shape).astype(np.float32)
    return torch.from_numpy(hm)[None], torch.from_numpy(tg)[None], joints
