"""benchmarks/quality_bench.py: the search-quality group (issue 13). Fast: nothing trains here.

The figures themselves come from `python benchmarks/run.py --only quality` (minutes to an hour); these
tests pin what the benchmark reads, how it aggregates seeds and when it holds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from orchestrator.config import load_config, parse_config
from tests.benchmark_modules import load_benchmark_module


@pytest.fixture
def quality():
    return load_benchmark_module("quality_bench", "facenas_benchmarks_quality_test")


@pytest.fixture
def bench():
    return load_benchmark_module("run", "facenas_benchmarks_run_quality_test")


def test_quality_group_runs_its_registered_benchmarks(bench, monkeypatch, tmp_path):
    for group, members in bench.GROUPS.items():  # quality, performance: registered names, no name clash
        assert set(members) <= set(bench.BENCHMARKS) and group not in bench.BENCHMARKS, group
    seen = []

    def fake(name):
        def fn(quick):
            seen.append(name)
            return {"value": 1.0, "unit": "%", "goal": 0.0, "holds": True, "detail": {}}
        return fn

    monkeypatch.setattr(bench, "BENCHMARKS", {n: fake(n) for n in (*bench.GROUPS["quality"], "other")})
    out = tmp_path / "q.json"
    assert bench.main(["--quick", "--only", "quality", "--out", str(out)]) == 0
    assert seen == list(bench.GROUPS["quality"]) and set(json.loads(out.read_text())) == set(seen)


@pytest.mark.parametrize("quick", [False, True])
def test_the_benchmark_runs_the_shipped_config_on_cluttered_digits(quality, quick):
    raw = quality.macro_micro_raw(1, quick=quick)
    config = parse_config(raw)
    assert config.seed == 1 and config.data.dataset == "cluttered_digits"
    assert config.searcher.equal_param_samples > 0 and config.searcher.baseline_samples > 0
    if quick:  # a smaller budget on the same task, and the random baseline keeps the searcher's bounds
        assert config.space.d_max == config.searcher.d_max == 5 and config.searcher.final_epochs == 6
    else:
        assert config.searcher.final_seeds == 3 and config.searcher.baseline_samples == 10
    side = parse_config(quality.macro_micro_raw(1, quick=quick, side_by_side=True))
    assert side.searcher.speculate == 1 and side.searcher.model_copy(update={"speculate": 2}) == config.searcher


def test_mean_std_and_task_separation_by_hand(quality):
    assert quality.mean_std([1.0, 3.0, None]) == {"mean": 2.0, "std": 1.0, "n": 2}
    assert quality.mean_std([None]) == {"mean": None, "std": None, "n": 0}
    rows = [{"params": p, "value": v} for p, v in ((100, 50.0), (200, 90.0), (300, 70.0), (400, 80.0))]
    sep = quality.task_separation(rows)
    assert sep["val_acc_spread"] == 40.0 and sep["spearman_acc_params"] == pytest.approx(0.4)


def _fake_run(tmp: Path, seed: int, ri: float) -> tuple[dict[str, Any], float, Path]:
    run_dir = tmp / f"s{seed}"
    run_dir.mkdir(parents=True)
    rows = [{"stage": "retrain", "status": "ok", "params": 1000, "value": 80.0, "test_acc": 81.0}]
    rows += [{"stage": "baseline", "status": "ok", "params": 500 * (i + 1), "value": 60.0 + 5 * i, "test_acc": 60.0}
             for i in range(4)]  # fmt: skip
    rows += [{"stage": "baseline_equal", "status": "ok", "params": 1000, "value": 79.0, "test_acc": 80.0}]
    pd.DataFrame(rows).to_parquet(run_dir / "results.parquet")
    best = {"ri": ri, "ri_val": ri / 2, "ri_equal_params": -1.0, "ri_equal_params_val": 0.5, "arch": {},
            "params": 1000, "search": {"evaluations": {"total": 9}}}  # fmt: skip
    return best, 1.0, run_dir


@pytest.mark.parametrize("ris, holds", [((4.0, 1.0, 2.5), True), ((4.0, -0.5, 2.5), False)])
def test_holds_only_when_every_seed_improves(quality, tmp_path, ris, holds):
    import contextlib

    runs = iter(ris)
    hooks = quality.Hooks(
        progress=lambda *_: None, local_ray=lambda _n: contextlib.nullcontext(),
        run_experiment=None,
        run_experiments=lambda items: [_fake_run(tmp_path, raw["seed"], next(runs)) for raw, _storage in items],
    )  # fmt: skip
    out = quality.macro_micro_ri(True, hooks=hooks)
    assert out["holds"] is holds and out["value"] == pytest.approx(sum(ris) / 3)
    detail = out["detail"]
    assert detail["ri"] == list(ris) and detail["ri_equal_params_mean_std"]["mean"] == -1.0
    assert detail["task_separation"]["networks"] == 12 and detail["task_separation"]["val_acc_spread"] == 15.0
    assert [s["random_mean_params"] for s in detail["per_seed"]] == [1250.0] * 3


@pytest.mark.parametrize("quick", [False, True])
def test_the_monas_benchmark_runs_the_shipped_config_with_its_ablation(quality, quick):
    config = parse_config(quality.monas_raw(2, quick=quick))
    assert config.seed == 2 and config.data.dataset == "faces3d" and config.searcher.ablation
    shipped = load_config(str(quality._MONAS))[0]
    if quick:  # shorter, on the same task and space
        assert config.searcher.supernet_epochs < shipped.searcher.supernet_epochs and config.data == shipped.data
    else:  # the shipped config, less the uniform supernet's searches (no figure here reads them)
        assert config.searcher == shipped.searcher.model_copy(update={"ablation_searches": False})
        assert config.data == shipped.data and config.space == shipped.space
    assert shipped.searcher.ablation_searches and not config.searcher.ablation_searches


def _monas_best(samos: tuple[float, float], rand: tuple[float, float], standalone_val: float) -> dict[str, Any]:
    """MONAS's best.json as monas_figures writes it: (one-shot val, retrained test) NME of both winners."""
    def row(supernet, search, figures, key):
        return {"supernet": supernet, "search": search, "evaluations": 20, "oneshot_val_nme": figures[0],
                "test_nme": figures[1], "nme_mean": figures[1], "arch_key": key}
    return {"value": standalone_val, "search": {},
            "ablation": [row("mnus", "SAMOS", samos, "a"), row("mnus", "random", rand, "b"),
                         row("uniform", "SAMOS", (30.0, 30.0), "c"), row("uniform", "random", (1.0, 1.0), "d")],
            "ranking_correlation": {"mnus": {"kendall_tau": 0.7}, "uniform": {"kendall_tau": 0.5}},
            "space_spread": {"children": 12, "val_nme": {"min": 15.0, "median": 17.0, "max": 27.0},
                             "spearman_params": -0.9, "near_best": 5, "near_best_within": 1.0,
                             "winners_vs_best": {"SAMOS": 0.4, "random": 0.2}}}


