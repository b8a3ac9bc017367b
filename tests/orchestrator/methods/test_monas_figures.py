"""MONAS's best.json figures from the stage outcomes: winners retrained over several training seeds."""

from __future__ import annotations

import pytest

from orchestrator.config import parse_config
from orchestrator.methods.monas import monas_figures
from tests.orchestrator.methods.test_schedulable_stages import STOP, _outcome, _row


def test_a_winner_retrained_over_seeds_reports_the_mean_test_nme_and_each_seed():
    samos, rand = _outcome([_row("a", 20.0)], {"best_arch": "a"}), _outcome([_row("b", 21.0)])
    retrain = _outcome([_row("a", 15.0, test_nme=16.0, nme_mean=16.5), _row("a", 17.0, test_nme=18.0, nme_mean=18.5),
                        _row("b", 16.0, test_nme=17.0, nme_mean=17.0), _row("b", 30.0, error=STOP, epochs=1)])
    figures = monas_figures({"search": samos, "random": rand, "retrain": retrain}, samplings=["mnus"], main="mnus")
    table = {r["search"]: r for r in figures["ablation"]}
    assert table["SAMOS"]["test_nme"] == pytest.approx(17.0) and table["SAMOS"]["nme_mean"] == pytest.approx(17.5)
    assert table["SAMOS"]["test_nme_by_seed"] == [16.0, 18.0] and table["SAMOS"]["standalone_val_nme"] == 16.0
    # a stopped seed's retraining counts for nothing on test; the whole one stands
    assert table["random"]["test_nme"] == 17.0 and table["random"]["stopped_early"] == [1]
    assert figures["samos_vs_random_test_nme"] == pytest.approx(0.0)


def test_retrain_seeds_train_each_winner_once_per_seed_and_samos_child_is_the_reference_in_each(tmp_path):
    from types import SimpleNamespace

    from orchestrator.methods.monas import monas_stages
    from search_algos.base import REFERENCE_KEY

    raw = {"seed": 5, "data": {"dataset": "faces3d"}, "space": {"name": "multipath"},
           "searcher": {"name": "samos", "retrain_seeds": 3}}
    config = parse_config(raw)
    stages, _select, _extras = monas_stages(config, SimpleNamespace(dataset_id="d"), None, str(tmp_path))
    retrain = next(s for s in stages if s.name == "retrain")
    earlier = {"search": _outcome([_row("a", 20.0)], {"best_arch": "a"}), "random": _outcome([_row("b", 21.0)])}
    searcher = retrain.make_searcher(earlier)
    configs = [searcher.suggest(f"t{i}") for i in range(6)]
    assert [(c["arch"], c["seed"], bool(c.get(REFERENCE_KEY))) for c in configs] == [
        ("a", 5, True), ("a", 6, True), ("a", 7, True), ("b", 5, False), ("b", 6, False), ("b", 7, False)]
    assert retrain.total(earlier) == 6
    single = monas_stages(parse_config({**raw, "searcher": {"name": "samos"}}), SimpleNamespace(dataset_id="d"),
                          None, str(tmp_path))[0]
    plain = next(s for s in single if s.name == "retrain").make_searcher(earlier).suggest("t0")
    assert "seed" not in plain  # one retraining: the run's seed, as before the key existed


def test_space_spread_says_how_flat_the_top_of_the_space_is_and_where_the_winners_sit():
    import pandas as pd

    from orchestrator.methods.monas import space_spread

    rows = [{**_row(f"c{i}", value), "params": params}
            for i, (value, params) in enumerate([(15.0, 70), (15.6, 50), (16.5, 40), (20.0, 20), (26.0, 10)])]
    rows.append({**_row("failed", float("nan")), "status": "error"})  # a failed child counts for nothing
    spread = space_spread(pd.DataFrame(rows), {"SAMOS": 15.9, "random": None})
    assert spread["children"] == 5 and spread["val_nme"] == {"min": 15.0, "median": 16.5, "max": 26.0}
    assert spread["spearman_params"] == pytest.approx(-1.0)  # the ranking by NME is the ranking by size
    assert spread["near_best"] == 2  # 15.0 and 15.6 are within 1 point of the best
    assert spread["winners_vs_best"] == {"SAMOS": pytest.approx(0.9), "random": None}
    assert space_spread(pd.DataFrame(rows[:2]), {}) == {"children": 2}  # too few children for a figure


def test_monas_figures_give_the_space_spread_with_the_winners_stand_alone_nme():
    samos, rand = _outcome([_row("a", 20.0)], {"best_arch": "a"}), _outcome([_row("b", 21.0)])
    retrain = _outcome([_row("a", 16.0, test_nme=16.0), _row("b", 15.5, test_nme=15.0)])
    tau = _outcome([_row("x", 15.0), _row("y", 18.0), _row("z", 17.0)])
    shot = _outcome([_row("x", 19.0), _row("y", 21.0), _row("z", 20.0)])
    figures = monas_figures({"search": samos, "random": rand, "retrain": retrain, "tau_standalone": tau,
                             "tau_oneshot_mnus": shot}, samplings=["mnus"], main="mnus")  # fmt: skip
    assert figures["ranking_correlation"]["mnus"]["kendall_tau"] == pytest.approx(1.0)
    assert figures["space_spread"]["winners_vs_best"] == {"SAMOS": pytest.approx(1.0), "random": pytest.approx(0.5)}
    assert figures["space_spread"]["spearman_params"] is None  # every child has 10 parameters here: no ranking


def test_without_ablation_searches_the_uniform_supernet_serves_tau_only(tmp_path):
    from types import SimpleNamespace

    from orchestrator.methods.monas import monas_stages

    raw = {"seed": 1, "data": {"dataset": "faces3d"}, "space": {"name": "multipath"},
           "searcher": {"name": "samos", "ablation": True, "ablation_children": 3, "ablation_searches": False}}
    stages, _select, extras = monas_stages(parse_config(raw), SimpleNamespace(dataset_id="d"), None, str(tmp_path))
    assert [s.name for s in stages] == ["supernet", "search", "random", "supernet_uniform", "retrain",
                                        "tau_oneshot_mnus", "tau_oneshot_uniform", "tau_standalone"]
    samos, rand = _outcome([_row("a", 20.0)], {"best_arch": "a"}), _outcome([_row("b", 21.0)])
    retrain = next(s for s in stages if s.name == "retrain")
    assert retrain.total({"search": samos, "random": rand}) == 2  # the main supernet's two winners only
    alone = _outcome([_row("x", 15.0), _row("y", 18.0), _row("z", 17.0)])
    outcomes = {"search": samos, "random": rand, "retrain": _outcome([_row("a", 16.0, test_nme=16.0),
                _row("b", 15.5, test_nme=15.0)]), "tau_standalone": alone,
                "tau_oneshot_mnus": _outcome([_row("x", 19.0), _row("y", 21.0), _row("z", 20.0)]),
                "tau_oneshot_uniform": _outcome([_row("x", 19.0), _row("y", 20.0), _row("z", 21.0)])}  # fmt: skip
    figures = extras(outcomes)
    assert [(r["supernet"], r["search"]) for r in figures["ablation"]] == [("mnus", "SAMOS"), ("mnus", "random")]
    taus = figures["ranking_correlation"]
    assert taus["mnus"]["kendall_tau"] == pytest.approx(1.0) and taus["uniform"]["kendall_tau"] == pytest.approx(1 / 3)
    assert figures["samos_vs_random_test_nme"] == pytest.approx(1.0)
