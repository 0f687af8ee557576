"""Classification test procedure against the official one (HRNet/HRNet-Image-Classification ``tools/valid.py``,
``lib/core/function.py`` ``validate``, ``lib/core/evaluate.py`` ``accuracy``; HRNet/HRFormer ``cls/data/build.py``
``build_transform``). Each test computes the official rule independently (written here) and compares ours."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from official import DATA_DIR, requires_shared


def _official_accuracy(logits: np.ndarray, labels: np.ndarray, ks=(1, 5)) -> dict[int, float]:
    """The official rule in our words: the k largest network outputs (torch ``topk``) of each row; a row counts at
    k when its label is among them; percent of rows, averaged over all rows (the AverageMeter weighted by batch
    size gives the same whole-set mean)."""
    top = torch.from_numpy(logits).topk(max(ks), dim=1, largest=True, sorted=True).indices.numpy()
    return {k: 100.0 * float(np.mean([labels[i] in top[i, :k] for i in range(len(labels))])) for k in ks}


def test_topk_ranks_the_logits_like_the_official_accuracy():
    """Official ``accuracy()`` ranks the logits. Ranking the float32 softmax (the old ``predict``) ties every class
    whose probability underflows to 0 and orders them by class index. On these two rows (labels 6 and 5, logits of
    the runner-up classes 150-200 below the best): top-5 official 100.0 %, old (softmax ranking) 0.0 %, new 100.0 %;
    top-1 0.0 % in all three."""
    from hrnet_core.evaluation.classification import rank_by_logits, topk_accuracy, topk_predictions

    logits = np.array([[0.0, -200.0, -190.0, -180.0, -170.0, -160.0, -150.0, -300.0],
                       [-300.0, -195.0, -185.0, -175.0, -165.0, -155.0, -250.0, 5.0]], dtype=np.float32)
    labels = np.array([6, 5])
    official = _official_accuracy(logits, labels)
    probs = torch.softmax(torch.from_numpy(logits), dim=1).numpy()
    old = topk_accuracy(topk_predictions(probs, 5)[0], labels)
    idx, sc = rank_by_logits(logits, 5)
    new = topk_accuracy(idx, labels)
    assert official == {1: 0.0, 5: 100.0}
    assert old == {1: 0.0, 5: 0.0}, "the old ranking must differ on this input"
    assert new == official
    assert np.array_equal(idx[0], [0, 6, 5, 4, 3]) and np.array_equal(idx[1], [7, 5, 4, 3, 2])
    assert np.allclose(sc, np.take_along_axis(probs, idx, axis=1), atol=1e-7)


def test_topk_accuracy_equals_the_official_accuracy_on_random_logits():
    """Many rows of random logits with repeated values: our ranking + ``topk_accuracy`` equal the official rule."""
    from hrnet_core.evaluation.classification import rank_by_logits, topk_accuracy

    rng = np.random.default_rng(0)
    logits = rng.normal(size=(500, 20)).astype(np.float32)
    labels = rng.integers(0, 20, 500)
    ours = topk_accuracy(rank_by_logits(logits, 5)[0], labels)
    assert ours == pytest.approx(_official_accuracy(logits, labels))


def _official_eval_transform(size: int, crop: int, interpolation: str):
    import torchvision.transforms as T

    mode = {"bilinear": T.InterpolationMode.BILINEAR, "bicubic": T.InterpolationMode.BICUBIC}[interpolation]
    return T.Compose([T.Resize(size, interpolation=mode), T.CenterCrop(crop), T.ToTensor(),
                      T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])


@requires_shared
@pytest.mark.parametrize("recipe,official_size,interpolation", [
    ("cls_hrnet_w18_224x224_imagenet", int(224 / 0.875), "bilinear"),    # HRNet-C tools/valid.py
    ("cls_hrformer_t_224x224_imagenet", int((256 / 224) * 224), "bicubic"),  # HRFormer cls build_transform, TEST.CROP
])
def test_recipe_eval_crop_is_the_official_test_transform(recipe, official_size, interpolation):
    """The recipe's centre crop (its ``test.resize``, ``data.interpolation``, mean / std) equals the official test
    transform on real ImageNet images (imagenet_sample): max abs difference 0 (unchanged: already equal)."""
    from torchvision.datasets.folder import pil_loader

    from hrnet_core.recipes import load_recipe
    from hrnet_core.tasks.classification import ClsSample

    r = load_recipe(recipe)
    fn = ClsSample(image_root="/", input_size=tuple(r.data.input_size), mean=tuple(r.data.mean),
                   std=tuple(r.data.std), resize=r.test.resize, train=False, interpolation=r.data.interpolation)
    ref = _official_eval_transform(official_size, 224, interpolation)
    files = sorted((DATA_DIR / "imagenet_sample").rglob("*.JPEG"))[:6]
    assert files
    for f in files:
        mine = fn({"file_name": str(f), "label": 0}, None)["image"]
        assert np.abs(mine - ref(pil_loader(str(f))).numpy()).max() == 0.0, f.name
