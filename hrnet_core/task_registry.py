"""The one literal dict of landed tasks, on a low floor: below both :mod:`hrnet_core.recipes` and
:mod:`hrnet_core.tasks` (issue 25, point 5: no import circle).

The recipe loader needs a task's recipe section types (``Task.sections``) and dataset names (``Task.datasets``);
the task modules need the recipe schema (``hrnet_core.recipes.config``). Both import this module, which imports
only :mod:`hrnet_core.vocabulary`; a task module is loaded by its dotted name when first asked for, as a plug-in
task (``"package.module:ATTRIBUTE"``) is.

Adding a task: one module defining ``TASK`` plus one line in :data:`TASK_MODULES` (docs/TASKS.md).
"""

from __future__ import annotations

import importlib
from typing import Any

from hrnet_core.vocabulary import TASK_NAMES

__all__ = ["TASK_MODULES", "landed_tasks", "load_task"]

#: task name -> ``"module:ATTRIBUTE"`` of its :class:`hrnet_core.tasks.base.Task` (imported on first use)
TASK_MODULES: dict[str, str] = {
    "pose_topdown": "hrnet_core.tasks.pose_topdown:TASK",
    "classification": "hrnet_core.tasks.classification:TASK",
    "face_alignment": "hrnet_core.tasks.face_alignment:TASK",
    "pose_bottomup": "hrnet_core.tasks.pose_bottomup:TASK",
    "detection": "hrnet_core.tasks.detection:TASK",
    "pose_tracking": "hrnet_core.tasks.pose_tracking:TASK",
    "segmentation": "hrnet_core.tasks.segmentation:TASK",
}


def landed_tasks() -> list[str]:
    """Names of the tasks the pipeline runs today, in :data:`hrnet_core.vocabulary.TASK_NAMES` order."""
    return [n for n in TASK_NAMES if n in TASK_MODULES]


def _is_task(obj: Any) -> bool:
    """Whether ``obj`` is a ``hrnet_core.tasks.base.Task`` (or subclass), told by its class path so that this module
    does not import the tasks package."""
    return any(c.__module__ == "hrnet_core.tasks.base" and c.__qualname__ == "Task" for c in type(obj).__mro__)


def load_task(name: str) -> Any:
    """The ``Task`` called ``name``: a landed task, or ``"module:ATTRIBUTE"`` of a plug-in task.

    Raises:
        LookupError: unknown name (the message lists the landed tasks), a reserved name that has not landed, or a
            plug-in path that does not import to a ``Task``. :func:`hrnet_core.tasks.get_task` turns it into
            ``UnknownTaskError``, the recipe loader into ``ConfigError`` naming the key.
    """
    if ":" not in name and name not in TASK_MODULES:
        hint = " (planned, not landed yet)" if name in TASK_NAMES else ""
        raise LookupError(f"unknown task {name!r}{hint}; valid tasks: {', '.join(landed_tasks())}")
    if name in TASK_MODULES:  # a landed task: an import error is a broken install, raised as it is
        module, _, attr = TASK_MODULES[name].partition(":")
        return getattr(importlib.import_module(module), attr)
    module, _, attr = name.partition(":")
    try:
        obj = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise LookupError(f"task {name!r} cannot be imported ({exc})") from None
    if not _is_task(obj):
        raise LookupError(f"task {name!r} is a {type(obj).__name__}, not a hrnet_core.tasks.Task")
    return obj
