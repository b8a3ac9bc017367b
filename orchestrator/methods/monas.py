"""MONAS as a pipeline of Tune stages: supernet (MNUS) -> search (SAMOS) -> random -> retrain.

Paper: ``monas-multipath-oneshot-nas-3d-face-alignment.txt``. The trainables know nothing of Tune's
bookkeeping or of the benchmark store; the three Tune functions here connect them:

- :func:`supernet_trial` trains the multi-path supernet with MNUS (Algorithm 1), in process or as a
  Ray Train ``TorchTrainer`` when ``training.train_workers > 1``, checkpointing every epoch; its final
  weights are written to ``RUN_DIR/<stage>/supernet.pt``.
- :func:`oneshot_trial` scores a child with the trained supernet's weights (what SAMOS and the random
  baseline evaluate); each Tune actor loads the weights once and keeps them (``reuse_actors``).
- :func:`standalone_trial` trains a child from scratch and tests it (NME by yaw bin).

Stages: ``supernet`` -> ``search`` (SAMOS, Algorithm 2) -> ``random`` (random search at equal
evaluations on the same supernet) -> ``retrain`` (both winners from scratch). With ``ablation: true``
also the paper's Table IV at small scale: a ``uniform``-sampled supernet with its own SAMOS and random
searches, and Kendall's tau between one-shot and stand-alone NME of ``ablation_children`` children.
``ablation_searches: false`` keeps of the second supernet only what tau needs (no searches on it, no
retraining of their winners: Table IV's two rows on it are then absent).

With a ``scheduler`` (asha or median) the ``retrain`` stage's trials may be stopped early: SAMOS's child
is the reference (``REFERENCE_KEY``) and always trains in full, so ``best.json``'s row is a whole
training; a baseline winner stopped early keeps its validation NME at the epoch it stopped, has no test
figures (its ``ablation`` row says ``stopped_early``), and ``samos_vs_random_test_nme`` is then None.
Every other stage is whole: one-shot scores do not train, and Kendall tau needs whole trainings.

Also the method's registry entry (``searcher: samos``): the ``multipath`` space and searcher sections,
its rule (multipath space, alignment data), the export of a child as a stand-alone network, and the
report's pictures (:func:`draw_multipath`, :func:`samos_plots`). Ray, torch and pandas are imported by
the functions that use them (the registry is imported with the config).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from orchestrator.methods.base import Method
from orchestrator.methods.streams import MONAS_ABLATION_SALT
from orchestrator.paths import RunPaths
from orchestrator.sections import Section

if TYPE_CHECKING:
    import pandas as pd

    from orchestrator.config import ExperimentConfig
    from orchestrator.evaluate import SharedDataset
    from orchestrator.methods.base import StagePlan
    from orchestrator.pictures import RunView
    from orchestrator.pipeline import StageOutcome
    from orchestrator.store import StoreClient
    from orchestrator.trial import Store

__all__ = [
    "METHOD",
    "AlignmentJob",
    "MultipathSpaceConfig",
    "SamosSearcherConfig",
    "draw_multipath",
    "export_multipath",
    "monas_stages",
    "oneshot_trial",
    "samos_plots",
    "standalone_trial",
    "supernet_trial",
]


@dataclass(frozen=True)
class AlignmentJob:
    """What the trials of one MONAS stage share (narrow: no whole config object)."""

    space: dict[str, int]  # layers, scales
    data: dict[str, Any]  # kwargs of load_alignment_dataset
    settings: dict[str, Any]  # kwargs of SupernetSettings (epochs set per trial)
    seed: int
    store: Store
    run: str
    stage: str
    storage_path: str  # RUN_DIR
    supernet: str = ""  # path of the trained supernet weights (one-shot stages)
    supernet_id: str = ""  # identity of those weights in the benchmark store
    dataset: SharedDataset | None = None  # the driver's copy of ``data`` (a trial reads it, not builds it)


_SUPERNETS: dict[str, Any] = {}


def _dataset(job: AlignmentJob):
    from orchestrator.evaluate import cached_dataset
    from trainables.alignment.data import load_alignment_dataset

    return cached_dataset(job.data, load_alignment_dataset, shared=job.dataset)


def _space(job: AlignmentJob):
    from search_algos.spaces.multipath import MultipathSpace

    return MultipathSpace(layers=job.space["layers"], scales=job.space["scales"])


def _settings(job: AlignmentJob, **changes: Any):
    from trainables.alignment.train import SupernetSettings

    # precision is absent from the settings at fp32 (TrainingConfig.protocol keeps older protocols)
    return SupernetSettings(**{"precision": "fp32", **job.settings, "seed": job.seed, **changes})


# -- Tune functions ---------------------------------------------------------------------------------


def supernet_trial(config: dict[str, Any], job: AlignmentJob) -> None:
    """Train the supernet (``config["sampling"]``: ``mnus`` or ``uniform``) and save its weights."""
    import torch

    from orchestrator.evaluate import load_state, save_state
    from orchestrator.trial import EpochHook, TrialSequence, plain_metrics
    from trainables.alignment.train import train_supernet, train_supernet_distributed

    settings = _settings(job, sampling=config["sampling"])
    paths = RunPaths.of(job.storage_path)
    weights_path = str(paths.supernet(job.stage))
    checkpoint = str(paths.checkpoint(job.stage, "supernet-state.pt"))
    base = {"arch": "", "arch_key": f"supernet-{config['sampling']}", "epochs": settings.epochs,
            "checkpoint_path": weights_path}
    tensorboard = str(paths.tensorboard(job.stage))

    def fit(epoch: EpochHook, resume: dict[str, Any] | None) -> dict[str, Any]:
        if settings.num_workers > 1:
            final = train_supernet_distributed(
                _space(job), job.data, settings,
                storage_path=str(paths.train_runs), name=job.stage,
                tensorboard_dir=tensorboard,
            )
            state_path = final.get("checkpoint_state")
            if state_path:
                save_state(torch.load(state_path, weights_only=True)["model"], weights_path)
            return final

        def on_epoch(metrics: dict[str, Any], state: dict[str, Any]) -> None:
            last = state["epoch"] == settings.epochs
            if last:
                save_state(state["model"], weights_path)
            epoch(metrics, state, last=last)

        final = train_supernet(_space(job), _dataset(job), settings, on_epoch=on_epoch,
                               resume_state=resume, tensorboard_dir=tensorboard)
        if not os.path.isfile(weights_path):  # resumed after the last epoch was checkpointed: nothing trained now
            save_state(load_state(checkpoint)["model"], weights_path)
        return final

    # no store key: a supernet is not an evaluation of the benchmark
    TrialSequence(base=base, metric="val_loss", checkpoint=checkpoint, shown=plain_metrics).run(fit)


def _supernet_model(job: AlignmentJob):
    """The trained supernet on this trial's device, loaded once per process (Tune reuses the actor across trials)."""
    from trainables.alignment.train import load_supernet
    from trainables.device import channels_last, resolve_device

    settings = _settings(job, epochs=1)
    key = f"{job.supernet}:{os.path.getmtime(job.supernet)}"
    if key not in _SUPERNETS:
        _SUPERNETS.clear()
        model = load_supernet(job.supernet, _space(job), settings).to(resolve_device(settings.use_gpu))
        _SUPERNETS[key] = channels_last(model, settings.channels_last)
    return _SUPERNETS[key]


