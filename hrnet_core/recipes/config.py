"""Typed training recipes: one YAML per paper-table row, loaded into a tree of dataclasses.

A recipe names everything a run needs to reproduce one row of a paper table: the model (zoo name + overrides), the
data (prepared dataset, input size, heatmap size, sigma), the augmentation, the optimiser and schedule, the batch size
the paper used, and the test settings (flip test, detector or ground-truth boxes, OKS-NMS). Values follow the papers
and ``../shared/reference/FACTS.md`` (section 1 for top-down pose).

Loading order (later wins): recipe YAML -> profile YAML (``profiles/<name>.yaml``, e.g. ``smoke``) -> overrides
(dotted keys ``model.width=18`` or a nested mapping). Every key is checked against the dataclasses: an unknown key,
a missing required key or a value of the wrong type raises :class:`ConfigError` naming the dotted key. The model
section is also checked against the zoo: a set ``model.*`` key the recipe's model does not accept (e.g.
``model.width`` on an HRFormer, whose channels are ``model.widths``) raises :class:`ConfigError` at load time,
naming the key, the model and the keys it accepts, instead of failing later when the model is built.

Profiles are recipe layers with two optional extra top-level keys (see ``profiles/smoke.yaml``):

* ``families: {<family>: <recipe layer>}``: one layer per model family (``hrnet``, ``hrformer``; see
  :func:`hrnet_core.models.zoo.model_family`), merged after the profile's shared keys for a recipe whose
  ``model.name`` (after overrides) belongs to that family. A profile with ``families`` but no section for the recipe's
  family is refused. This is how one ``smoke`` profile shrinks an HRNet (``width``, ``stage_blocks``, ...) and an
  HRFormer (``widths``, ``num_heads``, ``window_size``, ...) alike.
* ``datasets: [coco, ...]``: the ``data.dataset`` values the profile's ``data.root`` holds. Applying the profile to a
  recipe of another dataset raises :class:`ConfigError` (naming recipe, dataset and profile) unless the overrides
  give ``data.root`` themselves.

Example::

    recipe = load_recipe("pose_hrnet_w32_256x192_coco", ["train.epochs=2"], profile="smoke")
    recipe.train.epochs           # 2
    recipe.to_dict()              # plain data, logged as MLflow params and saved with checkpoints
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from hrnet_core import schema
from hrnet_core.errors import BadInputError

RECIPE_DIR = Path(__file__).resolve().parent
EXTRA_RECIPE_DIR = RECIPE_DIR / "extra"
PROFILE_DIR = RECIPE_DIR / "profiles"

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("multistep", "cosine", "constant", "poly")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
# branches of an HRNet / HRFormer backbone with the standard three multi-resolution stages (every pose zoo entry)
STANDARD_NUM_BRANCHES = 4


class ConfigError(BadInputError, ValueError):
    """A recipe, profile or override is malformed: unknown key, missing key, wrong type or invalid value.

    The message names the offending dotted key (e.g. ``train.epochs``) and, where known, the file.
    """


@dataclass
class PaperRef:
    """The paper-table row a recipe reproduces (ids match ``hrnet_core.paper_tables``)."""

    id: str
    table: str
    row: str


@dataclass
class ModelConfig:
    """Model zoo name plus the overrides accepted by ``hrnet_core.models.build_model``.

    ``None`` means "zoo default" and is not passed to the builder. Which keys a model accepts depends on its family
    (:func:`hrnet_core.models.zoo.model_overrides`); a set key the model does not accept is a :class:`ConfigError`
    at load time.

    Both families: ``num_joints``; ``stage_modules``: modules in stages 2-4 (HRNet standard ``[1, 4, 3]``, HRFormer
    ``[1, 3, 2]`` for T, ``[1, 4, 2]`` for S/B); ``stage1_blocks``: stage-1 Bottlenecks (HRNet 4, HRFormer 2).
    ``pretrained`` is an ImageNet classification checkpoint for the backbone (path); ``None`` trains from scratch
    (the pose paper's 73.4 AP row).

    HRNet only (``pose_hrnet_*``): ``width`` (C of HRNet-WC); ``fusion``; ``head``; ``stage_blocks``: BasicBlocks
    per branch in stages 2-4 (standard ``[4, 4, 4]``); ``stage1_planes``: stage-1 Bottleneck width (standard 64);
    ``heatmap_branch``: the branch ``b`` the heatmaps are regressed from (pose paper Sec. 4.1 / Figure 5; 0 = 1/4
    resolution, the standard models, 1 = 1/8, 2 = 1/16); when set, ``data.heatmap_size`` must be
    ``data.input_size / (4 * 2**b)``.

    HRFormer only (``hrformer_*``; HRFormer paper Tables 1-2, ``hrnet_core.models.hrformer.HRFormerConfig``), each
    per-branch list with 4 values for the 1/4, 1/8, 1/16, 1/32 branches: ``widths`` (channels, T ``[18, 36, 72,
    144]``), ``num_heads`` (attention heads, T ``[1, 2, 4, 8]``; each divides its width), ``window_size`` (local
    window side in tokens, paper 7; maps are zero-padded to a multiple), ``mlp_ratio`` (FFN expansion, paper 4);
    ``num_blocks``: transformer blocks per branch in every module (paper 2); ``drop_path_rate``: stochastic depth
    of the last block (T 0, S 0.1, B 0.2).

    HigherHRNet only (``higher_hrnet_*``; HigherHRNet paper Tables 3-4): ``num_deconvs`` (deconvolution modules; 1 =
    outputs at 1/4 and 1/2), ``num_deconv_blocks`` (BasicBlocks after each, official 4), ``cat_output`` (per deconv
    module, whether its input concatenates the previous prediction), ``ae_outputs`` (per output, whether it also
    predicts tags).

    Head sizes of the other tasks' networks: ``num_classes`` (segmentation, classification; detection counts the
    background too), ``num_landmarks`` (facial landmarks). ``detector``: the detection architecture around an
    HRNetV2p backbone (``faster_rcnn``, ``mask_rcnn``, ``cascade_rcnn``; ``hrnet_core.tasks.detection``);
    ``out_channels``: the width of its HRFPN pyramid (standard 256).
    """

    name: str
    num_joints: int | None = None
    width: int | None = None
    fusion: str | None = None
    head: str | None = None
    stage_modules: list[int] | None = None
    stage_blocks: list[int] | None = None
    stage1_blocks: int | None = None
    stage1_planes: int | None = None
    pretrained: str | None = None
    heatmap_branch: int | None = None
    widths: list[int] | None = None
    num_heads: list[int] | None = None
    num_blocks: int | None = None
    window_size: list[int] | None = None
    mlp_ratio: list[float] | None = None
    drop_path_rate: float | None = None
    num_deconvs: int | None = None
    num_deconv_blocks: int | None = None
    cat_output: list[bool] | None = None
    ae_outputs: list[bool] | None = None
    num_classes: int | None = None
    num_landmarks: int | None = None
    bn_momentum: float | None = None  # HRNet backbones: BatchNorm momentum (zoo default per task: SEG 0.01, OCR 0.1)
    detector: str | None = None
    out_channels: int | None = None

    def build_kwargs(self) -> dict[str, Any]:
        """Keyword overrides for ``build_model(self.name, **kwargs)``: every field but ``name`` and ``pretrained``
        that is set (not ``None``)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name not in _MODEL_NON_KWARGS and getattr(self, f.name) is not None}


