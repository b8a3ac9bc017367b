"""HyperFD's transferable performance ranker: which configs to try first on a dataset never seen before.

Paper: ``papers/hyperfd-online-automl-face-detection-supplement.txt`` (Algorithm 1, §B.5, Table 6) and
DESIGN.md §1 for what the supplement leaves open. The ranker scores a (dataset, config) pair::

    e_d = E(z_d)                   dataset encoder on standardised meta-features ("stats" variant)  (64,)
    h_c = C(c)                     config encoder: MLP on an HPO vector, or GIN on an architecture graph (64,)
    F(d, c) = head([e_d, h_c, e_d * h_c])                                                           scalar

and is trained with

    L_total = L_rank + lambda_sim * L_triplet + lambda_reg * L_SI

* ``L_rank``: pairwise logistic loss over the configs of one dataset, ``softplus(F(d, c_j) - F(d, c_i))``
  for every pair with ``AP(c_i, d) > AP(c_j, d)`` (DESIGN.md §1).
* ``L_triplet``: ``max(0, |e_a - e_p| - |e_a - e_n| + alpha)`` on dataset embeddings; the positive is the
  offline dataset whose config ranking correlates most (Spearman on shared configs) with the anchor's, the
  negative the one that correlates least (DESIGN.md §1; lambda_sim = 0.03, alpha = 0.5, Table 6).
* ``L_SI``: synaptic intelligence (Zenke et al. 2017): ``sum_k Omega_k (theta_k - theta*_k)^2`` with
  ``Omega`` accumulated task by task from the path integral ``omega_k = -sum g_k dtheta_k`` of the loss
  without the regulariser, ``Omega_k += omega_k / (Delta_k^2 + xi)``; one "task" is the offline warm-up,
  then each online dataset (lambda_reg = 1e4, Table 6).

Transformation module (Algorithm 1, inner loop over ``N_trans``): a past online task keeps only its
meta-feature vector ``Z^(u)`` and the results of its B configs (privacy: never its images). As the encoder
drifts, ``Z^(u)`` is moved by plain gradient steps (eta_z) on ``L_trans(Z^(u); D_offline) = L_rank(Z^(u);
S_past^(u)) + lambda_sim * L_triplet(Z^(u); offline positive/negative)``, i.e. the stored features are kept
consistent with the task's own results and with its place among the offline datasets. The supplement does
not spell ``L_trans`` out; this is our reading, stated here so it can be changed in one place.

Batches mix samples of ``S_offline : S_past : S`` in the ratio 5 : 1 : 1 (Table 6). Everything that leaves
this module as state is plain JSON (parameters as nested lists of float32 values, exact on restore).

Torch is imported on first use, never at import (DESIGN.md §2: ``import search_algos`` works without torch,
so a driver that only plans or reads results needs no torch): the functions that train or run the ranker
import it themselves, and the ``nn.Module`` classes are defined on first use
(:func:`search_algos.hyperfd.networks.nets`). Only constructing a :class:`PerformanceRanker` (or restoring
one) needs torch installed. What it learns from, as plain numpy (:class:`TaskResults`, rank correlations),
is :mod:`search_algos.hyperfd.data`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from search_algos.hyperfd.data import TaskResults, shared_corr
from search_algos.hyperfd.networks import nets

if TYPE_CHECKING:  # annotations only: never executed, so importing this module needs no torch
    import torch
    from torch import nn

__all__ = ["PerformanceRanker", "RankerSettings"]

# Random streams: numpy.random.default_rng([seed, SALT, counter]) with the ranker's seed first and a counter
# that the ranker's state carries (so a restored ranker draws what the original would have).
_EXPLORE_SALT = 7  # suggest, per task seen: the configs drawn from the ranker's top half
_BATCH_SALT = 11  # _step, per step: the datasets and configs of the batch
_DROPOUT_SALT = 13  # _seeded, per step: the seed of torch's generator while a step runs (dropout masks)


@dataclass(frozen=True)
class RankerSettings:
    """Hyper-parameters of the ranker; defaults are Table 6 of the supplement unless noted.

    Attributes:
        hidden: hidden units of every encoder (Table 6: 64).
        lr: learning rate of the ranker and of the transformation module, eta_theta = eta_z (Table 6: 1e-4).
        batch_size: datasets per batch (Table 6: 4).
        iters_per_task: N_iters, batches per online task (Table 6: 50).
        trans_iters: N_trans, transformation-module iterations per batch (Table 6: 20).
        lambda_sim: triplet-loss weight (Table 6: 0.03).
        margin: triplet margin alpha (Table 6: 0.5).
        lambda_reg: SI weight (Table 6: 1e4).
        si_damping: xi of SI (Zenke et al. 2017 use 1e-3 .. 0.1; not in the supplement).
        mix: sampling ratio |S_offline| : |S_past| : |S| (Table 6: 5 : 1 : 1).
        explore_ratio: share of the B suggestions drawn from the ranker's top half instead of its top-B
            (Table 6: 0.5). ``0`` = pure top-B.
        warmup_steps: batches of the offline warm-up (theta <- argmin L_total on S_offline). The supplement
            gives no number; ours is sized for a few hundred offline rows.
        warmup_lr: Adam's rate during warm-up (not in the supplement: 1e-4 needs far more steps than a
            laptop run affords for the random initialisation to learn anything).
        configs_per_item: configs drawn per dataset in one batch item (pairs of the ranking loss).
        gin_layers: GIN layers of the NAS config encoder (§B.5: 2).
        dropout: dropout of the GIN encoder (§B.5: 0.2).
        prior_weight: weight w of a dataset-free prior in the suggestions (not in the paper: 0 = the
            paper's ranker alone). The rank ``suggest`` sorts by is ``(1 - w) q_F + w q_prior``, where
            ``q_F`` is a config's quantile among the pool by the ranker's score F(d, c) and ``q_prior`` its
            mean quantile over every dataset the ranker has results of (:meth:`PerformanceRanker.prior`).
            Issue 13: at our benchmark's size the conditioned ranker alone picks worse configs than the
            reference domain's best, which is such a prior on one dataset.
    """

    hidden: int = 64
    lr: float = 1e-4
    batch_size: int = 4
    iters_per_task: int = 50
    trans_iters: int = 20
    lambda_sim: float = 0.03
    margin: float = 0.5
    lambda_reg: float = 1e4
    si_damping: float = 1e-3
    mix: tuple[float, float, float] = (5.0, 1.0, 1.0)
    explore_ratio: float = 0.5
    warmup_steps: int = 400
    warmup_lr: float = 1e-3
    configs_per_item: int = 12
    gin_layers: int = 2
    dropout: float = 0.2
    prior_weight: float = 0.0

    def __post_init__(self) -> None:
        problems = []
        for name in ("hidden", "batch_size", "iters_per_task", "configs_per_item", "gin_layers"):
            if getattr(self, name) < 1:
                problems.append(f"{name} >= 1 must hold, but got {getattr(self, name)}")
        for name in ("trans_iters", "warmup_steps"):
            if getattr(self, name) < 0:
                problems.append(f"{name} >= 0 must hold, but got {getattr(self, name)}")
        for name in ("lr", "warmup_lr", "si_damping"):
            if not getattr(self, name) > 0:
                problems.append(f"{name} > 0 must hold, but got {getattr(self, name)}")
        for name in ("lambda_sim", "margin", "lambda_reg"):
            if getattr(self, name) < 0:
                problems.append(f"{name} >= 0 must hold, but got {getattr(self, name)}")
        if not 0 <= self.explore_ratio < 1:
            problems.append(f"0 <= explore_ratio < 1 must hold, but got {self.explore_ratio}")
        if not 0 <= self.dropout < 1:
            problems.append(f"0 <= dropout < 1 must hold, but got {self.dropout}")
        if not 0 <= self.prior_weight <= 1:
            problems.append(f"0 <= prior_weight <= 1 must hold, but got {self.prior_weight}")
        if len(self.mix) != 3 or min(self.mix) < 0 or self.mix[0] <= 0:
            problems.append(f"mix = (offline > 0, past >= 0, current >= 0) must hold, but got {self.mix}")
        if problems:
            raise ValueError("invalid RankerSettings: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["mix"] = list(self.mix)
        return out

    @classmethod
    def from_dict(cls, payload: Mapping[str, Any]) -> RankerSettings:
        values = dict(payload)
        if "mix" in values:
            values["mix"] = tuple(float(v) for v in values["mix"])
        return cls(**values)


# ----------------------------------------------------------------------------------------------------------
# The ranker


class PerformanceRanker:
    """Scores configs for a dataset from its meta-features; learns offline, then online (Algorithm 1).

    Args:
        feature_names: the meta-features the dataset encoder reads, in order.
        config_kind: ``"vector"`` (HPO: MLP encoder) or ``"graph"`` (NAS: GIN encoder).
        config_dim: length of an HPO vector, or node-feature width of an architecture graph.
        settings: hyper-parameters (Table 6 defaults).
        seed: seeds the initialisation and every batch draw.

    Example:
        >>> ranker = PerformanceRanker(["n_faces", "brightness"], config_kind="vector", config_dim=6)
        >>> ranker.add_configs({"a": vec_a, "b": vec_b})
        >>> ranker.fit_offline([TaskResults("wider-0", {...}, {"a": 0.81, "b": 0.77}), ...])
        >>> ranker.suggest({"n_faces": 3.0, "brightness": 0.2}, ["a", "b"], budget=1)
        ['a']
    """

    def __init__(
        self,
        feature_names: Sequence[str],
        *,
        config_kind: str,
        config_dim: int,
        settings: RankerSettings | None = None,
        seed: int = 0,
    ) -> None:
        if config_kind not in ("vector", "graph"):
            raise ValueError(f"config_kind must be 'vector' or 'graph', got {config_kind!r}")
        if not feature_names:
            raise ValueError("feature_names must name at least one meta-feature")
        self.feature_names = list(feature_names)
        self.config_kind = config_kind
        self.config_dim = int(config_dim)
        self.settings = settings or RankerSettings()
        self.seed = int(seed)
        import torch  # here, after the argument checks: bad arguments are reported even without torch

        torch.manual_seed(self.seed)
        self.net = nets().RankerNet(len(self.feature_names), self.config_dim, config_kind, self.settings)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=self.settings.lr)
        self._configs: dict[str, Any] = {}  # key -> vector (D,) or graph (x (N, F), adj (N, N))
        self._mean = np.zeros(len(self.feature_names))
        self._std = np.ones(len(self.feature_names))
        self.offline: list[TaskResults] = []
        self.past: list[dict[str, Any]] = []  # {"dataset_id", "z" (standardised, F floats), "results"}
        self.tasks_seen = 0
        self.steps = 0  # batches drawn so far: with the seed, fixes every later draw
        self._offline_corr: np.ndarray = np.zeros((0, 0))
        self._offline_z = np.zeros((0, len(self.feature_names)), dtype=np.float32)
        self._offline_partners: list[list[int] | None] = []
        self._si = _SynapticIntelligence(self.net, self.settings.si_damping, self.settings.lambda_reg)

    # -- configs and features --------------------------------------------------------------------------------
    def add_configs(self, encodings: Mapping[str, Any]) -> None:
        """Register config encodings by key (HPO vectors ``(D,)`` or graphs ``(x (N, F), adj (N, N))``)."""
        for key, enc in encodings.items():
            self._configs[key] = self._check_encoding(key, enc)

    def _check_encoding(self, key: str, enc: Any) -> Any:
        if self.config_kind == "vector":
            vec = np.asarray(enc, dtype=np.float32).reshape(-1)
            if vec.shape != (self.config_dim,):
                raise ValueError(f"config {key!r}: vector of length {self.config_dim} expected, got {vec.shape}")
            return vec
        x, adj = (np.asarray(a, dtype=np.float32) for a in enc)
        if x.ndim != 2 or x.shape[1] != self.config_dim or adj.shape != (x.shape[0], x.shape[0]):
            raise ValueError(
                f"config {key!r}: graph (x (N, {self.config_dim}), adj (N, N)) expected, got {x.shape}, {adj.shape}"
            )
        return x, adj

    def _z(self, features: Mapping[str, float]) -> np.ndarray:
        missing = [n for n in self.feature_names if n not in features]
        if missing:
            raise ValueError(f"meta-features {missing} are missing; the ranker reads {self.feature_names}")
        raw = np.array([float(features[n]) for n in self.feature_names])
        return np.clip((raw - self._mean) / self._std, -5.0, 5.0).astype(np.float32)  # (F,)

    def _config_batch(self, keys: Sequence[str]) -> Any:
        import torch
        unknown = [k for k in keys if k not in self._configs]
        if unknown:
            raise KeyError(f"configs {unknown[:3]} were never registered with add_configs")
        if self.config_kind == "vector":
            return torch.from_numpy(np.stack([self._configs[k] for k in keys]))  # (C, D)
        n = max(self._configs[k][0].shape[0] for k in keys)
        x = np.zeros((len(keys), n, self.config_dim), dtype=np.float32)  # (C, N, F)
        adj = np.zeros((len(keys), n, n), dtype=np.float32)  # (C, N, N)
        mask = np.zeros((len(keys), n), dtype=np.float32)  # (C, N)
        for i, k in enumerate(keys):
            gx, gadj = self._configs[k]
            x[i, : len(gx)] = gx
            adj[i, : len(gx), : len(gx)] = gadj
            mask[i, : len(gx)] = 1
        return torch.from_numpy(x), torch.from_numpy(adj), torch.from_numpy(mask)

    # -- inference -----------------------------------------------------------------------------------------
    def score(self, features: Mapping[str, float], keys: Sequence[str]) -> np.ndarray:
        """F(d, c) for every key (higher = predicted better); shape ``(len(keys),)``."""
        import torch
        self.net.eval()
        with torch.no_grad():
            e = self.net.dataset(torch.from_numpy(self._z(features)))
            s = self.net.score(e, self.net.encode_configs(self._config_batch(list(keys))))
        self.net.train()
        return s.numpy().astype(np.float64)

    def suggest(self, features: Mapping[str, float], keys: Sequence[str], budget: int) -> list[str]:
        """The B configs to evaluate: the top ``(1 - explore_ratio) B`` by score, the rest drawn from the
        ranker's top half of the pool (Table 6's exploration-exploitation ratio). Deterministic in the seed,
        the pool and the number of tasks seen."""
        keys = list(keys)
        budget = min(int(budget), len(keys))
        scores = self.score(features, keys)
        if self.settings.prior_weight > 0:
            w = self.settings.prior_weight
            scores = (1.0 - w) * _quantiles(scores) + w * self.prior(keys)
        order = [keys[i] for i in np.lexsort((np.arange(len(keys)), -scores))]  # best first, stable
        exploit = max(1, budget - int(math.floor(self.settings.explore_ratio * budget)))
        chosen = order[:exploit]
        rest = order[exploit : max(len(keys) // 2, budget)]
        rng = np.random.default_rng([self.seed, _EXPLORE_SALT, self.tasks_seen])
        extra = rng.choice(len(rest), size=budget - exploit, replace=False) if budget > exploit else []
        return chosen + [rest[int(i)] for i in sorted(extra)]

    def prior(self, keys: Sequence[str]) -> np.ndarray:
        """The dataset-free prior of each config: its mean quantile over the datasets it was evaluated on.

        Every offline dataset and every online dataset seen so far counts once; a config's quantile in a
        dataset is the share of that dataset's other evaluated configs it beats (1 = its best, ties count
        half). A config no dataset has evaluated gets 0.5. Shape ``(len(keys),)``.
        """
        sums, counts = np.zeros(len(keys)), np.zeros(len(keys))
        index = {k: i for i, k in enumerate(keys)}
        for results in [t.results for t in self.offline] + [p["results"] for p in self.past]:
            finite = {k: float(v) for k, v in results.items() if math.isfinite(float(v))}
            if len(finite) < 2:
                continue
            for k, q in zip(finite, _quantiles(np.array(list(finite.values())))):
                if k in index:
                    sums[index[k]] += q
                    counts[index[k]] += 1
        return np.where(counts > 0, sums / np.maximum(counts, 1), 0.5)

    def embed(self, features: Mapping[str, float]) -> np.ndarray:
        """The dataset embedding e_d, shape ``(hidden,)``."""
        import torch
        with torch.no_grad():
            return self.net.dataset(torch.from_numpy(self._z(features))).numpy()

    # -- warm-up on S_offline --------------------------------------------------------------------------------
    def fit_offline(self, tasks: Sequence[TaskResults]) -> list[float]:
        """theta <- argmin L_total(F; S_offline) (Algorithm 1, warm-up); returns the loss per batch.

        Sets the feature standardisation from these datasets and computes their mutual ranking correlations
        (for the triplet loss). The warm-up is SI's first task.
        """
        usable = [t for t in tasks if len(t.results) >= 2]
        if len(usable) < 2:
            raise ValueError(
                f"the offline warm-up needs >= 2 datasets with >= 2 evaluated configs each, got {len(usable)}; "
                "build the offline benchmark first (facenas benchmark build CONFIG)"
            )
        for t in usable:
            self._config_batch(list(t.results))  # every config known
        raw = np.array([[float(t.features[n]) for n in self.feature_names] for t in usable])  # (T, F)
        self._mean = raw.mean(axis=0)
        self._std = np.where(raw.std(axis=0) > 1e-8, raw.std(axis=0), 1.0)
        self.offline = [TaskResults(t.dataset_id, dict(t.features), dict(t.results)) for t in usable]
        self._offline_corr = self._correlations()
        self._offline_z = np.stack([self._z(t.features) for t in self.offline])  # (T, F)
        self._offline_partners = [self._partners_of(t.results, i) for i, t in enumerate(self.offline)]
        for group in self.optimizer.param_groups:
            group["lr"] = self.settings.warmup_lr
        losses = [self._seeded(self._step, None) for _ in range(self.settings.warmup_steps)]
        for group in self.optimizer.param_groups:
            group["lr"] = self.settings.lr
        self._si.consolidate()
        return losses

    def _correlations(self) -> np.ndarray:
        n = len(self.offline)
        corr = np.zeros((n, n))
        for i in range(n):
            for j in range(i + 1, n):
                corr[i, j] = corr[j, i] = shared_corr(self.offline[i].results, self.offline[j].results)
        return corr

    # -- online update (Algorithm 1, training) -----------------------------------------------------------
    def observe(self, dataset_id: str, features: Mapping[str, float], results: Mapping[str, float]) -> list[float]:
        """Learn from the B evaluated configs of the new dataset d_t; returns the loss per batch.

        N_iters batches, each preceded by N_trans transformation steps on the stored features of the past
        tasks; then SI consolidates and the task joins S_past (its meta-features and results only).
        """
        if not self.offline:
            raise RuntimeError("observe() before fit_offline(): the ranker needs its warm-up first")
        results = {k: float(v) for k, v in results.items() if math.isfinite(float(v))}
        self._config_batch(list(results))
        current = {
            "dataset_id": dataset_id,
            "z": self._z(features).tolist(),
            "results": results,
            "partners": self._partners_of(results),
        }
        losses = []
        for _ in range(self.settings.iters_per_task):
            losses.append(self._seeded(self._transform_and_step, current))
        self._si.consolidate()
        self.past.append(current)
        self.tasks_seen += 1
        return losses

    def _seeded(self, fn: Any, *args: Any) -> float:
        import torch
        # Dropout draws from torch's global generator: fork it and seed by (seed, step), so a restored
        # ranker continues bit-identically and nobody else's random stream is disturbed.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(np.random.default_rng([self.seed, _DROPOUT_SALT, self.steps]).integers(2**62)))
            return fn(*args)

    def _transform_and_step(self, current: dict[str, Any]) -> float:
        self._transform_past()
        return self._step(current)

    def _transform_past(self) -> None:
        """Z^(u) <- Z^(u) - eta_z grad L_trans(Z^(u); D_offline) for every past task, N_trans times.

        The ranker is fixed meanwhile (eval mode), so config and offline embeddings are computed once;
        the tasks' losses are independent, so one gradient of their sum moves every Z^(u) at once.
        """
        import torch
        from torch.nn import functional as nnf
        if not self.past or self.settings.trans_iters == 0:
            return
        self.net.eval()
        width = max(len(t["results"]) for t in self.past)
        u_count = len(self.past)
        ap = torch.zeros(u_count, width)  # (U, C) padded
        valid = torch.zeros(u_count, width, dtype=torch.bool)  # (U, C)
        with torch.no_grad():
            e_off = self.net.dataset(torch.from_numpy(self._offline_z))  # (T, H)
            h = torch.zeros(u_count, width, self.settings.hidden)  # (U, C, H)
            for u, t in enumerate(self.past):
                n = len(t["results"])
                h[u, :n] = self.net.encode_configs(self._config_batch(list(t["results"])))
                ap[u, :n] = torch.tensor(list(t["results"].values()), dtype=torch.float32)
                valid[u, :n] = True
        better = (ap.unsqueeze(2) - ap.unsqueeze(1) > 1e-9) & valid.unsqueeze(2) & valid.unsqueeze(1)  # (U, C, C)
        pairs = better.sum(dim=(1, 2)).clamp(min=1)  # (U,)
        has = torch.tensor([t["partners"] is not None for t in self.past])  # (U,)
        pos = torch.tensor([t["partners"][0] if t["partners"] else 0 for t in self.past])  # (U,)
        neg = torch.tensor([t["partners"][1] if t["partners"] else 0 for t in self.past])  # (U,)
        z = torch.tensor([t["z"] for t in self.past], dtype=torch.float32)  # (U, F)
        for _ in range(self.settings.trans_iters):
            z.requires_grad_(True)
            e = self.net.dataset(z)  # (U, H)
            ee = e.unsqueeze(1).expand_as(h)  # (U, C, H)
            s = self.net.head(torch.cat([ee, h, ee * h], dim=2)).squeeze(2)  # (U, C)
            diff = s.unsqueeze(1) - s.unsqueeze(2)  # (U, C, C): [u, i, j] = s_j - s_i
            rank = (nnf.softplus(diff) * better).sum(dim=(1, 2)) / pairs  # (U,)
            triplet = nnf.relu((e - e_off[pos]).norm(dim=1) - (e - e_off[neg]).norm(dim=1) + self.settings.margin)
            loss = (rank + self.settings.lambda_sim * triplet * has).sum()
            (grad,) = torch.autograd.grad(loss, z)
            z = (z - self.settings.lr * grad).detach()
        self.net.train()
        for task, row in zip(self.past, z.tolist()):
            task["z"] = row

    def _step(self, current: dict[str, Any] | None) -> float:
        """One Adam step on a batch mixing S_offline : S_past : S (Table 6), plus the SI term."""
        import torch
        rng = np.random.default_rng([self.seed, _BATCH_SALT, self.steps])
        self.steps += 1
        weights = np.array(self.settings.mix, dtype=np.float64)
        if not self.past:
            weights[1] = 0
        if current is None:
            weights[2] = 0
        weights /= weights.sum()
        e_off = self.net.dataset(torch.from_numpy(self._offline_z))  # (T, H): triplet partners
        loss = torch.zeros(())
        for _ in range(self.settings.batch_size):
            source = int(rng.choice(3, p=weights))
            if source == 0:
                index = int(rng.integers(len(self.offline)))
                results = self.offline[index].results
                keys = list(results)
                if len(keys) > self.settings.configs_per_item:
                    picked = np.sort(rng.choice(len(keys), self.settings.configs_per_item, replace=False))
                    keys = [keys[int(i)] for i in picked]
                e, partners = e_off[index], self._offline_partners[index]
            else:
                task = self.past[int(rng.integers(len(self.past)))] if source == 1 else current
                results, keys, partners = task["results"], list(task["results"]), task["partners"]
                e = self.net.dataset(torch.tensor(task["z"], dtype=torch.float32))  # (H,)
            h = self.net.encode_configs(self._config_batch(keys))  # (C, H)
            ap = torch.tensor([results[k] for k in keys], dtype=torch.float32)  # (C,)
            loss = loss + self._item_loss(e, h, ap, partners, e_off)
        loss = loss / self.settings.batch_size
        self.optimizer.zero_grad()
        total = loss + self.settings.lambda_reg * self._si.penalty()
        total.backward()
        self._si.accumulate_before_step()
        self.optimizer.step()
        self._si.accumulate_after_step()
        return float(loss.detach())

    def _item_loss(
        self, e: torch.Tensor, h: torch.Tensor, ap: torch.Tensor, partners: Sequence[int] | None, e_off: torch.Tensor
    ) -> torch.Tensor:
        """L_rank over one dataset's configs + lambda_sim * L_triplet on its embedding.

        Args:
            e: the dataset's embedding, (H,).
            h: its configs' embeddings, (C, H).
            ap: their validation APs, (C,).
            partners: (positive, negative) offline indices for the triplet, or None.
            e_off: embeddings of the offline datasets, (T, H).
        """
        import torch
        from torch.nn import functional as nnf

        s = self.net.score(e, h)  # (C,)
        better = (ap.unsqueeze(1) - ap.unsqueeze(0)) > 1e-9  # (C, C): [i, j] = c_i beats c_j
        loss = torch.zeros(())
        if better.any():
            diff = s.unsqueeze(0) - s.unsqueeze(1)  # (C, C): [i, j] = s_j - s_i
            loss = nnf.softplus(diff[better]).mean()
        if partners is not None and self.settings.lambda_sim > 0:
            pos, neg = partners
            triplet = nnf.relu(torch.norm(e - e_off[pos]) - torch.norm(e - e_off[neg]) + self.settings.margin)
            loss = loss + self.settings.lambda_sim * triplet
        return loss

    def _partners_of(self, results: Mapping[str, float], exclude: int | None = None) -> list[int] | None:
        """(positive, negative): the offline datasets whose config rankings correlate most and least."""
        if exclude is not None:
            corr = self._offline_corr[exclude].copy()
            corr[exclude] = np.nan
        else:
            corr = np.array([shared_corr(results, t.results, minimum=3) for t in self.offline])
        if np.all(np.isnan(corr)) or np.nanmax(corr) == np.nanmin(corr):
            return None
        return [int(np.nanargmax(corr)), int(np.nanargmin(corr))]

    # -- state (plain JSON) ---------------------------------------------------------------------------------
    def get_state(self) -> dict[str, Any]:
        """Everything to continue exactly: parameters, Adam and SI buffers, standardisation, tasks."""
        return {
            "settings": self.settings.to_dict(),
            "feature_names": self.feature_names,
            "config_kind": self.config_kind,
            "config_dim": self.config_dim,
            "seed": self.seed,
            "mean": self._mean.tolist(),
            "std": self._std.tolist(),
            "offline": [asdict(t) for t in self.offline],
            "offline_corr": [[v if math.isfinite(v) else None for v in row] for row in self._offline_corr.tolist()],
            "past": self.past,
            "tasks_seen": self.tasks_seen,
            "steps": self.steps,
            "params": {k: _tensor_json(v) for k, v in self.net.state_dict().items()},
            "adam": _adam_json(self.optimizer),
            "si": self._si.get_state(),
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> PerformanceRanker:
        """Inverse of :meth:`get_state` (config encodings are registered again by the caller)."""
        ranker = cls(
            state["feature_names"],
            config_kind=state["config_kind"],
            config_dim=state["config_dim"],
            settings=RankerSettings.from_dict(state["settings"]),
            seed=state["seed"],
        )
        ranker._mean = np.asarray(state["mean"], dtype=np.float64)
        ranker._std = np.asarray(state["std"], dtype=np.float64)
        ranker.offline = [TaskResults(**t) for t in state["offline"]]
        corr = [[math.nan if v is None else v for v in row] for row in state["offline_corr"]]  # None = too few shared
        ranker._offline_corr = np.asarray(corr, dtype=np.float64).reshape(len(ranker.offline), -1)
        ranker._offline_z = np.stack([ranker._z(t.features) for t in ranker.offline])
        ranker._offline_partners = [ranker._partners_of(t.results, i) for i, t in enumerate(ranker.offline)]
        ranker.past = [dict(p) for p in state["past"]]
        ranker.tasks_seen = int(state["tasks_seen"])
        ranker.steps = int(state["steps"])
        ranker.net.load_state_dict({k: _tensor_from(v) for k, v in state["params"].items()})
        _adam_load(ranker.optimizer, state["adam"])
        ranker._si.set_state(state["si"])
        return ranker

    def parameters_vector(self) -> np.ndarray:
        """All parameters flattened (for tests and diagnostics)."""
        import torch
        return torch.cat([p.detach().reshape(-1) for p in self.net.parameters()]).numpy()


# ----------------------------------------------------------------------------------------------------------
# Synaptic intelligence (Zenke et al. 2017)


class _SynapticIntelligence:
    """Per-parameter importance Omega from the path integral of the unregularised loss's gradient."""

    def __init__(self, net: nn.Module, damping: float, weight: float) -> None:
        import torch
        self.net = net
        self.damping = damping
        self.weight = weight  # lambda_reg: to remove the penalty's own gradient from the path integral
        self.params = dict(net.named_parameters())
        self.omega = {n: torch.zeros_like(p) for n, p in self.params.items()}  # running path integral
        self.importance = {n: torch.zeros_like(p) for n, p in self.params.items()}  # Omega
        self.anchor = {n: p.detach().clone() for n, p in self.params.items()}  # theta* of the last task
        self.start = {n: p.detach().clone() for n, p in self.params.items()}  # theta at this task's start
        self._before: dict[str, torch.Tensor] = {}
        self._grad: dict[str, torch.Tensor] = {}

    def penalty(self) -> torch.Tensor:
        import torch
        total = torch.zeros(())
        for n, p in self.params.items():
            total = total + (self.importance[n] * (p - self.anchor[n]) ** 2).sum()
        return total

    def accumulate_before_step(self) -> None:
        import torch
        # The gradient of the loss without the SI term: subtract the penalty's own gradient analytically.
        lam = self.weight
        for n, p in self.params.items():
            g = p.grad.detach() if p.grad is not None else torch.zeros_like(p)
            self._grad[n] = g - 2 * lam * self.importance[n] * (p.detach() - self.anchor[n])
            self._before[n] = p.detach().clone()

    def accumulate_after_step(self) -> None:
        for n, p in self.params.items():
            self.omega[n] -= self._grad[n] * (p.detach() - self._before[n])

    def consolidate(self) -> None:
        """End of a task: Omega += omega / (Delta^2 + xi); theta* <- theta; restart the path integral."""
        from torch.nn import functional as nnf
        for n, p in self.params.items():
            delta = p.detach() - self.start[n]
            self.importance[n] += nnf.relu(self.omega[n]) / (delta**2 + self.damping)
            self.anchor[n] = p.detach().clone()
            self.start[n] = p.detach().clone()
            self.omega[n].zero_()

    def get_state(self) -> dict[str, Any]:
        return {
            name: {n: _tensor_json(t) for n, t in getattr(self, name).items()}
            for name in ("omega", "importance", "anchor", "start")
        }

    def set_state(self, state: Mapping[str, Any]) -> None:
        for name in ("omega", "importance", "anchor", "start"):
            setattr(self, name, {n: _tensor_from(v) for n, v in state[name].items()})


