"""HyperFD privacy: an online dataset's images never reach the benchmark store or the ranker's saved state.

Online datasets contribute meta-features and results only (paper §3; DESIGN.md §3). The check is
independent of how the state is laid out: every run of numbers in the saved searcher state and in every
Parquet file of the store is compared with runs of pixel values of the online images (float on [0, 1] and
0..255), and the files' raw bytes with chunks of the images' float32 / uint8 buffers. A positive control
shows the scan finds a leak when one is planted.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from orchestrator.store import BenchmarkStore
from search_algos.hyperfd import PerformanceRanker, RankerSettings, TaskResults, TransferRankerSearcher
from search_algos.spaces.detector import DetectorHpoSpace, HpoConfig
from trainables.detection.data import detection_meta_features
from trainables.detection.generator import load_detection_domain

WINDOW = 8  # consecutive pixel values that must not appear together anywhere


def _ngrams(images: np.ndarray) -> set[tuple[float, ...]]:
    grams: set[tuple[float, ...]] = set()
    flat = images.astype(np.float64).reshape(len(images), -1)
    for scale in (1.0, 255.0):
        for row in np.round(flat * scale, 5):
            for i in range(0, len(row) - WINDOW + 1):
                window = row[i : i + WINDOW]
                if len(set(window.tolist())) >= 3:  # flat regions (black borders) say nothing
                    grams.add(tuple(window.tolist()))
    return grams


def _number_runs(node: Any, out: list[list[float]]) -> None:
    if isinstance(node, dict):
        for v in node.values():
            _number_runs(v, out)
    elif isinstance(node, list):
        numbers = [float(v) for v in node if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if len(numbers) >= WINDOW:
            out.append(numbers)
        for v in node:
            if isinstance(v, (dict, list)):
                _number_runs(v, out)
    elif isinstance(node, str) and node[:1] in "[{":
        try:
            _number_runs(json.loads(node), out)
        except ValueError:
            pass


def _leaks(payload: Any, grams: set[tuple[float, ...]]) -> bool:
    runs: list[list[float]] = []
    _number_runs(payload, runs)
    for run in runs:
        r = np.round(np.asarray(run, dtype=np.float64), 5).tolist()
        if any(tuple(r[i : i + WINDOW]) in grams for i in range(len(r) - WINDOW + 1)):
            return True
    return False


def _byte_chunks(images: np.ndarray) -> list[bytes]:
    chunks = []
    for buffer in (images.astype(np.float32).tobytes(), (images * 255).astype(np.uint8).tobytes()):
        for start in range(0, len(buffer) - 32, 4096):
            chunk = buffer[start : start + 32]
            if len(set(chunk)) > 8:
                chunks.append(chunk)
    return chunks


def _files_leak(paths: list[Path], chunks: list[bytes]) -> bool:
    return any(chunk in p.read_bytes() for p in paths for chunk in chunks)


@pytest.fixture(scope="module")
def online_images():
    domains = [load_detection_domain(d, image_size=32, n_images=20, seed=3) for d in ("blur", "mask")]
    images = np.concatenate([np.concatenate([s.images for s in ds.splits().values()]) for ds in domains])
    return domains, images


def test_store_and_saved_state_hold_no_image_of_an_online_dataset(tmp_path, online_images):
    domains, images = online_images
    grams, chunks = _ngrams(images), _byte_chunks(images)
    assert len(grams) > 1000 and chunks

    # Offline warm-up on other domains' meta-features (offline data may be anything; it is not checked).
    pool = [c.to_json() for c in list(DetectorHpoSpace().enumerate())[:12]]
    keys = [HpoConfig.from_json(p).key() for p in pool]
    rng = np.random.default_rng(0)
    offline = [
        TaskResults(d, detection_meta_features(load_detection_domain(d, image_size=32, n_images=20, seed=4)),
                    {k: float(rng.random()) for k in keys[:8]})
        for d in ("plain", "crowd", "large")
    ]  # fmt: skip
    names = sorted(offline[0].features)
    ranker = PerformanceRanker(names, config_kind="vector", config_dim=HpoConfig.VECTOR_DIM,
                               settings=RankerSettings(warmup_steps=10, iters_per_task=3, trans_iters=2))  # fmt: skip
    ranker.add_configs({HpoConfig.from_json(p).key(): HpoConfig.from_json(p).to_vector() for p in pool})
    ranker.fit_offline(offline)

    # The online side: what the orchestrator hands over is meta-features and results, nothing else.
    store = BenchmarkStore(str(tmp_path / "benchmark"))
    online = []
    for ds in domains:
        features = detection_meta_features(ds)
        store.put_dataset(ds.dataset_id, ds.name, features)
        online.append({"dataset_id": ds.dataset_id, "name": ds.name, "features": features})
    searcher = TransferRankerSearcher(ranker_state=ranker.get_state(), pool=pool, decode=HpoConfig.from_json,
                                      datasets=online, budget=2, epochs=1, metric="val_ap50", seed=0)  # fmt: skip
    n = 0
    while (config := searcher.suggest(f"t{n}")) not in (None, "FINISHED"):
        ap = float(rng.random())
        store.put({"space": "detector_hpo", "arch_key": HpoConfig.from_json(config["arch"]).key(),
                   "config": {"arch": json.loads(config["arch"])}, "dataset_id": config["dataset_id"],
                   "fidelity": 1, "seed": 0, "metrics": {"val_ap50": ap, "test_ap50": ap}, "cost_s": 1.0,
                   "run": "privacy"})  # fmt: skip
        searcher.on_trial_complete(f"t{n}", {"val_ap50": ap, "test_ap50": ap})
        n += 1
    assert n == 4 and len(searcher.ranker.past) == 2
    state_file = tmp_path / "searcher-state.json"
    searcher.save(str(state_file))

    saved = json.loads(state_file.read_text())
    parquet = sorted((tmp_path / "benchmark").rglob("*.parquet"))
    assert len(parquet) >= 2
    tables = [pd.read_parquet(p).to_dict("list") for p in parquet]
    assert not _leaks(saved, grams)
    assert not any(_leaks(t, grams) for t in tables)
    assert not _files_leak([state_file, *parquet], chunks)
    past_z = [p["z"] for p in saved["state"]["ranker"]["past"]]
    assert all(len(z) == len(names) for z in past_z)  # a past task is its meta-feature vector

    # Positive control: the same scans catch one planted image row.
    planted = json.loads(json.dumps(saved))
    planted["state"]["ranker"]["past"][0]["extra"] = images[0, 0, 5].astype(float).tolist()
    assert _leaks(planted, grams)
    leaky = tmp_path / "leaky.bin"
    leaky.write_bytes(b"header" + images[1].astype(np.float32).tobytes())
    assert _files_leak([leaky], chunks)


def test_store_refuses_image_arrays_as_meta_features(tmp_path, online_images):
    _domains, images = online_images
    store = BenchmarkStore(str(tmp_path / "benchmark"))
    with pytest.raises(ValueError, match="never images or arrays"):
        store.put_dataset("det-x", "x", {"pixels": images[0]})
