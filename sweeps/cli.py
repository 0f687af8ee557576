"""``hrnet sweep ...`` commands (argparse). The project CLI wires them in with :func:`add_sweep_parser`;
``python -m sweeps.cli ...`` runs them stand-alone (that is also the entrypoint of a submitted sweep job).

    hrnet sweep list
    hrnet sweep validate <name> [--smoke] [--address ADDR]
    hrnet sweep run <name> [--smoke] [--address ADDR] [--storage-path P] [--mlflow-uri URI] [--override k=v ...]
    hrnet sweep submit <name> --address http://<head>:8265 [--smoke] [--wait] ...
    hrnet sweep status|logs|stop <job-id> --address http://<head>:8265
    hrnet sweep report <name> [--smoke] [--mlflow-uri URI] [--out-dir reports/sweeps]

Exit codes: 0 success, 2 invalid sweep file or arguments (one message on stderr), 1 a failed job or trial,
3 an interrupted sweep (run the same command again to resume).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Sequence

from .spec import SweepConfigError


def _add_common(p: argparse.ArgumentParser, *, smoke: bool = True, storage: bool = True) -> None:
    if smoke:
        p.add_argument("--smoke", action="store_true", help="the sweep's tiny CPU version (see the `smoke:` section)")
    p.add_argument("--mlflow-uri", default=None, help="MLflow tracking URI (default $MLFLOW_TRACKING_URI or ./mlflow.db)")
    p.add_argument("--experiment", default="hrnet", help="MLflow experiment (default: hrnet)")
    if storage:
        p.add_argument("--storage-path", default=None,
                       help="Tune/Train storage root, shared by all nodes (default $HRNET_STORAGE_PATH or ./ray_results)")


def _overrides_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--override", "-o", action="append", default=[], metavar="KEY=VALUE",
                   help="recipe override for every trial, e.g. data.root=/mnt/shared/coco (repeatable)")


def _cluster_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--placement", choices=["pack", "spread"], default=None,
                   help="place each trial's workers on as few nodes as possible (pack) or on different nodes (spread); "
                        "default: the sweep file's resources.placement (pack)")
    p.add_argument("--data-task-cpus", type=float, default=None,
                   help="CPUs of one Ray Data decode task (default: the sweep file's resources.data_task_cpus, 1); "
                        "some node must keep this much free beside the trials' workers")


def _resources(args: argparse.Namespace) -> dict[str, Any]:
    return {"placement": getattr(args, "placement", None), "data_task_cpus": getattr(args, "data_task_cpus", None)}


def _json_arg(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"not valid JSON: {e}") from None


def add_sweep_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``sweep`` with its sub-commands to an argparse ``subparsers``; each sets ``func(args) -> int``."""
    sweep = subparsers.add_parser("sweep", help="Ray Tune studies: widths, paper ablations (sweeps/*.yaml)",
                                  description="Ray Tune studies defined in sweeps/*.yaml")
    sub = sweep.add_subparsers(dest="sweep_command", metavar="COMMAND", required=True)
    _add_list_parser(sub)
    _add_validate_parser(sub)
    _add_run_parser(sub)
    _add_submit_parser(sub)
    _add_job_parsers(sub)
    _add_report_parser(sub)
    return sweep


def _add_list_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("list", help="list the sweep definitions")
    p.set_defaults(func=cmd_list)