# ModelConfig fields that are not keyword overrides of the model builder
_MODEL_NON_KWARGS = ("name", "pretrained")
# ModelConfig fields holding one value per branch of an HRFormer (1/4 .. 1/32)
_PER_BRANCH_MODEL_KEYS = ("widths", "num_heads", "window_size", "mlp_ratio")


@dataclass
class DataConfig:
    """Dataset section shared by every task; a task's :attr:`~hrnet_core.tasks.RecipeSections.data` subclasses it
    with its target geometry (top-down pose: ``heatmap_size``, ``sigma``).

    ``dataset`` names a reader of the recipe's task (``hrnet tasks list``); ``root`` is a prepared dataset
    (``hrnet data prepare``) holding one folder per split, relative paths resolve against the working directory of the
    command. ``input_size`` is the network input ``[W, H]`` in pixels.
    """

    dataset: str
    root: str
    train_split: str
    val_split: str
    input_size: list[int]


@dataclass
class OptimizerConfig:
    """Optimiser; the official pose code builds Adam WITHOUT weight decay (FACTS.md section 1).

    ``no_decay``: parameters whose name contains one of these strings get no weight decay (HRFormer: the relative
    position bias tables).
    """

    name: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.9
    nesterov: bool = False
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    no_decay: list[str] = field(default_factory=list)


