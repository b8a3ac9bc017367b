"""What a trial a scheduler stopped early means to MONAS's retraining and RNAS-MER's search (issue 15):
a stopped search is rejected (never retrained, never the pick), a stopped retraining has no test figures."""

from __future__ import annotations

import json

import pandas as pd

from orchestrator.methods.monas import monas_figures
from orchestrator.methods.rnas_mer import _best_search_row, _searched_genotypes
from orchestrator.pipeline import StageOutcome

STOP = "stopped early by asha after 1 of 3 epochs"


def _row(arch: str, value: float, *, error: str = "", epochs: int = 3, **metrics) -> dict:
    return {"stage": "s", "trial_id": arch, "arch_key": arch, "arch": arch, "metric": "m", "value": value,
            "status": "ok", "error": error, "params": 10, "epochs": epochs, "cached": False,
            "metrics": json.dumps(metrics)}


def _outcome(rows: list[dict], summary: dict | None = None) -> StageOutcome:
    return StageOutcome("s", pd.DataFrame(rows), summary or {}, 0.0)


def test_a_search_seed_stopped_early_is_rejected_even_with_the_best_value():
    search = _outcome([_row("g0", 0.40, seed=0), _row("g1", 0.90, error=STOP, epochs=1, seed=1),
                       _row("g2", 0.50, seed=2)])
    assert _best_search_row(search)["arch"] == "g2"
    assert [r["seed"] for r in _searched_genotypes(search)] == [0, 2]


def test_a_baseline_winner_stopped_in_its_retraining_has_no_test_figures():
    samos, rand = _outcome([_row("a", 20.0)], {"best_arch": "a"}), _outcome([_row("b", 21.0)])
    retrain = _outcome([_row("a", 15.0, test_nme=16.0, nme_mean=16.5),
                        _row("b", 30.0, error=STOP, epochs=1)])
    figures = monas_figures({"search": samos, "random": rand, "retrain": retrain}, samplings=["mnus"], main="mnus")
    table = {r["search"]: r for r in figures["ablation"]}
    assert table["SAMOS"]["test_nme"] == 16.0 and "stopped_early" not in table["SAMOS"]
    assert table["random"]["test_nme"] is None and table["random"]["stopped_early"] == 1
    assert figures["samos_vs_random_test_nme"] is None  # no claim on test from a training cut short
