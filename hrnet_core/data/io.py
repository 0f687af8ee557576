"""File reading with one clear error per bad file: images (OpenCV) and annotation json."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable

import cv2
import numpy as np

from hrnet_core.errors import BadInputError

__all__ = ["ImageReadError", "AnnotationError", "read_image", "load_json", "check_files_exist", "sha256_file"]

# JPEG "end of image" marker; a file cut short (interrupted download / copy) lacks it, and OpenCV would otherwise
# decode such a file with only a warning on stderr and grey pixels below the cut.
_JPEG_SOI = b"\xff\xd8"
_JPEG_EOI = b"\xff\xd9"
_JPEG_TAIL = 1024


class ImageReadError(BadInputError, OSError):
    """An image file is missing, unreadable, truncated or not decodable. ``.path`` names the file."""

    def __init__(self, path: str | os.PathLike, reason: str = "cannot be decoded") -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"image file {self.path!r}: {reason}")


class AnnotationError(BadInputError, ValueError):
    """An annotation / detection file is missing, not valid json or malformed. The message names the file (and entry)."""


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as RGB.

    Decoding uses OpenCV (``IMREAD_COLOR | IMREAD_IGNORE_ORIENTATION`` as the official HRNet code does, so EXIF
    orientation is ignored and keypoint annotations stay valid; grey images get three channels).

    Args:
        path: image file.

    Returns:
        uint8 array ``[H, W, 3]``, RGB order.

    Raises:
        ImageReadError: the file is missing, empty, truncated (JPEG without end marker) or cannot be decoded.
    """
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise ImageReadError(p, "file not found") from None
    except OSError as exc:
        raise ImageReadError(p, f"cannot be read ({exc.strerror or exc})") from None
    if not data:
        raise ImageReadError(p, "file is empty")
    if data[:2] == _JPEG_SOI and _JPEG_EOI not in data[-_JPEG_TAIL:]:
        raise ImageReadError(p, "truncated JPEG (no end-of-image marker)")
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if image is None or image.ndim != 3 or image.shape[0] == 0 or image.shape[1] == 0:
        raise ImageReadError(p, "cannot be decoded (corrupt or not an image)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def load_json(path: str | os.PathLike, what: str = "annotation file") -> Any:
    """Load a json file; raises :class:`AnnotationError` naming the file if it is missing or not valid json."""
    p = Path(path)
    if not p.is_file():
        raise AnnotationError(f"{what} {str(p)!r} not found")
    try:
        with p.open("r", encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AnnotationError(f"{what} {str(p)!r} is not valid json: {exc}") from None


def check_files_exist(paths: Iterable[str], source: str | os.PathLike) -> None:
    """Raise :class:`AnnotationError` if any of ``paths`` is not a file.

    Args:
        paths: image paths referenced by an annotation file.
        source: the annotation file, named in the message.
    """
    missing = [p for p in dict.fromkeys(paths) if not os.path.isfile(p)]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise AnnotationError(f"{str(source)!r} refers to missing image file {missing[0]!r}{more}")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes (identifies data and checkpoints across renames and moves)."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()
