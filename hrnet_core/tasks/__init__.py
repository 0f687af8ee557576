"""The tasks of the spine: one module per task, named in one literal dict (no registry framework).

``TASK_NAMES`` (:mod:`hrnet_core.vocabulary`) is the project's one task vocabulary: recipe ``task:`` values,
paper-table ``task`` columns and the DVC ``tasks`` parameter all use these names.
:data:`hrnet_core.task_registry.TASK_MODULES` maps the names of the tasks that have landed to the module defining
their :class:`~hrnet_core.tasks.base.Task`; the other names are reserved for the tasks still to come. Both live
below :mod:`hrnet_core.recipes`, which reads a task's recipe sections through the registry (no import circle).

A task outside this package (a plug-in, or the toy task of the tests) is named ``"package.module:ATTRIBUTE"`` in a
recipe's ``task:``; :func:`get_task` imports it.
"""

from __future__ import annotations

from hrnet_core.errors import BadInputError
from hrnet_core.task_registry import landed_tasks, load_task
from hrnet_core.vocabulary import TASK_NAMES

from .base import DatasetReader, MetricSpec, PreparedRows, RecipeSections, SourceFiles, SplitPrep, SyntheticData, Task

__all__ = ["TASK_NAMES", "get_task", "landed_tasks", "tasks_for_dataset", "Task", "DatasetReader", "SourceFiles",
           "PreparedRows", "RecipeSections", "MetricSpec", "SyntheticData", "SplitPrep", "UnknownTaskError"]

# the task vocabulary and the one dict of landed tasks live below hrnet_core.recipes (no import circle):
# hrnet_core.vocabulary.TASK_NAMES, hrnet_core.task_registry.TASK_MODULES


class UnknownTaskError(BadInputError, KeyError):
    """A task or dataset name that no landed task knows; the message lists the valid choices."""

    def __str__(self) -> str:  # KeyError quotes its message otherwise
        return str(self.args[0]) if self.args else ""


def get_task(name: str) -> Task:
    """The :class:`Task` called ``name`` (a landed task, or ``"module:ATTRIBUTE"`` of a plug-in task).

    Raises:
        UnknownTaskError: unknown name (lists the landed tasks), a reserved task that has not landed, or a plug-in
            path that does not import to a :class:`Task`.
    """
    try:
        return load_task(name)
    except LookupError as exc:
        raise UnknownTaskError(str(exc)) from None


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
