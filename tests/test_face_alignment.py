"""The face_alignment task (issue 14): NME / failure rate / AUC against hand computations on the four sample sets,
flip pairs against the point semantics, the readers (COCO-style json samples, official CSV lists with subsets), the
heatmap round trip, and one Ray run of the smoke profile on generated faces through ``pipelines.train.train``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from hrnet_core.data.faces import FACE_LAYOUTS, face_layout, normalising_distance, read_face_coco, read_face_csv
from hrnet_core.data.keypoints import flip_permutation
from hrnet_core.data.transforms import fliplr_joints
from hrnet_core.evaluation.nme import auc, ced_curve, face_metrics, failure_rate, per_image_nme
from hrnet_core.recipes import load_recipe
from hrnet_core.tasks import get_task
from hrnet_core.tasks.base import Predictions

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT.parent / "shared" / "data" / "samples"
DATASETS = ("wflw", "aflw", "cofw", "300w")
requires_samples = pytest.mark.skipif(not all((SAMPLES / d / f"test_{d}.json").is_file() for d in DATASETS),
                                      reason="../shared/data/samples/{wflw,aflw,cofw,300w} absent")
TINY = {"model.pretrained": None, "model.width": 16, "model.stage1_blocks": 1, "model.stage1_planes": 32,
        "model.stage_modules": [1, 1, 1], "model.stage_blocks": [1, 1, 1], "data.input_size": [64, 64],
        "data.heatmap_size": [16, 16]}


def _json(ds: str) -> dict:
    return json.loads((SAMPLES / ds / f"test_{ds}.json").read_text())


@pytest.fixture(scope="module")
def prepared_samples(tmp_path_factory):
    """The four sample sets prepared as split ``test`` of ``<tmp>/<dataset>`` (json annotations, images beside)."""
    from pipelines.prepare import prepare_split

    out = tmp_path_factory.mktemp("face_samples")
    for ds in DATASETS:
        prepare_split(ds, str(SAMPLES / ds), "test", out / ds, {"annotations": f"test_{ds}.json", "images": "."},
                      task="face_alignment", progress=False)
    return out


def _sample_recipe(root: Path, ds: str):
    recipe = "face_hrnetv2_w18_256x256_300w_test" if ds == "300w" else f"face_hrnetv2_w18_256x256_{ds}"
    return load_recipe(recipe, {**TINY, "data.root": str(root / ds), "data.train_split": "test",
                                "data.val_split": "test"})


# --------------------------------------------------------------------------------------------------- metrics


def test_auc_and_failure_rate_on_a_constructed_error_list():
    e = [0.02, 0.05, 0.09, 0.12]
    # FR: share strictly above the threshold; AUC_t = mean(max(0, t - e)) / t (exact area under the CED step curve)
    assert failure_rate(e, 0.08) == 0.5 and failure_rate(e, 0.1) == 0.25
    assert auc(e, 0.08) == pytest.approx((0.06 + 0.03) / 4 / 0.08)  # 0.28125
    assert auc(e, 0.1) == pytest.approx((0.08 + 0.05 + 0.01) / 4 / 0.1)  # 0.35
    m = face_metrics(e, {"hard": [False, False, True, True]})
    assert m["NME"] == pytest.approx(7.0) and m["NME/hard"] == pytest.approx(10.5)
    assert (m["FR_0.08"], m["FR_0.1"]) == pytest.approx((50.0, 25.0))
    assert (m["AUC_0.08"], m["AUC_0.1"]) == pytest.approx((28.125, 35.0))
    # the exact AUC is the limit of the trapezoid rule on a fine CED grid
    xs, f = ced_curve(e, 0.1, num=100001)
    assert np.trapezoid(f, xs) / 0.1 == pytest.approx(0.35, abs=1e-4)
    assert ced_curve(e, 0.1, num=3)[1].tolist() == [0.0, 0.5, 0.75]  # F(0), F(0.05), F(0.1): share <= e
    assert auc([], 0.1) == 0.0 and failure_rate([], 0.1) == 0.0


def test_per_image_nme_by_hand():
    gt = np.zeros((1, 2, 2))
    pred = np.array([[[3.0, 4.0], [0.0, 1.0]]])  # errors 5 and 1 px
    assert per_image_nme(pred, gt, [2.0])[0] == pytest.approx((5 + 1) / (2 * 2))
    with pytest.raises(ValueError):
        per_image_nme(pred, gt, [0.0])


def _hand_normaliser(ds: str, ann: dict) -> float:
    kp = ann["keypoints"]
    if ds == "aflw":
        return float(ann["box_size"])
    a, b = {"wflw": (60, 72), "cofw": (8, 9), "300w": (36, 45)}[ds]
    return math.hypot(kp[3 * a] - kp[3 * b], kp[3 * a + 1] - kp[3 * b + 1])


@requires_samples
@pytest.mark.parametrize("ds", DATASETS)
def test_nme_on_the_sample_sets_by_hand(prepared_samples, ds):
    """Ground truth scores 0; every landmark moved by (3, 4) px (5 px) scores mean(5 / d_i) with the dataset's
    normaliser d_i computed here from the raw json (outer eye corners / COFW 8-9 / AFLW box size)."""
    from hrnet_core.data.prepared import open_split

    t = get_task("face_alignment")
    recipe = _sample_recipe(prepared_samples, ds)
    split = open_split(prepared_samples / ds, "test")
    items = t.eval_items(recipe, split)
    k = face_layout(ds).num_landmarks
    gt = np.stack([np.asarray(r["landmarks"]).reshape(k, 2) for r in items])
    perfect = t.score(items, Predictions(np.concatenate([gt, np.ones((len(gt), k, 1))], axis=2)), recipe, split)
    assert perfect["NME"] == 0.0 and perfect["FR_0.08"] == 0.0 and perfect["AUC_0.1"] == 100.0
    shifted = gt + np.array([3.0, 4.0])
    m = t.score(items, Predictions(shifted), recipe, split)
    anns = {a["id"]: a for a in _json(ds)["annotations"]}
    hand = [5.0 / _hand_normaliser(ds, anns[r["ann_id"]]) for r in items]
    assert len(items) == len(anns)
    assert m["NME"] == pytest.approx(100 * np.mean(hand), rel=1e-9)
    assert m["FR_0.08"] == pytest.approx(100 * np.mean([h > 0.08 for h in hand]))
    assert m["AUC_0.1"] == pytest.approx(100 * np.mean([max(0.0, 0.1 - h) for h in hand]) / 0.1)


def test_normalisers_by_hand():
    pts = np.zeros((68, 2))
    pts[36], pts[45] = [10, 20], [13, 24]
    assert normalising_distance("300w", pts) == 5.0
    assert normalising_distance("aflw", np.zeros((19, 2)), box_size=120.0) == 120.0
    with pytest.raises(ValueError, match="box size"):
        normalising_distance("aflw", np.zeros((19, 2)))


# --------------------------------------------------------------------------------------------------- flip pairs


@pytest.mark.parametrize("ds", DATASETS)
def test_flip_pairs_are_an_involution_with_semantic_pairs(ds):
    layout = face_layout(ds)
    perm = flip_permutation(layout.num_landmarks, layout.flip_pairs)  # raises on a repeated index
    assert np.array_equal(perm[perm], np.arange(layout.num_landmarks))
    p = layout.points
    for part in ("eye_outer", "eye_inner", "mouth_corner", "pupil"):
        if f"left_{part}" in p:
            assert perm[p[f"left_{part}"]] == p[f"right_{part}"], (ds, part)
    for centre in ("nose_tip", "chin"):
        if centre in p:
            assert perm[p[centre]] == p[centre], (ds, centre)
    if layout.norm_pair is not None:
        assert perm[layout.norm_pair[0]] == layout.norm_pair[1]


def _similarity_residual(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Per-point distance after the least-squares similarity transform src -> dst."""
    a = np.zeros((2 * len(src), 4))
    a[0::2] = np.c_[src[:, 0], -src[:, 1], np.ones(len(src)), np.zeros(len(src))]
    a[1::2] = np.c_[src[:, 1], src[:, 0], np.zeros(len(src)), np.ones(len(src))]
    sol = np.linalg.lstsq(a, dst.reshape(-1), rcond=None)[0]
    return np.linalg.norm((a @ sol).reshape(-1, 2) - dst, axis=1)


