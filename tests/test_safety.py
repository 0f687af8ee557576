"""Safety regressions (no Ray): unsafe pickles are refused everywhere a weights file is read, undecodable images stop
data preparation without leaving anything behind, width mismatches are named on the first line, and prepared
manifests do not depend on where the checkout lives."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch

from hrnet_cli import main
from hrnet_core.data.prepared import DataError, open_split
from hrnet_core.data.synthetic import generate_dataset
from hrnet_core.recipes import load_recipe
from hrnet_core.weights import CheckpointError, build_network, open_checkpoint, safe_load, save_weights

RECIPE = "pose_hrnet_w32_256x192_coco"
SPLIT = "train2017"


# ------------------------------------------------------------------------------------------------ helpers


class _Exploit:
    """Unpickling this calls ``pathlib.Path.touch(marker)``: any loader that runs it leaves the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


class _ShellExploit:
    """Unpickling this runs ``os.system("touch <marker>")``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _malicious(path: Path, marker: Path, kind: str = "touch") -> Path:
    """A ``.pt`` file that looks like a state dict but runs code when unpickled without weights_only."""
    payload = _Exploit(marker) if kind == "touch" else _ShellExploit(marker)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {"conv1.weight": torch.zeros(1)}, "hook": payload}, path)
    assert path.is_file() and not marker.exists()
    return path


def _error_line(err: str) -> str:
    """Exactly one ``hrnet: error:`` line, last in stderr, and no traceback."""
    assert "Traceback" not in err
    lines = [line for line in err.replace("\r", "\n").splitlines() if line.startswith("hrnet: error:")]
    assert len(lines) == 1, err
    assert err.rstrip().endswith(lines[0])
    return lines[0]


def _run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    """A tiny generated COCO-layout dataset (never modified; tests copy it when they break files)."""
    tmp = tmp_path_factory.mktemp("safety_raw")
    generate_dataset(tmp / "raw", num_train=6, num_val=2, seed=1)
    return tmp / "raw"


@pytest.fixture(scope="module")
def prepared_root(raw, tmp_path_factory) -> Path:
    from pipelines.prepare import prepare_split

    out = tmp_path_factory.mktemp("safety_prepared") / "prepared"
    prepare_split("coco", str(raw), SPLIT, out, progress=False)
    return out


# ------------------------------------------------------------------------------------------------ 1. unsafe pickles


@pytest.mark.parametrize("kind", ["touch", "system"])
def test_the_crafted_file_really_runs_code_when_loaded_unsafely(tmp_path, kind):
    """Control: the payload used below does create the marker under a plain ``torch.load(weights_only=False)``."""
    marker = tmp_path / "pwned"
    torch.load(_malicious(tmp_path / "evil.pt", marker, kind), weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("kind", ["touch", "system"])
def test_safe_load_refuses_a_malicious_pickle(tmp_path, kind):
    marker = tmp_path / "pwned"
    bad = _malicious(tmp_path / "evil.pt", marker, kind)
    with pytest.raises(CheckpointError) as exc:
        safe_load(bad)
    text = str(exc.value)
    assert text.startswith(f"checkpoint {str(bad)!r} refused: ") and "weights_only=True" in text
    assert len(text.splitlines()) == 1
    assert not marker.exists()


def test_safe_load_names_the_global_a_pickle_asked_for(tmp_path):
    """``Path.touch`` pickles as ``getattr(PosixPath, "touch")``: the first global asked for is ``getattr``."""
    marker = tmp_path / "pwned"
    bad = _malicious(tmp_path / "evil.pt", marker, "touch")
    with pytest.raises(CheckpointError, match=re.escape("it needs 'getattr' to be unpickled")):
        safe_load(bad)
    assert not marker.exists()


def test_safe_load_names_a_blocked_module_global(tmp_path):
    marker = tmp_path / "pwned"
    bad = _malicious(tmp_path / "evil.pt", marker, "system")
    try:
        with pytest.raises(CheckpointError, match=re.escape(f"it needs '{os.system.__module__}.system'")):
            safe_load(bad)
    finally:
        assert not marker.exists()


def test_open_checkpoint_refuses_a_malicious_pickle_with_and_without_recipe(tmp_path):
    marker = tmp_path / "pwned"
    bad = _malicious(tmp_path / "evil.pt", marker)
    with pytest.raises(CheckpointError, match=re.escape(str(bad))):
        open_checkpoint(bad)
    assert not marker.exists()
    with pytest.raises(CheckpointError, match=re.escape(str(bad))):
        open_checkpoint(bad, load_recipe(RECIPE, profile="smoke"))
    assert not marker.exists()
    # a Ray checkpoint directory whose model.pt is malicious
    ckpt = tmp_path / "checkpoint_000001"
    _malicious(ckpt / "model.pt", marker)
    with pytest.raises(CheckpointError, match="refused"):
        open_checkpoint(ckpt)
    assert not marker.exists()


def test_cli_evaluate_refuses_a_malicious_pickle(prepared_root, tmp_path, capsys):
    marker = tmp_path / "pwned"
    bad = _malicious(tmp_path / "evil.pt", marker, "system")
    code, out, err = _run(capsys, "evaluate", RECIPE, "--profile", "smoke", "--set", f"data.root={prepared_root}",
                          "--no-mlflow", "--out-dir", str(tmp_path / "eval"), "--checkpoint", str(bad))
    assert code == 2, err
    line = _error_line(err)
    assert str(bad) in line and "refused" in line
    assert not marker.exists()
    # without a recipe too
    code, _, err = _run(capsys, "evaluate", "--no-mlflow", "--out-dir", str(tmp_path / "eval"),
                        "--checkpoint", str(bad))
    assert code == 2 and str(bad) in _error_line(err)
    assert not marker.exists()


def test_load_pretrained_backbone_refuses_a_malicious_pickle(tmp_path):
    from hrnet_core.models import load_pretrained_backbone

    marker = tmp_path / "pwned"
    bad = _malicious(tmp_path / "imagenet.pth", marker)
    model = build_network(load_recipe(RECIPE, {"model.width": 8}, profile="smoke"))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=re.escape(str(bad))):
        load_pretrained_backbone(model, bad)
    assert not marker.exists()
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items()), "nothing loaded"


def test_recipe_pretrained_path_refuses_a_malicious_pickle(tmp_path):
    """``model.pretrained`` in a recipe goes through the same loader when the task builds the model."""
    from hrnet_core.tasks import get_task

    marker = tmp_path / "pwned"
    bad = _malicious(tmp_path / "imagenet.pth", marker)
    recipe = load_recipe(RECIPE, {"model.width": 8, "model.pretrained": str(bad)}, profile="smoke")
    with pytest.raises(ValueError, match=re.escape(str(bad))):
        get_task(recipe.task).build_model(recipe)
    assert not marker.exists()


def test_resume_reads_train_state_safely(tmp_path):
    """A Ray checkpoint dir as training writes it (model.pt + train_state.pt) whose train_state.pt is malicious."""
    marker = tmp_path / "pwned"
    recipe = load_recipe(RECIPE, {"model.width": 8}, profile="smoke")
    ckpt = tmp_path / "checkpoint_000002"
    save_weights(ckpt / "model.pt", build_network(recipe).state_dict(), recipe, {"epoch": 2})
    _malicious(ckpt / "train_state.pt", marker, "system")
    assert safe_load(ckpt / "model.pt")["epoch"] == 2, "the weights file itself is fine"
    with pytest.raises(CheckpointError) as exc:
        safe_load(ckpt / "train_state.pt")
    assert str(ckpt / "train_state.pt") in str(exc.value) and "refused" in str(exc.value)
    assert not marker.exists()
    # the resume code path (the Ray Train worker, pipelines/train_worker.py) reads both files through safe_load, and
    # neither the driver nor the worker calls a bare torch.load
    root = Path(__file__).resolve().parents[1] / "pipelines"
    worker = (root / "train_worker.py").read_text()
    assert 'safe_load(Path(d) / "train_state.pt")' in worker and 'safe_load(Path(d) / "model.pt")' in worker
    assert "torch.load(" not in worker and "torch.load(" not in (root / "train.py").read_text()


# ------------------------------------------------------------------------------------------------ 2. bad images


def _broken_copy(raw: Path, tmp_path: Path, how: str) -> tuple[Path, Path]:
    """A copy of the generated dataset with one annotated train image replaced; returns (source, broken file)."""
    src = tmp_path / "raw"
    shutil.copytree(raw, src)
    ann = json.loads((src / "annotations" / f"person_keypoints_{SPLIT}.json").read_text())
    target = src / SPLIT / ann["images"][1]["file_name"]
    assert target.suffix == ".jpg" and target.is_file()
    if how == "text":
        target.write_text("this is not an image, just text named .jpg\n")
    else:
        data = target.read_bytes()
        assert data[:2] == b"\xff\xd8"
        target.write_bytes(data[: len(data) // 2])
    return src, target


def _assert_nothing_left(out: Path) -> None:
    assert not (out / SPLIT).exists()
    if out.exists():
        assert not [p.name for p in out.iterdir() if p.name.startswith(f".{SPLIT}.tmp-")]


@pytest.mark.parametrize("how", ["text", "truncated"])
def test_prepare_split_names_an_undecodable_image_and_writes_nothing(raw, tmp_path, how):
    from pipelines.prepare import prepare_split

    src, bad = _broken_copy(raw, tmp_path, how)
    out = tmp_path / "prepared"
    with pytest.raises(DataError) as exc:
        prepare_split("coco", str(src), SPLIT, out, progress=False)
    first = str(exc.value).splitlines()[0]
    assert str(bad) in first and "1 image(s) cannot be decoded" in first
    assert ("truncated" if how == "truncated" else "cannot be decoded") in first
    _assert_nothing_left(out)


@pytest.mark.parametrize("how", ["text", "truncated"])
def test_cli_prepare_exits_1_naming_the_image(raw, tmp_path, capsys, how):
    src, bad = _broken_copy(raw, tmp_path, how)
    out = tmp_path / "prepared"
    code, _, err = _run(capsys, "data", "prepare", "coco", "--source", str(src), "--split", SPLIT, "--out", str(out))
    assert code == 1, err  # the data is at fault: status 1 (a wrong command is 2)
    assert str(bad) in _error_line(err)
    _assert_nothing_left(out)


def test_a_failed_prepare_keeps_the_previous_split(raw, tmp_path):
    """Preparing over an existing split and failing leaves the old split untouched (the rename happens last)."""
    from pipelines.prepare import prepare_split

    out = tmp_path / "prepared"
    prepare_split("coco", str(raw), SPLIT, out, progress=False)
    before = {p.name: p.read_bytes() for p in (out / SPLIT).iterdir()}
    src, _ = _broken_copy(raw, tmp_path, "text")
    with pytest.raises(DataError):
        prepare_split("coco", str(src), SPLIT, out, progress=False)
    assert {p.name: p.read_bytes() for p in (out / SPLIT).iterdir()} == before
    assert not [p.name for p in out.iterdir() if p.name.startswith(f".{SPLIT}.tmp-")]


# ------------------------------------------------------------------------------------------------ 3. width mismatch


def test_width_mismatch_first_line_names_key_and_both_shapes(tmp_path):
    from hrnet_core.models import CheckpointMismatchError

    r8 = load_recipe(RECIPE, {"model.width": 8}, profile="smoke")
    r16 = load_recipe(RECIPE, {"model.width": 16}, profile="smoke")
    s8 = build_network(r8).state_dict()
    s16 = build_network(r16).state_dict()
    path = save_weights(tmp_path / "w8.pt", s8, r8, {"epoch": 1})
    with pytest.raises(CheckpointMismatchError) as exc:
        open_checkpoint(path, r16)
    first = str(exc.value).splitlines()[0]
    assert str(path) in first
    assert "in the checkpoint vs" in first and "in the model" in first
    m = re.search(r"first: (\S+) (\[[\d, ]*\]) in the checkpoint vs (\[[\d, ]*\]) in the model", first)
    assert m, first
    key = m.group(1)
    assert key in s8 and key in s16
    assert m.group(2) == str(list(s8[key].shape)) and m.group(3) == str(list(s16[key].shape))
    assert s8[key].shape != s16[key].shape
    assert exc.value.mismatched and exc.value.mismatched[0][0] == key
    # the same file opened with its own recipe loads
    assert open_checkpoint(path).recipe.model.width == 8


def test_cli_width_mismatch_is_one_line_with_both_shapes(prepared_root, tmp_path, capsys):
    r8 = load_recipe(RECIPE, {"model.width": 8}, profile="smoke")
    path = save_weights(tmp_path / "w8.pt", build_network(r8).state_dict(), r8)
    code, _, err = _run(capsys, "evaluate", RECIPE, "--profile", "smoke", "--set", f"data.root={prepared_root}",
                        "--no-mlflow", "--out-dir", str(tmp_path / "eval"), "--checkpoint", str(path))
    assert code == 2, err
    line = _error_line(err)
    assert str(path) in line and "in the checkpoint vs" in line and "in the model" in line


# ------------------------------------------------------------------------------------------------ 4. relocatable


def test_prepared_manifest_does_not_depend_on_the_output_location(raw, tmp_path):
    from pipelines.prepare import prepare_split

    src = tmp_path / "src" / "raw"
    shutil.copytree(raw, src)
    shallow = tmp_path / "a"
    deep = tmp_path / "b" / "c" / "d" / "prepared"
    m1 = prepare_split("coco", str(src), SPLIT, shallow, progress=False)
    m2 = prepare_split("coco", str(src), SPLIT, deep, progress=False)
    for name in ("images.parquet", "samples.parquet"):
        assert (shallow / SPLIT / name).read_bytes() == (deep / SPLIT / name).read_bytes(), name
    assert m1["fingerprint"] == m2["fingerprint"]
    for m, out in ((m1, shallow), (m2, deep)):
        assert not Path(m["image_root"]).is_absolute()
        assert (out / SPLIT / m["image_root"]).resolve() == (src / SPLIT).resolve()
    assert m1["image_root"] != m2["image_root"], "different depths, different relative paths"
    a, b = open_split(shallow, SPLIT), open_split(deep, SPLIT)
    assert a.fingerprint == b.fingerprint and a.image_root == b.image_root == (src / SPLIT).resolve()


def test_moving_source_and_prepared_together_keeps_the_split_usable(raw, tmp_path):
    from pipelines.prepare import prepare_split

    old = tmp_path / "old" / "checkout"
    shutil.copytree(raw, old / "data" / "raw")
    prepare_split("coco", str(old / "data" / "raw"), SPLIT, old / "data" / "prepared", progress=False)
    before = open_split(old / "data" / "prepared", SPLIT)

    new = tmp_path / "elsewhere" / "deeper" / "checkout"
    shutil.copytree(old, new)
    shutil.rmtree(old)
    moved = open_split(new / "data" / "prepared", SPLIT)
    assert moved.image_root == (new / "data" / "raw" / SPLIT).resolve()
    assert moved.fingerprint == before.fingerprint
    assert moved.manifest["image_root"] == before.manifest["image_root"]
    images = pd.read_parquet(moved.dir / "images.parquet")
    assert all((moved.image_root / f).is_file() for f in images["file_name"])
