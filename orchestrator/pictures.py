"""Drawings for ``facenas report``: architecture pictures by space, searcher plots by searcher.

Two registries let a new space or searcher bring its own pictures with one line (STYLE.md §3-4):

- :data:`ARCH_PICTURES` maps a space name to ``draw(arch) -> Figure`` (``arch`` is the typed value of
  ``search_algos.spaces.decode_arch``). Registered here: ``global`` (the block diagram of Efficient
  Global NAS Fig. 1) and ``multipath`` (the node grid of MONAS Fig. 3).
- :data:`SEARCHER_PLOTS` maps a searcher name to ``plot(run) -> [(title, Figure), ...]`` where ``run``
  is a :class:`RunView` (best.json, results.parquet and every stage's ``stage.json`` summary, read from
  disk). Registered here: ``samos`` (SA temperature and acceptance), ``macro_micro`` (greedy phases).

Another module registers into them at import, e.g.::

    ARCH_PICTURES.register("rnas", draw_rnas_cell)
    SEARCHER_PLOTS.register("hyperfd", lambda run: [("predicted vs true rank", rank_scatter(p, t))])

:func:`rank_scatter` is the shared drawing of a ranker's predicted vs true rank. The report imports
the modules listed in :data:`PICTURE_MODULES`, so their lines run; each must exist (a module that fails
to import is a warning and a note in the report, never silently skipped).
Every function returns a matplotlib ``Figure`` (Agg backend); the report embeds it as a PNG.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import FancyArrowPatch, Rectangle  # noqa: E402

from search_algos.spaces.registry import Registry  # noqa: E402

__all__ = [
    "ARCH_PICTURES",
    "PICTURE_MODULES",
    "SEARCHER_PLOTS",
    "RunView",
    "arch_of",
    "draw_global",
    "draw_multipath",
    "hpo_plots",
    "macro_micro_plots",
    "rank_scatter",
    "samos_plots",
]

ARCH_PICTURES: Registry[Callable[[Any], Figure]] = Registry("architecture picture")
SEARCHER_PLOTS: Registry[Callable[["RunView"], list[tuple[str, Figure]]]] = Registry("searcher plot")
# Modules of other methods that register pictures when imported. Only modules that exist: the report
# warns about one that cannot be imported (HyperFD has no picture module; rank_scatter awaits one).
PICTURE_MODULES: tuple[str, ...] = ("orchestrator.methods.rnas_mer_pictures",)


@dataclass
class RunView:
    """What a searcher's plots may read: the run's files, already parsed.

    Attributes:
        frame: results.parquet (one row per evaluation).
        best: best.json (empty when the run has not finished).
        stages: stage name -> ``stage.json`` payload (``summary`` = the searcher's own figures, ``seconds``).
        metric, mode: the run's decision metric and direction.
    """

    frame: pd.DataFrame
    best: dict[str, Any]
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)
    metric: str = "val_acc"
    mode: str = "max"

    def summary(self, stage: str) -> dict[str, Any]:
        return dict(self.stages.get(stage, {}).get("summary") or {})


# -- architecture pictures -------------------------------------------------------------------------

_OP_COLOURS = {"sep": "#4C72B0", "conv": "#DD8452"}


def draw_global(arch: Any) -> Figure:
    """Block diagram of a global-space network (Efficient Global NAS, Fig. 1 style).

    Input -> ``depth`` conv layers -> global average pooling -> linear head. Each layer is a box whose
    height grows with its output channels (log scale), coloured by op (separable / plain conv), hatched
    for 5x5 kernels; reduction layers (stride 2, channels doubled) are outlined in red.
    """
    from search_algos.spaces.global_space import layer_plan

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


_EDGE_STYLE = {1: ("#C44E52", "-", 2.2, "HPM block"), 2: ("#55A868", "--", 1.6, "identity")}


def draw_multipath(arch: Any) -> Figure:
    """The multi-path grid of a MONAS child (MONAS Fig. 3 style).

    Columns are node columns ``l = 0..L-1`` (left to right), rows are scales ``d = 0..D-1`` (top = full
    resolution). An edge ``edges[l][d_out][d_in]`` is drawn from ``(l, d_in)`` to ``(l+1, d_out)``:
    red solid for an HPM block, green dashed for identity (after resampling); edges that do not lie on
    a path from the stem to the output (dead weight) are grey. The output node ``(L-1, 0)`` is a star.
    """
    from search_algos.spaces.multipath import active_edges, active_nodes

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


ARCH_PICTURES.register("global", draw_global)
ARCH_PICTURES.register("multipath", draw_multipath)


# -- searcher plots ----------------------------------------------------------------------------------


def samos_plots(run: RunView) -> list[tuple[str, Figure]]:
    """SAMOS (MONAS Algorithm 2): temperature, penalty with accepted / rejected moves, acceptance rate.

    Read from the ``search`` stage's saved summary (``trajectory``: one entry per committed step with
    ``chain, step, phase, penalty, accepted, temperature, best_so_far``); also ``search_uniform``.
    """
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


_KEPT = ("start", "accept", "baseline", "keep")  # verdicts that move the search on (macro_micro._entry)
_PHASE_COLOURS = {"grow": "#4C72B0", "prune": "#DD8452", "baseline": "#8172B3", "micro": "#55A868"}


def macro_micro_plots(run: RunView) -> list[tuple[str, Figure]]:
    """Efficient Global NAS Algorithm 1: every committed decision in order, by phase.

    From the ``search`` stage's decision log (``phase, acc, params, decision``): accuracy and parameters
    of each step, coloured by phase (grow / prune / baseline / micro), rejected steps as crosses.
    """
    log = [e for e in run.summary("search").get("log") or [] if e.get("acc") is not None]
    if not log:
        return []
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


SEARCHER_PLOTS.register("samos", samos_plots)
SEARCHER_PLOTS.register("macro_micro", macro_micro_plots)


def hpo_plots(run: RunView) -> list[tuple[str, Figure]]:
    """The Optuna ``hpo`` draws of every stage that had them: the metric against each hyper-parameter
    (one panel each, log axis for ``loguniform``), from the stage summary's ``hpo.trials``."""
    out = []
    for stage, payload in run.stages.items():
        hpo = (payload.get("summary") or {}).get("hpo") or {}
        trials = [t for t in hpo.get("trials") or [] if t.get("value") is not None]
        if not trials:
            continue
        keys = list(hpo.get("space") or trials[0]["params"])
        fig, axes = plt.subplots(1, len(keys), figsize=(3.6 * len(keys), 3.2), squeeze=False)
        for ax, key in zip(axes[0], keys):
            xs = [t["params"].get(key) for t in trials]
            ax.scatter(xs, [t["value"] for t in trials], s=18)
            if (hpo.get("space") or {}).get(key, [""])[0] == "loguniform":
                ax.set_xscale("log")
            ax.set(xlabel=key, ylabel=run.metric)
            ax.grid(alpha=0.3)
        best = hpo.get("best_params")
        fig.suptitle(f"{stage}: {len(trials)} Optuna draws; best {best}", fontsize=9)
        fig.tight_layout()
        out.append((f"hyper-parameters drawn by Optuna ({stage})", fig))
    return out


