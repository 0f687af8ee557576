"""``hrnet predict ... --address ADDR``: the predictor of :mod:`pipelines.predict` mapped over a Ray Dataset of the input
files, for folders too large for one machine (issue 26).

The files become a Ray Dataset (one row per file: ``index``, ``path``); ``map_batches`` runs a pool of predictor actors
(:class:`PredictActor`: each loads the network once, one GPU each when the cluster has GPUs) on batches of
``files_per_batch`` files, and each batch writes its own results shard ``<out>/shards/<first index>/`` (the task's
``predictions.json`` and ``vis/`` of those files, exactly what :func:`pipelines.predict.predict_files` writes for
them). ``<out>/shards.json`` lists the shards. The output folder must be reachable by every node (a shared file system)
when the cluster has several.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from pipelines.predict import PredictOptions, _image_size, _staged, collect_inputs, load_predictor, predict_files

__all__ = ["PredictActor", "batch_predict"]


class PredictActor:
    """A Ray Data actor: ``__call__({"index", "path"} batch) -> {"shard", "images", "count"}``; the network is loaded
    once in ``__init__`` (:func:`pipelines.predict.load_predictor` with ``load``)."""

    def __init__(self, source: str | None, load: Mapping[str, Any], opts: Mapping[str, Any], out: str) -> None:
        import torch

        self.opts = PredictOptions(**opts)
        if self.opts.device.startswith("cuda") and not torch.cuda.is_available():
            self.opts = PredictOptions(**{**opts, "device": "cpu"})
        self.predictor = load_predictor(source, **load)
        self.out = Path(out)

    def __call__(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        files = [Path(str(p)) for p in batch["path"]]
        shard = f"{int(batch['index'][0]):08d}"
        summary = predict_files(self.predictor, files, self.out / "shards" / shard, self.opts, name=shard)
        count = int(summary.get("people", summary.get("faces", summary.get("objects", len(files)))))
        return {"shard": np.asarray([shard]), "images": np.asarray([len(files)]), "count": np.asarray([count])}


def batch_predict(source: str | None, given: str | Path, out: str | Path, opts: PredictOptions,
                  load: Mapping[str, Any], *, address: str, num_actors: int = 2,
                  files_per_batch: int = 16) -> dict[str, Any]:
    """Predict a folder of images on a Ray cluster (module docstring).

    Args:
        source, load: what :func:`pipelines.predict.load_predictor` gets (in every actor).
        given: an image or a folder of images (a video is one sequence: predict it without ``--address``).
        address: ``auto``, ``local`` (a local instance) or ``host:port``.
        num_actors: predictor actors; one GPU each when the cluster has GPUs.

    Returns:
        ``{"task", "images", "shards", "out", ...}``.

    Raises:
        DataError: a video, a missing input or an undecodable image header (before Ray starts work).
    """
    import ray

    from hrnet_core.data.prepared import DataError

    kind, files = collect_inputs(given)
    if kind == "video":
        raise DataError(f"{str(given)!r} is a video: one sequence, predicted without --address")
    for f in files:
        _image_size(f)
    task = load_predictor(source, **load).task  # bad weights fail here, before Ray
    if not ray.is_initialized():
        ray.init(address=None if address == "local" else address, ignore_reinit_error=True,
                 log_to_driver=False)
    gpus = int(ray.cluster_resources().get("GPU", 0))
    run_opts = {**asdict(opts), "progress": False, "device": "cuda" if gpus else "cpu"}
    with _staged(Path(out)) as work:
        ds = ray.data.from_items([{"index": i, "path": str(f)} for i, f in enumerate(files)])
        res = ds.map_batches(PredictActor, fn_constructor_kwargs={"source": source, "load": dict(load),
                                                                  "opts": run_opts, "out": str(work)},
                             batch_size=max(int(files_per_batch), 1), concurrency=max(int(num_actors), 1),
                             num_gpus=1 if gpus else 0, batch_format="numpy").take_all()
        shards = sorted((str(r["shard"]), int(r["images"]), int(r["count"])) for r in res)
        (work / "shards.json").write_text(json.dumps(
            {"task": task, "shards": [{"shard": f"shards/{s}", "images": n, "count": c} for s, n, c in shards]},
            indent=1))
    return {"task": task, "images": len(files), "shards": len(shards), "out": str(Path(out).resolve()),
            "source": str(given), "actors": int(num_actors), "gpus": gpus}
