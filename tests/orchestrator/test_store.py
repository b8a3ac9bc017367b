"""Benchmark store: durable Parquet parts, idempotent puts, schema checks, compaction, the Ray actor."""

from __future__ import annotations

import gc
import json
import math
import os
import pickle
import shutil
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from orchestrator.store import (
    DATASET_COLUMNS,
    EVALUATION_COLUMNS,
    BenchmarkStore,
    StoreClient,
    StoreError,
)


def _row(arch_key: str = "a1", **overrides) -> dict:
    row = {
        "space": "global",
        "arch_key": arch_key,
        "config": json.dumps({"arch": [3, 1, 2], "lr": 0.01}),
        "dataset_id": "digits",
        "fidelity": 10,
        "seed": 0,
        "metrics": {"val_acc": 0.91, "test_acc": 0.9, "params": 12345.0},
        "cost_s": 1.5,
        "run": "r1",
    }
    row.update(overrides)
    return row


def _parts(root, table: str = "evaluations") -> list[str]:
    folder = os.path.join(root, table)
    return sorted(n for n in os.listdir(folder) if n.endswith(".parquet"))


def _key(row: dict) -> tuple:
    return (row["space"], row["arch_key"], row["dataset_id"], row["fidelity"], row["seed"])


# ------------------------------------------------------------------------------------------------ unit


def test_put_lookup_round_trip(tmp_path):
    store = BenchmarkStore(str(tmp_path))
    assert store.put(_row(created_at=1000.0)) is True
    got = store.lookup("global", "a1", "digits", 10, 0)
    assert set(got) == set(EVALUATION_COLUMNS)
    assert got["metrics"] == {"val_acc": 0.91, "test_acc": 0.9, "params": 12345.0}
    assert json.loads(got["config"]) == {"arch": [3, 1, 2], "lr": 0.01}
    assert (got["fidelity"], got["seed"], got["cost_s"], got["created_at"]) == (10, 0, 1.5, 1000.0)
    # every part of the key matters
    assert store.lookup("global", "a1", "digits", 11, 0) is None
    assert store.lookup("global", "a1", "digits", 10, 1) is None
    assert store.lookup("global", "a1", "faces", 10, 0) is None
    assert store.lookup("other", "a1", "digits", 10, 0) is None
    assert store.ping() is True


def test_put_is_idempotent_also_across_reload(tmp_path):
    store = BenchmarkStore(str(tmp_path))
    assert store.put(_row()) is True
    assert store.put(_row(metrics={"val_acc": 0.5})) is False
    assert store.count() == 1 and len(_parts(tmp_path)) == 1
    reloaded = BenchmarkStore(str(tmp_path))
    assert reloaded.put(_row(metrics={"val_acc": 0.1})) is False
    assert reloaded.count() == 1 and len(_parts(tmp_path)) == 1
    assert reloaded.lookup("global", "a1", "digits", 10, 0)["metrics"]["val_acc"] == 0.91


def test_reload_sees_everything(tmp_path):
    store = BenchmarkStore(str(tmp_path))
    rows = [_row(f"a{i}", seed=i % 3, created_at=100.0 + i) for i in range(7)]
    for r in rows:
        store.put(r)
    store.put_dataset("digits", "sklearn digits", {"n_images": 1797, "mean_intensity": 0.3})
    reloaded = BenchmarkStore(str(tmp_path))
    assert reloaded.count() == 7
    assert [r["arch_key"] for r in reloaded.rows()] == [r["arch_key"] for r in rows]
    assert reloaded.rows() == store.rows()
    assert reloaded.dataset("digits")["features"] == {"n_images": 1797.0, "mean_intensity": 0.3}


def test_put_many_writes_one_file(tmp_path):
    store = BenchmarkStore(str(tmp_path))
    store.put(_row("old"))
    flags = store.put_many([_row("n1"), _row("old"), _row("n2"), _row("n1")])
    assert flags == [True, False, True, False]
    assert store.count() == 3
    assert len(_parts(tmp_path)) == 2
    assert store.put_many([_row("old")]) == [False]
    assert len(_parts(tmp_path)) == 2  # nothing new, no file


