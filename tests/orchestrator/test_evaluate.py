"""orchestrator.evaluate's shared pieces: the driver's data set in the object store for the trials."""

from __future__ import annotations

import numpy as np
import pytest

from orchestrator import evaluate
from orchestrator.evaluate import cached_dataset, share_dataset


def _must_not_build(**kwargs):
    raise AssertionError(f"the data set was built again from {kwargs}")


def _build(**kwargs):
    return {"images": np.full((3, 2), float(kwargs["n"]), dtype=np.float32)}


@pytest.fixture
def empty_cache(monkeypatch):
    monkeypatch.setattr(evaluate, "_DATA_CACHE", {})


def test_a_process_reads_the_drivers_shared_data_set_instead_of_building_it(ray_local, empty_cache) -> None:
    data = _build(n=7)
    shared = share_dataset({"n": 7}, data, _must_not_build)
    evaluate._DATA_CACHE.clear()  # a trial actor's process: nothing cached yet
    got = cached_dataset({"n": 7}, _must_not_build, shared=shared)
    np.testing.assert_array_equal(got["images"], data["images"])
    got["images"][0, 0] = -1.0  # its own writable copy, not the object store's read-only buffer
    assert data["images"][0, 0] == 7.0
    assert cached_dataset({"n": 7}, _must_not_build, shared=shared) is got  # once per process


def test_a_shared_data_set_of_other_arguments_is_not_served(ray_local, empty_cache) -> None:
    shared = share_dataset({"n": 7}, _build(n=7), _build)
    got = cached_dataset({"n": 8}, _build, shared=shared)  # another size: built, not the shared one
    assert got["images"][0, 0] == 8.0
    other_loader = cached_dataset({"n": 7}, lambda **kw: _build(n=9), shared=shared)  # another loader
    assert other_loader["images"][0, 0] == 9.0
