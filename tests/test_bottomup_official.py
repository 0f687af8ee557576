"""Bottom-up (HigherHRNet) test procedure against the official one (HRNet/HigherHRNet-Human-Pose-Estimation
``tools/valid.py``, ``lib/utils/transforms.py`` ``get_multi_scale_size``, ``lib/core/inference.py``
``get_multi_stage_outputs`` / ``aggregate_results``, ``lib/core/group.py`` ``HeatmapParser.parse``). The official
rules are transcribed independently here; every convention was already equal (old = new, stated per test)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F


def _official_size(h: int, w: int, input_size: int, scale: float, min_scale: float):
    """get_multi_scale_size in our words: the short side at the smallest scale is input*min_scale rounded up to 64;
    the long side keeps the aspect and is rounded up to 64 at that smallest scale; both then grow by
    scale/min_scale (int). The scale in 200-px units keeps the short side's image extent."""
    base = int((min_scale * input_size + 63) // 64 * 64)
    if w < h:
        rw = int(base * scale / min_scale)
        rh = int(int((base / w * h + 63) // 64 * 64) * scale / min_scale)
        return (rw, rh), (w / 200.0, rh / rw * w / 200.0)
    rh = int(base * scale / min_scale)
    rw = int(int((base / h * w + 63) // 64 * 64) * scale / min_scale)
    return (rw, rh), (rw / rh * h / 200.0, h / 200.0)


@pytest.mark.parametrize("input_size", [512, 640])
def test_multi_scale_size_is_get_multi_scale_size(input_size):
    """Sizes and scales for 30 image shapes x scales (2, 1, 0.5): equal (unchanged)."""
    from hrnet_core.evaluation.bottomup import multi_scale_size

    rng = np.random.default_rng(0)
    for h, w in rng.integers(120, 900, size=(30, 2)):
        for s in (2.0, 1.0, 0.5):
            size, center, sc = multi_scale_size(int(h), int(w), input_size, s, 0.5)
            osize, osc = _official_size(int(h), int(w), input_size, s, 0.5)
            assert size == osize and np.allclose(sc, osc, rtol=0, atol=1e-12)
            assert tuple(center) == (int(w / 2.0 + 0.5), int(h / 2.0 + 0.5))


class _TwoOutputs(torch.nn.Module):
    """A fixed network with the HigherHRNet output layout: 1/4 map with K heatmaps + K tags, 1/2 map with K
    heatmaps (both from fixed random convolutions, so left and right differ)."""

    def __init__(self, k: int) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.a = torch.nn.Conv2d(3, 2 * k, 3, stride=4, padding=1)
        self.b = torch.nn.Conv2d(3, k, 3, stride=2, padding=1)
        for p in self.parameters():
            p.data = torch.randn(p.shape, generator=g) * 0.3

    def forward(self, x):
        return [self.a(x), self.b(x)]


def _official_stage_outputs(model, image, k, flip_index, size_projected):
    """get_multi_stage_outputs (TEST.WITH_HEATMAPS (T, T), WITH_AE (T, F), flip, project2image), our words: per
    pass, the lower-resolution output is upsampled bilinearly to the last one, heatmaps averaged over outputs,
    tags of output 0; the flipped pass is flipped back and its joints permuted; every map resized to the
    scale-1 size."""
    heatmaps, tags = [], []
    for flipped in (False, True):
        outs = model(torch.flip(image, [3]) if flipped else image)
        last = outs[-1]
        up = [F.interpolate(o, size=last.shape[2:], mode="bilinear", align_corners=False) if i < len(outs) - 1
              else o for i, o in enumerate(outs)]
        if flipped:
            up = [torch.flip(o, [3]) for o in up]
        hm = (up[0][:, :k] + up[1][:, :k]) / 2
        tg = up[0][:, k:]
        if flipped:
            hm, tg = hm[:, flip_index], tg[:, flip_index]
        heatmaps.append(hm)
        tags.append(tg)
    rs = lambda t: F.interpolate(t, size=(size_projected[1], size_projected[0]), mode="bilinear", align_corners=False)
    return [rs(h) for h in heatmaps], [rs(t) for t in tags]


def test_multi_scale_flip_aggregation_is_valid_py():
    """A real COCO image (samples/coco) through :func:`infer_image` with scales (2, 1, 0.5) and flip vs the official
    loop (sizes, resize, per-scale outputs, average of flip passes, sum over scales / 3, scale-1 tags of both
    passes): heatmaps and tags equal within 1e-5 (unchanged)."""
    import cv2

    from hrnet_core.data.keypoints import COCO_KEYPOINTS
    from hrnet_core.data.transforms import get_affine_transform, normalize_image
    from hrnet_core.evaluation.bottomup import InferenceSettings, infer_image
    from official import DATA_DIR, requires_shared  # noqa: F401

    f = DATA_DIR / "samples" / "coco" / "000000196141.jpg"
    if not f.is_file():
        pytest.skip("shared sample image absent")
    image = cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB)
    image = cv2.resize(image, (image.shape[1] // 4, image.shape[0] // 4), interpolation=cv2.INTER_AREA)
    k, flip_index = 17, list(COCO_KEYPOINTS.flip_index)
    model = _TwoOutputs(k).eval()
    cfg = InferenceSettings(num_joints=k, flip_index=tuple(flip_index))
    scales, input_size = [2.0, 1.0, 0.5], 128
    with torch.no_grad():
        hm, tags, center, scale = infer_image(model, image, input_size, scales, cfg)
        base, _ = _official_size(*image.shape[:2], input_size, 1.0, 0.5)
        final, tag_list = None, []
        for s in sorted(scales, reverse=True):
            size, sc = _official_size(*image.shape[:2], input_size, s, 0.5)
            c = np.array([int(image.shape[1] / 2.0 + 0.5), int(image.shape[0] / 2.0 + 0.5)])
            resized = cv2.warpAffine(image, get_affine_transform(c, sc, 0.0, size), size, flags=cv2.INTER_LINEAR)
            x = torch.from_numpy(normalize_image(resized))[None]
            hms, tgs = _official_stage_outputs(model, x, k, flip_index, base)
            if s == 1:
                tag_list += [t.unsqueeze(4) for t in tgs]
            avg = (hms[0] + hms[1]) / 2.0
            final = avg if final is None else final + avg
        final = final / 3.0
        official_tags = torch.cat(tag_list, dim=4)
    assert hm.shape == final.shape == (1, k, base[1], base[0]) and tags.shape == official_tags.shape
    assert torch.allclose(hm, final, atol=1e-5) and torch.allclose(tags, official_tags, atol=1e-5)
    assert np.allclose(scale, _official_size(*image.shape[:2], input_size, 0.5, 0.5)[1]), \
        "valid.py keeps the centre / scale of the last (smallest) scale for get_final_preds"


def test_person_score_is_the_mean_of_all_joint_values_before_refine():
    """``parse``: the person score is the mean over all K joints of the grouped values (0 for joints not found),
    taken after adjust and before refine fills missing joints (unchanged)."""
    from hrnet_core.codecs.grouping import GroupingParams, group

    k, h, w = 17, 32, 32
    hm = torch.zeros(1, k, h, w)
    tags = torch.zeros(1, k, h, w, 1)
    for j in range(6):  # six joints of one person (same tag 0); joints 6.. only weak evidence (< threshold)
        hm[0, j, 4 + 3 * j, 5 + 2 * j] = 0.5 + 0.05 * j
    hm[0, 10, 20, 20] = 0.05
    people, scores = group(hm, tags, GroupingParams(num_joints=k))
    assert len(people) == 1
    assert scores[0] == pytest.approx(sum(0.5 + 0.05 * j for j in range(6)) / k, abs=1e-6)
    assert people[0, 10, 2] == pytest.approx(0.05), "refine filled the weak joint after scoring"
