"""``hrnet score``: score an existing results file of any task against its ground truth, without images or a network.

The results formats are the ones ``hrnet evaluate`` writes as ``predictions.json`` (so an evaluation can be re-scored)
and, where the official code writes another one, that one too. The ground truth is either the dataset's own files
(``--annotations`` and the task's extra inputs) or a prepared split (``--split DIR``, the folder ``hrnet data
prepare`` wrote: its manifest names the dataset, its copied annotation files and its samples hold the ground truth;
its images are not read). Each task is scored by its own scoring functions (``hrnet_core.evaluation``):

==================  ======================================================  =========================================
dataset (task)      results (``--results``)                                 ground truth and rule
==================  ======================================================  =========================================
coco (pose)         COCO keypoint results json (top-down after OKS-NMS,     ``person_keypoints_*.json``; pycocotools
                    bottom-up as grouped)                                   ``COCOeval(.., "keypoints")``
crowdpose           COCO keypoint results json                              ``crowdpose_test.json``; CrowdPose rules
mpii                our json list (``image``, ``keypoints`` 16x3, 0-based)   MPII json + ``--headboxes gt_valid.mat``
                    or the official ``pred.mat`` (``preds`` 1-based)        (or ``headbox`` fields); PCKh, record order
posetrack17/18      folder of per-sequence PoseTrack jsons (poseval pairs   folder of per-sequence jsons (or one
                    them with the ground-truth files by name) or one json   json); per-joint AP, MOTA (PCKh 0.5)
cityscapes, lip,    folder of label PNGs in the dataset's ids, or our       folder of ground-truth label PNGs, an
camvid, ...         ``predictions.json`` (lists ``labels/*.png``)           ``image label`` list, or a split; mIoU
wflw, aflw, ...     our json list (``ann_id``, ``landmarks`` K x 2) or the  face CSV list / COCO-style json; NME, FR,
                    official ``predictions.pth`` (``[N, K, 2]``)            AUC with the dataset's normaliser
imagenet            our json list (``file_name``, ``topk`` class indices)   ``--labels`` file, ``--images``
                                                                            ImageFolder, or a split; top-1 / top-5
coco_det            COCO detection results json (``bbox``, RLE              ``instances_*.json``; pycocotools box
                    ``segmentation``)                                       (and mask when given) AP
==================  ======================================================  =========================================

Every metric is in percent, as ``hrnet evaluate`` reports it. Bad input (a missing or malformed results file, a
wrong dataset name, a prediction missing for a ground-truth item) raises :class:`DataError` naming the file or key.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from hrnet_core.data.prepared import DataError, PreparedSplit

__all__ = ["Truth", "score_results", "add_score_parser", "cmd_score", "open_split_manifest", "SCORE_INPUTS"]

#: the ground-truth inputs besides ``--annotations`` (``{key: help}``)
SCORE_INPUTS: dict[str, str] = {
    "headboxes": "MPII: head boxes (official annot/gt_valid.mat or a json list)",
    "labels": "ImageNet: label file of '<file> <index or wnid>' lines",
    "synsets": "ImageNet: synsets file (line order = class index)",
    "images": "ImageNet: ImageFolder of the split (labels from the class folders; images are not read)",
    "classes": "seg_list: class names, one per line",
}


@dataclass(frozen=True)
class Truth:
    """Where the ground truth of a scoring is.

    Attributes:
        dataset: the dataset (reader) name.
        split: a prepared split (only its manifest, tables and copied files are read), or None.
        annotations: the dataset's annotation file or folder, or None.
        inputs: the other inputs (:data:`SCORE_INPUTS` keys), absolute.
    """

    dataset: str
    split: PreparedSplit | None = None
    annotations: Path | None = None
    inputs: Mapping[str, Path] = field(default_factory=dict)

    def annotation_file(self, what: str) -> Path:
        """``--annotations``, else the split's copied annotation file.

        Raises:
            DataError: neither given (names ``--annotations``).
        """
        if self.annotations is not None:
            return self.annotations
        if self.split is not None and self.split.file("annotations") is not None:
            return self.split.ann_file
        raise DataError(f"scoring {self.dataset} needs --annotations ({what}) or --split (a prepared split)")


def open_split_manifest(path: str | Path) -> PreparedSplit:
    """A prepared split folder (``<root>/<split>``) opened from its manifest alone: the images need not exist
    (:func:`hrnet_core.data.prepared.open_split_dir` without its image-folder check).

    Raises:
        DataError: no ``manifest.json``, invalid json, or another format (names the file).
    """
    from hrnet_core.data.prepared import open_split_dir

    return open_split_dir(path, need_images=False)


# -------------------------------------------------------------------------------------------- helpers


def _load(path: Path, what: str) -> Any:
    from hrnet_core.data.io import load_json

    return load_json(path, what)


def _list_of_dicts(data: Any, path: Path, what: str, keys: Sequence[str]) -> list[dict[str, Any]]:
    """``data`` as a list of dicts that carry ``keys``.

    Raises:
        DataError: not a list, or an entry without one of ``keys`` (names the file and the entry).
    """
    if not isinstance(data, list):
        raise DataError(f"{what} {str(path)!r} must be a json list, got {type(data).__name__}")
    for i, r in enumerate(data):
        if not isinstance(r, dict) or any(k not in r for k in keys):
            missing = [k for k in keys if not isinstance(r, dict) or k not in r]
            raise DataError(f"{what} {str(path)!r}: entry {i} lacks {missing[0]!r} (expected {', '.join(keys)})")
    return data


def _percent(stats: Mapping[str, float]) -> dict[str, float]:
    """pycocotools fractions -> percent, dropping -1 (no ground truth in an area range), as the tasks do."""
    return {k: 100.0 * float(v) for k, v in stats.items() if v >= 0}


# -------------------------------------------------------------------------------------------- keypoints


def score_keypoints(results: Path, truth: Truth) -> dict[str, float]:
    """COCO / CrowdPose keypoint AP of a COCO keypoint results json (percent).

    Follows ``COCOeval(gt, dt, "keypoints")`` (deep-high-resolution-net.pytorch ``lib/dataset/coco.py``
    ``_do_python_keypoint_eval``; HigherHRNet ``lib/dataset/COCODataset.py``) on every ground-truth image; CrowdPose
    through :func:`hrnet_core.evaluation.crowdpose.evaluate_crowdpose`.

    Args:
        results: ``[{"image_id", "category_id", "keypoints": [x, y, s] * K, "score"}]`` (image px).
        truth: ``person_keypoints_*.json`` / ``crowdpose_test.json`` or a prepared split.

    Raises:
        DataError: malformed results; hrnet_core.data.io.AnnotationError: no results, unknown image ids.
    """
    from hrnet_core.evaluation.coco_keypoints import evaluate_coco_keypoints

    ann = truth.annotation_file("the keypoint annotation json")
    dets = _list_of_dicts(_load(results, "keypoint results file"), results, "keypoint results file",
                          ("image_id", "keypoints", "score"))
    sizes = {len(d["keypoints"]) for d in dets}
    if len(sizes) > 1 or any(s % 3 or s == 0 for s in sizes):
        raise DataError(f"keypoint results file {str(results)!r}: keypoints must be K x (x, y, score) values of one K, "
                        f"got lengths {sorted(sizes)}")
    if truth.dataset == "crowdpose":
        from hrnet_core.evaluation.crowdpose import evaluate_crowdpose

        return _percent(evaluate_crowdpose(ann, results))
    k = sizes.pop() // 3 if sizes else 17
    sigmas = None
    if k != 17:
        from hrnet_core.data.keypoints import keypoint_spec

        sigmas = keypoint_spec("coco", k).sigmas
    return _percent(evaluate_coco_keypoints(ann, results, sigmas=sigmas))


def _mpii_predictions(results: Path, records: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """``[N, 16, 2]`` 0-based px in record order from our json list or the official ``pred.mat`` (1-based ``preds``).

    Raises:
        DataError: another number of predictions than records, an entry of another image, a malformed file.
    """
    if results.suffix == ".mat":
        from scipy.io import loadmat

        try:
            preds = np.asarray(loadmat(str(results))["preds"], np.float64)[..., :2] - 1.0
        except (KeyError, ValueError, OSError) as exc:
            raise DataError(f"MPII results file {str(results)!r}: expected a .mat with 'preds' [N, 16, 2] ({exc})") \
                from None
    else:
        rows = _list_of_dicts(_load(results, "MPII results file"), results, "MPII results file", ("keypoints",))
        for i, (r, rec) in enumerate(zip(rows, records)):
            name = rec.get("image_name")
            if "image" in r and name is not None and str(r["image"]) != str(name):
                raise DataError(f"MPII results file {str(results)!r}: entry {i} is for image {r['image']!r} but "
                                f"person {i} of the annotations is in {name!r} (results follow the annotation order)")
        try:
            preds = np.asarray([np.asarray(r["keypoints"], np.float64).reshape(16, -1)[:, :2] for r in rows])
        except ValueError:
            raise DataError(f"MPII results file {str(results)!r}: keypoints must be 16 x (x, y[, score])") from None
    if preds.ndim != 3 or preds.shape[1:] != (16, 2) or len(preds) != len(records):
        raise DataError(f"MPII results file {str(results)!r}: {len(preds)} predictions of shape "
                        f"{list(preds.shape[1:])} for {len(records)} annotated people (expected [N, 16, 2])")
    return preds.reshape(-1, 16, 2)


def score_mpii(results: Path, truth: Truth) -> dict[str, float]:
    """MPII PCKh (percent) of predictions in the annotation order.

    Follows deep-high-resolution-net.pytorch ``lib/dataset/mpii.py`` ``MPIIDataset.evaluate`` (``pred.mat`` 1-based,
    head size 0.6 x head-box diagonal, mean without pelvis and thorax) through
    :func:`hrnet_core.evaluation.pckh.evaluate_mpii`.

    Returns:
        ``PCKh`` (mean @0.5), ``PCKh_0.1``, ``PCKh/<group>``: the names of ``pose_topdown``'s score.

    Raises:
        DataError: people without head boxes (names ``--headboxes``), mismatched predictions.
    """
    from hrnet_core.data.mpii import MpiiKeypoints
    from hrnet_core.evaluation.pckh import pckh_metrics

    ann = truth.annotation_file("the MPII json, e.g. valid.json")
    headboxes = truth.inputs.get("headboxes") or (truth.split.headboxes if truth.split is not None else None)
    records = MpiiKeypoints(ann, ann.parent, headbox_file=headboxes, check_files=False).records
    if any(r.get("headbox") is None for r in records):
        raise DataError(f"MPII annotations {str(ann)!r} have people without a head box: PCKh needs --headboxes "
                        f"(official annot/gt_valid.mat)")
    return pckh_metrics(_mpii_predictions(results, records), records)


# -------------------------------------------------------------------------------------------- PoseTrack


def _posetrack_json(path: Path) -> dict[str, Any]:
    data = _load(path, "PoseTrack results file")
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), list) \
            or not isinstance(data.get("images"), list):
        raise DataError(f"PoseTrack results file {str(path)!r} must be a json with 'images' and 'annotations' lists")
    return data


def _read_posetrack_results(files: Sequence[Path]) -> dict[int, list]:
    """``image_id -> [(track_id, [K, 3])]`` of PoseTrack results files (:func:`hrnet_core.evaluation.posetrack.
    read_results`), a malformed file named."""
    from hrnet_core.evaluation.posetrack import read_results

    out: dict[int, list] = {}
    for f in files:
        try:
            part = read_results([_posetrack_json(f)])
        except ValueError as exc:
            raise DataError(f"PoseTrack results file {str(f)!r}: {exc}") from None
        for iid, people in part.items():
            if iid in out:
                raise DataError(f"PoseTrack results file {str(f)!r}: image {iid} is also in another results file")
            out[iid] = people
    return out


def _paired_posetrack(gt_dir: Path, pred_dir: Path) -> dict[int, list]:
    """poseval's pairing: every ground-truth ``<seq>.json`` needs ``<pred_dir>/<seq>.json`` with as many frames."""
    from hrnet_core.data.posetrack import load_posetrack

    out: dict[int, list] = {}
    for gt_file in sorted(gt_dir.glob("*.json")):
        pred_file = pred_dir / gt_file.name
        if not pred_file.is_file():
            raise DataError(f"PoseTrack results file {str(pred_file)!r} not found: every ground-truth sequence "
                            f"({gt_file.name}) needs a results file of the same name")
        frames = load_posetrack(gt_file).frames
        n_pred = len(_posetrack_json(pred_file)["images"])
        if n_pred != len(frames):
            raise DataError(f"PoseTrack results file {str(pred_file)!r} has {n_pred} frames, its ground truth "
                            f"{str(gt_file)!r} {len(frames)}")
        part = _read_posetrack_results([pred_file])
        stray = sorted(set(part) - set(frames))
        if stray:
            raise DataError(f"PoseTrack results file {str(pred_file)!r}: image ids {stray[:5]} are not frames of "
                            f"{gt_file.name}")
        out.update(part)
    return out