def rank_scatter(predicted: Sequence[float], true: Sequence[float], *, title: str = "") -> Figure:
    """A ranker's predicted vs true rank (1 = best), with Kendall's tau in the title.

    For searchers that rank configurations (HyperFD's transfer ranker): register
    ``SEARCHER_PLOTS.register(name, lambda run: [("ranker", rank_scatter(p, t))])``.
    """
    from scipy.stats import kendalltau

    p, t = np.asarray(predicted, dtype=float), np.asarray(true, dtype=float)
    tau = kendalltau(p, t).statistic if len(p) >= 2 else float("nan")
    fig, ax = plt.subplots(figsize=(4.2, 4.0))
    ax.scatter(t, p, s=18)
    lim = (0.5, max(len(p), 1) + 0.5)
    ax.plot(lim, lim, color="grey", linewidth=0.8)
    ax.set(xlim=lim, ylim=lim, xlabel="true rank", ylabel="predicted rank",
           title=f"{title + ': ' if title else ''}Kendall tau = {tau:.2f}")
    ax.grid(alpha=0.3)
    return fig


def arch_of(best: dict[str, Any]) -> Any:
    """The typed architecture of ``best.json`` (``space`` + ``arch``)."""
    from search_algos.spaces import decode_arch

    arch = best["arch"]
    return decode_arch(best.get("space", "global"), json.loads(arch) if isinstance(arch, str) else arch)
