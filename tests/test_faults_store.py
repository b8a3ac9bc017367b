"""The benchmark store keeps the training protocol in its key (issue 5, optional item), no Ray needed.

Before: a result trained with other settings (lr, batch, ...) had the same key, so it was never served
(``lookup_same_protocol`` refused it) and the new protocol's result could never be stored (puts are
idempotent per key): every such evaluation trained again, forever. Parts written before the column
existed are read with the protocol rebuilt from their config.
"""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq

from orchestrator.store import BenchmarkStore, check_store, protocol_of
from orchestrator.trial import StoreKey, lookup, record

KEY = ("global", "arch1", "digits", 3, 0)
SLOW = {"lr": 0.025, "batch_size": 16}
FAST = {"lr": 0.1, "batch_size": 16}


def _key(training):
    return StoreKey.trained(space=KEY[0], arch_key=KEY[1], dataset_id=KEY[2], fidelity=KEY[3], seed=KEY[4],
                            training=training)


def lookup_same_protocol(store, key, training):
    return lookup(store, _key(training), training=training)


def _record(store, training, value):
    record(store, key=_key(training), config={"arch": {"d": 3}, "epochs": 3, "training": training},
           metrics={"val_acc": value}, started=0.0, run="r")


def test_two_protocols_are_two_rows_each_served_to_its_own(tmp_path):
    store = BenchmarkStore(str(tmp_path))
    _record(store, SLOW, 80.0)
    assert lookup_same_protocol(store, KEY, FAST) is None  # not served as the other protocol
    _record(store, FAST, 90.0)  # and now it can be stored
    assert store.count() == 2
    assert lookup_same_protocol(store, KEY, SLOW)["metrics"] == {"val_acc": 80.0}
    assert lookup_same_protocol(store, KEY, FAST)["metrics"] == {"val_acc": 90.0}
    assert store.lookup(*KEY)["metrics"] == {"val_acc": 80.0}  # no protocol named: the earliest
    reloaded = BenchmarkStore(str(tmp_path))
    assert lookup_same_protocol(reloaded, KEY, FAST)["metrics"] == {"val_acc": 90.0}
    _record(reloaded, FAST, 95.0)  # still idempotent per (key, protocol)
    assert reloaded.count() == 2


def test_protocol_is_a_hash_of_the_training_settings():
    a = protocol_of({"training": {"lr": 0.025, "batch_size": 16}})
    assert a == protocol_of(json.dumps({"arch": 1, "training": {"batch_size": 16, "lr": 0.025}}))
    assert a != protocol_of({"training": {"lr": 0.025, "batch_size": 32}})
    assert protocol_of({"arch": 1}) == "" and len(a) == 16


def test_parts_written_before_the_protocol_column_still_load(tmp_path):
    config = json.dumps({"arch": {"d": 3}, "epochs": 3, "training": SLOW}, sort_keys=True)
    old = {"space": ["global"], "arch_key": ["arch1"], "config": [config], "dataset_id": ["digits"],
           "fidelity": pa.array([3], pa.int64()), "seed": pa.array([0], pa.int64()),
           "metrics": [json.dumps({"val_acc": 70.0})], "cost_s": [1.0], "run": ["old"], "created_at": [1.0]}
    folder = tmp_path / "evaluations"
    folder.mkdir(parents=True)
    pq.write_table(pa.table(old), folder / "part-1-0ldf0rma.parquet")
    check_store(str(tmp_path))  # accepted before Ray starts
    store = BenchmarkStore(str(tmp_path))
    hit = lookup_same_protocol(store, KEY, SLOW)
    assert hit["metrics"] == {"val_acc": 70.0} and hit["protocol"] == protocol_of(config)
    assert lookup_same_protocol(store, KEY, FAST) is None
    _record(store, FAST, 91.0)
    assert BenchmarkStore(str(tmp_path)).count() == 2