def score_posetrack(results: Path, truth: Truth) -> dict[str, float]:
    """PoseTrack per-joint AP / mAP and MOTA / MOTP / precision / recall (percent) of PoseTrack results jsons.

    Follows leonid-pishchulin/poseval ``py/eval_helpers.py`` ``load_data_dir`` for a folder of ground-truth files and a
    folder of results (one results file of the same name per sequence, as many frames) and
    :func:`hrnet_core.evaluation.posetrack.evaluate_posetrack` for the metrics. A results file (ours: the merged
    ``predictions.json``) or a ground-truth file is matched by image id.

    Raises:
        DataError: a missing / malformed results file, a frame count that differs, image ids outside the ground truth.
    """
    from hrnet_core.data.posetrack import load_posetrack
    from hrnet_core.evaluation.posetrack import evaluate_posetrack

    gt_path = truth.annotation_file("the PoseTrack annotation json or folder of per-sequence jsons")
    videos = load_posetrack(gt_path)
    if gt_path.is_dir() and results.is_dir():
        preds = _paired_posetrack(gt_path, results)
    else:
        files = sorted(results.glob("*.json")) if results.is_dir() else [results]
        if not files:
            raise DataError(f"PoseTrack results folder {str(results)!r} has no *.json files")
        preds = _read_posetrack_results(files)
        stray = sorted(set(preds) - set(videos.frames))
        if stray:
            raise DataError(f"PoseTrack results {str(results)!r}: image ids {stray[:5]} are not frames of the ground "
                            f"truth {str(gt_path)!r}")
    try:
        return evaluate_posetrack(videos, preds)
    except ValueError as exc:
        raise DataError(f"PoseTrack ground truth {str(gt_path)!r}: {exc}") from None