@requires_samples
@pytest.mark.parametrize("ds", DATASETS)
def test_flip_pairs_match_the_sample_faces(ds):
    """On the real sample faces: image and points flipped twice are the identity; named left points lie left of
    their partners; the mirrored face with the pairs swapped aligns onto the face (mean residual under 0.12 of the
    normaliser), far better than without swapping (a wrong pair table would not)."""
    from hrnet_core.data.io import read_image

    layout = face_layout(ds)
    records, images = read_face_coco(SAMPLES / ds / f"test_{ds}.json", ds)
    img = read_image(SAMPLES / ds / images[0]["file_name"])
    assert np.array_equal(img[:, ::-1][:, ::-1], img)
    perm = flip_permutation(layout.num_landmarks, layout.flip_pairs)
    for r in records:
        g = r.landmarks
        j = np.c_[g, np.ones(len(g))]
        twice = fliplr_joints(fliplr_joints(j, img.shape[1], layout.flip_pairs), img.shape[1], layout.flip_pairs)
        assert np.allclose(twice, j)
        for part in ("eye_outer", "mouth_corner"):
            assert g[layout.points[f"left_{part}"], 0] < g[layout.points[f"right_{part}"], 0], (ds, part)
        d = normalising_distance(ds, g, r.box_size)
        mirrored = g * np.array([-1.0, 1.0])
        good = _similarity_residual(mirrored[perm], g).mean() / d
        bad = _similarity_residual(mirrored, g).mean() / d
        assert good < 0.12 and good < 0.5 * bad, (ds, r.ann_id, good, bad)


