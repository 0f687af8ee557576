"""Prepared splits on disk: the contract between ``hrnet data prepare`` and everything that reads data.

A prepared split is a folder ``<root>/<split>/``::

    manifest.json     format, task, dataset, split, source, image_root (relative to this folder), counts,
                      fingerprint, the extra files below and task-specific entries (e.g. num_joints)
    images.parquet    one row per image: image_id, file_name (relative to image_root), width, height, bytes, sha256
    samples.parquet   one row per training sample, columns chosen by the task (hrnet_core.tasks.<task>); row i is
                      sample index i (the seed of its augmentation, hrnet_core.data.seeding)
    <extra files>     copies the task needs for evaluation (e.g. annotations.json, detections.json)

Paths in the manifest are relative, so a split and its DVC hash do not depend on where the repository lives; the
``fingerprint`` (sha256 over the annotation files, every image's checksum, every sample row -- label PNG checksums
included -- and the reader's manifest entries; ``pipelines.prepare.split_fingerprint``) changes whenever any input
that reaches a sample changes.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hrnet_core.errors import BadInputError

__all__ = ["FORMAT", "DataError", "CorruptDataError", "PreparedSplit", "open_split", "open_split_dir",
           "dataset_fingerprint"]

FORMAT = "hrnet-prepared/2"


class DataError(BadInputError, ValueError):
    """A dataset source or prepared split is missing or malformed (the message names the path)."""


class CorruptDataError(DataError):
    """Input files exist but their content is bad (an image that cannot be decoded); the message names each file.

    The command line exits with status 1 for it (the data is at fault), 2 for a wrong command or missing input.
    """

    exit_status = 1


@dataclass(frozen=True)
class PreparedSplit:
    """A prepared split on disk (see module docstring); ``dir`` is absolute.

    Attributes:
        dir: the split folder.
        manifest: the parsed ``manifest.json``.
    """

    dir: Path
    manifest: dict[str, Any]

    @property
    def task(self) -> str:
        """Task the split was prepared for (``hrnet_core.tasks``)."""
        return str(self.manifest["task"])

    @property
    def dataset(self) -> str:
        """Dataset layout it was read from (``coco``, ``mpii``, ...)."""
        return str(self.manifest["dataset"])

    @property
    def name(self) -> str:
        """Split name (``train2017``, ``val2017``, ...)."""
        return str(self.manifest["split"])

    @property
    def image_root(self) -> Path:
        """Absolute folder the ``file_name`` columns are relative to."""
        return (self.dir / self.manifest["image_root"]).resolve()

    @property
    def samples_file(self) -> Path:
        return self.dir / "samples.parquet"

    @property
    def images_file(self) -> Path:
        return self.dir / "images.parquet"

    @property
    def num_samples(self) -> int:
        return int(self.manifest.get("num_samples", 0))

    @property
    def fingerprint(self) -> str:
        return str(self.manifest["fingerprint"])

    def file(self, key: str) -> Path | None:
        """Absolute path of an extra file of the split (``manifest["files"][key]``), or None when absent."""
        name = (self.manifest.get("files") or {}).get(key)
        return None if name is None else self.dir / name

    @property
    def ann_file(self) -> Path:
        """The copied annotation file (``files.annotations``)."""
        p = self.file("annotations")
        if p is None:
            raise DataError(f"prepared split {str(self.dir)!r} has no annotation file")
        return p

    @property
    def detections(self) -> Path | None:
        return self.file("detections")

    @property
    def headboxes(self) -> Path | None:
        return self.file("headboxes")


def open_split(root: str | Path, split: str, task: str | None = None) -> PreparedSplit:
    """Open ``<root>/<split>`` written by ``hrnet data prepare``.

    Args:
        root: prepared dataset root (``data.root`` of a recipe).
        split: split folder name.
        task: when given, the split must have been prepared for this task.

    Raises:
        DataError: the split is missing (the message says how to prepare it), its manifest is unreadable or of
            another format, its image folder is gone, or it belongs to another task.
    """
    return open_split_dir(Path(root).expanduser() / split, task=task)


def open_split_dir(path: str | Path, *, task: str | None = None, need_images: bool = True) -> PreparedSplit:
    """Open the prepared split folder ``path`` (``<root>/<split>``): its manifest, checked as :func:`open_split`
    does; ``need_images=False`` opens it without its image folder (scoring a results file, reading a vocabulary).

    Raises:
        DataError: as :func:`open_split` (the image-folder check only with ``need_images``).
    """
    d = Path(path).expanduser().resolve()
    mpath = d / "manifest.json"
    if not mpath.is_file():
        raise DataError(f"prepared split {str(d)!r} not found (no manifest.json); run `hrnet data generate` and "
                        f"`hrnet data prepare` first (see README)")
    try:
        manifest = json.loads(mpath.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{mpath}: invalid json ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise DataError(f"{mpath}: format {manifest.get('format') if isinstance(manifest, dict) else None!r}, expected {FORMAT!r}; prepare the split again "
                        f"(`hrnet data prepare`)")
    out = PreparedSplit(d, manifest)
    if need_images and not out.image_root.is_dir():
        raise DataError(f"{mpath}: image folder {str(out.image_root)!r} no longer exists; prepare the split again")
    if task is not None and out.task != task:
        raise DataError(f"{mpath}: prepared for task {out.task!r}, not {task!r}")
    return out


def relative_image_root(image_root: Path, split_dir: Path) -> str:
    """``image_root`` relative to ``split_dir`` (what the manifest stores)."""
    return os.path.relpath(Path(image_root).resolve(), Path(split_dir).resolve())


def dataset_fingerprint(*splits: PreparedSplit) -> str:
    """Short combined fingerprint of prepared splits (first 16 hex digits of a sha256 over their fingerprints)."""
    h = hashlib.sha256()
    for s in splits:
        h.update(f"{s.manifest['split']}:{s.fingerprint}\n".encode())
    return h.hexdigest()[:16]
