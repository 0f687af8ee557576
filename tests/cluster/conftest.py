"""The real-cluster tests run only with ``HRNET_CLUSTER_TESTS=1`` (``tests/cluster/run.sh``): they start two Ray nodes
and an MLflow server on this machine and take about ten minutes on two cores, more than the CI budget leaves."""

import os

import pytest


def pytest_configure(config):
    config.addinivalue_line("markers", "cluster: starts a two-node Ray cluster and an MLflow server "
                                       "(only with HRNET_CLUSTER_TESTS=1)")


def pytest_collection_modifyitems(config, items):
    if os.environ.get("HRNET_CLUSTER_TESTS") == "1":
        return
    skip = pytest.mark.skip(reason="real two-node cluster test: set HRNET_CLUSTER_TESTS=1 (tests/cluster/run.sh)")
    for item in items:
        if item.get_closest_marker("cluster") is not None:
            item.add_marker(skip)
