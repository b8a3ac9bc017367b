"""Pictures of a decoded RNAS-MER genotype for the report (like the paper's Fig. 3 e, f).

Paper: ``rnas-mer-micro-expression-nas.txt`` Fig. 2-3: the OPEN path over the down-sampling levels
``{2, 4, 8, 16}`` x 6 cells, and the cell's DAG. :func:`draw_rnas` draws both on two matplotlib axes;
:func:`rnas_figure` makes a figure holding them. Plain matplotlib, no Ray, no torch: the report calls
these with the ``arch`` JSON of ``best.json`` (or of any results row of an ``rnas`` stage).
:func:`search_plots` draws the search diagnostics of ``best.json["search_history"]``: per epoch and
seed the architecture entropies, train/validation UAR and losses, and the decoded genotypes.
"""

from __future__ import annotations

import json
from typing import Any

from search_algos.spaces.rnas import RnasGenotype

__all__ = ["draw_rnas", "draw_rnas_cell", "draw_rnas_path", "rnas_figure", "search_plots"]

_PATH_COLOUR = "#c0392b"
_GRID_COLOUR = "#d5d8dc"


def _genotype(genotype_json: str | dict[str, Any] | RnasGenotype) -> RnasGenotype:
    if isinstance(genotype_json, RnasGenotype):
        return genotype_json
    payload = json.loads(genotype_json) if isinstance(genotype_json, str) else genotype_json
    return RnasGenotype.from_dict(payload)


def draw_rnas_path(genotype_json: str | dict[str, Any] | RnasGenotype, ax: Any) -> None:
    """The OPEN search space (grey: every state and transition) and the decoded path (red).

    x: the stem, then cells 1..L; y: down-sampling factor, 2 at the top.
    """
    g = _genotype(genotype_json)
    cells, levels = len(g.path), g.levels
    for layer in range(cells + 1):
        for level in range(min(layer, levels - 1) + 1):
            ax.plot(layer, level, "o", color=_GRID_COLOUR, markersize=9, zorder=1)
            if layer < cells:
                for step in (0, 1):
                    if level + step < levels:
                        ax.plot([layer, layer + 1], [level, level + step], "-", color=_GRID_COLOUR, lw=1, zorder=0)
    xs = list(range(cells + 1))
    ys = [0, *g.path]
    ax.plot(xs, ys, "-o", color=_PATH_COLOUR, lw=2.5, markersize=10, zorder=2)
    for x, y in zip(xs[1:], ys[1:]):
        ax.annotate(f"{2 ** (y + 1)}", (x, y), textcoords="offset points", xytext=(0, 9), ha="center", fontsize=7)
    ax.set_xticks(xs, ["stem"] + [f"cell {k}" for k in range(1, cells + 1)], fontsize=7)
    ax.set_yticks(range(levels), [f"1/{2 ** (j + 1)}" for j in range(levels)], fontsize=7)
    ax.set_ylim(levels - 0.5, -0.6)  # resolution falls downwards, as in the paper's figure
    ax.set_xlim(-0.4, cells + 0.4)
    ax.set_ylabel("resolution")
    ax.set_title("OPEN path (Viterbi decode)", fontsize=9)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def draw_rnas_cell(genotype_json: str | dict[str, Any] | RnasGenotype, ax: Any) -> None:
    """The decoded cell: inputs ``c_{k-1}``, ``c_{k-2}``, N nodes with two operations each, and the output
    (sum of the nodes, then spatio-temporal attention when the genotype has it)."""
    g = _genotype(genotype_json)
    n = g.nodes
    positions = {0: (0.0, 0.8), 1: (0.0, -0.8)}
    for node in range(n):
        positions[node + 2] = (1.6 * (node + 1), 0.9 if node % 2 == 0 else -0.9)
    out = (1.6 * (n + 1), 0.0)
    labels = {0: "k-1", 1: "k-2", **{k + 2: f"n{k}" for k in range(n)}}
    for node, genes in enumerate(g.cell):
        target = positions[node + 2]
        for source, op in genes:
            start = positions[source]
            ax.annotate("", xy=target, xytext=start,
                        arrowprops={"arrowstyle": "->", "color": "#34495e", "lw": 1.2, "shrinkA": 11, "shrinkB": 11})
            # the label sits 60% along the edge: a node's two labels then stay apart
            mid = (start[0] + 0.6 * (target[0] - start[0]), start[1] + 0.6 * (target[1] - start[1]))
            ax.text(mid[0], mid[1], op, fontsize=6.5, ha="center", va="center", color="#1a5276",
                    bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.85})
        ax.annotate("", xy=out, xytext=target,
                    arrowprops={"arrowstyle": "->", "color": "#95a5a6", "lw": 0.8, "ls": "--", "shrinkA": 11, "shrinkB": 14})
    for key, (x, y) in positions.items():
        colour = "#aed6f1" if key < 2 else "#f9e79f"
        ax.plot(x, y, "o", markersize=20, color=colour, zorder=3)
        ax.text(x, y, labels[key], ha="center", va="center", fontsize=7, zorder=4)
    ax.plot(*out, "s", markersize=24, color="#abebc6", zorder=3)
    ax.text(*out, "ST-att\n(sum)" if g.attention else "sum", ha="center", va="center", fontsize=6.5, zorder=4)
    ax.set_xlim(-0.6, out[0] + 0.6)
    ax.set_ylim(-1.5, 1.5)
    ax.axis("off")
    ax.set_title(f"cell ({g.ops} operations, {n} nodes)", fontsize=9)


