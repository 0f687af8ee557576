"""Issue 24, points 1-3 and 6-8: the pure logic of running on a multi-node Ray cluster, without a cluster.

Each test drives our function with a fixed input on which the code before this change gave another answer (the old
figures are in the docstrings, measured on ``git archive`` of the parent commit). The per-node rule is checked
against a brute force over every placement of the bundles on the nodes, written here on its own.
The real two-node cluster is exercised by ``tests/cluster/test_two_nodes.py`` (``HRNET_CLUSTER_TESTS=1``).
"""

from __future__ import annotations

import itertools
import os
import signal
import socket
import time
from pathlib import Path

import pytest

from pipelines.cluster import (
    ClusterError,
    check_fit,
    decode_slots,
    default_cpus_per_worker,
    node_tags,
    nodes_line,
    probe_address,
)
from sweeps.spec import SweepConfigError, build_plan, check_cluster_fit, load_sweep

ONE_PLUS_ONE = [{"CPU": 1.0}, {"CPU": 1.0}]


# ------------------------------------------------------------------------------------------ the rule, by brute force


def may_starve_decode(nodes, bundles, data_task_cpus):
    """True when SOME placement of ``bundles`` (each whole on one node, within the nodes' resources) leaves every node
    with less than ``data_task_cpus`` CPUs free: then the Ray Data decode tasks may wait forever."""
    for where in itertools.product(range(len(nodes)), repeat=len(bundles)):
        used = [dict() for _ in nodes]
        for b, n in zip(bundles, where):
            for r, a in b.items():
                used[n][r] = used[n].get(r, 0.0) + a
        if any(used[i].get(r, 0.0) > nodes[i].get(r, 0.0) + 1e-9 for i in range(len(nodes)) for r in used[i]):
            continue  # Ray would not place it so
        if all(nodes[i].get("CPU", 0.0) - used[i].get("CPU", 0.0) < data_task_cpus - 1e-9 for i in range(len(nodes))):
            return True
    return False


def _smoke_plan(**resources):
    import dataclasses

    plan = build_plan(load_sweep("pose_width_coco"), smoke=True)
    return dataclasses.replace(plan, resources=dataclasses.replace(plan.resources, **resources))


def _trial_bundles(plan, k):
    res = plan.resources
    return ([res.trial_actor()] + [res.per_worker()] * res.num_workers) * k


def test_sweep_on_one_plus_one_cpus_is_refused_in_one_line_naming_the_cpu():
    """Point 1. The smoke sweep (1 worker x 0.5 CPU + a 0.01-CPU trial actor) on two 1-CPU nodes: the actor on one node
    and the worker on the other leave 0.99 and 0.5 CPU, no room for a 1-CPU decode task. Old: ``check_cluster_fit``
    said it fits (1 trial at a time; 2 without the smoke file's cap) and the job waited with ``Pending Demands:
    {'CPU': 1.0}``. New: SweepConfigError, one line, naming CPU and resources.data_task_cpus."""
    plan = _smoke_plan()
    assert may_starve_decode(ONE_PLUS_ONE, _trial_bundles(plan, 1), 1.0)  # the rule, by brute force
    with pytest.raises(SweepConfigError) as e:
        check_cluster_fit(plan, {"CPU": 2.0}, nodes=ONE_PLUS_ONE)
    msg = str(e.value)
    assert "\n" not in msg and "1 CPU free for the Ray Data decode tasks" in msg and "data_task_cpus" in msg


@pytest.mark.parametrize("data_task_cpus, cap, expected", [(0.5, None, 1), (0.25, None, 2), (0.5, 1, 1)])
def test_sweep_concurrency_follows_the_per_node_rule(data_task_cpus, cap, expected):
    """Point 1. With smaller decode tasks the same cluster runs the sweep: concurrency is the largest number of trials
    that no placement can starve (brute force). Old (no per-node rule, no cap): 2 trials for every setting."""
    plan = _smoke_plan(data_task_cpus=data_task_cpus, max_concurrent_trials=cap)
    got = check_cluster_fit(plan, {"CPU": 2.0}, nodes=ONE_PLUS_ONE)
    most = cap or len(plan.trials)
    truth = max(k for k in range(1, most + 1) if not may_starve_decode(ONE_PLUS_ONE, _trial_bundles(plan, k),
                                                                        data_task_cpus))
    assert got == truth == expected


