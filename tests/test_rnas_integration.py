"""RNAS-MER end to end on a local Ray (CLI), plus the resumable search/fold loops and the Optuna budget."""

from __future__ import annotations

import copy
import json
import re

import numpy as np
import pandas as pd
import pytest
import torch

from trainables.microexpr.data import make_microexpr
from trainables.microexpr.model import BaselineC3D, SupernetSpec
from trainables.microexpr.train import FoldSettings, SearchSettings, fit_fold, run_search

torch.set_num_threads(1)

TINY = {"subjects": 4, "episodes": 2, "frames": 4, "image_size": 16, "seed": 0}


def test_search_resumed_from_an_epoch_state_ends_where_the_whole_run_ends():
    ds = make_microexpr(**TINY)
    spec = SupernetSpec(channels=4, cells=2, nodes=2, levels=2, shared_kernels=True)
    settings = SearchSettings(epochs=2, batch_size=4, seed=0)
    states: list[dict] = []
    full = run_search(ds, spec, settings, on_epoch=lambda _m, state: states.append(copy.deepcopy(state)))
    assert [s["epoch"] for s in states] == [1, 2]
    diagnostics = ("train_uar", "val_uar", "alpha_entropy", "eta_entropy", "beta_entropy", "genotype")
    assert all(set(diagnostics) <= set(h) for h in states[-1]["history"]) and len(states[-1]["history"]) == 2
    assert 0.0 < full["alpha_entropy"] <= 1.0
    resumed = run_search(ds, spec, settings, resume_state=states[0])
    assert resumed["genotype"] == full["genotype"]
    assert resumed["train_loss"] == pytest.approx(full["train_loss"], rel=1e-6)
    assert run_search(ds, spec, settings, resume_state=states[1])["val_uar"] == full["val_uar"]  # nothing left to train


def test_fold_resumed_from_an_epoch_state_predicts_the_same():
    ds = make_microexpr(**TINY)
    train, test = np.flatnonzero(ds.subjects != 0), np.flatnonzero(ds.subjects == 0)
    settings = FoldSettings(epochs=2, batch_size=4)
    states: list[dict] = []
    make = lambda: BaselineC3D(2, num_classes=3)  # noqa: E731
    full = fit_fold(make, ds, train, test, settings, on_epoch=lambda _r, s: states.append(copy.deepcopy(s)))
    resumed = fit_fold(make, ds, train, test, settings, resume_state=states[0])
    assert resumed["predicted"] == full["predicted"] and resumed["truth"] == ds.labels[test].tolist()


def test_optuna_search_stops_at_its_budget_and_keeps_it_across_restore(tmp_path):
    from ray.tune.search import Searcher

    from search_algos.rnas_hpo import ArchLrSearch

    def make() -> ArchLrSearch:
        return ArchLrSearch(num_samples=2, arch_lr=(1e-4, 1e-2), arch_weight_decay=(1e-5, 1e-2),
                            metric="val_uar", mode="max", seed=0)

    first = make()
    config = first.suggest("a")
    assert 1e-4 <= config["arch_lr"] <= 1e-2 and 1e-5 <= config["arch_weight_decay"] <= 1e-2
    first.on_trial_complete("a", {"val_uar": 0.5, **config})
    first.save(str(tmp_path / "searcher.pkl"))
    again = make()
    again.restore(str(tmp_path / "searcher.pkl"))
    assert isinstance(again.suggest("b"), dict)
    assert again.suggest("c") == Searcher.FINISHED
    again.on_trial_complete("b", {"val_uar": 0.75})
    assert again.summary()["trials"] == 2 and again.summary()["best_hpo"]["value"] == 0.75


def test_ablation_switches_become_stages_with_their_spec():
    from orchestrator.config import parse_config
    from orchestrator.methods.rnas_mer import rnas_stages

    raw = copy.deepcopy(CONFIG)
    raw["searcher"]["ablations"] = ["darts_ops", "no_partial", "no_attention", "no_edge_norm"]
    config = parse_config(raw)
    data = make_microexpr(subjects=3, episodes=1, frames=4, image_size=16)
    stages, _select, _extras = rnas_stages(config, data, store=None, run_dir="/nonexistent/run")
    names = [s.name for s in stages]
    assert names[:3] == ["search", "loso", "baseline_loso"]
    specs = {s.name: s.job.spec for s in stages}
    assert specs["search_darts_ops"]["ops"] == "darts" and specs["loso_darts_ops"]["ops"] == "darts"
    assert specs["search_no_partial"]["partial"] == 1 and specs["search"]["partial"] == 4
    assert specs["search_no_attention"]["attention"] is False and specs["search"]["attention"] is True
    assert specs["search_no_edge_norm"]["edge_norm"] is False
    for name in ("darts_ops", "no_partial", "no_attention", "no_edge_norm"):  # each switch: its search, its LOSO
        assert names.index(f"search_{name}") + 1 == names.index(f"loso_{name}")


