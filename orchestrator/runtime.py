"""Starting or attaching to Ray: an embedded local Ray by default, a cluster with ``--address``."""

from __future__ import annotations

import importlib.util
import logging
import os
import socket
import warnings

from orchestrator.errors import UserError

__all__ = ["NAMESPACE", "check_address", "check_dashboard", "check_gpus", "check_storage", "start_ray", "stop_ray"]

NAMESPACE = "facenas"


def check_address(address: str | None) -> None:
    """Check ``--address`` (or ``RAY_ADDRESS``) before anything is created; no-op for a local Ray."""
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address:
        _check_reachable(address)


def check_storage(storage: str | os.PathLike[str]) -> None:
    """Check ``--storage`` and the benchmark store's files in it before anything is created or started.

    Raises:
        UserError: ``storage`` is a file, or a Parquet file of its benchmark store is unreadable or has the
            wrong schema (a :class:`~orchestrator.store.StoreError`, one line naming the file).
    """
    from orchestrator.store import check_store

    root = os.path.abspath(os.path.expanduser(os.fspath(storage)))
    if os.path.exists(root) and not os.path.isdir(root):
        raise UserError(f"storage {root} is a file, not a folder; pass --storage FOLDER (created if missing)")
    check_store(os.path.join(root, "benchmark"))  # experiment.STORE_DIR; not imported: that module loads Ray


# What Ray's dashboard imports before it starts (ray/dashboard/optional_deps.py, ray 2.60): ray[default].
_DASHBOARD_PACKAGES = ("aiohttp", "aiohttp_cors", "grpc", "opencensus", "opentelemetry", "prometheus_client")


def check_dashboard(dashboard: bool) -> None:
    """``--dashboard`` needs ray[default] (the ``dashboard`` extra); say so before anything is created.

    Raises:
        UserError: ``dashboard`` is asked and a package of ray[default] is missing (named in the line).
    """
    if not dashboard:
        return
    missing = [name for name in _DASHBOARD_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        raise UserError(
            f"--dashboard needs Ray's dashboard packages (missing: {', '.join(missing)}); install them with "
            "pip install 'facenas[dashboard]'"
        )


def _check_reachable(address: str) -> None:
    """Fail fast (one line) when ``host:port`` does not answer, instead of Ray's long retry loop."""
    if address in ("auto", "local") or address.startswith("ray://"):
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"--address {address!r} is not host:port; pass e.g. --address 127.0.0.1:6379")
    try:
        with socket.create_connection((host, int(port)), timeout=3):
            pass
    except OSError as exc:
        raise UserError(
            f"cannot reach a Ray cluster at {address} ({exc.strerror or exc}); start it with "
            "`ray start --head` or fix --address / RAY_ADDRESS"
        ) from None


def start_ray(address: str | None = None, *, num_cpus: int | None = None, dashboard: bool = False) -> str:
    """Start an embedded local Ray bound to 127.0.0.1, or attach to ``address`` / ``RAY_ADDRESS``.

    Ray listens on loopback only when ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` was set before Ray was
    imported (the CLI does so for a local run); otherwise Ray advertises the outward address.

    Args:
        address: a cluster's ``host:port`` (or ``auto``, ``ray://...``); None: ``RAY_ADDRESS``, else a local Ray.
        num_cpus: the local Ray's logical CPUs (default: the machine's cores).
        dashboard: serve Ray's dashboard (and its APIs) on 127.0.0.1 for the local Ray; an attached
            cluster has its own, whose address the returned line gives when Ray knows it.

    Returns a one-line description of what was started, with the dashboard's URL (for the CLI).

    Raises:
        UserError: the cluster does not answer, or ``dashboard`` is asked without ray[default].
    """
    import ray

    logging.getLogger("ray").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="ray")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    address = address or os.environ.get("RAY_ADDRESS") or None
    if ray.is_initialized():
        return "Ray already initialised in this process"
    if address:
        _check_reachable(address)
        try:
            ctx = ray.init(address=address, namespace=NAMESPACE, logging_level=logging.ERROR, log_to_driver=False)
        except (ConnectionError, RuntimeError) as exc:
            raise UserError(f"cannot attach to the Ray cluster at {address}: {exc}".split("\n")[0]) from None
        where = f"attached to Ray cluster at {address}"
        if getattr(ctx, "dashboard_url", None):  # the cluster's own dashboard (on its head node)
            where += f"; its dashboard at http://{ctx.dashboard_url}"
        return where
    check_dashboard(dashboard)
    cpus = num_cpus or os.cpu_count() or 1
    kwargs = dict(
        # "local" always starts a new Ray: without it ray.init() joins any cluster already running on
        # this machine (another user's `ray start`, a benchmark), with its resources and its lifetime.
        address="local",
        num_cpus=cpus,
        namespace=NAMESPACE,
        _node_ip_address="127.0.0.1",
        include_dashboard=dashboard,
        logging_level=logging.ERROR,
        log_to_driver=False,
        object_store_memory=256 * 1024**2,
    )
    if dashboard:
        kwargs["dashboard_host"] = "127.0.0.1"
    ctx = ray.init(**kwargs)
    where = f"local Ray with {cpus} CPUs on 127.0.0.1"
    if dashboard and getattr(ctx, "dashboard_url", None):
        where += f"; dashboard at http://{ctx.dashboard_url}"
        if os.environ.get("RAY_AUTH_MODE", "token") == "token":  # Ray's token authentication: on by default
            where += " (it asks for the token `ray get-auth-token` prints)"
        metrics = _metrics_url()
        if metrics:
            where += f"; metrics at {metrics}"
    return where


