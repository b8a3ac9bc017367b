"""RNAS-MER as a pipeline of Tune stages: search -> loso (searched network) -> baseline_loso [-> ablations].

Paper: ``rnas-mer-micro-expression-nas.txt`` (Algorithm 1). The differentiable search happens inside
one Tune function trainable (:func:`search_trial`); Tune runs it for several seeds, or Optuna
(:class:`search_algos.rnas_hpo.ArchLrSearch`) over the architecture learning rate and weight decay. The
decoded genotype of every search seed (with Optuna: of the best trial) is then retrained under
leave-one-subject-out, each fold a Tune trial (:func:`fold_trial`, parallel across the cluster), and so
is, for each of them, a hand-designed 3D CNN of about the same parameter count (the baseline). Every fold
writes its predictions to ``RUN_DIR/<stage>/_folds/<genotype key>/``; UAR and UF1 are computed on the
predictions pooled over all folds (MEGC-2019), per search seed and pooled over the seeds, and written to
``best.json`` (``uar``, ``uf1``: pooled over seeds; ``per_seed``; ``params``, ``model_size_mb``, and the
baseline's and ablations' figures). Each search trial writes its per-epoch diagnostics (losses, train and
validation UAR, architecture entropies, decoded genotype) to ``RUN_DIR/<stage>/_history/``;
``best.json["search_history"]`` gathers them with the genotype's stability over the last epochs.

With a ``scheduler`` (asha or median) the search trials of the ``search`` stage may be stopped early
(their val_uar after fewer epochs than the others'): a stopped search is rejected, its genotype is
neither the search's pick nor retrained, and ``best.json["search_trials"]`` gives its ``stopped_early``
epochs. With Optuna, the stopped trial's last val_uar is what Optuna learns (as with Tune's OptunaSearch).
Every other stage trains in full: a fold's result is never cut short.

Each trial checkpoints every epoch (``save_state``/``load_state``, keyed by the evaluation, not the
trial), so a killed run resumes inside the search or the fold where it stopped.

Also the method's registry entry (``searcher: rnas_mer``): the ``rnas`` space and searcher sections, its
rule (searcher, space and micro-expression data go together) and its report pictures
(:mod:`orchestrator.methods.rnas_mer_pictures`). Ray and torch are imported by the functions that use
them (the registry is imported with the config).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
from pydantic import Field, model_validator

from orchestrator.methods.base import Method
from orchestrator.methods.rnas_mer_pictures import rnas_figure, search_plots
from orchestrator.paths import RunPaths
from orchestrator.sections import Section

if TYPE_CHECKING:
    from orchestrator.config import ExperimentConfig
    from orchestrator.methods.base import StagePlan
    from orchestrator.pipeline import StageOutcome
    from orchestrator.store import StoreClient
    from orchestrator.trial import Store

__all__ = [
    "ABLATIONS",
    "METHOD",
    "MerJob",
    "RnasSearcherConfig",
    "RnasSpaceConfig",
    "fold_trial",
    "pooled_figures",
    "rnas_stages",
    "search_trial",
]

# Table 3's switches, applied to the supernet spec (and so to the decoded network).
ABLATIONS: dict[str, dict[str, Any]] = {
    "darts_ops": {"ops": "darts", "shared_kernels": False},
    "no_partial": {"partial": 1},
    "no_attention": {"attention": False},
    "no_edge_norm": {"edge_norm": False},
}


@dataclass(frozen=True)
class MerJob:
    """What the trials of one RNAS-MER stage share (narrow: no whole config object)."""

    data: dict[str, Any]  # kwargs of trainables.microexpr.data.load_microexpr
    spec: dict[str, Any]  # kwargs of SupernetSpec
    search: dict[str, Any]  # kwargs of SearchSettings (seed and arch lr/wd may come from the trial)
    fold: dict[str, Any]  # kwargs of FoldSettings
    retrain_channels: int
    seed: int
    store: Store
    run: str
    stage: str
    storage_path: str  # RUN_DIR
    use_gpu: bool = False  # trainables.device: train on the trial's GPU (its resources reserve one)
    precision: str = "fp32"  # resolved: fp32 or bf16


def _dataset(kwargs: dict[str, Any]):
    from orchestrator.evaluate import cached_dataset
    from trainables.microexpr.data import load_microexpr

    return cached_dataset(kwargs, load_microexpr)


def _digest(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


# -- Tune functions ---------------------------------------------------------------------------------


def search_trial(config: dict[str, Any], job: MerJob) -> None:
    """Algorithm 1's search and decode stages; reports every epoch's ``val_uar`` and genotype (``arch``)."""
    import torch

    from orchestrator.results import write_json_atomic
    from orchestrator.trial import EpochHook, TrialSequence, plain_metrics
    from search_algos.spaces.rnas import RnasGenotype
    from trainables.microexpr.model import MODEL_REVISION, RnasSupernet, SupernetSpec, count_params
    from trainables.microexpr.train import SearchSettings, run_search

    torch.set_num_threads(1)
    data = _dataset(job.data)
    settings = SearchSettings(**{**job.search, "seed": int(config.get("seed", job.seed)),
                                 **{k: float(config[k]) for k in ("arch_lr", "arch_weight_decay") if k in config}})
    spec = SupernetSpec(**job.spec, num_classes=data.num_classes)
    identity = {"spec": job.spec, "settings": settings.__dict__, "data": data.dataset_id, "model": MODEL_REVISION,
                **({"precision": job.precision} if job.precision != "fp32" else {})}
    paths = RunPaths.of(job.storage_path)
    checkpoint = str(paths.checkpoint(job.stage, f"search-{_digest(identity)}.pt"))
    base = {"epochs": settings.epochs, "dataset_id": data.dataset_id, "stage": job.stage, "seed": settings.seed,
            "arch_lr": settings.arch_lr, "arch_weight_decay": settings.arch_weight_decay,
            "params": float(count_params(RnasSupernet(spec)))}  # the supernet's
    history_file = str(paths.history(job.stage, f"search-{_digest(identity)}.json"))

    def shown(metrics: dict[str, Any]) -> dict[str, Any]:
        genotype = RnasGenotype.from_json(metrics["genotype"])
        return {**plain_metrics(metrics), "arch": genotype.to_json(), "arch_key": genotype.key(),
                "search_epoch": float(metrics["epoch"])}

    def fit(epoch: EpochHook, resume: dict[str, Any] | None) -> dict[str, Any]:
        def on_epoch(metrics: dict[str, Any], state: dict[str, Any]) -> None:
            write_json_atomic({"seed": settings.seed, "arch_lr": settings.arch_lr,
                               "arch_weight_decay": settings.arch_weight_decay, "epochs": state["history"]},
                              Path(history_file))
            epoch(metrics, state, last=metrics["epoch"] == settings.epochs)

        return run_search(data, spec, settings, on_epoch=on_epoch, resume_state=resume,
                          use_gpu=job.use_gpu, precision=job.precision)

    # no store key: a search is not one evaluation; its genotype is evaluated by the LOSO folds
    TrialSequence(base=base, metric="val_uar", checkpoint=checkpoint, shown=shown,
                  failed_fields={"arch": "", "arch_key": ""}).run(fit)


def _fold_model(config: dict[str, Any], job: MerJob, num_classes: int):
    """A factory of the fold's network, and its description (params, size, name)."""
    from search_algos.spaces.rnas import RnasGenotype
    from trainables.microexpr.model import RnasNetwork, baseline_for_params, count_params, model_size_mb

    genotype = RnasGenotype.from_json(config["arch"])

    def searched():
        return RnasNetwork(genotype, channels=job.retrain_channels, num_classes=num_classes)

    if config["model"] == "searched":
        make = searched
    else:
        width = baseline_for_params(count_params(searched()), num_classes=num_classes).width

        def make():
            from trainables.microexpr.model import BaselineC3D

            return BaselineC3D(width, num_classes=num_classes)

    probe = make()
    return make, {"params": float(count_params(probe)), "model_size_mb": model_size_mb(probe),
                  "model": config["model"], "width": float(getattr(probe, "width", job.retrain_channels))}