def oneshot_trial(config: dict[str, Any], job: AlignmentJob) -> None:
    """Score a child with the supernet's weights (BN recalibrated): ``val_nme`` (%).

    A batched config (``{"children": [...]}``, from the random stage's ``BatchSearcher``) scores each child
    in turn and reports once (:func:`orchestrator.trial.run_children`).
    """
    from orchestrator.trial import run_children

    run_children(config, lambda child, report: _score_child(child, job, report), metric="val_nme", mode="min")


def _score_child(config: dict[str, Any], job: AlignmentJob, report: Any) -> None:
    import torch

    from orchestrator.trial import StoreKey, TrialSequence, plain_metrics, require_finite
    from search_algos.spaces import decode_arch
    from trainables.alignment.train import evaluate_child

    arch = decode_arch("multipath", config["arch"])
    data = _dataset(job)
    base = {"arch": arch.to_json(), "arch_key": arch.key(), "epochs": 0, "dataset_id": data.dataset_id,
            "stage": job.stage}
    # one-shot scores are comparable on the same supernet only; no training protocol (any is served)
    key = StoreKey(f"multipath/oneshot-{job.supernet_id}", arch.key(), data.dataset_id, 0, job.seed)

    def fit(_epoch: Any, _resume: Any) -> dict[str, Any]:
        model = _supernet_model(job)
        torch.set_num_threads(1)
        settings = _settings(job, epochs=1)
        metrics = plain_metrics(evaluate_child(
            model, arch, data, "val",
            recalibration_batches=job.settings.get("bn_recalibration_batches", 4), seed=job.seed,
            precision=settings.precision, nhwc=settings.channels_last,
        ))
        metrics["params"] = float(model.child_params(arch))  # no child built: a copy costs ~8 % of a score
        return metrics

    TrialSequence(
        base=base, metric="val_nme", store=job.store, key=key, config={"arch": arch.to_dict()}, run_name=job.run,
        check=require_finite("val_nme", error="val_nme is not finite"), report=report,
    ).run(fit)