# -------------------------------------------------------------------------------------------- segmentation

_SEG_SUFFIXES = ("_leftImg8bit", "_gtFine_labelIds", "_gtFine_labelTrainIds")


def seg_key(name: str) -> str:
    """The image a label PNG belongs to: the file stem without the Cityscapes suffixes (``_leftImg8bit``,
    ``_gtFine_labelIds``, ``_gtFine_labelTrainIds``)."""
    stem = Path(name).stem
    for s in _SEG_SUFFIXES:
        if stem.endswith(s):
            return stem[:-len(s)]
    return stem


def _keyed(pairs: Sequence[tuple[str, Path]], what: str) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for key, path in pairs:
        if key in out:
            raise DataError(f"{what}: {str(out[key])!r} and {str(path)!r} are both for image {key!r}")
        out[key] = path
    return out


def _seg_truth(truth: Truth) -> tuple[dict[str, Path], Any]:
    """``({image key: ground-truth label PNG}, SegLayout)``."""
    from hrnet_core.data.segmentation import layout_from_meta, read_list, seg_layout

    if truth.split is not None and truth.annotations is None:
        import pyarrow.parquet as pq

        rows = pq.read_table(truth.split.samples_file, columns=["file_name", "label_file"]).to_pylist()
        root = truth.split.image_root
        return (_keyed([(seg_key(r["file_name"]), root / r["label_file"]) for r in rows], str(truth.split.dir)),
                layout_from_meta(truth.split.manifest))
    classes = None
    if truth.dataset == "seg_list":
        f = truth.inputs.get("classes")
        if f is None or not f.is_file():
            raise DataError("scoring seg_list needs --classes FILE (class names, one per line) or --split")
        classes = [s.strip() for s in f.read_text().splitlines() if s.strip()]
    try:
        layout = seg_layout(truth.dataset, classes)
    except KeyError as exc:
        raise DataError(str(exc.args[0])) from None
    ann = truth.annotation_file("a folder of ground-truth label PNGs or an 'image label' list")
    if ann.is_dir():
        return _keyed([(seg_key(p.name), p) for p in sorted(ann.rglob("*.png"))], str(ann)), layout
    base = truth.inputs.get("images") or ann.parent
    return _keyed([(seg_key(img), base / lab) for img, lab in read_list(ann, base)], str(ann)), layout


