"""PoseTrack 2017 / 2018 video annotations in the COCO-style json (the format of the PoseTrack 2018 release and of
the converted PoseTrack 2017 files that mmpose and the official HRNet code read).

One json holds one sequence (the official per-sequence files ``annotations/{train,val}/<vid>_mpii_<split>.json``) or
several (a combined file); :func:`load_posetrack` reads a file or a folder of them into :class:`PoseTrackVideos`:

- ``images``: ``id``, ``file_name`` (relative to the dataset root), ``vid_id``, ``frame_id``, ``is_labeled``,
  optional ``ignore_regions_x`` / ``ignore_regions_y`` (one list of polygon vertices per region, px), ``width`` /
  ``height``;
- ``annotations``: ``image_id``, ``track_id``, ``keypoints`` (17 x (x, y, v), v 0/1, the PoseTrack joint order of
  :data:`hrnet_core.data.keypoints.POSETRACK_KEYPOINTS`; the ears are never labelled in 2018), ``bbox`` (x, y, w, h)
  and ``bbox_head`` (x, y, w, h; the PCKh normaliser of the PoseTrack metrics).

Frames of a sequence are ordered by ``frame_id`` (ties by file name). Person detector results are a COCO detection
list (``image_id``, ``bbox`` x, y, w, h px, ``score``) as ``test_posetrack18_human_detections.json``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .io import AnnotationError, load_json

__all__ = ["PoseTrackFrame", "PoseTrackPerson", "PoseTrackVideos", "load_posetrack", "load_detections",
           "keypoint_box", "NUM_JOINTS"]

NUM_JOINTS = 17


@dataclass(frozen=True)
class PoseTrackFrame:
    """One frame. ``ignore_regions``: polygons ``[P, 2]`` px (x, y); ``index``: position in its sequence."""

    image_id: int
    file_name: str
    vid_id: str
    frame_id: int
    index: int
    is_labeled: bool
    width: int
    height: int
    ignore_regions: tuple[np.ndarray, ...] = ()


@dataclass(frozen=True)
class PoseTrackPerson:
    """One annotated person: ``keypoints`` float ``[17, 3]`` (x, y px, v 0/1), ``bbox`` / ``bbox_head`` ``[4]``
    (x, y, w, h px; None when absent), ``track_id`` (unique within the sequence)."""

    image_id: int
    ann_id: int
    track_id: int
    keypoints: np.ndarray
    bbox: np.ndarray | None
    bbox_head: np.ndarray | None


@dataclass
class PoseTrackVideos:
    """Frames and people of one or more sequences.

    Attributes:
        frames: ``image_id -> PoseTrackFrame``.
        people: ``image_id -> [PoseTrackPerson]`` (every frame has an entry, possibly empty).
        sequences: ``vid_id -> [image_id]`` in frame order.
        sources: the json files read.
    """

    frames: dict[int, PoseTrackFrame] = field(default_factory=dict)
    people: dict[int, list[PoseTrackPerson]] = field(default_factory=dict)
    sequences: dict[str, list[int]] = field(default_factory=dict)
    sources: list[Path] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """One combined COCO-style PoseTrack json of every sequence (reads back with :func:`load_posetrack`)."""
        images, anns = [], []
        for vid, ids in self.sequences.items():
            for i in ids:
                f = self.frames[i]
                img = {"id": f.image_id, "file_name": f.file_name, "vid_id": f.vid_id, "frame_id": f.frame_id,
                       "is_labeled": f.is_labeled, "width": f.width, "height": f.height, "nframes": len(ids)}
                if f.ignore_regions:
                    img["ignore_regions_x"] = [r[:, 0].tolist() for r in f.ignore_regions]
                    img["ignore_regions_y"] = [r[:, 1].tolist() for r in f.ignore_regions]
                images.append(img)
                for p in self.people[i]:
                    a = {"id": p.ann_id, "image_id": p.image_id, "track_id": p.track_id, "category_id": 1,
                         "keypoints": p.keypoints.reshape(-1).tolist(),
                         "num_keypoints": int((p.keypoints[:, 2] > 0).sum())}
                    if p.bbox is not None:
                        a["bbox"] = p.bbox.tolist()
                    if p.bbox_head is not None:
                        a["bbox_head"] = p.bbox_head.tolist()
                    anns.append(a)
        from .keypoints import POSETRACK_KEYPOINTS

        return {"images": images, "annotations": anns,
                "categories": [{"id": 1, "name": "person", "keypoints": list(POSETRACK_KEYPOINTS.joint_names)}]}


def _need(cond: bool, path: Path, msg: str) -> None:
    if not cond:
        raise AnnotationError(f"{path}: {msg}")


def _regions(img: Mapping[str, Any], path: Path) -> tuple[np.ndarray, ...]:
    xs, ys = img.get("ignore_regions_x") or [], img.get("ignore_regions_y") or []
    _need(len(xs) == len(ys), path, f"image {img.get('id')}: {len(xs)} ignore_regions_x but {len(ys)} _y")
    out = []
    for rx, ry in zip(xs, ys):
        _need(len(rx) == len(ry), path, f"image {img.get('id')}: an ignore region has {len(rx)} x and {len(ry)} y")
        if len(rx) >= 3:
            out.append(np.stack([np.asarray(rx, np.float64), np.asarray(ry, np.float64)], axis=1))
    return tuple(out)


def _read_one(path: Path, out: PoseTrackVideos) -> None:
    data = load_json(path)
    _need(isinstance(data, dict) and "images" in data and "annotations" in data, path,
          "not a PoseTrack COCO-style json (needs 'images' and 'annotations')")
    new_ids = []
    for img in data["images"]:
        for key in ("id", "file_name", "vid_id", "frame_id"):
            _need(key in img, path, f"an image has no {key!r} (PoseTrack json needs id, file_name, vid_id, frame_id)")
        iid = int(img["id"])
        _need(iid not in out.frames, path, f"image id {iid} appears twice")
        out.frames[iid] = PoseTrackFrame(
            image_id=iid, file_name=str(img["file_name"]), vid_id=str(img["vid_id"]), frame_id=int(img["frame_id"]),
            index=-1, is_labeled=bool(img.get("is_labeled", True)), width=int(img.get("width", 0)),
            height=int(img.get("height", 0)), ignore_regions=_regions(img, path))
        out.people[iid] = []
        new_ids.append(iid)
    for a in data["annotations"]:
        for key in ("image_id", "keypoints"):
            _need(key in a, path, f"annotation {a.get('id')} has no {key!r}")
        iid = int(a["image_id"])
        _need(iid in out.frames, path, f"annotation {a.get('id')} refers to unknown image {iid}")
        kps = np.asarray(a["keypoints"], dtype=np.float64)
        _need(kps.size == NUM_JOINTS * 3, path, f"annotation {a.get('id')}: {kps.size} keypoint values, expected 51")
        kps = kps.reshape(NUM_JOINTS, 3)
        kps[:, 2] = (kps[:, 2] > 0).astype(np.float64)
        _need("track_id" in a, path, f"annotation {a.get('id')} has no 'track_id'")
        box = np.asarray(a["bbox"], np.float64) if a.get("bbox") is not None and len(a["bbox"]) == 4 else None
        head = (np.asarray(a["bbox_head"], np.float64)
                if a.get("bbox_head") is not None and len(a["bbox_head"]) == 4 else None)
        out.people[iid].append(PoseTrackPerson(image_id=iid, ann_id=int(a.get("id", -1)), track_id=int(a["track_id"]),
                                               keypoints=kps, bbox=box, bbox_head=head))
    out.sources.append(path)


def load_posetrack(path: str | Path) -> PoseTrackVideos:
    """Read a PoseTrack json, or every ``*.json`` of a folder (one per sequence), into :class:`PoseTrackVideos`.

    Raises:
        FileNotFoundError: ``path`` does not exist. hrnet_core.data.io.AnnotationError: a malformed file, a folder
        without json files, duplicate image ids (each names the file).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"PoseTrack annotations {str(path)!r} not found")
    files = sorted(path.glob("*.json")) if path.is_dir() else [path]
    if not files:
        raise AnnotationError(f"{path}: folder has no PoseTrack *.json files")
    out = PoseTrackVideos()
    for f in files:
        _read_one(f, out)
    by_vid: dict[str, list[int]] = {}
    for iid, f in out.frames.items():
        by_vid.setdefault(f.vid_id, []).append(iid)
    for vid in sorted(by_vid):
        ids = sorted(by_vid[vid], key=lambda i: (out.frames[i].frame_id, out.frames[i].file_name))
        for k, i in enumerate(ids):
            f = out.frames[i]
            out.frames[i] = PoseTrackFrame(**{**f.__dict__, "index": k})
        out.sequences[vid] = ids
    return out


