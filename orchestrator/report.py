"""``facenas report RUN_DIR``: a self-contained HTML page (plots embedded as PNG data URIs)."""

from __future__ import annotations

import base64
import html
import io
import json
import math
from pathlib import Path

import pandas as pd

from orchestrator.config import ExperimentConfig
from orchestrator.errors import UserError
from orchestrator.experiment import RunPaths

__all__ = ["write_report"]


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _trajectory(frame: pd.DataFrame, metric: str, mode: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.6))
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
    ax.set_xlabel("evaluation (trial order)")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    uri = _png(fig)
    plt.close(fig)
    return uri


def _table(frame: pd.DataFrame, mode: str, limit: int = 15) -> str:
    ok = frame[frame["status"] == "ok"].sort_values("value", ascending=(mode == "min")).head(limit)
    head = "<tr><th>stage</th><th>trial</th><th>architecture</th><th>value</th><th>params</th><th>epochs</th><th>cached</th></tr>"
    body = []
    for r in ok.itertuples():
        body.append(
            f"<tr><td>{html.escape(r.stage)}</td><td>{html.escape(r.trial_id)}</td>"
            f"<td><code>{html.escape(_summary(r.arch))}</code></td><td>{r.value:.2f}</td>"
            f"<td>{int(r.params):,}</td><td>{int(r.epochs)}</td><td>{'yes' if r.cached else ''}</td></tr>"
        )
    return f"<table>{head}{''.join(body)}</table>"


def _summary(arch_json: str) -> str:
    from search_algos.spaces import decode_arch

    try:
        payload = json.loads(arch_json)
        return decode_arch(payload.get("space", "global"), payload).summary()
    except Exception:
        return arch_json[:80]


def write_report(paths: RunPaths, config: ExperimentConfig) -> Path:
    """Write ``RUN_DIR/report.html`` and return its path."""
    if not paths.results.is_file():
        raise UserError(
            f"{paths.root} has no results.parquet yet; finish it with `facenas resume {paths.root}` first"
        )
    frame = pd.read_parquet(paths.results)
    best = json.loads(paths.best.read_text()) if paths.best.is_file() else {}
    failed = int((frame["status"] != "ok").sum())
    best_html = ""
    if best:
        test = ", ".join(f"{k} = {v:.2f}" for k, v in best.get("test", {}).items() if isinstance(v, float) and not math.isnan(v))
        best_html = (
            f"<h2>Best architecture</h2><p><code>{html.escape(_summary(json.dumps(best['arch'])))}</code></p>"
            f"<p>{html.escape(best['metric'])} = {best['value']:.2f} &middot; params = {best['params']:,}"
            f" &middot; {html.escape(test)}</p>"
        )
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>facenas report: {html.escape(paths.root.name)}</title>
<style>body{{font-family:sans-serif;max-width:960px;margin:2em auto;color:#222}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:3px 8px;font-size:13px}}
img{{max-width:100%}}</style></head><body>
<h1>facenas run <code>{html.escape(paths.root.name)}</code></h1>
<p>searcher <b>{html.escape(config.searcher.name)}</b> &middot; space <b>{html.escape(config.space.name)}</b>
&middot; dataset <b>{html.escape(config.data.dataset)}</b> &middot; seed {config.seed}
&middot; {len(frame)} evaluations ({failed} failed)</p>
{best_html}
<h2>Search trajectory</h2>
<img alt="search trajectory and best so far" src="{_trajectory(frame, config.metric, config.mode)}">
<h2>Top evaluations</h2>
{_table(frame, config.mode)}
</body></html>
"""
    paths.report.write_text(page)
    return paths.report