def draw_rnas(genotype_json: str | dict[str, Any] | RnasGenotype, ax_path: Any, ax_cell: Any) -> None:
    """Both pictures of a genotype: the decoded path on ``ax_path``, the cell on ``ax_cell``."""
    draw_rnas_path(genotype_json, ax_path)
    draw_rnas_cell(genotype_json, ax_cell)


def rnas_figure(genotype_json: str | dict[str, Any] | RnasGenotype) -> Any:
    """A new matplotlib figure with :func:`draw_rnas` on two side-by-side axes."""
    plt = _plt()
    fig, (ax_path, ax_cell) = plt.subplots(1, 2, figsize=(12, 3.4), gridspec_kw={"width_ratios": [1, 1.2]})
    draw_rnas(genotype_json, ax_path, ax_cell)
    fig.tight_layout()
    return fig


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def search_plots(run: Any) -> list[tuple[str, Any]]:
    """The RNAS-MER search diagnostics of a run (``run.best["search_history"]``), for the report.

    1. per epoch and search seed: the normalised entropies of alpha, eta and beta (1 = undecided),
       train (A) and validation (B) UAR of the supernet, and the weight / architecture losses;
    2. the decoded genotype of every epoch, with how many final epochs kept it.
    """
    history = run.best.get("search_history") or []
    if not history:
        return []
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
    styles = {"alpha_entropy": "-", "eta_entropy": "--", "beta_entropy": ":"}
    for h in history:
        epochs = [e["epoch"] for e in h["epochs"]]
        seed = h.get("seed")
        for key, style in styles.items():
            axes[0].plot(epochs, [e.get(key) for e in h["epochs"]], style, marker="o", ms=3,
                         label=f"{key.split('_')[0]} (seed {seed})")
        axes[1].plot(epochs, [e.get("train_uar") for e in h["epochs"]], "-", marker="o", ms=3, label=f"train A (seed {seed})")
        axes[1].plot(epochs, [e.get("val_uar") for e in h["epochs"]], "--", marker="s", ms=3, label=f"val B (seed {seed})")
        axes[2].plot(epochs, [e.get("train_loss") for e in h["epochs"]], "-", marker="o", ms=3, label=f"w loss (seed {seed})")
        axes[2].plot(epochs, [e.get("arch_loss") for e in h["epochs"]], "--", marker="s", ms=3, label=f"arch loss (seed {seed})")
    axes[0].set_ylim(0, 1.05)
    for ax, title in zip(axes, ("architecture entropy (normalised)", "supernet UAR", "cross-entropy")):
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("search epoch")
        ax.legend(fontsize=6)
    axes[1].axhline(1 / 3, color="#999999", lw=0.8, ls=":")  # chance for three classes
    fig.tight_layout()
    lines = []
    for h in history:
        st = h["stability"]
        lines.append(f"seed {h.get('seed')}: genotype unchanged over the last {st['stable_epochs']} of "
                     f"{len(h['epochs'])} epochs; path changed {st['path_changes']}x, cell {st['cell_changes']}x")
        for e in h["epochs"]:
            lines.append(f"   epoch {e['epoch']}: {RnasGenotype.from_json(e['genotype']).summary()}")
    text = plt.figure(figsize=(13, 0.22 * len(lines) + 0.4))
    text.text(0.01, 0.98, "\n".join(lines), va="top", ha="left", family="monospace", fontsize=7)
    return [("search diagnostics per epoch", fig), ("decoded genotype per epoch", text)]