def _fold_file(job: MerJob, genotype_key: str, subject: int) -> str:
    """``RUN_DIR/<stage>/_folds/<searched genotype's key>/fold-NNN.json`` (the baseline's folds too are
    filed under the genotype it is size-matched to)."""
    return str(RunPaths.of(job.storage_path).fold(job.stage, genotype_key, subject))


def fold_trial(config: dict[str, Any], job: MerJob) -> None:
    """Train the searched network or the baseline on all subjects but ``config["fold"]``; predict that one.

    ``config``: ``{"arch": genotype JSON, "model": "searched" | "baseline", "fold": subject index}``.
    Reports the fold's own ``val_uar`` each epoch; writes the final predictions to
    ``_folds/<genotype key>/`` (the baseline's under the key of the genotype it is size-matched to)
    before the final report, also when they are served from the store.
    """
    import torch

    from orchestrator.results import write_json_atomic
    from orchestrator.trial import EpochHook, StoreKey, TrialSequence
    from search_algos.spaces.rnas import RnasGenotype
    from trainables.microexpr.data import loso_folds
    from trainables.microexpr.metrics import uar
    from trainables.microexpr.model import MODEL_REVISION
    from trainables.microexpr.train import FoldSettings, fit_fold

    torch.set_num_threads(1)
    data = _dataset(job.data)
    subject = int(config["fold"])
    genotype = RnasGenotype.from_json(config["arch"])
    folds = {s: (train, test) for s, train, test in loso_folds(data.subjects)}
    train_rows, test_rows = folds[subject]
    settings = FoldSettings(**{**job.fold, "seed": job.seed})
    make, described = _fold_model(config, job, data.num_classes)
    arch_key = genotype.key() if config["model"] == "searched" else f"c3d-w{int(described['width'])}"
    label = (genotype.summary() if config["model"] == "searched"
             else f"baseline 3D CNN (width {int(described['width'])})")  # the progress line's words
    base = {"arch": genotype.to_json(), "arch_key": arch_key, "epochs": settings.epochs, "dataset_id": data.dataset_id,
            "stage": job.stage, "fold": float(subject), "describe": f"fold {subject}: {label}", **described}
    protocol = {"fold": job.fold, "retrain_channels": job.retrain_channels,
                # the searched network's code revision (the baseline's is unchanged: its rows are still served)
                **({"model_revision": MODEL_REVISION} if config["model"] == "searched" else {}),
                **({"precision": job.precision} if job.precision != "fp32" else {})}  # fp32: stored rows still served
    key = StoreKey.trained(space=f"rnas/loso/{config['model']}/{subject}", arch_key=arch_key,
                           dataset_id=data.dataset_id, fidelity=settings.epochs, seed=job.seed, training=protocol)
    # one file per trial: two genotypes may be size-matched to the same baseline width and train at once
    owner = "" if config["model"] == "searched" else f"-g{genotype.key()[:12]}"
    checkpoint = str(RunPaths.of(job.storage_path).checkpoint(
        job.stage, f"{config['model']}-{arch_key}{owner}-f{subject}-e{settings.epochs}-s{job.seed}.pt"))

    def shown(result: dict[str, Any]) -> dict[str, float]:
        return _fold_metrics(result, data.num_classes, uar)

    def stored(result: dict[str, Any]) -> dict[str, Any]:
        return {**shown(result), "truth": result["truth"], "predicted": result["predicted"]}

    def settle(result: dict[str, Any], cached: bool) -> None:
        write_json_atomic({"subject": subject, "truth": result["truth"], "predicted": result["predicted"],
                           "model": config["model"], **described}, Path(_fold_file(job, genotype.key(), subject)))
        if not cached and os.path.exists(checkpoint):  # the store and the fold file hold the result now
            os.remove(checkpoint)

    def fit(epoch: EpochHook, resume: dict[str, Any] | None) -> dict[str, Any]:
        return fit_fold(make, data, train_rows, test_rows, settings, resume_state=resume,
                        on_epoch=lambda r, state: epoch(r, state, last=r["epoch"] == settings.epochs),
                        use_gpu=job.use_gpu, precision=job.precision)

    TrialSequence(
        base=base, metric="val_uar", store=job.store, key=key,
        config={"arch": genotype.to_dict(), "model": config["model"], "training": protocol}, run_name=job.run,
        checkpoint=checkpoint, shown=shown, stored=stored, settle=settle,
        accept=lambda metrics: "predicted" in metrics,  # the pooled figures need the fold's predictions
    ).run(fit)


