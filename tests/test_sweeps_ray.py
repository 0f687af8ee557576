"""Sweeps end to end on Ray: Tune + Train V2 trials, resume after an interruption, ASHA, the Jobs API.

Tiny on purpose (2-core CI): the ``smoke`` profile's network on a generated dataset of 16 images, one training
worker with half a CPU per trial, one or two epochs of a single optimizer step. Each trial still starts a Tune actor,
a Train controller and a worker (~45 s on 2 cores), so the tests combine acceptance items:

* ``test_smoke_width_sweep_resumes_after_interruption`` (session Ray): a smoke width sweep (2 trials) interrupted
  after its first trial and run again: one parent + two child MLflow runs, a results table, only the unfinished
  trial reran.
* ``test_trial_larger_than_the_cluster_fails_before_scheduling`` (session Ray): fast, nothing is scheduled.
* ``test_submit_to_a_local_head_through_the_jobs_api`` (slow): ``ray start --head`` on 127.0.0.1 with token auth and
  a dashboard, a smoke sweep submitted with ``hrnet sweep submit``, its runs found in MLflow, the head stopped.
* ``test_asha_stops_the_worse_trials_and_releases_their_workers`` (slow, same head): ASHA stops the clearly worse
  trials after their first epoch and their Train workers are released while the sweep goes on. It runs on the head
  because Ray Train frees a stopped run's placement group through the dashboard's State API, which the session
  Ray instance (started without a dashboard) does not have.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

tune = pytest.importorskip("ray.tune")

from sweeps.spec import SweepConfigError  # noqa: E402

pytestmark = pytest.mark.ray

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    """A generated COCO-format dataset (16 train / 6 val images), prepared like ``hrnet data prepare``."""
    from hrnet_core.data.synthetic import DETECTIONS_FILE, generate_dataset
    from pipelines.prepare import prepare_split

    tmp = tmp_path_factory.mktemp("sweep_data")
    generate_dataset(tmp / "raw", num_train=16, num_val=6, seed=3)
    for split in ("train2017", "val2017"):
        prepare_split("coco", str(tmp / "raw"), split, tmp / "prepared", progress=False,
                      detections=DETECTIONS_FILE.format(split=split))
    return tmp / "prepared"


def _checkpoints(experiment_path: str, trial: str) -> list[str]:
    """Checkpoint directories of a trial's Ray Train run (``<experiment>/train/<sweep>-<parent>.<trial>``)."""
    runs = [p for p in Path(experiment_path, "train").iterdir() if p.name.endswith(f".{trial}")]
    return sorted(c.name for r in runs for c in r.iterdir() if c.is_dir() and c.name.startswith("checkpoint_"))


def _active_runs(uri: str):
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    exps = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(exps, max_results=1000)


class InterruptAfterFirstTrial(tune.Callback):
    """Ctrl+C-equivalent (SIGUSR1, Tune's interrupt signal) once the first trial has finished.

    One-shot through a marker file, because Tune pickles the callbacks with the experiment and reuses them when
    the sweep is restored.
    """

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def on_trial_complete(self, iteration, trials, trial, **info):
        if not os.path.exists(self.marker):
            Path(self.marker).write_text(trial.config["trial"])
            os.kill(os.getpid(), signal.SIGUSR1)


