"""ImageNet-style classification folders: the class index, the two layouts of a split, and image decoding.

Layouts of one split (``hrnet data prepare imagenet``):

* ``ImageFolder`` (torchvision): ``<split>/<wnid>/*.JPEG``; one sub-folder per class.
* flat folder + label file (the usual form of ILSVRC2012 val): ``<split>/*.JPEG`` plus a text file of
  ``<file name> <label>`` lines, the label either a class index (Caffe ``val.txt``) or a wnid.

The class index: without a synsets file the sorted sub-folder names (torchvision ``ImageFolder``; on the full
ImageNet-1k train folder this is the official index); with one (``synsets.txt``: one ``<wnid> [name ...]`` line per
class) the line order, so that a folder holding a subset of the classes (``../shared/data/imagenet_sample``: one
image of every tenth class) keeps the ImageNet-1k indices (``n01440764`` -> 0).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .io import ImageReadError
from .prepared import DataError

__all__ = ["IMG_EXTENSIONS", "Synsets", "read_synsets", "ClassSamples", "scan_image_folder", "read_label_file",
           "read_classification_split", "read_rgb_pil"]

#: file endings of images (those of torchvision ``ImageFolder``), compared case-insensitively
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


@dataclass(frozen=True)
class Synsets:
    """The class list of a dataset.

    Attributes:
        wnids: class ids (WordNet ids for ImageNet) in index order.
        names: human-readable names, same order (the wnid where the file gives none).
    """

    wnids: tuple[str, ...]
    names: tuple[str, ...]

    def index(self) -> dict[str, int]:
        """``{wnid: class index}``."""
        return {w: i for i, w in enumerate(self.wnids)}


def read_synsets(path: str | os.PathLike) -> Synsets:
    """Read a synsets file: one ``<wnid> [name ...]`` line per class, the line order is the class index (blank lines
    ignored).

    Raises:
        DataError: missing/empty file or a wnid listed twice (names the file and line).
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"synsets file {str(p)!r} not found")
    wnids: list[str] = []
    names: list[str] = []
    seen: dict[str, int] = {}
    for n, line in enumerate(p.read_text().splitlines(), 1):
        parts = line.strip().split(maxsplit=1)
        if not parts:
            continue
        if parts[0] in seen:
            raise DataError(f"{p}:{n}: class {parts[0]!r} listed twice (first on line {seen[parts[0]]})")
        seen[parts[0]] = n
        wnids.append(parts[0])
        names.append(parts[1].strip() if len(parts) > 1 else parts[0])
    if not wnids:
        raise DataError(f"synsets file {str(p)!r} lists no class")
    return Synsets(tuple(wnids), tuple(names))


@dataclass
class ClassSamples:
    """One split read from disk.

    Attributes:
        files: image file names relative to the split's image folder (``<wnid>/<file>`` or ``<file>``), sorted.
        labels: class index of every file, same order.
        synsets: the class list the indices refer to.
    """

    files: list[str]
    labels: list[int]
    synsets: Synsets


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMG_EXTENSIONS)


def scan_image_folder(root: str | os.PathLike, allow_empty: bool = True) -> dict[str, list[str]]:
    """``{class folder name: [file names relative to root, sorted]}`` of an ``ImageFolder`` layout (sorted classes;
    hidden entries and non-image files skipped; nested folders inside a class folder are searched too, as torchvision
    does). A class folder without images is left out, or with ``allow_empty=False`` refused: torchvision's
    ``ImageFolder`` (the official loader) counts every class folder in the index and refuses an empty one, so
    dropping it would shift the index of every later class.

    Raises:
        DataError: ``root`` is not a folder, it has no class sub-folder with an image, or (``allow_empty=False``) a
            class folder holds no image (named).
    """
    r = Path(root)
    if not r.is_dir():
        raise DataError(f"image folder {str(r)!r} not found")
    out: dict[str, list[str]] = {}
    for d in sorted((e for e in os.scandir(r) if e.is_dir() and not e.name.startswith(".")), key=lambda e: e.name):
        files = []
        for dirpath, dirnames, filenames in os.walk(d.path, followlinks=True):
            dirnames.sort()
            files += [os.path.relpath(os.path.join(dirpath, f), r) for f in sorted(filenames)
                      if _is_image(f) and not f.startswith(".")]
        if files:
            out[d.name] = sorted(files)
        elif not allow_empty:
            raise DataError(f"class folder {str(Path(d.path))!r} holds no image: as a class of the ImageFolder "
                            f"index it would have no sample; remove it, or pass --synsets to fix the class index")
    if not out:
        raise DataError(f"image folder {str(r)!r} has no class sub-folder with images (<split>/<wnid>/*.JPEG); a "
                        f"flat folder needs a label file (--labels)")
    return out


