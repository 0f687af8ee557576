"""``hrnet predict`` from the pipelines side: :func:`load_predictor` finds SOURCE's weights the way training names
them (:func:`pipelines.runs.resolve_weights`: a weights file, a Ray checkpoint / run folder, a run name under
``storage_path`` or an MLflow run id) and hands them to :func:`hrnet_core.predict.load_predictor`; everything else
(items, the task's test procedure, drawings and results files per task) is :mod:`hrnet_core.predict`, re-exported
here for the CLI and :mod:`pipelines.batch_predict`.
"""

from __future__ import annotations

from typing import Any

from hrnet_core.predict import (  # noqa: F401 - re-exported for the CLI and batch prediction
    IMAGE_SUFFIXES,
    VIDEO_SUFFIXES,
    PredictOptions,
    Predictor,
    _image_size,
    _staged,
    collect_inputs,
    image_ids,
    predict_files,
    run_predict,
    vocabulary,
)

__all__ = ["PredictOptions", "Predictor", "load_predictor", "collect_inputs", "predict_files", "run_predict",
           "vocabulary", "image_ids", "VIDEO_SUFFIXES", "IMAGE_SUFFIXES"]


def load_predictor(source: str | None, *, storage_path: str = "ray_results", mlflow_uri: str | None = None,
                   **kwargs: Any) -> Predictor:
    """:func:`hrnet_core.predict.load_predictor` (same keyword arguments) with run lookup: a SOURCE that is not a
    recipe is resolved by :func:`pipelines.runs.resolve_weights` under ``storage_path`` / ``mlflow_uri``.

    Raises:
        as :func:`hrnet_core.predict.load_predictor`; hrnet_core.weights.CheckpointError: nothing found for SOURCE.
    """
    from hrnet_core import predict as core

    from .runs import resolve_weights

    def resolve(name: str) -> tuple[str, str]:
        found = resolve_weights(name, storage_path=storage_path, mlflow_uri=mlflow_uri)
        return str(found.path), found.how

    return core.load_predictor(source, resolve=resolve, **kwargs)