def test_put_many_rejects_the_whole_batch(tmp_path):
    store = BenchmarkStore(str(tmp_path))
    with pytest.raises(ValueError, match=r"row 1: .*'seed'"):
        store.put_many([_row("ok"), _row("bad", seed="3")])
    assert store.count() == 0 and _parts(tmp_path) == []


@pytest.mark.parametrize(
    "overrides, column",
    [
        ({"seed": "0"}, "seed"),
        ({"fidelity": 2.5}, "fidelity"),
        ({"fidelity": True}, "fidelity"),
        ({"cost_s": float("inf")}, "cost_s"),
        ({"space": 3}, "space"),
        ({"metrics": {"val_acc": float("inf")}}, "metrics"),
        ({"metrics": {"img": object()}}, "metrics"),
        ({"metrics": "not json"}, "metrics"),
        ({"config": [1, 2]}, "config"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_put_validates_columns(tmp_path, overrides, column):
    store = BenchmarkStore(str(tmp_path))
    with pytest.raises(ValueError, match=repr(column)):
        store.put(_row(**overrides))


def test_put_requires_every_column_and_allows_nan_metrics(tmp_path):
    store = BenchmarkStore(str(tmp_path))
    row = _row()
    del row["seed"]
    with pytest.raises(ValueError, match="missing column 'seed'"):
        store.put(row)
    assert store.put(_row(metrics={"val_acc": float("nan")}, seed=np.int64(4))) is True
    assert math.isnan(store.lookup("global", "a1", "digits", 10, 4)["metrics"]["val_acc"])
    assert math.isnan(BenchmarkStore(str(tmp_path)).rows()[0]["metrics"]["val_acc"])


def test_leftover_tmp_file_is_ignored(tmp_path):
    store = BenchmarkStore(str(tmp_path))
    store.put(_row())
    folder = tmp_path / "evaluations"
    fresh = folder / "part-1-deadbeef.parquet.tmp"
    stale = folder / "part-2-deadbeef.parquet.tmp"
    fresh.write_bytes(b"half a parquet file")
    stale.write_bytes(b"half a parquet file")
    an_hour_ago = time.time() - 3600
    os.utime(stale, (an_hour_ago, an_hour_ago))
    reloaded = BenchmarkStore(str(tmp_path))
    assert reloaded.count() == 1
    assert not stale.exists()  # a crash leftover is removed
    assert fresh.exists()  # a young one may be another writer's put in flight: left alone


def _evaluation_table(drop: str | None = None, **replace: pa.Array) -> pa.Table:
    row = _row("foreign", created_at=1.0, metrics=json.dumps({"val_acc": 0.5}))
    table = pa.table({k: [v] for k, v in row.items()})
    for name, array in replace.items():
        table = table.set_column(table.column_names.index(name), name, array)
    return table.drop_columns([drop]) if drop else table


@pytest.mark.parametrize(
    "table, words",
    [
        (_evaluation_table(drop="seed"), "missing column 'seed'"),
        (_evaluation_table(seed=pa.array(["0"])), "column 'seed' is string, expected int64"),
        (_evaluation_table(run=pa.array([None], pa.string())), "empty values in column 'run'"),
    ],
)
def test_wrong_schema_names_the_file_and_touches_nothing(tmp_path, table, words):
    store = BenchmarkStore(str(tmp_path))
    store.put(_row())
    store.put_dataset("digits", "digits", {"n": 1.0})
    bad = tmp_path / "evaluations" / "part-9-badbadba.parquet"
    pq.write_table(table, bad)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    with pytest.raises(StoreError) as info:
        BenchmarkStore(str(tmp_path))
    message = str(info.value)
    assert str(bad) in message and words in message and "\n" not in message
    assert "move it away or delete it" in message
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before
    bad.unlink()
    assert BenchmarkStore(str(tmp_path)).count() == 1


def test_unreadable_part_is_a_store_error(tmp_path):
    folder = tmp_path / "datasets"
    folder.mkdir()
    bad = folder / "part-1-00000000.parquet"
    bad.write_bytes(b"not parquet at all")
    with pytest.raises(StoreError, match="not a readable Parquet file") as info:
        BenchmarkStore(str(tmp_path))
    assert str(bad) in str(info.value)


def test_compaction_keeps_every_row_once(tmp_path):
    store = BenchmarkStore(str(tmp_path))  # default threshold: more than 64 parts
    rows = [_row(f"a{i}", created_at=float(i)) for i in range(64)]
    for r in rows:
        store.put(r)
    assert len(_parts(tmp_path)) == 64
    store.put(_row("a64", created_at=64.0))
    assert len(_parts(tmp_path)) == 1
    for i in range(65, 70):
        store.put(_row(f"a{i}", created_at=float(i)))
    reloaded = BenchmarkStore(str(tmp_path))
    assert reloaded.count() == 70
    assert [r["arch_key"] for r in reloaded.rows()] == [f"a{i}" for i in range(70)]


def test_parts_to_merge_takes_the_lowest_crowded_size_tier():
    from orchestrator.store import _parts_to_merge

    assert _parts_to_merge([1, 1, 1]) == [0, 1, 2]
    assert _parts_to_merge([100, 1, 40, 1, 3]) == [1, 3]  # tier 0 (1 row) before tier 1 (3 rows)
    assert _parts_to_merge([100, 2, 3, 40, 5]) == [1, 2]  # 2 and 3 rows: both tier 1
    assert _parts_to_merge([64, 32, 8, 16]) == [2, 3]  # one part per tier: the two smallest
    assert _parts_to_merge([0, 0, 5]) == [0, 1]  # parts whose rows are all kept elsewhere


def test_filling_the_store_rewrites_each_row_at_most_log2_rows_times(tmp_path, monkeypatch):
    import orchestrator.store as store_module

    written: list[int] = []
    real = store_module._write_part

    def counting(directory, table):
        written.append(table.num_rows)
        return real(directory, table)

    monkeypatch.setattr(store_module, "_write_part", counting)
    store = BenchmarkStore(str(tmp_path), max_parts=16)  # more than log2(rows) tiers fit
    rows = 600
    for i in range(rows):
        store.put(_row(f"a{i}", created_at=float(i)))
    assert store.count() == rows and len(_parts(tmp_path)) <= 16
    # Rewriting every row at each compaction wrote about rows^2 / (2 * max_parts) = 11,000 rows here.
    assert sum(written) <= rows * (1 + math.log2(rows))
    reloaded = BenchmarkStore(str(tmp_path), max_parts=16)
    assert [r["arch_key"] for r in reloaded.rows()] == [f"a{i}" for i in range(rows)]


def test_crash_between_compaction_steps_is_harmless(tmp_path):
    root = str(tmp_path / "store")
    aside = tmp_path / "aside"
    aside.mkdir()
    store = BenchmarkStore(root, max_parts=4)
    for i in range(4):
        store.put(_row(f"a{i}", created_at=float(i)))
    originals = _parts(root)
    for name in originals:
        shutil.copy2(os.path.join(root, "evaluations", name), aside / name)
    store.put(_row("a4", created_at=4.0))  # 5 parts > 4: compacts to one
    assert len(_parts(root)) == 1
    # Simulate a crash after the compacted part was written but before the old parts were removed.
    for name in originals:
        shutil.copy2(aside / name, os.path.join(root, "evaluations", name))
    assert len(_parts(root)) == 5
    reloaded = BenchmarkStore(root, max_parts=64)
    assert reloaded.count() == 5
    assert sorted(r["arch_key"] for r in reloaded.rows()) == [f"a{i}" for i in range(5)]
    # Loading a store over the threshold compacts it again, still one row per key.
    again = BenchmarkStore(root, max_parts=2)
    assert len(_parts(root)) == 1 and again.count() == 5


def test_load_keeps_the_earliest_duplicate(tmp_path):
    folder = tmp_path / "evaluations"
    folder.mkdir()
    late = _evaluation_table(created_at=pa.array([20.0]), metrics=pa.array(['{"val_acc": 0.2}']))
    early = _evaluation_table(created_at=pa.array([10.0]), metrics=pa.array(['{"val_acc": 0.1}']))
    pq.write_table(late, folder / "part-1-00000000.parquet")
    pq.write_table(early, folder / "part-2-00000000.parquet")
    store = BenchmarkStore(str(tmp_path))
    assert store.count() == 1
    assert store.rows()[0]["metrics"] == {"val_acc": 0.1}


@pytest.mark.parametrize(
    "value",
    [np.zeros((25, 25)), [0.1, 0.2], np.array(1.0), float("inf"), float("nan"), "0.3", True, None],
)
def test_put_dataset_rejects_non_scalar_or_non_finite(tmp_path, value):
    store = BenchmarkStore(str(tmp_path))
    with pytest.raises(ValueError, match="feature 'pixels'"):
        store.put_dataset("faces", "faces", {"n": 100, "pixels": value})
    assert store.datasets() == [] and _parts(tmp_path, "datasets") == []


def test_datasets_round_trip(tmp_path):
    store = BenchmarkStore(str(tmp_path))
    assert store.put_dataset("digits", "sklearn digits", {"n": 1797, "std": np.float32(0.25)})
    assert store.put_dataset("digits", "again", {"n": 1.0}) is False
    assert store.put_dataset("faces", "lfw subset", {})
    got = store.dataset("digits")
    assert set(got) == set(DATASET_COLUMNS)
    assert got["name"] == "sklearn digits" and got["features"] == {"n": 1797.0, "std": 0.25}
    assert store.dataset("nope") is None
    assert [d["dataset_id"] for d in BenchmarkStore(str(tmp_path)).datasets()] == ["digits", "faces"]


def test_rows_filters(tmp_path):
    store = BenchmarkStore(str(tmp_path))
    store.put_many(
        [
            _row("a", space="s1", dataset_id="d1", run="r1", created_at=1.0),
            _row("b", space="s1", dataset_id="d2", run="r2", created_at=2.0),
            _row("c", space="s2", dataset_id="d1", run="r2", created_at=3.0),
        ]
    )

    def keys(**filters):
        return [r["arch_key"] for r in store.rows(**filters)]

    assert keys() == ["a", "b", "c"]
    assert keys(space="s1") == ["a", "b"]
    assert keys(dataset_id="d1") == ["a", "c"]
    assert keys(run="r2") == ["b", "c"]
    assert keys(space="s1", run="r2") == ["b"]
    assert keys(space="s3") == []
    assert store.rows(space="s2")[0]["metrics"]["val_acc"] == 0.91


def test_lookup_many_answers_like_lookup_in_order(tmp_path):
    store = BenchmarkStore(str(tmp_path))
    store.put_many([_row("a", created_at=2.0), _row("b", seed=3), _row("a", config={"training": {"lr": 1}},
                                                                         created_at=1.0)])
    protocol = store.lookup("global", "a", "digits", 10, 0)["protocol"]  # the earliest row of "a"
    keys = [("global", "b", "digits", 10, 3), ("global", "zz", "digits", 10, 0), ("global", "a", "digits", 10, 0),
            ["global", "a", "digits", 10, 0, ""], ("global", "a", "digits", 10, 0, "nope"),
            ("global", "b", "digits", 10, 0)]
    expected = [store.lookup(*k) for k in keys]
    assert store.lookup_many(keys) == expected
    assert [r is not None for r in expected] == [True, False, True, True, False, False]
    assert expected[2]["protocol"] == protocol != "" and expected[3]["protocol"] == ""
    assert store.lookup_many([]) == []
    assert store.stats()["lookups"] == 1 + 2 * len(keys) and store.stats()["hits"] == 1 + 2 * 3


def test_lookup_many_refuses_a_malformed_key_and_looks_up_nothing(tmp_path):
    store = BenchmarkStore(str(tmp_path))
    with pytest.raises(ValueError, match=r"lookup key 1 must be \(space, arch_key"):
        store.lookup_many([("global", "a", "digits", 10, 0), ("global", "a")])
    assert store.stats()["lookups"] == 0


def test_stats_count_since_the_instance_started(tmp_path):
    store = BenchmarkStore(str(tmp_path))
    assert store.stats() == {"rows": 0, "lookups": 0, "hits": 0, "puts": 0}
    assert store.put(_row("a")) and not store.put(_row("a"))  # the second put writes nothing
    assert store.put_many([_row("b"), _row("c"), _row("b")]) == [True, True, False]
    assert store.lookup("global", "a", "digits", 10, 0) is not None
    assert store.lookup("global", "zz", "digits", 10, 0) is None
    assert store.stats() == {"rows": 3, "lookups": 2, "hits": 1, "puts": 3}
    reloaded = BenchmarkStore(str(tmp_path))  # rows come from disk, the counters start again
    assert reloaded.stats() == {"rows": 3, "lookups": 0, "hits": 0, "puts": 0}


def test_client_pickles_without_a_handle(tmp_path):
    client = StoreClient(str(tmp_path), namespace="ns")
    client._handle = object()  # stands in for a cached actor handle
    copy = pickle.loads(pickle.dumps(client))
    assert copy._handle is None
    assert (copy.root, copy.namespace, copy.name) == (client.root, "ns", client.name)
    assert client.name == StoreClient.actor_name(str(tmp_path))
    assert client.name.startswith("benchmark-store-") and len(client.name) == len("benchmark-store-") + 8
    assert StoreClient(str(tmp_path / "other")).name != client.name


# ----------------------------------------------------------------------------------------- integration


def _actor_pid(client: StoreClient) -> int:
    import ray

    handle = ray.get_actor(client.name, namespace=client.namespace)
    return ray.get(handle.__ray_call__.remote(lambda self: os.getpid()), timeout=30)


def _kill_and_wait_for_restart(client: StoreClient) -> int:
    """ray.kill returns before the actor is dead: wait until a new process answers; return its pid."""
    import ray

    old = _actor_pid(client)
    ray.kill(ray.get_actor(client.name, namespace=client.namespace), no_restart=False)
    deadline = time.monotonic() + 30
    while (pid := _actor_pid(client)) == old and time.monotonic() < deadline:
        time.sleep(0.05)
    return pid


@pytest.mark.integration
def test_start_twice_returns_the_same_actor(ray_local, tmp_path):
    ray = ray_local
    first = StoreClient.start(str(tmp_path))
    second = StoreClient.start(str(tmp_path))
    assert first._handle._actor_id == second._handle._actor_id
    actor = ray.get_actor(first.name, namespace="facenas")
    assert actor._actor_id == first._handle._actor_id
    assert first.put(_row()) is True
    assert second.put(_row()) is False
    assert second.lookup("global", "a1", "digits", 10, 0)["metrics"]["val_acc"] == 0.91
    # Ray collects a non-detached actor once its creating handle is gone, and get_if_exists returns a
    # borrowed handle: the store must outlive the first client anyway (it lives as long as the driver).
    pid = _actor_pid(second)
    del first, actor
    gc.collect()
    time.sleep(1.0)
    assert second.count() == 1 and _actor_pid(second) == pid


@pytest.mark.integration
def test_client_inside_a_ray_task(ray_local, tmp_path):
    ray = ray_local
    client = StoreClient.start(str(tmp_path))

    # Rows travel as arguments: workers import from the repository root, where this module is not.
    @ray.remote(num_cpus=0.25)
    def trial(store, row):
        key = (row["space"], row["arch_key"], row["dataset_id"], row["fidelity"], row["seed"])
        cached = store.lookup(*key)
        if cached is not None:
            return "cached", cached["metrics"]
        store.put(row)
        return "trained", store.lookup(*key)["metrics"]

    row = _row("t1", metrics={"val_acc": 0.5})
    assert ray.get(trial.remote(client, row)) == ("trained", {"val_acc": 0.5})
    assert ray.get(trial.remote(client, row)) == ("cached", {"val_acc": 0.5})
    assert ray.get(ray.remote(lambda s: s.put_dataset("d", "d", {"n": 1.0})).remote(client))
    assert client.dataset("d")["features"] == {"n": 1.0}
    with pytest.raises(ValueError, match="'seed'"):  # the store's own message, not a Ray traceback
        client.put(_row("bad", seed="x"))
    assert client.stats() == {"rows": 1, "lookups": 3, "hits": 2, "puts": 1}
    many = ray.get(ray.remote(lambda s, k: s.lookup_many(k)).remote(client, [_key(row), ("global", "zz", "d", 1, 0)]))
    assert many == [client.lookup(*_key(row)), None] and many[0]["metrics"] == {"val_acc": 0.5}
    with pytest.raises(ValueError, match="lookup key 0"):  # the store's own message through the client
        client.lookup_many([("global",)])


@pytest.mark.integration
def test_start_surfaces_a_bad_file_as_one_line(ray_local, tmp_path):
    bad = tmp_path / "evaluations" / "part-1-badbadba.parquet"
    bad.parent.mkdir(parents=True)
    pq.write_table(_evaluation_table(drop="seed"), bad)
    with pytest.raises(StoreError) as info:
        StoreClient.start(str(tmp_path))
    message = str(info.value)
    assert str(bad) in message and "missing column 'seed'" in message and "\n" not in message
    bad.unlink()  # the fix the message names; the dead actor must not block the next start
    assert StoreClient.start(str(tmp_path)).count() == 0


@pytest.mark.integration
def test_acknowledged_puts_survive_actor_kills(ray_local, tmp_path):
    ray = ray_local
    client = StoreClient.start(str(tmp_path))
    n_writers, n_rows = 8, 25

    @ray.remote(num_cpus=0.25, max_retries=0)
    def writer(store, rows):
        acknowledged = []
        for row in rows:
            store.put(row)  # returned = acknowledged (True, or False: already stored)
            acknowledged.append(row)
            time.sleep(0.01)
        return acknowledged

    batches = [
        [_row(f"w{w}-{i}", seed=w, metrics={"val_acc": i / n_rows}) for i in range(n_rows)]
        for w in range(n_writers)
    ]
    refs = [writer.remote(client, rows) for rows in batches]
    pids = [_actor_pid(client)]
    for threshold in (30, 80, 130):
        deadline = time.monotonic() + 30
        while client.count() < threshold and time.monotonic() < deadline:
            time.sleep(0.02)
        pids.append(_kill_and_wait_for_restart(client))
    acknowledged = [row for rows in ray.get(refs, timeout=120) for row in rows]

    assert len(set(pids)) == len(pids), f"the actor was not restarted by every kill: {pids}"
    assert len(acknowledged) == n_writers * n_rows
    stored = client.rows()
    stored_keys = [_key(r) for r in stored]
    assert len(stored_keys) == len(set(stored_keys)) == client.count()
    assert set(stored_keys) >= {_key(r) for r in acknowledged}
    for row in acknowledged[::17]:
        got = client.lookup(*_key(row))
        assert got["metrics"] == row["metrics"]
    # A fresh load from disk sees the same rows exactly once.
    reloaded = BenchmarkStore(str(tmp_path))
    assert sorted(_key(r) for r in reloaded.rows()) == sorted(stored_keys)


@pytest.mark.integration
def test_client_follows_a_recreated_actor(ray_local, tmp_path):
    ray = ray_local
    client = StoreClient.start(str(tmp_path))
    assert client.put(_row("before")) is True
    # Killed for good (no restart), then started again by the driver: the cached handle is dead, the
    # client must re-resolve the name within its retry window and find the reloaded store.
    ray.kill(ray.get_actor(client.name, namespace=client.namespace), no_restart=True)

    @ray.remote(num_cpus=0.25)
    def late_put(store, row):
        return store.put(row), store.count()

    ref = late_put.remote(client, _row("after"))
    time.sleep(1.0)
    StoreClient.start(str(tmp_path))
    assert ray.get(ref, timeout=60) == (True, 2)
    assert client.put(_row("third")) is True  # the driver's stale cached handle is replaced too
    assert client.count() == 3


@pytest.mark.integration
def test_client_gives_up_with_a_store_error(ray_local, tmp_path):
    client = StoreClient(str(tmp_path), retry_s=0.5)  # never started
    with pytest.raises(StoreError, match="unreachable for 0 s.*StoreClient.start") as info:
        client.count()
    assert "\n" not in str(info.value)


@pytest.mark.integration
def test_bad_file_found_on_restart_is_a_store_error(ray_local, tmp_path):
    ray = ray_local
    client = StoreClient.start(str(tmp_path))
    client.put(_row())
    bad = tmp_path / "evaluations" / "part-1-badbadba.parquet"
    pq.write_table(_evaluation_table(seed=pa.array(["0"])), bad)
    ray.kill(ray.get_actor(client.name, namespace=client.namespace), no_restart=False)
    deadline = time.monotonic() + 30  # ray.kill is asynchronous: the old process may answer a while
    with pytest.raises(StoreError, match="column 'seed' is string") as info:
        while time.monotonic() < deadline:
            client.count()  # the restarted actor cannot load: said at once, not after the retry window
            time.sleep(0.05)
    assert str(bad) in str(info.value)
    bad.unlink()
    assert StoreClient.start(str(tmp_path)).count() == 1