CONFIG = {
    "name": "rnas",
    "seed": 0,
    "data": {"dataset": "microexpr", "subjects": 3, "episodes": 3, "frames": 4, "image_size": 16},
    "space": {"name": "rnas", "cells": 2, "nodes": 2, "levels": 2},
    "searcher": {"name": "rnas_mer", "channels": 4, "epochs": 1, "batch_size": 4, "tune_over": "optuna",
                 "optuna_trials": 2, "loso_epochs": 1, "loso_batch_size": 4},
    "resources": {"num_cpus": 2},
}


@pytest.mark.integration
@pytest.mark.slow
def test_cli_run_prints_loso_figures_for_searched_network_and_baseline(tmp_path):
    from tests.cli_driver import facenas, write_config

    config = write_config(tmp_path, "rnas", CONFIG)
    proc = facenas("run", str(config), "--storage", str(tmp_path / "runs"), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert re.search(r"RNAS-MER \(searched\)\s+UAR=", proc.stdout) and re.search(r"baseline 3D CNN\s+UAR=", proc.stdout)
    run = tmp_path / "runs" / "rnas"
    frame = pd.read_parquet(run / "results.parquet")
    assert list(dict.fromkeys(frame["stage"])) == ["search", "loso", "baseline_loso"]
    assert (frame["stage"] == "search").sum() == 2  # the Optuna budget
    assert (frame["stage"] == "loso").sum() == 3 and (frame["stage"] == "baseline_loso").sum() == 3  # one per subject
    best = json.loads((run / "best.json").read_text())
    # pooled UAR / UF1 recomputed here from the fold files, by hand
    truth, pred = [], []
    subjects = set()
    for path in sorted((run / "loso" / "_folds" / best["arch_key"]).glob("fold-*.json")):
        fold = json.loads(path.read_text())
        subjects.add(fold["subject"])
        truth += fold["truth"]
        pred += fold["predicted"]
    assert subjects == {0, 1, 2} and len(truth) == 9
    t, p = np.array(truth), np.array(pred)
    recalls = [np.mean(p[t == c] == c) for c in range(3) if (t == c).any()]
    f1s = [2 * np.sum((p == c) & (t == c)) / (np.sum(p == c) + np.sum(t == c)) for c in range(3) if (t == c).any()]
    assert best["uar"] == pytest.approx(np.mean(recalls)) and best["value"] == best["uar"]
    assert best["uf1"] == pytest.approx(np.mean(f1s))
    assert best["params"] > 0 and best["model_size_mb"] > 0 and best["space"] == "rnas"
    assert best["baseline"]["uar"] is not None and best["baseline"]["params"] > 0
    assert best["search"]["hpo"] == "optuna" and best["search"]["trials"] == 2
    assert best["arch"] == best["genotype"]
    # with Optuna only the best trial's genotype is retrained; its entry is the selected one
    assert [e["selected"] for e in best["per_seed"]] == [True] and best["per_seed"][0]["uar"] == best["uar"]
    # search diagnostics: one history per search trial, every epoch with entropies, UARs and a genotype
    assert len(best["search_history"]) == 2
    for history in best["search_history"]:
        assert [e["epoch"] for e in history["epochs"]] == [1]
        epoch = history["epochs"][0]
        assert all(0.0 <= epoch[k] <= 1.0 for k in ("alpha_entropy", "eta_entropy", "beta_entropy", "train_uar", "val_uar"))
        assert history["stability"]["stable_epochs"] == 1


def test_fold_and_search_run_under_bf16_autocast_on_cpu():
    """The GPU path's precision (training.precision: bf16) on the CPU: finite losses, predictions made."""
    ds = make_microexpr(**TINY)
    train, test = np.flatnonzero(ds.subjects != 0), np.flatnonzero(ds.subjects == 0)
    fold = fit_fold(lambda: BaselineC3D(2, num_classes=3), ds, train, test, FoldSettings(epochs=1, batch_size=4),
                    precision="bf16")
    assert np.isfinite(fold["train_loss"]) and len(fold["predicted"]) == len(test)
    spec = SupernetSpec(channels=4, cells=2, nodes=2, levels=2, shared_kernels=True)
    search = run_search(ds, spec, SearchSettings(epochs=1, batch_size=4), precision="bf16")
    assert np.isfinite(search["train_loss"]) and np.isfinite(search["arch_loss"]) and search["genotype"]
