"""Ray cluster glue shared by ``hrnet train`` and the sweeps: the per-node resource rule, the check of a cluster
address before ``ray.init`` joins it, and the report of the nodes the training workers run on.

The per-node resource rule (README, "Running on a Ray cluster"): Ray places every bundle (a training worker's
``{CPU, GPU}``, a Tune trial actor) and every Ray Data decode task (``data_task_cpus`` CPUs, default 1) on one node;
CPUs left over on several nodes do not add up. A run can start only if

1. every bundle fits on some node, and all of them fit the nodes together (first-fit decreasing), and
2. whatever node Ray puts the bundles on, some node keeps ``data_task_cpus`` CPUs free for the decode tasks. That is
   certain when the bundles' CPUs are at most ``sum over nodes of max(0, node CPUs - data_task_cpus)``: to leave less
   than ``data_task_cpus`` free on every node, the bundles would have to take more than that on every node together.

A cluster that breaks the rule would wait forever (Ray reports ``Pending Demands: {'CPU': 1.0}`` and nothing else);
:func:`check_fit` refuses it in one line naming the resource instead.
"""

from __future__ import annotations

import math
import os
import socket
from typing import Any, Mapping, Sequence

from hrnet_core.errors import BadInputError

#: CPUs of one Ray Data decode / augment task (Ray Data's default for ``map_batches``).
DEFAULT_DATA_TASK_CPUS = 1.0
#: ``--placement`` values -> Ray placement-group strategies (``ScalingConfig(placement_strategy=...)``).
PLACEMENTS = {"pack": "PACK", "spread": "SPREAD"}
_EPS = 1e-9


class ClusterError(BadInputError, RuntimeError):
    """The Ray cluster cannot run the request (unreachable address, missing token, too few resources on one node);
    ``str()`` is one line meant for the user."""


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def _bundle_text(bundle: Mapping[str, float]) -> str:
    return "{" + ", ".join(f"{k}: {_fmt(v)}" for k, v in sorted(bundle.items())) + "}"


def node_resources(nodes: Sequence[Mapping[str, Any]]) -> list[dict[str, float]]:
    """Totals of the alive nodes of ``ray.nodes()`` (``[{"CPU": 1.0, "GPU": 0.0, ...}]``), without Ray's per-node
    marker resources (``node:<ip>``)."""
    out = []
    for n in nodes:
        if n.get("Alive", True):
            res = n.get("Resources", n)
            out.append({k: float(v) for k, v in res.items() if not k.startswith("node:") and isinstance(v, (int, float))})
    return out


def pack(nodes: Sequence[Mapping[str, float]], bundles: Sequence[Mapping[str, float]]) -> list[dict[str, float]] | None:
    """First-fit decreasing placement of ``bundles`` on ``nodes``; returns each node's resources left, or ``None``
    when some bundle finds no node (largest bundles first, by GPU then CPU)."""
    free = [dict(n) for n in nodes]
    for b in sorted(bundles, key=lambda b: (-b.get("GPU", 0.0), -b.get("CPU", 0.0))):
        for f in free:
            if all(f.get(r, 0.0) + _EPS >= a for r, a in b.items()):
                for r, a in b.items():
                    f[r] = f.get(r, 0.0) - a
                break
        else:
            return None
    return free


def decode_headroom(nodes: Sequence[Mapping[str, float]], data_task_cpus: float) -> float:
    """CPUs the bundles may take while some node is sure to keep ``data_task_cpus`` free:
    ``sum over nodes of max(0, CPU - data_task_cpus)`` (module docstring, rule 2)."""
    return float(sum(max(0.0, n.get("CPU", 0.0) - data_task_cpus) for n in nodes))


