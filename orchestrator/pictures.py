"""What the drawings of ``facenas report`` share: the run they read, the shared plots, and pyplot.

A method brings its own pictures (``orchestrator.methods.base.Method``): ``picture(arch) -> Figure``
draws an architecture of its space (``arch`` is the typed value of ``search_algos.spaces.decode_arch``),
``plots(run) -> [(title, Figure), ...]`` the searcher's figures from a :class:`RunView` (best.json,
results.parquet and every stage's ``stage.json`` summary, read from disk). Those are defined in the
method modules and draw with :func:`pyplot` on first use.

Shared here: :func:`hpo_plots` (the Optuna ``hpo`` draws of any run), :func:`rank_scatter` (a ranker's
predicted vs true rank) and :func:`arch_of`. Every function returns a matplotlib ``Figure`` (Agg
backend); the report embeds it as a PNG.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

__all__ = ["RunView", "arch_of", "hpo_plots", "pyplot", "rank_scatter"]


def pyplot() -> Any:
    """matplotlib's ``pyplot`` on the Agg backend (chosen when this module is imported), for the drawings
    of the method modules, which import matplotlib only when they draw."""
    return plt


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

    For searchers that rank configurations (a transfer ranker): a method's ``plots`` may return
    ``[("ranker", rank_scatter(p, t))]``.
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