def standalone_trial(config: dict[str, Any], job: AlignmentJob) -> None:
    """Train a child from scratch for ``config["epochs"]`` epochs; test NME by yaw bin at the end."""
    from orchestrator.evaluate import keep_final_weights, weights_path
    from orchestrator.trial import EpochHook, StoreKey, TrialSequence, plain_metrics
    from search_algos.spaces import decode_arch
    from trainables.alignment.train import train_standalone

    arch = decode_arch("multipath", config["arch"])
    epochs = int(config["epochs"])
    seed = int(config.get("seed", job.seed))  # a training seed of the retraining (retrain_seeds), else the run's
    data = _dataset(job)
    base = {"arch": arch.to_json(), "arch_key": arch.key(), "epochs": epochs, "dataset_id": data.dataset_id,
            "stage": job.stage, **({"seed": seed} if "seed" in config else {})}
    key = StoreKey.trained(space="multipath", arch_key=arch.key(), dataset_id=data.dataset_id, fidelity=epochs,
                           seed=seed, training=job.settings)
    checkpoint = str(RunPaths.of(job.storage_path).checkpoint(
        job.stage, f"{arch.key()}-{data.dataset_id}-e{epochs}-s{seed}.pt"
    ))

    def settle(_metrics: dict[str, Any], cached: bool) -> None:
        if not cached:  # the store holds the result; the checkpoint's weights stay for `facenas export`
            keep_final_weights(checkpoint, weights_path(job.storage_path, job.stage, arch.key(), epochs))

    def fit(epoch: EpochHook, resume: dict[str, Any] | None) -> dict[str, Any]:
        return train_standalone(arch, data, _settings(job, epochs=epochs, seed=seed), resume_state=resume,
                                on_epoch=lambda m, state: epoch(m, state, last=m["epoch"] == epochs))

    TrialSequence(
        base=base, metric="val_nme", store=job.store, key=key,
        config={"arch": arch.to_dict(), "epochs": epochs, "training": job.settings}, run_name=job.run,
        checkpoint=checkpoint, shown=plain_metrics, settle=settle,
    ).run(fit)


# -- the pipeline --------------------------------------------------------------------------------------