def check_fit(nodes: Sequence[Mapping[str, float]], bundles: Sequence[Mapping[str, float]], *,
              data_task_cpus: float = DEFAULT_DATA_TASK_CPUS, what: str = "the training workers") -> None:
    """Refuse, in one line naming the resource, a request that the cluster cannot run (module docstring).

    Args:
        nodes: per-node total resources (:func:`node_resources`), e.g. ``[{"CPU": 1.0}, {"CPU": 1.0}]``.
        bundles: every bundle held at once, e.g. two workers ``[{"CPU": 0.5}, {"CPU": 0.5}]``.
        data_task_cpus: CPUs of one Ray Data decode task.
        what: how the message names the bundles.

    Raises:
        ClusterError: a bundle larger than every node, bundles that do not fit the nodes together, no node with
            ``data_task_cpus`` CPUs, or bundles that may leave every node with less than ``data_task_cpus`` free.
    """
    if not nodes:
        raise ClusterError("the Ray cluster has no alive node")
    for b in bundles:
        if not any(all(n.get(r, 0.0) + _EPS >= a for r, a in b.items()) for n in nodes):
            short = next(r for r, a in sorted(b.items()) if max(n.get(r, 0.0) for n in nodes) + _EPS < a)
            raise ClusterError(f"{what}: one bundle needs {_fmt(b[short])} {short} on a single node "
                               f"{_bundle_text(b)}; the largest node has {_fmt(max(n.get(short, 0.0) for n in nodes))} "
                               f"{short}")
    if pack(nodes, bundles) is None:
        need = {r: sum(b.get(r, 0.0) for b in bundles) for b in bundles for r in b}
        raise ClusterError(f"{what}: {len(bundles)} bundles ({', '.join(f'{_fmt(v)} {k}' for k, v in sorted(need.items()))}"
                           f" in all) do not fit the nodes ({_nodes_text(nodes)})")
    biggest = max(n.get("CPU", 0.0) for n in nodes)
    hint = "; set a smaller --data-task-cpus (sweep file: resources.data_task_cpus)"
    if biggest + _EPS < data_task_cpus:
        raise ClusterError(f"a Ray Data decode task needs {_fmt(data_task_cpus)} CPU on one node but the largest node "
                           f"has {_fmt(biggest)} CPU{hint}")
    used = sum(b.get("CPU", 0.0) for b in bundles)
    room = decode_headroom(nodes, data_task_cpus)
    if used > room + _EPS:
        raise ClusterError(
            f"{what} take {_fmt(used)} CPU, which may leave no node with {_fmt(data_task_cpus)} CPU free for the Ray "
            f"Data decode tasks (nodes: {_nodes_text(nodes)}; at most {_fmt(room)} CPU can be taken while one node "
            f"keeps {_fmt(data_task_cpus)} CPU free){hint} or fewer CPUs per worker")


def _nodes_text(nodes: Sequence[Mapping[str, float]]) -> str:
    parts = []
    for n in nodes:
        gpu = n.get("GPU", 0.0)
        parts.append(f"{_fmt(n.get('CPU', 0.0))} CPU" + (f" + {_fmt(gpu)} GPU" if gpu else ""))
    return ", ".join(parts)


def default_cpus_per_worker(num_workers: int, use_gpu: bool, nodes: Sequence[Mapping[str, float]],
                            data_task_cpus: float = DEFAULT_DATA_TASK_CPUS) -> float:
    """CPUs reserved per training worker by default: 1 with GPUs; CPU workers share what the per-node rule leaves
    (:func:`decode_headroom`), ``min(1, headroom / num_workers)``, e.g. one node of 2 CPUs and 2
    workers: 0.5 each; two nodes of 1 CPU: no room with 1-CPU decode tasks.

    Raises:
        ClusterError: less than 0.25 CPU per worker would be left (names the CPUs and the nodes).
    """
    if use_gpu:
        return 1.0
    room = decode_headroom(nodes, data_task_cpus)
    cpus = min(1.0, room / max(1, int(num_workers)))
    if cpus < 0.25:
        raise ClusterError(
            f"{num_workers} CPU training workers need at least 0.25 CPU each while one node keeps "
            f"{_fmt(data_task_cpus)} CPU free for the Ray Data decode tasks, but the nodes ({_nodes_text(nodes)}) leave "
            f"{_fmt(room)} CPU; set a smaller --data-task-cpus, fewer --num-workers or a larger cluster")
    return float(cpus)


def decode_slots(free_cpus_per_node: Sequence[float], data_task_cpus: float, cap: int = 8) -> int:
    """Decode tasks of ``data_task_cpus`` CPUs that can start now: ``sum floor(free / data_task_cpus)`` over the
    nodes (a fraction left on one node and one on another make no task), at most ``cap``."""
    n = sum(int(math.floor(max(0.0, f) / data_task_cpus + _EPS)) for f in free_cpus_per_node)
    return max(0, min(int(cap), n))


