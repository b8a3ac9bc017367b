"""Efficient Global NAS (``searcher: macro_micro``): search -> retrain -> random baseline, and RI.

Paper: ``efficient-global-nas-macro-micro.txt`` (Algorithm 1; the ``global`` space of §3.1; RI of §4.1).
The stages: ``search`` (:class:`search_algos.macro_micro.MacroMicroSearcher`: macro search, then
micro search, dynamic-epoch ranking), ``retrain`` (the result for ``final_epochs``, with
``final_seeds`` training seeds), ``baseline`` (random networks of the space at equal budget, trained as
long); best.json adds :func:`relative_improvement`.

Also here, shared with random search (:mod:`orchestrator.methods.random_search`, the baseline on the
same space): the ``global`` space section, the candidate trials' job, the compatibility rule of
classification searchers, the block diagram of a global network and its export as a TorchScript model.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field, model_validator

from orchestrator.errors import UserError
from orchestrator.methods.base import Method
from orchestrator.sections import Section
from search_algos.spaces import GlobalSpace

if TYPE_CHECKING:
    import pandas as pd

    from orchestrator.config import ExperimentConfig
    from orchestrator.evaluate import EvalJob
    from orchestrator.methods.base import StagePlan
    from orchestrator.pictures import RunView
    from orchestrator.pipeline import StageOutcome
    from orchestrator.store import StoreClient
    from orchestrator.trial import Store

__all__ = [
    "METHOD",
    "GlobalSpaceConfig",
    "MacroMicroSearcherConfig",
    "candidate_job",
    "check_classification",
    "draw_global",
    "equal_params_ri",
    "export_global",
    "macro_micro_plots",
    "macro_micro_stages",
    "relative_improvement",
]


# -- config sections ---------------------------------------------------------------------------------


class GlobalSpaceConfig(Section):
    """Bounds of the ``global`` space (Efficient Global NAS §3.1)."""

    name: Literal["global"] = "global"
    d_min: int = Field(5, ge=1)
    d_max: int = Field(100, ge=1)
    w_min: int = Field(16, ge=1)
    w_max: int = Field(128, ge=1)
    w_step: int = Field(2, ge=1)
    ops: tuple[Literal["sep", "conv"], ...] = ("sep", "conv")
    kernels: tuple[Literal[3, 5], ...] = (3, 5)

    @model_validator(mode="after")
    def _check(self) -> GlobalSpaceConfig:
        self.build()  # cross-field rules live in the space itself; its ValueError names them
        return self

    def build(self) -> GlobalSpace:
        return GlobalSpace(**self.model_dump(exclude={"name"}))


class MacroMicroSearcherConfig(Section):
    """Efficient Global NAS (Algorithm 1): a §4.1 preset plus overrides, speculation, baseline, retrain.

    Every setting left out comes from ``preset``; see ``search_algos.macro_micro.MacroMicroSettings``.
    """

    name: Literal["macro_micro"] = "macro_micro"
    preset: Literal["tiny", "mobile"] = "tiny"
    d_min: int | None = Field(None, ge=1)
    d_max: int | None = Field(None, ge=1)
    w_min: int | None = Field(None, ge=1)
    w_max: int | None = Field(None, ge=1)
    w_res: int | None = Field(None, ge=1)
    e_min_macro: int | None = Field(None, ge=1)
    e_min_micro: int | None = Field(None, ge=1)
    grow_gain: float | None = Field(None, ge=0)
    drop_tolerance: float | None = Field(None, ge=0)
    max_drops: int | None = Field(None, ge=1)
    prune_epochs_step: int | None = Field(None, ge=0)
    max_prune_failures: int | None = Field(None, ge=1)
    param_slack: float | None = Field(None, ge=0)
    width_step: int | None = Field(None, ge=1)
    speculate: int = Field(1, ge=1)
    final_epochs: int = Field(10, ge=1)
    # The searched network is retrained with this many training seeds (seed, seed+1, ...); RI uses
    # their mean accuracy, as the paper reports means over runs.
    final_seeds: int = Field(1, ge=1, le=20)
    baseline_samples: int | None = Field(None, ge=1)
    # A second baseline of random networks within +-param_band of the searched network's parameter
    # count (0: off). The paper's RI alone rewards size; RI against these does not (issue 13).
    equal_param_samples: int = Field(0, ge=0)
    param_band: float = Field(0.2, gt=0, lt=1)
    # its search stage's candidates report every epoch: `scheduler` (asha, median) applies, a stopped
    # candidate is rejected (search_algos.macro_micro); `hpo` does not (one protocol for all candidates)
    stoppable: ClassVar[bool] = True

    @model_validator(mode="after")
    def _check(self) -> MacroMicroSearcherConfig:
        self.settings()  # cross-field rules (d_min <= d_max, ...) live in the settings themselves
        return self

    def settings(self):
        from search_algos.macro_micro import MacroMicroSettings

        overrides = self.model_dump(
            exclude={"name", "preset", "speculate", "final_epochs", "final_seeds", "baseline_samples",
                     "equal_param_samples", "param_band"},
            exclude_none=True,
        )
        try:
            return MacroMicroSettings.preset(self.preset, **overrides)
        except ValueError as exc:
            raise ValueError(str(exc).removeprefix("invalid MacroMicroSettings: ")) from None


def check_classification(config: ExperimentConfig) -> None:
    """The rule of the searchers that train classifiers on the ``global`` space (this one, random search)."""
    if config.data_kind == "detection":
        from orchestrator.methods import METHODS

        detectors = ", ".join(m.title for m in METHODS.in_order() if m.data == "detection")
        raise ValueError(
            f"dataset 'detection' needs a face-detection searcher ({detectors}); searcher {config.searcher.name!r} "
            "trains classifiers: pick another dataset"
        )
    if config.space.name != "global" or config.data_kind != "classification":
        raise ValueError(
            f"searcher {config.searcher.name!r} needs space.name: global and a classification dataset, "
            f"got space {config.space.name!r}, dataset {config.data.dataset!r}"
        )


# -- the pipeline --------------------------------------------------------------------------------------


def candidate_job(config: ExperimentConfig, store: Store, run_dir: str, stage: str) -> EvalJob:
    """What the candidate trials of ``stage`` share (:func:`orchestrator.evaluate.evaluate_candidate`)."""
    from orchestrator.evaluate import EvalJob

    return EvalJob(
        space=config.space.name,
        data=config.data.loader_kwargs(),
        training=config.training.protocol(),
        seed=config.seed,
        store=store,
        run=os.path.basename(run_dir),
        stage=stage,
        metric=config.metric,
        storage_path=run_dir,
    )


def macro_micro_stages(config: ExperimentConfig, data: Any, store: StoreClient, run_dir: str) -> StagePlan:
    """search (Algorithm 1) -> retrain the result for ``final_epochs`` -> random baseline (§4.1, RI).

    Returns ``(stages, select, extras)``: ``select`` gives the retraining with the run's own seed,
    ``extras`` :func:`relative_improvement` of the retraining over the baseline.
    """
    from orchestrator.pipeline import Stage
    from orchestrator.results import pick_best
    from search_algos.fixed import FixedArchSearcher
    from search_algos.macro_micro import MacroMicroSearcher
    from search_algos.random_search import RandomArchSearcher
    from search_algos.spaces import decode_arch
    from search_algos.spaces.global_space import EqualParamsSpace, count_params

    s = config.searcher
    settings = s.settings()
    space = config.space.build()

    def searched(earlier: dict[str, Any]) -> str:
        arch = earlier["search"].summary.get("final_arch")
        if not arch:
            raise UserError("the macro-micro search ended without an architecture; see the search stage's trials")
        return arch

    def baseline_size(earlier: dict[str, Any]) -> int:
        # Equal evaluation budget by default: as many random networks as the search evaluated.
        return s.baseline_samples or int(earlier["search"].summary["evaluations"]["total"])

    search = Stage(
        name="search",
        make_searcher=lambda _earlier: MacroMicroSearcher(
            settings=settings, in_channels=data.in_channels, num_classes=data.num_classes,
            metric=config.metric, mode=config.mode, seed=config.seed, speculate=s.speculate,
        ),
        job=candidate_job(config, store, run_dir, "search"),
        stoppable=True,
    )
    # Several training seeds (the run's first) when asked: RI then compares their mean accuracy.
    seeds = [config.seed + i for i in range(s.final_seeds)] if s.final_seeds > 1 else None
    retrain = Stage(
        name="retrain",
        make_searcher=lambda earlier: FixedArchSearcher(
            [searched(earlier)], epochs=s.final_epochs, metric=config.metric, mode=config.mode, seeds=seeds,
        ),
        job=candidate_job(config, store, run_dir, "retrain"),
        total=lambda _earlier: s.final_seeds,
    )
    baseline = Stage(
        name="baseline",
        make_searcher=lambda earlier: RandomArchSearcher(
            space, num_samples=baseline_size(earlier), epochs=s.final_epochs,
            metric=config.metric, mode=config.mode, seed=config.seed,
        ),
        job=candidate_job(config, store, run_dir, "baseline"),
        total=baseline_size,
    )

    def equal_params_space(earlier: dict[str, Any]) -> EqualParamsSpace:
        params = count_params(decode_arch("global", searched(earlier)), in_channels=data.in_channels,
                              num_classes=data.num_classes)  # fmt: skip
        return EqualParamsSpace(space, params=params, band=s.param_band, in_channels=data.in_channels,
                                num_classes=data.num_classes)  # fmt: skip

    baseline_equal = Stage(
        name="baseline_equal",
        make_searcher=lambda earlier: RandomArchSearcher(
            equal_params_space(earlier), num_samples=s.equal_param_samples, epochs=s.final_epochs,
            metric=config.metric, mode=config.mode, seed=config.seed,
        ),
        job=candidate_job(config, store, run_dir, "baseline_equal"),
        total=lambda _earlier: s.equal_param_samples,
    )

    def extras(outcomes: dict[str, StageOutcome]) -> dict[str, Any]:
        out = relative_improvement(outcomes["retrain"].frame, outcomes["baseline"].frame)
        if "baseline_equal" in outcomes:
            out.update(equal_params_ri(outcomes["retrain"].frame, outcomes["baseline_equal"].frame, band=s.param_band))
        return out

    def select(outcomes: dict[str, StageOutcome]) -> dict[str, Any] | None:
        # best.json describes the retraining with the run's own seed (its weights are the ones kept
        # for export); the other seeds enter through RI's mean. Falls back to the best row.
        frame = outcomes["retrain"].frame
        ok = frame[frame["status"] == "ok"]
        own = ok[[_row_seed(m, config.seed) == config.seed for m in ok["metrics"]]]
        return own.iloc[0].to_dict() if not own.empty else pick_best(frame, mode=config.mode)

    stages = [search, retrain, baseline] + ([baseline_equal] if s.equal_param_samples else [])
    return stages, select, extras


def _row_seed(metrics: Any, default: int) -> int:
    payload = json.loads(metrics) if isinstance(metrics, str) and metrics else {}
    return int(payload.get("seed", default))


def relative_improvement(searched: pd.DataFrame, random: pd.DataFrame) -> dict[str, Any]:
    """RI = 100 (Acc_m - mean Acc_r) / mean Acc_r (§4.1, after Yang et al.), on test and on val.

    ``Acc_m`` is the mean over the searched network's retrainings (one per training seed).
    """
    ok_s = searched[searched["status"] == "ok"]
    ok_r = random[random["status"] == "ok"]
    if ok_s.empty or ok_r.empty:
        return {"ri": None, "ri_val": None, "random_evaluations": int(len(ok_r))}
    acc_m, acc_r = float(ok_s["test_acc"].mean()), float(ok_r["test_acc"].mean())
    val_m, val_r = float(ok_s["value"].mean()), float(ok_r["value"].mean())
    return {
        "ri": 100.0 * (acc_m - acc_r) / acc_r,
        "ri_val": 100.0 * (val_m - val_r) / val_r,
        "searched_mean_test_acc": acc_m,
        "searched_test_accs": [float(a) for a in ok_s["test_acc"]],
        "random_mean_test_acc": acc_r,
        "random_mean_val_acc": val_r,
        "random_best_val_acc": float(ok_r["value"].max()),
        "random_evaluations": int(len(ok_r)),
    }


def equal_params_ri(searched: pd.DataFrame, random: pd.DataFrame, *, band: float) -> dict[str, Any]:
    """RI of the searched network over random networks of its own size (``baseline_equal``, issue 13).

    The same formula as :func:`relative_improvement`; the baseline holds only networks whose parameter
    count is within ``band`` of the searched one's, so a positive value is not bought with parameters.
    """
    ri = relative_improvement(searched, random)
    ok = random[random["status"] == "ok"]
    return {
        "ri_equal_params": ri["ri"],
        "ri_equal_params_val": ri["ri_val"],
        "equal_params_mean_test_acc": ri.get("random_mean_test_acc"),
        "equal_params_mean_params": float(ok["params"].mean()) if "params" in ok and not ok.empty else None,
        "equal_params_evaluations": ri["random_evaluations"],
        "param_band": band,
    }


# -- export ------------------------------------------------------------------------------------------


def export_global(arch: Any, config: ExperimentConfig) -> tuple[Any, tuple[int, ...], dict[str, Any]]:
    """The eager network of a ``global`` architecture for the run's dataset, one input's shape, its preparation."""
    from orchestrator.experiment import load_data
    from trainables.classification.model import build_global_cnn

    data = load_data(config)  # channels, classes and image size of the run's dataset
    model = build_global_cnn(arch, in_channels=data.in_channels, num_classes=data.num_classes)
    prepare = {"input": "images on [0, 1], then (x - mean) / std per channel", "mean": list(data.channel_mean),
               "std": list(data.channel_std), "classes": list(data.class_names)}
    return model, (1, *data.train.x.shape[1:]), prepare


# -- pictures ----------------------------------------------------------------------------------------

_OP_COLOURS = {"sep": "#4C72B0", "conv": "#DD8452"}


def draw_global(arch: Any) -> Any:
    """Block diagram of a global-space network (Efficient Global NAS, Fig. 1 style).

    Input -> ``depth`` conv layers -> global average pooling -> linear head. Each layer is a box whose
    height grows with its output channels (log scale), coloured by op (separable / plain conv), hatched
    for 5x5 kernels; reduction layers (stride 2, channels doubled) are outlined in red.
    """
    import numpy as np
    from matplotlib.patches import Rectangle

    from orchestrator.pictures import pyplot
    from search_algos.spaces.global_space import layer_plan

    plt = pyplot()
    plan = layer_plan(arch, 1)  # (c_in, c_out, stride, op, kernel); c_in of layer 0 is irrelevant here
    n = len(plan)
    fig_w = min(16.0, 3.0 + 0.42 * n)
    fig, ax = plt.subplots(figsize=(fig_w, 3.4))
    widths = [c_out for _, c_out, _, _, _ in plan]
    top = np.log2(max(widths)) + 1.0
    step, box = 1.0, 0.8
    x = 0.0
    ax.add_patch(Rectangle((x, -0.5), box, 1.0, facecolor="#dddddd", edgecolor="black"))
    ax.text(x + box / 2, 0, "input", ha="center", va="center", fontsize=8, rotation=90)
    label_layers = n <= 40
    for i, (_c_in, c_out, stride, op, k) in enumerate(plan):
        x = (i + 1) * step
        h = (np.log2(c_out) + 1.0) / top * 2.6
        ax.add_patch(Rectangle(
            (x, -h / 2), box, h, facecolor=_OP_COLOURS[op], alpha=0.85,
            edgecolor="red" if stride == 2 else "black", linewidth=2.2 if stride == 2 else 0.8,
            hatch="//" if k == 5 else None,
        ))
        if label_layers:
            ax.text(x + box / 2, h / 2 + 0.08, f"{op}{k}", ha="center", va="bottom", fontsize=7, rotation=90)
            ax.text(x + box / 2, -h / 2 - 0.08, str(c_out), ha="center", va="top", fontsize=7, rotation=90)
    x = (n + 1) * step
    for name in ("GAP", "FC"):
        ax.add_patch(Rectangle((x, -0.5), box, 1.0, facecolor="#bbbbbb", edgecolor="black"))
        ax.text(x + box / 2, 0, name, ha="center", va="center", fontsize=8, rotation=90)
        x += step
    ax.annotate("", xy=(x, -1.75), xytext=(0, -1.75), arrowprops={"arrowstyle": "->", "color": "grey"})
    handles = [
        Rectangle((0, 0), 1, 1, facecolor=_OP_COLOURS["sep"], label="separable conv"),
        Rectangle((0, 0), 1, 1, facecolor=_OP_COLOURS["conv"], label="plain conv"),
        Rectangle((0, 0), 1, 1, facecolor="white", hatch="//", edgecolor="black", label="5x5 kernel"),
        Rectangle((0, 0), 1, 1, facecolor="white", edgecolor="red", linewidth=2, label="stride 2, channels x2"),
    ]
    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    ax.set_xlim(-0.3, x + 0.2)
    ax.set_ylim(-2.0, 2.0)
    ax.axis("off")
    ax.set_title(f"{arch.summary() if n <= 12 else f'D={arch.depth} W={arch.width}'}  "
                 "(box height ~ log channels, numbers = output channels)", fontsize=9)
    return fig


_KEPT = ("start", "accept", "baseline", "keep")  # verdicts that move the search on (macro_micro._entry)
_PHASE_COLOURS = {"grow": "#4C72B0", "prune": "#DD8452", "baseline": "#8172B3", "micro": "#55A868"}


def macro_micro_plots(run: RunView) -> list[tuple[str, Any]]:
    """Efficient Global NAS Algorithm 1: every committed decision in order, by phase.

    From the ``search`` stage's decision log (``phase, acc, params, decision``): accuracy and parameters
    of each step, coloured by phase (grow / prune / baseline / micro), rejected steps as crosses.
    """
    import pandas as pd

    from orchestrator.pictures import pyplot

    log = [e for e in run.summary("search").get("log") or [] if e.get("acc") is not None]
    if not log:
        return []
    plt = pyplot()
    frame = pd.DataFrame(log).reset_index(drop=True)
    frame["acc"] = pd.to_numeric(frame["acc"], errors="coerce")
    fig, (ax_a, ax_p) = plt.subplots(2, 1, figsize=(9, 5), sharex=True)
    for phase, part in frame.groupby("phase", sort=False):
        colour = _PHASE_COLOURS.get(phase, "grey")
        kept = part["decision"].isin(_KEPT)
        ax_a.scatter(part.index[kept] + 1, part["acc"][kept], color=colour, s=22, label=f"{phase}")
        ax_a.scatter(part.index[~kept] + 1, part["acc"][~kept], color=colour, marker="x", s=22)
        ax_p.scatter(part.index + 1, part["params"], color=colour, s=14)
    ax_a.plot(frame.index + 1, frame["acc"], color="#999999", linewidth=0.6, zorder=0)
    ax_a.set(ylabel="val accuracy (%)", title="greedy phases (dots: kept, crosses: rejected)")
    ax_p.set(ylabel="parameters", xlabel="decision (order)")
    for ax in (ax_a, ax_p):
        ax.grid(alpha=0.3)
    ax_a.legend(fontsize=7)
    fig.tight_layout()
    return [("macro-micro greedy search (Algorithm 1)", fig)]


METHOD = Method(
    name="macro_micro",
    title="Efficient Global NAS",
    section=MacroMicroSearcherConfig,
    data="classification",
    space=GlobalSpaceConfig,
    stages=macro_micro_stages,
    deciding="retrain",
    check=check_classification,
    export=export_global,
    picture=draw_global,
    plots=macro_micro_plots,
)
