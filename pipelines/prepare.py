"""Data preparation stage: a raw dataset in its official layout -> a prepared, versionable split.

``hrnet data prepare coco --source <dir|url|official> --split val2017 --out data/prepared/coco`` writes::

    <out>/<split>/manifest.json      format, dataset, split, source, counts, fingerprint, file names below
    <out>/<split>/annotations.json   the annotation file, copied (ground truth for evaluation)
    <out>/<split>/detections.json    person detection results, copied (optional; detector boxes for evaluation)
    <out>/<split>/images.parquet     one row per image: image_id, file_name, width, height, bytes, sha256
    <out>/<split>/samples.parquet    one row per training sample (person with labeled joints, crowd dropped):
                                     image_id, ann_id, file_name, bbox [4] px (x, y, w, h), joints [K*3]
                                     (x, y px in the original image, visibility weight 0/1)

Images stay where they are (``image_root`` in the manifest, absolute); their checksums are in ``images.parquet``
and the split's ``fingerprint`` (sha256 over annotations, detections and image checksums) changes whenever any
input changes, so DVC tracks a few MB instead of the image folder. Crop geometry (center/scale) is not stored: it
depends on the recipe's input aspect ratio and is computed at ingest.

Sources: a local directory in the official layout (also a local mirror such as ``../shared/data/coco_mini``), an
``http(s)://`` / ``file://`` URL of a zip/tar archive (downloaded into ``--cache-dir`` and extracted), or
``official`` (the dataset's public download URLs, see :data:`OFFICIAL_SOURCES`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
import urllib.parse
import urllib.request
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm import tqdm

FORMAT = "hrnet-prepared/1"

# public download locations of the official layouts (what ``--source official`` fetches)
OFFICIAL_SOURCES: dict[str, dict[str, list[str]]] = {
    "coco": {
        "train2017": ["http://images.cocodataset.org/zips/train2017.zip",
                      "http://images.cocodataset.org/annotations/annotations_trainval2017.zip"],
        "val2017": ["http://images.cocodataset.org/zips/val2017.zip",
                    "http://images.cocodataset.org/annotations/annotations_trainval2017.zip"],
    },
    "mpii": {
        # images from the MPII site; the HRNet json annotations (train/valid/gt_valid.mat) are distributed with the
        # official HRNet code's data instructions
        "train": ["https://datasets.d2.mpi-inf.mpg.de/andriluka14cvpr/mpii_human_pose_v1.tar.gz"],
        "valid": ["https://datasets.d2.mpi-inf.mpg.de/andriluka14cvpr/mpii_human_pose_v1.tar.gz"],
    },
}


class DataError(ValueError):
    """A dataset source or prepared split is missing or malformed (the message names the path)."""


@dataclass(frozen=True)
class SplitLayout:
    """Where the files of one split live inside a source directory (paths relative to the source)."""

    ann_file: str
    image_dir: str
    detections: str | None = None


def default_layout(dataset: str, split: str) -> SplitLayout:
    """The official layout: COCO ``annotations/person_keypoints_<split>.json`` + ``<split>/``; MPII
    ``annot/<split>.json`` + ``images/``."""
    if dataset == "coco":
        return SplitLayout(f"annotations/person_keypoints_{split}.json", split)
    if dataset == "mpii":
        return SplitLayout(f"annot/{split}.json", "images")
    raise DataError(f"unknown dataset {dataset!r}; known: coco, mpii")


# ------------------------------------------------------------------------------------------------ sources


def resolve_source(dataset: str, split: str, source: str, cache_dir: str | Path) -> Path:
    """A local directory for ``source``: the directory itself, or the extracted download of a URL / ``official``.

    Raises:
        DataError: a local path that does not exist, or a failed download.
    """
    if source == "official":
        urls = OFFICIAL_SOURCES.get(dataset, {}).get(split)
        if not urls:
            raise DataError(f"no official download for dataset {dataset!r} split {split!r}")
        root = Path(cache_dir) / dataset
        for url in urls:
            _fetch_and_extract(url, root, Path(cache_dir) / "archives")
        return root.resolve()
    parsed = urllib.parse.urlparse(source)
    if parsed.scheme in ("http", "https", "file"):
        root = Path(cache_dir) / dataset / Path(parsed.path).name.split(".")[0]
        _fetch_and_extract(source, root, Path(cache_dir) / "archives")
        return root.resolve()
    path = Path(source).expanduser()
    if not path.is_dir():
        raise DataError(f"data source {source!r} is not a directory (expected the official {dataset} layout, a URL "
                        f"or 'official')")
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


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _check_image(path: str) -> tuple[int, str]:
    """(bytes, sha256) of an image; raises DataError when missing, empty or a truncated JPEG."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise DataError(f"image file {path!r} not found") from None
    if not data:
        raise DataError(f"image file {path!r} is empty")
    if data[:2] == b"\xff\xd8" and b"\xff\xd9" not in data[-1024:]:
        raise DataError(f"image file {path!r} is a truncated JPEG")
    return len(data), hashlib.sha256(data).hexdigest()


