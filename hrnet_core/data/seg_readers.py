"""Split readers of the segmentation datasets' official layouts (the layouts: :mod:`hrnet_core.data.segmentation`):
the named source files of one split -> ``(image_root, pairs, layout)``, the ``(image, label)`` paths relative to
``image_root`` and the dataset's :class:`~hrnet_core.data.segmentation.SegLayout`. The labels are checked and
hashed afterwards by :func:`~hrnet_core.data.segmentation.label_rows` (the ``segmentation`` task's readers,
:mod:`hrnet_core.tasks.segmentation`, do both).

Moved from ``hrnet_core/tasks/segmentation.py`` unchanged (issue 25).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

from .io import AnnotationError
from .segmentation import SegLayout, read_list, read_pairs, seg_layout

__all__ = ["read_cityscapes", "read_lip", "read_pascal_context", "read_camvid", "read_seg_list"]

#: what every reader returns: ``(image_root, [(image, label) relative to image_root], layout)``
SegPairs = tuple[Path, list[tuple[str, str]], SegLayout]


def _relative(root: Path, p: Path) -> str:
    return os.path.relpath(p, root)


def _common_root(*paths: Path) -> Path:
    return Path(os.path.commonpath([str(p) for p in paths]))


def _paired(files: Mapping[str, Path], pattern: str, image_suffix: str, label_suffix: str, dataset: str) -> SegPairs:
    """Images under ``files["images"]`` matching ``pattern``, each paired with the label file of the same stem under
    ``files["labels"]`` (:func:`read_pairs`), as paths relative to the two folders' common root."""
    images, labels = Path(files["images"]), Path(files["labels"])
    pairs = read_pairs(images, labels, pattern, image_suffix, label_suffix)
    root = _common_root(images, labels)
    return root, [(_relative(root, i), _relative(root, lab)) for i, lab in pairs], seg_layout(dataset)


def read_cityscapes(files: Mapping[str, Path]) -> SegPairs:
    """``files["images"]`` (``leftImg8bit/<split>``) + ``files["labels"]`` (``gtFine/<split>``, labelIds).

    Raises:
        AnnotationError: no images, or an image without its label file.
    """
    return _paired(files, "*/*_leftImg8bit.png", "_leftImg8bit.png", "_gtFine_labelIds.png", "cityscapes")


def read_lip(files: Mapping[str, Path]) -> SegPairs:
    """``files["images"]`` (``*.jpg``) + ``files["labels"]`` (same stem ``.png``).

    Raises:
        AnnotationError: no images, or an image without its label file.
    """
    return _paired(files, "*.jpg", ".jpg", ".png", "lip")


def read_pascal_context(dataset: str, files: Mapping[str, Path]) -> SegPairs:
    """``files["list"]`` (image ids) + ``files["images"]`` (``<id>.jpg``) + ``files["labels"]`` (``<id>.png``);
    ``dataset`` ``pascal_context_59`` (= ``pascal_context``) or ``pascal_context_60``.

    Raises:
        AnnotationError: an empty id list, or a listed image that does not exist.
    """
    images, labels = Path(files["images"]), Path(files["labels"])
    ids = [s.strip() for s in Path(files["list"]).read_text().splitlines() if s.strip()]
    if not ids:
        raise AnnotationError(f"{files['list']}: no image ids")
    root = _common_root(images, labels)
    pairs = [(_relative(root, images / f"{i}.jpg"), _relative(root, labels / f"{i}.png")) for i in ids]
    for img, _ in pairs:
        if not (root / img).is_file():
            raise AnnotationError(f"{files['list']}: image {str(root / img)!r} not found")
    return root, pairs, seg_layout("pascal_context_59" if dataset == "pascal_context" else dataset)


def _read_list(files: Mapping[str, Path], layout: SegLayout) -> SegPairs:
    root = Path(files["images"])
    pairs = read_list(Path(files["list"]))
    for img, _ in pairs:
        if not (root / img).is_file():
            raise AnnotationError(f"{files['list']}: image {str(root / img)!r} not found")
    return root, pairs, layout


def read_camvid(files: Mapping[str, Path]) -> SegPairs:
    """``files["list"]`` (``image label`` lines) relative to ``files["images"]``, the CamVid vocabulary.

    Raises:
        AnnotationError: a malformed list line, or a listed image that does not exist.
    """
    return _read_list(files, seg_layout("camvid"))


def read_seg_list(files: Mapping[str, Path]) -> SegPairs:
    """``files["list"]`` (``image label`` lines) relative to ``files["images"]``, the class names of
    ``files["classes"]`` (one a line).

    Raises:
        AnnotationError: not 1..255 class names, a malformed list line, or a listed image that does not exist.
    """
    names = [s.strip() for s in Path(files["classes"]).read_text().splitlines() if s.strip()]
    if not names or len(names) > 255:
        raise AnnotationError(f"{files['classes']}: expected 1..255 class names, one per line, got {len(names)}")
    return _read_list(files, seg_layout("seg_list", names))