def test_default_cpus_per_worker_counts_per_node():
    """Point 1. ``hrnet train`` with 2 CPU workers on two 1-CPU nodes. Old default ("leave one CPU of the cluster"):
    0.5 CPU each, and a worker on each node leaves 0.5 + 0.5 CPU: the 1-CPU decode tasks never start. New: refused
    (ClusterError naming the CPUs); with 0.5-CPU decode tasks 0.5 each, which no placement starves."""
    assert may_starve_decode(ONE_PLUS_ONE, [{"CPU": 0.5}] * 2, 1.0)
    with pytest.raises(ClusterError, match=r"^2 CPU training workers need at least 0\.25 CPU each .*1 CPU free"):
        default_cpus_per_worker(2, False, ONE_PLUS_ONE)
    cpus = default_cpus_per_worker(2, False, ONE_PLUS_ONE, data_task_cpus=0.5)
    assert cpus == 0.5 and not may_starve_decode(ONE_PLUS_ONE, [{"CPU": cpus}] * 2, 0.5)
    # one node of 2 CPUs: unchanged (0.5 each, one CPU left for the decode tasks)
    assert default_cpus_per_worker(2, False, [{"CPU": 2.0}]) == 0.5


def test_train_fit_check_refuses_cpus_per_worker_1_on_one_plus_one():
    """Point 1. ``hrnet train --cpus-per-worker 1`` with 2 workers on 1+1 CPUs hung (old: no check). New: one line
    naming the CPU; a bundle larger than every node names the node size."""
    with pytest.raises(ClusterError) as e:
        check_fit(ONE_PLUS_ONE, [{"CPU": 1.0}] * 2, data_task_cpus=1.0, what="2 training workers")
    assert "\n" not in str(e.value) and "take 2 CPU" in str(e.value) and "--data-task-cpus" in str(e.value)
    with pytest.raises(ClusterError, match="needs 2 CPU on a single node.*largest node has 1 CPU"):
        check_fit(ONE_PLUS_ONE, [{"CPU": 2.0}], data_task_cpus=0.25)
    with pytest.raises(ClusterError, match="decode task needs 2 CPU on one node but the largest node has 1 CPU"):
        check_fit(ONE_PLUS_ONE, [{"CPU": 0.5}], data_task_cpus=2.0)
    check_fit([{"CPU": 2.0}], [{"CPU": 0.5}] * 2, data_task_cpus=1.0)  # the 2-core machine's default: fits


def test_decode_warm_up_counts_whole_tasks_per_node():
    """Point 1. Free CPUs 0.5 + 0.5 on two nodes. Old warm-up count ``int(ray.available_resources()['CPU'])`` = 1,
    a 1-CPU task that no node can start; new: 0 (and 1 where one node has a whole CPU free)."""
    assert int(0.5 + 0.5) == 1  # the old count
    assert decode_slots([0.5, 0.5], 1.0) == 0
    assert decode_slots([1.0, 0.99], 1.0) == 1
    assert decode_slots([0.5, 0.5], 0.5) == 2
    assert decode_slots([64.0], 1.0) == 8  # capped


# ------------------------------------------------------------------------------------------ signal handlers


def test_sweep_sigterm_handler_is_installed_after_ray_init(monkeypatch):
    """Point 2. ``ray.init`` installs a SIGTERM handler that exits at once. Old order (handler in ``sweeps.cli``, then
    ``ray.init`` in the runner): the handler left after connecting was Ray's, and ``hrnet sweep stop`` killed the
    driver. New: :func:`sweeps.connect.connect_driver` installs ours after connecting."""
    import ray

    from sweeps import connect

    def ray_like_handler(signum, frame):  # what ray.init leaves behind
        raise SystemExit(signum)

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda *a, **k: signal.signal(signal.SIGTERM, ray_like_handler))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("RAY_API_SERVER_ADDRESS", "http://127.0.0.1:1")
    before = signal.getsignal(signal.SIGTERM)
    try:
        connect.sigterm_interrupts_tune()  # the old order: ours first ...
        connect.connect_ray(None)          # ... then ray.init
        assert signal.getsignal(signal.SIGTERM) is ray_like_handler
        connect.connect_driver(None, sigterm_interrupts=True)
        assert signal.getsignal(signal.SIGTERM) is connect._sigterm_to_sigusr1
        got = []
        monkeypatch.setattr(os, "kill", lambda pid, sig: got.append((pid, sig)))
        signal.getsignal(signal.SIGTERM)(signal.SIGTERM, None)
        assert got == [(os.getpid(), signal.SIGUSR1)]  # Tune's own interrupt signal
    finally:
        signal.signal(signal.SIGTERM, before)


