#!/usr/bin/env bash
# Issue 24 acceptance on a real two-node Ray cluster on this machine (two `ray start` nodes with their own temp dirs,
# token auth, the Jobs API on the head, an `mlflow server`): about ten minutes on two cores, so not in the default CI
# run. Usage: tests/cluster/run.sh [pytest args]   (from anywhere; output: each step's figures with -s)
set -euo pipefail
cd "$(dirname "$0")/../.."
export HRNET_CLUSTER_TESTS=1 OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
exec .venv/bin/python -m pytest -q -x -s -p no:cacheprovider tests/cluster/test_two_nodes.py "$@"