def read_label_file(path: str | os.PathLike) -> list[tuple[str, str]]:
    """``[(file name, label token)]`` of a label file of ``<file name> <label>`` lines (blank lines and ``#``
    comments skipped); the label token is a class index or a wnid, resolved by :func:`read_classification_split`.

    Raises:
        DataError: missing file, a line without two fields, or a file listed twice (names file and line).
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"label file {str(p)!r} not found")
    rows: list[tuple[str, str]] = []
    seen: set[str] = set()
    for n, line in enumerate(p.read_text().splitlines(), 1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        parts = s.replace(",", " ").split()
        if len(parts) != 2:
            raise DataError(f"{p}:{n}: expected '<file name> <label>', got {s!r}")
        if parts[0] in seen:
            raise DataError(f"{p}:{n}: {parts[0]!r} listed twice")
        seen.add(parts[0])
        rows.append((parts[0], parts[1]))
    if not rows:
        raise DataError(f"label file {str(p)!r} lists no image")
    return rows


def read_classification_split(images: str | os.PathLike, labels: str | os.PathLike | None = None,
                              synsets: str | os.PathLike | None = None) -> ClassSamples:
    """Read one split in either layout (module docstring).

    Args:
        images: the split's image folder.
        labels: label file of the flat layout; ``None`` reads ``images`` as an ``ImageFolder``.
        synsets: synsets file giving the class index; ``None``: sorted folder names (``ImageFolder``), or for the flat
            layout the sorted wnids of the label file (integer labels need no synsets: they are the index).

    Raises:
        DataError: a class folder or label wnid missing from the synsets file, an integer label outside the class
            list, a listed image that does not exist, a class folder without images when no synsets file gives the
            index (all named).
    """
    root = Path(images)
    syn = read_synsets(synsets) if synsets is not None else None
    if labels is None:
        by_class = scan_image_folder(root, allow_empty=syn is not None)
        if syn is None:
            syn = Synsets(tuple(by_class), tuple(by_class))
        index = syn.index()
        unknown = [c for c in by_class if c not in index]
        if unknown:
            raise DataError(f"class folder {str(root / unknown[0])!r} is not in the synsets file {str(synsets)!r} "
                            f"({len(unknown)} unknown folder(s))")
        pairs = sorted((f, index[c]) for c, fs in by_class.items() for f in fs)
    else:
        rows = read_label_file(labels)
        if not root.is_dir():
            raise DataError(f"image folder {str(root)!r} not found")
        tokens = [t for _, t in rows]
        numeric = all(t.lstrip("-").isdigit() for t in tokens)
        if syn is None:
            if numeric:
                n = max(int(t) for t in tokens) + 1
                ids = tuple(str(i) for i in range(n))
                syn = Synsets(ids, ids)
            else:
                ids = tuple(sorted(set(tokens)))
                syn = Synsets(ids, ids)
        index = syn.index()
        pairs = []
        for f, t in rows:
            if numeric:
                k = int(t)
                if not 0 <= k < len(syn.wnids):
                    raise DataError(f"{labels}: label {k} of {f!r} is outside the {len(syn.wnids)} classes")
            elif t not in index:
                raise DataError(f"{labels}: class {t!r} of {f!r} is not in the synsets file {str(synsets)!r}")
            else:
                k = index[t]
            if not (root / f).is_file():
                raise DataError(f"{labels}: image {str(root / f)!r} not found")
            pairs.append((f, k))
        pairs.sort()
    return ClassSamples(files=[p[0] for p in pairs], labels=[int(p[1]) for p in pairs], synsets=syn)


def read_rgb_pil(path: str | os.PathLike):
    """Decode an image as an RGB ``PIL.Image`` (the torchvision ``ImageFolder`` loader: ``Image.open(f).convert("RGB")``;
    EXIF orientation is not applied).

    Raises:
        ImageReadError: missing, empty or undecodable file (names it).
    """
    from PIL import Image, UnidentifiedImageError

    p = Path(path)
    try:
        with open(p, "rb") as f:
            img = Image.open(f)
            return img.convert("RGB")
    except FileNotFoundError:
        raise ImageReadError(p, "file not found") from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise ImageReadError(p, f"cannot be decoded ({exc})") from None