def test_train_sigint_handler_is_chained_after_ray_trains():
    """Point 3. Ray Train V2 registers its SIGINT handler inside ``fit`` (abort, then ``sys.exit(0)``), replacing any
    handler installed before, so ``except KeyboardInterrupt`` never ran and the MLflow run stayed RUNNING. Our Trainer
    chains a handler after Ray's: it records the interrupt, then calls Ray's."""
    from pipelines.ray_adapter import trainer_class

    flag = []
    cls = trainer_class(on_sigint=lambda: flag.append(1))
    before = signal.getsignal(signal.SIGINT)
    try:
        cls._register_sigint_handler(object.__new__(cls), controller=None)
        handler = signal.getsignal(signal.SIGINT)
        assert handler.previous.__qualname__.endswith("_register_sigint_handler.<locals>.sigint_handler")
        handler.previous = None  # do not run Ray's abort on this fake controller
    finally:
        signal.signal(signal.SIGINT, before)
    with pytest.raises(KeyboardInterrupt):
        handler(signal.SIGINT, None)
    assert flag == [1]


# ------------------------------------------------------------------------------------------ sweep bookkeeping


def test_iterations_are_counted_across_a_resume():
    """Point 7. A trial resumed from its epoch-2 checkpoint trains epoch 3; Tune's ``training_iteration`` of the rerun
    restarts at 1. Old ``sweep.iterations``: 1; new: 3 (the loop's absolute ``epoch``)."""
    from sweeps.trial_outcomes import trial_iterations

    last = {"training_iteration": 1, "epoch": 3.0, "AP": 1.0}
    assert last["training_iteration"] == 1  # the old value
    assert trial_iterations(last) == 3
    assert trial_iterations({"training_iteration": 2}) == 2
    assert trial_iterations({"epoch": 3.0, "time_total_s": 9.0}, "time_total_s") == 9


def test_submit_uploads_the_checkout_it_runs_from(tmp_path, monkeypatch):
    """Point 7. Old: the job's working_dir was the installed package's folder (``/work/main`` here) whatever checkout
    the user ran ``submit`` from, its env had no RAY_API_SERVER_ADDRESS and the entrypoint no ``--fresh``. New: the
    checkout holding the current directory, its own sweep file, ``RAY_API_SERVER_ADDRESS`` = the dashboard submitted
    to, ``HRNET_SWEEP_SOURCE`` = the file in that checkout."""
    from sweeps import submit as S

    checkout = tmp_path / "mine"
    (checkout / "sweeps").mkdir(parents=True)
    (checkout / "pyproject.toml").write_text("[project]\nname='x'\n")
    (checkout / "sweeps" / "cli.py").write_text("")
    (checkout / "sweeps" / "pose_width_coco.yaml").write_text(
        (S.REPO_ROOT / "sweeps" / "pose_width_coco.yaml").read_text())
    (checkout / "sub").mkdir()
    monkeypatch.chdir(checkout / "sub")
    assert S.REPO_ROOT != checkout  # the old working_dir
    assert S.default_working_dir() == checkout
    local = S.local_sweep_file("pose_width_coco", checkout)
    assert local == checkout / "sweeps" / "pose_width_coco.yaml"
    opts = S.SubmitOptions(smoke=True, fresh=True, placement="spread", data_task_cpus=0.5,
                           address="http://head:8265/", mlflow_uri="http://mlflow:5000")
    env = S.build_runtime_env(opts, source=str(local))
    assert env["working_dir"] == str(checkout)
    assert env["env_vars"]["RAY_API_SERVER_ADDRESS"] == "http://head:8265"
    assert env["env_vars"]["HRNET_SWEEP_SOURCE"] == str(local)
    entry = S.build_entrypoint(S._sweep_arg("pose_width_coco", checkout), opts)
    assert entry == ("python -m sweeps.cli run pose_width_coco --smoke --fresh --placement spread "
                     "--data-task-cpus 0.5 --mlflow-uri http://mlflow:5000 --experiment hrnet")


def test_sweep_report_takes_override_columns_from_the_run_reported(tmp_path):
    """Point 7. A sweep run with ``-o train.optimizer.lr=0.01`` reported with ``-o train.optimizer.lr=0.5``: old
    column ``override.train.optimizer.lr`` = 0.5 (the reporting command's), new 0.01 (the run's plan.json)."""
    from sweeps import mlflow_sweeps as tracking
    from sweeps.report import build_rows

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    ran = build_plan(load_sweep("pose_width_coco"), smoke=True, overrides={"train.optimizer.lr": 0.01})
    pid = tracking.ensure_parent_run(ran, mlflow_uri=uri, experiment="t", sweep_path="/x/pose_width_coco-smoke")
    reporting = build_plan(load_sweep("pose_width_coco"), smoke=True, overrides={"train.optimizer.lr": 0.5})
    rows = build_rows(reporting, mlflow_uri=uri, parent_run_id=pid, complexity={})
    assert [t.overrides["train.optimizer.lr"] for t in reporting.trials] == [0.5, 0.5]  # what the old rows showed
    assert [r["override.train.optimizer.lr"] for r in rows] == [0.01, 0.01]
    assert [r["override.model.width"] for r in rows] == [8, 16]