def test_smoke_width_sweep_resumes_after_interruption(ray_session, prepared, tmp_path):
    from sweeps.runner import run_sweep

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    common = dict(smoke=True, storage_path=str(tmp_path / "ray_results"), mlflow_uri=uri, experiment="sweeps",
                  overrides={"data.root": str(prepared), "train.epochs": 1}, verbose=0)

    first = run_sweep("pose_width_coco", callbacks=[InterruptAfterFirstTrial(tmp_path / "interrupted")], **common)
    assert (tmp_path / "interrupted").read_text() == "t00-W18"
    assert not first.finished and first.statuses["t00-W18"] == "TERMINATED"
    # interrupted between trials (the callback runs in the Tune step that completes t00, before t01 is started)
    assert first.statuses["t01-W32"] == "PENDING"
    done_ckpts = _checkpoints(first.experiment_path, "t00-W18")
    assert len(done_ckpts) == 1
    done_run = next(r for r in first.rows if r["trial"] == "t00-W18")["run_id"]

    second = run_sweep("pose_width_coco", **common)
    assert second.restored and second.finished
    assert second.statuses == {"t00-W18": "TERMINATED", "t01-W32": "TERMINATED"}
    assert second.parent_run_id == first.parent_run_id
    # the finished trial did not run again: no new checkpoint, same MLflow run
    assert _checkpoints(second.experiment_path, "t00-W18") == done_ckpts
    assert len(_checkpoints(second.experiment_path, "t01-W32")) == 1
    assert second.child_run_ids["t00-W18"] == done_run

    # one parent run and two nested child runs, finished, with our metric and the paper's value beside it
    runs = _active_runs(uri)
    parents = [r for r in runs if r.data.tags.get("sweep.kind") == "sweep"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == second.parent_run_id]
    assert len(parents) == 1 and parents[0].info.run_id == second.parent_run_id
    assert parents[0].info.status == "FINISHED"
    assert sorted(r.data.tags["sweep.trial"] for r in children) == ["t00-W18", "t01-W32"]
    assert all(r.info.status == "FINISHED" and "AP" in r.data.metrics for r in children)
    assert {r.data.tags["sweep.variant"]: r.data.params["model.width"] for r in children} == {"W18": "8", "W32": "16"}
    w32 = next(r for r in children if r.data.tags["sweep.trial"] == "t01-W32")
    assert w32.data.metrics["paper/AP"] == 74.4 and w32.data.tags["paper.row"] == "HRNet-W32 256x192 pretrain"
    assert len(runs) == 3

    # the results table, next to the experiment and attached to the parent run
    table = Path(second.table_path).read_text()
    assert "| W18 | `t00-W18` | TERMINATED | 1 |" in table and "| W32 | `t01-W32` | TERMINATED | 1 |" in table
    assert "74.4" in table and Path(second.experiment_path, "results.csv").is_file()
    from mlflow import MlflowClient

    artifacts = {a.path for a in MlflowClient(uri).list_artifacts(second.parent_run_id, "sweep")}
    assert {"sweep/results.md", "sweep/results.csv"} <= artifacts


def test_trial_larger_than_the_cluster_fails_before_scheduling(ray_session, tmp_path):
    from sweeps.runner import run_sweep

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with pytest.raises(SweepConfigError) as e:
        run_sweep("pose_width_coco", storage_path=str(tmp_path / "ray_results"), mlflow_uri=uri)  # 4 GPUs/trial
    assert "one trial needs 4 GPU" in str(e.value) and "cluster has 0 GPU" in str(e.value)
    assert not (tmp_path / "ray_results").exists() and not (tmp_path / "mlflow.db").exists()


# ---------------------------------------------------------------------------------------------------- Jobs API


def _free_ports(n: int) -> list[int]:
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


