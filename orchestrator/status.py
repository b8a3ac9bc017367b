"""``facenas status RUN_DIR``: stages, evaluations and the best result so far, read from disk only."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from orchestrator.config import ExperimentConfig
from orchestrator.experiment import RunPaths
from orchestrator.pipeline import stage_state

__all__ = ["describe"]


def _stage_names(paths: RunPaths) -> list[str]:
    """Stage folders in the order the pipeline created them."""
    folders = [p for p in paths.root.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))]
    def started(folder: Path) -> tuple[float, str]:  # a finished stage by its marker's time
        marker = paths.stage_marker(folder.name)
        return (marker if marker.exists() else folder).stat().st_mtime, folder.name

    return [p.name for p in sorted(folders, key=started)] or ["search"]


def _evaluations(paths: RunPaths, stage: str) -> pd.DataFrame | None:
    done = paths.stage_evaluations(stage)
    if done.is_file():
        return pd.read_parquet(done)
    return None


def describe(paths: RunPaths, config: ExperimentConfig) -> str:
    lines = [f"run {paths.root.name}: searcher={config.searcher.name} space={config.space.name} "
             f"dataset={config.data.dataset} seed={config.seed}"]
    for stage in _stage_names(paths):
        state = stage_state(paths.root, stage)
        frame = _evaluations(paths, stage)
        extra = ""
        if frame is not None:
            ok = frame[frame["status"] == "ok"]
            extra = f", {len(ok)} ok / {len(frame) - len(ok)} failed"
            if not ok.empty:
                metric = str(ok["metric"].iloc[0])
                best = ok["value"].min() if config.mode == "min" else ok["value"].max()
                extra += f", best {metric}={best:.2f}"
        else:
            trials = list((paths.root / stage).glob("*/result.json"))
            if trials:
                extra = f", {len(trials)} trials started"
        lines.append(f"  stage {stage}: {state}{extra}")
    if paths.best.is_file():
        best = json.loads(paths.best.read_text())
        value = best.get("value", math.nan)
        lines.append(f"finished: best {best['metric']}={value:.2f} params={best['params']:,} ({paths.best})")
    else:
        lines.append(f"not finished; continue with `facenas resume {paths.root}`")
    return "\n".join(lines)
