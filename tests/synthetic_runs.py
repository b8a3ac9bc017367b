"""Small RUN_DIRs written as the pipeline writes them, without Ray or training (report/export/compare tests).

The searchers are the real ones (SAMOS, macro-micro, random) driven with synthetic scores, so the
saved summaries (SA trajectory, greedy decision log) have exactly the shape the real stages save.
Files: ``config.yaml`` (resolved config), ``<stage>/stage.json`` + ``<stage>/evaluations.parquet``,
``results.parquet`` and ``best.json``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from ray.tune.search import Searcher

from orchestrator.config import parse_config
from orchestrator.results import RESULT_COLUMNS, pick_best, write_json_atomic, write_parquet_atomic
from search_algos.spaces import decode_arch

__all__ = ["global_run", "multipath_run"]


def _row(stage: str, n: int, arch: Any, value: float, params: int, epochs: int, metric: str, **extra: Any) -> dict:
    return {
        "stage": stage, "trial_id": f"{stage}{n:04d}", "arch_key": arch.key(), "arch": arch.to_json(),
        "metric": metric, "value": float(value), "params": int(params), "epochs": int(epochs), "cached": False,
        "status": "ok", "error": "", "test_acc": float(extra.get("test_acc", float("nan"))), "dataset_id": "synthetic",
        "metrics": json.dumps({metric: float(value), "params": float(params), **extra}),
    }


def _drive(searcher: Searcher, score, stage: str, metric: str, limit: int = 500) -> list[dict]:
    """Ask and answer one trial at a time until the searcher finishes; rows in trial order."""
    rows = []
    for n in range(limit):
        config = searcher.suggest(f"{stage}{n:04d}")
        if config == Searcher.FINISHED or config is None:
            break
        value, params, arch = score(config)
        searcher.on_trial_complete(f"{stage}{n:04d}", {metric: value, "params": params})
        rows.append(_row(stage, n, arch, value, params, int(config.get("epochs", 0)), metric))
    return rows


def _write_stage(root: Path, stage: str, rows: list[dict], summary: dict, seconds: float) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=list(RESULT_COLUMNS))
    write_parquet_atomic(frame, root / stage / "evaluations.parquet")
    write_json_atomic({"stage": stage, "summary": summary, "seconds": seconds}, root / stage / "stage.json")
    return frame


def _write_run(root: Path, raw: dict, frames: list[pd.DataFrame], best: dict) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    config = parse_config(raw)  # the same check `facenas run` makes
    (root / "config.yaml").write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
    write_parquet_atomic(pd.concat(frames, ignore_index=True)[list(RESULT_COLUMNS)], root / "results.parquet")
    write_json_atomic(best, root / "best.json")
    return root


def global_run(root: Path, *, searcher: str = "macro_micro", seed: int = 0, hpo: bool = False) -> Path:
    """A finished run of the global space on digits (macro_micro: search + retrain; or random: search,
    with ``hpo`` its trials also draw lr and batch size from Optuna)."""
    from search_algos.spaces.global_space import GlobalSpace, count_params

    def score(config: dict) -> tuple[float, int, Any]:
        arch = decode_arch("global", config["arch"])
        params = count_params(arch, in_channels=1, num_classes=10)
        # more depth helps up to 5 layers, 5x5 kernels a little, a tiny width penalty
        acc = 80 + 3 * min(arch.depth, 5) - 0.5 * max(0, arch.depth - 5) + 0.4 * arch.kernels.count(5) - 0.01 * arch.width
        return float(acc) + (seed % 3) * 0.1, params, arch

    raw: dict[str, Any] = {"name": root.name, "seed": seed, "storage": str(root.parent),
                           "data": {"dataset": "digits"},
                           "space": {"name": "global", "d_min": 2, "d_max": 6, "w_min": 8, "w_max": 16, "w_step": 4}}
    if searcher == "macro_micro":
        from search_algos.fixed import FixedArchSearcher
        from search_algos.macro_micro import MacroMicroSearcher, MacroMicroSettings

        settings = MacroMicroSettings.preset("tiny", d_min=2, d_max=6, w_min=8, w_max=16, w_res=4,
                                             e_min_macro=1, e_min_micro=1)
        s = MacroMicroSearcher(settings=settings, in_channels=1, num_classes=10, seed=seed)
        search = _drive(s, score, "search", "val_acc")
        summary = s.summary()
        retrain = FixedArchSearcher([summary["final_arch"]], epochs=2, metric="val_acc", mode="max")
        final = _drive(retrain, score, "retrain", "val_acc")
        final[0]["test_acc"] = final[0]["value"] - 1.0
        raw["searcher"] = {"name": "macro_micro", "d_min": 2, "d_max": 6, "w_min": 8, "w_max": 16, "w_res": 4,
                           "e_min_macro": 1, "e_min_micro": 1, "final_epochs": 2}
        frames = [_write_stage(root, "search", search, summary, 42.0),
                  _write_stage(root, "retrain", final, {}, 7.5)]
        deciding = frames[1]
    else:
        from search_algos.random_search import RandomArchSearcher

        space = GlobalSpace(d_min=2, d_max=6, w_min=8, w_max=16, w_step=4)
        s = RandomArchSearcher(space, num_samples=6, epochs=2, metric="val_acc", mode="max", seed=seed)
        if hpo:
            from search_algos.hpo import HpoSearcher

            raw["hpo"] = {"lr": ["loguniform", 0.001, 0.1], "batch_size": ["choice", 16, 32]}
            s = HpoSearcher(s, raw["hpo"], seed=seed)
        rows = _drive(s, score, "search", "val_acc")
        for r in rows:
            r["test_acc"] = r["value"] - 1.0
        raw["searcher"] = {"name": "random", "num_samples": 6, "epochs": 2}
        frames = [_write_stage(root, "search", rows, s.summary(), 20.0)]
        deciding = frames[0]
    row = pick_best(deciding, mode="max")
    best = {"stage": row["stage"], "arch": json.loads(row["arch"]), "arch_key": row["arch_key"], "metric": "val_acc",
            "value": row["value"], "params": int(row["params"]), "epochs": int(row["epochs"]),
            "test": {"test_acc": float(row["test_acc"])}, "space": "global", "searcher": searcher,
            "dataset": "digits", "dataset_id": "synthetic", "seed": seed,
            "evaluations": int(sum(len(f) for f in frames)), "failed": 0, "search": frames[0].shape[0]}
    return _write_run(root, raw, frames, best)


def multipath_run(root: Path, *, seed: int = 0) -> Path:
    """A finished MONAS run (supernet -> search (SAMOS) -> random -> retrain) of a 4 x 3 multi-path space."""
    from search_algos.fixed import FixedArchSearcher
    from search_algos.random_search import RandomArchSearcher
    from search_algos.samos import SAMOSSearcher
    from search_algos.spaces.multipath import MultipathSpace

    space = MultipathSpace(layers=4, scales=3)

    def score(config: dict) -> tuple[float, int, Any]:
        arch = decode_arch("multipath", config["arch"])
        edges = arch.as_array()
        nme = 6.0 - 0.3 * float((edges == 1).sum()) + 0.1 * float((edges == 2).sum())
        return nme, int(1000 + 500 * (edges == 1).sum()), arch

    supernet_row = {  # the supernet stage reports its own figure (val_loss), as monas.supernet_trial does
        "stage": "supernet", "trial_id": "supernet0000", "arch_key": "supernet-mnus", "arch": "", "metric": "val_loss",
        "value": 0.16, "params": 31156, "epochs": 1, "cached": False, "status": "ok", "error": "",
        "test_acc": float("nan"), "dataset_id": "synthetic", "metrics": json.dumps({"val_loss": 0.16}),
    }
    sup = _write_stage(root, "supernet", [supernet_row], {}, 30.0)
    samos = SAMOSSearcher(space=space, seed=seed, iterations=25, calibration=4, chains=2)
    search_rows = _drive(samos, score, "search", "val_nme")
    summary = samos.summary()
    rand = RandomArchSearcher(space, num_samples=len(search_rows), epochs=1, metric="val_nme", mode="min", seed=seed)
    rand_rows = _drive(rand, score, "random", "val_nme")
    retrain = FixedArchSearcher([summary["best_arch"]], epochs=2, metric="val_nme", mode="min")
    retrain_rows = _drive(retrain, score, "retrain", "val_nme")
    frames = [sup,
              _write_stage(root, "search", search_rows, summary, 25.0),
              _write_stage(root, "random", rand_rows, rand.summary(), 12.0),
              _write_stage(root, "retrain", retrain_rows, {}, 9.0)]
    row = retrain_rows[0]
    raw = {"name": root.name, "seed": seed, "storage": str(root.parent),
           "data": {"dataset": "faces3d", "image_size": 16, "n_train": 16, "n_val": 8, "n_test": 8},
           "space": {"name": "multipath", "layers": 4, "scales": 3},
           "searcher": {"name": "samos", "supernet_epochs": 1, "channels": 4, "iterations": 25, "chains": 2,
                        "calibration": 4, "retrain_epochs": 2}}
    best = {"stage": "retrain", "arch": json.loads(row["arch"]), "arch_key": row["arch_key"], "metric": "val_nme",
            "value": row["value"], "params": row["params"], "epochs": 2, "test": {"test_nme": row["value"] + 0.2},
            "space": "multipath", "searcher": "samos", "dataset": "faces3d", "dataset_id": "synthetic", "seed": seed,
            "evaluations": int(sum(len(f) for f in frames)), "failed": 0, "search": summary["evaluations"],
            "nme_mean": row["value"] + 0.3}
    return _write_run(root, raw, frames, best)
