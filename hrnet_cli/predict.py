"""``hrnet predict``: a network on images, folders and videos (:mod:`pipelines.predict`); ``--address`` maps it over a
Ray Dataset of the files (:mod:`pipelines.batch_predict`)."""

from __future__ import annotations

import argparse
import sys

__all__ = ["add_predict_parser", "cmd_predict"]

EPILOG = """\
SOURCE: a recipe (untrained unless --checkpoint), our weights file (models/<task>.pt), a Ray checkpoint or run folder,
a run name under --storage-path or an MLflow run id; with --onnx alone the recipe stored in the ONNX file.
outputs per task (in --out): predictions.json in the dataset's results format (COCO keypoints / detections, PoseTrack,
landmarks, top-5 classes), vis/ drawings; segmentation also labels/*.png in the dataset's ids; videos also vis/*.mp4.
examples:
  hrnet predict models/pose_topdown.pt photo.jpg --out outputs/predict/pose
  hrnet predict models/pose_topdown.pt val2017/ --boxes person_detections.json --out outputs/predict/pose
  hrnet predict models/pose_topdown.pt street/ --detector models/detection.pt --out outputs/predict/pose
  hrnet predict models/pose_tracking.pt clip.mp4 --detector models/detection.pt --out outputs/predict/track
  hrnet predict models/classification.pt images/ --labels synsets.txt --out outputs/predict/cls
  hrnet export onnx models/segmentation.pt --out seg.onnx --dynamic-batch --dynamic-size
  hrnet predict --onnx seg.onnx images/ --out outputs/predict/seg
  hrnet predict models/segmentation.pt /data/huge_folder --address auto --out outputs/predict/seg
"""


def add_predict_parser(sub) -> argparse.ArgumentParser:
    """The ``predict`` sub-command."""
    p = sub.add_parser("predict", help="run a network on images, folders or videos (every task)",
                       description="Predict images, a folder or a video with the task's test procedure (the one "
                                   "`hrnet evaluate` runs) and write the results and drawings to --out.",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG)
    p.add_argument("args", nargs="+", metavar="[SOURCE] INPUT",
                   help="weights / run / recipe, then an image, a folder of images or a video (SOURCE may be left out "
                        "with --onnx)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--onnx", default=None, metavar="FILE",
                   help="run the network on onnxruntime from this `hrnet export onnx` file (detection: its backbone)")
    p.add_argument("--checkpoint", default=None, help="official weights (state dict) for a RECIPE source")
    p.add_argument("--profile", default=None, help="profile of a RECIPE source, e.g. smoke")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="recipe override (repeatable)")
    p.add_argument("--task", default=None, help="refuse weights of another task")
    p.add_argument("--boxes", default=None, metavar="FILE",
                   help="people / faces: COCO detection results or a COCO json with bbox (faces: center + scale)")
    p.add_argument("--detector", default=None, metavar="WEIGHTS",
                   help="top-down pose / tracking: person boxes from this detection network")
    p.add_argument("--det-score-thr", type=float, default=0.5,
                   help="score threshold of --detector person boxes (default %(default)s)")
    p.add_argument("--labels", default=None, metavar="FILE",
                   help="class names: synsets.txt, classes.txt or a COCO json with categories")
    p.add_argument("--data", default=None, metavar="SPLIT_DIR",
                   help="a prepared split whose manifest gives the class names / categories / layout")
    p.add_argument("--device", default=None, help="cpu / cuda (default: cuda when available)")
    p.add_argument("--num-vis", type=int, default=None, help="drawings to write (default: every image)")
    p.add_argument("--fps", type=float, default=None, help="frame rate of written videos (default: the input's)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--address", default=None,
                   help="Ray cluster ('auto' or host:port): map the predictor over a Ray Dataset of the files")
    p.add_argument("--num-actors", type=int, default=2, help="Ray: predictor actors (default %(default)s)")
    p.add_argument("--files-per-batch", type=int, default=16,
                   help="Ray: files per batch, one results shard each (default %(default)s)")
    p.add_argument("--storage-path", default="ray_results", help="Ray Train storage of run names")
    p.add_argument("--mlflow-uri", default=None, help="MLflow tracking URI of run ids")
    return p


def cmd_predict(args: argparse.Namespace) -> int:
    """``hrnet predict``: prints a JSON summary (task, images, counts, out)."""
    import torch

    from hrnet_core.recipes import ConfigError, parse_overrides
    from .output import strict_json
    from pipelines.predict import PredictOptions, load_predictor, run_predict

    if len(args.args) > 2:
        raise ConfigError(f"hrnet predict takes [SOURCE] INPUT, got {len(args.args)} arguments")
    if len(args.args) == 1 and not args.onnx:
        raise ConfigError("hrnet predict needs SOURCE INPUT (weights, run or recipe, then the images); only --onnx "
                          "FILE stands for SOURCE")
    source, given = (None, args.args[0]) if len(args.args) == 1 else args.args
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    opts = PredictOptions(boxes=args.boxes, detector=args.detector, det_score_thr=args.det_score_thr,
                          device=device, progress=not args.no_progress and sys.stderr.isatty(),
                          num_vis=args.num_vis, fps=args.fps)
    load = dict(overrides=parse_overrides(args.set) if args.set else None, profile=args.profile,
                checkpoint=args.checkpoint, onnx=args.onnx, expect_task=args.task, labels=args.labels,
                data=args.data, storage_path=args.storage_path, mlflow_uri=args.mlflow_uri)
    if args.address:
        from pipelines.batch_predict import batch_predict

        summary = batch_predict(source, given, args.out, opts, load, address=args.address,
                                num_actors=args.num_actors, files_per_batch=args.files_per_batch)
    else:
        predictor = load_predictor(source, **load)
        summary = run_predict(predictor, given, args.out, opts)
    print(strict_json(summary))
    return 0