# ------------------------------------------------------------------------------------------ one-line errors


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_wrong_address_is_one_line_within_seconds():
    """Point 6. ``ray.init(address=<nothing listening>)`` retried for minutes and ended in a 97-line traceback
    (``ConnectionError``; 120 s without an answer here). New: ClusterError, one line, in well under a second."""
    t0 = time.monotonic()
    with pytest.raises(ClusterError) as e:
        probe_address(f"127.0.0.1:{_closed_port()}")
    assert time.monotonic() - t0 < 5 and "\n" not in str(e.value) and "no Ray cluster answers at" in str(e.value)
    with pytest.raises(ClusterError, match="expected HOST:PORT"):
        probe_address("head-without-port")
    probe_address("auto")  # left to Ray


def test_jobs_api_failures_become_one_line():
    """Point 6. The Jobs API's answers (measured against a token-auth head): an unknown job id is ``RuntimeError:
    Request failed with status code 404: Job nope does not exist.`` (a traceback before); a client without token
    ``AuthenticationError``; a wrong address ``ConnectionError``. New: one line each."""
    from sweeps.submit import jobs_error_message

    a = "http://127.0.0.1:8265"
    assert jobs_error_message(RuntimeError("Request failed with status code 404: Job nope does not exist."), a,
                              "nope") == f"no job 'nope' at {a} (hrnet sweep status lists what `ray job list` shows)"
    from ray.exceptions import AuthenticationError

    assert "requires token authentication: set RAY_AUTH_MODE=token" in jobs_error_message(
        AuthenticationError("Authentication required: Unauthorized: Missing authentication token"), a)
    assert jobs_error_message(RuntimeError("Request failed with status code 403: bad token"), a).startswith(
        f"the Ray cluster at {a} rejected this client's auth token")
    assert jobs_error_message(ConnectionError("Failed to connect to Ray at address: x."), a).startswith(
        f"no Ray dashboard answers at {a}")
    assert jobs_error_message(ValueError("other"), a) is None


# ------------------------------------------------------------------------------------------ placement, nodes


def test_placement_flags_and_node_report():
    """Point 8. Old: no ``--placement`` (Ray Train's PACK always) and no node in the run. New: ``--placement
    spread|pack`` on ``hrnet train`` / ``sweep run`` / ``sweep submit``; tags ``ray.worker.<rank>.node`` and
    ``ray.worker_nodes``; the epoch line ends with ``nodes <rank>:<node id>``."""
    from hrnet_cli.main import build_parser
    from pipelines.cluster import PLACEMENTS
    from sweeps.cli import main as sweep_main

    assert build_parser().parse_args(["train", "r", "--placement", "spread"]).placement == "spread"
    assert PLACEMENTS == {"pack": "PACK", "spread": "SPREAD"}
    with pytest.raises(SystemExit):  # argparse: invalid choice
        sweep_main(["run", "pose_width_coco", "--smoke", "--placement", "diagonal"])
    nodes = [{"node_id": "aaaaaaaa1111", "node_ip": "10.0.0.1"}, {"node_id": "bbbbbbbb2222", "node_ip": "10.0.0.2"}]
    assert node_tags(nodes) == {"ray.worker.0.node": "10.0.0.1/aaaaaaaa", "ray.worker.1.node": "10.0.0.2/bbbbbbbb",
                                "ray.worker_nodes": "2"}
    assert nodes_line(nodes) == "nodes 0:aaaaaaaa 1:bbbbbbbb"