def _add_validate_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("validate", help="check a sweep file (and, with --address, that it fits the cluster)")
    p.add_argument("name")
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--address", default=None, help="Ray cluster address (ray://... or host:port) for the size check")
    _overrides_arg(p)
    _cluster_args(p)
    p.set_defaults(func=cmd_validate)


def _add_run_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run (or resume) a sweep with Ray Tune")
    p.add_argument("name", help="sweep name (sweeps/<name>.yaml) or path")
    p.add_argument("--address", default=None, help="Ray cluster address (default: $RAY_ADDRESS or a local Ray)")
    _add_common(p)
    _overrides_arg(p)
    p.add_argument("--max-concurrent-trials", type=int, default=None,
                   help="default: what the cluster's GPUs (CPUs) fit")
    p.add_argument("--fresh", action="store_true", help="start over instead of resuming an interrupted run")
    _cluster_args(p)
    p.add_argument("--report-dir", default=None, help="also write <sweep>.md/.csv/.png there")
    p.add_argument("--verbose", type=int, default=1, choices=[0, 1, 2, 3])
    p.set_defaults(func=cmd_run)


def _add_submit_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("submit", help="submit a sweep to a Ray cluster through the Jobs API")
    p.add_argument("name")
    p.add_argument("--address", required=True, help="Ray dashboard address, http://<head>:8265")
    _add_common(p)
    _overrides_arg(p)
    p.add_argument("--working-dir", default=None,
                   help="project directory to upload (default: the checkout holding the current directory)")
    p.add_argument("--fresh", action="store_true", help="start over instead of resuming an interrupted run")
    _cluster_args(p)
    p.add_argument("--runtime-env", type=_json_arg, default={}, help='extra runtime env (JSON), e.g. {"pip": [...]}')
    p.add_argument("--entrypoint-num-cpus", type=float, default=None)
    p.add_argument("--entrypoint-num-gpus", type=float, default=None)
    p.add_argument("--entrypoint-resources", type=_json_arg, default=None,
                   help='custom resources for the sweep driver (JSON), e.g. {"head": 0.01}')
    p.add_argument("--submission-id", default=None)
    p.add_argument("--max-concurrent-trials", type=int, default=None)
    p.add_argument("--auth-token-file", default=None, help="Ray auth token file (else Ray's own token discovery)")
    p.add_argument("--wait", action="store_true", help="wait for the job to end; exit 0 only if it succeeded")
    p.add_argument("--timeout", type=float, default=24 * 3600, help="--wait limit in seconds")
    p.set_defaults(func=cmd_submit)


def _add_job_parsers(sub: argparse._SubParsersAction) -> None:
    """``status``, ``logs`` and ``stop`` of a submitted sweep job."""
    for name, help_text in (("status", "status of a submitted sweep job"), ("logs", "logs of a submitted sweep job"),
                            ("stop", "stop a submitted sweep job")):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("job_id")
        p.add_argument("--address", default=None, help="Ray dashboard address (default $RAY_API_SERVER_ADDRESS)")
        p.add_argument("--auth-token-file", default=None)
        if name == "logs":
            p.add_argument("--follow", "-f", action="store_true", help="stream until the job ends")
        if name == "stop":
            p.add_argument("--wait", action="store_true", help="wait until the job has stopped")
        p.set_defaults(func={"status": cmd_status, "logs": cmd_logs, "stop": cmd_stop}[name])


def _add_report_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="results table and plot with the paper's values beside ours")
    p.add_argument("name")
    _add_common(p)
    _overrides_arg(p)
    p.add_argument("--out-dir", default="reports/sweeps")
    p.set_defaults(func=cmd_report)


def _overrides(items: Sequence[str]) -> dict[str, Any]:
    from hrnet_core.recipes import ConfigError, parse_overrides
    from hrnet_core.recipes.config import flatten

    try:
        return flatten(parse_overrides(list(items))) if items else {}
    except ConfigError as e:
        raise SweepConfigError(f"--override: {e}") from None


def _token(path: str | None) -> str | None:
    if not path:
        return None
    try:
        return open(path).read().strip()
    except OSError as e:
        raise SweepConfigError(f"--auth-token-file {path}: {e.strerror}") from None