def _fold_metrics(result: dict[str, Any], num_classes: int, uar) -> dict[str, float]:
    value = uar(result["truth"], result["predicted"], num_classes) if result["truth"] else math.nan
    return {"val_uar": float(value), "fold_acc": float(result.get("fold_acc", math.nan)),
            "train_loss": float(result.get("train_loss", math.nan))}


# -- the pipeline --------------------------------------------------------------------------------------


def _fold_predictions(folder: str) -> list[dict[str, Any]]:
    files = sorted(f for f in os.listdir(folder) if f.endswith(".json")) if os.path.isdir(folder) else []
    folds = []
    for name in files:
        with open(os.path.join(folder, name)) as fh:
            folds.append(json.load(fh))
    return folds


def pooled_figures(folders: str | list[str], num_classes: int) -> dict[str, Any] | None:
    """UAR / UF1 over the predictions of every fold file in ``folders`` (MEGC-2019 pooling).

    One folder is one network's LOSO; several (one per search seed) pool the seeds' predictions too.
    ``params`` and ``model_size_mb`` are the mean over the folders' networks.
    """
    from trainables.microexpr.metrics import confusion_matrix, uar, uf1

    folders = [folders] if isinstance(folders, str) else list(folders)
    truth, predicted, params, sizes, count = [], [], [], [], 0
    for folder in folders:
        folds = _fold_predictions(folder)
        for fold in folds:
            truth += fold["truth"]
            predicted += fold["predicted"]
        if folds:
            params.append(float(folds[0]["params"]))
            sizes.append(float(folds[0]["model_size_mb"]))
            count += len(folds)
    if not count:
        return None
    return {
        "uar": uar(truth, predicted, num_classes), "uf1": uf1(truth, predicted, num_classes),
        "accuracy": float(np.mean(np.asarray(truth) == np.asarray(predicted))),
        "confusion": confusion_matrix(truth, predicted, num_classes).tolist(), "folds": count,
        "params": int(round(np.mean(params))), "model_size_mb": round(float(np.mean(sizes)), 4),
    }