@dataclass
class ScheduleConfig:
    """Learning-rate schedule plus an optional linear warm-up in optimiser steps (``pipelines.train.lr_at``).

    ``multistep`` (x ``gamma`` at each epoch in ``milestones``), ``cosine`` and ``constant`` change per epoch;
    ``poly`` changes per optimiser step: ``lr * (1 - t / total_steps) ** power`` (HRNetV2 segmentation), and so does
    ``cosine`` with ``per_iteration`` (HRFormer classification: timm ``CosineLRScheduler(t_in_epochs=False)``, floor
    ``min_lr``). Per-step rules take ``t = step - 1`` for step ``k >= 1`` (``t = 0`` for the first), because the
    official loops set the rate after each optimiser step (HRNet-Semantic-Segmentation ``adjust_learning_rate``, timm
    ``step_update``).

    ``epoch_offset``: added to the 0-based epoch of the per-epoch rules. 0 (default) decays at the milestone epoch,
    which is how the paper models were trained: the pose / face / classification ``tools/train.py`` step a
    ``MultiStepLR`` at each epoch's start on the PyTorch they name (0.4.1 / 1.0.0), whose constructor reset
    ``last_epoch``; mmcv (detection, HRFormer pose) and HigherHRNet (step after the epoch, PyTorch >= 1.1) do too.
    1 reproduces those ``tools/train.py`` run on PyTorch >= 1.1 (the constructor already stepped once: every decay one
    epoch before its milestone).

    Warm-up (``warmup_iters`` steps from ``warmup_ratio * lr``): multiplies the per-epoch rate (mmcv
    ``LrUpdaterHook`` linear warm-up, rate of step ``k`` from ``k``); with a per-step cosine it replaces it (timm:
    ``lr * (ratio + (1 - ratio) t / warmup_iters)`` while ``t < warmup_iters``).
    """

    name: str = "multistep"
    milestones: list[int] = field(default_factory=list)
    gamma: float = 0.1
    warmup_iters: int = 0
    warmup_ratio: float = 0.001
    power: float = 0.9
    per_iteration: bool = False
    min_lr: float = 0.0
    epoch_offset: int = 0


@dataclass
class TrainConfig:
    """Schedule and batch geometry.

    ``global_batch_size`` is the paper's batch (images per optimiser step over all devices, e.g. 32/GPU x 4 GPUs =
    128); ``batch_size_per_device`` what one worker holds in memory. Gradient accumulation makes up the
    difference: ``accum = global / (per_device * num_workers)``, which must be a whole number.
    ``precision="auto"``: bf16 autocast on GPUs that support it, else fp16 with loss scaling; fp32 on CPU.
    ``val_every``: evaluate on the val split every N epochs inside training (0: only the final evaluation).
    """

    epochs: int
    global_batch_size: int
    batch_size_per_device: int
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    loss: Any = None  # the task's loss section (hrnet_core.tasks.RecipeSections.loss)
    precision: str = "auto"
    sync_bn: bool = True
    seed: int = 0
    val_every: int = 0
    max_failures: int = 2
    checkpoints_to_keep: int = 2


