"""The top-down pose test procedure per batch of people (HRNet pose paper; FACTS.md section 1), in the pieces the
``pose_topdown`` task's predictor runs: :class:`CropLoader` (decode and warp one batch of people, in the evaluation
loop's background thread), :func:`predict_crops` (flip-tested forward, decoding, inverse crop affine) and
:func:`coco_results` (COCO results after rescoring and OKS-NMS).

Follows deep-high-resolution-net.pytorch ``lib/core/function.py`` ``validate`` (flip test with shifted flipped
heatmaps) and ``lib/core/inference.py`` ``get_final_preds`` (argmax + quarter offset, inverse crop affine). Moved
from ``hrnet_core/tasks/pose_topdown.py`` (issue 25).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Mapping, Sequence

import numpy as np

from .coco_keypoints import coco_keypoint_results

__all__ = ["CropLoader", "coco_results", "predict_crops"]


class CropLoader:
    """``records -> {"image" [b, 3, H, W], "center" [b, 2], "scale" [b, 2]}``: decode (the last 16 images cached:
    consecutive people share an image) and warp one batch of people; runs in the loop's background thread.

    Args:
        transform: an eval-mode :class:`~hrnet_core.data.transforms.TopDownTransform`.
    """

    def __init__(self, transform) -> None:
        self.transform = transform
        self.cache: OrderedDict[str, np.ndarray] = OrderedDict()

    def image(self, path: str) -> np.ndarray:
        """The RGB uint8 ``[H, W, 3]`` image at ``path`` (cached; :func:`~hrnet_core.data.io.read_image` raises
        ``ImageReadError`` naming a missing or corrupt file)."""
        from hrnet_core.data.io import read_image

        if path in self.cache:
            self.cache.move_to_end(path)
            return self.cache[path]
        img = read_image(path)
        self.cache[path] = img
        if len(self.cache) > 16:
            self.cache.popitem(last=False)
        return img

    def __call__(self, records: Sequence[dict[str, Any]]) -> dict[str, np.ndarray]:
        samples = [self.transform(r, self.image(r["image_file"])) for r in records]
        return {"image": np.stack([s["image"] for s in samples]), "center": np.stack([s["center"] for s in samples]),
                "scale": np.stack([s["scale"] for s in samples])}


def predict_crops(net, flip_pairs, device, batch: Mapping[str, np.ndarray], *, flip: bool, shift_heatmap: bool,
                  heatmap_size: Sequence[int]) -> np.ndarray:
    """Keypoints ``[b, K, 3]`` (x, y original-image px, heatmap maximum) of one loaded batch (:class:`CropLoader`).

    ``net``: the inference network on ``device``; ``flip``: average with the mirrored crops (one forward,
    :func:`~hrnet_core.codecs.heatmap.flip_test_one_forward`, ``flip_pairs`` swapped), the flipped heatmap shifted
    one cell right when ``shift_heatmap``; ``heatmap_size`` ``[W, H]`` cells.
    """
    import torch

    from hrnet_core.codecs.heatmap import decode_on_device, flip_test_one_forward, heatmaps_to_image_coords

    with torch.inference_mode():
        x = torch.from_numpy(batch["image"]).to(device).contiguous(memory_format=torch.channels_last)
        if flip:
            hm = flip_test_one_forward(net, x, flip_pairs, shift=shift_heatmap)
        else:
            hm = net(x)
        coords, maxvals = (t.cpu().numpy() for t in decode_on_device(hm))
    coords = heatmaps_to_image_coords(coords, batch["center"], batch["scale"], heatmap_size)
    return np.concatenate([coords, maxvals], axis=2)


def coco_results(items, preds: np.ndarray, num_joints: int, sigmas, *, in_vis_thr: float,
                 oks_thr: float) -> list[dict[str, Any]]:
    """COCO keypoint results of the people ``items`` (records with ``image_id``, ``score``, ``area``, ``center``,
    ``scale``) and their keypoints ``preds`` ``[N, K, 3]``, after rescoring (joints above ``in_vis_thr``) and
    per-image OKS-NMS at ``oks_thr`` (:func:`~hrnet_core.evaluation.coco_keypoints.coco_keypoint_results`);
    ``sigmas``: OKS constants of a layout with other than 17 joints."""
    return coco_keypoint_results(
        preds, [r["image_id"] for r in items], [r["score"] for r in items], [r["area"] for r in items],
        centers=np.stack([r["center"] for r in items]) if len(items) else None,
        scales=np.stack([r["scale"] for r in items]) if len(items) else None,
        in_vis_thr=in_vis_thr, oks_thr=oks_thr,
        sigmas=None if num_joints == 17 else sigmas)