def _searched_genotypes(outcome: Any) -> list[dict[str, Any]]:
    """``[{"seed", "arch", "arch_key", "val_uar"}]`` of the finished search trials, in seed order (not those a
    trial scheduler stopped early)."""
    from orchestrator.results import completed_rows

    frame = completed_rows(outcome.frame)  # a search a scheduler stopped early is rejected
    ok = frame[(frame["status"] == "ok") & (frame["arch"].astype(str) != "")]
    rows = [{"seed": json.loads(r["metrics"]).get("seed"), "arch": r["arch"], "arch_key": r["arch_key"],
             "val_uar": r["value"]} for r in ok.to_dict("records")]
    return sorted(rows, key=lambda r: (r["seed"] is None, r["seed"]))


def genotype_stability(epochs: list[dict[str, Any]]) -> dict[str, Any]:
    """How settled the decoded genotype is at the end of a search.

    Returns:
        ``stable_epochs``: how many final epochs decoded the same genotype; ``path_changes`` and
        ``cell_changes``: epochs whose path / cell differ from the epoch before; ``last_cell_agreement``:
        share of the cell's (input, op) genes the last two epochs have in common.
    """
    from search_algos.spaces.rnas import RnasGenotype

    genotypes = [RnasGenotype.from_json(e["genotype"]) for e in epochs if e.get("genotype")]
    if not genotypes:
        return {"stable_epochs": 0, "path_changes": 0, "cell_changes": 0, "last_cell_agreement": None}
    stable = 1
    while stable < len(genotypes) and genotypes[-stable - 1] == genotypes[-1]:
        stable += 1
    pairs = list(zip(genotypes, genotypes[1:]))
    agreement = None
    if len(genotypes) >= 2:
        last = [set(node) for node in genotypes[-1].cell]
        before = [set(node) for node in genotypes[-2].cell]
        agreement = float(np.mean([len(a & b) / 2 for a, b in zip(last, before)]))
    return {"stable_epochs": stable, "path_changes": sum(a.path != b.path for a, b in pairs),
            "cell_changes": sum(a.cell != b.cell for a, b in pairs), "last_cell_agreement": agreement}


def search_history(stage_dir: str) -> list[dict[str, Any]]:
    """Every search trial's per-epoch diagnostics (``_history/``), each with its genotype stability."""
    out = []
    stage = Path(stage_dir)
    for fold in _fold_predictions(str(RunPaths.of(stage.parent).history_dir(stage.name))):
        out.append({**fold, "stability": genotype_stability(fold["epochs"])})
    return sorted(out, key=lambda h: (h.get("seed") is None, h.get("seed"), h.get("arch_lr")))


def _best_search_row(outcome: Any) -> dict[str, Any] | None:
    """The search trial with the best validation UAR among those that searched for all their epochs."""
    from orchestrator.results import pick_best

    return pick_best(outcome.frame, mode="max", completed=True)


