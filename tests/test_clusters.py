"""clusters/: every YAML loads and names what facenas relies on; the local multi-node script works.

The Ray version is checked against pyproject's pin (one source of truth), the RayJob's entrypoint is
parsed by facenas's own CLI parser and its config validated with the same overrides, and storage must be
one shared mount seen at the same path by every node.
"""

from __future__ import annotations

import os
import re
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CLUSTERS = ROOT / "clusters"
SCRIPT = CLUSTERS / "local_cluster.sh"
MOUNT = "/mnt/facenas"


def _ray_minor_pin() -> str:
    """``2.60`` from pyproject's ``ray[...]>=2.60,<2.61``."""
    text = (ROOT / "pyproject.toml").read_text()
    match = re.search(r'"ray\[[^\]]*\]>=(\d+)\.(\d+)', text)
    assert match, "pyproject.toml pins ray"
    return f"{match.group(1)}.{match.group(2)}"


def _load(name: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all((CLUSTERS / name).read_text()) if doc is not None]


def _image_version(image: str) -> str:
    repo, _, tag = image.partition(":")
    assert repo == "rayproject/ray", image
    return tag.split("-")[0]


def test_every_yaml_in_clusters_loads_and_is_covered_here():
    names = sorted(p.name for p in CLUSTERS.glob("*.yaml"))
    assert names == ["gpu-cluster.yaml", "kuberay-raycluster.yaml", "kuberay-rayjob.yaml"]
    for name in names:
        assert _load(name), name


# -- ray up ---------------------------------------------------------------------------------------------


def test_gpu_cluster_launcher_yaml():
    (cfg,) = _load("gpu-cluster.yaml")
    pin = _ray_minor_pin()
    assert _image_version(cfg["docker"]["image"]).startswith(pin + "."), cfg["docker"]["image"]
    assert cfg["docker"]["image"].endswith("-gpu")

    types = cfg["available_node_types"]
    head = types[cfg["head_node_type"]]
    workers = [t for name, t in types.items() if name != cfg["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0, "the head trains nothing"
    assert workers and all(w["resources"]["GPU"] >= 1 for w in workers)
    for w in workers:  # autoscaling: from zero up to a bound the cluster's max allows
        assert 0 == w["min_workers"] < w["max_workers"] <= cfg["max_workers"]

    # facenas installed on every node, from the repository copied there.
    (target,) = [dst for dst, src in cfg["file_mounts"].items() if src == "."]
    assert any("pip install" in c and target in c for c in cfg["setup_commands"])

    # One shared file system, mounted on the host and handed into the container at the same path.
    assert any("mount" in c and MOUNT in c for c in cfg["initialization_commands"])
    assert f"-v {MOUNT}:{MOUNT}" in cfg["docker"]["run_options"]
    assert any(f"{MOUNT}/runs" in c for c in cfg["setup_commands"])

    head_start = " ".join(cfg["head_start_ray_commands"])
    assert "ray start --head" in head_start and "--dashboard-host=127.0.0.1" in head_start
    assert "--autoscaling-config" in head_start
    assert "--address=$RAY_HEAD_IP:6379" in " ".join(cfg["worker_start_ray_commands"])
    assert "-e RAY_AUTH_MODE=token" in cfg["docker"]["run_options"]


# -- KubeRay ---------------------------------------------------------------------------------------------


def _pod_specs(cluster_spec: dict[str, Any]) -> list[dict[str, Any]]:
    groups = [cluster_spec["headGroupSpec"], *cluster_spec["workerGroupSpecs"]]
    return [g["template"]["spec"] for g in groups]


def _check_ray_cluster_spec(spec: dict[str, Any], claim: str) -> None:
    pin = _ray_minor_pin()
    assert str(spec["rayVersion"]).startswith(pin + ".")
    assert spec["authOptions"]["mode"] == "token"
    assert spec["enableInTreeAutoscaling"] is True
    for pod in _pod_specs(spec):
        (container,) = pod["containers"]
        assert _image_version(container["image"]) == str(spec["rayVersion"])
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        volumes = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"]}
        assert any(path == MOUNT and volumes[name] == claim for name, path in mounts.items())
    head = spec["headGroupSpec"]
    assert "nvidia.com/gpu" not in head["template"]["spec"]["containers"][0]["resources"]["limits"]
    for group in spec["workerGroupSpecs"]:
        limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
        assert int(limits["nvidia.com/gpu"]) == int(group["rayStartParams"]["num-gpus"]) >= 1
        assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        assert group["minReplicas"] < group["maxReplicas"]


def test_kuberay_raycluster_and_its_shared_volume():
    docs = {d["kind"]: d for d in _load("kuberay-raycluster.yaml")}
    assert set(docs) == {"RayCluster", "PersistentVolumeClaim"}
    assert docs["RayCluster"]["apiVersion"] == "ray.io/v1"
    claim = docs["PersistentVolumeClaim"]
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"], "every pod writes the same runs"
    _check_ray_cluster_spec(docs["RayCluster"]["spec"], claim["metadata"]["name"])


def test_kuberay_rayjob_entrypoint_is_a_valid_facenas_run():
    from orchestrator.cli import _parser
    from orchestrator.config import load_config

    (job,) = _load("kuberay-rayjob.yaml")
    assert job["kind"] == "RayJob" and job["apiVersion"] == "ray.io/v1"
    (claim,) = [d for d in _load("kuberay-raycluster.yaml") if d["kind"] == "PersistentVolumeClaim"]
    _check_ray_cluster_spec(job["spec"]["rayClusterSpec"], claim["metadata"]["name"])

    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[0] == "facenas"
    args = _parser().parse_args(argv[1:])
    assert args.command == "run"
    assert args.storage.startswith(MOUNT + "/"), "runs on the shared volume"
    # The config is the repository's own (copied to MOUNT/src), valid with the job's overrides.
    assert args.config.startswith(f"{MOUNT}/src/")
    local = ROOT / args.config.removeprefix(f"{MOUNT}/src/")
    config, _ = load_config(local, args.overrides)
    assert config.resources.gpus_per_trial == 1 and config.training.use_gpu
    # facenas reaches every node through the job's runtime environment, from the same volume.
    runtime_env = yaml.safe_load(job["spec"]["runtimeEnvYAML"])
    assert runtime_env["pip"] == [f"{MOUNT}/src"]


# -- local multi-node script -------------------------------------------------------------------------------


def _script(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout, env=env)


def test_local_cluster_script_parses_and_dry_runs():
    assert subprocess.run(["bash", "-n", str(SCRIPT)]).returncode == 0
    default_env = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_MODE"}  # conftest turns auth off
    proc = _script("--dry-run", "start", "--workers", "2", "--port", "7011", env=default_env)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    head = [ln for ln in lines if "# node head" in ln]
    workers = [ln for ln in lines if "# node worker" in ln]
    assert len(head) == 1 and "start --block --head --port 7011 --node-ip-address 127.0.0.1" in head[0]
    assert len(workers) == 2 and all("127.0.0.1:7011" in ln for ln in workers)
    assert "get-auth-token --generate" in proc.stdout, "token authentication is the default"
    proc = _script("--dry-run", "start", env=dict(os.environ, RAY_AUTH_MODE="disabled"))
    assert "get-auth-token" not in proc.stdout and "RAY_AUTH_MODE=disabled" in proc.stdout


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["start", "--workers", "x"], "--workers must be a whole number"),
        (["start", "--cpus", "0"], "--cpus must be a whole number >= 1"),
        (["reboot"], "unknown argument 'reboot'"),
    ],
)
def test_local_cluster_script_refuses_bad_arguments(args, fragment):
    proc = _script("--dry-run", *args)
    assert proc.returncode == 2 and fragment in proc.stderr and len(proc.stderr.splitlines()) == 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.integration