# --------------------------------------------------------------------------------------------------- readers


@requires_samples
def test_readers_on_the_sample_sets(prepared_samples):
    import pyarrow.parquet as pq

    expected = {"wflw": (4, 98), "aflw": (2, 19), "cofw": (2, 29), "300w": (2, 68)}
    for ds, (n, k) in expected.items():
        man = json.loads((prepared_samples / ds / "test" / "manifest.json").read_text())
        assert man["task"] == "face_alignment" and man["num_landmarks"] == k and man["num_samples"] == n
        rows = pq.read_table(prepared_samples / ds / "test" / "samples.parquet").to_pylist()
        assert all(len(r["landmarks"]) == 2 * k and len(r["center"]) == 2 and r["scale"] > 0 for r in rows)
    aflw = {r["ann_id"]: r for r in pq.read_table(prepared_samples / "aflw/test/samples.parquet").to_pylist()}
    assert aflw[3]["box_size"] == 362.0 and aflw[3]["center"] == [449.0, 321.0] and aflw[3]["scale"] == 1.81
    cofw = {r["ann_id"]: r for r in pq.read_table(prepared_samples / "cofw/test/samples.parquet").to_pylist()}
    # COFW json has boxes only: centre = box centre, scale = max side / 200
    assert cofw[1766]["center"] == [38.0 + 105 / 2, 102.0 + 180 / 2] and cofw[1766]["scale"] == 180 / 200


