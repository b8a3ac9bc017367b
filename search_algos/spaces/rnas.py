"""The RNAS-MER space: an OPEN path over four resolutions and one refined hybrid cell (pure numpy).

Paper: ``rnas-mer-micro-expression-nas.txt`` (in ``shared/papers``): §3.1.1 and Table 1 (the 14 hybrid
operations), §3.2.1 Eq. 1-5 (cell: partial channels, edge normalisation eta, attention), §3.2.2 Eq. 6-8
(OPEN outer space, beta), Algorithm 2 (Viterbi decode of the path). DESIGN.md §1 fixes what the paper
leaves open: N = 4 nodes, cell = top-2 inputs by ``softmax(alpha) * softmax(eta)`` excluding ``none``.

Semantics (``trainables.microexpr.model`` builds networks from them):

- Layer 0 is the stem, at level 0. Cells ``k = 0..L-1`` (layer ``k + 1``) each sit at a level ``j``;
  level ``j`` has down-sampling factor ``2 ** (j + 1)`` (``{2, 4, 8, 16}`` for four levels).
  Reductions are spatial (strided 3D convolutions, stride ``(1, 2, 2)``): clips have few frames.
- A state ``(layer m, level j)`` receives from ``(m - 1, j)`` ("stay", ``s -> s``) and from
  ``(m - 1, j - 1)`` ("down", ``s/2 -> s``, a strided reduction), where those states exist
  (``j <= min(m, levels - 1)``). A path therefore starts at level 0 or 1 and goes down by at most one
  level per cell, never up (Eq. 6).
- ``beta`` has shape ``(L, levels, 2)``: ``beta[k, j, 0]`` is the logit of "stay" into state
  ``(k + 1, j)``, ``beta[k, j, 1]`` that of "down". :func:`path_weights` normalises them with a softmax
  (Eq. 7-8: non-negative, summing to one) over each source state's outgoing edges (Eq. 7 as written;
  default; the deepest level's "down" is an exit out of the space) or each target state's incoming
  edges (see :func:`path_weights` for why that reading makes Algorithm 2 degenerate); absent edges
  weigh 0.
- The cell has ``N`` nodes; node ``n`` receives from inputs ``0, 1`` (the cell's two inputs, the previous
  state and the one before it) and ``2 .. n + 1`` (earlier nodes). Edges are ordered by node, then input
  (:func:`cell_edges`); ``alpha`` is ``(E, |ops|)``, ``eta`` is ``(E,)``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from search_algos.spaces.base import Encoded, InvalidArchitecture, SearchSpace

__all__ = [
    "DARTS_OPS",
    "EXIT",
    "HYBRID_OPS",
    "OP_SETS",
    "RnasGenotype",
    "RnasSpace",
    "architecture_entropy",
    "cell_edges",
    "decode_cell",
    "decode_genotype",
    "path_weights",
    "transition_groups",
    "viterbi_path",
]

# Table 1, in the paper's order: Add / Max / Avg of two 3D convolutions nu_e (e x e x e), single
# convolutions, skip and none.
HYBRID_OPS: tuple[str, ...] = (
    "add_1_3", "add_3_5", "add_1_5", "max_1_3", "max_3_5", "max_1_5", "avg_1_3", "avg_3_5", "avg_1_5",
    "conv_1", "conv_3", "conv_5", "skip", "none",
)  # fmt: skip
# The eight DARTS operations in 3D (ablations RNAS-MER_1 and _2, Table 3).
DARTS_OPS: tuple[str, ...] = (
    "none", "max_pool_3", "avg_pool_3", "skip", "sep_conv_3", "sep_conv_5", "dil_conv_3", "dil_conv_5",
)  # fmt: skip
OP_SETS: dict[str, tuple[str, ...]] = {"hybrid": HYBRID_OPS, "darts": DARTS_OPS}


def cell_edges(nodes: int) -> list[tuple[int, int]]:
    """``(node, input)`` of every edge of the cell, ordered by node then input; inputs 0, 1 = cell inputs."""
    return [(n, i) for n in range(nodes) for i in range(n + 2)]


def _softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    z = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return z / np.sum(z, axis=axis, keepdims=True)


def _edge_exists(layer: int, level: int, kind: int, levels: int) -> bool:
    """Does the "stay" (kind 0) or "down" (kind 1) edge into state (layer, level) exist? layer >= 1."""
    source = level - kind
    return 0 <= source <= min(layer - 1, levels - 1) and level <= levels - 1


def path_weights(beta: np.ndarray, normalisation: str = "outgoing") -> np.ndarray:
    """Eq. 7-8: non-negative transition weights from the logits ``beta``; 0 for absent edges.

    ``outgoing`` (default) reads Eq. 7 as written: for every source state ``s`` of layer ``m`` the
    weights of its edges ``s -> s`` and ``s -> 2s`` sum to one (as in Auto-DeepLab). Eq. 7 holds for
    *every* ``s``, so the deepest level keeps its pair too: its "down" edge leads out of the space (an
    exit with the constant logit 0, :data:`EXIT`), and its "stay" weight is ``sigmoid(beta)``, learnt like
    any other. Without the exit a path that reached the deepest level would continue at weight 1 and
    Algorithm 2 would favour going down as early as possible (measured: 4-8-16-16-16-16 on every seed).
    ``incoming`` is the reading of an earlier DESIGN.md: each target state's incoming edges sum to one,
    making Eq. 6 a convex combination; a state with one incoming edge (level 0, the diagonal) then always
    has weight 1 and Algorithm 2 ties those paths.

    Args:
        beta: ``(L, levels, 2)`` logits of (stay, down) into state ``(k + 1, j)``.
        normalisation: ``outgoing`` or ``incoming``.

    Returns:
        ``(L, levels, 2)`` weights indexed like ``beta``. Under ``outgoing`` the weights of all paths plus
        the exits sum to one.
    """
    beta = np.asarray(beta, dtype=np.float64)
    if beta.ndim != 3 or beta.shape[2] != 2:
        raise ValueError(f"beta must have shape (cells, levels, 2), got {beta.shape}")
    levels = beta.shape[1]
    out = np.zeros_like(beta)
    for k, group in transition_groups(beta.shape[0], levels, normalisation):
        weights = _softmax(np.array([beta[k, t, kind] if t < levels else EXIT for t, kind in group]))
        for (t, kind), w in zip(group, weights):
            if t < levels:
                out[k, t, kind] = w
    return out


EXIT = 0.0
"""Logit of the exit edge out of the deepest level (Eq. 7 under ``outgoing``; softmax is shift-invariant,
so a constant loses nothing against a learnt logit)."""


def transition_groups(cells: int, levels: int, normalisation: str) -> list[tuple[int, list[tuple[int, int]]]]:
    """The groups of edges each softmax of Eq. 7 runs over: ``(k, [(target level, kind), ...])``.

    Under ``outgoing`` the group of a deepest-level state ends with ``(levels, 1)``: the exit edge, whose
    logit is :data:`EXIT` (it has no entry in ``beta``).
    """
    if normalisation not in ("outgoing", "incoming"):
        raise ValueError(f"normalisation must be 'outgoing' or 'incoming', got {normalisation!r}")
    groups = []
    for k in range(cells):
        for j in range(levels):
            if normalisation == "incoming":  # edges into (k + 1, j)
                group = [(t, kind) for t, kind in [(j, 0), (j, 1)] if _edge_exists(k + 1, t, kind, levels)]
            elif not _edge_exists(k + 1, j, 0, levels):  # (k, j) cannot be reached
                group = []
            else:  # edges out of (k, j): stay into (k + 1, j), down into (k + 1, j + 1) or the exit
                group = [(j, 0), (j + 1, 1)]
            if group:
                groups.append((k, group))
    return groups


def viterbi_path(beta: np.ndarray, normalisation: str = "outgoing") -> tuple[tuple[int, ...], float]:
    """Algorithm 2: the path of maximum product of normalised betas, and that probability.

    ``P_0`` is 1 at level 0 (the stem). ``P_m^j = max(P_{m-1}^{j-1} w_down, P_{m-1}^j w_stay)``; the path
    ends at the level of largest ``P_L`` (ties: the lower level, then "stay") and is traced back.

    Returns:
        ``(levels of cells 0..L-1, probability)``.
    """
    weights = path_weights(beta, normalisation)
    cells, levels, _ = weights.shape
    prob = np.full(levels, -np.inf)
    prob[0] = 0.0  # log P at the stem
    back = np.zeros((cells, levels), dtype=np.int64)  # the level each state came from
    with np.errstate(divide="ignore"):
        logw = np.log(weights)
    for k in range(cells):
        new = np.full(levels, -np.inf)
        for j in range(levels):
            for kind in (0, 1):  # stay first: it wins ties
                if not _edge_exists(k + 1, j, kind, levels):
                    continue
                score = prob[j - kind] + logw[k, j, kind]
                if score > new[j]:
                    new[j], back[k, j] = score, j - kind
        prob = new
    level = int(np.argmax(prob))  # first maximum: the lower level on ties
    best = float(math.exp(prob[level]))
    path = [level]
    for k in range(cells - 1, 0, -1):
        level = int(back[k, level])
        path.append(level)
    return tuple(reversed(path)), best


def decode_cell(alpha: np.ndarray, eta: np.ndarray, ops: tuple[str, ...], nodes: int) -> tuple[tuple[tuple[int, str], ...], ...]:
    """Each node keeps its two strongest inputs by ``softmax(alpha) * softmax(eta)``, never ``none``.

    An edge's strength is the largest weight of a non-``none`` operation on it times its edge weight
    (softmax of eta over the node's incoming edges); that operation is the one kept. Ties go to the
    lower input index, then the earlier operation.

    Args:
        alpha: ``(E, |ops|)`` operation logits, edges as :func:`cell_edges`.
        eta: ``(E,)`` edge logits (all zeros without edge normalisation).
        ops: the operation names (columns of alpha).
        nodes: N.

    Returns:
        For each node, ``((input, op), (input, op))`` sorted by input.
    """
    edges = cell_edges(nodes)
    alpha = np.asarray(alpha, dtype=np.float64)
    eta = np.asarray(eta, dtype=np.float64)
    if alpha.shape != (len(edges), len(ops)) or eta.shape != (len(edges),):
        raise ValueError(
            f"alpha must be ({len(edges)}, {len(ops)}) and eta ({len(edges)},) for {nodes} nodes, "
            f"got {alpha.shape} and {eta.shape}"
        )
    keep = np.array([op != "none" for op in ops])
    op_w = _softmax(alpha, axis=1)
    genes = []
    start = 0
    for n in range(nodes):
        count = n + 2
        edge_w = _softmax(eta[start:start + count])
        candidates = []
        for i in range(count):
            row = np.where(keep, op_w[start + i], -np.inf)
            best_op = int(np.argmax(row))
            candidates.append((-(row[best_op] * edge_w[i]), i, ops[best_op]))
        top = sorted(candidates)[:2]
        genes.append(tuple(sorted((i, op) for _, i, op in top)))
        start += count
    return tuple(genes)


@dataclass(frozen=True)
class RnasGenotype(Encoded):
    """A decoded RNAS-MER network: the OPEN path and the (shared) cell.

    Attributes:
        path: level of each cell (``0 .. levels - 1``; down-sampling ``2 ** (level + 1)``).
        cell: for each node, two ``(input, op)`` pairs; inputs 0 and 1 are the cell's inputs (previous
            state, the one before), ``n + 1`` is node ``n - 1``'s output.
        ops: the operation set the cell was searched over (``hybrid`` or ``darts``).
        attention: the cell ends in spatio-temporal attention (Eq. 3-4).
        levels: number of resolutions of the outer space.
    """

    path: tuple[int, ...]
    cell: tuple[tuple[tuple[int, str], ...], ...]
    ops: str = "hybrid"
    attention: bool = True
    levels: int = 4

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", tuple(int(p) for p in self.path))
        object.__setattr__(self, "cell", tuple(tuple((int(i), str(op)) for i, op in node) for node in self.cell))
        if self.ops not in OP_SETS:
            raise InvalidArchitecture(f"ops must be one of {sorted(OP_SETS)}, got {self.ops!r}")
        if not self.path:
            raise InvalidArchitecture("path must name the level of at least one cell")
        previous = 0
        for k, level in enumerate(self.path):
            if not 0 <= level < self.levels or level - previous not in (0, 1):
                raise InvalidArchitecture(
                    f"path must start at level 0 or 1 and go down by at most one level per cell within "
                    f"0..{self.levels - 1}, got {list(self.path)} (cell {k})"
                )
            previous = level
        if not self.cell:
            raise InvalidArchitecture("cell must have at least one node")
        names = OP_SETS[self.ops]
        for n, node in enumerate(self.cell):
            inputs = [i for i, _ in node]
            if len(node) != 2 or len(set(inputs)) != 2 or not all(0 <= i <= n + 1 for i in inputs):
                raise InvalidArchitecture(
                    f"node {n} must have two distinct inputs in 0..{n + 1}, got {list(node)}"
                )
            for _, op in node:
                if op not in names or op == "none":
                    raise InvalidArchitecture(f"node {n}: op {op!r} is not a kept operation of the {self.ops} set")

    @property
    def nodes(self) -> int:
        return len(self.cell)

    def to_dict(self) -> dict[str, Any]:
        return {"space": "rnas", "path": list(self.path), "cell": [[list(g) for g in node] for node in self.cell],
                "ops": self.ops, "attention": self.attention, "levels": self.levels}

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> RnasGenotype:
        if not isinstance(payload, dict) or "path" not in payload or "cell" not in payload:
            raise InvalidArchitecture("an RNAS genotype needs 'path' and 'cell'")
        return cls(
            path=tuple(payload["path"]), cell=tuple(tuple(tuple(g) for g in node) for node in payload["cell"]),
            ops=payload.get("ops", "hybrid"), attention=bool(payload.get("attention", True)),
            levels=int(payload.get("levels", 4)),
        )

    @classmethod
    def from_json(cls, text: str | dict[str, Any]) -> RnasGenotype:
        return cls.from_dict(json.loads(text) if isinstance(text, str) else text)

    def summary(self) -> str:
        scales = "-".join(str(2 ** (p + 1)) for p in self.path)
        cell = " ".join(f"n{n}:" + ",".join(f"{op}<{i}" for i, op in node) for n, node in enumerate(self.cell))
        return f"rnas path {scales} | {cell}{'' if self.attention else ' | no-att'}"


def decode_genotype(
    alpha: np.ndarray, eta: np.ndarray, beta: np.ndarray, *, ops: str = "hybrid", attention: bool = True,
    normalisation: str = "outgoing",
) -> RnasGenotype:
    """The decode stage of Algorithm 1: Viterbi path (Algorithm 2) and top-2 cell."""
    names = OP_SETS[ops]
    alpha = np.asarray(alpha)
    edges = alpha.shape[0]
    nodes = next((n for n in range(1, 32) if len(cell_edges(n)) == edges), None)
    if nodes is None:
        raise ValueError(f"alpha has {edges} rows: no cell with N nodes has that many edges")
    path, _ = viterbi_path(beta, normalisation)
    return RnasGenotype(path=path, cell=decode_cell(alpha, eta, names, nodes), ops=ops, attention=attention,
                        levels=int(np.asarray(beta).shape[1]))


def _normalised_entropy(logits: np.ndarray) -> float:
    """Entropy of ``softmax(logits)`` over its log-size: 1 for a uniform choice, 0 for a sure one."""
    if len(logits) < 2:
        return 0.0
    p = _softmax(np.asarray(logits, dtype=np.float64))
    return float(-(p * np.log(np.clip(p, 1e-300, None))).sum() / math.log(len(p)))


def architecture_entropy(alpha: np.ndarray, eta: np.ndarray, beta: np.ndarray, *,
                         normalisation: str = "outgoing") -> dict[str, float]:
    """How undecided the search still is: the mean normalised entropy of each softmax of the relaxation.

    ``alpha``: one softmax per edge over the operations (Eq. 1); ``eta``: one per node over its incoming
    edges (Eq. 2); ``beta``: one per group of Eq. 7 (:func:`transition_groups`, exit edges included).
    Each value lies in ``[0, 1]``: 1 while the choices are uniform (the initialisation), falling towards
    0 as the search commits. A flat curve over the search epochs means the architecture was not learnt.

    Returns:
        ``{"alpha_entropy", "eta_entropy", "beta_entropy"}``.
    """
    alpha = np.asarray(alpha, dtype=np.float64)
    eta = np.asarray(eta, dtype=np.float64)
    beta = np.asarray(beta, dtype=np.float64)
    nodes = next((n for n in range(1, 32) if len(cell_edges(n)) == alpha.shape[0]), None)
    if nodes is None or eta.shape != (alpha.shape[0],):
        raise ValueError(f"alpha {alpha.shape} and eta {eta.shape} do not describe a cell of N nodes")
    node_groups, start = [], 0
    for n in range(nodes):
        node_groups.append(eta[start:start + n + 2])
        start += n + 2
    levels = beta.shape[1]
    beta_groups = [[beta[k, t, kind] if t < levels else EXIT for t, kind in group]
                   for k, group in transition_groups(beta.shape[0], levels, normalisation)]
    return {
        "alpha_entropy": float(np.mean([_normalised_entropy(row) for row in alpha])),
        "eta_entropy": float(np.mean([_normalised_entropy(g) for g in node_groups])),
        "beta_entropy": float(np.mean([_normalised_entropy(g) for g in beta_groups])) if beta_groups else 0.0,
    }


class RnasSpace(SearchSpace[RnasGenotype]):
    """All decodable genotypes of ``cells`` cells, ``nodes`` nodes, ``levels`` resolutions, one op set."""

    name: ClassVar[str] = "rnas"

    def __init__(self, *, cells: int = 6, nodes: int = 4, levels: int = 4, ops: str = "hybrid", attention: bool = True) -> None:
        if cells < 1 or nodes < 1 or levels < 1:
            raise ValueError(f"cells, nodes, levels must be >= 1, got {cells}, {nodes}, {levels}")
        if ops not in OP_SETS:
            raise ValueError(f"ops must be one of {sorted(OP_SETS)}, got {ops!r}")
        self.cells, self.nodes, self.levels, self.ops, self.attention = cells, nodes, levels, ops, attention

    def sample(self, rng: np.random.Generator) -> RnasGenotype:
        path, level = [], 0
        for _ in range(self.cells):
            level = min(self.levels - 1, level + int(rng.integers(0, 2)))
            path.append(level)
        kept = [op for op in OP_SETS[self.ops] if op != "none"]
        cell = []
        for n in range(self.nodes):
            inputs = sorted(rng.choice(n + 2, size=2, replace=False).tolist())
            cell.append(tuple((int(i), kept[int(rng.integers(len(kept)))]) for i in inputs))
        return RnasGenotype(path=tuple(path), cell=tuple(cell), ops=self.ops, attention=self.attention, levels=self.levels)

    def validate(self, arch: RnasGenotype) -> None:
        if len(arch.path) != self.cells or arch.nodes != self.nodes or arch.levels != self.levels or arch.ops != self.ops:
            raise InvalidArchitecture(
                f"genotype has {len(arch.path)} cells, {arch.nodes} nodes, {arch.levels} levels, ops {arch.ops!r}; "
                f"the space has {self.cells}, {self.nodes}, {self.levels}, {self.ops!r}"
            )

    def from_json(self, text: str | dict[str, Any]) -> RnasGenotype:
        arch = RnasGenotype.from_json(text)
        self.validate(arch)
        return arch

    def size(self) -> float:
        paths = np.zeros(self.levels)
        paths[0] = 1.0
        for _ in range(self.cells):
            paths = paths + np.concatenate([[0.0], paths[:-1]]) if self.levels > 1 else paths
        kept = len(OP_SETS[self.ops]) - 1
        cells = 1.0
        for n in range(self.nodes):
            cells *= math.comb(n + 2, 2) * kept**2
        return float(paths.sum() * cells)

    def describe(self) -> dict[str, Any]:
        return {"cells": self.cells, "nodes": self.nodes, "levels": self.levels, "ops": self.ops,
                "attention": self.attention}
