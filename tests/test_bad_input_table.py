"""The bad-input table (issue 5): every malformed input is one clear line, exit code 2, no traceback,
and no change to existing runs or to the benchmark store.

Each case runs ``facenas`` in-process (``orchestrator.cli.main``) against a storage folder that already
holds a finished run, an interrupted run and a benchmark store; the whole folder tree (names and bytes)
is hashed before and after. Every case fails before Ray starts. Cases already covered one by one in
``tests/test_cli_bad_input.py`` are not repeated here.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from orchestrator.cli import main

GOOD = {
    "name": "t",
    "seed": 0,
    "data": {"dataset": "digits", "max_samples": 300},
    "space": {"d_min": 3, "d_max": 4, "w_min": 8, "w_max": 12, "w_step": 4},
    "searcher": {"name": "random", "num_samples": 2, "epochs": 1},
}
ALIGN = {
    "name": "a",
    "seed": 0,
    "space": {"name": "multipath", "layers": 3, "scales": 2},
    "searcher": {"name": "samos", "iterations": 2},
}


@dataclass
class World:
    """A storage folder with a finished run, an interrupted run and a benchmark store."""

    root: Path  # everything the test may touch lives under here
    storage: Path
    done: Path
    half: Path

    def config(self, payload: object, name: str = "c.yaml") -> str:
        path = self.root / "configs" / name
        path.parent.mkdir(exist_ok=True)
        path.write_text(payload if isinstance(payload, str) else yaml.safe_dump(payload))
        return str(path)

    def run(self, payload: object, *extra: str) -> list[str]:
        return ["run", self.config(payload), "--storage", str(self.storage), *extra]


def _tree_hash(root: Path) -> str:
    digest = hashlib.sha256()
    for folder, dirs, files in sorted(os.walk(root)):
        dirs.sort()
        digest.update(f"D {os.path.relpath(folder, root)}\n".encode())
        for name in sorted(files):
            path = Path(folder, name)
            digest.update(f"F {path.relative_to(root)} {hashlib.sha256(path.read_bytes()).hexdigest()}\n".encode())
    return digest.hexdigest()


@pytest.fixture
def world(tmp_path) -> World:
    from orchestrator.store import BenchmarkStore

    storage = tmp_path / "runs"
    done, half = storage / "done", storage / "half"
    for run in (done, half):
        (run / "search").mkdir(parents=True)
        (run / "config.yaml").write_text(yaml.safe_dump(dict(GOOD, name=run.name, storage=str(storage))))
    (done / "best.json").write_text('{"value": 90.0}\n')
    (done / "results.parquet").write_bytes(b"PAR1 stand-in")
    (half / "search" / "experiment_state.json").write_text("{}")
    store = BenchmarkStore(str(storage / "benchmark"))
    store.put({"space": "global", "arch_key": "k1", "config": {}, "dataset_id": "d", "fidelity": 1, "seed": 0,
               "metrics": {"val_acc": 50.0}, "cost_s": 1.0, "run": "done"})
    store.put_dataset("d", "digits", {"n": 10.0})
    return World(root=tmp_path, storage=storage, done=done, half=half)


# -- dataset files written by the cases -------------------------------------------------------------------


def _cifar_folder(world: World, first_batch: bytes | None) -> str:
    """A CIFAR-10 python folder whose ``data_batch_1`` is ``first_batch`` (None: left out)."""
    folder = world.root / "cifar"
    folder.mkdir()
    good = pickle.dumps({b"data": np.zeros((4, 3072), np.uint8), b"labels": [0, 1, 2, 3]}, protocol=2)
    for name in ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"):
        content = first_batch if name == "data_batch_1" else good
        if content is not None:
            (folder / name).write_bytes(content)
    return str(folder)


def _mnist_folder(world: World, *, images: bytes, labels: bytes) -> str:
    folder = world.root / "mnist"
    folder.mkdir()
    (folder / "train-images-idx3-ubyte").write_bytes(images)
    (folder / "train-labels-idx1-ubyte").write_bytes(labels)
    (folder / "t10k-images-idx3-ubyte").write_bytes(_idx_images(5))
    (folder / "t10k-labels-idx1-ubyte").write_bytes(_idx_labels(5))
    return str(folder)


def _idx_images(n: int) -> bytes:
    return (2051).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in (n, 28, 28)) + bytes(n * 784)


def _idx_labels(n: int) -> bytes:
    return (2049).to_bytes(4, "big") + n.to_bytes(4, "big") + bytes(n)


def _aflw_folder(world: World, *, mat: dict | bytes | None) -> str:
    """One 32x32 image with (or without) its .mat annotation."""
    from PIL import Image
    from scipy.io import savemat

    folder = world.root / "aflw"
    folder.mkdir()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(folder / "image00002.jpg")
    if isinstance(mat, dict):
        savemat(str(folder / "image00002.mat"), mat)
    elif isinstance(mat, bytes):
        (folder / "image00002.mat").write_bytes(mat)
    return str(folder)


def _aligned(path: str) -> dict:
    return dict(ALIGN, data={"dataset": "aflw2000", "path": path})


def _bad_store_part(world: World, table: pa.Table | bytes) -> None:
    path = world.storage / "benchmark" / "evaluations" / "part-0-deadbeef.parquet"
    if isinstance(table, bytes):
        path.write_bytes(table)
    else:
        pq.write_table(table, path)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- the table --------------------------------------------------------------------------------------------

Case = Callable[[World], list[str]]
CASES: dict[str, tuple[Case, str]] = {
    # config: keys, types, ranges, cross-field rules
    "unknown top-level key": (lambda w: w.run(dict(GOOD, epochs=3)), "epochs: unknown key"),
    "misspelt key in a section": (
        lambda w: w.run(dict(GOOD, searcher={"name": "random", "num_sample": 3})),
        "searcher.num_sample: unknown key; valid keys: name, num_samples",
    ),
    "seed of the wrong type": (lambda w: w.run(dict(GOOD, seed="abc")), "seed: "),
    "learning rate that is not a number": (
        lambda w: w.run(dict(GOOD, training={"lr": "fast"})), "training.lr: "),
    "momentum out of range": (
        lambda w: w.run(dict(GOOD, training={"momentum": 1.5})), "training.momentum: "),
    "val + test fractions >= 1": (
        lambda w: w.run(dict(GOOD, data={"dataset": "digits", "val_fraction": 0.6, "test_fraction": 0.5})),
        "val_fraction + test_fraction < 1 must hold",
    ),
    "space d_min > d_max": (
        lambda w: w.run(dict(GOOD, space={"d_min": 9, "d_max": 3})), "space"),
    "run name with a space": (lambda w: w.run(dict(GOOD, name="my run")), "name: "),
    "zero CPUs per trial": (
        lambda w: w.run(dict(GOOD, resources={"cpus_per_trial": 0})), "resources.cpus_per_trial: "),
    "too few samples": (
        lambda w: w.run(dict(GOOD, data={"dataset": "digits", "max_samples": 10})), "data.max_samples: "),
    "samos on the global space": (
        lambda w: w.run(dict(GOOD, searcher={"name": "samos"})), "searcher 'samos' (MONAS) needs space.name: multipath"),
    "config that is a YAML list": (lambda w: w.run("- seed: 1\n"), "expected a YAML mapping"),
    "config that is a YAML scalar": (
        lambda w: w.run("quickstart\n"),
        "expected a YAML mapping of sections (seed, data, space, searcher, ...) at the top level, got 'quickstart'; "
        "start from configs/quickstart.yaml",
    ),
    "--set on a config that is a YAML list": (
        lambda w: w.run("- seed: 1\n", "--set", "seed=2"), "at the top level, got a list; start from"),
    "detection data out of range": (
        lambda w: w.run(dict(GOOD, data={"dataset": "detection", "n_images": 3}, searcher={"name": "hyperfd"})),
        "c.yaml: data.n_images: input should be greater than or equal to 10, got 3",
    ),
    "unknown key in detection data": (
        lambda w: w.run(dict(GOOD, data={"dataset": "detection", "images": 3}, searcher={"name": "hyperfd"})),
        "c.yaml: data.images: unknown key; valid keys: dataset, domain, seed, image_size, n_images",
    ),
    "--set into a value": (lambda w: w.run(GOOD, "--set", "seed.x=1"), "'seed' is not a section"),
    # dataset files
    "cifar10 folder without a batch": (
        lambda w: w.run(dict(GOOD, data={"dataset": "cifar10", "path": _cifar_folder(w, None)})),
        "lacks data_batch_1",
    ),
    "cifar10 batch that is not a pickle": (
        lambda w: w.run(dict(GOOD, data={"dataset": "cifar10", "path": _cifar_folder(w, b"\x00garbage")})),
        "data_batch_1 is corrupt",
    ),
    "cifar10 batch of the wrong shape": (
        lambda w: w.run(dict(GOOD, data={"dataset": "cifar10", "path": _cifar_folder(
            w, pickle.dumps({b"data": np.zeros((4, 100), np.uint8), b"labels": [0, 1, 2, 3]}, protocol=2))})),
        "data must be an (N, 3072) uint8 array",
    ),
    "cifar10 batch that runs code when unpickled": (
        lambda w: w.run(dict(GOOD, data={"dataset": "cifar10", "path": _cifar_folder(w, _evil_pickle())})),
        "data_batch_1",
    ),
    "empty mnist file": (
        lambda w: w.run(dict(GOOD, data={"dataset": "mnist", "path": _mnist_folder(w, images=b"", labels=_idx_labels(5))})),
        "is truncated",
    ),
    "mnist images and labels of different lengths": (
        lambda w: w.run(dict(GOOD, data={"dataset": "mnist", "path": _mnist_folder(
            w, images=_idx_images(6), labels=_idx_labels(5))})),
        "disagree: 6 images but 5 labels",
    ),
    "aflw2000 folder that does not exist": (
        lambda w: w.run(_aligned(str(w.root / "nowhere"))), "does not exist"),
    "aflw2000 image without its .mat": (lambda w: w.run(_aligned(_aflw_folder(w, mat=None))), "has no annotation"),
    "aflw2000 .mat that is corrupt": (
        lambda w: w.run(_aligned(_aflw_folder(w, mat=b"not a mat file"))), "is not a readable .mat file"),
    "aflw2000 landmarks of the wrong shape": (
        lambda w: w.run(_aligned(_aflw_folder(w, mat={"pt3d_68": np.zeros((3, 10)), "Pose_Para": np.zeros((1, 7))}))),
        "pt3d_68 must be a numeric (3, 68) array",
    ),
    # the benchmark store
    "store part with a wrong schema": (
        lambda w: (_bad_store_part(w, pa.table({"space": ["global"], "arch_key": [1]})), w.run(GOOD))[1],
        "has the wrong schema",
    ),
    "store part with a wrongly typed column": (
        lambda w: (_bad_store_part(w, _evaluations_with(fidelity=pa.array(["three"]))), w.run(GOOD))[1],
        "column 'fidelity' is string, expected int64",
    ),
    "store part that is not Parquet": (
        lambda w: (_bad_store_part(w, b"not parquet at all"), ["resume", str(w.half)])[1],
        "is not a readable Parquet file",
    ),
    "storage that is a file": (
        lambda w: ["run", w.config(GOOD), "--storage", str(w.done / "best.json")], "is a file, not a folder"),
    # Ray address
    "unreachable --address on resume": (
        lambda w: ["resume", str(w.half), "--address", f"127.0.0.1:{_closed_port()}"], "cannot reach a Ray cluster"),
    "--address that is not host:port": (lambda w: w.run(GOOD, "--address", "headnode"), "is not host:port"),
    # run directories
    "RUN_DIR that is a file": (lambda w: ["resume", str(w.done / "best.json")], "is not a directory"),
    "RUN_DIR that is the store": (lambda w: ["resume", str(w.storage / "benchmark")], "is not a facenas run"),
    "RUN_DIR whose config is invalid": (
        lambda w: ((w.half / "config.yaml").write_text(yaml.safe_dump(dict(GOOD, seed=-4))), ["status", str(w.half)])[1],
        "seed: ",
    ),
    "resuming a finished run": (lambda w: ["resume", str(w.done)], "already finished"),
    "an existing run name with --name": (lambda w: w.run(GOOD, "--name", "half"), "already exists"),
}


def _evaluations_with(**columns: pa.Array) -> pa.Table:
    base = {
        "space": pa.array(["global"]), "arch_key": pa.array(["k9"]), "config": pa.array(["{}"]),
        "dataset_id": pa.array(["d"]), "fidelity": pa.array([1], pa.int64()), "seed": pa.array([0], pa.int64()),
        "metrics": pa.array(["{}"]), "cost_s": pa.array([1.0]), "run": pa.array(["x"]),
        "created_at": pa.array([1.0]),
    }
    base.update(columns)
    return pa.table(base)


class _Boom:
    def __reduce__(self):
        return (os.system, ("touch /tmp/facenas-pwned-by-cifar",))


def _evil_pickle() -> bytes:
    return pickle.dumps({b"data": _Boom(), b"labels": [0]}, protocol=2)


def test_the_table_is_big_enough():
    assert len(CASES) >= 20


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input(case, world, capsys, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    build, fragment = CASES[case]
    argv = build(world)  # may write the bad file: part of the state that must stay as it is
    before = _tree_hash(world.root)
    import ray

    code = main(argv)
    captured = capsys.readouterr()
    lines = [ln for ln in captured.err.splitlines() if ln.strip()]
    assert code == 2, (case, captured.err[-2000:])
    assert "Traceback" not in captured.err and "Traceback" not in captured.out
    assert len(lines) == 1, (case, lines)
    assert lines[0].startswith("facenas: ") and fragment in lines[0], (case, lines[0])
    assert _tree_hash(world.root) == before, f"{case}: files were created or changed"
    assert not ray.is_initialized(), "bad input must be refused before Ray starts"
    assert not Path("/tmp/facenas-pwned-by-cifar").exists()