def test_csv_lists_and_subsets(tmp_path):
    from hrnet_core.data.synthetic_faces import generate_faces
    from hrnet_core.data.io import AnnotationError
    from pipelines.prepare import prepare_split

    summary = generate_faces(tmp_path / "raw", 3, 6, seed=1)
    recs = read_face_csv(tmp_path / "raw" / "face_landmarks_300w_valid.csv", "300w")
    assert len(recs) == 6 and recs[0].landmarks.shape == (68, 2) and recs[0].file_name == "valid/000000.jpg"
    man = prepare_split("300w", str(tmp_path / "raw"), "valid", tmp_path / "prep", task="face_alignment",
                        progress=False)
    assert man["subsets"] == ["common", "challenging"] and man["num_samples"] == 6
    import pyarrow.parquet as pq

    tags = [r["subsets"] for r in pq.read_table(tmp_path / "prep/valid/samples.parquet").to_pylist()]
    assert sum(t == "challenging" for t in tags) == summary["splits"]["valid"]["challenging"]
    assert all(t in ("common", "challenging") for t in tags)
    bad = tmp_path / "bad.csv"
    bad.write_text("img.jpg,1.0,10,10,1,2\n")
    with pytest.raises(AnnotationError, match=r"bad.csv:1: 6 values"):
        read_face_csv(bad, "300w")
    aflw_csv = tmp_path / "aflw.csv"
    aflw_csv.write_text("a.jpg,1.5,300,50,60," + ",".join(str(v) for v in range(38)) + "\n")
    (r,) = read_face_csv(aflw_csv, "aflw")
    assert (r.scale, r.box_size, list(r.center), r.landmarks[1].tolist()) == (1.5, 300.0, [50.0, 60.0], [2.0, 3.0])


# --------------------------------------------------------------------------------------------------- targets


def _cofw_sample_arrays():
    """The two real COFW sample faces as the official release stores them: RGB images, shapes [N, 87] (29 x, 29 y,
    29 occlusion flags)."""
    from hrnet_core.data.io import read_image

    data = _json("cofw")
    files = {i["id"]: i["file_name"] for i in data["images"]}
    images, shapes = [], []
    for a in data["annotations"]:
        images.append(read_image(SAMPLES / "cofw" / files[a["image_id"]]))
        kp = np.asarray(a["keypoints"], dtype=np.float64).reshape(-1, 3)
        shapes.append(np.concatenate([kp[:, 0], kp[:, 1], (kp[:, 2] < 2).astype(np.float64)]))
    images[1] = images[1].mean(axis=2).astype(np.uint8)  # one grey image, as in the release
    return images, np.stack(shapes)


def _write_mat_v73(path, key, images, shapes):
    """A MATLAB v7.3 file as MATLAB writes one (HDF5; column-major, so every array transposed; the cell array of
    images as object references into #refs#)."""
    import h5py

    with h5py.File(path, "w") as f:
        refs = f.create_group("#refs#")
        ds = [refs.create_dataset(f"i{n}", data=np.asarray(img).T) for n, img in enumerate(images)]
        cell = f.create_dataset(key[0], (1, len(images)), dtype=h5py.ref_dtype)
        for n, d in enumerate(ds):
            cell[0, n] = d.ref
        f.create_dataset(key[1], data=shapes.T)


@requires_samples
@pytest.mark.parametrize("version", ["v7.3", "v5"])
def test_cofw_mat_reader_on_the_sample_faces(tmp_path, version):
    """The official COFW .mat (either MATLAB format) prepares like the json: same points, the images extracted
    losslessly, centre / scale of the official loader (box of the points, floor / ceil, longer side / 200)."""
    import scipy.io

    from hrnet_core.data.faces import read_cofw_mat
    from hrnet_core.data.io import read_image
    from hrnet_core.data.prepared import open_split
    from pipelines.prepare import prepare_split

    images, shapes = _cofw_sample_arrays()
    mat = tmp_path / "COFW_test_color.mat"
    if version == "v7.3":
        _write_mat_v73(mat, ("IsT", "phisT"), images, shapes)
    else:
        cells = np.empty((len(images), 1), dtype=object)
        for n, img in enumerate(images):
            cells[n, 0] = img
        scipy.io.savemat(mat, {"IsT": cells, "phisT": shapes})
    records = read_cofw_mat(mat, tmp_path / "COFW_test_color_images")
    assert [r.file_name for r in records] == ["0001.png", "0002.png"]
    for r, img, phi in zip(records, images, shapes):
        assert np.array_equal(r.landmarks, np.stack([phi[:29], phi[29:58]], 1))
        back = read_image(tmp_path / "COFW_test_color_images" / r.file_name)
        assert np.array_equal(back, img if img.ndim == 3 else np.repeat(img[:, :, None], 3, 2))
        x0, x1 = math.floor(phi[:29].min()), math.ceil(phi[:29].max())
        y0, y1 = math.floor(phi[29:58].min()), math.ceil(phi[29:58].max())
        assert r.center.tolist() == [(x0 + x1) / 2, (y0 + y1) / 2] and r.scale == max(x1 - x0, y1 - y0) / 200
    prepare_split("cofw", str(tmp_path), "test", tmp_path / "prepared", {"annotations": mat.name, "images": "."},
                  task="face_alignment", progress=False)
    split = open_split(tmp_path / "prepared", "test", task="face_alignment")
    assert split.num_samples == 2 and split.image_root == tmp_path / "COFW_test_color_images"
    with pytest.raises(Exception, match="no COFW arrays"):
        scipy.io.savemat(tmp_path / "bad.mat", {"X": np.zeros(2)})
        read_cofw_mat(tmp_path / "bad.mat", tmp_path / "x")