def cmd_list(args: argparse.Namespace) -> int:
    from .spec import list_sweeps, load_sweep

    for name in list_sweeps():
        spec = load_sweep(name)
        print(f"{name:40s} {spec.paper.label:10s} {len(spec.variants)} variants  {spec.description}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from .connect import cluster_concurrency, connect_ray
    from .resolve import resolve_plan

    plan = resolve_plan(args.name, smoke=args.smoke, overrides=_overrides(args.override), resources=_resources(args))
    print(f"{plan.spec.source}: OK, {len(plan.trials)} trials: {', '.join(t.key for t in plan.trials)}")
    print(f"per trial: {plan.resources.num_workers} workers x {plan.resources.per_worker()}")
    if args.address:
        connect_ray(args.address)
        print(f"fits the cluster; max_concurrent_trials = {cluster_concurrency(plan)}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from .report import markdown_table
    from .runner import run_sweep

    # `hrnet sweep stop` / `ray job stop` send SIGTERM: run_sweep makes it Tune's interrupt once Ray is connected
    # (ray.init replaces an earlier handler). Submitted jobs get RAY_JOB_STOP_WAIT_TIME_S=30 before Ray's SIGKILL.
    outcome = run_sweep(args.name, smoke=args.smoke, address=args.address, storage_path=args.storage_path,
                        mlflow_uri=args.mlflow_uri, experiment=args.experiment, overrides=_overrides(args.override),
                        max_concurrent_trials=args.max_concurrent_trials, fresh=args.fresh, verbose=args.verbose,
                        report_dir=args.report_dir, resources=_resources(args), sigterm_interrupts=True)
    print(markdown_table(outcome.plan.spec, outcome.rows, smoke=outcome.plan.smoke))
    print(f"MLflow parent run: {outcome.parent_run_id}; Tune experiment: {outcome.experiment_path}")
    if not outcome.finished:
        print("sweep interrupted: run the same command again to resume the unfinished trials", file=sys.stderr)
        return 3
    return 1 if "ERROR" in outcome.statuses.values() else 0


def cmd_submit(args: argparse.Namespace) -> int:
    from .submit import SubmitOptions, job_client, submit_sweep, wait_for_job

    opts = SubmitOptions(
        smoke=args.smoke, storage_path=args.storage_path, mlflow_uri=args.mlflow_uri, experiment=args.experiment,
        overrides=list(args.override), working_dir=args.working_dir, runtime_env=args.runtime_env or {},
        entrypoint_num_cpus=args.entrypoint_num_cpus, entrypoint_num_gpus=args.entrypoint_num_gpus,
        entrypoint_resources=args.entrypoint_resources, submission_id=args.submission_id,
        max_concurrent_trials=args.max_concurrent_trials, fresh=args.fresh, placement=args.placement,
        data_task_cpus=args.data_task_cpus, address=args.address)
    token = _token(args.auth_token_file)
    job_id = submit_sweep(args.name, args.address, opts, auth_token=token)
    print(job_id, flush=True)
    if not args.wait:
        print(f"follow with: hrnet sweep logs {job_id} --address {args.address} --follow", file=sys.stderr)
        return 0
    status = wait_for_job(job_client(args.address, token), job_id, timeout_s=args.timeout)
    print(f"{job_id} {status}")
    return 0 if status == "SUCCEEDED" else 1


def cmd_status(args: argparse.Namespace) -> int:
    from .submit import job_client, job_status

    info = job_status(job_client(args.address, _token(args.auth_token_file)), args.job_id)
    print(f"{info['job_id']} {info['status']} {info['message']}".rstrip())
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    from .submit import follow_logs, job_client, job_status

    client = job_client(args.address, _token(args.auth_token_file))
    job_status(client, args.job_id)  # an unknown id: one line
    if args.follow:
        follow_logs(client, args.job_id)
    else:
        sys.stdout.write(client.get_job_logs(args.job_id))
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    from .submit import job_client, job_status, wait_for_job

    client = job_client(args.address, _token(args.auth_token_file))
    job_status(client, args.job_id)  # an unknown id: one line (stop_job would answer with a 404 traceback)
    stopped = client.stop_job(args.job_id)
    print(f"{args.job_id} {'stop requested' if stopped else 'was not running'}")
    if args.wait:
        print(f"{args.job_id} {wait_for_job(client, args.job_id, timeout_s=300)}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .report import markdown_table, report_sweep
    from .resolve import resolve_plan
    from .runner import default_mlflow_uri

    plan = resolve_plan(args.name, smoke=args.smoke, overrides=_overrides(args.override))
    rows, paths = report_sweep(plan, mlflow_uri=default_mlflow_uri(args.mlflow_uri), experiment=args.experiment,
                               out_dir=args.out_dir, storage_path=args.storage_path)
    print(markdown_table(plan.spec, rows, smoke=plan.smoke))
    print("wrote " + ", ".join(paths))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Stand-alone entry point: ``python -m sweeps.cli <command> ...`` (same commands as ``hrnet sweep``)."""
    parser = argparse.ArgumentParser(prog="python -m sweeps.cli")
    subparsers = parser.add_subparsers(dest="command", required=True)
    sweep = add_sweep_parser(subparsers)
    args = parser.parse_args(["sweep", *(argv if argv is not None else sys.argv[1:])])
    del sweep
    from pipelines.cluster import ClusterError

    try:
        return int(args.func(args) or 0)
    except (SweepConfigError, ClusterError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
