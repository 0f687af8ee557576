"""Segmentation training samples (HRNet-Semantic-Segmentation ``BaseDataset``: multi-scale rescale, pad with
the ignore label, random crop, flip) and the official input normalisation. :class:`SegSample` is the picklable
per-sample function of :func:`hrnet_core.tasks.segmentation.sample_transform` (Ray pickles it by this path).

Moved from ``hrnet_core/tasks/segmentation.py`` unchanged (issue 25).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from hrnet_core.data.segmentation import IGNORE


def rescaled_size(h: int, w: int, long_side: int) -> tuple[int, int]:
    """``(new_h, new_w)`` pixels of an ``h x w`` image whose long side (the width when ``h == w``) becomes
    ``long_side``; the other side is ``int(other * long_side / long_before + 0.5)``, from the ROUNDED long side
    (official ``BaseDataset.multi_scale_aug``, ``lib/datasets/base_dataset.py``). Sides are at least 1."""
    if h > w:
        return long_side, max(1, int(w * long_side / h + 0.5))
    return max(1, int(h * long_side / w + 0.5)), long_side


@dataclass(frozen=True)
class SegDraw:
    """The random choices of one training sample: ``scale`` (long side ``int(base * scale + 0.5)``), ``flip``,
    and the crop's top-left corner ``x0, y0`` in pixels of the rescaled, padded image."""

    scale: float
    flip: bool
    x0: int
    y0: int


