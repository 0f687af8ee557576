"""Data preparation stage: a raw dataset in its official layout -> a prepared, versionable split.

``hrnet data prepare <dataset> --source <dir|url|official> --split <split> --out <root>`` finds the task whose reader
is called ``<dataset>`` (:func:`hrnet_core.tasks.tasks_for_dataset`), lets the reader turn the split into rows
(:class:`hrnet_core.tasks.PreparedRows`), decodes and checksums every image in parallel (an undecodable image fails
the preparation, naming each bad file), and writes the split (:mod:`hrnet_core.data.prepared`) into a temporary
folder that is renamed to ``<root>/<split>`` only when everything succeeded.

Images stay where they are (``image_root`` in the manifest, relative to the split folder); their checksums are in
``images.parquet`` and the split's ``fingerprint`` (:func:`split_fingerprint`: sha256 over the copied files, the image
checksums, every sample row -- with the checksums of the per-sample files the rows name, e.g. segmentation label
PNGs -- and the reader's manifest entries) changes whenever any input that reaches a sample changes, so DVC tracks a
few MB instead of the image folder. The split folder gets the permissions of the user's umask (a shared data folder
on a cluster), not ``tempfile``'s owner-only ones.

Sources: a local directory in the official layout (also a local mirror such as ``../shared/data/coco_mini``), an
``http(s)://`` / ``file://`` URL of a zip/tar archive (downloaded into ``--cache-dir`` and extracted), or
``official`` (the reader's public download URLs, :attr:`hrnet_core.tasks.DatasetReader.downloads`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
import tempfile
import urllib.parse
import urllib.request
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Mapping

from tqdm import tqdm

from hrnet_core.data.io import sha256_file
from hrnet_core.data.prepared import (FORMAT, CorruptDataError, DataError, PreparedSplit, dataset_fingerprint,
                                      open_split, relative_image_root)

__all__ = ["prepare_split", "prepare_generated", "resolve_source", "reader_for", "split_fingerprint", "current_umask",
           "DataError", "PreparedSplit", "open_split", "dataset_fingerprint", "sha256_file", "FORMAT"]


def reader_for(dataset: str, task: str | None = None):
    """``(task, reader)`` of dataset ``dataset`` (of ``task`` when given).

    Raises:
        DataError: unknown dataset or task (the message lists the valid choices). A dataset several tasks read goes
            to the first of them in :data:`hrnet_core.tasks.TASK_NAMES` order unless ``task`` names another.
    """
    from hrnet_core.tasks import UnknownTaskError, get_task, tasks_for_dataset

    try:
        if task is not None:
            t = get_task(task)
            return t, t.dataset(dataset)
        found = tasks_for_dataset(dataset)
    except (UnknownTaskError, KeyError) as exc:
        raise DataError(str(exc.args[0]) if exc.args else str(exc)) from None
    # several tasks read the dataset (coco: pose_topdown, pose_bottomup): the first in TASK_NAMES order, so that
    # commands written before the later task landed keep their meaning; --task names another
    return found[0], found[0].datasets[dataset]


def resolve_source(reader, split: str, source: str, cache_dir: str | Path) -> Path:
    """A local directory for ``source``: the directory itself, or the extracted download of a URL / ``official``.

    Raises:
        DataError: a local path that does not exist, or a failed download.
    """
    if source == "official":
        urls = reader.downloads.get(split)
        if not urls:
            raise DataError(f"no official download for dataset {reader.name!r} split {split!r}")
        root = Path(cache_dir) / reader.name
        for url in urls:
            _fetch_and_extract(url, root, Path(cache_dir) / "archives")
        return root.resolve()
    parsed = urllib.parse.urlparse(source)
    if parsed.scheme in ("http", "https", "file"):
        root = Path(cache_dir) / reader.name / Path(parsed.path).name.split(".")[0]
        _fetch_and_extract(source, root, Path(cache_dir) / "archives")
        return root.resolve()
    path = Path(source).expanduser()
    if not path.is_dir():
        raise DataError(f"data source {source!r} is not a directory (expected the official {reader.name} layout, a "
                        f"URL or 'official')")
    return path.resolve()


def _fetch_and_extract(url: str, dest: Path, archive_dir: Path) -> None:
    name = Path(urllib.parse.urlparse(url).path).name
    done = dest / f".extracted-{name}"
    if done.exists():
        return
    archive_dir.mkdir(parents=True, exist_ok=True)
    archive = archive_dir / name
    if not archive.exists():
        tmp = archive.with_suffix(archive.suffix + ".part")
        try:
            with urllib.request.urlopen(url) as resp, open(tmp, "wb") as f:  # noqa: S310 - user-chosen URL
                total = int(resp.headers.get("Content-Length") or 0) or None
                with tqdm(total=total, unit="B", unit_scale=True, desc=f"download {name}") as bar:
                    while chunk := resp.read(1 << 20):
                        f.write(chunk)
                        bar.update(len(chunk))
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise DataError(f"cannot download {url}: {exc}") from None
        tmp.rename(archive)
    dest.mkdir(parents=True, exist_ok=True)
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as z:
            for member in tqdm(z.infolist(), desc=f"extract {name}", unit="file"):
                z.extract(member, dest)
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive) as t:
            t.extractall(dest, filter="data")
    else:
        raise DataError(f"{archive} is neither a zip nor a tar archive")
    done.touch()


# ------------------------------------------------------------------------------------------------ prepare


def _check_image(path: str) -> tuple[int, str, int, int]:
    """(bytes, sha256, width, height) of an image, decoding it fully.

    Raises:
        hrnet_core.data.io.ImageReadError: missing, empty, truncated or undecodable (names the file).
    """
    from hrnet_core.data.io import read_image

    data = Path(path).read_bytes() if os.path.isfile(path) else b""
    image = read_image(path)
    return len(data), hashlib.sha256(data).hexdigest(), int(image.shape[1]), int(image.shape[0])


def _check_images(paths: list[str], workers: int, progress: bool, desc: str) -> list[tuple[int, str, int, int]]:
    """Decode every image in parallel (OpenCV releases the GIL); all bad files are named in one DataError."""
    from hrnet_core.data.io import ImageReadError

    def safe(p: str):
        try:
            return _check_image(p)
        except ImageReadError as exc:
            return exc

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = list(tqdm(pool.map(safe, paths), total=len(paths), desc=desc, unit="img", disable=not progress))
    bad = [r for r in results if isinstance(r, ImageReadError)]
    if bad:
        lines = "\n".join(f"  {e.path}: {e.reason}" for e in bad[:20])
        more = f"\n  ... and {len(bad) - 20} more" if len(bad) > 20 else ""
        raise CorruptDataError(f"{len(bad)} image(s) cannot be decoded: {bad[0].path} ({bad[0].reason})\n{lines}{more}")
    return results  # type: ignore[return-value]


def prepare_split(
    dataset: str,
    source: str,
    split: str,
    out_dir: str | Path,
    inputs: Mapping[str, str] | None = None,
    *,
    task: str | None = None,
    cache_dir: str | Path = "data/raw/downloads",
    workers: int = 4,
    progress: bool = True,
    **named_inputs: str | None,
) -> dict[str, Any]:
    """Prepare one split (see module docstring) and return its manifest.

    Args:
        dataset: reader name (``hrnet tasks list``), e.g. ``coco`` or ``mpii``.
        source: directory (official layout or local mirror), archive URL, or ``official``.
        split: split name (``train2017``, ``val2017``, ``train``, ``valid``); also the output sub-folder.
        out_dir: prepared dataset root; the split goes to ``<out_dir>/<split>``.
        inputs: reader inputs relative to the source (or absolute) where the source does not use the official layout,
            e.g. ``{"annotations": "test_coco.json", "images": ".", "detections": "dets.json"}``.
        task: the task, when several read ``dataset``.
        cache_dir: where downloads are kept.
        workers: threads decoding images.
        named_inputs: the same as ``inputs`` as keywords (``detections=...``); ``ann_file`` and ``image_dir`` are
            accepted for ``annotations`` and ``images``. ``None`` values are ignored.

    Raises:
        DataError: unknown dataset/input, missing source / annotation / image files, malformed annotations,
            undecodable images (all named). Nothing is written then.
    """
    t, reader = reader_for(dataset, task)
    root, files = _source_files(reader, dataset, split, source, cache_dir, {**(inputs or {}), **{
        _INPUT_ALIASES.get(k, k): v for k, v in named_inputs.items() if v is not None}})
    rows = _read_rows(reader, root, split, files)
    images = _checked_images(rows, workers, progress, split)
    return _write_split(Path(out_dir), split, source, t, reader, rows, images)


#: keyword names of :func:`prepare_split` accepted for reader inputs
_INPUT_ALIASES = {"ann_file": "annotations", "image_dir": "images"}


def _source_files(reader, dataset: str, split: str, source: str, cache_dir: str | Path,
                  given: dict[str, str]) -> tuple[Path, dict[str, Path]]:
    """The source root (downloaded when needed) and every input file of the split's layout (official, with
    ``given`` on top). Raises DataError: an unknown input, a missing file (named, with the option to pass)."""
    unknown = sorted(set(given) - set(reader.inputs))
    if unknown:
        raise DataError(f"dataset {dataset!r} takes no input {unknown[0]!r}; its inputs: {', '.join(reader.inputs)}")
    root = resolve_source(reader, split, source, cache_dir)
    layout = {**reader.default_layout(split), **given}
    files = {key: _within(root, rel) for key, rel in layout.items()}
    for key, path in files.items():
        if not path.exists():
            hint = f"pass --{key} if the layout differs" if key in reader.required else "check the path"
            raise DataError(f"{reader.inputs[key]} {str(path)!r} not found (source {str(root)!r}; {hint})")
    return root, files


def _read_rows(reader, root: Path, split: str, files: dict[str, Path]):
    """The reader's ``PreparedRows``; its annotation / image errors become DataError (same message)."""
    from hrnet_core.data.io import AnnotationError, ImageReadError
    from hrnet_core.tasks import SourceFiles

    try:
        return reader.read(SourceFiles(root=root, split=split, files=files))
    except (AnnotationError, ImageReadError) as exc:
        raise DataError(str(exc)) from None


