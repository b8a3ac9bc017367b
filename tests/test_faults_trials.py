"""Faults inside trials and in the benchmark store (issue 5, fault tests c and d), on one local Ray.

(d) A search stage whose trials raise, report NaN / +inf / -inf, run out of memory (``MemoryError``) or
are OOM-killed (the worker process dies of SIGKILL), next to trials that train normally through the real
``evaluate_candidate``, and one that diverges for real (a huge learning rate): every trial gets one row,
the faulty ones ``failed`` with their reason, the others ``ok``; the searcher proposes all its budget.

(c) Eight Tune trials write their evaluations in batches through the store client while the store actor
is killed (``no_restart=False``) again and again: every acknowledged row is on disk afterwards, in exactly
one Parquet row (not only after de-duplication).
"""

from __future__ import annotations

import dataclasses
import os
import signal
import time
from typing import Any

import pyarrow.parquet as pq
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SPACE = {"d_min": 2, "d_max": 6, "w_min": 8, "w_max": 32, "w_step": 4}
DATA = {"name": "digits", "path": None, "split_seed": 0, "val_fraction": 0.2, "test_fraction": 0.2, "max_samples": 200}
FAULTS = {  # suggestion index -> what its trial does
    0: "raise",
    1: "nan",
    2: "ok",
    3: "inf",
    4: "memory",
    5: "-inf",
    6: "oom_kill",
    7: "diverge",
    8: "ok",
}
REASONS = {  # the reason its row must give
    "raise": "RuntimeError: injected: the data loader crashed",
    "memory": "MemoryError: injected: out of memory while allocating a batch",
    "oom_kill": "died",  # Ray: "The actor died unexpectedly ..." / "worker died"
    "nan": "val_acc is not finite",
    "inf": "val_acc is not finite",
    "-inf": "val_acc is not finite",
    "diverge": "training diverged: train_loss=nan",  # the trainer's own message
}


def faulty_trial(config: dict[str, Any], job: dict[str, Any]) -> None:
    """A Tune function trainable: the fault its architecture was assigned, else the real evaluation."""
    from ray import tune

    from orchestrator.evaluate import evaluate_candidate
    from search_algos.spaces import decode_arch

    inner = job["inner"]
    arch = decode_arch("global", config["arch"])
    kind = job["faults"][arch.key()]
    base = {"arch": arch.to_json(), "arch_key": arch.key(), "epochs": config["epochs"], "cached": False}
    if kind == "raise":
        raise RuntimeError("injected: the data loader crashed")
    if kind == "memory":
        raise MemoryError("injected: out of memory while allocating a batch")
    if kind == "oom_kill":  # what the kernel's OOM killer does to a worker
        os.kill(os.getpid(), signal.SIGKILL)
    if kind in ("nan", "inf", "-inf"):
        tune.report({inner.metric: float(kind), **base, "params": 1000.0, "status": "ok", "error": ""})
        return
    if kind == "diverge":
        inner = dataclasses.replace(inner, training={**inner.training, "lr": 1e12})
    evaluate_candidate(config, inner)


def _searcher():
    from search_algos.random_search import RandomArchSearcher
    from search_algos.spaces import GlobalSpace

    return RandomArchSearcher(
        GlobalSpace(**SPACE), num_samples=len(FAULTS), epochs=2, metric="val_acc", mode="max", seed=11
    )