@pytest.mark.parametrize("seeds, holds", [
    ([((16.0, 14.5), (16.1, 15.9), 14.6)] * 3, True),
    # SAMOS better on test but not on the one-shot NME both searches optimise
    ([((16.2, 14.5), (16.1, 15.9), 14.6)] * 3, False),
    # both better, but the supernet's one-shot NME is far from stand-alone NME (undertrained)
    ([((19.0, 14.5), (19.1, 15.9), 14.6)] * 3, False),
])
def test_monas_holds_on_the_main_supernet_only_when_samos_leads_both_and_the_gap_is_small(quality, seeds, holds):
    import contextlib

    runs = iter(seeds)
    hooks = quality.Hooks(
        progress=lambda *_: None, local_ray=lambda _n: contextlib.nullcontext(),
        run_experiment=None,
        run_experiments=lambda items: [(_monas_best(*next(runs)), 1.0, Path(".")) for _item in items],
    )  # fmt: skip
    out = quality.monas_samos_vs_random(True, hooks=hooks)
    (samos, rand, standalone) = seeds[0]
    assert out["holds"] is holds and out["value"] == pytest.approx(rand[1] - samos[1])
    detail = out["detail"]
    assert detail["oneshot_gap_abs_mean_std"]["mean"] == pytest.approx(abs(samos[0] - standalone))
    assert detail["samos_wins"] == {"oneshot": 3 * (samos[0] < rand[0]), "test": 3, "of": 3}
    assert detail["kendall_tau_mean_std"]["mnus"]["mean"] == pytest.approx(0.7)
    assert detail["per_seed"][0]["arch_key"] == {"samos": "a", "random": "b"}  # the main supernet's winners
    spread = detail["space_spread"]
    assert spread["spearman_params"]["mean"] == pytest.approx(-0.9) and spread["near_best"] == [5, 5, 5]
    assert spread["val_nme_range"] == [[15.0, 27.0]] * 3 and spread["of_children"] == [12] * 3
    assert spread["winners_vs_best"]["SAMOS"]["mean"] == pytest.approx(0.4)