def rnas_stages(config: ExperimentConfig, data: Any, store: StoreClient, run_dir: str) -> StagePlan:
    """The RNAS-MER stages, the selector of ``best.json``'s row, and its extra figures.

    Returns ``(stages, select, extras)``: ``select`` gives a LOSO fold row of the search's pick;
    ``extras`` the pooled UAR/UF1 of the searched network, the baseline and each ablation (and prints them).
    """
    from ray import tune

    from orchestrator.pipeline import Stage
    from search_algos.rnas_hpo import ArchLrSearch

    s = config.searcher
    sp = config.space
    spec = {"channels": s.channels, "cells": sp.cells, "nodes": sp.nodes, "levels": sp.levels, "ops": sp.ops,
            "partial": s.partial_channels, "attention": sp.attention, "edge_norm": s.edge_normalization,
            "normalisation": s.beta_normalisation, "shared_kernels": s.shared_kernels}
    search = {"epochs": s.epochs, "batch_size": s.batch_size, "lr": s.lr, "arch_lr": s.arch_lr,
              "arch_weight_decay": s.arch_weight_decay}
    fold = {"epochs": s.loso_epochs, "batch_size": s.loso_batch_size, "lr": s.loso_lr}
    subjects = sorted(int(v) for v in np.unique(data.subjects))
    cpu = {"cpu": config.resources.cpus_per_trial, "gpu": config.resources.gpus_per_trial}  # gpu with training.use_gpu

    def job(stage: str, spec_changes: dict[str, Any] | None = None) -> MerJob:
        return MerJob(data=config.data.loader_kwargs(), spec={**spec, **(spec_changes or {})}, search=search,
                      fold=fold, retrain_channels=s.retrain_channels, seed=config.seed, store=store,
                      use_gpu=config.training.use_gpu, precision=config.training.resolved_precision,
                      run=os.path.basename(run_dir), stage=stage, storage_path=run_dir)

    every_seed = s.tune_over == "seeds"

    def searched(search_stage: str):
        """The genotypes to retrain: every search seed's (distinct ones), or the best Optuna trial's."""
        def archs(earlier: dict[str, Any]) -> list[str]:
            from orchestrator.errors import UserError

            best = _best_search_row(earlier[search_stage])
            if best is None:
                raise UserError(f"every trial of stage {search_stage!r} failed or was stopped early; see "
                                f"{search_stage}/ for the errors")
            if not every_seed:
                return [best["arch"]]
            return list(dict.fromkeys(r["arch"] for r in _searched_genotypes(earlier[search_stage])))
        return archs

    def loso_stage(name: str, search_stage: str, model: str, spec_changes: dict[str, Any] | None = None) -> Stage:
        return Stage(
            name=name, make_searcher=None, job=job(name, spec_changes), trainable=fold_trial,
            config=lambda earlier: {"arch": tune.grid_search(searched(search_stage)(earlier)), "model": model,
                                    "fold": tune.grid_search(subjects)},
            total=lambda earlier: len(searched(search_stage)(earlier)) * len(subjects), resources=cpu,
            metric="val_uar", mode="max",
        )

    if s.tune_over == "optuna":
        search_stage = Stage(
            name="search",
            make_searcher=lambda _e: ArchLrSearch(
                num_samples=s.optuna_trials, arch_lr=tuple(s.arch_lr_range), arch_weight_decay=tuple(s.arch_weight_decay_range),
                metric="val_uar", mode="max", seed=config.seed,
            ),
            job=job("search"), trainable=search_trial, total=lambda _e: s.optuna_trials, resources=cpu,
            metric="val_uar", mode="max", stoppable=True, max_epochs=s.epochs,
        )
    else:
        search_stage = Stage(
            name="search", make_searcher=None, job=job("search"), trainable=search_trial,
            config=lambda _e: {"seed": tune.grid_search(list(s.seeds))}, total=lambda _e: len(s.seeds),
            resources=cpu, metric="val_uar", mode="max", stoppable=True, max_epochs=s.epochs,
        )
    stages = [search_stage, loso_stage("loso", "search", "searched")]
    if s.baseline:
        stages.append(loso_stage("baseline_loso", "search", "baseline"))
    for ablation in s.ablations:
        changes = ABLATIONS[ablation]
        stages.append(Stage(
            name=f"search_{ablation}", make_searcher=None, job=job(f"search_{ablation}", changes),
            trainable=search_trial, config=lambda _e: {"seed": config.seed}, total=lambda _e: 1,
            resources=cpu, metric="val_uar", mode="max",
        ))
        stages.append(loso_stage(f"loso_{ablation}", f"search_{ablation}", "searched", changes))

    def select(outcomes: dict[str, StageOutcome]) -> dict[str, Any] | None:
        """A fold row of the selected genotype (the best search trial's, by its validation UAR on B)."""
        frame = outcomes["loso"].frame
        ok = frame[frame["status"] == "ok"]
        if ok.empty:
            return None
        best = _best_search_row(outcomes["search"])
        chosen = ok[ok["arch"] == best["arch"]] if best is not None else ok
        if chosen.empty:  # every fold of the search's pick failed: say so rather than switch in silence
            print("warning: no LOSO fold of the selected genotype finished; best.json names another seed's "
                  "genotype", flush=True)
            chosen = ok
        return chosen.iloc[0].to_dict()

    def extras(outcomes: dict[str, StageOutcome]) -> dict[str, Any]:
        return rnas_figures(outcomes, run_dir=run_dir, num_classes=data.num_classes, subjects=len(subjects),
                            ablations=list(s.ablations), baseline=s.baseline, every_seed=every_seed)

    return stages, select, extras