def test_failing_trials_are_rows_with_reasons_and_the_search_goes_on(ray_local, tmp_path, capsys):
    from orchestrator.config import ResourcesConfig, TrainingConfig
    from orchestrator.evaluate import EvalJob
    from orchestrator.pipeline import Stage, run_stage
    from orchestrator.store import StoreClient
    from search_algos.spaces import decode_arch

    proposals = [_searcher().propose(i)["arch"] for i in FAULTS]
    keys = [decode_arch("global", a).key() for a in proposals]
    assert len(set(keys)) == len(keys), "the seed must give distinct architectures"
    faults = {key: FAULTS[i] for i, key in enumerate(keys)}

    store = StoreClient.start(str(tmp_path / "benchmark"))
    training = TrainingConfig(batch_size=16).model_dump()
    inner = EvalJob(
        space="global", data=DATA, training=training, seed=0, store=store, run="faults", stage="search",
        metric="val_acc", storage_path=str(tmp_path / "run"),
    )
    stage = Stage(
        name="search", make_searcher=lambda _: _searcher(), job={"inner": inner, "faults": faults},
        trainable=faulty_trial, total=lambda _: len(FAULTS),
    )
    resources = ResourcesConfig(max_failures=0).model_dump()
    outcome = run_stage(
        stage, run_dir=tmp_path / "run", earlier={}, metric="val_acc", mode="max",
        resources=resources, training=training,
    )

    frame = outcome.frame
    assert len(frame) == len(FAULTS) and frame["trial_id"].is_unique
    assert outcome.summary == {"evaluations": len(FAULTS), "proposed": len(FAULTS)}, "the searcher carried on"
    rows = {kind: frame[frame["arch_key"] == key].iloc[0] for key, kind in faults.items()
            if (frame["arch_key"] == key).any()}
    # Trials that died before reporting have no arch_key from a report: match them by their config's arch.
    for i, key in enumerate(keys):
        if faults[key] not in rows:
            match = frame[frame["arch"] == proposals[i]]
            assert len(match) == 1, (faults[key], frame[["arch_key", "status", "error"]])
            rows[faults[key]] = match.iloc[0]
    for kind, row in rows.items():
        if kind == "ok":
            assert row["status"] == "ok" and row["error"] == "" and 0 <= row["value"] <= 100, row.to_dict()
            continue
        assert row["status"] == "failed", (kind, row.to_dict())
        assert REASONS[kind] in row["error"], (kind, row["error"])
        assert "\n" not in row["error"]
    # Only the evaluations that finished are in the store; nothing failed was stored as a result.
    stored = {r["arch_key"] for r in store.rows(run="faults")}
    assert stored == {key for key, kind in faults.items() if kind == "ok"}
    # The progress lines name every failure and never count a non-finite value as the best.
    out = capsys.readouterr().out
    assert out.count("FAILED") == len(FAULTS) - 2, out
    assert "FAILED: error" not in out and "FAILED: \n" not in out
    assert "best=inf" not in out and "best=nan" not in out


# -- (c) store actor killed while 8 trials write ---------------------------------------------------------


def writer_trial(config: dict[str, Any], job: Any) -> None:
    """Writes ``rows`` evaluations in batches of ``batch``; reports the keys each acknowledged batch held."""
    from ray import tune

    store, worker = job, config["worker"]
    acknowledged: list[str] = []
    for start in range(0, config["rows"], config["batch"]):
        batch = [
            {
                "space": "global", "arch_key": f"w{worker}-{i}", "config": {"i": i}, "dataset_id": "d",
                "fidelity": 1, "seed": worker, "metrics": {"val_acc": float(i)}, "cost_s": 0.0, "run": "c",
            }
            for i in range(start, min(start + config["batch"], config["rows"]))
        ]
        store.put_many(batch)  # returned: the whole batch is durable (written now or before)
        acknowledged.extend(row["arch_key"] for row in batch)
        time.sleep(0.02)
    tune.report({"acknowledged": ",".join(acknowledged), "count": len(acknowledged)})


def test_acknowledged_batches_survive_store_kills_once_on_disk(ray_local, tmp_path):
    import threading

    from ray import tune

    from orchestrator.store import StoreClient
    from tests.orchestrator.test_store import _kill_and_wait_for_restart

    root = tmp_path / "benchmark"
    client = StoreClient.start(str(root))
    n_trials, n_rows, batch = 8, 60, 4
    killer_pids: list[int] = []

    def kill_repeatedly() -> None:
        for threshold in (40, 160, 320):
            deadline = time.monotonic() + 60
            while client.count() < threshold and time.monotonic() < deadline:
                time.sleep(0.02)
            killer_pids.append(_kill_and_wait_for_restart(client))

    killer = threading.Thread(target=kill_repeatedly)
    killer.start()
    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(writer_trial, job=client), {"cpu": 0.5}),
        param_space={"worker": tune.grid_search(list(range(n_trials))), "rows": n_rows, "batch": batch},
        tune_config=tune.TuneConfig(max_concurrent_trials=n_trials),
        run_config=tune.RunConfig(storage_path=str(tmp_path / "tune"), name="writers", verbose=0),
    )
    grid = tuner.fit()
    killer.join()

    assert len(killer_pids) == 3, "the store was killed three times while the trials wrote"
    assert not grid.errors
    acknowledged = [key for r in grid for key in r.metrics["acknowledged"].split(",")]
    assert len(acknowledged) == n_trials * n_rows
    on_disk: list[tuple] = []
    for part in sorted((root / "evaluations").glob("part-*.parquet")):
        table = pq.read_table(part).to_pandas()
        on_disk += list(zip(table["arch_key"], table["seed"]))
    keys = [k for k, _ in on_disk]
    assert sorted(keys) == sorted(acknowledged), "every acknowledged row on disk, and nothing else"
    assert len(keys) == len(set(keys)), "no row written twice"
    assert StoreClient.start(str(root)).count() == n_trials * n_rows