def _seg_predictions(results: Path) -> dict[str, Path]:
    """``{image key: predicted label PNG}`` of a folder of PNGs or our ``predictions.json``."""
    if results.is_dir():
        return _keyed([(seg_key(p.name), p) for p in sorted(results.rglob("*.png"))], str(results))
    data = _load(results, "segmentation results file")
    images = data.get("images") if isinstance(data, dict) else None
    rows = _list_of_dicts(images, results, "segmentation results file 'images'", ("file_name", "prediction"))
    return _keyed([(seg_key(r["file_name"]), results.parent / r["prediction"]) for r in rows], str(results))


def score_segmentation(results: Path, truth: Truth) -> dict[str, float]:
    """mIoU, pixel / mean accuracy and per-class IoU (percent) of predicted label PNGs in the dataset's own ids.

    Follows HRNet-Semantic-Segmentation ``lib/utils/utils.py`` ``get_confusion_matrix`` and
    ``lib/core/function.py`` ``validate`` (one confusion matrix over every labelled pixel, ignore label 255; IoU =
    TP / (TP + FP + FN) per class, mIoU their mean): the stored values of both PNGs go through the dataset's label
    table (``SegLayout.lut``; predictions through the inverse of ``output_ids``), then
    :func:`hrnet_core.evaluation.miou.confusion_matrix` and :func:`~hrnet_core.evaluation.miou.segmentation_metrics`.
    Images are matched by name (:func:`seg_key`); every ground-truth label needs a prediction of its size.

    Raises:
        DataError: a prediction missing or of another size, a predicted value that is no class of the dataset.
    """
    import torch

    from hrnet_core.data.segmentation import IGNORE, apply_lut, read_label
    from hrnet_core.evaluation.miou import confusion_matrix, segmentation_metrics

    gt, layout = _seg_truth(truth)
    preds = _seg_predictions(results)
    n = layout.num_classes
    inverse = np.full(256, IGNORE, np.uint8)
    inverse[np.asarray(layout.output_ids, np.int64)] = np.arange(n, dtype=np.uint8)
    total = np.zeros((n, n), np.int64)
    for key, label_path in gt.items():
        if key not in preds:
            raise DataError(f"segmentation results {str(results)!r} have no prediction for {str(label_path)!r} "
                            f"(expected {key}.png)")
        label = apply_lut(read_label(label_path), layout.lut_array())
        pred = read_label(preds[key])
        if pred.shape != label.shape:
            raise DataError(f"prediction {str(preds[key])!r} is {pred.shape[1]}x{pred.shape[0]}, its label "
                            f"{str(label_path)!r} {label.shape[1]}x{label.shape[0]}")
        ids = apply_lut(pred, inverse)
        bad = np.unique(pred[ids == IGNORE])
        if bad.size:
            raise DataError(f"prediction {str(preds[key])!r} holds value {int(bad[0])}, which is no class id of "
                            f"{layout.name} (ids {list(layout.output_ids)})")
        total += confusion_matrix(torch.from_numpy(ids), torch.from_numpy(label), n).numpy()
    return segmentation_metrics(total, layout.classes)


