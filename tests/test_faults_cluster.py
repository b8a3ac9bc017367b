"""A worker node dies mid-search (issue 5, fault test a) on a 3-node ``ray.cluster_utils.Cluster``.

The head (no CPUs: the driver and the benchmark store live there) and two 1-CPU worker nodes, all on
127.0.0.1. Once a trial has reported an early epoch (so it has a per-epoch checkpoint and epochs left),
the worker node it runs on is lost without warning: its trial process is SIGKILLed and the node removed. Tune retries its trial (``resources.max_failures``) on the surviving node, which continues from
the evaluation's checkpoint: no epoch is trained twice. The run completes with one row per evaluation in
``results.parquet`` and one stored evaluation per architecture.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

NUM_SAMPLES = 5
EPOCHS = 8
RAW = {
    "name": "node-loss",
    "seed": 5,
    "data": {"dataset": "digits", "max_samples": 600},
    "space": {"d_min": 3, "d_max": 5, "w_min": 8, "w_max": 16, "w_step": 4},
    "searcher": {"name": "random", "num_samples": NUM_SAMPLES, "epochs": EPOCHS},
    "training": {"batch_size": 16},
    "resources": {"cpus_per_trial": 1, "max_failures": 2},
}


@pytest.fixture
def cluster():
    import ray
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    node = {"node_ip_address": "127.0.0.1", "object_store_memory": 120 * 1024**2}
    c = Cluster(initialize_head=True, head_node_args={**node, "num_cpus": 0, "include_dashboard": False})
    workers = [c.add_node(num_cpus=1, **node) for _ in range(2)]
    c.wait_for_nodes()
    ray.init(address=c.address, namespace="facenas-faults", logging_level=logging.ERROR, log_to_driver=False)
    try:
        yield c, workers
    finally:
        ray.shutdown()
        c.shutdown()


def _reports(trial_dir: Path) -> list[dict]:
    lines = (trial_dir / "result.json").read_text().splitlines() if (trial_dir / "result.json").is_file() else []
    return [json.loads(ln) for ln in lines if ln.strip()]


def _parent_pid(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as fh:  # "pid (comm) state ppid ..."; comm may hold spaces
        return int(fh.read().rsplit(")", 1)[1].split()[1])


def _node_running(pid: int, nodes: list):
    """The ``cluster_utils`` node whose raylet is an ancestor of ``pid`` (Ray workers are its children)."""
    from ray._private import ray_constants

    raylets = {n.all_processes[ray_constants.PROCESS_TYPE_RAYLET][0].process.pid: n for n in nodes}
    try:
        while pid > 1:
            if pid in raylets:
                return raylets[pid]
            pid = _parent_pid(pid)
    except (OSError, IndexError, ValueError):
        return None
    return None


def test_worker_node_lost_mid_search(cluster, tmp_path):
    from orchestrator.config import parse_config
    from orchestrator.experiment import execute, prepare

    c, workers = cluster
    config = parse_config(RAW)
    paths = prepare(config, config.model_dump(mode="json"), storage=str(tmp_path), name=RAW["name"])
    checkpoints = paths.root / "search" / "_checkpoints"
    removed: list[int] = []  # the pid of the trial process lost with its node

    def lose_the_node_of_a_training_trial() -> None:
        # A trial that reported epoch 1 or 2 of 8 has a checkpoint on disk and several epochs to go. Its
        # process is killed with its node (a lost node takes its workers at once), so the trial cannot
        # finish in the moment the raylet takes to die. Tune writes each trial's result.json to its
        # session's staging folder at once and syncs it to the run folder later, so read the staging copy.
        staging = Path(c.head_node.get_session_dir_path()) / "artifacts"
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            for trial_dir in staging.glob("*/*/driver_artifacts/*"):
                try:
                    reports = [r for r in _reports(trial_dir) if "epoch" in r]
                except ValueError:  # a line the driver is still writing
                    continue
                if reports and 1 <= int(reports[-1]["epoch"]) <= 2 and checkpoints.is_dir():
                    pid = int(reports[-1]["pid"])
                    node = _node_running(pid, workers)
                    if node is None:
                        continue
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        continue
                    c.remove_node(node, allow_graceful=False)
                    removed.append(pid)
                    return
            time.sleep(0.01)

    killer = threading.Thread(target=lose_the_node_of_a_training_trial, daemon=True)
    killer.start()
    best = execute(config, paths)
    killer.join(timeout=5)
    assert removed, "the worker node was never removed mid-training"

    # Every evaluation once, all ok: nothing lost, nothing duplicated.
    frame = pd.read_parquet(paths.results)
    assert len(frame) == NUM_SAMPLES and frame["trial_id"].is_unique and frame["arch_key"].is_unique
    assert (frame["status"] == "ok").all(), frame[["status", "error"]]
    assert best["evaluations"] == NUM_SAMPLES
    from tests.cli_driver import evaluations_stored

    assert evaluations_stored(tmp_path) == NUM_SAMPLES

    # The interrupted trial ran again in another process and went on from its checkpoint: its epochs
    # never repeat (a restart from scratch would report epoch 1 again). The new process first reports the
    # checkpoint's epoch again, marked replayed (orchestrator.trial): the epoch it continues after.
    retried = 0
    for trial_dir in sorted((paths.root / "search").glob("trial_*")):
        every = [r for r in _reports(trial_dir) if "epoch" in r]
        reports = [r for r in every if not r.get("replayed")]
        for i, replayed in enumerate(every):
            if replayed.get("replayed"):
                after = every[i + 1]
                assert after["pid"] == replayed["pid"] and int(after["epoch"]) == int(replayed["epoch"]) + 1, every
        epochs = [int(r["epoch"]) for r in reports]
        assert epochs == sorted(set(epochs)), (trial_dir.name, epochs)
        assert epochs[-1] == EPOCHS
        pids = [r["pid"] for r in reports]
        if len(set(pids)) > 1:
            switch = next(i for i in range(1, len(pids)) if pids[i] != pids[i - 1])
            assert epochs[switch - 1] >= 1 and epochs[switch] > epochs[switch - 1]
            retried += 1
            assert pids[switch - 1] in removed, "the retried trial is not the one whose node was lost"
    assert retried >= 1, "no trial was retried after the node was removed"