@pytest.mark.parametrize("quick", [False, True])
def test_the_hyperfd_benchmark_runs_the_shipped_protocol_on_both_spaces(quality, quick):
    config = parse_config(quality.hyperfd_raw(quick=quick))
    shipped = parse_config(quality.hyperfd_raw(quick=False))
    assert config.searcher.mode == "protocol" and config.searcher.spaces == ("detector_hpo", "detector_nas")
    assert config.data.domain == shipped.data.domain and config.searcher.prior_weight == shipped.searcher.prior_weight
    if quick:  # fewer domains, configs and images, shorter; the same source domain, spaces and ranker
        assert set(config.searcher.domains) < set(shipped.searcher.domains)
        assert config.searcher.pool_size < shipped.searcher.pool_size
        assert config.searcher.epochs < shipped.searcher.epochs
    else:
        assert config.searcher == shipped.searcher and config.data == shipped.data
    assert quality.hyperfd_raw(quick=quick)["name"].startswith("hyperfd-quality-")


def _table7(ranks: dict[str, dict[str, list[float]]]) -> pd.DataFrame:
    """table7.csv's long frame: space -> method -> normalized rank per order, each on two domains."""
    rows = [{"space": space, "method": method, "domain": domain, "order": order, "arch_key": "k", "ap": 0.1,
             "normalized_rank": rank + shift}
            for space, methods in ranks.items() for method, per_order in methods.items()
            for order, rank in enumerate(per_order) for domain, shift in (("plain", -1.0), ("mask", 1.0))]
    return pd.DataFrame(rows)


@pytest.mark.parametrize("nas_hyperfd, holds", [(20.0, True), (26.0, True), (30.0, False)])
def test_hyperfd_holds_only_when_it_is_at_or_below_best_on_reference_on_every_space(
        quality, tmp_path, monkeypatch, nas_hyperfd, holds):
    import contextlib

    ranks = {"detector_hpo": {"HyperFD": [8.0, 12.0], "Best on reference": [13.6, 13.6], "Random search": [20.0, 24.0]},
             "detector_nas": {"HyperFD": [nas_hyperfd - 1, nas_hyperfd + 1], "Best on reference": [26.0, 26.0],
                              "Random search": [40.0, 50.0]}}
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    _table7(ranks).to_csv(run_dir / "table7.csv", index=False)
    storages = []
    monkeypatch.setenv(quality.HYPERFD_STORAGE_ENV, str(tmp_path / "kept"))
    hooks = quality.Hooks(
        progress=lambda *_: None, local_ray=lambda _n: contextlib.nullcontext(),
        run_experiment=lambda raw, storage: (storages.append(storage), ({"orders": 2}, 1.0, run_dir))[1],
        run_experiments=None,
    )  # fmt: skip
    out = quality.hyperfd_vs_reference(True, hooks=hooks)
    assert storages == [tmp_path / "kept" / "quick"], "the kept store, one folder per mode"
    assert out["holds"] is holds
    assert out["value"] == pytest.approx(max(10.0 - 13.6, nas_hyperfd - 26.0))
    figures = out["detail"]["normalized_rank_mean_std"]
    assert figures["detector_hpo"]["HyperFD"] == {"mean": 10.0, "std": 2.0, "n": 2, "per_order": [8.0, 12.0]}
    assert figures["detector_nas"]["Best on reference"]["std"] == 0.0
    assert figures["detector_nas"]["Random search"]["mean"] == pytest.approx(45.0)
    assert out["detail"]["storage"] == str(tmp_path / "kept" / "quick")


def test_the_shipped_hyperfd_snapshot_is_the_whole_table_of_the_shipped_config(quality):
    """If the detector's training, the plan or the pool changes, the snapshot no longer serves the benchmark:
    rebuild it (`facenas benchmark build configs/hyperfd.yaml --storage DIR`, then `python
    benchmarks/quality_bench.py hyperfd-snapshot DIR` after removing benchmarks/data/hyperfd)."""
    from orchestrator.methods.hyperfd.benchmark import missing_jobs
    from orchestrator.methods.hyperfd.plan import Plan
    from orchestrator.store import BenchmarkStore

    config = parse_config(quality.hyperfd_raw(quick=False))
    plan = Plan.from_config(config)
    store = BenchmarkStore(str(quality.HYPERFD_SNAPSHOT / "benchmark"))
    for space in config.searcher.spaces:
        assert missing_jobs(plan, space, store) == [], f"the snapshot lacks rows of {space}: rebuild it"
        assert len(store.rows(space=space)) == len(plan.jobs(space)), "nothing but the plan's rows"
    assert {d["dataset_id"] for d in store.datasets()} == set(plan.recipes())
    assert all(r["run"] == "benchmark:hyperfd" and r["cost_s"] > 0 for r in store.rows())