# -------------------------------------------------------------------------------------------- faces


def _face_truth(truth: Truth) -> list[dict[str, Any]]:
    """Faces as ``samples.parquet``-like rows (``ann_id``, ``landmarks``, ``box_size``, ``subsets``)."""
    if truth.split is not None and truth.annotations is None:
        import pyarrow.parquet as pq

        return pq.read_table(truth.split.samples_file).to_pylist()
    from hrnet_core.data.faces import read_face_coco, read_face_csv, tag_subsets

    ann = truth.annotation_file("the face list (.csv) or COCO-style json")
    if ann.suffix == ".csv":
        records = read_face_csv(ann, truth.dataset)
        tag_subsets(records, ann, truth.dataset)
    elif ann.suffix == ".json":
        records, _ = read_face_coco(ann, truth.dataset)
    else:
        raise DataError(f"face annotations {str(ann)!r}: expected an official list (.csv) or a COCO-style json "
                        f"(COFW .mat: prepare it and pass --split)")
    return [{"ann_id": int(r.ann_id), "file_name": r.file_name, "landmarks": r.landmarks.reshape(-1).tolist(),
             "box_size": float(r.box_size), "subsets": ",".join(r.subsets)} for r in records]


def _face_predictions(results: Path, items: Sequence[Mapping[str, Any]], k: int) -> np.ndarray:
    """``[N, K, 2]`` px in item order: our json (matched by ``ann_id``) or the official ``predictions.pth``."""
    if results.suffix in (".pth", ".pt"):
        import torch

        try:
            preds = np.asarray(torch.load(results, map_location="cpu", weights_only=True), np.float64)
        except Exception as exc:  # noqa: BLE001 - any unreadable file is bad input
            raise DataError(f"face results file {str(results)!r} cannot be read as a tensor [N, K, 2]: {exc}") \
                from None
        if preds.shape != (len(items), k, 2):
            raise DataError(f"face results file {str(results)!r} holds {list(preds.shape)}, expected "
                            f"[{len(items)}, {k}, 2] (the annotations' faces in order)")
        return preds
    rows = _list_of_dicts(_load(results, "face results file"), results, "face results file", ("ann_id", "landmarks"))
    by_id = {int(r["ann_id"]): r for r in rows}
    out = []
    for it in items:
        r = by_id.get(int(it["ann_id"]))
        if r is None:
            raise DataError(f"face results file {str(results)!r} has no prediction for ann_id {it['ann_id']} "
                            f"({it.get('file_name')})")
        p = np.asarray(r["landmarks"], np.float64)
        if p.shape != (k, 2):
            raise DataError(f"face results file {str(results)!r}: ann_id {it['ann_id']} has landmarks "
                            f"{list(p.shape)}, expected [{k}, 2]")
        out.append(p)
    return np.asarray(out).reshape(-1, k, 2)