@pytest.mark.slow  # about 20 s alone, 45 s on a busy 2-core machine
def test_local_cluster_starts_two_loopback_nodes_and_stops_only_them(tmp_path):
    env = dict(
        os.environ, RAY_AUTH_MODE="disabled", LOCAL_CLUSTER_DIR=str(tmp_path / "state"),
        RAY=str(Path(sys.executable).with_name("ray")),
    )
    env.pop("RAY_ADDRESS", None)
    port = _free_port()
    started = time.monotonic()
    proc = _script("start", "--workers", "1", "--port", str(port), env=env)
    try:
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert time.monotonic() - started < 90
        status = _script("status", env=env)
        assert status.returncode == 0 and "2 node(s) alive" in status.stdout, status.stdout + status.stderr
        probe = subprocess.run(
            [sys.executable, "-c", (
                "import ray, sys; ray.init(address=sys.argv[1], log_to_driver=False); "
                "print(sorted(n['NodeManagerAddress'] for n in ray.nodes() if n['Alive']))"
            ), f"127.0.0.1:{port}"],
            capture_output=True, text=True, timeout=60, env=env,
        )
        assert probe.stdout.strip().splitlines()[-1] == "['127.0.0.1', '127.0.0.1']", probe.stderr[-2000:]
        groups = [int((tmp_path / "state" / f"{n}.pgid").read_text()) for n in ("head", "worker1")]
    finally:
        stop = _script("stop", env=env)
    assert stop.returncode == 0 and "stopped 2 node(s)" in stop.stdout, stop.stdout + stop.stderr
    for pgid in groups:  # every process of both nodes is gone
        with pytest.raises(ProcessLookupError):
            os.killpg(pgid, 0)
    assert _script("status", env=env).returncode == 2