@pytest.fixture(scope="module")
def local_head():
    """``ray start --head --block`` on 127.0.0.1 with token auth and a dashboard, on its own ports and temp dir.

    Yields ``(dashboard_address, token_file)``. ``RAY_API_SERVER_ADDRESS`` in the head's environment (inherited by
    every Ray process it starts) points Ray Train's placement-group cleaner at this head's State API even while the
    session's Ray instance runs on the same machine. The head runs in its own process group, which is terminated at
    the end (``ray stop`` would also stop the session's Ray instance).
    """
    ray_bin = Path(sys.executable).with_name("ray")
    gcs, dash, agent, agent_grpc, rt_agent, metrics, client, nm, om = _free_ports(9)
    temp_dir = tempfile.mkdtemp(prefix="rayhead", dir="/tmp")  # short: Unix socket paths live under it
    token = secrets.token_hex(16)
    token_file = Path(temp_dir) / "token"
    token_file.write_text(token)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_") or k == "RAY_TRAIN_V2_ENABLED"}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token, RAY_TRAIN_V2_ENABLED="1",
               RAY_API_SERVER_ADDRESS=f"http://127.0.0.1:{dash}",
               PATH=f"{ray_bin.parent}{os.pathsep}{os.environ.get('PATH', '')}")
    cmd = [str(ray_bin), "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={gcs}",
           "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}",
           f"--dashboard-agent-listen-port={agent}", f"--dashboard-agent-grpc-port={agent_grpc}",
           f"--runtime-env-agent-port={rt_agent}", f"--metrics-export-port={metrics}",
           f"--ray-client-server-port={client}", f"--node-manager-port={nm}", f"--object-manager-port={om}",
           "--num-cpus=2", f"--temp-dir={temp_dir}", "--disable-usage-stats"]
    log = open(Path(temp_dir) / "ray_start.log", "w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    address = env["RAY_API_SERVER_ADDRESS"]
    try:
        deadline = time.monotonic() + 120
        import urllib.request

        while True:
            try:
                req = urllib.request.Request(f"{address}/api/version", headers={"Authorization": f"Bearer {token}"})
                with urllib.request.urlopen(req, timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                log.flush()
                pytest.fail(f"ray start failed: {(Path(temp_dir) / 'ray_start.log').read_text()[-3000:]}")
            time.sleep(1)
        yield address, token_file
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # anything of the group still alive (workers, job driver)
        except ProcessLookupError:
            pass
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.mark.slow
def test_submit_to_a_local_head_through_the_jobs_api(local_head, prepared, tmp_path, capsys):
    from sweeps.cli import main
    from sweeps.submit import job_client

    address, token_file = local_head
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    # without the token the cluster refuses requests
    with pytest.raises(Exception, match="(?i)auth|401|403"):
        job_client(address).list_jobs()

    rc = main(["submit", "pose_width_coco", "--smoke", "--address", address, "--auth-token-file", str(token_file),
               "--storage-path", str(tmp_path / "ray_results"), "--mlflow-uri", uri, "--experiment", "jobs",
               "-o", f"data.root={prepared}", "-o", "train.epochs=1", "--wait", "--timeout", "600"])
    out = capsys.readouterr().out.split()
    job_id = out[0]
    assert rc == 0, job_client(address, token_file.read_text()).get_job_logs(job_id)[-5000:]
    assert out[-2:] == [job_id, "SUCCEEDED"]

    assert main(["status", job_id, "--address", address, "--auth-token-file", str(token_file)]) == 0
    assert capsys.readouterr().out.startswith(f"{job_id} SUCCEEDED")
    assert main(["logs", job_id, "--address", address, "--auth-token-file", str(token_file)]) == 0
    logs = capsys.readouterr().out
    assert "| W32 | `t01-W32` | TERMINATED | 1 |" in logs  # the job printed the results table

    runs = _active_runs(uri)
    parent = [r for r in runs if r.data.tags.get("sweep.kind") == "sweep"]
    assert len(parent) == 1 and parent[0].data.tags["sweep.name"] == "pose_width_coco-smoke"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent[0].info.run_id]
    assert sorted(r.data.tags["sweep.trial"] for r in children) == ["t00-W18", "t01-W32"]
    assert all(r.info.status == "FINISHED" for r in children)
    assert main(["stop", job_id, "--address", address, "--auth-token-file", str(token_file)]) == 0
    assert "was not running" in capsys.readouterr().out


def _placement_groups(address: str, token: str) -> list[dict]:
    """Placement groups of the head, from its State API (``/api/v0/placement_groups``)."""
    import json
    import urllib.request

    req = urllib.request.Request(f"{address}/api/v0/placement_groups?limit=1000&detail=true",
                                 headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=30) as r:
        body = json.loads(r.read())
    return body["data"]["result"]["result"]


def _worker_bundles(address: str, token: str) -> list[str]:
    """Ids of the head's live placement groups holding a Train worker bundle (0.5 CPU in the smoke sweeps)."""
    live = []
    for pg in _placement_groups(address, token):
        cpus = [b.get("unit_resources", {}).get("CPU") for b in pg.get("bundles") or []]
        if pg["state"] != "REMOVED" and 0.5 in cpus:
            live.append(pg["placement_group_id"])
    return live


@pytest.mark.slow
def test_asha_stops_the_worse_trials_and_releases_their_workers(local_head, prepared, tmp_path, capsys):
    """``sweeps/checks/asha_smoke.yaml`` as a job on the 2-CPU head: ASHA stops sigma4 and sigma6 after epoch 1;
    the stopped trial's Train worker bundle is removed while the sweep goes on, and the next trial runs (a leaked
    0.5-CPU bundle would leave too little CPU for the next trial's data ingest)."""
    from mlflow import MlflowClient

    from sweeps.cli import main
    from sweeps.submit import job_client, wait_for_job

    address, token_file = local_head
    token = token_file.read_text()
    client = job_client(address, token)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    MlflowClient(uri).search_experiments()  # create the schema now: polling a store the job is migrating races
    rc = main(["submit", "sweeps/checks/asha_smoke.yaml", "--smoke", "--address", address,
               "--auth-token-file", str(token_file), "--mlflow-uri", uri,
               "--storage-path", str(tmp_path / "ray_results"), "-o", f"data.root={prepared}"])
    job_id = capsys.readouterr().out.split()[0]
    assert rc == 0

    # while the job runs: once sigma4 is stopped (and sigma6, the next trial, has started), at most one worker
    # bundle (sigma6's) is alive
    deadline = time.monotonic() + 600
    stopped_seen = False
    while not stopped_seen and str(client.get_job_status(job_id)) not in {"SUCCEEDED", "FAILED", "STOPPED"}:
        assert time.monotonic() < deadline, "sigma4 was never stopped"
        time.sleep(3)
        for r in _active_runs(uri):
            if r.data.tags.get("sweep.trial") == "t01-sigma4" and r.data.tags.get("sweep.early_stopped") == "true":
                stopped_seen = True
    if stopped_seen:
        released = time.monotonic() + 60
        while len(_worker_bundles(address, token)) > 1:
            assert time.monotonic() < released, f"worker bundles still alive: {_worker_bundles(address, token)}"
            time.sleep(2)
    status = wait_for_job(client, job_id, timeout_s=600)
    assert status == "SUCCEEDED", client.get_job_logs(job_id)[-5000:]
    assert stopped_seen

    runs = _active_runs(uri)
    parent = next(r for r in runs if r.data.tags.get("sweep.kind") == "sweep")
    children = {r.data.tags["sweep.trial"]: r for r in runs
                if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
    assert sorted(children) == ["t00-sigma1.5", "t01-sigma4", "t02-sigma6"]
    assert {k: r.data.tags["sweep.early_stopped"] for k, r in children.items()} == {
        "t00-sigma1.5": "false", "t01-sigma4": "true", "t02-sigma6": "true"}
    assert {k: r.data.tags["sweep.iterations"] for k, r in children.items()} == {
        "t00-sigma1.5": "2", "t01-sigma4": "1", "t02-sigma6": "1"}
    assert all(r.info.status == "FINISHED" and r.data.tags["sweep.status"] == "TERMINATED"
               for r in children.values()), {k: (r.info.status, r.data.tags.get("sweep.status"),
                                                 r.data.tags.get("sweep.error", "")[-600:]) for k, r in children.items()}
    first_loss = {k: [m.value for m in MlflowClient(uri).get_metric_history(r.info.run_id, "loss") if m.step == 1]
                  for k, r in children.items()}
    assert all(len(v) == 1 for v in first_loss.values())  # one epoch-1 loss each: nothing reran
    assert first_loss["t02-sigma6"][0] > first_loss["t01-sigma4"][0] > 2 * first_loss["t00-sigma1.5"][0]
    assert _worker_bundles(address, token) == []
