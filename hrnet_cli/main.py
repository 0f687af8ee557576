"""``hrnet``: the command line of the HRNet reference pipeline.

Commands::

    hrnet tasks list      the tasks, their datasets, recipes and metrics
    hrnet data generate   write a task's synthetic default data (offline)
    hrnet data prepare    turn a dataset in its official layout (dir, URL or 'official') into a prepared split
    hrnet data prepare-task   prepare every split of a task (its generated data, or the splits of a params file)
    hrnet recipes list|show
    hrnet models list|info
    hrnet train           train a recipe with Ray Train (MLflow run, checkpoints, final weights)
    hrnet evaluate        evaluate weights on the recipe's val split with the task's metrics, log to MLflow
    hrnet score           score an existing results file against the ground truth (no images, no network)
    hrnet export-backbone a run's weights as an ImageNet-style backbone file for model.pretrained
    hrnet predict         a network on images, folders or videos, every task (results json + drawings)
    hrnet export onnx     a network as ONNX (checked against PyTorch); `hrnet predict --onnx` runs it
    hrnet report / sweep  paper report, Ray Tune sweeps

Errors about inputs (missing data, bad recipe keys, missing checkpoints) print one line ``hrnet: error: ...`` and
exit with status 2; input files whose content is bad (an image that cannot be decoded, in preparation or in
training) exit with status 1, naming the file.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Sequence

from .output import strict_json
from .output import write_json as _write_json

EXAMPLES = """\
examples:
  hrnet tasks list
  hrnet data generate pose_topdown --out data/raw/synthetic
  hrnet data prepare coco --source data/raw/synthetic --split train2017 --out data/prepared/synthetic
  hrnet train pose_hrnet_w32_256x192_coco --profile smoke --num-workers 2
  hrnet evaluate --checkpoint models/pose.pt
  dvc repro                      # the whole pipeline (see dvc.yaml / params.yaml)