@dataclass(frozen=True)
class SegSample:
    """The per-sample function of a recipe and split (picklable).

    ``__call__(row, rng)``: a ``samples.parquet`` row -> ``image`` float32 ``[3, h, w]`` (normalised), ``label``
    int64 ``[h, w]`` (training ids, 255 ignore) with ``(w, h) = crop``. The draws (:meth:`draw`) are applied by
    :meth:`apply`, the official ``BaseDataset.gen_sample`` (or ``LIP.__getitem__`` with ``resize_to_crop``).

    Raises (on call):
        hrnet_core.data.io.ImageReadError: image or label missing / corrupt (names the file).
    """

    image_root: str
    lut: tuple[int, ...]
    flip_pairs: tuple[tuple[int, int], ...]
    crop: tuple[int, int]
    base_size: int
    scale_range: tuple[float, float]
    scale_step: float
    flip: bool
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resize_to_crop: bool = False

    @functools.cached_property
    def _luts(self) -> tuple[np.ndarray, np.ndarray]:
        from hrnet_core.data.segmentation import SegLayout

        lay = SegLayout("", (), self.lut, (), self.flip_pairs)
        return lay.lut_array(), lay.flip_lut()

    def load(self, row: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        """``(image uint8 [H, W, 3] RGB, label uint8 [H, W] training ids)`` of a row."""
        from hrnet_core.data.io import read_image
        from hrnet_core.data.segmentation import apply_lut, read_label

        root = Path(self.image_root)
        return read_image(root / row["file_name"]), apply_lut(read_label(root / row["label_file"]), self._luts[0])

    def draw_scale(self, rng: np.random.Generator) -> float:
        """``lo + k / (1 / step)`` with ``k`` uniform in ``0 .. round((hi - lo) / step)`` (official ``0.5 +
        randint(0, scale_factor) / 10.0``, the same floats); uniform in ``[lo, hi]`` when the step is 0."""
        lo, hi = self.scale_range
        if self.scale_step > 0:
            n = int(round((hi - lo) / self.scale_step))
            return lo + int(rng.integers(0, n + 1)) / (1.0 / self.scale_step)
        return float(rng.uniform(lo, hi))

    def rescaled_shape(self, h: int, w: int, scale: float) -> tuple[int, int]:
        """``(h, w)`` pixels after the (LIP: resize to the crop, then) rescale of an ``h x w`` image."""
        if self.resize_to_crop:
            w, h = self.crop
        base = self.base_size or max(h, w)
        return rescaled_size(h, w, int(base * scale + 0.5))

    def draw(self, h: int, w: int, rng: np.random.Generator) -> SegDraw:
        """The draws for an ``h x w`` image: scale, flip (probability 0.5 when ``flip``), then the crop corner,
        uniform over the padded rescaled image (official ``rand_crop``: ``randint(0, new - crop)``, inclusive)."""
        scale = self.draw_scale(rng)
        flip = bool(self.flip and rng.random() < 0.5)
        nh, nw = self.rescaled_shape(h, w, scale)
        cw, ch = self.crop
        y0 = int(rng.integers(0, max(nh, ch) - ch + 1))
        x0 = int(rng.integers(0, max(nw, cw) - cw + 1))
        return SegDraw(scale, flip, x0, y0)

    def _flip(self, img: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return img[:, ::-1], self._luts[1][label[:, ::-1]]

    def apply(self, img: np.ndarray, label: np.ndarray, d: SegDraw) -> dict[str, np.ndarray]:
        """The training sample of ``img`` uint8 ``[H, W, 3]`` RGB and ``label`` uint8 ``[H, W]`` training ids under
        the draws ``d``: (``resize_to_crop``: flip, resize to the crop (linear / nearest)), rescale to
        :meth:`rescaled_shape` (linear / nearest), pad bottom / right to the crop (black, ignore), crop at
        ``(d.x0, d.y0)``, (else: flip), normalise. Official ``BaseDataset.gen_sample`` / ``LIP.__getitem__``.

        Returns:
            ``image`` float32 ``[3, ch, cw]``, ``label`` int64 ``[ch, cw]``.

        Raises:
            ValueError: the crop corner lies outside the padded image.
        """
        import cv2

        cw, ch = self.crop
        if self.resize_to_crop:
            if d.flip:
                img, label = self._flip(img, label)
            img = cv2.resize(np.ascontiguousarray(img), (cw, ch), interpolation=cv2.INTER_LINEAR)
            label = cv2.resize(np.ascontiguousarray(label), (cw, ch), interpolation=cv2.INTER_NEAREST)
        nh, nw = self.rescaled_shape(*label.shape, d.scale)
        if (nh, nw) != label.shape:
            img = cv2.resize(np.ascontiguousarray(img), (nw, nh), interpolation=cv2.INTER_LINEAR)
            label = cv2.resize(np.ascontiguousarray(label), (nw, nh), interpolation=cv2.INTER_NEAREST)
        ph, pw = max(0, ch - nh), max(0, cw - nw)
        if ph or pw:
            img = cv2.copyMakeBorder(img, 0, ph, 0, pw, cv2.BORDER_CONSTANT, value=(0, 0, 0))
            label = cv2.copyMakeBorder(label, 0, ph, 0, pw, cv2.BORDER_CONSTANT, value=IGNORE)
        if not (0 <= d.y0 <= img.shape[0] - ch and 0 <= d.x0 <= img.shape[1] - cw):
            raise ValueError(f"crop corner ({d.x0}, {d.y0}) outside the padded {img.shape[1]}x{img.shape[0]} image")
        img, label = img[d.y0:d.y0 + ch, d.x0:d.x0 + cw], label[d.y0:d.y0 + ch, d.x0:d.x0 + cw]
        if d.flip and not self.resize_to_crop:
            img, label = self._flip(img, label)
        return {"image": normalise(img, self.mean, self.std), "label": np.ascontiguousarray(label).astype(np.int64)}

    def __call__(self, row: Mapping[str, Any], rng: np.random.Generator | None) -> dict[str, np.ndarray]:
        img, label = self.load(row)
        rng = rng if rng is not None else np.random.default_rng(0)
        return self.apply(img, label, self.draw(*label.shape, rng))


def normalise(img: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """uint8 ``[H, W, 3]`` RGB -> float32 ``[3, H, W]`` ``(x / 255 - mean) / std``, rounded as the official
    ``BaseDataset.input_transform``: ``x / 255`` in float32, then ``- mean`` and ``/ std`` each computed in float64
    and stored in float32 (its in-place ops with the float64 lists); bit-identical to it."""
    x = np.divide(img, np.float32(255.0), dtype=np.float32)
    np.subtract(x, np.asarray(mean, np.float64), out=x, casting="same_kind")
    np.divide(x, np.asarray(std, np.float64), out=x, casting="same_kind")
    return np.ascontiguousarray(x.transpose(2, 0, 1))
