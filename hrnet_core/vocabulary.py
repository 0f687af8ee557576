"""The project's task vocabulary, on the lowest floor: this module imports nothing of the project.

``TASK_NAMES`` are the recipe ``task:`` values, the paper-table ``task`` column values and the DVC ``tasks``
parameter keys. :mod:`hrnet_core.task_registry` (which tasks have landed), :mod:`hrnet_core.tasks` and
:mod:`hrnet_core.paper_tables` import them from here, so that none of them has to import another for a name.
"""

from __future__ import annotations

__all__ = ["TASK_NAMES"]

#: every task of the papers, in the order the CLI and the reports list them; the landed ones are
#: :func:`hrnet_core.task_registry.landed_tasks`
TASK_NAMES: tuple[str, ...] = (
    "pose_topdown", "pose_bottomup", "pose_tracking", "segmentation", "face_alignment", "detection",
    "instance_segmentation", "classification",
)