"""


EVALUATE_TASKS = """\
test procedure, outputs (in --out-dir) and metrics of each task (the recipe's `task`; percent unless noted):
  pose_topdown    people from the split's detection file (test.use_gt_boxes: ground-truth boxes), flip test with
                  the shifted flipped heatmap, quarter-offset decoding. COCO: rescoring, OKS-NMS, COCOeval AP, AP50,
                  AP75, APM, APL, AR...; MPII: PCKh (@0.5), PCKh_0.1, PCKh/<joint group>. predictions.json: COCO
                  keypoint results (MPII: joints per person in annotation order)
  pose_bottomup   whole images (short side to the input size), flip test, optional test.scales, associative-
                  embedding grouping. COCO AP, AR...; CrowdPose AP, AR, AP/easy, AP/medium, AP/hard.
                  predictions.json: COCO keypoint results
  pose_tracking   per sequence: detector + flow-propagated boxes, box NMS, top-down pose, OKS association.
                  PoseTrack mAP, AP/<joint>, MOTA, MOTP, precision, recall, order/MOTA (ids by detection order).
                  predictions/<sequence>.json (PoseTrack format, one per sequence) and predictions.json (all)
  segmentation    test.mode slide / whole / resize windows, test.flip, test.scales. mIoU, IoU/<class>, pixel_acc,
                  mean_acc. labels/<image>.png (the dataset's own ids), predictions.json, confusion_matrix.csv
  face_alignment  face crop, heatmap decoding (test.flip optional). NME (percent of the dataset's normaliser, lower
                  is better), FR_0.08, FR_0.1, AUC_0.08, AUC_0.1, NME/<subset>. predictions.json (landmarks per
                  face), ced.csv
  classification  resize + single centre crop. top1, top5. predictions.json (top-k classes and probabilities),
                  confusion.json
  detection       the detector's resize, boxes (and Mask R-CNN masks) in image pixels. COCO box AP, AP50, AP75,
                  APS, APM, APL, AR... (Mask R-CNN: mask_AP...). predictions.json: COCO detection results
every task also writes metrics.json and vis/ drawings; `hrnet score DATASET --results predictions.json ...`
re-scores a predictions file without images or a network.
"""


def _overrides_from(args: argparse.Namespace) -> list[str] | dict:
    overrides: dict = {}
    if getattr(args, "params", None):
        import yaml

        from hrnet_core.recipes import ConfigError, parse_overrides

        p = Path(args.params)
        if not p.is_file():
            raise ConfigError(f"params file {str(p)!r} not found")
        data = yaml.safe_load(p.read_text()) or {}
        section = data
        for part in args.params_key.split("."):
            section = section.get(part) if isinstance(section, dict) else None
        if section is None:
            raise ConfigError(f"params file {str(p)!r} has no {args.params_key!r} section")
        if not isinstance(section, dict):
            raise ConfigError(f"{p}: {args.params_key!r} must be a mapping of recipe overrides")
        overrides = parse_overrides(section)
    if args.set:
        from hrnet_core.recipes.config import _deep_merge, parse_overrides

        _deep_merge(overrides, parse_overrides(args.set), source="--set")
    return overrides


def _add_recipe_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("recipe", nargs=None if required else "?",
                   help="recipe name (see `hrnet recipes list`) or path to a recipe YAML")
    p.add_argument("--profile", help="profile applied on top of the recipe, e.g. 'smoke' (tiny CPU run)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe value, e.g. --set train.epochs=2 --set model.width=18 (repeatable)")
    p.add_argument("--params", metavar="FILE",
                   help="YAML file whose --params-key section holds recipe overrides (DVC's params.yaml)")
    p.add_argument("--params-key", default="recipe_overrides", help="section of --params to read (default: %(default)s)")


def _load(args: argparse.Namespace):
    from hrnet_core.recipes import load_recipe

    return load_recipe(args.recipe, _overrides_from(args), profile=args.profile)


def build_parser() -> argparse.ArgumentParser:
    """The ``hrnet`` argument parser: one sub-command per command group (``_add_<command>_parser``); ``report``,
    ``sweep``, ``predict``, ``score``, ``export-backbone`` and ``export`` come from their own modules."""
    parser = argparse.ArgumentParser(
        prog="hrnet", description="HRNet reference pipeline: data, recipes, models, Ray training and evaluation.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_tasks_parser(sub)
    _add_data_parser(sub)
    _add_recipes_parser(sub)
    _add_models_parser(sub)
    _add_train_parser(sub)
    _add_evaluate_parser(sub)
    # the commands defined in their own modules
    from pipelines.report import add_report_parser
    from sweeps.cli import add_sweep_parser

    from .export import add_export_onnx_parser
    from .export_backbone import add_export_parser
    from .predict import add_predict_parser
    from .score import add_score_parser

    add_predict_parser(sub)
    add_score_parser(sub)
    add_export_parser(sub)
    add_export_onnx_parser(sub)
    add_report_parser(sub)
    add_sweep_parser(sub)
    return parser


def _add_tasks_parser(sub: argparse._SubParsersAction) -> None:
    """``hrnet tasks list``."""
    tk = sub.add_parser("tasks", help="list the tasks of the pipeline",
                        description="Tasks (hrnet_core/tasks): their datasets, recipes, metrics and smoke profile.")
    tsub = tk.add_subparsers(dest="tasks_command", metavar="ACTION", required=True)
    tsub.add_parser("list", help="tasks with their datasets, recipes and metrics")


def _add_data_parser(sub: argparse._SubParsersAction) -> None:
    """``hrnet data generate|prepare|prepare-task``."""
    data = sub.add_parser("data", help="generate or prepare datasets",
                          description="Make the datasets the pipeline reads: `generate` writes a task's synthetic "
                                      "default, `prepare` converts a dataset in its official layout into a prepared "
                                      "split (Parquet manifests with checksums) under --out/<split>.")
    dsub = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    _add_generate_parser(dsub)
    _add_prepare_parser(dsub)
    _add_prepare_task_parser(dsub)


def _add_generate_parser(dsub: argparse._SubParsersAction) -> None:
    """``hrnet data generate``."""
    gen = dsub.add_parser("generate", help="write a task's synthetic default dataset",
                          description="Write the generated default data of TASK (deterministic for a seed) in the "
                                      "official layout of one of the task's datasets.")
    gen.add_argument("task", nargs="?", default="pose_topdown",
                     help="task (see `hrnet tasks list`; default %(default)s)")
    gen.add_argument("--out", required=True, help="output folder")
    gen.add_argument("--num-train", type=int, default=None,
                     help="training images (default: params.yaml tasks.TASK.generate.num_train)")
    gen.add_argument("--num-val", type=int, default=None,
                     help="validation images (default: params.yaml tasks.TASK.generate.num_val)")
    gen.add_argument("--seed", type=int, default=0, help="random seed; same seed, same bytes (default %(default)s)")


def _add_prepare_parser(dsub: argparse._SubParsersAction) -> None:
    """``hrnet data prepare`` (one ``--<input>`` option per reader input of every landed task)."""
    prep = dsub.add_parser("prepare", help="prepare a split of a dataset in its official layout",
                           description="Read a dataset split with its task's reader, decode and hash every image, and "
                                       "write manifest.json, images.parquet, samples.parquet and copies of the "
                                       "annotation files to OUT/SPLIT (nothing is written when anything fails).",
                           formatter_class=argparse.RawDescriptionHelpFormatter,
                           epilog="examples:\n"
                                  "  hrnet data prepare coco --source ../shared/data/coco_mini --split train2017 "
                                  "--out data/prepared/coco_mini\n"
                                  "  hrnet data prepare coco --source ../shared/data/samples/coco --split val2017 "
                                  "--annotations test_coco.json --images . --detections test_coco_det_AP_H_56.json "
                                  "--out data/prepared/coco_mini\n"
                                  "  hrnet data prepare coco --source official --split val2017 --out data/prepared/coco")
    prep.add_argument("dataset", help="dataset (see `hrnet tasks list`)")
    prep.add_argument("--task", default=None, help="task, when several tasks read the dataset")
    prep.add_argument("--source", required=True,
                      help="folder in the official layout (or a local mirror), an archive URL, or 'official'")
    prep.add_argument("--split", required=True, help="split name, e.g. train2017 / val2017 (COCO), train / valid (MPII)")
    prep.add_argument("--out", required=True, help="prepared dataset root; the split is written to OUT/SPLIT")
    for key, text in _reader_inputs().items():
        prep.add_argument(f"--{key}", dest=f"input_{key}", default=None, metavar="PATH",
                          help=f"{text}, relative to the source (default: the official layout)")
    prep.add_argument("--ann-file", dest="input_annotations", default=None, help=argparse.SUPPRESS)
    prep.add_argument("--image-dir", dest="input_images", default=None, help=argparse.SUPPRESS)
    prep.add_argument("--cache-dir", default="data/raw/downloads", help="download cache (default %(default)s)")


def _add_prepare_task_parser(dsub: argparse._SubParsersAction) -> None:
    """``hrnet data prepare-task``."""
    pt = dsub.add_parser("prepare-task", help="prepare every split of a task",
                         description="Prepare the train and val splits of TASK into OUT: from a params file section "
                                     "({train: {dataset, source, split, <inputs>}, val: {...}}, DVC's params.yaml) or, "
                                     "without --params, from the task's generated data in --source.")
    pt.add_argument("task", help="task (see `hrnet tasks list`)")
    pt.add_argument("--out", required=True, help="prepared dataset root")
    pt.add_argument("--source", default=None, help="generated data folder (without --params)")
    pt.add_argument("--params", default=None, metavar="FILE", help="YAML file holding the splits")
    pt.add_argument("--params-key", default=None, help="dotted key of the splits section (default tasks.TASK.data)")
    pt.add_argument("--cache-dir", default="data/raw/downloads", help="download cache (default %(default)s)")


def _add_recipes_parser(sub: argparse._SubParsersAction) -> None:
    """``hrnet recipes list|show``."""
    rec = sub.add_parser("recipes", help="list or show training recipes",
                         description="Recipes are one YAML per paper-table row (hrnet_core/recipes/).")
    rsub = rec.add_subparsers(dest="recipes_command", metavar="ACTION", required=True)
    rsub.add_parser("list", help="list recipe and profile names")
    show = rsub.add_parser("show", help="print a resolved recipe as YAML")
    _add_recipe_args(show)


def _add_models_parser(sub: argparse._SubParsersAction) -> None:
    """``hrnet models list|info``."""
    mod = sub.add_parser("models", help="list zoo models or show their size",
                         description="The model zoo of hrnet_core.models.")
    msub = mod.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    msub.add_parser("list", help="list model names")
    info = msub.add_parser("info", help="parameters and GMACs of a model")
    info.add_argument("name", help="model name (see `hrnet models list`)")
    info.add_argument("--input", default=None, metavar="HxW", help="input size for MACs, e.g. 256x192")
    info.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="model override, e.g. width=18")


def _add_train_parser(sub: argparse._SubParsersAction) -> None:
    """``hrnet train``."""
    tr = sub.add_parser("train", help="train a recipe with Ray Train",
                        description="Train a recipe on its prepared data with a Ray Train TorchTrainer (Ray Data "
                                    "ingest). One MLflow run per job; a checkpoint every epoch under "
                                    "--storage-path/RUN_NAME; re-running with the same run name resumes from the "
                                    "latest checkpoint.",
                        formatter_class=argparse.RawDescriptionHelpFormatter,
                        epilog="examples:\n  hrnet train pose_hrnet_w32_256x192_coco --profile smoke --num-workers 2\n"
                               "  hrnet train pose_hrnet_w32_256x192_coco --num-workers 4 --use-gpu "
                               "--address auto --set data.root=/data/prepared/coco")
    _add_recipe_args(tr)
    tr.add_argument("--num-workers", type=int, default=2, help="training workers (default %(default)s)")
    tr.add_argument("--use-gpu", nargs="?", const=True, default=False, type=_bool, metavar="BOOL",
                    help="one GPU per worker (DDP, SyncBatchNorm, autocast); also --use-gpu=true/false")
    tr.add_argument("--cpus-per-worker", type=float, default=None,
                    help="CPUs reserved per worker (default: leave one CPU of the cluster to data loading)")
    tr.add_argument("--address", default=None, help="Ray cluster address (default: $RAY_ADDRESS or a local instance)")
    tr.add_argument("--placement", choices=["pack", "spread"], default="pack",
                    help="workers on as few nodes as possible (pack, default) or on different nodes (spread)")
    tr.add_argument("--data-task-cpus", type=float, default=None,
                    help="CPUs of one Ray Data decode task (default 1); some node must keep this much free beside "
                         "the workers")
    tr.add_argument("--run-name", default=None,
                    help="Ray/MLflow run name (default: RECIPE-PROFILE-HASH of the recipe, the data fingerprint and the "
                         "backbone); an existing run of the same data resumes, a finished one is reported as "
                         "'already complete'")
    tr.add_argument("--storage-path", default="ray_results", help="Ray Train storage (default %(default)s)")
    tr.add_argument("--mlflow-uri", default=None, help="MLflow tracking URI (default $MLFLOW_TRACKING_URI or "
                                                      "sqlite:///mlflow.db)")
    tr.add_argument("--experiment", default="hrnet", help="MLflow experiment (default %(default)s)")
    tr.add_argument("--weights-out", default=None, help="also write the final weights to this file")
    tr.add_argument("--metrics-out", default=None, help="also write final metrics json here (DVC metrics)")
    tr.add_argument("--history-out", default=None, help="also write per-epoch history CSV here (DVC plots)")


def _add_evaluate_parser(sub: argparse._SubParsersAction) -> None:
    """``hrnet evaluate``."""
    ev = sub.add_parser("evaluate", help="evaluate weights on the val split",
                        description="Batch inference on the recipe's val split with the task's test procedure and its\n"
                                    "metrics (percent, as the papers print them); in --out-dir predictions.json (the\n"
                                    "dataset's results format, which `hrnet score` re-scores), metrics.json and vis/.\n"
                                    "Weights written by `hrnet train` log into their training run (or --run-id); an\n"
                                    "officially released checkpoint (any other state dict) needs its RECIPE and is\n"
                                    "recorded as a new MLflow run tagged source=official-checkpoint. The prepared\n"
                                    "split evaluated on (--data, or data.root / data.val_split) gives data.dataset and,\n"
                                    "for segmentation, model.num_classes from its manifest.",
                        formatter_class=argparse.RawDescriptionHelpFormatter,
                        epilog=EVALUATE_TASKS + "\nexamples:\n  hrnet evaluate --checkpoint models/pose.pt\n"
                               "  hrnet evaluate pose_hrnet_w32_256x192_coco --checkpoint pose_hrnet_w32_256x192.pth "
                               "--set data.root=data/prepared/coco\n"
                               "  hrnet evaluate seg_hrnetv2_w48_512x1024_cityscapes --checkpoint seg.pth "
                               "--data data/prepared/camvid/val\n"
                               "  hrnet evaluate pose_hrnet_w32_256x192_coco --profile smoke --untrained")
    _add_recipe_args(ev, required=False)
    ev.add_argument("--data", default=None, metavar="SPLIT_DIR",
                    help="a prepared split (hrnet data prepare's OUT/SPLIT) to evaluate on: sets data.root and "
                         "data.val_split; data.dataset (and model.num_classes for segmentation) come from its "
                         "manifest")
    ev.add_argument("--checkpoint", default=None,
                    help="weights file written by `hrnet train`, a Ray checkpoint dir, or an official .pth (needs RECIPE)")
    ev.add_argument("--untrained", action="store_true",
                    help="evaluate a freshly initialised model of the recipe instead (baseline), seed train.seed")
    ev.add_argument("--baseline", action="store_true",
                    help="also evaluate a freshly initialised model of the same recipe and report its metrics as "
                         "untrained/<metric> (shows how much training gained)")
    ev.add_argument("--out-dir", default=None,
                    help="predictions, metrics, vis (default outputs/evaluations/<checkpoint name>; the DVC stage "
                         "writes outputs/<task>/evaluation)")
    ev.add_argument("--mlflow-uri", default=None, help="MLflow tracking URI")
    ev.add_argument("--run-id", default=None,
                    help="MLflow run to log into (default: a new run, tagged source=evaluation and "
                         "eval.training_run_id for our weights, source=official-checkpoint for an official file)")
    ev.add_argument("--into-training-run", action="store_true",
                    help="log into the training run stored in our weights file (the DVC evaluate stage)")
    ev.add_argument("--experiment", default="hrnet", help="MLflow experiment of a new run (default %(default)s)")
    ev.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")
    ev.add_argument("--metrics-out", default=None, help="also write the metrics json here (DVC metrics)")
    ev.add_argument("--device", default=None, help="cpu / cuda (default: cuda when available)")


def _bool(value: str | bool) -> bool:
    if isinstance(value, bool):
        return value
    v = value.strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off", ""):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {value!r}")


def _version() -> str:
    try:
        from importlib.metadata import version

        return f"hrnet {version('hrnet-pipeline')}"
    except Exception:  # noqa: BLE001
        return "hrnet (source checkout)"


# -------------------------------------------------------------------------------------------- commands


def _reader_inputs() -> dict[str, str]:
    """``{input key: help}`` over every reader of every landed task (the ``--<key>`` options of ``data prepare``)."""
    from hrnet_core.tasks import get_task, landed_tasks

    out: dict[str, str] = {}
    for name in landed_tasks():
        for reader in get_task(name).datasets.values():
            for key, text in reader.inputs.items():
                out.setdefault(key, text)
    return out


def _task_or_error(name: str):
    from hrnet_core.recipes import ConfigError
    from hrnet_core.tasks import UnknownTaskError, get_task

    try:
        return get_task(name)
    except UnknownTaskError as exc:
        raise ConfigError(str(exc)) from None


def cmd_tasks(args: argparse.Namespace) -> int:
    from hrnet_core.recipes import ConfigError, list_recipes, load_recipe
    from hrnet_core.recipes.params import run_defaults
    from hrnet_core.tasks import TASK_NAMES, get_task, landed_tasks

    recipes: dict[str, list[str]] = {}
    for name in list_recipes():
        recipes.setdefault(load_recipe(name).task, []).append(name)
    for name in landed_tasks():
        t = get_task(name)
        m = t.metrics
        print(f"{t.name}: {t.description}")
        for d in t.datasets.values():
            print(f"  dataset {d.name:10s} {d.description}")
        print(f"  metrics  {', '.join(m.names)} (primary {m.primary}, {'higher' if m.higher_is_better else 'lower'} "
              f"is better; {m.units})")
        print(f"  recipes  {', '.join(recipes.get(name, [])) or '(none)'}")
        try:  # the run defaults live in params.yaml alone
            run = run_defaults(name)
            print(f"  smoke    hrnet train {run.recipe}" + (f" --profile {run.profile}" if run.profile else ""))
        except ConfigError:
            pass
    planned = [n for n in TASK_NAMES if n not in landed_tasks()]
    print(f"planned (not landed): {', '.join(planned)}")
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    if args.data_command == "generate":
        from tqdm import tqdm

        from hrnet_core.recipes.params import run_defaults

        task = _task_or_error(args.task)
        syn = task.synthetic
        if args.num_train is None or args.num_val is None:  # the run defaults live in params.yaml alone
            run = run_defaults(task.name)
        n_train = run.num_train if args.num_train is None else args.num_train
        n_val = run.num_val if args.num_val is None else args.num_val
        with tqdm(total=n_train + n_val, desc=f"generate {task.name}", unit="img") as bar:
            summary = syn.generate(args.out, n_train, n_val, args.seed, progress=bar.update)
        print(json.dumps(summary, indent=2))
        return 0
    from pipelines.prepare import prepare_split

    if args.data_command == "prepare-task":
        for spec in _task_splits(args):
            manifest = prepare_split(spec.pop("dataset"), spec.pop("source"), spec.pop("split"), args.out,
                                     spec, task=args.task, cache_dir=args.cache_dir)
            print(json.dumps({k: manifest[k] for k in ("task", "dataset", "split", "num_images", "num_samples",
                                                       "fingerprint")}))
        return 0
    inputs = {k[len("input_"):]: v for k, v in vars(args).items() if k.startswith("input_") and v is not None}
    manifest = prepare_split(args.dataset, args.source, args.split, args.out, inputs, task=args.task,
                             cache_dir=args.cache_dir)
    print(json.dumps(manifest, indent=2))
    return 0


def _task_splits(args: argparse.Namespace) -> list[dict]:
    """The splits ``data prepare-task`` prepares: ``[{dataset, source, split, <inputs>...}]``, train first."""
    import yaml

    from hrnet_core.recipes import ConfigError

    task = _task_or_error(args.task)
    if args.params is None:
        source = args.source or f"data/raw/{task.name}"
        return [{"dataset": s.dataset, "source": source, "split": s.split, **s.inputs} for s in task.synthetic.splits]
    p = Path(args.params)
    if not p.is_file():
        raise ConfigError(f"params file {str(p)!r} not found")
    key = args.params_key or f"tasks.{args.task}.data"
    section = yaml.safe_load(p.read_text()) or {}
    for part in key.split("."):
        section = section.get(part) if isinstance(section, dict) else None
    if not isinstance(section, dict) or not section:
        raise ConfigError(f"{p}: no splits under {key!r} (expected {{train: {{dataset, source, split, ...}}, val: ...}})")
    out = []
    for name, spec in section.items():
        if not isinstance(spec, dict) or not {"dataset", "source", "split"} <= set(spec):
            raise ConfigError(f"{p}: {key}.{name} needs dataset, source and split")
        out.append({k: str(v) for k, v in spec.items() if v not in (None, "")})
    return out


def cmd_recipes(args: argparse.Namespace) -> int:
    from hrnet_core.recipes import list_extra_recipes, list_profiles, list_recipes

    if args.recipes_command == "list":
        from hrnet_core.recipes import load_recipe

        for name in list_recipes():
            r = load_recipe(name)
            paper = f"{r.paper.id} table {r.paper.table}: {r.paper.row}" if r.paper else ""
            print(f"{name:42s} {paper}")
        for name in list_extra_recipes():
            print(f"{name:42s} (no paper row) {load_recipe(name).description}")
        print("profiles:", ", ".join(list_profiles()))
        return 0
    import yaml

    print(yaml.safe_dump(_load(args).to_dict(), sort_keys=False), end="")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from hrnet_core.models import build_model, list_models, model_complexity

    if args.models_command == "list":
        print("\n".join(list_models()))
        return 0
    from hrnet_core.recipes import parse_overrides

    overrides = parse_overrides(args.set) if args.set else {}
    model = build_model(args.name, **overrides)
    if args.input:
        h, w = (int(v) for v in args.input.lower().split("x"))
        shape = (1, 3, h, w)
    else:
        from hrnet_core.models import default_input_shape

        shape = default_input_shape(args.name)
    c = model_complexity(model, shape)
    print(json.dumps({"model": args.name, "input_shape": list(shape), **c}, indent=2))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from pipelines.train import failure_kind, failure_line, train

    recipe = _load(args)
    try:
        from ray.train import TrainingFailedError
    except ImportError:  # pragma: no cover
        TrainingFailedError = RuntimeError  # noqa: N806
    try:
        result = train(recipe, num_workers=args.num_workers, use_gpu=args.use_gpu, run_name=args.run_name,
                       storage_path=args.storage_path, mlflow_uri=args.mlflow_uri, experiment=args.experiment,
                       cpus_per_worker=args.cpus_per_worker, export_weights=args.weights_out,
                       history_out=args.history_out, address=args.address, placement=args.placement,
                       data_task_cpus=args.data_task_cpus)
    except KeyboardInterrupt:  # Ctrl+C: the MLflow run ended KILLED; the same command resumes
        print("hrnet: interrupted: the run ended KILLED; run the same command again to resume from its last "
              "checkpoint", file=sys.stderr)
        return 130
    except TrainingFailedError as exc:  # Ray has printed the workers' tracebacks; the cause, once, last
        cause = root_cause(exc)
        print(f"hrnet: error: training failed: {failure_kind(cause)}: {failure_line(cause)}", file=sys.stderr)
        return 1
    summary = {"run_id": result.run_id, "run_name": result.run_name, "checkpoint": result.checkpoint_path,
               "weights": result.weights_path, **result.metrics}
    if args.metrics_out:
        _write_json(args.metrics_out, {k: v for k, v in result.metrics.items() if isinstance(v, (int, float))})
    print(strict_json(summary))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from hrnet_core.recipes import ConfigError

    from pipelines.evaluate import evaluate, evaluate_untrained

    if not args.recipe and (args.set or args.profile or args.params):
        raise ConfigError("--set/--profile/--params change a recipe: name the RECIPE too (the weights file's own recipe "
                          "is used as stored)")
    if args.data and not args.recipe:
        raise ConfigError("--data changes the recipe's data: name the RECIPE too")
    recipe = evaluation_recipe(args) if args.recipe else None
    out_dir = args.out_dir or (f"outputs/evaluations/{Path(args.checkpoint).stem}" if args.checkpoint else
                               "outputs/evaluations/untrained")
    if args.untrained:
        if recipe is None:
            raise ConfigError("--untrained needs a RECIPE")
        metrics = evaluate_untrained(recipe, out_dir=out_dir, device=args.device)
    else:
        if not args.checkpoint:
            raise ConfigError("hrnet evaluate needs --checkpoint FILE (or --untrained with a RECIPE)")
        run_id = "" if args.no_mlflow else args.run_id
        t = time.time()
        metrics = evaluate(recipe, args.checkpoint, mlflow_uri=args.mlflow_uri, run_id=run_id, out_dir=out_dir,
                           device=args.device, baseline=args.baseline, experiment=args.experiment,
                           into_training_run=args.into_training_run)
        metrics.setdefault("eval_time_s", time.time() - t)
    if args.metrics_out:
        _write_json(args.metrics_out, metrics)
    print(strict_json(metrics))
    return 0


#: recipe keys that the evaluated prepared split's manifest decides, per task: ``{task: {dotted key: manifest key}}``.
#: The class count only for segmentation: its network's classes are the split's label vocabulary, while a classifier
#: may have more outputs than a split has classes (the official ImageNet index on a subset).
MANIFEST_KEYS: dict[str, dict[str, str]] = {
    "segmentation": {"data.dataset": "dataset", "model.num_classes": "num_classes"}}
_DATASET_KEY = {"data.dataset": "dataset"}


def _get(tree: dict, dotted: str):
    for part in dotted.split("."):
        tree = tree.get(part) if isinstance(tree, dict) else None
    return tree


def _put(tree: dict, dotted: str, value) -> None:
    *head, last = dotted.split(".")
    for part in head:
        tree = tree.setdefault(part, {})
    tree[last] = value


def evaluation_recipe(args: argparse.Namespace):
    """The recipe ``hrnet evaluate RECIPE`` evaluates: the recipe, its profile and overrides, plus what the prepared
    split it evaluates on says about itself (its ``manifest.json``): ``data.dataset`` and, for segmentation,
    ``model.num_classes`` (:data:`MANIFEST_KEYS`); ``--data SPLIT_DIR`` also sets ``data.root`` and
    ``data.val_split``. The split is the one of ``data.root`` / ``data.val_split`` after the overrides; without its
    manifest the recipe is loaded as given (the evaluation then names the missing split).

    Raises:
        ConfigError: an override that contradicts the manifest or ``--data``, ``--data`` without a manifest (each
            names the key or folder).
    """
    import copy
    import json

    from hrnet_core.recipes import ConfigError, load_recipe

    overrides = _overrides_from(args)
    if args.data:
        d = Path(args.data).expanduser().resolve()
        if not (d / "manifest.json").is_file():
            raise ConfigError(f"--data {args.data!r} is not a prepared split (no manifest.json); give the folder "
                              f"`hrnet data prepare` wrote, OUT/SPLIT")
        for key, value in (("data.root", str(d.parent)), ("data.val_split", d.name)):
            given = _get(overrides, key)
            if given is not None and Path(str(given)).expanduser().resolve() != Path(value).resolve() \
                    and str(given) != value:
                raise ConfigError(f"{key}={given} contradicts --data {args.data!r}; give one of them")
            _put(overrides, key, value)
    plain = copy.deepcopy(overrides)
    for key in ("data.dataset", "model.num_classes"):
        *head, last = key.split(".")
        section = _get(plain, ".".join(head))
        if isinstance(section, dict):
            section.pop(last, None)
    try:
        base = load_recipe(args.recipe, plain, profile=args.profile)
    except ConfigError:
        return load_recipe(args.recipe, overrides, profile=args.profile)
    split_dir = Path(base.data.root).expanduser().resolve() / base.data.val_split
    if not (split_dir / "manifest.json").is_file():
        return load_recipe(args.recipe, overrides, profile=args.profile)
    try:
        manifest = json.loads((split_dir / "manifest.json").read_text())
    except json.JSONDecodeError:
        manifest = {}
    if not isinstance(manifest, dict) or manifest.get("task") != base.task:  # another task's split: as given
        return load_recipe(args.recipe, overrides, profile=args.profile)
    for key, mkey in MANIFEST_KEYS.get(base.task, _DATASET_KEY).items():
        if manifest.get(mkey) is None:
            continue
        given = _get(overrides, key)
        if given is not None and given != manifest[mkey]:
            raise ConfigError(f"{key}={given} but the prepared split {str(split_dir)!r} holds {manifest[mkey]!r} "
                              f"(its manifest.json); drop the override")
        _put(overrides, key, manifest[mkey])
    return load_recipe(args.recipe, overrides, profile=args.profile)


def root_cause(exc: BaseException) -> BaseException:
    """The exception to show for a failed training (:func:`hrnet_core.errors.root_cause`)."""
    from hrnet_core.errors import root_cause as cause

    return cause(exc)


def cmd_report(args: argparse.Namespace) -> int:
    from pipelines.report import cmd_report as run_report

    return run_report(args)


def cmd_sweep(args: argparse.Namespace) -> int:
    return args.func(args)


def cmd_export_backbone(args: argparse.Namespace) -> int:
    from .export_backbone import cmd_export_backbone as run_export

    return run_export(args)


def cmd_predict(args: argparse.Namespace) -> int:
    from .predict import cmd_predict as run_predict

    return run_predict(args)


def cmd_export(args: argparse.Namespace) -> int:
    from .export import cmd_export as run_export

    return run_export(args)


def cmd_score(args: argparse.Namespace) -> int:
    from .score import cmd_score as run_score

    return run_score(args)


COMMANDS = {"tasks": cmd_tasks, "data": cmd_data, "recipes": cmd_recipes, "models": cmd_models, "train": cmd_train,
            "evaluate": cmd_evaluate, "score": cmd_score, "report": cmd_report, "sweep": cmd_sweep,
            "export-backbone": cmd_export_backbone, "predict": cmd_predict, "export": cmd_export}


def _error_line(exc: BaseException, command: str) -> str:
    """``hrnet: error: <message>`` for bad input: the first line of the message (``hrnet sweep`` keeps every line:
    a sweep file lists each problem on its own), a missing file by name."""
    msg = str(exc) if not isinstance(exc, FileNotFoundError) or not exc.filename else f"file not found: {exc.filename}"
    if command != "sweep" or getattr(exc, "exit_status", 2) != 2:
        msg = msg.splitlines()[0] if msg else type(exc).__name__
    return f"hrnet: error: {msg}"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``hrnet`` console script; returns the exit status.

    Bad input (:class:`hrnet_core.errors.BadInputError`, every layer's: config, data, checkpoint, cluster, sweep
    file; and ``FileNotFoundError``) is one line on stderr and exit status 2 (1 for a
    :class:`~hrnet_core.data.prepared.CorruptDataError`: the data is at fault, not the command).
    """
    from hrnet_core.errors import BadInputError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (BadInputError, FileNotFoundError) as exc:
        print(_error_line(exc, args.command), file=sys.stderr)
        return int(getattr(exc, "exit_status", 2))
    except (KeyError, ValueError) as exc:  # unknown model name / override from the zoo
        if args.command == "models":
            print(f"hrnet: error: {exc.args[0] if exc.args else exc}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
