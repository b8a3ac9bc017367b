"""HyperFD through the CLI on a local Ray: benchmark build (resumable), then the online protocol and Table 7."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml

from tests.cli_driver import evaluations_stored, facenas, write_config

TINY = [
    "searcher.domains=[blur]", "searcher.spaces=[detector_hpo]", "searcher.pool_size=3", "searcher.budget=2",
    "searcher.orders=2", "searcher.offline_datasets=2", "searcher.offline_configs=2", "searcher.epochs=1",
    "searcher.source_images=80", "searcher.min_images=15", "searcher.clustering_methods=[kmeans]",
    "searcher.clustering_ks=[2, 3]", "searcher.warmup_steps=10", "searcher.iters_per_task=2",
    "searcher.trans_iters=1", "data.n_images=20",
]  # fmt: skip


def _sets() -> list[str]:
    return [arg for item in TINY for arg in ("--set", item)]


@pytest.mark.integration
@pytest.mark.slow
def test_build_resumes_then_run_writes_table7_from_the_store(tmp_path):
    storage = tmp_path / "runs"
    first = facenas("benchmark", "build", "configs/hyperfd.yaml", "--storage", str(storage), *_sets(), timeout=600)
    assert first.returncode == 0, first.stderr[-2000:]
    rows = evaluations_stored(storage)
    assert rows == (1 + 1) * 3 + 2 * 2  # pool on source and online domain, 2 configs on 2 offline datasets
    assert "detector_hpo: 10 rows evaluated" in first.stdout

    again = facenas("benchmark", "build", "configs/hyperfd.yaml", "--storage", str(storage), *_sets(), timeout=600)
    assert again.returncode == 0 and "detector_hpo: 0 rows evaluated" in again.stdout
    assert evaluations_stored(storage) == rows

    run = facenas("run", "configs/hyperfd.yaml", "--storage", str(storage), "--name", "t7", *_sets(), timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert evaluations_stored(storage) == rows  # every online evaluation came from the store
    run_dir = storage / "t7"
    best = json.loads((run_dir / "best.json").read_text())
    ranks = best["normalized_rank"]["detector_hpo"]
    assert set(ranks) == {"HyperFD", "Random search", "Best on reference"}
    assert all(0.0 <= v <= 100.0 for v in ranks.values())
    table = pd.read_csv(run_dir / "table7.csv")
    assert len(table) == 3 * 2  # methods x orders, one domain
    assert "normalized rank" in (run_dir / "table7.md").read_text() and "| HyperFD |" in run.stdout
    results = pd.read_parquet(run_dir / "results.parquet")
    online = results[results.stage.str.startswith("online-")]
    assert len(online) == 2 * 2 and online.cached.all()  # B per domain per order, all lookups

    # mode: search on a dataset no run has seen: the ranker learnt from the store's rows picks the first
    # config, a random pick the second; both evaluations land in the same store.
    search = facenas("run", "configs/hyperfd.yaml", "--storage", str(storage), "--name", "new", *_sets(),
                     "--set", "searcher.mode=search", "--set", "data.domain=mask", "--set", "searcher.num_samples=2",
                     "--set", "searcher.warm_start=1", timeout=600)  # fmt: skip
    assert search.returncode == 0, search.stderr[-2000:]
    assert evaluations_stored(storage) == rows + 2
    best = json.loads((storage / "new" / "best.json").read_text())
    assert best["dataset"] == "mask" and len(best["warm_start"]["detector_hpo"]) == 1
    assert best["best_by_space"]["detector_hpo"]["val_ap50"] >= 0.0
    frame = pd.read_parquet(storage / "new" / "results.parquet")
    assert len(frame) == 2 and not frame.cached.any()
    assert frame.arch_key.iloc[0] == best["warm_start"]["detector_hpo"][0]  # the ranker's pick ran first


def test_benchmark_build_refuses_a_config_without_hyperfd(tmp_path):
    raw = yaml.safe_load(open("configs/quickstart.yaml"))
    path = write_config(tmp_path, "q", raw)
    out = facenas("benchmark", "build", str(path), "--storage", str(tmp_path / "runs"), timeout=120)
    assert out.returncode == 2 and "needs searcher.name: hyperfd" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "runs").exists()
