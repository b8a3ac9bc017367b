"""``facenas compare RUN_DIR ... [--out PLOT.png]``: finished runs side by side, as a table and a plot.

Per run: searcher, space, dataset, the best architecture's metric, parameters and test figure
(best.json), the search cost (wall-clock seconds of all stages, from each ``<stage>/stage.json``) and
the evaluations (results.parquet rows of the run's metric, i.e. evaluated architectures; how many were
served from the benchmark store). The plot has
the best-so-far against evaluations of every run (one panel per metric) and the search cost per run.
Reads files only; needs no Ray.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from orchestrator.errors import UserError
from search_algos.durable import write_durable

__all__ = ["RunFigures", "compare_runs", "format_table", "plot_runs", "read_figures"]


@dataclass(frozen=True)
class RunFigures:
    """One run's row of the comparison."""

    name: str
    searcher: str
    space: str
    dataset: str
    metric: str
    mode: str
    value: float
    params: int
    test: str  # "test_acc=91.2" or ""
    seconds: float
    evaluations: int
    cached: int
    trajectory: list[float]  # the metric of every evaluation in results order (NaN for failed)


def read_figures(run_dir: str | Path) -> RunFigures:
    """The figures of one finished run. Raises :class:`UserError` for a folder that is not one."""
    from orchestrator.experiment import open_run

    paths, config, _raw = open_run(run_dir)
    if not (paths.best.is_file() and paths.results.is_file()):
        raise UserError(f"{run_dir} has not finished (no best.json); finish it with `facenas resume {run_dir}`")
    best = json.loads(paths.best.read_text())
    frame = pd.read_parquet(paths.results)
    frame = frame[frame["metric"] == best["metric"]]  # architecture evaluations (not a supernet's val_loss)
    seconds = 0.0
    for marker in paths.stage_markers():
        try:
            seconds += float(json.loads(marker.read_text()).get("seconds", 0.0))
        except (OSError, ValueError):
            continue
    test = next(((k, v) for k, v in (best.get("test") or {}).items() if isinstance(v, (int, float))), None)
    values = frame["value"].where(frame["status"] == "ok").astype(float).tolist()
    return RunFigures(
        name=paths.root.name, searcher=config.searcher.name, space=config.space.name, dataset=config.data.dataset,
        metric=str(best["metric"]), mode=config.mode, value=float(best["value"]), params=int(best["params"]),
        test=f"{test[0]}={test[1]:.2f}" if test else "", seconds=seconds, evaluations=len(frame),
        cached=int(frame["cached"].astype(bool).sum()), trajectory=values,
    )


def format_table(runs: list[RunFigures]) -> str:
    """A plain-text table, one line per run, columns aligned."""
    head = ["run", "searcher", "space", "dataset", "best", "params", "test", "search cost", "evaluations"]
    rows = [
        [r.name, r.searcher, r.space, r.dataset, f"{r.metric}={r.value:.2f}", f"{r.params:,}", r.test or "-",
         f"{r.seconds:.0f} s", f"{r.evaluations} ({r.cached} cached)"]
        for r in runs
    ]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([line(head), line(["-" * w for w in widths])] + [line(r) for r in rows])


def _best_so_far(values: list[float], mode: str) -> list[float]:
    out, best = [], math.nan
    for v in values:
        if math.isfinite(v) and (math.isnan(best) or (v > best if mode == "max" else v < best)):
            best = v
        out.append(best)
    return out


def plot_runs(runs: list[RunFigures], out: Path) -> Path:
    """Write the comparison plot (PNG) to ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = list(dict.fromkeys(r.metric for r in runs))
    fig, axes = plt.subplots(1, len(metrics) + 1, figsize=(5.2 * (len(metrics) + 1), 3.8), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for r in (r for r in runs if r.metric == metric):
            curve = _best_so_far(r.trajectory, r.mode)
            (line,) = ax.step(range(1, len(curve) + 1), curve, where="post", label=f"{r.name} ({r.searcher})")
            # the run's reported best (after retraining, where the method retrains)
            ax.scatter([len(curve)], [r.value], marker="*", s=80, color=line.get_color())
        ax.set(xlabel="evaluations", ylabel=metric, title=f"best so far ({metric}); star: the run's best")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    cost = axes[0][-1]
    names = [r.name for r in runs]
    cost.barh(names, [r.seconds for r in runs], color="#4C72B0")
    cost.invert_yaxis()
    for i, r in enumerate(runs):
        cost.text(r.seconds, i, f" {r.seconds:.0f} s, {r.evaluations} ev.", va="center", fontsize=8)
    cost.set(xlabel="search cost (wall-clock s, all stages)", title="cost")
    cost.set_xlim(0, max([r.seconds for r in runs] + [1.0]) * 1.35)
    fig.tight_layout()
    try:
        write_durable(out, lambda fh: fig.savefig(fh, format="png", dpi=100))
    finally:
        plt.close(fig)
    return out


def compare_runs(run_dirs: list[str], out: str | Path) -> tuple[str, Path]:
    """Read every run (all problems reported at once), then return the table and write the plot."""
    out = Path(out).expanduser()
    runs, problems = [], []
    for run_dir in run_dirs:
        try:
            runs.append(read_figures(run_dir))
        except UserError as exc:
            problems.extend(exc.problems)
    if not out.parent.is_dir():
        problems.append(f"--out {out}: folder {out.parent} does not exist; create it or pass another path")
    if problems:
        raise UserError(*problems)
    return format_table(runs), plot_runs(runs, out)