# ----------------------------------------------------------------------------------------------------------
# Exact JSON round-trip of tensors (float32 -> Python float is exact, and back)


def _quantiles(values: np.ndarray) -> np.ndarray:
    """Each value's share of the others it exceeds (ties count half): 1 = the largest, 0 = the smallest."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) < 2:
        return np.full(len(values), 0.5)
    above = (values[:, None] > values[None, :]).sum(axis=1)
    ties = (values[:, None] == values[None, :]).sum(axis=1) - 1
    return (above + 0.5 * ties) / (len(values) - 1)


def _tensor_json(t: torch.Tensor) -> dict[str, Any]:
    t = t.detach().cpu()
    return {"shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch."), "data": t.reshape(-1).tolist()}


def _tensor_from(payload: Mapping[str, Any]) -> torch.Tensor:
    import torch
    dtype = getattr(torch, payload["dtype"])
    return torch.tensor(payload["data"], dtype=dtype).reshape(payload["shape"])


def _adam_json(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    import torch
    sd = optimizer.state_dict()
    return {
        "state": {
            str(i): {k: _tensor_json(v) if torch.is_tensor(v) else v for k, v in s.items()}
            for i, s in sd["state"].items()
        },
        "param_groups": sd["param_groups"],
    }


def _adam_load(optimizer: torch.optim.Optimizer, payload: Mapping[str, Any]) -> None:
    state = {
        int(i): {k: _tensor_from(v) if isinstance(v, dict) and "data" in v else v for k, v in s.items()}
        for i, s in payload["state"].items()
    }
    groups = [dict(g, betas=tuple(g["betas"])) if "betas" in g else dict(g) for g in payload["param_groups"]]
    optimizer.load_state_dict({"state": state, "param_groups": groups})
