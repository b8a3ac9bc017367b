"""``facenas report RUN_DIR``: one self-contained HTML page (every plot embedded as a PNG data URI).

Sections: the best architecture (summary, figures and its picture: the ``picture`` of the method that
searches its space, ``orchestrator.methods.base.Method``, or a note when the space has none), the search
trajectory with the best so far, the metric vs parameters Pareto front, the time per stage, the
searcher's own plots (its method's ``plots``), the Optuna ``hpo`` draws when the run had them, and the
top evaluations. Reads only files (results.parquet, best.json, ``<stage>/stage.json``); needs no Ray.
A picture or plot that raises costs only its own image: it becomes a note on the page and a warning on
stderr, never a silent gap.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import math
from pathlib import Path
from typing import Any

import pandas as pd

from orchestrator.config import ExperimentConfig
from orchestrator.errors import UserError
from orchestrator.experiment import RunPaths
from orchestrator.methods import METHODS
from search_algos.durable import write_text_durable

__all__ = ["pareto_front", "read_run", "write_report"]

_log = logging.getLogger(__name__)


def _png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _img(fig: Any, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="{_png(fig)}">'


def _note(text: str) -> str:
    return f'<p class="note">{html.escape(text)}</p>'


def _trajectory(frame: pd.DataFrame, metric: str, mode: str) -> Any:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.6))
    for stage, part in frame.groupby("stage", sort=False):
        part = part.reset_index(drop=True)
        ok = part[part["status"] == "ok"]
        ax.scatter(ok.index + 1, ok["value"], s=18, alpha=0.7, label=f"{stage}: evaluations")
        running = part["value"].where(part["status"] == "ok")
        best = running.cummax() if mode == "max" else running.cummin()
        ax.step(part.index + 1, best, where="post", label=f"{stage}: best so far")
        failed = part[part["status"] != "ok"]
        if not failed.empty:
            low = ok["value"].min() if not ok.empty else 0.0
            ax.scatter(failed.index + 1, [low] * len(failed), marker="x", color="red", label=f"{stage}: failed")
    ax.set_xlabel("evaluation (trial order within its stage)")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:  # nothing to label when every evaluation failed
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig


def pareto_front(params: list[float], values: list[float], mode: str) -> list[int]:
    """Indices of the non-dominated points: no other point has fewer (or equal) parameters and a
    better (or equal) value with at least one strictly better. Sorted by parameters.

    Args:
        params: parameter counts.
        values: the metric of each point.
        mode: ``max`` (higher value is better) or ``min``.
    """
    sign = 1.0 if mode == "max" else -1.0
    order = sorted(range(len(params)), key=lambda i: (params[i], -sign * values[i]))
    front, best = [], -math.inf
    for i in order:
        score = sign * values[i]
        if score > best:  # strictly better than every point with no more parameters
            front.append(i)
            best = score
    return front


def _pareto(frame: pd.DataFrame, metric: str, mode: str) -> Any:
    import matplotlib.pyplot as plt

    ok = frame[(frame["status"] == "ok") & frame["value"].notna() & (frame["params"] > 0)].reset_index(drop=True)
    fig, ax = plt.subplots(figsize=(7, 3.8))
    for stage, part in ok.groupby("stage", sort=False):
        ax.scatter(part["params"], part["value"], s=18, alpha=0.6, label=stage)
    front = pareto_front(ok["params"].astype(float).tolist(), ok["value"].astype(float).tolist(), mode)
    if front:
        pts = ok.iloc[front]
        ax.step(pts["params"], pts["value"], where="post", color="black", linewidth=1.2)
        ax.scatter(pts["params"], pts["value"], s=50, facecolors="none", edgecolors="black", label="Pareto front")
    ax.set_xscale("log")
    ax.set_xlabel("parameters (log)")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3, which="both")
    if ax.get_legend_handles_labels()[0]:  # nothing to label when every evaluation failed
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig


def _stage_times(stages: dict[str, dict[str, Any]]) -> Any:
    import matplotlib.pyplot as plt

    names = list(stages)
    seconds = [float(stages[n].get("seconds", 0.0)) for n in names]
    fig, ax = plt.subplots(figsize=(7, 0.5 + 0.38 * len(names)))
    bars = ax.barh(names, seconds, color="#4C72B0")
    ax.invert_yaxis()
    for bar, s in zip(bars, seconds):
        ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {s:.0f} s", va="center", fontsize=8)
    ax.set_xlabel("wall-clock seconds")
    ax.set_xlim(0, max(seconds + [1.0]) * 1.2)
    ax.grid(alpha=0.3, axis="x")
    return fig


def _summary(arch_json: Any, space: str) -> str:
    from search_algos.spaces import decode_arch

    try:
        payload = json.loads(arch_json) if isinstance(arch_json, str) else arch_json
        return decode_arch(payload.get("space", space), payload).summary()
    except Exception:  # a foreign or newer encoding: show the text rather than fail the page
        return str(arch_json)[:80]


def _table(frame: pd.DataFrame, mode: str, space: str, limit: int = 15) -> str:
    ok = frame[frame["status"] == "ok"].sort_values("value", ascending=(mode == "min")).head(limit)
    head = ("<tr><th>stage</th><th>trial</th><th>architecture</th><th>value</th><th>params</th>"
            "<th>epochs</th><th>cached</th></tr>")
    body = []
    for r in ok.itertuples():
        body.append(
            f"<tr><td>{html.escape(str(r.stage))}</td><td>{html.escape(str(r.trial_id))}</td>"
            f"<td><code>{html.escape(_summary(r.arch, space))}</code></td><td>{r.value:.2f}</td>"
            f"<td>{int(r.params):,}</td><td>{int(r.epochs)}</td><td>{'yes' if r.cached else ''}</td></tr>"
        )
    return f"<table>{head}{''.join(body)}</table>"


def read_run(paths: RunPaths, config: ExperimentConfig) -> Any:
    """The run's files as a :class:`~orchestrator.pictures.RunView` (stages in the order they finished)."""
    from orchestrator.pictures import RunView

    frame = pd.read_parquet(paths.results)
    best = json.loads(paths.best.read_text()) if paths.best.is_file() else {}
    markers = sorted(paths.stage_markers(), key=lambda p: (p.stat().st_mtime, p.parent.name))
    stages = {}
    for marker in markers:
        try:
            stages[marker.parent.name] = json.loads(marker.read_text())
        except (OSError, json.JSONDecodeError):
            continue
    return RunView(frame=frame, best=best, stages=stages, metric=config.metric, mode=config.mode)


