"""benchmarks/scale_bench.py: the growth exponent, registration, and a small quick run with every field.

The run is small (hundreds of rows, tens of trials, two short Tune fits) and checks the JSON's shape and
the exponents' consistency with the costs, not the goal (timings on a shared 2-core machine are noisy).
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from tests.benchmark_modules import load_benchmark_module


@pytest.fixture(scope="module")
def bench() -> Any:
    return load_benchmark_module("run", "facenas_benchmarks_run_under_test_scale")


@pytest.fixture(scope="module")
def scale_bench() -> Any:
    return load_benchmark_module("scale_bench", "facenas_benchmarks_scale_under_test")


def test_growth_exponent_reads_linear_quadratic_and_flat(scale_bench):
    sizes = [1_000, 10_000, 100_000]
    assert scale_bench.growth_exponent(sizes, [2.0 * n for n in sizes]) == pytest.approx(1.0)
    assert scale_bench.growth_exponent(sizes, [n * n / 7 for n in sizes]) == pytest.approx(2.0)
    assert scale_bench.growth_exponent(sizes, [3.0, 3.0, 3.0]) == pytest.approx(0.0)
    assert scale_bench.growth_exponent(sizes, [1.0, 0.0, 2.0]) is None  # a cost too small to time
    assert scale_bench.growth_exponent([5, 5], [1.0, 2.0]) is None


def test_run_py_registers_scale(bench):
    assert bench.BENCHMARKS["scale"].__name__ == "scale"
    with pytest.raises(ValueError, match="already registered"):
        load_benchmark_module("scale_bench", "facenas_benchmarks_scale_twice").install(
            bench.register, progress=bench._progress, ray_env=bench._ray_env, local_ray=bench._local_ray)


@pytest.mark.integration
def test_scale_quick_has_every_figure(bench, scale_bench):
    hooks = scale_bench.Hooks(progress=bench._progress, ray_env=bench._ray_env, local_ray=bench._local_ray)
    sizes = {"rows": (200, 800, 3_200), "trials": (50, 200, 800), "tune_trials": (4, 8), "lookup_sample": 200,
             "single_puts": 5, "repeats": 2}
    result = bench._check_result("scale", scale_bench.scale(True, hooks=hooks, sizes=sizes))
    detail = result["detail"]
    assert set(detail["figures"]) == set(scale_bench._FIGURES)
    assert set(detail["store"]) == {"200", "800", "3200"} and set(detail["searcher"]) == {"50", "200", "800"}
    assert set(detail["tune"]) == {"4", "8"}
    for figure in detail["figures"].values():
        exponent = figure["exponent"]
        if exponent is not None:
            assert figure["holds"] == (exponent <= scale_bench.GOAL)
            expected = scale_bench.growth_exponent(figure["sizes"][-2:], figure["costs"][-2:])
            assert math.isclose(exponent, expected)
            assert math.isclose(figure["exponent_fit"], scale_bench.growth_exponent(figure["sizes"], figure["costs"]))
    assert detail["store"]["3200"]["disk_bytes"] > detail["store"]["200"]["disk_bytes"] > 0
    assert detail["searcher"]["800"]["state_bytes"] > detail["searcher"]["50"]["state_bytes"]
    assert result["value"] == max(detail["exponents"].values())
    assert result["holds"] == all(f["holds"] for f in detail["figures"].values())