def prepare_split(
    dataset: str,
    source: str,
    split: str,
    out_dir: str | Path,
    ann_file: str | None = None,
    image_dir: str | None = None,
    detections: str | None = None,
    headboxes: str | None = None,
    cache_dir: str | Path = "data/raw/downloads",
    workers: int = 4,
    progress: bool = True,
) -> dict[str, Any]:
    """Prepare one split (see module docstring) and return its manifest.

    Args:
        dataset: ``coco`` (also CrowdPose-style COCO json) or ``mpii``.
        source: directory (official layout or local mirror), archive URL, or ``official``.
        split: split name (``train2017``, ``val2017``, ``train``, ``valid``); also the output sub-folder.
        out_dir: prepared dataset root; the split goes to ``<out_dir>/<split>``.
        ann_file, image_dir, detections: paths relative to the source (or absolute) when the source does not use the
            official layout (e.g. ``--ann-file test_coco.json --image-dir .``).
        headboxes: MPII head boxes for PCKh (official ``annot/gt_valid.mat`` or a json list), relative to the source.
        cache_dir: where downloads are kept.
        workers: threads hashing images.

    Raises:
        DataError: missing source / annotation / image files, malformed annotations.
    """
    from hrnet_core.data.io import AnnotationError, ImageReadError

    root = resolve_source(dataset, split, source, cache_dir)
    layout = default_layout(dataset, split)
    ann_path = _within(root, ann_file or layout.ann_file)
    img_root = _within(root, image_dir if image_dir is not None else layout.image_dir)
    det_path = _within(root, detections) if detections else None
    hb_path = _within(root, headboxes) if headboxes else None
    if hb_path is not None and dataset != "mpii":
        raise DataError("--headboxes only applies to MPII")
    if hb_path is not None and not hb_path.is_file():
        raise DataError(f"head box file {str(hb_path)!r} not found")
    if not ann_path.is_file():
        raise DataError(f"annotation file {str(ann_path)!r} not found (source {str(root)!r}; pass --ann-file if the "
                        f"layout differs)")
    if not img_root.is_dir():
        raise DataError(f"image folder {str(img_root)!r} not found (source {str(root)!r}; pass --image-dir)")
    if det_path is not None and not det_path.is_file():
        raise DataError(f"detection file {str(det_path)!r} not found")

    try:
        reader = _open_reader(dataset, ann_path, img_root, hb_path)
    except (AnnotationError, ImageReadError) as exc:
        raise DataError(str(exc)) from None
    images = _image_table(dataset, ann_path, reader, img_root)

    split_dir = Path(out_dir) / split
    if split_dir.exists():
        shutil.rmtree(split_dir)
    split_dir.mkdir(parents=True)

    # checksums (progress bar: this is the slow part on real data)
    paths = [str(img_root / f) for f in images["file_name"]]
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = list(tqdm(pool.map(_check_image, paths), total=len(paths), desc=f"checksum {split}",
                            unit="img", disable=not progress))
    images["bytes"] = [r[0] for r in results]
    images["sha256"] = [r[1] for r in results]
    images.to_parquet(split_dir / "images.parquet", index=False)

    samples = _samples_table(reader, img_root)
    samples.to_parquet(split_dir / "samples.parquet", index=False)

    shutil.copyfile(ann_path, split_dir / "annotations.json")
    det_sha = None
    if det_path is not None:
        shutil.copyfile(det_path, split_dir / "detections.json")
        det_sha = sha256_file(det_path)
    if hb_path is not None:
        shutil.copyfile(hb_path, split_dir / f"headboxes{hb_path.suffix}")
        det_sha = (det_sha or "") + sha256_file(hb_path)

    h = hashlib.sha256()
    h.update(sha256_file(ann_path).encode())
    h.update((det_sha or "").encode())
    for name, digest in sorted(zip(images["file_name"], images["sha256"])):
        h.update(f"{name}:{digest}\n".encode())
    manifest = {
        "format": FORMAT,
        "dataset": dataset,
        "split": split,
        "source": source,
        "image_root": str(img_root),
        "ann_file": "annotations.json",
        "detections": "detections.json" if det_path is not None else None,
        "headboxes": f"headboxes{hb_path.suffix}" if hb_path is not None else None,
        "num_images": int(len(images)),
        "num_samples": int(len(samples)),
        "num_joints": int(reader.num_joints),
        "fingerprint": h.hexdigest(),
    }
    (split_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def _within(root: Path, p: str) -> Path:
    q = Path(p).expanduser()
    return (q if q.is_absolute() else root / q).resolve()


def _open_reader(dataset: str, ann_path: Path, img_root: Path, headboxes: Path | None = None):
    if dataset == "coco":
        from hrnet_core.data.coco import CocoKeypoints

        return CocoKeypoints(ann_path, img_root, use_gt_boxes=True, check_files=True)
    if dataset == "mpii":
        from hrnet_core.data.mpii import MpiiKeypoints

        return MpiiKeypoints(ann_path, img_root, headbox_file=headboxes)
    raise DataError(f"unknown dataset {dataset!r}; known: coco, mpii")


def _image_table(dataset: str, ann_path: Path, reader, img_root: Path) -> pd.DataFrame:
    if dataset == "coco":
        imgs = reader.coco.dataset["images"]
        rows = [{"image_id": int(i["id"]), "file_name": str(i["file_name"]), "width": int(i.get("width", 0)),
                 "height": int(i.get("height", 0))} for i in imgs]
    else:  # MPII json has no image table: one row per referenced file (sizes unknown without decoding: 0)
        files = {os.path.relpath(r["image_file"], img_root): int(r["image_id"]) for r in reader.records}
        rows = [{"image_id": i, "file_name": f, "width": 0, "height": 0} for f, i in sorted(files.items())]
    return pd.DataFrame(rows, columns=["image_id", "file_name", "width", "height"])


def _samples_table(reader, img_root: Path) -> pd.DataFrame:
    rows = []
    for r in reader.records:
        if float(r["joints"][:, 2].max(initial=0.0)) <= 0:
            continue
        bbox = r.get("bbox")
        fixed_crop = bbox is None
        if fixed_crop:  # MPII: the provided person center/scale define the crop; bbox for reference only
            c, s = r["center"], r["scale"]
            w, h = float(s[0]) * 200.0, float(s[1]) * 200.0
            bbox = [float(c[0]) - w / 2, float(c[1]) - h / 2, w, h]
        row = {
            "image_id": int(r["image_id"]),
            "ann_id": int(r.get("ann_id", -1)),
            "file_name": os.path.relpath(r["image_file"], img_root),
            "bbox": [float(v) for v in bbox],
            "joints": [float(v) for v in r["joints"].reshape(-1)],
        }
        if fixed_crop:
            row["center"] = [float(v) for v in r["center"]]
            row["scale"] = [float(v) for v in r["scale"]]
        if r.get("headbox") is not None:
            row["headbox"] = [float(v) for v in r["headbox"].reshape(-1)]
        rows.append(row)
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------------ reading


@dataclass(frozen=True)
class PreparedSplit:
    """A prepared split on disk (see module docstring); all paths absolute."""

    dir: Path
    manifest: dict[str, Any]

    @property
    def ann_file(self) -> Path:
        return self.dir / self.manifest["ann_file"]

    @property
    def detections(self) -> Path | None:
        d = self.manifest.get("detections")
        return None if d is None else self.dir / d

    @property
    def headboxes(self) -> Path | None:
        h = self.manifest.get("headboxes")
        return None if h is None else self.dir / h

    @property
    def image_root(self) -> Path:
        return Path(self.manifest["image_root"])

    @property
    def samples_file(self) -> Path:
        return self.dir / "samples.parquet"

    @property
    def fingerprint(self) -> str:
        return str(self.manifest["fingerprint"])


def open_split(root: str | Path, split: str) -> PreparedSplit:
    """Open ``<root>/<split>`` written by :func:`prepare_split`.

    Raises:
        DataError: the split is missing (the message says how to prepare it) or its manifest is unreadable.
    """
    d = Path(root).expanduser().resolve() / split
    mpath = d / "manifest.json"
    if not mpath.is_file():
        raise DataError(f"prepared split {str(d)!r} not found (no manifest.json); run `hrnet data generate` and "
                        f"`hrnet data prepare` first (see README)")
    try:
        manifest = json.loads(mpath.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{mpath}: invalid json ({exc})") from None
    if manifest.get("format") != FORMAT:
        raise DataError(f"{mpath}: unknown format {manifest.get('format')!r} (expected {FORMAT!r})")
    if not Path(manifest["image_root"]).is_dir():
        raise DataError(f"{mpath}: image folder {manifest['image_root']!r} no longer exists; prepare the split again")
    return PreparedSplit(d, manifest)


def dataset_fingerprint(*splits: PreparedSplit) -> str:
    """Short combined fingerprint of prepared splits (first 16 hex digits of a sha256)."""
    h = hashlib.sha256()
    for s in splits:
        h.update(f"{s.manifest['split']}:{s.fingerprint}\n".encode())
    return h.hexdigest()[:16]
