"""A worker node dies mid-search (issue 5, fault test a) on a 3-node ``ray.cluster_utils.Cluster``.

The head (no CPUs: the driver and the benchmark store live there) and two 1-CPU worker nodes, all on
127.0.0.1. Once both running trials have a per-epoch checkpoint, one worker node is removed without
warning. Tune retries its trial (``resources.max_failures``) on the surviving node, which continues from
the evaluation's checkpoint: no epoch is trained twice. The run completes with one row per evaluation in
``results.parquet`` and one stored evaluation per architecture.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

NUM_SAMPLES = 5
RAW = {
    "name": "node-loss",
    "seed": 5,
    "data": {"dataset": "digits", "max_samples": 300},
    "space": {"d_min": 3, "d_max": 5, "w_min": 8, "w_max": 16, "w_step": 4},
    "searcher": {"name": "random", "num_samples": NUM_SAMPLES, "epochs": 5},
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


def test_worker_node_lost_mid_search(cluster, tmp_path):
    from orchestrator.config import parse_config
    from orchestrator.experiment import execute, prepare

    c, workers = cluster
    config = parse_config(RAW)
    paths = prepare(config, config.model_dump(mode="json"), storage=str(tmp_path), name=RAW["name"])
    checkpoints = paths.root / "search" / "_checkpoints"
    removed: list[float] = []

    def remove_a_worker_mid_training() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if checkpoints.is_dir() and len(list(checkpoints.glob("*.pt"))) >= 2:  # both trials past epoch 1
                c.remove_node(workers[0], allow_graceful=False)
                removed.append(time.monotonic())
                return
            time.sleep(0.05)

    killer = threading.Thread(target=remove_a_worker_mid_training, daemon=True)
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
    # never repeat (a restart from scratch would report epoch 1 again).
    retried = 0
    for trial_dir in sorted((paths.root / "search").glob("trial_*")):
        reports = [r for r in _reports(trial_dir) if "epoch" in r]
        epochs = [int(r["epoch"]) for r in reports]
        assert epochs == sorted(set(epochs)), (trial_dir.name, epochs)
        assert epochs[-1] == RAW["searcher"]["epochs"]
        pids = [r["pid"] for r in reports]
        if len(set(pids)) > 1:
            switch = next(i for i in range(1, len(pids)) if pids[i] != pids[i - 1])
            assert epochs[switch - 1] >= 1 and epochs[switch] > epochs[switch - 1]
            retried += 1
    assert retried >= 1, "no trial was retried after the node was removed"
