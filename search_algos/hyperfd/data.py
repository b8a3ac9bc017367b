"""What HyperFD's ranker reads, as plain numpy: datasets' results, config encodings, rank correlations.

A dataset is known by its meta-features and results only (:class:`TaskResults`; privacy: never its
images); a config by its encoding (:func:`config_encoding`: a vector, or a graph for the GIN); two datasets
are alike when their config rankings correlate (:func:`spearman`, :func:`shared_corr`: the triplet
partners of the ranker's loss). No torch here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["GraphEncoding", "TaskResults", "config_encoding", "shared_corr", "spearman"]

GraphEncoding = tuple[np.ndarray, np.ndarray]  # node features (N, F), adjacency (N, N) of 0/1


@dataclass
class TaskResults:
    """One dataset's evaluated configs: what the ranker learns from (never images).

    Attributes:
        dataset_id: the store's key of the dataset.
        features: meta-features (name -> finite float).
        results: config key -> validation AP.
    """

    dataset_id: str
    features: dict[str, float]
    results: dict[str, float] = field(default_factory=dict)


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rank correlation (average ranks for ties); 0 when either side is constant."""
    ra = _average_ranks(np.asarray(a, dtype=np.float64))
    rb = _average_ranks(np.asarray(b, dtype=np.float64))
    if len(ra) < 2 or ra.std() == 0 or rb.std() == 0:
        return 0.0
    return float(np.corrcoef(ra, rb)[0, 1])


def _average_ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = np.arange(len(x), dtype=np.float64)
    for value in np.unique(x):  # ties share their mean rank
        tied = x == value
        if tied.sum() > 1:
            ranks[tied] = ranks[tied].mean()
    return ranks


def shared_corr(a: Mapping[str, float], b: Mapping[str, float], *, minimum: int = 2) -> float:
    """Spearman between two datasets' results on the configs they share; NaN below ``minimum`` shared."""
    shared = sorted(set(a) & set(b))
    if len(shared) < minimum:
        return math.nan
    return spearman([a[k] for k in shared], [b[k] for k in shared])


def config_encoding(arch: Any) -> Any:
    """The ranker's view of a config: ``to_graph()`` (GIN) where the encoding has one, else ``to_vector()``.

    Returns:
        ``(nodes (N, F), adjacency (N, N))`` for a graph (edges made undirected: GIN sums over neighbours),
        or a vector ``(D,)``.
    """
    if hasattr(arch, "to_graph"):
        graph = arch.to_graph()
        nodes = np.asarray(graph.nodes, dtype=np.float32)
        adj = np.zeros((len(nodes), len(nodes)), dtype=np.float32)
        for src, dst in np.asarray(graph.edges, dtype=np.int64).reshape(-1, 2):
            adj[src, dst] = adj[dst, src] = 1.0
        return nodes, adj
    return np.asarray(arch.to_vector(), dtype=np.float32)