def _checked_images(rows, workers: int, progress: bool, split: str):
    """The ``images`` table with ``bytes`` and ``sha256`` of every decoded image, and its ``width`` / ``height``
    where the reader left 0 (:func:`_check_images`: every image decoded; DataError names an undecodable one)."""
    images = rows.images.copy()
    paths = [str(rows.image_root / f) for f in images["file_name"]]
    checked = _check_images(paths, workers, progress, f"decode {split}")
    images["bytes"] = [r[0] for r in checked]
    images["sha256"] = [r[1] for r in checked]
    if "width" in images:
        images["width"] = [w if int(w0) == 0 else int(w0) for w0, (_, _, w, _) in zip(images["width"], checked)]
        images["height"] = [h if int(h0) == 0 else int(h0) for h0, (_, _, _, h) in zip(images["height"], checked)]
    return images


def _write_split(out: Path, split: str, source: str, t, reader, rows, images) -> dict[str, Any]:
    """Write ``<out>/<split>`` through a temporary folder renamed into place (nothing is left on failure);
    returns the manifest."""
    out.mkdir(parents=True, exist_ok=True)
    split_dir = out / split
    tmp = Path(tempfile.mkdtemp(prefix=f".{split}.tmp-", dir=out))
    try:
        images.to_parquet(tmp / "images.parquet", index=False)
        rows.samples.to_parquet(tmp / "samples.parquet", index=False)
        stored = {}
        for key in sorted(rows.files):
            src = Path(rows.files[key])
            name = f"{key}{src.suffix}"
            shutil.copyfile(src, tmp / name)
            stored[key] = name
        h = split_fingerprint(rows.files, images, rows.samples, rows.meta)
        manifest = {
            "format": FORMAT,
            "task": t.name,
            "dataset": reader.name,
            "split": split,
            "source": source,
            "image_root": relative_image_root(rows.image_root, split_dir),
            "files": stored,
            "num_images": int(len(images)),
            "num_samples": int(len(rows.samples)),
            **rows.meta,
            "fingerprint": h,
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        tmp.chmod(0o777 & ~current_umask())  # mkdtemp made it 0700; the files inside already follow the umask
        if split_dir.exists():
            shutil.rmtree(split_dir)
        tmp.rename(split_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def split_fingerprint(files: Mapping[str, str | Path], images, samples, meta: Mapping[str, Any]) -> str:
    """sha256 (hex) of everything a prepared split's samples are made of.

    Args:
        files: the reader's extra files (annotations, detections, label lists) ``{key: path}``: their contents.
        images: ``images`` table with ``file_name`` and ``sha256`` (image contents, by name).
        samples: ``samples`` table: every row, column by column in order (values as canonical JSON; arrays as
            lists), so per-sample inputs that are no image -- a label PNG's ``label_sha256``, a class index, annotated
            coordinates -- count; file locations do not (readers store paths relative to the image root).
        meta: the reader's manifest entries (label vocabulary, point layout, classes).

    Not an official convention (the official repositories prepare no splits): the rule is this project's run
    identity (:func:`pipelines.train.config_hash`).
    """
    h = hashlib.sha256()
    for key in sorted(files):
        h.update(f"{key}:{sha256_file(files[key])}\n".encode())
    for name, digest in sorted(zip(images["file_name"], images["sha256"])):
        h.update(f"{name}:{digest}\n".encode())
    columns = list(samples.columns)
    h.update(("samples:" + json.dumps(columns) + "\n").encode())
    for row in samples.itertuples(index=False, name=None):
        h.update((json.dumps([_plain(v) for v in row], sort_keys=True) + "\n").encode())
    h.update(("meta:" + json.dumps(meta, sort_keys=True, default=_plain) + "\n").encode())
    return h.hexdigest()


def _plain(value: Any) -> Any:
    """A table cell as plain JSON data: numpy arrays and scalars to lists / Python numbers."""
    import numpy as np

    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def current_umask() -> int:
    """The process's file mode creation mask, read from ``/proc/self/status`` (Linux); elsewhere by setting and
    restoring it (``os.umask`` has no read-only form)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _within(root: Path, p: str) -> Path:
    q = Path(p).expanduser()
    return (q if q.is_absolute() else root / q).resolve()


def prepare_generated(task: str, out_dir: str | Path, raw_dir: str | Path | None = None, *, num_train: int | None = None,
                      num_val: int | None = None, seed: int = 0, progress: bool = True) -> list[dict[str, Any]]:
    """Generate the task's synthetic default data into ``raw_dir`` (default ``data/raw/<task>``, skipped when it
    exists) and prepare every generated split into ``out_dir``; returns the manifests. ``num_train`` / ``num_val``
    default to ``params.yaml`` ``tasks.<task>.generate``.

    Raises:
        DataError: unknown task. ConfigError: no sizes given and none in ``params.yaml``.
    """
    from hrnet_core.tasks import UnknownTaskError, get_task

    try:
        t = get_task(task)
    except UnknownTaskError as exc:
        raise DataError(str(exc)) from None
    raw = Path(raw_dir) if raw_dir is not None else Path("data/raw") / t.name
    syn = t.synthetic
    if not raw.is_dir():
        if num_train is None or num_val is None:  # the run defaults live in params.yaml alone
            from hrnet_core.recipes.params import run_defaults

            run = run_defaults(t.name)
            num_train = run.num_train if num_train is None else num_train
            num_val = run.num_val if num_val is None else num_val
        syn.generate(raw, num_train, num_val, seed)
    return [prepare_split(sp.dataset, str(raw), sp.split, out_dir, dict(sp.inputs), task=task, progress=progress)
            for sp in syn.splits]