def _metrics_url() -> str:
    """This node's Prometheus endpoint (Ray's and facenas's metrics, ``orchestrator.ray_metrics``), or ``""``."""
    import ray

    try:
        node_id = ray.get_runtime_context().get_node_id()
        node = next(n for n in ray.nodes() if n.get("NodeID") == node_id)
        return f"http://{node['NodeManagerAddress']}:{int(node['MetricsExportPort'])}/metrics"
    except Exception:  # a line of output must never stop the run
        return ""


GPUS_ON_DEMAND = "FACENAS_GPUS_ON_DEMAND"  # "1": GPU nodes come on demand, do not refuse a cluster without GPUs yet


def check_gpus(needed: float, *, asked_by: str) -> None:
    """Refuse a config that needs GPUs when the Ray we run on has fewer (none, typically); Ray must be up.

    Without the check such trials wait for a GPU forever (Tune keeps them pending) or train nothing. A
    cluster whose autoscaler can add GPU nodes passes (its node types, as Ray publishes them, are asked),
    and so does any cluster when ``FACENAS_GPUS_ON_DEMAND=1`` (an autoscaler that publishes nothing).

    Args:
        needed: the most GPUs one trial needs at once (``ExperimentConfig.gpus_needed``); 0 checks nothing.
        asked_by: the config keys that ask, for the message (e.g. ``"training.use_gpu: true"``).

    Raises:
        UserError: the cluster has fewer than ``needed`` GPUs (one line: what was asked, what there is, the fix).
    """
    if needed <= 0 or os.environ.get(GPUS_ON_DEMAND) == "1":
        return
    import ray

    resources = ray.cluster_resources()
    have = float(resources.get("GPU", 0.0))
    if have >= needed or _autoscaler_gpus() >= needed:
        return
    shown = ", ".join(f"{key} {value:g}" for key, value in sorted(resources.items()) if key in ("CPU", "GPU"))
    raise UserError(
        f"{asked_by} needs {needed:g} GPU(s) a trial, but the Ray cluster has {have:g} ({shown or 'no resources'}); "
        "set training.use_gpu: false (and resources.gpus_per_trial: 0) to train on CPUs, or attach to a "
        f"cluster with GPU nodes (--address; {GPUS_ON_DEMAND}=1 when its autoscaler adds them on demand)"
    )


def _autoscaler_gpus() -> float:
    """The most GPUs the cluster's autoscaler may add (0 without an autoscaler, e.g. an embedded Ray).

    Ray's own reading of the autoscaling config (``ray._private.state``, as Ray Data uses it); private,
    so any failure reads as "none known".
    """
    try:
        import ray._private.state

        limits = ray._private.state.state.get_max_resources_from_cluster_config() or {}
        return float(limits.get("GPU", 0) or 0)
    except Exception:
        return 0.0


def stop_ray() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()
