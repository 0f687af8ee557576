"""One vocabulary of task and metric names (issue 25, point 5): ``hrnet_core.vocabulary`` holds ``TASK_NAMES`` and
``METRICS``; the tasks, the task registry and the paper tables use those very objects, and every task's judged
metric (``Task.metrics.primary`` and its per-dataset primaries) is a vocabulary metric with the same direction.

Before the move the names lived in ``hrnet_core.tasks`` (TASK_NAMES) and ``hrnet_core.paper_tables`` (METRICS), and
the paper tables imported the tasks package for the names; after: both import ``hrnet_core.vocabulary`` (a pure
move, the objects and their contents are unchanged: 8 task names, 52 metric names).
"""

from __future__ import annotations

import pytest

from hrnet_core import paper_tables, task_registry, tasks, vocabulary


def test_one_object_for_each_name_list():
    assert tasks.TASK_NAMES is vocabulary.TASK_NAMES
    assert paper_tables.METRICS is vocabulary.METRICS and paper_tables.MetricInfo is vocabulary.MetricInfo
    assert paper_tables.metric_info is vocabulary.metric_info
    assert paper_tables.TASKS == (*vocabulary.TASK_NAMES, "architecture")
    assert set(task_registry.landed_tasks()) <= set(vocabulary.TASK_NAMES)
    assert (len(vocabulary.TASK_NAMES), len(vocabulary.METRICS)) == (8, 52)


@pytest.mark.parametrize("name", task_registry.landed_tasks())
def test_task_primary_metrics_are_vocabulary_metrics(name):
    spec = tasks.get_task(name).metrics
    for metric in {spec.primary, *spec.by_dataset.values()}:
        info = vocabulary.metric_info(metric)
        assert info.higher_is_better == spec.higher_is_better, (name, metric)


def test_metric_info_names_the_known_metrics():
    with pytest.raises(KeyError, match="unknown metric 'APX'; known: AP, AP50"):
        vocabulary.metric_info("APX")
