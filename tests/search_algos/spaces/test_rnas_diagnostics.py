"""RNAS-MER search diagnostics: architecture entropies, genotype stability, per-seed LOSO pooling (no Ray)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from search_algos.spaces.rnas import HYBRID_OPS, RnasGenotype, architecture_entropy, cell_edges

CELL = (((0, "conv_3"), (1, "skip")), ((0, "conv_1"), (2, "add_1_3")))
OTHER = (((0, "conv_3"), (1, "skip")), ((1, "conv_1"), (2, "add_1_3")))


def _entropy(p: np.ndarray) -> float:
    return float(-(p * np.log(p)).sum() / math.log(len(p)))


def test_entropy_is_one_at_uniform_logits_and_falls_when_a_choice_wins():
    edges = len(cell_edges(2))
    alpha, eta, beta = np.zeros((edges, len(HYBRID_OPS))), np.zeros(edges), np.zeros((3, 2, 2))
    assert architecture_entropy(alpha, eta, beta) == pytest.approx(
        {"alpha_entropy": 1.0, "eta_entropy": 1.0, "beta_entropy": 1.0})
    alpha[0, 3] = 5.0
    eta[:2] = [2.0, 0.0]
    got = architecture_entropy(alpha, eta, beta)
    row = np.exp(alpha[0]) / np.exp(alpha[0]).sum()
    assert got["alpha_entropy"] == pytest.approx((_entropy(row) + (edges - 1)) / edges)
    pair = np.exp([2.0, 0.0]) / np.exp([2.0, 0.0]).sum()
    assert got["eta_entropy"] == pytest.approx((_entropy(pair) + 1.0) / 2)  # node 0 decided, node 1 not
    assert got["beta_entropy"] == pytest.approx(1.0)


def test_beta_entropy_counts_the_exit_of_the_deepest_level():
    beta = np.zeros((2, 2, 2))
    beta[1, 1, 0] = 10.0  # the deepest state of cell 1 stays: its stay/exit pair is decided
    edges = len(cell_edges(1))
    got = architecture_entropy(np.zeros((edges, 3)), np.zeros(edges), beta)["beta_entropy"]
    assert 0.0 < got < 1.0


def _genotype(cell, path=(0, 1)) -> str:
    return RnasGenotype(path=path, cell=cell, levels=2).to_json()


def test_genotype_stability_counts_the_final_run_and_the_changes():
    from orchestrator.methods.rnas_mer import genotype_stability

    epochs = [{"genotype": _genotype(OTHER, (0, 0))}, {"genotype": _genotype(OTHER)}, {"genotype": _genotype(CELL)},
              {"genotype": _genotype(CELL)}]
    got = genotype_stability(epochs)
    assert got == {"stable_epochs": 2, "path_changes": 1, "cell_changes": 1, "last_cell_agreement": 1.0}
    got = genotype_stability(epochs[:3])
    assert got["stable_epochs"] == 1 and got["last_cell_agreement"] == pytest.approx(0.75)  # 3 of 4 genes kept
    assert genotype_stability([])["stable_epochs"] == 0


def _fold(folder, subject: int, truth: list[int], predicted: list[int], params: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"fold-{subject:03d}.json").write_text(json.dumps(
        {"subject": subject, "truth": truth, "predicted": predicted, "params": params, "model_size_mb": 0.5}))


def test_pooled_figures_pool_folds_and_seeds(tmp_path):
    from orchestrator.methods.rnas_mer import pooled_figures
    from trainables.microexpr.metrics import uar

    _fold(tmp_path / "a", 0, [0, 1], [0, 1], 100)
    _fold(tmp_path / "a", 1, [2, 2], [2, 0], 100)
    _fold(tmp_path / "b", 0, [0, 1], [1, 1], 300)
    one = pooled_figures(str(tmp_path / "a"), 3)
    assert one["uar"] == pytest.approx(uar([0, 1, 2, 2], [0, 1, 2, 0], 3)) and one["folds"] == 2
    both = pooled_figures([str(tmp_path / "a"), str(tmp_path / "b")], 3)
    assert both["uar"] == pytest.approx(uar([0, 1, 2, 2, 0, 1], [0, 1, 2, 0, 1, 1], 3))
    assert both["folds"] == 3 and both["params"] == 200  # the mean over the seeds' networks
    assert pooled_figures(str(tmp_path / "missing"), 3) is None


def test_search_history_reads_every_trial_with_its_stability(tmp_path):
    from orchestrator.methods.rnas_mer import search_history

    folder = tmp_path / "search" / "_history"
    folder.mkdir(parents=True)
    for seed, cells in ((1, [OTHER, CELL]), (0, [CELL, CELL])):
        epochs = [{"epoch": i + 1, "val_uar": 0.4, "genotype": _genotype(c)} for i, c in enumerate(cells)]
        (folder / f"search-{seed}.json").write_text(json.dumps({"seed": seed, "arch_lr": 3e-3, "epochs": epochs}))
    got = search_history(str(tmp_path / "search"))
    assert [h["seed"] for h in got] == [0, 1]
    assert [h["stability"]["stable_epochs"] for h in got] == [2, 1]


def test_the_report_plots_the_search_history():
    import pandas as pd

    from orchestrator.pictures import RunView
    from orchestrator.methods.rnas_mer_pictures import search_plots

    epochs = [{"epoch": e, "train_loss": 1.0, "arch_loss": 1.1, "train_uar": 0.4, "val_uar": 0.35,
               "alpha_entropy": 0.99, "eta_entropy": 0.98, "beta_entropy": 0.97, "genotype": _genotype(CELL)}
              for e in (1, 2)]
    best = {"search_history": [{"seed": 0, "epochs": epochs, "stability": {
        "stable_epochs": 2, "path_changes": 0, "cell_changes": 0, "last_cell_agreement": 1.0}}]}
    plots = search_plots(RunView(frame=pd.DataFrame(), best=best))
    assert [title for title, _ in plots] == ["search diagnostics per epoch", "decoded genotype per epoch"]
    assert search_plots(RunView(frame=pd.DataFrame(), best={})) == []


class _Outcome:
    def __init__(self, rows: list[dict]) -> None:
        import pandas as pd

        self.frame = pd.DataFrame(rows)


def _search_rows(*seeds_and_cells) -> list[dict]:
    rows = []
    for i, (seed, cell, value) in enumerate(seeds_and_cells):
        g = RnasGenotype(path=(0, 1), cell=cell, levels=2)
        rows.append({"trial_id": f"t{i}", "status": "ok", "arch": g.to_json(), "arch_key": g.key(), "value": value,
                     "params": 1.0, "metrics": json.dumps({"seed": float(seed), "arch_lr": 3e-3})})
    return rows


def _folds_of(run, stage: str, key: str, truth_pred: list[tuple[list[int], list[int]]], params: int) -> None:
    for subject, (truth, predicted) in enumerate(truth_pred):
        _fold(run / stage / "_folds" / key, subject, truth, predicted, params)


def test_figures_per_seed_and_pooled_over_seeds(tmp_path, capsys):
    from orchestrator.methods.rnas_mer import rnas_figures
    from trainables.microexpr.metrics import uar

    rows = _search_rows((0, CELL, 0.5), (1, OTHER, 0.6), (2, CELL, 0.4))  # seeds 0 and 2 decode the same genotype
    k_cell, k_other = rows[0]["arch_key"], rows[1]["arch_key"]
    _folds_of(tmp_path, "loso", k_cell, [([0, 1], [0, 1]), ([2], [2])], 100)
    _folds_of(tmp_path, "loso", k_other, [([0, 1], [1, 1]), ([2], [0])], 300)
    _folds_of(tmp_path, "baseline_loso", k_cell, [([0, 1], [0, 0]), ([2], [2])], 110)
    _folds_of(tmp_path, "baseline_loso", k_other, [([0, 1], [0, 1]), ([2], [2])], 290)
    out = rnas_figures({"search": _Outcome(rows)}, run_dir=str(tmp_path), num_classes=3, subjects=2, ablations=[],
                       baseline=True)
    assert [(e["seed"], e["selected"]) for e in out["per_seed"]] == [(0, False), (1, True), (2, False)]
    # pooled over the three seeds: the genotype of seeds 0 and 2 counts twice
    truth = [0, 1, 2] * 2 + [0, 1, 2]
    pred = [0, 1, 2, 1, 1, 0, 0, 1, 2]
    assert out["uar"] == pytest.approx(uar(truth, pred, 3)) and out["value"] == out["uar"]
    assert out["params"] == 300 and out["genotype"] == json.loads(rows[1]["arch"])  # the search's pick's own size
    assert out["per_seed"][1]["baseline"]["uar"] == pytest.approx(1.0)
    printed = capsys.readouterr().out
    assert "seed 1: RNAS-MER (selected)" in printed and "RNAS-MER (3 seeds pooled)" in printed


def test_figures_adopt_the_flat_fold_files_of_an_older_run(tmp_path):
    from orchestrator.methods.rnas_mer import rnas_figures

    rows = _search_rows((0, CELL, 0.5))
    for stage in ("loso", "baseline_loso"):  # the layout before per-genotype folders
        _fold(tmp_path / stage / "_folds", 0, [0, 1], [0, 1], 100)
    out = rnas_figures({"search": _Outcome(rows)}, run_dir=str(tmp_path), num_classes=3, subjects=1, ablations=[],
                       baseline=True)
    assert out["uar"] == pytest.approx(1.0) and out["baseline"]["folds"] == 1
    assert (tmp_path / "loso" / "_folds" / rows[0]["arch_key"] / "fold-000.json").is_file()


def test_figures_refuse_a_run_whose_searched_folds_all_failed(tmp_path):
    from orchestrator.errors import UserError
    from orchestrator.methods.rnas_mer import rnas_figures

    with pytest.raises(UserError, match="no LOSO fold of the searched network finished"):
        rnas_figures({"search": _Outcome(_search_rows((0, CELL, 0.5)))}, run_dir=str(tmp_path), num_classes=3,
                     subjects=1, ablations=[], baseline=False)
