"""HyperFD's Table 7: per domain, AP and normalized rank of HyperFD, random search and the best config of
the reference domain, mean ± std over the random orders of the online domains.

Paper: ``papers/hyperfd-online-automl-face-detection-supplement.txt`` (Table 7). :func:`table7` gives the
long frame (one row per method, domain and order), :func:`table7_markdown` the printed table; the online
protocol writes both (``RUN_DIR/table7.csv``, ``table7.md``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from orchestrator.methods.streams import HYPERFD_TABLE_RANDOM_SALT

__all__ = ["normalized_rank", "table7", "table7_markdown"]


def normalized_rank(test: dict[str, float], chosen: str) -> float:
    """100 * (pool configs with a strictly higher test AP than ``chosen``) / (pool size - 1): 0 = the best."""
    value = test[chosen]
    if not math.isfinite(value):
        return 100.0
    return 100.0 * sum(1 for v in test.values() if math.isfinite(v) and v > value) / max(len(test) - 1, 1)


def _pick(results: dict[str, dict[str, float]], keys: Sequence[str]) -> str | None:
    """c* = argmax of validation AP among ``keys`` (first on ties), as Algorithm 1 picks it."""
    ok = [k for k in keys if k in results and math.isfinite(results[k]["val"])]
    return max(ok, key=lambda k: (results[k]["val"], -list(keys).index(k))) if ok else None


def table7(
    *, space: str, pool: Sequence[str], results: dict[str, dict[str, dict[str, float]]],
    reference: dict[str, dict[str, float]], summaries: Sequence[dict[str, Any]], ids: dict[str, str],
    domains: Sequence[str], budget: int, seed: int,
) -> pd.DataFrame:
    """Per (method, domain, order): test AP (%) and normalized rank (%) of the config each method picks.

    Args:
        pool: the candidate keys (normalized rank is among these).
        results: domain -> arch_key -> {"val", "test"} for the pool on that online domain.
        reference: the same on the reference (source) domain.
        summaries: per order, :meth:`TransferRankerSearcher.summary`.

    Returns:
        Long frame with columns ``space, method, domain, order, arch_key, ap, normalized_rank``.
    """
    rows = []
    ref_key = _pick(reference, list(pool))
    by_id = {ids[d]: d for d in domains}
    for k, summary in enumerate(summaries):
        picks = {by_id[t["dataset_id"]]: t["suggested"] for t in summary.get("tasks", [])}
        for i, d in enumerate(domains):
            res = {key: results[d][key] for key in pool if key in results[d]}
            test = {key: r["test"] for key, r in res.items()}
            rng = np.random.default_rng([seed, HYPERFD_TABLE_RANDOM_SALT, k, i])
            methods = {
                "HyperFD": picks.get(d, []),
                "Random search": [pool[int(j)] for j in rng.choice(len(pool), min(budget, len(pool)), replace=False)],
                "Best on reference": [ref_key] if ref_key else [],
            }
            for method, keys in methods.items():
                chosen = _pick(res, keys)
                rows.append({
                    "space": space, "method": method, "domain": d, "order": k, "arch_key": chosen or "",
                    "ap": 100.0 * test[chosen] if chosen else math.nan,
                    "normalized_rank": normalized_rank(test, chosen) if chosen else 100.0,
                })  # fmt: skip
    return pd.DataFrame(rows, columns=["space", "method", "domain", "order", "arch_key", "ap", "normalized_rank"])


def table7_markdown(long: pd.DataFrame, domains: Sequence[str]) -> str:
    """Table 7 (a)-(d): per space, AP and normalized rank, ``mean±std`` over orders, plus the average.

    The average column is the mean over domains of each order's value, ``±`` its std over orders.
    """
    out = []
    methods = ["Random search", "Best on reference", "HyperFD"]
    for space in long["space"].unique():
        for column, title in (("ap", "AP@50 (%) of the searched config, higher is better"),
                              ("normalized_rank", "normalized rank (%) of the searched config, lower is better")):
            sub = long[long.space == space]
            out.append(f"\n{space}: {title}\n")
            out.append("| method | " + " | ".join(domains) + " | average |")
            out.append("|---" * (len(domains) + 2) + "|")
            for method in methods:
                m = sub[sub.method == method]
                if m.empty:
                    continue
                cells = []
                for d in domains:
                    v = m[m.domain == d][column]
                    cells.append(f"{v.mean():.2f}±{v.std(ddof=0):.2f}")
                per_order = m.groupby("order")[column].mean()
                cells.append(f"{per_order.mean():.2f}±{per_order.std(ddof=0):.2f}")
                out.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"