def _problem(text: str) -> str:
    """A picture that could not be drawn: a warning on stderr and the note for the page (never silent)."""
    _log.warning("facenas report: %s", text)
    return _note(text)


def _best_section(best: dict[str, Any], space: str) -> str:
    from orchestrator.pictures import arch_of

    if not best:
        return "<h2>Best architecture</h2>" + _note("the run has not finished (no best.json): no best architecture yet")
    test = ", ".join(
        f"{k} = {v:.2f}" for k, v in (best.get("test") or {}).items() if isinstance(v, float) and not math.isnan(v)
    )
    space = best.get("space", space)
    figures = f"{html.escape(str(best['metric']))} = {best['value']:.2f} &middot; params = {int(best['params']):,}"
    for key in ("ri", "nme_mean"):
        if isinstance(best.get(key), (int, float)) and key not in (best.get("test") or {}):
            figures += f" &middot; {key} = {best[key]:.2f}"
    out = [
        "<h2>Best architecture</h2>",
        f"<p><code>{html.escape(_summary(best['arch'], space))}</code></p>",
        f"<p>{figures}{' &middot; ' + html.escape(test) if test else ''}</p>",
    ]
    pictures = METHODS.by_space("picture")
    if space in pictures:
        try:
            out.append(_img(pictures[space](arch_of(best)), f"best architecture ({space} space)"))
        except Exception as exc:  # a picture must not cost the user the whole report
            out.append(_problem(f"the {space} picture could not be drawn: {type(exc).__name__}: {exc}"))
    else:
        out.append(_note(f"no architecture picture is registered for space {space!r} "
                         f"(pictures exist for: {', '.join(sorted(pictures))})"))
    return "\n".join(out)


def _hpo_section(run: Any) -> str:
    from orchestrator.pictures import hpo_plots

    plots = hpo_plots(run)
    if not plots:
        return ""
    return "<h2>Hyper-parameters (hpo)</h2>" + "".join(
        f"<h3>{html.escape(title)}</h3>{_img(fig, title)}" for title, fig in plots)


def _searcher_section(run: Any, searcher: str) -> str:
    plot = METHODS.get(searcher).plots
    if plot is None:
        return ""
    try:
        plots = plot(run)
    except Exception as exc:  # as for a picture: a note and a warning, the rest of the page stands
        return f"<h2>Searcher: {html.escape(searcher)}</h2>" + _problem(
            f"the {searcher} searcher's plots could not be drawn: {type(exc).__name__}: {exc}")
    if not plots:
        return f"<h2>Searcher: {html.escape(searcher)}</h2>" + _note("the searcher saved no figures to plot")
    parts = [f"<h2>Searcher: {html.escape(searcher)}</h2>"]
    for title, fig in plots:
        parts.append(f"<h3>{html.escape(title)}</h3>{_img(fig, title)}")
    return "\n".join(parts)


def write_report(paths: RunPaths, config: ExperimentConfig) -> Path:
    """Write ``RUN_DIR/report.html`` and return its path.

    Raises:
        UserError: the run has no results.parquet yet.
    """
    if not paths.results.is_file():
        raise UserError(
            f"{paths.root} has no results.parquet yet; finish it with `facenas resume {paths.root}` first"
        )
    run = read_run(paths, config)
    # Stages that report another figure (a supernet's val_loss) are not evaluations of the run's metric.
    frame = run.frame[run.frame["metric"] == config.metric]
    failed = int((frame["status"] != "ok").sum())
    space = config.space.name
    times = (_img(_stage_times(run.stages), "time per stage") if run.stages
             else _note("no finished stage recorded its time (stage.json)"))
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>facenas report: {html.escape(paths.root.name)}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:3px 8px;font-size:13px}}
img{{max-width:100%;display:block;margin:0.5em 0}}.note{{color:#8a5300;background:#fff5e0;padding:4px 8px}}</style>
</head><body>
<h1>facenas run <code>{html.escape(paths.root.name)}</code></h1>
<p>searcher <b>{html.escape(config.searcher.name)}</b> &middot; space <b>{html.escape(space)}</b>
&middot; dataset <b>{html.escape(config.data.dataset)}</b> &middot; seed {config.seed}
&middot; {len(frame)} evaluations ({failed} failed)</p>
{_best_section(run.best, space)}
<h2>Search trajectory</h2>
{_img(_trajectory(frame, config.metric, config.mode), "search trajectory and best so far")}
<h2>{html.escape(config.metric)} vs parameters (Pareto front)</h2>
{_img(_pareto(frame, config.metric, config.mode), "metric vs parameters, Pareto front")}
<h2>Time per stage</h2>
{times}
{_searcher_section(run, config.searcher.name)}
{_hpo_section(run)}
<h2>Top evaluations</h2>
{_table(frame, config.mode, space)}
</body></html>
"""
    write_text_durable(paths.report, page)  # utf-8, as the page's <meta charset> says
    return paths.report