def _snapshot(root: Path) -> list[dict[str, Any]]:
    """A tiny store like the shipped one: a source and two online domains, 6 configs per space on each."""
    from orchestrator.store import BenchmarkStore

    store = BenchmarkStore(str(root / "benchmark"))
    for dataset_id, name in (("d-src", "wider"), ("d-plain", "plain"), ("d-mask", "mask")):
        store.put_dataset(dataset_id, name, {"n_faces": 1.0})
    rows = [{"space": space, "arch_key": f"{space[9:]}{k}", "config": {"arch": k}, "dataset_id": d, "fidelity": 8,
             "seed": 0, "metrics": {"val_ap50": 0.1 * k, "test_ap50": 0.05 * k}, "cost_s": 10.0 + k, "run": "b",
             "protocol": "p"}
            for space in ("detector_hpo", "detector_nas") for d in ("d-src", "d-plain", "d-mask") for k in range(6)]
    store.put_many(rows)
    return store.rows()


def test_snapshot_check_rows_come_from_the_online_domains_cheaper_half_and_are_seeded(quality, tmp_path):
    _snapshot(tmp_path)
    picked = quality.snapshot_check_rows(tmp_path, ["plain", "mask"], 2)
    assert picked == quality.snapshot_check_rows(tmp_path, ["plain", "mask"], 2)
    assert [r["space"] for r in picked] == ["detector_hpo"] * 2 + ["detector_nas"] * 2
    assert all(r["dataset_id"] != "d-src" and r["cost_s"] <= 12.0 for r in picked)  # online, cost <= median


@pytest.mark.parametrize("drift, holds", [(0.0, True), (0.002, True), (0.05, False)])
def test_full_mode_trains_rows_of_the_snapshot_again_and_holds_only_if_they_reproduce(
        quality, tmp_path, monkeypatch, drift, holds):
    import contextlib

    from orchestrator.store import BenchmarkStore

    snapshot = tmp_path / "snap"
    rows = _snapshot(snapshot)
    monkeypatch.setattr(quality, "HYPERFD_SNAPSHOT", snapshot)
    monkeypatch.delenv(quality.HYPERFD_STORAGE_ENV, raising=False)
    ranks = {space: {"HyperFD": [5.0, 5.0], "Best on reference": [10.0, 10.0], "Random search": [30.0, 30.0]}
             for space in ("detector_hpo", "detector_nas")}
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    _table7(ranks).to_csv(run_dir / "table7.csv", index=False)
    seen = {}

    def run_experiment(raw, storage):  # the protocol trains the missing rows: here, the snapshot's, drifted
        store = BenchmarkStore(str(storage / "benchmark"))
        have = {(r["space"], r["arch_key"], r["dataset_id"]) for r in store.rows()}
        missing = [r for r in rows if (r["space"], r["arch_key"], r["dataset_id"]) not in have]
        seen["missing"], seen["datasets"] = len(missing), len(store.datasets())
        store.put_many([{**r, "metrics": {m: v + drift for m, v in r["metrics"].items()}} for r in missing])
        return {"orders": 2}, 1.0, run_dir

    hooks = quality.Hooks(progress=lambda *_: None, local_ray=lambda _n: contextlib.nullcontext(),
                          run_experiment=run_experiment, run_experiments=None)
    out = quality.hyperfd_vs_reference(False, hooks=hooks)
    assert seen == {"missing": 2 * quality.SNAPSHOT_CHECK_ROWS, "datasets": 3}, "the snapshot less the checked rows"
    check = out["detail"]["snapshot"]
    assert check["rows"] == 4 and check["not_trained"] == 0 and check["reproduces"] is holds
    assert check["max_abs_diff"]["val_ap50"] == pytest.approx(drift, abs=1e-12)
    assert out["holds"] is holds and out["value"] == pytest.approx(-5.0)  # the ranks hold; the table decides
