"""HyperFD's search: a transferable performance ranker and the Tune searcher of its online protocol.

Paper: ``papers/hyperfd-online-automl-face-detection-supplement.txt`` (Algorithm 1, §B.5, Tables 6-7).

- :mod:`search_algos.hyperfd.data`: what the ranker reads, plain numpy: :class:`TaskResults` (one
  dataset's meta-features and results), :func:`config_encoding` (the ranker's view of a config),
  :func:`spearman` (how alike two datasets' config rankings are).
- :mod:`search_algos.hyperfd.networks`: the torch encoders and scoring head, defined on first use.
- :mod:`search_algos.hyperfd.ranker`: :class:`PerformanceRanker` (dataset meta-features and a config ->
  predicted rank; ranking + triplet + SI losses, transformation module) and its :class:`RankerSettings`.
- :mod:`search_algos.hyperfd.searcher`: :class:`TransferRankerSearcher`, Algorithm 1's online loop as a
  Ray Tune searcher (top-B configs per new dataset, then learn from their results).

The ranker is a torch model, but no module here imports torch at import time: ``import
search_algos.hyperfd`` works without torch (a driver that only plans or reads results needs none), and
constructing or restoring a :class:`PerformanceRanker` is what needs it.

The benchmark, the stages and Table 7 around it are the orchestrator's (``orchestrator/methods/hyperfd/``).
"""

from __future__ import annotations

from search_algos.hyperfd.data import GraphEncoding, TaskResults, config_encoding, spearman
from search_algos.hyperfd.ranker import PerformanceRanker, RankerSettings
from search_algos.hyperfd.searcher import OnlineDataset, TransferRankerSearcher

__all__ = [
    "GraphEncoding",
    "OnlineDataset",
    "PerformanceRanker",
    "RankerSettings",
    "TaskResults",
    "TransferRankerSearcher",
    "config_encoding",
    "spearman",
]
