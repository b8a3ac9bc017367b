"""benchmarks/run.py's ``_run_experiments``: experiments side by side on one Ray give the figures of one
after the other, and a failed one is a one-line error naming its log."""

from __future__ import annotations

import pytest

from tests.benchmark_modules import load_benchmark_module


@pytest.fixture(scope="module")
def bench():
    module = load_benchmark_module("run", "facenas_benchmarks_run_side_by_side_test")
    with module._local_ray(2):  # one Ray for the module, on 127.0.0.1 (run.py's own)
        yield module


def _raw(name: str, seed: int) -> dict:
    """Random search on a slice of digits, two 1-epoch candidates: seconds, but real training."""
    return {
        "name": name, "seed": seed,
        "data": {"dataset": "digits", "max_samples": 300},
        "space": {"name": "global", "d_min": 2, "d_max": 3, "w_min": 8, "w_max": 12, "w_step": 4},
        "searcher": {"name": "random", "num_samples": 2, "epochs": 1},
        "training": {"batch_size": 32},
        "resources": {"cpus_per_trial": 1, "max_failures": 0},
    }  # fmt: skip


def test_side_by_side_runs_give_the_figures_of_one_after_the_other(bench, tmp_path):
    raws = [_raw("a", 0), _raw("b", 1)]
    together = bench._run_experiments([(raw, tmp_path / "together" / raw["name"]) for raw in raws])
    alone = [bench._run_experiment(raw, tmp_path / "alone" / raw["name"]) for raw in raws]
    assert [run_dir.name for _best, _s, run_dir in together] == ["a", "b"]  # in the order given
    for (best_t, seconds, run_dir), (best_a, _s, _d) in zip(together, alone):
        assert seconds > 0 and (run_dir / "results.parquet").is_file()
        assert best_t["arch_key"] == best_a["arch_key"]
        assert best_t["value"] == pytest.approx(best_a["value"], abs=1e-9), "a trial must not depend on its neighbours"
    assert (tmp_path / "together" / "a.log").read_text().strip(), "each run's output is kept in its log"


def test_a_failed_run_is_an_error_naming_it_and_its_log(bench, tmp_path):
    broken = {**_raw("broken", 0), "data": {"dataset": "cifar10", "path": str(tmp_path / "missing")}}
    with pytest.raises(RuntimeError, match=r"broken failed \(exit 2, log .*broken\.log\): .*missing"):
        bench._run_experiments([(broken, tmp_path / "broken"), (_raw("ok", 0), tmp_path / "ok")])


def test_a_bad_config_is_refused_before_anything_starts(bench, tmp_path):
    bad = {**_raw("bad", 0), "searcher": {"name": "random", "num_samples": 0, "epochs": 1}}
    with pytest.raises(Exception, match="num_samples"):
        bench._run_experiments([(_raw("first", 0), tmp_path / "first"), (bad, tmp_path / "bad")])
    assert not (tmp_path / "first.log").exists(), "the valid one did not start either"
