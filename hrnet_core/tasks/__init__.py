"""The tasks of the spine: one module per task, named in one literal dict (no registry framework).

``TASK_NAMES`` is the project's one task vocabulary: recipe ``task:`` values, paper-table ``task`` columns and the
DVC ``tasks`` parameter all use these names. :data:`TASKS` maps the names of the tasks that have landed to their
:class:`~hrnet_core.tasks.base.Task`; the other names are reserved for the tasks still to come.

A task outside this package (a plug-in, or the toy task of the tests) is named ``"package.module:ATTRIBUTE"`` in a
recipe's ``task:``; :func:`get_task` imports it.
"""

from __future__ import annotations

import importlib

from .base import DatasetReader, MetricSpec, PreparedRows, RecipeSections, SourceFiles, SplitPrep, SyntheticData, Task

__all__ = ["TASK_NAMES", "get_task", "landed_tasks", "tasks_for_dataset", "Task", "DatasetReader", "SourceFiles",
           "PreparedRows", "RecipeSections", "MetricSpec", "SyntheticData", "SplitPrep", "UnknownTaskError"]

#: every task of the papers (the vocabulary); ``landed_tasks()`` are the ones the pipeline can run today
TASK_NAMES: tuple[str, ...] = (
    "pose_topdown", "pose_bottomup", "pose_tracking", "segmentation", "face_alignment", "detection",
    "instance_segmentation", "classification",
)

# task name -> module of hrnet_core.tasks defining TASK (imported on first use)
_MODULES: dict[str, str] = {
    "pose_topdown": "pose_topdown",
    "classification": "classification",
    "face_alignment": "face_alignment",
    "pose_bottomup": "pose_bottomup",
    "detection": "detection",
    "pose_tracking": "pose_tracking",
    "segmentation": "segmentation",
}


class UnknownTaskError(KeyError):
    """A task or dataset name that no landed task knows; the message lists the valid choices."""

    def __str__(self) -> str:  # KeyError quotes its message otherwise
        return str(self.args[0]) if self.args else ""


def landed_tasks() -> list[str]:
    """Names of the tasks the pipeline runs today (in :data:`TASK_NAMES` order)."""
    return [n for n in TASK_NAMES if n in _MODULES]


def get_task(name: str) -> Task:
    """The :class:`Task` called ``name`` (a landed task, or ``"module:ATTRIBUTE"`` of a plug-in task).

    Raises:
        UnknownTaskError: unknown name (lists the landed tasks), a reserved task that has not landed, or a plug-in
            path that does not import to a :class:`Task`.
    """
    if ":" in name:
        module, _, attr = name.partition(":")
        try:
            obj = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise UnknownTaskError(f"task {name!r} cannot be imported ({exc})") from None
        if not isinstance(obj, Task):
            raise UnknownTaskError(f"task {name!r} is a {type(obj).__name__}, not a hrnet_core.tasks.Task")
        return obj
    if name not in _MODULES:
        hint = " (planned, not landed yet)" if name in TASK_NAMES else ""
        raise UnknownTaskError(f"unknown task {name!r}{hint}; valid tasks: {', '.join(landed_tasks())}")
    return importlib.import_module(f".{_MODULES[name]}", __name__).TASK


def tasks_for_dataset(dataset: str) -> list[Task]:
    """The landed tasks that have a reader called ``dataset``.

    Raises:
        UnknownTaskError: no task reads it (lists every dataset of every landed task).
    """
    found = [t for t in (get_task(n) for n in landed_tasks()) if dataset in t.datasets]
    if not found:
        valid = sorted({d for n in landed_tasks() for d in get_task(n).datasets})
        raise UnknownTaskError(f"unknown dataset {dataset!r}; valid datasets: {', '.join(valid)}")
    return found