@requires_samples
def test_heatmap_round_trip_and_flip_augmentation(prepared_samples):
    """Encoding the 64x64 targets of a test crop and decoding them back to image px loses < 2% NME (quantisation of
    the codec); a flipped training crop's targets are the mirrored targets with the pairs swapped."""
    from hrnet_core.codecs.heatmap import HeatmapCodec
    from hrnet_core.data.io import read_image
    from hrnet_core.data.prepared import open_split
    from hrnet_core.tasks.face_alignment import FaceTransform, face_record, item_errors

    recipe = load_recipe("face_hrnetv2_w18_256x256_300w_test", {"data.root": str(prepared_samples / "300w"),
                                                        "data.val_split": "test", "model.pretrained": None})
    t = get_task("face_alignment")
    items = t.eval_items(recipe, open_split(prepared_samples / "300w", "test"))
    pairs = FACE_LAYOUTS["300w"].flip_pairs
    tr = FaceTransform((256, 256), (64, 64), 1.0, pairs, train=False, half_body_prob=0.0)
    codec = HeatmapCodec((256, 256), (64, 64), 1.0)
    preds = []
    for it in items:
        s = tr(face_record(it, "", 68, 1.25) | {"image_file": it["image_file"]}, read_image(it["image_file"]))
        preds.append(codec.decode_to_image(s["target"][None], s["center"][None], s["scale"][None])[0][0])
    assert 100 * item_errors(items, np.stack(preds), "300w").mean() < 2.0

    class Fixed(FaceTransform):
        def sample_params(self, record, image_width, rng):
            return np.asarray(record["center"]), np.asarray(record["scale"]), 0.0, self.flip

    rec = face_record(items[0], "", 68, 1.25)
    img = read_image(items[0]["image_file"])
    plain = Fixed((256, 256), (64, 64), 1.0, pairs, train=True, flip=False, half_body_prob=0.0)(rec, img, np.random.default_rng(0))
    flipped = Fixed((256, 256), (64, 64), 1.0, pairs, train=True, flip=True, half_body_prob=0.0)(rec, img, np.random.default_rng(0))
    perm = flip_permutation(68, pairs)
    # image x' = W - 1 - x for points and crop centre alike, so crop px mirror about the crop centre: x' = 256 - x
    assert np.allclose(flipped["joints"][:, 0], 256.0 - plain["joints"][perm, 0], atol=1e-6)
    assert np.allclose(flipped["joints"][:, 1], plain["joints"][perm, 1], atol=1e-6)


@requires_samples
def test_sample_sets_evaluate_end_to_end(prepared_samples, tmp_path):
    """Each prepared sample set runs the task's test procedure (tiny untrained network, flip test on) and writes
    predictions, the CED and drawings."""
    import torch

    from hrnet_core.data.prepared import open_split
    from pipelines.evaluate import run_evaluation

    t = get_task("face_alignment")
    for ds in DATASETS:
        recipe = _sample_recipe(prepared_samples, ds)
        recipe.test.flip = True
        torch.manual_seed(0)
        m = run_evaluation(t.build_model(recipe), recipe, open_split(prepared_samples / ds, "test"),
                           out_dir=tmp_path / ds, progress=False, num_vis=2)
        assert m["NME"] > 0 and m["eval_items"] == len(_json(ds)["annotations"])
        preds = json.loads((tmp_path / ds / "predictions.json").read_text())
        assert len(preds[0]["landmarks"]) == face_layout(ds).num_landmarks
        assert (tmp_path / ds / "vis" / "ced.png").is_file() and (tmp_path / ds / "ced.csv").is_file()


