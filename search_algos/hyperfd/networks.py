"""The ranker's torch networks, defined on first use: dataset and config encoders, the scoring head.

Paper: ``papers/hyperfd-online-automl-face-detection-supplement.txt`` (§B.5: the GIN with virtual nodes).
The ``nn.Module`` classes are built by :func:`nets` the first time it is called, so importing this module
needs no torch; :class:`search_algos.hyperfd.ranker.PerformanceRanker` calls it when it is constructed.
"""

from __future__ import annotations

import functools
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # annotations only: never executed, so importing this module needs no torch
    import torch

    from search_algos.hyperfd.ranker import RankerSettings

__all__ = ["nets"]

_NET_CLASSES = ("_Mlp", "_GinEncoder", "_RankerNet")


@functools.cache
def nets() -> SimpleNamespace:
    """Define the ranker's ``nn.Module`` classes on first use (the one place the ranker needs torch.nn).

    Each class is also bound as a module attribute of its own name (with a plain ``__qualname__``), so a
    pickled ranker refers to ``search_algos.hyperfd.networks._RankerNet`` exactly as when these classes were
    defined at module level; :func:`__getattr__` defines them when an unpickler asks first.

    Returns:
        A namespace with the classes ``Mlp``, ``GinEncoder`` and ``RankerNet``.
    """
    import torch
    from torch import nn
    from torch.nn import functional as nnf

    class _Mlp(nn.Module):
        def __init__(self, dim_in: int, hidden: int, dim_out: int) -> None:
            super().__init__()
            self.net = nn.Sequential(nn.Linear(dim_in, hidden), nn.ReLU(), nn.Linear(hidden, dim_out))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x)

    class _GinEncoder(nn.Module):
        """GIN (Xu et al. 2019) with a learnable epsilon per layer and one virtual node per layer (§B.5).

        ``h_v <- MLP((1 + eps) h_v + sum_{u in N(v)} h_u + vn)``, where the virtual node ``vn`` of the layer
        is an MLP of the sum of all node states of the previous layer, added back to every node (the two
        virtual nodes of §B.5 for two layers). Readout: mean and max over real nodes -> linear.
        """

        def __init__(self, dim_in: int, hidden: int, layers: int, dropout: float) -> None:
            super().__init__()
            self.embed = nn.Linear(dim_in, hidden)
            self.eps = nn.Parameter(torch.zeros(layers))
            self.mlps = nn.ModuleList(_Mlp(hidden, hidden, hidden) for _ in range(layers))
            self.virtual = nn.ModuleList(_Mlp(hidden, hidden, hidden) for _ in range(layers))
            self.dropout = nn.Dropout(dropout)
            self.readout = nn.Linear(2 * hidden, hidden)

        def forward(self, x: torch.Tensor, adj: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            # x: (G, N, F), adj: (G, N, N), mask: (G, N) with 1 for real nodes
            m = mask.unsqueeze(-1)  # (G, N, 1)
            h = self.embed(x) * m  # (G, N, H)
            for layer, (mlp, virtual) in enumerate(zip(self.mlps, self.virtual)):
                vn = virtual(h.sum(dim=1))  # (G, H): aggregates every node of this layer
                agg = (1 + self.eps[layer]) * h + adj @ h + vn.unsqueeze(1)  # (G, N, H)
                h = self.dropout(nnf.relu(mlp(agg))) * m
            count = m.sum(dim=1).clamp(min=1)  # (G, 1)
            mean = h.sum(dim=1) / count  # (G, H)
            peak = h.masked_fill(m == 0, -1e9).max(dim=1).values  # (G, H)
            return self.readout(torch.cat([mean, peak], dim=1))  # (G, H)

    class _RankerNet(nn.Module):
        def __init__(self, n_features: int, config_dim: int, kind: str, settings: RankerSettings) -> None:
            super().__init__()
            h = settings.hidden
            self.kind = kind
            self.dataset = _Mlp(n_features, h, h)
            if kind == "vector":
                self.config = _Mlp(config_dim, h, h)
            else:
                self.config = _GinEncoder(config_dim, h, settings.gin_layers, settings.dropout)
            self.head = _Mlp(3 * h, h, 1)

        def encode_configs(self, batch: Any) -> torch.Tensor:
            if self.kind == "vector":
                return self.config(batch)  # (C, H)
            x, adj, mask = batch
            return self.config(x, adj, mask)  # (C, H)

        def score(self, e: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
            # e: (H,) one dataset embedding, h: (C, H) config embeddings -> (C,)
            e = e.expand_as(h)
            return self.head(torch.cat([e, h, e * h], dim=1)).squeeze(1)

    for cls in (_Mlp, _GinEncoder, _RankerNet):
        cls.__qualname__ = cls.__name__
        globals()[cls.__name__] = cls
    return SimpleNamespace(Mlp=_Mlp, GinEncoder=_GinEncoder, RankerNet=_RankerNet)


def __getattr__(name: str) -> Any:
    # PEP 562: only reached for names the module does not have yet, i.e. the lazily defined torch classes.
    if name in _NET_CLASSES:
        nets()
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
