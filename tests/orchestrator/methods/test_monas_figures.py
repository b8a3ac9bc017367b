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