@requires_samples
def test_official_checkpoint_wflw_with_subsets_fills_the_face_table(tmp_path, capsys):
    """``hrnet evaluate face_hrnetv2_w18_256x256_wflw --checkpoint HR18-WFLW.pth``: a state dict in the official
    layout (../shared/reference/official_models/face_wflw_w18.json, generated values) loads strictly, records a
    ``source=official-checkpoint`` run with the CED plot among its artifacts, the WFLW attribute subsets of the
    official lists give their ``NME/<subset>`` rows, and the report puts the run in Table 9's HRNetV2-W18 row."""
    import torch

    from hrnet_cli.main import main
    from pipelines import report, tracking
    from pipelines.prepare import prepare_split
    from tests.official import load_reference

    # the official WFLW test list + two attribute lists, written from the real sample faces
    data = _json("wflw")
    files = {i["id"]: i["file_name"] for i in data["images"]}
    rows = []
    for a in data["annotations"]:
        pts = np.asarray(a["keypoints"], dtype=np.float64).reshape(-1, 3)[:, :2].reshape(-1)
        rows.append(",".join([files[a["image_id"]], f"{np.ravel(a['scale'])[0]:.6f}",
                              *(f"{v:.3f}" for v in a["center"]), *(f"{v:.3f}" for v in pts)]))
    src = tmp_path / "wflw"
    (src / "images").mkdir(parents=True)
    for f in files.values():
        (src / "images" / f).write_bytes((SAMPLES / "wflw" / f).read_bytes())
    (src / "face_landmarks_wflw_test.csv").write_text("\n".join(rows) + "\n")
    (src / "face_landmarks_wflw_test_largepose.csv").write_text(rows[0] + "\n")
    (src / "face_landmarks_wflw_test_blur.csv").write_text("\n".join(rows) + "\n")
    man = prepare_split("wflw", str(src), "test", tmp_path / "prepared", task="face_alignment", progress=False)
    assert man["subsets"] == ["pose", "blur"] and man["num_samples"] == len(rows)
    # the official layout, generated values (BN variances positive)
    ref = load_reference("face_wflw_w18")
    g = torch.Generator().manual_seed(0)
    state = {k: (torch.ones(shape) if k.endswith("running_var") else torch.zeros(shape, dtype=torch.long)
                 if k.endswith("num_batches_tracked") else 0.05 * torch.randn(shape, generator=g))
             for k, shape in ref["state_dict"]}
    ckpt = tmp_path / "HR18-WFLW.pth"
    torch.save(state, ckpt)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = tmp_path / "eval"
    assert main(["evaluate", "face_hrnetv2_w18_256x256_wflw", "--set", f"data.root={tmp_path / 'prepared'}",
                 "--set", "data.val_split=test", "--set", "model.pretrained=null", "--checkpoint", str(ckpt),
                 "--mlflow-uri", uri, "--out-dir", str(out), "--device", "cpu"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    preds = json.loads((out / "predictions.json").read_text())
    assert m["NME/pose"] == pytest.approx(100 * preds[0]["nme"], abs=1e-3)
    assert m["NME/blur"] == pytest.approx(m["NME"], abs=1e-9) and "NME/makeup" not in m
    client = tracking.client(uri)
    (run,) = client.search_runs([tracking.experiment_id(uri)])
    assert run.data.tags["source"] == "official-checkpoint" and run.data.metrics["NME"] == pytest.approx(m["NME"])
    vis = [a.path for a in client.list_artifacts(run.info.run_id, "evaluation/vis")]
    assert "evaluation/vis/ced.png" in vis
    rep = report.build_report(tmp_path / "reports", tracking_uri=uri, log_to_mlflow=False, plots=False)
    by_key = {(r["paper"], r["table"], r["row"]): r for r in json.loads(rep.json.read_text())["rows"]}
    row = by_key[("hrnetv2_2019", "9", "HRNetV2-W18")]
    assert row["official_run"] == run.info.run_id and row["official"] == f"{m['NME']:.2f}"
    assert "NME/pose" in rep.markdown.read_text()
    # a checkpoint of another head (COFW's 29 landmarks) into the WFLW recipe: one line naming the tensor, exit 2
    cofw = {k: torch.zeros(shape) for k, shape in load_reference("face_cofw_w18")["state_dict"]}
    torch.save(cofw, tmp_path / "HR18-COFW.pth")
    capsys.readouterr()
    assert main(["evaluate", "face_hrnetv2_w18_256x256_wflw", "--set", f"data.root={tmp_path / 'prepared'}",
                 "--set", "data.val_split=test", "--checkpoint", str(tmp_path / "HR18-COFW.pth"),
                 "--no-mlflow", "--out-dir", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "head.3.weight [29, 270, 1, 1] in the checkpoint vs [98, 270, 1, 1]" in err[0], err


def test_recipes_follow_the_paper():
    for name, (ds, k, sigma, lr, split) in {
            "face_hrnetv2_w18_256x256_wflw": ("wflw", 98, 1.5, 1e-4, "test"),
            "face_hrnetv2_w18_256x256_aflw": ("aflw", 19, 1.5, 2e-4, "test"),
            "face_hrnetv2_w18_256x256_cofw": ("cofw", 29, 1.5, 1e-4, "test"),
            "face_hrnetv2_w18_256x256_300w": ("300w", 68, 1.0, 1e-4, "full"),
            "face_hrnetv2_w18_256x256_300w_test": ("300w", 68, 1.0, 1e-4, "test")}.items():
        r = load_recipe(name)
        assert (r.data.dataset, r.model.num_landmarks, r.data.sigma, r.train.optimizer.lr, r.data.val_split) == \
            (ds, k, sigma, lr, split)
        assert r.data.input_size == [256, 256] and r.data.heatmap_size == [64, 64]
        assert (r.train.epochs, r.train.schedule.milestones, r.train.global_batch_size) == (60, [30, 50], 16)
    from hrnet_core.recipes import ConfigError

    with pytest.raises(ConfigError, match="model.num_landmarks"):
        load_recipe("face_hrnetv2_w18_256x256_wflw", {"model.num_landmarks": 68})
    with pytest.raises(ConfigError, match="data.heatmap_size"):
        load_recipe("face_hrnetv2_w18_256x256_wflw", {"data.heatmap_size": [32, 32]})


# --------------------------------------------------------------------------------------------------- Ray


@pytest.mark.ray
@pytest.mark.slow
def test_smoke_training_through_the_spine(ray_session, tmp_path, monkeypatch):
    """Acceptance 3: 2 Ray workers train the smoke profile on generated faces through pipelines.train.train; NME
    ends well below the untrained network's on the same val split."""
    from pipelines.evaluate import evaluate_untrained
    from pipelines.prepare import prepare_generated
    from pipelines.train import train

    monkeypatch.chdir(tmp_path)
    prepare_generated("face_alignment", "prepared", "raw", num_train=256, num_val=32, seed=0, progress=False)
    r = load_recipe("face_hrnetv2_w18_256x256_300w", {"data.root": "prepared", "train.epochs": 4,
                                              "train.schedule.milestones": [3], "train.val_every": 4},
                    profile="smoke_face")
    untrained = evaluate_untrained(r, progress=False)
    result = train(r, num_workers=2, use_gpu=False, run_name="face", storage_path="ray_results",
                   mlflow_uri="sqlite:///mlflow.db", export_weights="models/face.pt")
    hist = result.history
    assert hist[-1]["optimizer_steps"] == 4 * 8, "256 faces / 2 ranks / batch 16 = 8 steps per epoch"
    assert hist[-1]["loss"] < hist[0]["loss"]
    trained = hist[-1]["NME"]
    print(f"face smoke: NME trained {trained:.2f}% vs untrained {untrained['NME']:.2f}%")
    assert trained < 0.5 * untrained["NME"], (trained, untrained["NME"])