@dataclass
class Recipe:
    """A full, resolved training recipe (see module docstring).

    ``data``, ``augment``, ``test`` and ``train.loss`` are instances of the dataclasses of the recipe's task
    (:attr:`hrnet_core.tasks.Task.sections`); the other sections are the same for every task.
    """

    name: str
    task: str
    description: str
    model: ModelConfig
    data: DataConfig
    train: TrainConfig
    paper: PaperRef | None = None
    augment: Any = None  # the task's augmentation section (hrnet_core.tasks.RecipeSections.augment)
    test: Any = None  # the task's test section (hrnet_core.tasks.RecipeSections.test)
    profile: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (YAML/JSON-serialisable); ``load_recipe`` of its YAML dump gives an equal recipe."""
        return dataclasses.asdict(self)

    def flat(self) -> dict[str, Any]:
        """``{"train.optimizer.lr": 0.001, ...}``: the resolved config as flat dotted keys (MLflow params)."""
        return flatten(self.to_dict())

    def accumulation_steps(self, num_workers: int) -> int:
        """Gradient-accumulation steps so that ``num_workers`` devices reach ``train.global_batch_size``.

        Raises:
            ConfigError: when the global batch is not a whole multiple of ``batch_size_per_device * num_workers``.
        """
        per_step = self.train.batch_size_per_device * max(1, num_workers)
        if self.train.global_batch_size % per_step:
            raise ConfigError(
                f"train.global_batch_size={self.train.global_batch_size} is not a multiple of "
                f"train.batch_size_per_device x num_workers = {self.train.batch_size_per_device} x {num_workers}"
            )
        return self.train.global_batch_size // per_step


# ----------------------------------------------------------------------------------------------------------------
# loading


def list_recipes() -> list[str]:
    """Names of the packaged paper-row recipes (``hrnet_core/recipes/*.yaml``; each names its paper row)."""
    return sorted(p.stem for p in RECIPE_DIR.glob("*.yaml"))


def list_extra_recipes() -> list[str]:
    """Names of the packaged recipes without a paper row (``hrnet_core/recipes/extra/*.yaml``, e.g. CamVid, which no
    paper table reports); they load by name like the paper-row recipes."""
    return sorted(p.stem for p in EXTRA_RECIPE_DIR.glob("*.yaml"))


def list_profiles() -> list[str]:
    """Names of the packaged profiles (``hrnet_core/recipes/profiles/*.yaml``)."""
    return sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))


def load_recipe(
    name_or_path: str,
    overrides: Mapping[str, Any] | Iterable[str] = (),
    profile: str | None = None,
) -> Recipe:
    """Load a recipe by packaged name or YAML path, apply a profile and overrides, and validate it.

    Args:
        name_or_path: a name from :func:`list_recipes` or a path to a YAML file.
        overrides: ``["train.epochs=2", "model.width=18"]`` (values parsed as YAML) or a mapping, either dotted
            (``{"train.epochs": 2}``) or nested (``{"train": {"epochs": 2}}``).
        profile: a name from :func:`list_profiles` or a YAML path; merged before the overrides: its shared keys,
            then its section for the family of the resolved ``model.name`` (module docstring).

    Raises:
        ConfigError: unknown recipe/profile, unknown or missing key, wrong type, invalid value, a model key the
            recipe's model does not accept, a profile without a section for the model's family, or a profile whose
            data does not fit the recipe's dataset.
    """
    path = _resolve_file(name_or_path, RECIPE_DIR, "recipe", list_recipes() + list_extra_recipes(), EXTRA_RECIPE_DIR)
    data = _read_yaml(path)
    layer = parse_overrides(overrides)
    task_name = layer.get("task", data.get("task"))
    types = section_types(task_name, f"{path}" + (" + overrides" if "task" in layer else ""))
    _check_keys(Recipe, data, "", str(path), types)
    _check_keys(Recipe, layer, "", "overrides", types)
    prof: _Profile | None = None
    if profile:
        prof = _read_profile(_resolve_file(profile, PROFILE_DIR, "profile", list_profiles()), types, task_name)
        dataset = _section(layer, "data").get("dataset", _section(data, "data").get("dataset"))
        if prof.datasets is not None and dataset not in prof.datasets and "root" not in _section(layer, "data"):
            raise ConfigError(
                f"profile {prof.name!r} cannot be applied to recipe {data.get('name', str(path))!r}: data.dataset is "
                f"{dataset!r}, but the profile's data.root ({_section(prof.shared, 'data').get('root')}) holds "
                f"{'/'.join(prof.datasets)}-format data ({prof.path}: datasets {prof.datasets}); give a prepared "
                f"{dataset} dataset as an override (data.root=...) to use the profile on it"
                + _smoke_hint(task_name, prof.name))
        try:
            _check_keys(Recipe, prof.shared, "", f"{prof.path}; a profile also takes {', '.join(_PROFILE_KEYS)}", types)
        except ConfigError as exc:
            hint = _smoke_hint(task_name, prof.name)
            if not hint:
                raise
            # a profile of another task on data of the same format (e.g. the top-down smoke profile on a bottom-up
            # COCO recipe): name the task's own smoke profile
            raise ConfigError(f"profile {prof.name!r} cannot be applied to recipe {data.get('name', str(path))!r}: "
                              f"{exc}{hint}") from None
        for family, fam_layer in (prof.families or {}).items():
            _check_keys(Recipe, fam_layer, f"families.{family}.", str(prof.path), types)
        _deep_merge(data, prof.shared, source=str(prof.path))
        if prof.families is not None:
            model_name = _section(layer, "model").get("name", _section(data, "model").get("name"))
            family = _family_of(model_name, f"{path} + profile {prof.name}")
            if family is not None:
                if family not in prof.families:
                    raise ConfigError(
                        f"profile {prof.name!r} ({prof.path}) has no section for the {family} family of model.name="
                        f"{model_name!r} (recipe {data.get('name', path)}); it has families: "
                        f"{', '.join(prof.families) or '(none)'}")
                _deep_merge(data, prof.families[family], source=f"{prof.path} families.{family}")
        data["profile"] = prof.name
    _deep_merge(data, layer, source="overrides")
    source = str(path) + (f" + profile {profile}" if profile else "") + (" + overrides" if layer else "")
    recipe = _build(Recipe, _with_sections(data), prefix="", source=source, types=types)
    validate(recipe)
    return recipe


def recipe_from_dict(data: Mapping[str, Any]) -> Recipe:
    """Rebuild a validated :class:`Recipe` from :meth:`Recipe.to_dict` output (e.g. stored in a checkpoint)."""
    tree = copy.deepcopy(dict(data))
    types = section_types(tree.get("task"), "<dict>")
    recipe = _build(Recipe, _with_sections(tree), prefix="", source="<dict>", types=types)
    validate(recipe)
    return recipe


def parse_overrides(overrides: Mapping[str, Any] | Iterable[str]) -> dict[str, Any]:
    """Turn ``["a.b=1"]`` / ``{"a.b": 1}`` / ``{"a": {"b": 1}}`` into a nested dict; values parsed as YAML."""
    nested: dict[str, Any] = {}
    if isinstance(overrides, Mapping):
        items = list(overrides.items())
    else:
        items = []
        for item in overrides:
            if not isinstance(item, str) or "=" not in item:
                raise ConfigError(f"override {item!r} is not of the form key.sub=value")
            key, raw = item.split("=", 1)
            try:
                value = yaml.safe_load(raw) if raw.strip() else ""
            except yaml.YAMLError as exc:
                raise ConfigError(f"override {key}: cannot parse value {raw!r}: {exc}") from None
            items.append((key.strip(), value))
    for key, value in items:
        if not key:
            raise ConfigError("override with an empty key")
        parts = str(key).split(".")
        node = nested
        for part in parts[:-1]:
            nxt = node.setdefault(part, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"override {key}: {part} is both a value and a section")
            node = nxt
        if isinstance(value, Mapping) and isinstance(node.get(parts[-1]), dict):
            _deep_merge(node[parts[-1]], dict(value), source="overrides")
        else:
            node[parts[-1]] = copy.deepcopy(value)
    return nested


def validate(recipe: Recipe) -> None:
    """Check value ranges and cross-field consistency; raises :class:`ConfigError` naming the key."""

    def need(cond: bool, key: str, msg: str) -> None:
        if not cond:
            raise ConfigError(f"{key}: {msg}")

    task = _task(recipe.task, "task")
    need(recipe.data.dataset in task.datasets, "data.dataset",
         f"{recipe.data.dataset!r} is not a dataset of task {recipe.task!r}; valid: {', '.join(task.datasets)}")
    v = recipe.data.input_size
    need(len(v) == 2 and all(x > 0 for x in v), "data.input_size", f"expected [W, H] of positive ints, got {v}")
    t = recipe.train
    need(t.epochs > 0, "train.epochs", "must be > 0")
    need(t.batch_size_per_device > 0, "train.batch_size_per_device", "must be > 0")
    need(t.global_batch_size >= t.batch_size_per_device, "train.global_batch_size", "must be >= train.batch_size_per_device")
    need(t.optimizer.name in OPTIMIZERS, "train.optimizer.name", f"{t.optimizer.name!r} is not one of {OPTIMIZERS}")
    need(t.optimizer.lr > 0, "train.optimizer.lr", "must be > 0")
    need(len(t.optimizer.betas) == 2, "train.optimizer.betas", "expected two values")
    need(t.schedule.name in SCHEDULES, "train.schedule.name", f"{t.schedule.name!r} is not one of {SCHEDULES}")
    need(list(t.schedule.milestones) == sorted(t.schedule.milestones), "train.schedule.milestones", "must be increasing")
    need(t.precision in PRECISIONS, "train.precision", f"{t.precision!r} is not one of {PRECISIONS}")
    need(t.val_every >= 0, "train.val_every", "must be >= 0")
    need(t.checkpoints_to_keep >= 1, "train.checkpoints_to_keep", "must be >= 1")
    need(t.schedule.name != "poly" or t.schedule.power > 0, "train.schedule.power", "must be > 0")
    need(not t.schedule.per_iteration or t.schedule.name == "cosine", "train.schedule.per_iteration",
         "only the cosine schedule has a per-iteration form (poly always is)")
    need(0 <= t.schedule.min_lr < t.optimizer.lr, "train.schedule.min_lr", "must be >= 0 and below train.optimizer.lr")
    need(t.schedule.epoch_offset >= 0, "train.schedule.epoch_offset", "must be >= 0")
    task.validate(recipe)


def check_zoo_model(model: ModelConfig) -> None:
    """Checks of a zoo-built ``model`` section (every task whose network comes from ``hrnet_core.models``).

    ``model.name`` must be a zoo model and every set ``model.*`` key one of its overrides
    (:func:`hrnet_core.models.zoo.model_overrides`); per-branch HRFormer keys need 4 positive values.

    Raises:
        ConfigError: naming the key, the model and the valid keys.
    """
    _check_model_keys(model)
    for key in _PER_BRANCH_MODEL_KEYS:
        v = getattr(model, key)
        if not (v is None or (len(v) == STANDARD_NUM_BRANCHES and all(x > 0 for x in v))):
            raise ConfigError(f"model.{key}: expected {STANDARD_NUM_BRANCHES} positive values (one per branch, "
                              f"1/4 .. 1/32), got {v}")
    if model.num_blocks is not None and model.num_blocks < 1:
        raise ConfigError("model.num_blocks: must be >= 1")
    if model.drop_path_rate is not None and not 0.0 <= model.drop_path_rate < 1.0:
        raise ConfigError("model.drop_path_rate: must be in [0, 1)")


def _check_model_keys(model: ModelConfig) -> None:
    """``model.name`` must be a zoo model, and every set ``model.*`` key one of its overrides
    (:func:`hrnet_core.models.zoo.model_overrides`); raises :class:`ConfigError` naming the keys and the valid ones."""
    from hrnet_core.models.zoo import list_models, model_family, model_overrides

    try:
        accepted = model_overrides(model.name)
    except KeyError:
        raise ConfigError(f"model.name: unknown model {model.name!r}; known: {', '.join(list_models())}") from None
    bad = [key for key in model.build_kwargs() if key not in accepted]
    if bad:
        valid = [f"model.{f.name}" for f in dataclasses.fields(ModelConfig)
                 if f.name in _MODEL_NON_KWARGS or f.name in accepted]
        raise ConfigError(
            f"{', '.join(f'model.{k}' for k in bad)}: not accepted by model {model.name!r} "
            f"({model_family(model.name)} family); valid model keys for it: {', '.join(valid)}")


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}} -> {"a.b": 1}`` (lists stay values)."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


# ----------------------------------------------------------------------------------------------------------------
# internals


def _resolve_file(name_or_path: str, folder: Path, kind: str, known: list[str], *more: Path) -> Path:
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.parent != Path("."):
        if not p.is_file():
            raise ConfigError(f"{kind} file not found: {p}")
        return p
    candidate = next((f / f"{name_or_path}.yaml" for f in (folder, *more) if (f / f"{name_or_path}.yaml").is_file()),
                     folder / f"{name_or_path}.yaml")
    if not candidate.is_file():
        raise ConfigError(f"unknown {kind} {name_or_path!r}; known: {', '.join(known) or '(none)'}")
    return candidate


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return data


@dataclass
class _Profile:
    """A profile file split into its shared recipe layer and its optional ``datasets`` / ``families`` keys."""

    name: str
    path: Path
    shared: dict[str, Any]
    datasets: list[str] | None = None
    families: dict[str, dict[str, Any]] | None = None


_PROFILE_KEYS = ("datasets", "families")


def _read_profile(path: Path, types: Mapping[str, type], task_name: str) -> _Profile:
    from hrnet_core.models.zoo import MODEL_FAMILIES

    shared = _read_yaml(path)
    datasets = shared.pop("datasets", None)
    families = shared.pop("families", None)
    if datasets is not None:
        from hrnet_core.task_registry import landed_tasks, load_task

        valid = sorted({d for t in landed_tasks() for d in load_task(t).datasets})
        if not isinstance(datasets, list) or not datasets or any(d not in valid for d in datasets):
            raise ConfigError(f"datasets: expected a non-empty list of datasets ({', '.join(valid)}), got "
                              f"{datasets!r} ({path})")
    if families is not None:
        if not isinstance(families, dict):
            raise ConfigError(f"families: expected a mapping family -> recipe layer, got {families!r} ({path})")
        for family, fam_layer in families.items():
            if family not in MODEL_FAMILIES:
                raise ConfigError(f"unknown key families.{family} ({path}); model families: "
                                  f"{', '.join(MODEL_FAMILIES)}")
            if fam_layer is None:
                families[family] = {}
            elif not isinstance(fam_layer, dict):
                raise ConfigError(f"families.{family}: expected a mapping (a recipe layer), got {fam_layer!r} ({path})")
    return _Profile(name=path.stem, path=path, shared=shared, datasets=datasets, families=families)


def _smoke_hint(task_name: Any, profile: str) -> str:
    """``"; the smoke profiles are ...; params.yaml tasks.<task>.profile names the one of task X"``: where a task's
    run defaults live (``params.yaml`` alone, issue 25)."""
    others = [p for p in list_profiles() if p != profile]
    return (f"; the other profiles are {', '.join(others)} (params.yaml tasks.{task_name}.profile names the smoke "
            f"profile of task {task_name})") if others and task_name else ""


def _section(tree: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    """``tree[key]`` when it is a mapping, else ``{}`` (malformed values are reported later by :func:`_build`)."""
    value = tree.get(key)
    return value if isinstance(value, Mapping) else {}


def _family_of(model_name: Any, source: str) -> str | None:
    """Model family of ``model_name`` (``None`` when unset: :func:`_build` reports the missing key)."""
    from hrnet_core.models.zoo import list_models, model_family

    if model_name is None:
        return None
    try:
        return model_family(str(model_name))
    except KeyError:
        raise ConfigError(f"model.name: unknown model {model_name!r} ({source}); known: "
                          f"{', '.join(list_models())}") from None


def _deep_merge(base: dict[str, Any], update: Mapping[str, Any], source: str) -> None:
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _deep_merge(base[key], value, source)
        else:
            base[key] = copy.deepcopy(value)


def _check_keys(cls: type, data: Mapping[str, Any], prefix: str, source: str,
                types: Mapping[str, type] | None = None) -> None:
    """Raise :class:`ConfigError` for the first key of ``data`` that is not a field of the dataclass tree.

    ``types`` maps dotted section keys (``"augment"``, ``"train.loss"``) to the dataclass that replaces the declared
    field type there (the task's sections); sections typed ``Any`` without an entry are not checked.
    """
    schema.check_keys(cls, data, source=source, prefix=prefix, error=ConfigError,
                      resolve_type=_section_resolver(types, prefix))


def _build(cls: type, data: dict[str, Any], prefix: str, source: str, types: Mapping[str, type] | None = None) -> Any:
    """``cls`` built from ``data`` (:func:`hrnet_core.schema.build_dataclass`), with the task's section dataclasses
    ``types`` (as in :func:`_check_keys`); raises :class:`ConfigError` naming the dotted key."""
    return schema.build_dataclass(cls, data, source=source, prefix=prefix, error=ConfigError,
                                  resolve_type=_section_resolver(types, prefix))


def _section_resolver(types: Mapping[str, type] | None, prefix: str) -> schema.ResolveType | None:
    """The ``resolve_type`` hook of :mod:`hrnet_core.schema` for the dotted section keys of ``types``, for a mapping
    checked under the dotted key ``prefix`` (a ``Recipe`` mapping): field ``name`` of ``Recipe`` is the dotted key
    ``{prefix}{name}``, of ``TrainConfig`` ``{prefix}train.{name}``; any other key keeps its annotation."""
    if not types:
        return None

    def resolve(cls: type, name: str, data: Mapping[str, Any]) -> Any:
        parent = _SECTION_PARENTS.get(cls)
        return None if parent is None else types.get(f"{prefix}{parent}{name}")

    return resolve


# ----------------------------------------------------------------------------------------------------------------
# task sections

# recipe sections whose dataclass the task decides (hrnet_core.tasks.RecipeSections), by dotted key
_TASK_SECTIONS = {"data": "data", "augment": "augment", "test": "test", "train.loss": "loss"}
# dotted key (relative to a recipe mapping) of the dataclasses holding those sections
_SECTION_PARENTS: dict[type, str] = {Recipe: "", TrainConfig: "train."}


def _task(name: Any, key: str):
    """The :class:`~hrnet_core.tasks.Task` called ``name``; :class:`ConfigError` naming ``key`` and the valid tasks.

    Read through the low-floor :mod:`hrnet_core.task_registry`: this package never imports :mod:`hrnet_core.tasks`
    (whose modules import the recipe schema from here; tests/test_recipe_floor.py)."""
    from hrnet_core.task_registry import load_task

    if not isinstance(name, str):
        raise ConfigError(f"{key}: expected a task name, got {name!r}")
    try:
        return load_task(name)
    except LookupError as exc:
        raise ConfigError(f"{key}: {exc}") from None


def section_types(task_name: Any, source: str) -> dict[str, type]:
    """``{dotted section key: dataclass}`` of the task-defined recipe sections of ``task_name``.

    Raises:
        ConfigError: missing or unknown task (lists the valid ones).
    """
    if task_name is None:
        raise ConfigError(f"missing key task ({source})")
    sections = _task(task_name, f"task ({source})").sections
    return {key: getattr(sections, attr) for key, attr in _TASK_SECTIONS.items()}


def _with_sections(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` with empty mappings for absent task sections, so that they get the task's defaults."""
    data.setdefault("augment", {})
    data.setdefault("test", {})
    train = data.get("train")
    if isinstance(train, dict):
        train.setdefault("loss", {})
    return data