def supernet_identity(data_id: str, settings: dict[str, Any], space: dict[str, int], seed: int, sampling: str) -> str:
    """A key of the trained weights: one-shot scores are only comparable on the same supernet."""
    payload = json.dumps({"data": data_id, "settings": settings, "space": space, "seed": seed,
                          "sampling": sampling}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def monas_stages(config: ExperimentConfig, data: Any, store: StoreClient, run_dir: str) -> StagePlan:
    """The MONAS stages, a selector of the final row, and the extra figures for ``best.json``.

    Returns ``(stages, select, extras)``: ``select(outcomes)`` gives the row of the SAMOS child's
    stand-alone retraining; ``extras(outcomes)`` the random-search comparison and the ablation table.
    """
    import ray

    from orchestrator.evaluate import share_dataset
    from orchestrator.pipeline import Stage
    from search_algos.base import REFERENCE_KEY
    from search_algos.fixed import FixedArchSearcher
    from search_algos.random_search import RandomArchSearcher
    from search_algos.samos import SAMOSSearcher
    from trainables.alignment.data import load_alignment_dataset

    s = config.searcher
    space = config.space.build()
    space_spec = {"layers": config.space.layers, "scales": config.space.scales}
    settings = {
        "epochs": s.supernet_epochs, "batch_size": s.batch_size, "lr": s.lr, "k_children": s.k_children,
        "channels": s.channels, "num_workers": config.training.train_workers, "use_gpu": config.training.use_gpu,
        "cpus_per_worker": config.training.cpus_per_worker, "bn_recalibration_batches": s.bn_recalibration_batches,
        # precision (resolved) and channels_last only where not fp32 / off: the protocol and the supernet's
        # identity of a plain run stay what they were before these keys existed
        **{key: value for key, value in config.training.protocol().items() if key in ("precision", "channels_last")},
    }
    main, other = s.sampling, ("uniform" if s.sampling == "mnus" else "mnus")
    samplings = [main] + ([other] if s.ablation else [])  # the supernets trained
    searched = samplings if s.ablation_searches else [main]  # those SAMOS and random search run on
    trainer_resources = {"cpu": 0.25, "gpu": 0} if config.training.train_workers > 1 else None
    # One-shot evaluations run in the trial's process: on its GPU with training.use_gpu (0 otherwise).
    oneshot_resources = {"cpu": 1, "gpu": config.resources.gpus_per_trial}

    # the driver's data set (experiment.load_data: the same loader and arguments), read by every trial actor
    shared = share_dataset(config.data.loader_kwargs(), data, load_alignment_dataset) if ray.is_initialized() else None

    def job(stage: str, supernet_stage: str | None = None, sampling: str | None = None) -> AlignmentJob:
        supernet = str(RunPaths.of(run_dir).supernet(supernet_stage)) if supernet_stage else ""
        identity = supernet_identity(data.dataset_id, settings, space_spec, config.seed, sampling) if sampling else ""
        return AlignmentJob(space=space_spec, data=config.data.loader_kwargs(), settings=settings, seed=config.seed,
                            store=store, run=os.path.basename(run_dir), stage=stage, storage_path=run_dir,
                            supernet=supernet, supernet_id=identity, dataset=shared)

    def suffix(sampling: str) -> str:
        return "" if sampling == main else f"_{sampling}"

    def evaluations(name: str):
        return lambda earlier: s.random_samples or int(len(earlier[name].frame))

    stages: list[Any] = []
    for sampling in samplings:
        sup, search, rand = f"supernet{suffix(sampling)}", f"search{suffix(sampling)}", f"random{suffix(sampling)}"
        stages.append(Stage(
            name=sup, make_searcher=None, job=job(sup), trainable=supernet_trial,
            config=lambda _e, sampling=sampling: {"sampling": sampling},
            metric="val_loss", mode="min", resources=trainer_resources,
        ))
        if sampling not in searched:
            continue
        stages.append(Stage(
            name=search,
            make_searcher=lambda _e: SAMOSSearcher(
                space=space, metric="val_nme", mode="min", seed=config.seed, iterations=s.iterations,
                cooling=s.cooling, t0=s.t0, calibration=s.calibration, chains=s.chains,
            ),
            job=job(search, sup, sampling), trainable=oneshot_trial,
            total=lambda _e: s.iterations * s.chains, resources=oneshot_resources,
        ))
        stages.append(Stage(
            name=rand,
            make_searcher=lambda earlier, search=search: RandomArchSearcher(
                space, num_samples=evaluations(search)(earlier), epochs=1,
                metric="val_nme", mode="min", seed=config.seed,
            ),
            job=job(rand, sup, sampling), trainable=oneshot_trial,
            total=evaluations(search), resources=oneshot_resources, children_per_trial=s.children_per_trial,
        ))

    def winners(earlier: dict[str, Any]) -> list[str]:
        archs = []
        for sampling in searched:
            for name in (f"search{suffix(sampling)}", f"random{suffix(sampling)}"):
                best = _winner(earlier[name])
                if best is not None and best["arch"] not in archs:
                    archs.append(best["arch"])
        return archs

    def retrain(earlier: dict[str, Any]) -> FixedArchSearcher:
        # SAMOS's child is the reference: a trial scheduler never stops it (orchestrator.schedulers)
        archs, own = winners(earlier), _winner(earlier["search"])
        marks = [{REFERENCE_KEY: True} if own is not None and arch == own["arch"] else {} for arch in archs]
        seeds = [config.seed + i for i in range(s.retrain_seeds)] if s.retrain_seeds > 1 else None
        return FixedArchSearcher(archs, epochs=s.retrain_epochs, metric="val_nme", mode="min", seed=config.seed,
                                 seeds=seeds, extras=marks)

    stages.append(Stage(
        name="retrain", make_searcher=retrain, job=job("retrain"), trainable=standalone_trial,
        total=lambda e: len(winners(e)) * s.retrain_seeds, stoppable=True, max_epochs=s.retrain_epochs,
    ))
    if s.ablation:
        children = _ablation_children(space, s.ablation_children, config.seed)
        for sampling in samplings:
            name = f"tau_oneshot_{sampling}"
            stages.append(Stage(
                name=name,
                make_searcher=lambda _e: FixedArchSearcher(children, epochs=1, metric="val_nme", mode="min"),
                job=job(name, f"supernet{suffix(sampling)}", sampling), trainable=oneshot_trial,
                total=lambda _e: len(children), resources=oneshot_resources,
            ))
        stages.append(Stage(
            name="tau_standalone",
            make_searcher=lambda _e: FixedArchSearcher(children, epochs=s.retrain_epochs, metric="val_nme", mode="min"),
            job=job("tau_standalone"), trainable=standalone_trial, total=lambda _e: len(children),
        ))

    def select(outcomes: dict[str, StageOutcome]) -> dict[str, Any] | None:
        best = _winner(outcomes["search"])
        if best is None:
            return None
        retrain = outcomes["retrain"].frame
        rows = retrain[(retrain["arch"] == best["arch"]) & (retrain["status"] == "ok")]
        if rows.empty:
            return None
        return rows.iloc[0].to_dict()

    def extras(outcomes: dict[str, StageOutcome]) -> dict[str, Any]:
        return monas_figures(outcomes, samplings=samplings, main=main, searched=searched)

    return stages, select, extras


def _best_of(frame: pd.DataFrame) -> dict[str, Any] | None:
    from orchestrator.results import pick_best

    return pick_best(frame, mode="min")


def _winner(outcome: Any) -> dict[str, Any] | None:
    """SAMOS's own best (it keeps the best seen, ties to the earliest); else the stage's best row."""
    arch = outcome.summary.get("best_arch")
    if arch:
        rows = outcome.frame[(outcome.frame["arch"] == arch) & (outcome.frame["status"] == "ok")]
        if not rows.empty:
            return rows.iloc[0].to_dict()
    return _best_of(outcome.frame)


def _ablation_children(space: Any, count: int, seed: int) -> list[str]:
    rng = np.random.default_rng([seed, MONAS_ABLATION_SALT])
    archs: list[str] = []
    while len(archs) < count:
        text = space.sample(rng).to_json()
        if text not in archs:
            archs.append(text)
    return archs


def _test_figures(row: dict[str, Any] | None) -> dict[str, Any]:
    if row is None:
        return {}
    metrics = json.loads(row["metrics"]) if isinstance(row.get("metrics"), str) else {}
    return {k: metrics[k] for k in ("test_nme", "nme_by_yaw", "nme_mean", "dense_nme") if k in metrics}


def _retrained(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """A winner's figures over its retrainings (one per training seed): test NME and NME mean as means over
    the whole ones, each seed's test NME, the stand-alone validation NME (mean), and, when a trial
    scheduler stopped one, the epochs it trained (``stopped_early``; no test figure then)."""
    from orchestrator.results import stopped_after

    whole = [r for r in rows if stopped_after(r) is None]
    figures = [_test_figures(r) for r in whole]
    tests = [f["test_nme"] for f in figures if "test_nme" in f]
    means = [f["nme_mean"] for f in figures if "nme_mean" in f]
    out: dict[str, Any] = {
        "test_nme": float(np.mean(tests)) if tests else None,
        "nme_mean": float(np.mean(means)) if means else None,
    }
    if len(rows) > 1:
        out["test_nme_by_seed"] = tests
        out["standalone_val_nme"] = float(np.mean([r["value"] for r in whole])) if whole else None
    stopped = [stopped_after(r) for r in rows if stopped_after(r) is not None]
    if stopped:
        out["stopped_early"] = stopped[0] if len(rows) == 1 else stopped
    return out


def space_spread(frame: Any, winners: dict[str, float | None], *, within: float = 1.0) -> dict[str, Any]:
    """How much the architecture matters in this space, read from the ablation's stand-alone children.

    ``frame``: the ``tau_standalone`` stage's rows (``ablation_children`` children drawn uniformly from the
    valid space, each trained alone for ``retrain_epochs``; value = validation NME). A search can only
    beat random search where the best children stand out: the figures say whether they do (issue 13,
    as deliverable 1 asks of the global space). Not in the paper.

    Returns:
        ``children``; ``val_nme`` min / median / max; ``spearman_params``: Spearman's rho of validation NME
        against parameter count (about -1: the ranking is the ranking by size); ``near_best``: how many
        children are within ``within`` NME points of the best one (a flat top: random search reaches it
        with near certainty); ``winners_vs_best``: each winner's stand-alone validation NME (mean over its
        training seeds, when retrained with several) minus the best child's.
    """
    from scipy.stats import spearmanr

    ok = frame[(frame["status"] == "ok") & np.isfinite(frame["value"].astype(float))]
    values = ok["value"].astype(float).to_numpy()
    if len(values) < 3:
        return {"children": int(len(values))}
    params = ok["params"].astype(float).to_numpy()
    rho = spearmanr(values, params).statistic if len(set(params)) > 1 else math.nan  # equal sizes: no rank
    best = float(values.min())
    return {
        "children": int(len(values)),
        "val_nme": {"min": best, "median": float(np.median(values)), "max": float(values.max())},
        "spearman_params": None if not math.isfinite(rho) else float(rho),
        "near_best": int((values <= best + within).sum()),
        "near_best_within": within,
        "winners_vs_best": {k: None if v is None else float(v) - best for k, v in winners.items()},
    }


def monas_figures(
    outcomes: dict[str, StageOutcome], *, samplings: list[str], main: str, searched: list[str] | None = None
) -> dict[str, Any]:
    """``nme_by_yaw``/``nme_mean`` of the SAMOS child, the random winner's, and Table IV at small scale.

    ``samplings``: the supernets trained (tau for each, with the ablation); ``searched``: those searched
    (Table IV's rows; default all of them).
    """
    from scipy.stats import kendalltau

    from orchestrator.results import stopped_after

    retrain = outcomes["retrain"].frame
    table = []
    winner_val: dict[tuple[str, str], float | None] = {}  # a winner's stand-alone val NME, mean over seeds
    for sampling in samplings if searched is None else searched:
        suffix = "" if sampling == main else f"_{sampling}"
        for method, stage in (("SAMOS", f"search{suffix}"), ("random", f"random{suffix}")):
            best = _winner(outcomes[stage])
            rows = [] if best is None else retrain[
                (retrain["arch"] == best["arch"]) & (retrain["status"] == "ok")].to_dict("records")
            figures = _retrained(rows)
            whole = [r["value"] for r in rows if stopped_after(r) is None]
            winner_val[(sampling, method)] = float(np.mean(whole)) if whole else None
            table.append({
                "supernet": sampling, "search": method, "evaluations": int(len(outcomes[stage].frame)),
                "oneshot_val_nme": None if best is None else best["value"],
                "arch_key": None if best is None else best["arch_key"],
                # means over the training seeds; a retraining a trial scheduler stopped has no test figures
                **figures,
            })
    out: dict[str, Any] = {"ablation": table}
    samos = next(r for r in table if r["supernet"] == main and r["search"] == "SAMOS")
    rand = next(r for r in table if r["supernet"] == main and r["search"] == "random")
    out["random_best"] = rand
    if "tau_standalone" in outcomes:
        alone = outcomes["tau_standalone"].frame.set_index("arch")["value"]
        taus = {}
        for sampling in samplings:
            shot = outcomes[f"tau_oneshot_{sampling}"].frame.set_index("arch")["value"]
            common = [a for a in shot.index if a in alone.index and math.isfinite(shot[a]) and math.isfinite(alone[a])]
            tau = kendalltau([shot[a] for a in common], [alone[a] for a in common]).statistic if len(common) >= 3 else None
            taus[sampling] = {"kendall_tau": None if tau is None or not math.isfinite(tau) else float(tau),
                              "children": len(common)}
        out["ranking_correlation"] = taus
        winners = {"SAMOS": winner_val[(main, "SAMOS")], "random": winner_val[(main, "random")]}
        out["space_spread"] = space_spread(outcomes["tau_standalone"].frame, winners)
    out["samos_vs_random_test_nme"] = (
        None if samos["test_nme"] is None or rand["test_nme"] is None else samos["test_nme"] - rand["test_nme"]
    )
    return out


# -- config sections, the method's rule, export and pictures --------------------------------------------


class MultipathSpaceConfig(Section):
    """The MONAS multi-path space: ``layers`` node columns x ``scales`` resolutions (paper: 10 x 4)."""

    name: Literal["multipath"] = "multipath"
    layers: int = Field(4, ge=2, le=32)
    scales: int = Field(3, ge=1, le=6)

    def build(self):
        from search_algos.spaces.multipath import MultipathSpace

        return MultipathSpace(layers=self.layers, scales=self.scales)


class SamosSearcherConfig(Section):
    """MONAS: MNUS supernet training, SAMOS search (Algorithm 2), random baseline, stand-alone retraining."""

    name: Literal["samos"] = "samos"
    # supernet (Algorithm 1)
    supernet_epochs: int = Field(6, ge=1)
    k_children: int = Field(4, ge=1)
    sampling: Literal["mnus", "uniform"] = "mnus"
    channels: int = Field(8, ge=2)
    batch_size: int = Field(16, ge=2)
    lr: float = Field(1e-3, gt=0)
    bn_recalibration_batches: int = Field(4, ge=0)
    # SAMOS (Algorithm 2)
    iterations: int = Field(200, ge=1)
    cooling: float = Field(0.85, gt=0, lt=1)
    t0: float | None = Field(None, gt=0)
    calibration: int = Field(8, ge=1)
    chains: int = Field(1, ge=1)
    # baseline, retraining, ablation (Table IV)
    random_samples: int | None = Field(None, ge=1)
    # random search's children scored per Tune trial (search_algos.batch): a one-shot score (0.19 s on a CPU
    # core, milliseconds on a GPU) is shorter than Tune's own cost per trial. SAMOS's annealing moves wait
    # for each other, so its stages keep one child per trial
    children_per_trial: int = Field(4, ge=1, le=64)
    retrain_epochs: int = Field(10, ge=1)
    # each winner is retrained with this many training seeds (seed, seed+1, ...); its test figures are the
    # means over them (one training of a small network is a noisy estimate of how good the child is)
    retrain_seeds: int = Field(1, ge=1, le=10)
    ablation: bool = False
    ablation_children: int = Field(12, ge=3)
    # false: the second supernet serves Kendall tau only (no SAMOS / random search on it, no retraining of
    # their winners; Table IV's rows on it are absent). What benchmarks/run.py's monas_samos_vs_random reports
    ablation_searches: bool = True
    # its retraining reports every epoch: `scheduler` (asha, median) applies there; SAMOS's winner trains in
    # full, a baseline winner stopped early has no test figures (monas_stages); `hpo` does not apply
    stoppable: ClassVar[bool] = True


def _check(config: ExperimentConfig) -> None:
    from orchestrator.config import ALIGNMENT_DATASETS

    if config.space.name != "multipath" or config.data_kind != "alignment":
        raise ValueError(
            "searcher 'samos' (MONAS) needs space.name: multipath and an alignment dataset "
            f"({', '.join(ALIGNMENT_DATASETS)}), got space {config.space.name!r}, dataset {config.data.dataset!r}"
        )


def export_multipath(arch: Any, config: ExperimentConfig) -> tuple[Any, tuple[int, ...], dict[str, Any]]:
    """The stand-alone child network of a ``multipath`` architecture at the run's supernet width and image size."""
    from trainables.alignment.model import MultipathSupernet

    channels = getattr(config.searcher, "channels", 8)
    supernet = MultipathSupernet(layers=arch.layers, scales=arch.scales, channels=channels)
    size = config.data.image_size
    prepare = {"input": "RGB images on [0, 1]", "output": "normalised UV position map (B, 3, H, W)"}
    return supernet.child_model(arch), (1, 3, size, size), prepare


_EDGE_STYLE = {1: ("#C44E52", "-", 2.2, "HPM block"), 2: ("#55A868", "--", 1.6, "identity")}


def draw_multipath(arch: Any) -> Any:
    """The multi-path grid of a MONAS child (MONAS Fig. 3 style).

    Columns are node columns ``l = 0..L-1`` (left to right), rows are scales ``d = 0..D-1`` (top = full
    resolution). An edge ``edges[l][d_out][d_in]`` is drawn from ``(l, d_in)`` to ``(l+1, d_out)``:
    red solid for an HPM block, green dashed for identity (after resampling); edges that do not lie on
    a path from the stem to the output (dead weight) are grey. The output node ``(L-1, 0)`` is a star.
    """
    from matplotlib.patches import FancyArrowPatch

    from orchestrator.pictures import pyplot
    from search_algos.spaces.multipath import active_edges, active_nodes

    plt = pyplot()
    edges = arch.as_array()  # (L-1, D, D) indexed [l, d_out, d_in]
    used_edges = active_edges(edges)
    used_nodes = active_nodes(edges)  # (L, D)
    layers, scales = edges.shape[0] + 1, edges.shape[1]
    fig, ax = plt.subplots(figsize=(min(14.0, 2.0 + 1.1 * layers), 1.2 + 0.9 * scales))
    for l in range(layers - 1):
        for o in range(scales):
            for i in range(scales):
                state = int(edges[l, o, i])
                if state == 0:
                    continue
                colour, style, width, _ = _EDGE_STYLE[state]
                if not used_edges[l, o, i]:
                    colour, width = "#bbbbbb", 1.0
                ax.add_patch(FancyArrowPatch(
                    (l, -i), (l + 1, -o), arrowstyle="-|>", mutation_scale=9, color=colour,
                    linestyle=style, linewidth=width, shrinkA=7, shrinkB=7,
                    connectionstyle="arc3,rad=0.0" if o == i else f"arc3,rad={0.08 * (o - i)}",
                ))
    for l in range(layers):
        for d in range(scales):
            filled = bool(used_nodes[l, d]) or l == 0
            ax.plot(l, -d, "o", markersize=11, markerfacecolor="#333333" if filled else "white",
                    markeredgecolor="#333333", zorder=3)
    ax.plot(layers - 1, 0, "*", markersize=20, color="gold", markeredgecolor="black", zorder=4)
    ax.set_xticks(range(layers), [f"l={l}" for l in range(layers)], fontsize=8)
    ax.set_yticks([-d for d in range(scales)], [f"scale {d} (1/{2 ** d})" for d in range(scales)], fontsize=8)
    ax.set_xlim(-0.5, layers - 0.5)
    ax.set_ylim(-scales + 0.5, 0.6)
    for spine in ax.spines.values():
        spine.set_visible(False)
    handles = [plt.Line2D([], [], color=c, linestyle=s, linewidth=w, label=lab) for c, s, w, lab in _EDGE_STYLE.values()]
    handles += [plt.Line2D([], [], color="#bbbbbb", label="dead edge (not on a path to the output)"),
                plt.Line2D([], [], marker="*", color="gold", markeredgecolor="black", linestyle="", markersize=12,
                           label="output node")]
    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    hpm = int(((edges == 1) & used_edges).sum())
    ident = int(((edges == 2) & used_edges).sum())
    ax.set_title(f"multi-path child, L={layers} x D={scales}: {hpm} HPM + {ident} identity edges in use", fontsize=9)
    return fig


def samos_plots(run: RunView) -> list[tuple[str, Any]]:
    """SAMOS (MONAS Algorithm 2): temperature, penalty with accepted / rejected moves, acceptance rate.

    Read from the ``search`` stage's saved summary (``trajectory``: one entry per committed step with
    ``chain, step, phase, penalty, accepted, temperature, best_so_far``); also ``search_uniform``.
    """
    import pandas as pd

    from orchestrator.pictures import pyplot

    plt = pyplot()
    out = []
    for stage in ("search", "search_uniform"):
        steps = run.summary(stage).get("trajectory") or []
        if not steps:
            continue
        frame = pd.DataFrame(steps)
        fig, (ax_t, ax_p, ax_a) = plt.subplots(1, 3, figsize=(12, 3.4))
        for chain, part in frame.groupby("chain"):
            anneal = part[part["phase"] == "anneal"]
            ax_t.plot(anneal["step"], anneal["temperature"], label=f"chain {chain}")
            ax_p.plot(part["step"], part["penalty"], color="#999999", linewidth=0.8)
            ok = anneal[anneal["accepted"].astype(bool)]
            no = anneal[~anneal["accepted"].astype(bool)]
            ax_p.scatter(ok["step"], ok["penalty"], s=12, color="#55A868", label=f"chain {chain}: accepted")
            ax_p.scatter(no["step"], no["penalty"], s=12, marker="x", color="#C44E52", label=f"chain {chain}: rejected")
            ax_p.step(part["step"], part["best_so_far"], where="post", label=f"chain {chain}: best so far")
            if len(anneal):
                window = max(1, min(10, len(anneal) // 3))
                rate = anneal["accepted"].astype(float).rolling(window, min_periods=1).mean()
                ax_a.plot(anneal["step"], rate, label=f"chain {chain} (window {window})")
        ax_t.set(title="temperature T (T <- cooling T)", xlabel="step", ylabel="T")
        ax_p.set(title="one-shot penalty of each move", xlabel="step", ylabel="penalty (NME %)")
        ax_a.set(title="acceptance rate (rolling)", xlabel="step", ylabel="accepted share", ylim=(-0.05, 1.05))
        for ax in (ax_t, ax_p, ax_a):
            ax.grid(alpha=0.3)
            ax.legend(fontsize=6)
        fig.tight_layout()
        out.append((f"SAMOS simulated annealing ({stage})", fig))
    return out


METHOD = Method(
    name="samos",
    title="MONAS",
    section=SamosSearcherConfig,
    data="alignment",
    space=MultipathSpaceConfig,
    stages=monas_stages,
    deciding="retrain",
    check=_check,
    export=export_multipath,
    picture=draw_multipath,
    plots=samos_plots,
)