def test_sweep_placement_and_data_task_cpus_are_validated(tmp_path):
    """Point 8 / 1. ``resources.placement`` and ``resources.data_task_cpus`` are sweep-file keys (unknown values are
    errors naming the key); defaults leave the plan's fingerprint as before (interrupted sweeps still resume)."""
    from sweeps.resolve import with_resources

    plan = build_plan(load_sweep("pose_width_coco"), smoke=True)
    assert plan.fingerprint() == with_resources(plan, {"placement": "pack"}).fingerprint()
    assert plan.fingerprint() != with_resources(plan, {"placement": "spread"}).fingerprint()
    with pytest.raises(SweepConfigError, match="--placement: expected pack or spread"):
        with_resources(plan, {"placement": "diagonal"})
    src = (Path(__file__).resolve().parents[1] / "sweeps" / "pose_width_coco.yaml").read_text()
    bad = tmp_path / "bad_place.yaml"
    bad.write_text(src.replace("name: pose_width_coco", "name: bad_place").replace(
        "cpus_per_worker: 8}", "cpus_per_worker: 8, placement: diagonal, data_task_cpus: 0}"))
    with pytest.raises(SweepConfigError) as e:
        load_sweep(bad)
    assert "resources.placement: expected pack or spread" in str(e.value)
    assert "resources.data_task_cpus: must be > 0" in str(e.value)


def test_report_links_use_the_tracking_servers_address():
    """Point 5 (failsafe's code, checked here for the cluster setup): ``--mlflow-uri http://host:5055`` linked runs to
    port 5000 (old ``DEFAULT_UI``); now to the server itself."""
    from pipelines.report.cli import DEFAULT_UI, link_base

    assert DEFAULT_UI.endswith(":5000")
    assert link_base("http://host:5055") == "http://host:5055"


def test_cluster_error_is_one_line_in_the_cli(capsys):
    """Point 6 through the command: ``hrnet sweep validate --address <closed port>``: exit 2 and one line."""
    from sweeps.cli import main

    rc = main(["validate", "pose_width_coco", "--smoke", "--address", f"127.0.0.1:{_closed_port()}"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "no Ray cluster answers at" in err


def test_train_dataset_is_made_without_one_cpu_metadata_tasks(monkeypatch):
    """Point 1. ``ray.data.from_arrow`` reads each block's metadata in a 1-CPU remote task (measured on the two-node
    cluster: ``get_table_block_metadata_schema`` PENDING with ``{'CPU': 1.0}`` next to a 0.5-CPU worker and the
    trial actor on the other node, the job stuck). New: ``ray.data.from_blocks`` (metadata in the caller, no task),
    the blocks kept as given."""
    import pyarrow as pa
    import ray.data

    from pipelines.ingest import arrow_blocks_dataset

    tables = [pa.table({"index": [0, 1]}), pa.table({"index": [2]})]
    calls = []
    monkeypatch.setattr(ray.data, "from_arrow", lambda t: pytest.fail("from_arrow launches 1-CPU tasks"))
    monkeypatch.setattr(ray.data, "from_blocks", lambda t: calls.append(t) or "ds")
    assert arrow_blocks_dataset(tables) == "ds" and calls == [tables]


def test_interrupted_trial_left_pending_by_tune_ends_killed(tmp_path):
    """Point 2. After `hrnet sweep stop` mid-trial, Tune's saved state calls the interrupted trial PENDING (measured on
    the two-node cluster). Old ``close_interrupted`` (RUNNING / PAUSED only): its child run stayed RUNNING; new:
    KILLED. A trial that never started (no child) is left alone; a finished one too."""
    from sweeps import mlflow_sweeps as tracking, trial_outcomes

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    plan = build_plan(load_sweep("pose_width_coco"), smoke=True)
    pid = tracking.ensure_parent_run(plan, mlflow_uri=uri, experiment="t", sweep_path="/x/pose_width_coco-smoke")
    running = tracking.create_child(uri, pid, "t00-W18", {"sweep.variant": "W18"})
    info = {k: {"variant": k[4:], "paper": {}, "paper_tags": {}, "complexity": {}} for k in ("t00-W18", "t01-W32")}
    trial_outcomes.close_interrupted(uri, pid, info, {"t00-W18": "PENDING", "t01-W32": "PENDING"})
    run = tracking.find_child(uri, pid, "t00-W18")
    assert run.info.run_id == running and run.info.status == "KILLED" and run.data.tags["sweep.status"] == "PENDING"
    assert tracking.find_child(uri, pid, "t01-W32") is None


def test_spread_sweeps_spread_the_trial_actors_too():
    """Point 8. Old: every trial actor's placement group was Tune's default PACK whatever the sweep asked; with
    ``--placement spread`` it is SPREAD (the workers' ``ScalingConfig`` gets the same strategy in ``train``)."""
    from sweeps.resolve import with_resources
    from sweeps.tuner import trial_placement

    plan = build_plan(load_sweep("pose_width_coco"), smoke=True)
    assert trial_placement(plan).strategy == "PACK"
    spread = trial_placement(with_resources(plan, {"placement": "spread"}))
    assert spread.strategy == "SPREAD" and spread.bundles == [{"CPU": 0.01}]