def load_detections(path: str | Path, score_thr: float = 0.0) -> dict[int, np.ndarray]:
    """Person detections (COCO results list) -> ``image_id -> float [N, 5]`` (x, y, w, h px, score), by score.

    Raises:
        hrnet_core.data.io.AnnotationError: not a list of ``{image_id, bbox, score}`` (names the file).
    """
    data = load_json(path, "detection file")
    if not isinstance(data, list):
        raise AnnotationError(f"{path}: detection file must be a list of {{image_id, bbox, score}}")
    out: dict[int, list[list[float]]] = {}
    for d in data:
        if not isinstance(d, dict) or "image_id" not in d or "bbox" not in d or len(d["bbox"]) != 4:
            raise AnnotationError(f"{path}: detection {d!r} has no image_id / 4-value bbox")
        if int(d.get("category_id", 1)) != 1 or float(d.get("score", 1.0)) < score_thr:
            continue
        out.setdefault(int(d["image_id"]), []).append([*map(float, d["bbox"]), float(d.get("score", 1.0))])
    return {k: np.asarray(sorted(v, key=lambda r: -r[4]), np.float64).reshape(-1, 5) for k, v in out.items()}


def keypoint_box(keypoints: np.ndarray, extend: float = 0.15, thr: float = 0.0) -> np.ndarray | None:
    """The box of the joints with ``keypoints[:, 2] > thr`` enlarged by ``extend`` of its width and height (about its
    centre): the training box of the pose paper Sec. 4.3 ("extending the bounding box of all the keypoints by 15% in
    length") and the box of a pose propagated to the next frame.

    Args:
        keypoints: ``[K, 3]`` (x, y px, visibility or score).
    Returns:
        float64 ``[4]`` (x, y, w, h px), or None when fewer than two joints count or they coincide (a side under 30% of
        the other is widened to 30%).
    """
    k = np.asarray(keypoints, np.float64)
    pts = k[k[:, 2] > thr, :2]
    if len(pts) < 2:
        return None
    lo, hi = pts.min(0), pts.max(0)
    size = (hi - lo) * (1.0 + extend)
    if size.max() <= 1.0:
        return None
    size = np.maximum(size, 0.3 * size.max())  # joints on a line (a profile view): keep a person-like aspect
    c = (lo + hi) / 2
    return np.array([c[0] - size[0] / 2, c[1] - size[1] / 2, size[0], size[1]])


def write_json(obj: Any, path: str | Path) -> Path:
    """Write ``obj`` as json (parents created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))
    return path