def _adopt_flat_folds(folds_dir: str, genotype_key: str) -> None:
    """Move fold files of the layout before per-genotype folders (``_folds/fold-NNN.json``, written when
    only the search's pick was retrained) into ``_folds/<its key>/``, so a resumed old run pools them."""
    from orchestrator.results import write_json_atomic

    flat = sorted(f for f in os.listdir(folds_dir) if f.endswith(".json")) if os.path.isdir(folds_dir) else []
    if not flat:
        return
    target = os.path.join(folds_dir, genotype_key)
    os.makedirs(target, exist_ok=True)
    for name in flat:
        source = os.path.join(folds_dir, name)
        if not os.path.exists(os.path.join(target, name)):  # a fold retrained after the resume wins
            with open(source) as fh:
                write_json_atomic(json.load(fh), Path(target) / name)  # durable before the old file goes
        os.remove(source)


def rnas_figures(outcomes: dict[str, StageOutcome], *, run_dir: str, num_classes: int, subjects: int, ablations: list[str],
                 baseline: bool, every_seed: bool = True) -> dict[str, Any]:
    """``best.json``'s RNAS-MER figures, printed as a small table.

    ``uar`` / ``uf1`` (and ``baseline``'s) pool the LOSO predictions of every retrained search seed, a
    genotype that two seeds decoded counting once per seed (with Optuna, ``every_seed=False``: the
    search's pick alone); ``per_seed`` has each seed's genotype, its search validation UAR, its LOSO
    figures and those of its size-matched baseline; ``params`` / ``model_size_mb`` are those of
    ``genotype``, the search's pick (best validation UAR on Train B).

    Raises:
        UserError: no LOSO fold of the searched network finished (every fold failed).
    """
    from orchestrator.errors import UserError
    from orchestrator.results import stopped_after

    best_search = _best_search_row(outcomes["search"])
    searches = _searched_genotypes(outcomes["search"])
    if not every_seed:
        searches = [r for r in searches if best_search is not None and r["arch"] == best_search["arch"]][:1]
    paths = RunPaths.of(run_dir)
    loso_dir = str(paths.folds("loso"))
    base_dir = str(paths.folds("baseline_loso"))
    if best_search is not None:
        for folder in (loso_dir, base_dir):
            _adopt_flat_folds(folder, best_search["arch_key"])
    retrained = [r for r in searches if os.path.isdir(os.path.join(loso_dir, r["arch_key"]))]
    main = pooled_figures([os.path.join(loso_dir, r["arch_key"]) for r in retrained], num_classes) or {}
    if main.get("uar") is None:
        raise UserError(f"no LOSO fold of the searched network finished; see {paths.stage('loso')} "
                        "for the errors, then `facenas resume` the run")
    per_seed = []
    for r in retrained:
        entry = {"seed": None if r["seed"] is None else int(r["seed"]), "arch_key": r["arch_key"],
                 "genotype": json.loads(r["arch"]), "search_val_uar": r["val_uar"],
                 "selected": best_search is not None and r["arch"] == best_search["arch"],
                 **(pooled_figures(os.path.join(loso_dir, r["arch_key"]), num_classes) or {})}
        if baseline:
            entry["baseline"] = pooled_figures(os.path.join(base_dir, r["arch_key"]), num_classes) or {}
        per_seed.append(entry)
    selected = next((e for e in per_seed if e["selected"]), per_seed[0])
    history = search_history(str(paths.stage("search")))
    out: dict[str, Any] = {
        "metric": "uar", "value": main["uar"], "uar": main["uar"], "uf1": main["uf1"],
        "params": selected["params"], "model_size_mb": selected["model_size_mb"], "loso": main,
        "space": "rnas", "subjects": subjects, "per_seed": per_seed, "search_history": history,
        "genotype": json.loads(best_search["arch"]) if best_search else None,
        "search_val_uar": None if best_search is None else best_search["value"],
        "search_trials": [
            {"trial_id": r["trial_id"], "val_uar": r["value"] if math.isfinite(r["value"]) else None,
             "status": r["status"], "arch_key": r["arch_key"],
             **{k: json.loads(r["metrics"]).get(k) for k in ("seed", "arch_lr", "arch_weight_decay")},
             **({"stopped_early": stopped_after(r)} if stopped_after(r) is not None else {})}
            for r in outcomes["search"].frame.to_dict("records")
        ],
    }
    lines = [f"LOSO ({subjects} subjects, predictions pooled over folds): UAR / UF1 / params / size"]

    def line(label: str, figures: dict[str, Any]) -> None:
        if figures.get("uar") is None:
            lines.append(f"  {label:<30} no result")
            return
        lines.append(f"  {label:<30} UAR={figures['uar']:.4f}  UF1={figures['uf1']:.4f}  "
                     f"params={figures['params']:,}  size={figures['model_size_mb']:.2f} MB")

    for h in history:
        st = h["stability"]
        last = h["epochs"][-1] if h["epochs"] else {}
        who = f"seed {h.get('seed')}" + ("" if every_seed else f", arch_lr {h.get('arch_lr', math.nan):.2g}")
        lines.append(f"  search {who}: {len(h['epochs'])} epochs, val UAR {last.get('val_uar', math.nan):.4f}, "
                     f"entropy alpha/eta/beta {last.get('alpha_entropy', math.nan):.3f}/"
                     f"{last.get('eta_entropy', math.nan):.3f}/{last.get('beta_entropy', math.nan):.3f}, "
                     f"genotype unchanged over the last {st['stable_epochs']} epochs")
    if len(per_seed) > 1:
        for entry in per_seed:
            line(f"seed {entry['seed']}: RNAS-MER{' (selected)' if entry['selected'] else ''}", entry)
            if baseline:
                line(f"seed {entry['seed']}: baseline 3D CNN", entry["baseline"])
        line(f"RNAS-MER ({len(per_seed)} seeds pooled)", main)
    else:
        line("RNAS-MER (searched)", main)
    if baseline:
        out["baseline"] = pooled_figures([os.path.join(base_dir, r["arch_key"]) for r in retrained], num_classes) or {}
        line("baseline 3D CNN" + (f" ({len(per_seed)} pooled)" if len(per_seed) > 1 else ""), out["baseline"])
    if ablations:
        out["ablations"] = {}
        for name in ablations:
            folder = str(paths.folds(f"loso_{name}"))
            row = _best_search_row(outcomes[f"search_{name}"])
            figures = None
            if row is not None:
                _adopt_flat_folds(folder, row["arch_key"])
                figures = pooled_figures(os.path.join(folder, row["arch_key"]), num_classes)
            out["ablations"][name] = {**(figures or {}), "genotype": json.loads(row["arch"]) if row else None}
            line(f"ablation {name}", figures or {})
    print("\n".join(lines), flush=True)
    return out