def free_cpus_per_node() -> list[float]:
    """CPUs available now on each alive node of the connected Ray cluster
    (:func:`pipelines.ray_adapter.available_cpus_per_node`: Ray has no public per-node API for it)."""
    from .ray_adapter import available_cpus_per_node

    return available_cpus_per_node()


def probe_address(address: str | None, timeout_s: float = 5.0) -> None:
    """Check, within ``timeout_s``, that a Ray cluster answers at ``address`` (``host:port`` of its GCS) and accepts
    this client's token, so that ``ray.init`` neither retries for minutes nor prints a traceback. ``None``, ``auto``,
    ``local`` and ``ray://`` / ``http://`` addresses are left to Ray.

    Raises:
        ClusterError: nothing answers at ``address``, or the cluster wants a token that is missing or wrong.
    """
    if not address or address in {"auto", "local"} or "://" in address:
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ClusterError(f"--address {address!r}: expected HOST:PORT of the Ray head (GCS port, default 6379), "
                           "'auto', or ray://HOST:PORT")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as e:
        raise ClusterError(f"no Ray cluster answers at {address} ({e.strerror or e}); check --address / RAY_ADDRESS")
    from .ray_adapter import gcs_probe

    code, details, had_token = gcs_probe(address, timeout_s)
    if code == "UNAUTHENTICATED":
        raise ClusterError(auth_message(address, had_token))
    if code is not None:
        raise ClusterError(f"the Ray cluster at {address} did not answer ({code}: {details})")


def auth_message(address: str, had_token: bool) -> str:
    """One line for a cluster that refused this client's token (``had_token``) or wants one."""
    if had_token:
        return (f"the Ray cluster at {address} rejected this client's auth token: use the cluster's token "
                "(RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token)")
    return (f"the Ray cluster at {address} requires token authentication: set RAY_AUTH_MODE=token and the cluster's "
            "token in RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token")


def connect(address: str | None, **init_kwargs: Any) -> None:
    """``ray.init(address=...)`` after :func:`probe_address`; Ray's connection errors become one line.

    Raises:
        ClusterError: unreachable cluster or missing / wrong token.
    """
    import ray

    probe_address(address)
    try:
        ray.init(address=address, **init_kwargs)
    except ConnectionError as e:
        raise ClusterError(f"could not join the Ray cluster at {address or os.environ.get('RAY_ADDRESS')}: "
                           f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None


def worker_node() -> dict[str, str]:
    """This process's Ray node: ``{"node_id", "node_ip"}`` (call inside a Ray worker)."""
    import ray

    ctx = ray.get_runtime_context()
    try:
        ip = ray.util.get_node_ip_address()
    except Exception:  # noqa: BLE001
        ip = "?"
    return {"node_id": ctx.get_node_id(), "node_ip": ip}


def node_tags(nodes_by_rank: Sequence[Mapping[str, str]]) -> dict[str, str]:
    """MLflow tags of the workers' nodes: ``ray.worker.<rank>.node`` = ``<ip>/<node id[:8]>`` and ``ray.worker_nodes``
    = the number of distinct nodes."""
    tags = {f"ray.worker.{r}.node": f"{n.get('node_ip', '?')}/{str(n.get('node_id', ''))[:8]}"
            for r, n in enumerate(nodes_by_rank)}
    tags["ray.worker_nodes"] = str(len({n.get("node_id") for n in nodes_by_rank}))
    return tags


def nodes_line(nodes_by_rank: Sequence[Mapping[str, str]]) -> str:
    """The epoch line's node part: ``nodes 0:<id8> 1:<id8>`` (rank: node id prefix)."""
    return "nodes " + " ".join(f"{r}:{str(n.get('node_id', ''))[:8]}" for r, n in enumerate(nodes_by_rank))


def init_ray(address: str | None = None) -> None:
    """Join the Ray cluster at ``address`` (or ``$RAY_ADDRESS``), else start a local instance without the dashboard.

    Ray 2.60 cannot be confined to the loopback interface: it replaces a node address of 127.0.0.1 by the machine's
    own (``services.resolve_ip_for_localhost``) and binds the GCS, raylet and worker servers to every interface;
    its token authentication (on by default) protects them (README, "Network exposure").

    Raises:
        ClusterError: a wrong address or a missing token (one line within seconds, :func:`connect`).
    """
    import ray

    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        connect(address)
    else:
        ray.init(include_dashboard=False)