def score_faces(results: Path, truth: Truth) -> dict[str, float]:
    """NME, FR and AUC (percent) and ``NME/<subset>`` of facial landmarks.

    Follows HRNet-Facial-Landmark-Detection ``lib/core/evaluation.py`` ``compute_nme`` (per face the mean point
    error over the dataset's normaliser: inter-ocular for 300W / WFLW / COFW, the box size for AFLW) through
    :func:`hrnet_core.evaluation.nme.item_errors` and :func:`hrnet_core.evaluation.nme.face_metrics`.

    Raises:
        DataError: a face without a prediction, landmarks of another count.
    """
    from hrnet_core.data.faces import face_layout
    from hrnet_core.evaluation.nme import face_metrics, item_errors

    items = _face_truth(truth)
    k = face_layout(truth.dataset).num_landmarks
    preds = _face_predictions(results, items, k)
    try:
        errors = item_errors(items, preds, truth.dataset)
    except ValueError as exc:
        raise DataError(f"face annotations: {exc}") from None
    tags = [set(filter(None, str(r.get("subsets") or "").split(","))) for r in items]
    names = sorted(set().union(*tags)) if tags else []
    return face_metrics(errors, {n: [n in t for t in tags] for n in names})


# -------------------------------------------------------------------------------------------- classification


def _classification_truth(truth: Truth) -> dict[str, int]:
    """``{file name relative to the split's image folder: class index}``."""
    from hrnet_core.data.imagenet import read_label_file, read_synsets, scan_image_folder

    if truth.split is not None and not ({"labels", "images"} & set(truth.inputs)) and truth.annotations is None:
        import pyarrow.parquet as pq

        rows = pq.read_table(truth.split.samples_file, columns=["file_name", "label"]).to_pylist()
        return {str(r["file_name"]): int(r["label"]) for r in rows}
    syn = read_synsets(truth.inputs["synsets"]) if "synsets" in truth.inputs else None
    labels = truth.inputs.get("labels") or truth.annotations
    if labels is None:
        if "images" not in truth.inputs:
            raise DataError("scoring imagenet needs --labels FILE, --images IMAGEFOLDER or --split")
        by_class = scan_image_folder(truth.inputs["images"])
        index = syn.index() if syn is not None else {c: i for i, c in enumerate(by_class)}
        unknown = [c for c in by_class if c not in index]
        if unknown:
            raise DataError(f"class folder {unknown[0]!r} is not in --synsets {str(truth.inputs.get('synsets'))!r}")
        return {f: index[c] for c, fs in by_class.items() for f in fs}
    rows = read_label_file(labels)
    if all(t.lstrip("-").isdigit() for _, t in rows):
        return {f: int(t) for f, t in rows}
    index = syn.index() if syn is not None else {w: i for i, w in enumerate(sorted({t for _, t in rows}))}
    unknown = [t for _, t in rows if t not in index]
    if unknown:
        raise DataError(f"{labels}: class {unknown[0]!r} is not in --synsets")
    return {f: index[t] for f, t in rows}