# -- config sections and the method's rule ------------------------------------------------------------


class RnasSpaceConfig(Section):
    """The RNAS-MER space: OPEN path over ``levels`` resolutions x ``cells`` cells, one cell of ``nodes`` nodes."""

    name: Literal["rnas"] = "rnas"
    cells: int = Field(6, ge=1, le=12)  # paper: 6
    nodes: int = Field(4, ge=1, le=6)  # DESIGN.md: N = 4
    levels: int = Field(4, ge=1, le=5)  # paper: down-sampling {2, 4, 8, 16}
    ops: Literal["hybrid", "darts"] = "hybrid"  # Table 1, or DARTS's 8 (ablations 1-2)
    attention: bool = True  # spatio-temporal attention at the cell output (off: ablation 3)

    def build(self):
        from search_algos.spaces.rnas import RnasSpace

        return RnasSpace(cells=self.cells, nodes=self.nodes, levels=self.levels, ops=self.ops, attention=self.attention)


class RnasSearcherConfig(Section):
    """RNAS-MER: bilevel differentiable search (Algorithm 1), LOSO retraining, baseline, ablations (Table 3)."""

    name: Literal["rnas_mer"] = "rnas_mer"
    # supernet (ablation switches of Table 3 beside space.ops / space.attention)
    channels: int = Field(4, ge=1)  # level-0 width of the supernet; level j has channels * 2**j
    partial_channels: int = Field(4, ge=1)  # PC-DARTS k: 1/k of the channels through the mixed op; 1 = off
    edge_normalization: bool = True  # eta (off: ablations 1 and 4)
    beta_normalisation: Literal["outgoing", "incoming"] = "outgoing"  # Eq. 7 as written, or DESIGN.md's
    shared_kernels: bool = True  # hybrid ops of an edge share nu_1, nu_3, nu_5 during the search (CPU budget)
    # search (Algorithm 1): weights on Train A, alpha/eta/beta on Train B
    epochs: int = Field(6, ge=1)
    batch_size: int = Field(8, ge=2)
    lr: float = Field(0.025, gt=0)
    arch_lr: float = Field(3e-3, gt=0)
    arch_weight_decay: float = Field(1e-3, ge=0)
    tune_over: Literal["seeds", "optuna"] = "seeds"
    seeds: tuple[int, ...] = (0,)
    optuna_trials: int = Field(4, ge=1)
    arch_lr_range: tuple[float, float] = (1e-4, 1e-2)
    arch_weight_decay_range: tuple[float, float] = (1e-5, 1e-2)
    # training stage: leave-one-subject-out
    retrain_channels: int = Field(4, ge=1)
    loso_epochs: int = Field(15, ge=1)
    loso_batch_size: int = Field(8, ge=2)
    loso_lr: float = Field(2e-3, gt=0)
    baseline: bool = True  # a hand-designed 3D CNN of about the same size under the same LOSO
    ablations: tuple[Literal["darts_ops", "no_partial", "no_attention", "no_edge_norm"], ...] = ()
    # the search trials (seeds or Optuna's) report every epoch: `scheduler` (asha, median) applies to the
    # `search` stage, and a stopped search's genotype is never retrained (rnas_stages); `hpo` does not apply
    stoppable: ClassVar[bool] = True

    @model_validator(mode="after")
    def _check(self) -> RnasSearcherConfig:
        if self.channels % self.partial_channels:
            raise ValueError(
                f"channels must be a multiple of partial_channels, got {self.channels} and {self.partial_channels}"
            )
        if not self.seeds or len(set(self.seeds)) != len(self.seeds) or min(self.seeds) < 0:
            raise ValueError(f"seeds must list distinct non-negative seeds, got {list(self.seeds)}")
        for key in ("arch_lr_range", "arch_weight_decay_range"):
            low, high = getattr(self, key)
            if not 0 < low < high:
                raise ValueError(f"{key}: 0 < low < high must hold, got low={low}, high={high}")
        if len(set(self.ablations)) != len(self.ablations):
            raise ValueError(f"ablations must not repeat, got {list(self.ablations)}")
        return self


def _check(config: ExperimentConfig) -> None:
    """The searcher, the ``rnas`` space and a micro-expression dataset go together (any one needs the others)."""
    if not (config.searcher.name == "rnas_mer" and config.data_kind == "microexpr" and config.space.name == "rnas"):
        raise ValueError(
            "searcher 'rnas_mer' (RNAS-MER), space.name: rnas and a micro-expression dataset "
            f"(microexpr, mer_folder), got searcher {config.searcher.name!r}, "
            f"space {config.space.name!r}, dataset {config.data.dataset!r}"
        )


METHOD = Method(
    name="rnas_mer",
    title="RNAS-MER",
    section=RnasSearcherConfig,
    data="microexpr",
    space=RnasSpaceConfig,
    stages=rnas_stages,
    deciding="loso",
    check=_check,
    exclusive=True,
    picture=rnas_figure,
    plots=search_plots,
)
