"""The multi-path space of MONAS: which scales feed which, and how (HPM block or identity).

Paper: ``monas-multipath-oneshot-nas-3d-face-alignment.txt`` (in ``shared/papers``): §III-A (Eq. 1-4,
the search space), §III-B (Algorithm 1, MNUS sampling, Eq. 5-8), §IV-B (L = 10, D = 4).

Semantics (the supernet builder in ``trainables`` follows them):

- The network is a grid of nodes ``(column l, scale d)``, ``l = 0..L-1``, ``d = 0..D-1``. Scale 0 has
  the highest resolution; scale ``d`` has ``resolution / 2**d``. A node sums its incoming features.
- Column 0 holds all D scales, all fed by the stem; its nodes are always *live*.
- Transition ``l`` (``l = 0..L-2``) connects column ``l`` to column ``l + 1``: ``edges[l][d_out][d_in]``
  is the state of the connection from ``(l, d_in)`` to ``(l + 1, d_out)``, one of :data:`EDGE_NONE`
  (no connection; Eq. 2 ``c = 0``), :data:`EDGE_HPM` (an HPM block, Eq. 4) or :data:`EDGE_IDENTITY`
  (the features themselves). Where the scales differ, the features are resampled first (DESIGN.md §1:
  strided 3x3 conv down, bilinear + 1x1 conv up); the edge state says what follows the resampling.
- A node ``(l + 1, d_out)`` is live when at least one incoming edge comes from a live node
  ``(l, d_in)``; it then sums the outputs of those edges (edges from dead nodes carry nothing).
- The output node is ``(L-1, 0)``: the UV position map is regressed at the highest resolution.

Validity (:func:`is_valid`): the output node is live (reachable from column 0 through edges), and every
node that feeds forward (has an outgoing edge) is live, i.e. has an input from a live node (Eq. 8 and
DESIGN.md §1). Equivalently: no edge leaves a dead node, and the output is live. Nodes that are live but
lead nowhere (or edges into them) are allowed; they are *dead weight*, see :func:`active_edges`.

Encoding: ``MultipathArch.edges`` is a nested tuple ``[L-1][D][D]`` (``as_array()``: int8 array of shape
``(L-1, D, D)``, indexed ``[l, d_out, d_in]``). Without validity the space has ``3 ** ((L-1) * D * D)``
members (§III-A: ``(|c| x |b| - |b| + 1) ** ((L-1) * D**2)`` with ``|c| = |b| = 2``); :meth:`MultipathSpace.
count_valid` counts the valid ones exactly, and :meth:`MultipathSpace.sample` draws uniformly among them.

MNUS (:func:`mnus_children`, Algorithm 1 and Eq. 7-8): K children per supernet step such that, at each
transition, every one of the D*D edges is present in exactly the same number ``m_l`` of children, and
every node of columns 1..L-1 has an input in every child. :func:`uniform_children` is the paper's
"w/o MNUS" baseline (children drawn independently and uniformly from the valid space).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, ClassVar

import numpy as np

from search_algos.spaces.base import Encoded, InvalidArchitecture, SearchSpace

__all__ = [
    "EDGE_HPM",
    "EDGE_IDENTITY",
    "EDGE_NONE",
    "EDGE_NAMES",
    "MultipathArch",
    "MultipathSpace",
    "active_edges",
    "active_nodes",
    "is_valid",
    "mnus_children",
    "repair_edges",
    "uniform_children",
]

EDGE_NONE, EDGE_HPM, EDGE_IDENTITY = 0, 1, 2
EDGE_NAMES: dict[int, str] = {EDGE_NONE: "none", EDGE_HPM: "hpm", EDGE_IDENTITY: "identity"}
_CHAR = {EDGE_NONE: ".", EDGE_HPM: "h", EDGE_IDENTITY: "i"}
# neighbour() retries a change whose repair gave back the input; each try succeeds with probability
# >= 1 / (2 (L-1) D^2) whenever another valid architecture exists, so this bound is never reached in practice.
_NEIGHBOUR_TRIES = 10_000


# -- graph helpers (pure numpy) ---------------------------------------------------------------------
def _forward_live(edges: np.ndarray) -> np.ndarray:
    """``live[l, d]``: node (l, d) gets features from the stem. ``edges``: (L-1, D, D) -> (L, D) bool."""
    n_trans, d, _ = edges.shape
    present = edges != EDGE_NONE  # (L-1, D_out, D_in)
    live = np.zeros((n_trans + 1, d), dtype=bool)
    live[0] = True
    for l in range(n_trans):
        live[l + 1] = present[l] @ live[l]  # boolean matmul: any input from a live node
    return live


def _backward_useful(edges: np.ndarray) -> np.ndarray:
    """``useful[l, d]``: a path of edges leads from node (l, d) to the output (L-1, 0). -> (L, D) bool."""
    n_trans, d, _ = edges.shape
    useful = np.zeros((n_trans + 1, d), dtype=bool)
    useful[n_trans, 0] = True
    for l in range(n_trans - 1, -1, -1):
        useful[l] = ((edges[l] != EDGE_NONE) & useful[l + 1][:, None]).any(axis=0)  # (D_out, D_in) -> (D_in,)
    return useful


def _edges_array(edges: Any) -> np.ndarray:
    """``edges`` as an int8 array of shape (L-1, D, D), or :class:`InvalidArchitecture`."""
    if isinstance(edges, MultipathArch):
        return edges.as_array()
    arr = np.asarray(edges)
    if arr.ndim != 3 or arr.shape[0] < 1 or arr.shape[1] < 1 or arr.shape[1] != arr.shape[2]:
        raise InvalidArchitecture(f"edges must have shape (L-1, D, D) with L >= 2, D >= 1, got {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer) or not ((arr >= 0) & (arr <= 2)).all():
        raise InvalidArchitecture(f"edge states must be in {sorted(EDGE_NAMES)}, got {sorted(np.unique(arr).tolist())}")
    return arr.astype(np.int8)


def is_valid(edges: np.ndarray) -> tuple[bool, str]:
    """Whether an edge array (L-1, D, D) is a valid architecture, and why not.

    Rules (module docstring; Eq. 8): every node with an outgoing edge has an input from a live node,
    and the output node (L-1, 0) is reachable from column 0.

    Returns:
        ``(True, "")`` or ``(False, reason)``; a malformed array (shape, values) is invalid too.
    """
    try:
        arr = _edges_array(edges)
    except InvalidArchitecture as exc:
        return False, str(exc)
    reason = _graph_problem(arr)
    return not reason, reason


def _graph_problem(arr: np.ndarray) -> str:
    """Why a well-formed edge array (L-1, D, D) is not a valid graph; ``""`` when it is."""
    live = _forward_live(arr)
    n_trans = arr.shape[0]
    # columns 1..L-2 feed transitions 1..L-2; column 0 is always live, column L-1 feeds nothing
    dead_feeders = (arr[1:] != EDGE_NONE).any(axis=1) & ~live[1:-1]  # (L-2, D_in)
    if dead_feeders.any():
        l, d = (int(x) for x in np.argwhere(dead_feeders)[0])
        l += 1
        d_out = int(np.flatnonzero(arr[l][:, d])[0])
        return (
            f"node (column {l}, scale {d}) feeds forward (edge to (column {l + 1}, scale {d_out})) "
            f"but has no input from a live node (Eq. 8); add an edge into it or remove its outgoing edges"
        )
    if not live[n_trans, 0]:
        return f"the output node (column {n_trans}, scale 0) is not reachable from column 0"
    return ""


def active_nodes(arch: MultipathArch | np.ndarray) -> np.ndarray:
    """Nodes on a path from column 0 to the output: the ones the network must compute. -> (L, D) bool."""
    arr = _edges_array(arch)
    return _forward_live(arr) & _backward_useful(arr)


def active_edges(arch: MultipathArch | np.ndarray) -> np.ndarray:
    """Edges on a path from column 0 to the output (the others are dead). -> (L-1, D, D) bool."""
    arr = _edges_array(arch)
    live, useful = _forward_live(arr), _backward_useful(arr)
    # edge (l, o, i) is active when it exists, its source is live and its target leads to the output
    return (arr != EDGE_NONE) & live[:-1, None, :] & useful[1:, :, None]


def _tupled(arr: np.ndarray) -> tuple:
    return tuple(tuple(tuple(row) for row in trans) for trans in arr.tolist())


# -- the encoding ----------------------------------------------------------------------------------
def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _normalised_edges(edges: Any, layers: int, scales: int) -> tuple:
    """Nested tuples of ints, checked for shape [L-1][D][D] and values; the first problem is raised."""
    if isinstance(edges, np.ndarray):
        edges = edges.tolist()
    shape = f"[L-1, D, D] = [{layers - 1}, {scales}, {scales}] (layers={layers}, scales={scales})"

    def rows(value: Any, length: int, where: str) -> Sequence:
        if not isinstance(value, (list, tuple)) or len(value) != length:
            got = f"length {len(value)}" if isinstance(value, (list, tuple)) else repr(value)
            raise InvalidArchitecture(f"edges must have shape {shape}, but {where} has {got}")
        return value

    out = []
    for l, trans in enumerate(rows(edges, layers - 1, "edges")):
        out_trans = []
        for o, row in enumerate(rows(trans, scales, f"edges[{l}]")):
            values = rows(row, scales, f"edges[{l}][{o}]")
            if all(type(v) is int and 0 <= v <= 2 for v in values):  # the common case, fast
                out_trans.append(tuple(values))
                continue
            for i, v in enumerate(values):
                if not _is_int(v) or int(v) not in EDGE_NAMES:
                    raise InvalidArchitecture(
                        f"edge states must be 0 (none), 1 (HPM) or 2 (identity), but edges[{l}][{o}][{i}] = {v!r}"
                    )
            out_trans.append(tuple(int(v) for v in values))
        out.append(tuple(out_trans))
    return tuple(out)


@dataclass(frozen=True)
class MultipathArch(Encoded):
    """One child network of the multi-path supernet (Eq. 1-4): topology and edge types in one array.

    Attributes:
        layers: L node columns (>= 2); transition ``l`` connects column ``l`` to column ``l + 1``.
        scales: D scales (>= 1); scale 0 has the highest resolution, scale ``d`` has ``1 / 2**d`` of it.
        edges: nested tuples ``[L-1][D (d_out)][D (d_in)]`` of :data:`EDGE_NONE`, :data:`EDGE_HPM`,
            :data:`EDGE_IDENTITY`; lists and int arrays are accepted and stored as tuples.

    Raises:
        InvalidArchitecture: bad sizes, shape or values (the message names the entry), or an invalid
            graph (see :func:`is_valid`).
    """

    layers: int
    scales: int
    edges: tuple

    space: ClassVar[str] = "multipath"

    def __post_init__(self) -> None:
        if not _is_int(self.layers) or self.layers < 2:
            raise InvalidArchitecture(f"layers must be an integer >= 2, got {self.layers!r}")
        if not _is_int(self.scales) or self.scales < 1:
            raise InvalidArchitecture(f"scales must be an integer >= 1, got {self.scales!r}")
        object.__setattr__(self, "layers", int(self.layers))
        object.__setattr__(self, "scales", int(self.scales))
        object.__setattr__(self, "edges", _normalised_edges(self.edges, self.layers, self.scales))
        reason = _graph_problem(self.as_array())
        if reason:
            raise InvalidArchitecture(f"invalid multi-path architecture: {reason}")

    # -- constructors -------------------------------------------------------------------------
    @classmethod
    def from_array(cls, edges: np.ndarray) -> MultipathArch:
        """From an int array of shape (L-1, D, D); L and D are read from the shape."""
        arr = _edges_array(edges)
        return cls(layers=arr.shape[0] + 1, scales=arr.shape[1], edges=_tupled(arr))

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> MultipathArch:
        payload = dict(payload)
        space = payload.pop("space", cls.space)
        if space != cls.space:
            raise InvalidArchitecture(f"encoding is for space {space!r}, expected {cls.space!r}")
        unknown = sorted(set(payload) - {"layers", "scales", "edges"})
        if unknown:
            raise InvalidArchitecture(f"unknown field(s) {unknown} in a multipath encoding; valid: layers, scales, edges")
        try:
            return cls(**payload)
        except TypeError as exc:  # a missing field
            raise InvalidArchitecture(f"incomplete multipath encoding: {exc}") from None

    @classmethod
    def from_json(cls, text: str) -> MultipathArch:
        return cls.from_dict(json.loads(text))

    # -- derived values ------------------------------------------------------------------------
    def as_array(self) -> np.ndarray:
        """The edges as an int8 array of shape (L-1, D, D), indexed ``[l, d_out, d_in]`` (a copy)."""
        return np.array(self.edges, dtype=np.int8).reshape(self.layers - 1, self.scales, self.scales)

    def to_dict(self) -> dict[str, Any]:
        return {
            "space": self.space,
            "layers": self.layers,
            "scales": self.scales,
            "edges": [[list(row) for row in trans] for trans in self.edges],
        }

    def summary(self) -> str:
        """A short human line, e.g. ``L=3 D=2 [h.|.i hh|..] 4 edges (3 hpm, 1 id), 4 active``.

        Per transition, rows ``d_out`` separated by ``|``, one character per ``d_in``: ``.`` none,
        ``h`` HPM, ``i`` identity.
        """
        arr = self.as_array()
        grid = " ".join("|".join("".join(_CHAR[int(v)] for v in row) for row in trans) for trans in arr)
        n_hpm, n_id = int((arr == EDGE_HPM).sum()), int((arr == EDGE_IDENTITY).sum())
        n_active = int(active_edges(arr).sum())
        return f"L={self.layers} D={self.scales} [{grid}] {n_hpm + n_id} edges ({n_hpm} hpm, {n_id} id), {n_active} active"


# -- repair ----------------------------------------------------------------------------------------
def _feed(
    edges: np.ndarray,
    col: int,
    d: int,
    rng: np.random.Generator,
    states: tuple[int, ...],
    avoid: tuple[int, int, int] | None,
) -> None:
    """Make node (col, d) live by adding one edge from column col-1 (in place).

    The source is a random live node; when none is allowed, a random dead node is fed first
    (recursively). The edge ``avoid`` is added only when no other way exists.
    """
    live = _forward_live(edges)
    prev = col - 1
    banned = avoid[2] if avoid is not None and avoid[0] == prev and avoid[1] == d else None
    sources = [i for i in range(edges.shape[1]) if live[prev, i] and i != banned]
    if sources:
        src = sources[int(rng.integers(len(sources)))]
    else:
        dead = [i for i in range(edges.shape[1]) if not live[prev, i] and i != banned]
        if dead:
            src = dead[int(rng.integers(len(dead)))]
            _feed(edges, prev, src, rng, states, avoid)
        else:  # D = 1 or only the avoided edge can carry features: re-adding it is unavoidable
            src = int(banned)
    edges[prev, d, src] = states[int(rng.integers(len(states)))]


def repair_edges(
    edges: np.ndarray,
    rng: np.random.Generator,
    *,
    states: tuple[int, ...] = (EDGE_HPM, EDGE_IDENTITY),
    avoid: tuple[int, int, int] | None = None,
) -> np.ndarray:
    """A valid copy of ``edges`` (L-1, D, D), made by adding edges only.

    Greedy and deterministic given ``rng``: columns 1..L-2 in order, every node that feeds forward but
    is dead gets one edge from a random live node of the previous column (a dead one, fed the same way,
    when no live one may be used); then, if the output is still unreachable, it is fed the same way.
    A valid array comes back unchanged. Edges are never removed, so a changed edge set to a state other
    than none survives; ``avoid = (l, d_out, d_in)`` (an edge just set to none) is not added back unless
    no other edge can do its job.

    Args:
        edges: int array (L-1, D, D) of edge states.
        rng: the only source of randomness.
        states: the edge states an added edge may take (drawn uniformly).
        avoid: an edge not to add when avoidable.

    Returns:
        A new int8 array (L-1, D, D) that passes :func:`is_valid`.
    """
    out = _edges_array(edges).copy()
    n_trans = out.shape[0]
    live = _forward_live(out)
    for col in range(1, n_trans):
        feeders = (out[col] != EDGE_NONE).any(axis=0)  # (D_in,): nodes of column col with an outgoing edge
        for d in range(out.shape[1]):
            if feeders[d] and not live[col, d]:
                _feed(out, col, d, rng, states, avoid)
                live = _forward_live(out)
    if not live[n_trans, 0]:
        _feed(out, n_trans, 0, rng, states, avoid)
    return out


# -- the space -------------------------------------------------------------------------------------
class MultipathSpace(SearchSpace[MultipathArch]):
    """All valid child networks of an L-column, D-scale multi-path supernet (paper: L=10, D=4).

    Args:
        layers: L, node columns (>= 2).
        scales: D, scales (>= 1).
        allow_identity: whether edges may be identity connections (Eq. 4); without, edges are
            none or HPM.

    Raises:
        ValueError: on bad bounds.
    """

    name: ClassVar[str] = "multipath"

    def __init__(self, *, layers: int = 10, scales: int = 4, allow_identity: bool = True) -> None:
        problems = []
        if not _is_int(layers) or layers < 2:
            problems.append(f"layers must be an integer >= 2, got {layers!r}")
        if not _is_int(scales) or scales < 1:
            problems.append(f"scales must be an integer >= 1, got {scales!r}")
        if not isinstance(allow_identity, bool):
            problems.append(f"allow_identity must be a bool, got {allow_identity!r}")
        if problems:
            raise ValueError("; ".join(problems))
        self.layers, self.scales, self.allow_identity = int(layers), int(scales), allow_identity
        # the states an edge may take when present
        self.states: tuple[int, ...] = (EDGE_HPM, EDGE_IDENTITY) if allow_identity else (EDGE_HPM,)
        self._counts = self._completion_counts()
        self._probs: dict[tuple[int, int], np.ndarray] = {}  # cache of _size_probs

    # -- counting (exact, by dynamic programming over the number of live nodes per column) --------
    def _completion_counts(self) -> list[list[int]]:
        """``b[l][s]``: valid completions of transitions l..L-2 when column l has s live nodes.

        A transition from a column with live set S (size s) to live set S' keeps edges from dead
        nodes at none, gives each node of S' a non-empty input row over S (``q**s - 1`` ways, ``q``
        edge states) and each other node an empty one. For the last transition only ``0 in S'``
        matters: row 0 non-empty, the other rows free, ``(q**s - 1) * q**(s*(D-1))``. The count
        depends on S only through s; ``count_valid() = b[0][D]``.
        """
        q, d = len(self.states) + 1, self.scales
        last = [(q**s - 1) * q ** (s * (d - 1)) for s in range(d + 1)]
        counts = [last]
        for _ in range(self.layers - 2):
            nxt = counts[0]
            counts.insert(0, [sum(math.comb(d, j) * (q**s - 1) ** j * nxt[j] for j in range(d + 1)) for s in range(d + 1)])
        return counts

    def count_valid(self) -> int:
        """Exact number of valid architectures (Python int; 0 < count_valid() <= size())."""
        return self._counts[0][self.scales]

    def size(self) -> float:
        """``3 ** ((L-1) * D * D)`` (``2 ** ...`` without identity), validity ignored, as in §III-A."""
        return float(len(self.states) + 1) ** ((self.layers - 1) * self.scales**2)

    # -- sampling --------------------------------------------------------------------------------
    def sample(self, rng: np.random.Generator) -> MultipathArch:
        """A valid architecture drawn uniformly from the valid ones (exact, no rejection).

        Draws the live set of each column in turn with probability proportional to the number of
        valid completions (:meth:`_completion_counts`), then each live node's non-empty input row.
        """
        q, d = len(self.states) + 1, self.scales
        edges = [[[EDGE_NONE] * d for _ in range(d)] for _ in range(self.layers - 1)]  # [L-1][D][D]
        live = list(range(d))  # column 0
        for l in range(self.layers - 1):
            r = q ** len(live) - 1  # non-empty input rows over the live sources
            size = int(rng.choice(d + 1, p=self._size_probs(l, len(live))))
            if l < self.layers - 2:
                targets = sorted(int(x) for x in rng.choice(d, size=size, replace=False))
            else:  # last transition: the output (scale 0) must be live, the rest is free
                targets = [0] + sorted(int(x) + 1 for x in rng.choice(d - 1, size=size - 1, replace=False))
            for o in targets:
                code = int(rng.integers(1, r + 1))  # 1..q**s - 1: base-q digits over the live sources
                for i in live:
                    code, digit = divmod(code, q)
                    edges[l][o][i] = EDGE_NONE if digit == 0 else self.states[digit - 1]
            live = targets
        return MultipathArch(self.layers, self.scales, edges)

    def _size_probs(self, l: int, s: int) -> np.ndarray:
        """P(column l+1 has j live nodes | column l has s), for uniform sampling; shape (D+1,)."""
        if (l, s) not in self._probs:
            d, r = self.scales, (len(self.states) + 1) ** s - 1
            if l < self.layers - 2:
                weights = [math.comb(d, j) * r**j * self._counts[l + 1][j] for j in range(d + 1)]
            else:  # the live set must contain the output, scale 0
                weights = [0] + [math.comb(d - 1, j - 1) * r**j for j in range(1, d + 1)]
            total = sum(weights)  # exact integers, possibly beyond float range: divide as fractions
            probs = np.array([float(Fraction(w, total)) for w in weights])
            self._probs[(l, s)] = probs / probs.sum()
        return self._probs[(l, s)]

    def repair(
        self, edges: np.ndarray, rng: np.random.Generator, *, avoid: tuple[int, int, int] | None = None
    ) -> MultipathArch:
        """The valid architecture :func:`repair_edges` makes of ``edges`` (added edges use this space's states).

        Raises:
            InvalidArchitecture: when ``edges`` has the wrong shape or states this space does not allow.
        """
        arr = self._check_array(edges)
        return MultipathArch.from_array(repair_edges(arr, rng, states=self.states, avoid=avoid))

    def neighbour(self, arch: MultipathArch, rng: np.random.Generator) -> MultipathArch:
        """SAMOS's move (DESIGN.md §1): change one edge's state, then repair validity.

        The edge is drawn uniformly among the (L-1)*D*D, its new state uniformly among the other
        allowed states; :meth:`repair` then adds edges where needed, avoiding to re-add an edge just
        removed. When the repair gives back ``arch`` itself (the removed edge was the only way), the
        move is drawn again, so the result always differs from ``arch`` in at least one edge.

        Raises:
            InvalidArchitecture: ``arch`` is not in this space.
            ValueError: the space has a single valid architecture (D=1 without identity).
        """
        self.validate(arch)
        if self.count_valid() < 2:
            raise ValueError(f"{self.describe()} has a single valid architecture: it has no neighbours")
        base = arch.as_array()
        n_trans, d = self.layers - 1, self.scales
        for _ in range(_NEIGHBOUR_TRIES):
            l, o, i = (int(x) for x in np.unravel_index(int(rng.integers(n_trans * d * d)), (n_trans, d, d)))
            choices = [s for s in (EDGE_NONE, *self.states) if s != base[l, o, i]]
            changed = base.copy()
            changed[l, o, i] = choices[int(rng.integers(len(choices)))]
            avoid = (l, o, i) if changed[l, o, i] == EDGE_NONE else None
            fixed = repair_edges(changed, rng, states=self.states, avoid=avoid)
            if not np.array_equal(fixed, base):
                return MultipathArch.from_array(fixed)
        raise RuntimeError(f"no neighbour of {arch.summary()} found in {_NEIGHBOUR_TRIES} tries")  # pragma: no cover

    # -- membership ------------------------------------------------------------------------------
    def _check_array(self, edges: Any) -> np.ndarray:
        arr = _edges_array(edges)
        want = (self.layers - 1, self.scales, self.scales)
        if arr.shape != want:
            raise InvalidArchitecture(f"edges must have shape {want} in {self.describe()}, got {arr.shape}")
        if not self.allow_identity and (arr == EDGE_IDENTITY).any():
            raise InvalidArchitecture("identity edges (state 2) are not allowed in this space (allow_identity=False)")
        return arr

    def validate(self, arch: MultipathArch) -> None:
        if not isinstance(arch, MultipathArch):
            raise InvalidArchitecture(f"expected a MultipathArch, got {type(arch).__name__}")
        if (arch.layers, arch.scales) != (self.layers, self.scales):
            raise InvalidArchitecture(
                f"architecture has layers={arch.layers}, scales={arch.scales}, but the space has "
                f"layers={self.layers}, scales={self.scales}"
            )
        self._check_array(arch.as_array())

    def from_json(self, text: str | dict[str, Any]) -> MultipathArch:
        payload = json.loads(text) if isinstance(text, str) else text
        arch = MultipathArch.from_dict(payload)
        self.validate(arch)
        return arch

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "layers": self.layers, "scales": self.scales, "allow_identity": self.allow_identity}


# -- child sampling for supernet training ------------------------------------------------------------
def _as_space(space: MultipathSpace | tuple[int, int]) -> MultipathSpace:
    if isinstance(space, MultipathSpace):
        return space
    layers, scales = space
    return MultipathSpace(layers=layers, scales=scales)


def mnus_children(space: MultipathSpace | tuple[int, int], k: int, rng: np.random.Generator) -> list[MultipathArch]:
    """K children by Multi-path Networks Unbiased Sampling (Algorithm 1, Eq. 7-8).

    For each transition ``l``, ``m_l`` is drawn uniformly from the feasible counts
    ``ceil(K / D) <= m_l <= K`` (``m_l * D >= K`` lets every child give every node an input); then, for
    each target node ``d_out`` independently, its D input edges are dealt to the children: in random
    orders of inputs and children, input ``j`` goes to ``m_l`` consecutive children (cyclically). So:

    - every edge of the transition is present in exactly ``m_l`` children (Eq. 7);
    - every node of columns 1..L-1 has an input in every child (Eq. 8), hence every child is valid;
    - each child gets ``floor`` or ``ceil`` of ``m_l * D / K`` inputs per node (children of similar size).

    Edge types are balanced too (our reading; the paper only balances presence): of an edge's
    ``m_l`` appearances, ``floor(m_l/2)`` or ``ceil(m_l/2)`` (a coin decides when ``m_l`` is odd) are
    HPM, the rest identity, on a random subset of its children, so every HPM block is trained about
    equally often. Without identity edges, all are HPM. K = 1 gives the full supernet (m_1 = 1 forces
    every edge present).

    Args:
        space: the space, or ``(L, D)`` (identity allowed).
        k: number of children K (>= 1; DESIGN.md default 4).
        rng: the only source of randomness (the trainer seeds it by (seed, step) so that all workers
            draw the same children).

    Returns:
        K valid architectures.
    """
    space = _as_space(space)
    if not _is_int(k) or k < 1:
        raise ValueError(f"k (children per step) must be an integer >= 1, got {k!r}")
    n_trans, d = space.layers - 1, space.scales
    present = np.zeros((k, n_trans, d, d), dtype=bool)  # (K, L-1, D_out, D_in)
    kinds = np.zeros((k, n_trans, d, d), dtype=np.int8)
    for l in range(n_trans):
        m = int(rng.integers(-(-k // d), k + 1))
        for o in range(d):
            children, inputs = rng.permutation(k), rng.permutation(d)
            for pos in range(d * m):  # m consecutive positions mod K are m distinct children
                present[children[pos % k], l, o, inputs[pos // m]] = True
        for o in range(d):
            for i in range(d):
                holders = np.flatnonzero(present[:, l, o, i])  # (m,)
                n_hpm = m if not space.allow_identity else m // 2 + (int(rng.integers(2)) if m % 2 else 0)
                types = np.array([EDGE_HPM] * n_hpm + [EDGE_IDENTITY] * (m - n_hpm), dtype=np.int8)
                kinds[holders, l, o, i] = types[rng.permutation(m)]
    return [MultipathArch.from_array(kinds[c]) for c in range(k)]


def uniform_children(
    space: MultipathSpace | tuple[int, int], k: int, rng: np.random.Generator
) -> list[MultipathArch]:
    """K children drawn independently and uniformly from the valid space (the "w/o MNUS" ablation)."""
    space = _as_space(space)
    if not _is_int(k) or k < 1:
        raise ValueError(f"k (children per step) must be an integer >= 1, got {k!r}")
    return [space.sample(rng) for _ in range(k)]