def score_classification(results: Path, truth: Truth) -> dict[str, float]:
    """Top-1 / top-5 accuracy (percent) of ranked class predictions.

    Follows HRNet-Image-Classification ``lib/core/evaluate.py`` ``accuracy`` (a sample is right at k when its label
    is among its k best classes) through :func:`hrnet_core.evaluation.classification.topk_accuracy`; every
    labelled image needs a prediction (matched by ``file_name``).

    Raises:
        DataError: a labelled image without a prediction, ranked lists of different lengths.
    """
    from hrnet_core.evaluation.classification import topk_accuracy

    labels = _classification_truth(truth)
    rows = _list_of_dicts(_load(results, "classification results file"), results, "classification results file",
                          ("file_name", "topk"))
    by_name = {str(r["file_name"]): r["topk"] for r in rows}
    missing = [f for f in labels if f not in by_name]
    if missing:
        raise DataError(f"classification results file {str(results)!r} has no prediction for {missing[0]!r} "
                        f"({len(missing)} labelled image(s) missing)")
    lengths = {len(by_name[f]) for f in labels}
    if len(lengths) > 1 or 0 in lengths:
        raise DataError(f"classification results file {str(results)!r}: 'topk' lists of lengths {sorted(lengths)}")
    idx = np.asarray([by_name[f] for f in labels], np.int64).reshape(len(labels), -1)
    y = np.asarray(list(labels.values()), np.int64)
    ks = [k for k in (1, 5) if k <= idx.shape[1]] or [1]
    acc = topk_accuracy(idx, y, ks)
    return {f"top{k}": acc[k] for k in ks}


# -------------------------------------------------------------------------------------------- detection


def score_detection(results: Path, truth: Truth) -> dict[str, float]:
    """COCO box AP (and mask AP when the results carry ``segmentation``), percent, pycocotools.

    Follows HRNet's mmdetection-based detection evaluation (``COCOeval`` of the results json against the instances
    file, ``iouType`` bbox / segm) through :func:`hrnet_core.evaluation.coco_detection.coco_detection_metrics`, on
    every image of the annotation file (of the prepared split with ``--split``).

    Raises:
        DataError: malformed results, image ids outside the ground truth, an annotation file without annotations
            (test-dev: for the evaluation server).
    """
    from hrnet_core.evaluation.coco_detection import coco_detection_metrics

    ann = truth.annotation_file("the COCO instances json")
    gt = _load(ann, "instances file")
    if not isinstance(gt, dict) or "annotations" not in gt:
        raise DataError(f"instances file {str(ann)!r} has no annotations (test-dev image info): its results go to "
                        f"the COCO evaluation server")
    res = _list_of_dicts(_load(results, "detection results file"), results, "detection results file",
                         ("image_id", "category_id", "bbox", "score"))
    known = {int(i["id"]) for i in gt.get("images", [])}
    stray = sorted({int(r["image_id"]) for r in res} - known)
    if stray:
        raise DataError(f"detection results file {str(results)!r} refers to image ids not in {str(ann)!r}: {stray[:5]}")
    image_ids = None
    if truth.split is not None and truth.annotations is None:
        import pyarrow.parquet as pq

        image_ids = [int(i) for i in pq.read_table(truth.split.images_file, columns=["image_id"])["image_id"]]
    types = ("bbox", "segm") if any("segmentation" in r for r in res) else ("bbox",)
    return coco_detection_metrics(ann, res, image_ids, types)


# -------------------------------------------------------------------------------------------- dispatch

SCORERS: dict[str, Callable[[Path, Truth], dict[str, float]]] = {
    "pose_topdown": score_keypoints, "pose_bottomup": score_keypoints, "pose_tracking": score_posetrack,
    "segmentation": score_segmentation, "face_alignment": score_faces, "classification": score_classification,
    "detection": score_detection,
}
#: datasets scored otherwise than their task's other datasets
DATASET_SCORERS: dict[str, Callable[[Path, Truth], dict[str, float]]] = {"mpii": score_mpii}


def score_results(dataset: str, results: str | Path, *, annotations: str | Path | None = None,
                  split: str | Path | None = None, task: str | None = None,
                  inputs: Mapping[str, str | Path] | None = None) -> dict[str, float]:
    """Score a results file (or folder) of ``dataset`` against its ground truth (module docstring).

    Args:
        dataset: a dataset of ``hrnet tasks list`` (``coco``, ``mpii``, ``posetrack18``, ``camvid``, ...).
        results: the results file or folder.
        annotations: the dataset's annotation file or folder.
        split: a prepared split folder (``<root>/<split>``) instead of / besides ``annotations``.
        task: the task, where several read ``dataset``.
        inputs: other ground-truth inputs (:data:`SCORE_INPUTS`).

    Returns:
        The task's metrics in percent (the names ``hrnet evaluate`` reports).

    Raises:
        DataError: unknown dataset / task / input, a missing or malformed file (named), a split of another dataset.
    """
    from pipelines.prepare import reader_for

    t, _ = reader_for(dataset, task)
    res = Path(results).expanduser()
    if not res.exists():
        raise DataError(f"results {str(results)!r} not found")
    opened = open_split_manifest(split) if split is not None else None
    if opened is not None and opened.dataset != dataset:
        raise DataError(f"--split {str(split)!r} holds dataset {opened.dataset!r}, not {dataset!r}")
    extra = {}
    for key, value in (inputs or {}).items():
        if key not in SCORE_INPUTS:
            raise DataError(f"hrnet score takes no input {key!r}; its inputs: {', '.join(SCORE_INPUTS)}")
        p = Path(value).expanduser()
        if not p.exists():
            raise DataError(f"--{key} {str(value)!r} not found")
        extra[key] = p.resolve()
    ann = None
    if annotations is not None:
        ann = Path(annotations).expanduser()
        if not ann.exists():
            raise DataError(f"--annotations {str(annotations)!r} not found")
        ann = ann.resolve()
    truth = Truth(dataset=dataset, split=opened, annotations=ann, inputs=extra)
    return DATASET_SCORERS.get(dataset, SCORERS[t.name])(res.resolve(), truth)


# -------------------------------------------------------------------------------------------- command line

_EPILOG = """\
results formats (those `hrnet evaluate` writes as predictions.json, and the official ones):
  coco, crowdpose     COCO keypoint results json; pycocotools COCOeval keypoints (CrowdPose: its evaluator's rules)
  mpii                our predictions.json (record order) or the official pred.mat; PCKh, needs --headboxes
  posetrack17/18      folder of per-sequence PoseTrack jsons (paired by name with an --annotations folder, as
                      poseval does) or one json; mAP, MOTA, MOTP, precision, recall
  segmentation sets   folder of label PNGs in the dataset's ids, or our predictions.json; mIoU, IoU per class
  wflw, aflw, cofw, 300w   our predictions.json (ann_id, landmarks) or the official predictions.pth; NME, FR, AUC
  imagenet            our predictions.json (file_name, topk); top-1, top-5 (--labels, --images or --split)
  coco_det            COCO detection results json; box AP (+ mask AP with segmentation RLEs)

examples:
  hrnet score coco --results outputs/pose_topdown/evaluation/predictions.json \\
      --annotations annotations/person_keypoints_val2017.json
  hrnet score posetrack18 --results outputs/pose_tracking/evaluation/predictions \\
      --annotations posetrack_data/annotations/val
  hrnet score camvid --results outputs/segmentation/evaluation/labels --annotations CamVid/testannot
  hrnet score mpii --results pred.mat --annotations annot/valid.json --headboxes annot/gt_valid.mat
  hrnet score wflw --results predictions.json --split data/prepared/wflw/test
"""


def add_score_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """The ``score`` sub-command (results file + ground truth -> metrics json)."""
    p = sub.add_parser(
        "score", help="score an existing results file against the ground truth (no images, no network)",
        description="Score a results file (or folder) of any task with the task's official metric, from the dataset's "
                    "annotation files or a prepared split; prints the metrics (percent) as json. Images are not read.",
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset", help="dataset (see `hrnet tasks list`): coco, crowdpose, mpii, posetrack18, camvid, "
                                   "wflw, imagenet, coco_det, ...")
    p.add_argument("--results", required=True, metavar="PATH", help="results file or folder")
    p.add_argument("--annotations", default=None, metavar="PATH",
                   help="ground-truth annotation file or folder (label PNG folder / list for segmentation)")
    p.add_argument("--split", default=None, metavar="DIR",
                   help="a prepared split (hrnet data prepare's OUT/SPLIT) holding the ground truth")
    p.add_argument("--task", default=None, help="task, when several tasks read the dataset")
    for key, text in SCORE_INPUTS.items():
        p.add_argument(f"--{key}", dest=f"input_{key}", default=None, metavar="PATH", help=text)
    p.add_argument("--metrics-out", default=None, metavar="FILE", help="also write the metrics json here")
    return p


def cmd_score(args: argparse.Namespace) -> int:
    """``hrnet score``: print the metrics json (and write ``--metrics-out``)."""
    inputs = {k[len("input_"):]: v for k, v in vars(args).items() if k.startswith("input_") and v is not None}
    metrics = score_results(args.dataset, args.results, annotations=args.annotations, split=args.split,
                            task=args.task, inputs=inputs)
    text = json.dumps(metrics, indent=2, sort_keys=True)
    if args.metrics_out:
        out = Path(args.metrics_out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
    print(text)
    return 0
