"""HyperFD's two detector spaces: hyper-parameters (HPO, Table 2) and backbones (NAS, Table 3).

Paper: ``hyperfd-online-automl-face-detection-supplement.txt`` §B.3, Table 2 and Table 3.

HPO space (Table 2), 2 * 3 * 2 * 3 * 3 * 2 = 216 configurations:

- optimizer in {sgd, adam};
- learning rate in {3e-4, 1e-3, 3e-3}. Table 2 prints ``3e-2`` for the largest value, but the best
  configurations the same paper reports (Table 8) use ``lr:3e-03`` and never 3e-2, so the grid is
  {3e-4, 1e-3, 3e-3} (also DESIGN.md §1);
- min crop ratio in {0.3, 0.55} (random-crop augmentation keeps at least this fraction of each side);
- positive IoU threshold in {0.4, 0.5, 0.6}; the negative threshold is derived, ``pos / 2 + 0.05``;
- location-loss weight in {2, 4, 8};
- negative : positive ratio of hard-negative mining in {2, 7}.

NAS space (Table 3): a MobileNetV2 / ProxylessNAS-style backbone of 7 stages of inverted-residual
(MBConv) blocks. Stage 1 is fixed (one block, expand 1, kernel 3). Stages 2..7 each choose a depth
(stage-specific range), an expand ratio in {4, 6} and a kernel in {3, 5, 7}; all blocks of a stage
share the stage's expand ratio and kernel (Table 3 lists the choices per stage). Widths and strides are
fixed by Table 3 (the paper's channels x 0.5 variant); the detector may scale widths further
(``trainables/detection/model.py``, ``width_mult``), which does not change the encoding. Size:
``prod over stages 2..7 of (#depths * 2 * 3)`` = 18 * 18 * 18 * 18 * 12 * 6 = 7,558,272.

Encodings for the performance ranker (§B.5): :meth:`HpoConfig.to_vector` (one-hot per
hyper-parameter, for the MLP encoder) and :meth:`DetectorArch.to_graph` (block graph for the GIN
encoder; :class:`ArchGraph` documents node features and edges). :meth:`DetectorArch.to_vector` is a
fixed-length alternative for MLP encoders of architectures.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from search_algos.spaces.base import Encoded, InvalidArchitecture, SearchSpace

__all__ = [
    "ArchGraph",
    "DetectorArch",
    "DetectorHpoSpace",
    "DetectorNasSpace",
    "FPN_TAP_STAGES",
    "HPO_CHOICES",
    "HpoConfig",
    "NODE_FEATURES",
    "STAGES",
    "StageSpec",
    "negative_iou",
]

# -- HPO space (Table 2) ------------------------------------------------------------------------------
HPO_CHOICES: dict[str, tuple[Any, ...]] = {
    "optimizer": ("sgd", "adam"),
    "lr": (3e-4, 1e-3, 3e-3),
    "min_crop": (0.3, 0.55),
    "iou_pos": (0.4, 0.5, 0.6),
    "loc_weight": (2.0, 4.0, 8.0),
    "neg_pos_ratio": (2, 7),
}
_HPO_FIELDS = tuple(HPO_CHOICES)


def negative_iou(iou_pos: float) -> float:
    """Table 2: anchors with IoU below ``pos / 2 + 0.05`` are negatives (between: ignored)."""
    return iou_pos / 2 + 0.05


def _member(value: Any, choices: tuple[Any, ...]) -> bool:
    # Floats from JSON round-trip exactly, but a user may type 0.001 for 1e-3; compare with a tolerance.
    if isinstance(value, str) or any(isinstance(c, str) for c in choices):
        return value in choices
    return any(math.isclose(float(value), float(c), rel_tol=1e-9) for c in choices)


@dataclass(frozen=True)
class HpoConfig(Encoded):
    """One training configuration of the HPO space (Table 2).

    Attributes:
        optimizer: ``"sgd"`` (momentum 0.9) or ``"adam"``.
        lr: initial learning rate.
        min_crop: minimum side fraction kept by random-crop augmentation.
        iou_pos: IoU at or above which an anchor is positive (negative below :attr:`iou_neg`).
        loc_weight: weight of the box-regression loss against the classification loss.
        neg_pos_ratio: negatives kept per positive by hard-negative mining.
    """

    optimizer: str
    lr: float
    min_crop: float
    iou_pos: float
    loc_weight: float
    neg_pos_ratio: int

    space: ClassVar[str] = "detector_hpo"
    VECTOR_DIM: ClassVar[int] = sum(len(v) for v in HPO_CHOICES.values())  # 15

    def __post_init__(self) -> None:
        for name in ("lr", "min_crop", "iou_pos", "loc_weight"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise InvalidArchitecture(f"{name} must be a number, got {value!r}")
            object.__setattr__(self, name, float(value))
        if not isinstance(self.optimizer, str):
            raise InvalidArchitecture(f"optimizer must be a string, got {self.optimizer!r}")
        object.__setattr__(self, "optimizer", self.optimizer.lower())
        ratio = self.neg_pos_ratio
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or int(ratio) != ratio:
            raise InvalidArchitecture(f"neg_pos_ratio must be an integer, got {ratio!r}")
        object.__setattr__(self, "neg_pos_ratio", int(ratio))
        problems = [
            f"{name} must be one of {list(HPO_CHOICES[name])}, got {getattr(self, name)!r}"
            for name in _HPO_FIELDS
            if not _member(getattr(self, name), HPO_CHOICES[name])
        ]
        if problems:
            raise InvalidArchitecture("; ".join(problems))
        # Snap to the grid's exact float so equal configs have equal keys (0.001 typed vs 1e-3).
        for name in ("lr", "min_crop", "iou_pos", "loc_weight"):
            value = getattr(self, name)
            object.__setattr__(self, name, min(HPO_CHOICES[name], key=lambda c: abs(c - value)))

    @property
    def iou_neg(self) -> float:
        return negative_iou(self.iou_pos)

    @classmethod
    def default(cls) -> HpoConfig:
        """The configuration NAS runs train every architecture with (a mid-grid, robust choice)."""
        return cls(optimizer="adam", lr=3e-3, min_crop=0.55, iou_pos=0.5, loc_weight=2.0, neg_pos_ratio=7)

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> HpoConfig:
        payload = dict(payload)
        space = payload.pop("space", cls.space)
        if space != cls.space:
            raise InvalidArchitecture(f"encoding is for space {space!r}, expected {cls.space!r}")
        unknown = sorted(set(payload) - set(_HPO_FIELDS))
        if unknown:
            raise InvalidArchitecture(f"unknown field(s) {unknown} in a detector_hpo encoding")
        missing = sorted(set(_HPO_FIELDS) - set(payload))
        if missing:
            raise InvalidArchitecture(f"incomplete detector_hpo encoding: missing {missing}")
        return cls(**payload)

    @classmethod
    def from_json(cls, text: str) -> HpoConfig:
        return cls.from_dict(json.loads(text))

    def to_dict(self) -> dict[str, Any]:
        return {"space": self.space, **{name: getattr(self, name) for name in _HPO_FIELDS}}

    def summary(self) -> str:
        """Table 8's notation, e.g. ``crop:0.55_iou:0.5_locw:8.0_negp:2.0_lr:3e-04_sgd``."""
        return (
            f"crop:{self.min_crop:g}_iou:{self.iou_pos:g}_locw:{self.loc_weight:.1f}"
            f"_negp:{float(self.neg_pos_ratio):.1f}_lr:{self.lr:.0e}_{self.optimizer}"
        )

    def to_vector(self) -> np.ndarray:
        """One-hot per hyper-parameter, in :data:`HPO_CHOICES` order: float32 array of shape (15,).

        Layout: optimizer (sgd, adam) | lr (3e-4, 1e-3, 3e-3) | min_crop (0.3, 0.55) |
        iou_pos (0.4, 0.5, 0.6) | loc_weight (2, 4, 8) | neg_pos_ratio (2, 7).
        """
        parts = []
        for name, choices in HPO_CHOICES.items():
            one_hot = np.zeros(len(choices), dtype=np.float32)
            one_hot[choices.index(getattr(self, name))] = 1.0
            parts.append(one_hot)
        return np.concatenate(parts)


class DetectorHpoSpace(SearchSpace[HpoConfig]):
    """The HPO space of Table 2, or a sub-grid of it.

    Args:
        choices: per hyper-parameter, a non-empty subset of :data:`HPO_CHOICES` (omitted: all values).

    Raises:
        ValueError: unknown hyper-parameter names or values outside Table 2 (all problems at once).
    """

    name: ClassVar[str] = "detector_hpo"

    def __init__(self, **choices: Any) -> None:
        problems = [f"unknown hyper-parameter {n!r}; valid: {list(_HPO_FIELDS)}" for n in choices if n not in HPO_CHOICES]
        grid: dict[str, tuple[Any, ...]] = {}
        for name, full in HPO_CHOICES.items():
            values = tuple(choices.get(name, full))
            bad = [v for v in values if not _member(v, full)]
            if not values or bad:
                problems.append(f"{name} must be a non-empty subset of {list(full)}, got {list(values)}")
                continue
            grid[name] = tuple(c for c in full if any(_member(v, (c,)) for v in values))
        if problems:
            raise ValueError("; ".join(problems))
        self.grid = grid

    def sample(self, rng: np.random.Generator) -> HpoConfig:
        return HpoConfig(**{name: values[int(rng.integers(len(values)))] for name, values in self.grid.items()})

    def validate(self, arch: HpoConfig) -> None:
        if not isinstance(arch, HpoConfig):
            raise InvalidArchitecture(f"expected an HpoConfig, got {type(arch).__name__}")
        for name, values in self.grid.items():
            if getattr(arch, name) not in values:
                raise InvalidArchitecture(f"{name} must be in {list(values)}, got {getattr(arch, name)!r}")

    def from_json(self, text: str | dict[str, Any]) -> HpoConfig:
        payload = json.loads(text) if isinstance(text, str) else text
        config = HpoConfig.from_dict(payload)
        self.validate(config)
        return config

    def enumerate(self) -> Iterator[HpoConfig]:
        """Every configuration, in a fixed order (the grid's product in :data:`HPO_CHOICES` order)."""
        for values in itertools.product(*self.grid.values()):
            yield HpoConfig(**dict(zip(self.grid, values)))

    def size(self) -> float:
        return float(math.prod(len(v) for v in self.grid.values()))

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, **{name: list(values) for name, values in self.grid.items()}}


# -- NAS space (Table 3) ------------------------------------------------------------------------------
@dataclass(frozen=True)
class StageSpec:
    """One row of Table 3: depth range, choices, output width (channels x 0.5 variant), first stride."""

    depths: tuple[int, ...]
    expands: tuple[int, ...]
    kernels: tuple[int, ...]
    width: int
    stride: int


STAGES: tuple[StageSpec, ...] = (
    StageSpec((1,), (1,), (3,), 8, 1),
    StageSpec((1, 2, 3), (4, 6), (3, 5, 7), 12, 2),
    StageSpec((1, 2, 3), (4, 6), (3, 5, 7), 16, 2),
    StageSpec((2, 3, 4), (4, 6), (3, 5, 7), 32, 2),
    StageSpec((3, 4), (4, 6), (3, 5, 7), 48, 1),
    StageSpec((2, 3, 4), (4, 6), (3, 5, 7), 80, 2),
    StageSpec((1,), (4, 6), (3, 5, 7), 160, 1),
)
_SEARCHED = STAGES[1:]  # stages 2..7 are encoded; stage 1 is fixed
# §B.3 extracts features at the end of stages 3, 5 and 7; the scaled-down FPN-lite keeps two levels,
# the ends of stages 5 and 7 (all searched stages then influence the detections).
FPN_TAP_STAGES: tuple[int, ...] = (5, 7)
_KERNELS = (3, 5, 7)
_EXPANDS = (1, 4, 6)

NODE_FEATURES: tuple[str, ...] = (
    "is_stem",
    "is_block",
    "is_output",
    "kernel_3",
    "kernel_5",
    "kernel_7",
    "expand_1",
    "expand_4",
    "expand_6",
    "stride_2",
    "width_rel",  # output width / 160 (the widest stage)
    "fpn_tap",  # the block's output feeds an FPN level
    *(f"stage_{s}" for s in range(1, 8)),
)


@dataclass(frozen=True)
class ArchGraph:
    """A backbone as a directed graph, for the ranker's GIN encoder.

    Nodes, in order: the stem convolution (node 0), every MBConv block in execution order (stage 1's
    block first), then one output node standing for the FPN + heads. Edges (``src -> dst``, both node
    indices): the chain of consecutive nodes; a skip from a block's input node to its successor where
    the block has an identity residual (stride 1, equal widths: the successor sees ``block(x) + x``);
    and an edge from each FPN tap block (ends of :data:`FPN_TAP_STAGES`) to the output node. The
    ranker adds its own virtual nodes.

    Attributes:
        nodes: float32 array (N, len(NODE_FEATURES)), columns named by :data:`NODE_FEATURES`.
        edges: int64 array (E, 2) of ``(src, dst)`` pairs, sorted, without duplicates.
    """

    nodes: np.ndarray
    edges: np.ndarray

    @property
    def num_nodes(self) -> int:
        return int(self.nodes.shape[0])


def _tuple_of_ints(value: Any, name: str) -> tuple[int, ...]:
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise InvalidArchitecture(f"{name} must be a list of integers, got {value!r}")
    out = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise InvalidArchitecture(f"{name} must hold integers, got {v!r}")
        out.append(int(v))
    return tuple(out)


@dataclass(frozen=True)
class DetectorArch(Encoded):
    """One backbone of the NAS space (Table 3). Lists hold one entry per searched stage 2..7.

    Attributes:
        depths: blocks per stage, each within its stage's range of Table 3.
        expands: expand ratio per stage, in {4, 6}.
        kernels: depthwise kernel per stage, in {3, 5, 7}.
    """

    depths: tuple[int, ...]
    expands: tuple[int, ...]
    kernels: tuple[int, ...]

    space: ClassVar[str] = "detector_nas"
    VECTOR_DIM: ClassVar[int] = len(_SEARCHED) * 6  # 36

    def __post_init__(self) -> None:
        for name in ("depths", "expands", "kernels"):
            object.__setattr__(self, name, _tuple_of_ints(getattr(self, name), name))
        n = len(_SEARCHED)
        if not len(self.depths) == len(self.expands) == len(self.kernels) == n:
            raise InvalidArchitecture(
                f"depths, expands and kernels need one entry per searched stage 2..7 ({n}), got "
                f"{len(self.depths)}, {len(self.expands)} and {len(self.kernels)}"
            )
        problems = []
        for i, spec in enumerate(_SEARCHED):
            stage = i + 2
            if self.depths[i] not in spec.depths:
                problems.append(f"stage {stage} depth must be in {list(spec.depths)}, got {self.depths[i]}")
            if self.expands[i] not in spec.expands:
                problems.append(f"stage {stage} expand ratio must be in {list(spec.expands)}, got {self.expands[i]}")
            if self.kernels[i] not in spec.kernels:
                problems.append(f"stage {stage} kernel must be in {list(spec.kernels)}, got {self.kernels[i]}")
        if problems:
            raise InvalidArchitecture("; ".join(problems))

    # -- constructors -------------------------------------------------------------------------
    @classmethod
    def mobilenet_v2(cls) -> DetectorArch:
        """MobileNetV2's stage depths (2, 3, 4, 3, 3, 1), expand 6, kernel 3: the HPO runs' backbone (§B.1)."""
        return cls(depths=(2, 3, 4, 3, 3, 1), expands=(6,) * 6, kernels=(3,) * 6)

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> DetectorArch:
        payload = dict(payload)
        space = payload.pop("space", cls.space)
        if space != cls.space:
            raise InvalidArchitecture(f"encoding is for space {space!r}, expected {cls.space!r}")
        unknown = sorted(set(payload) - {"depths", "expands", "kernels"})
        if unknown:
            raise InvalidArchitecture(f"unknown field(s) {unknown} in a detector_nas encoding")
        missing = sorted({"depths", "expands", "kernels"} - set(payload))
        if missing:
            raise InvalidArchitecture(f"incomplete detector_nas encoding: missing {missing}")
        return cls(**payload)

    @classmethod
    def from_json(cls, text: str) -> DetectorArch:
        return cls.from_dict(json.loads(text))

    # -- derived values ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "space": self.space,
            "depths": list(self.depths),
            "expands": list(self.expands),
            "kernels": list(self.kernels),
        }

    def summary(self) -> str:
        """Per stage ``depth x e<expand>k<kernel>``, e.g. ``2xe6k3 3xe6k3 4xe6k3 3xe6k3 3xe6k3 1xe6k3``."""
        return " ".join(f"{d}xe{e}k{k}" for d, e, k in zip(self.depths, self.expands, self.kernels))

    def blocks(self) -> list[tuple[int, int, int, int, int, int]]:
        """Per MBConv block ``(stage, c_in, c_out, stride, expand, kernel)`` with Table 3's widths.

        The single source of truth for the backbone: the detector builds exactly these blocks (its
        ``width_mult`` scales the channel counts) and :meth:`to_graph` describes them.
        """
        out = []
        c_in = STAGES[0].width  # the stem's width equals stage 1's
        per_stage = [(1, 1, 3)] + list(zip(self.depths, self.expands, self.kernels))
        for stage, (spec, (depth, expand, kernel)) in enumerate(zip(STAGES, per_stage), start=1):
            for b in range(depth):
                stride = spec.stride if b == 0 else 1
                out.append((stage, c_in, spec.width, stride, expand, kernel))
                c_in = spec.width
        return out

    def to_graph(self) -> ArchGraph:
        """The backbone as a graph (:class:`ArchGraph` documents the layout)."""
        blocks = self.blocks()
        n = len(blocks) + 2
        col = {name: i for i, name in enumerate(NODE_FEATURES)}
        nodes = np.zeros((n, len(NODE_FEATURES)), dtype=np.float32)
        nodes[0, col["is_stem"]] = 1.0
        nodes[0, col["kernel_3"]] = 1.0
        nodes[0, col["width_rel"]] = STAGES[0].width / STAGES[-1].width
        nodes[-1, col["is_output"]] = 1.0
        last_of_stage = {stage: i + 1 for i, (stage, *_rest) in enumerate(blocks)}  # node index
        edges = {(i, i + 1) for i in range(n - 1)}
        for i, (stage, c_in, c_out, stride, expand, kernel) in enumerate(blocks):
            node = i + 1
            nodes[node, col["is_block"]] = 1.0
            nodes[node, col[f"kernel_{kernel}"]] = 1.0
            nodes[node, col[f"expand_{expand}"]] = 1.0
            nodes[node, col["stride_2"]] = float(stride == 2)
            nodes[node, col["width_rel"]] = c_out / STAGES[-1].width
            nodes[node, col[f"stage_{stage}"]] = 1.0
            if stride == 1 and c_in == c_out:
                edges.add((node - 1, node + 1))
        for stage in FPN_TAP_STAGES:
            tap = last_of_stage[stage]
            nodes[tap, col["fpn_tap"]] = 1.0
            edges.add((tap, n - 1))
        return ArchGraph(nodes=nodes, edges=np.array(sorted(edges), dtype=np.int64))

    def to_vector(self) -> np.ndarray:
        """Fixed-length float32 encoding of shape (36,): per stage 2..7, six numbers.

        Layout per stage: depth scaled to [0, 1] within its range (0 when the range has one value) |
        expand one-hot (4, 6) | kernel one-hot (3, 5, 7).
        """
        parts = []
        for spec, d, e, k in zip(_SEARCHED, self.depths, self.expands, self.kernels):
            lo, hi = min(spec.depths), max(spec.depths)
            row = np.zeros(6, dtype=np.float32)
            row[0] = 0.0 if hi == lo else (d - lo) / (hi - lo)
            row[1 + (4, 6).index(e)] = 1.0
            row[3 + _KERNELS.index(k)] = 1.0
            parts.append(row)
        return np.concatenate(parts)


class DetectorNasSpace(SearchSpace[DetectorArch]):
    """The NAS space of Table 3, or a sub-space with fewer choices per stage.

    Args:
        expands: expand ratios allowed in every searched stage (subset of {4, 6}).
        kernels: kernels allowed in every searched stage (subset of {3, 5, 7}).
        max_depths: optional per-stage upper bound on depth (6 entries), to scale the space down.

    Raises:
        ValueError: choices outside Table 3 or a depth bound below a stage's minimum.
    """

    name: ClassVar[str] = "detector_nas"

    def __init__(
        self,
        *,
        expands: tuple[int, ...] = (4, 6),
        kernels: tuple[int, ...] = _KERNELS,
        max_depths: tuple[int, ...] | None = None,
    ) -> None:
        problems = []
        if not expands or set(expands) - {4, 6}:
            problems.append(f"expands must be a non-empty subset of [4, 6], got {list(expands)}")
        if not kernels or set(kernels) - set(_KERNELS):
            problems.append(f"kernels must be a non-empty subset of {list(_KERNELS)}, got {list(kernels)}")
        caps = tuple(max_depths) if max_depths is not None else tuple(max(s.depths) for s in _SEARCHED)
        if len(caps) != len(_SEARCHED):
            problems.append(f"max_depths needs {len(_SEARCHED)} entries (stages 2..7), got {len(caps)}")
        else:
            for i, (spec, cap) in enumerate(zip(_SEARCHED, caps)):
                if cap < min(spec.depths):
                    problems.append(f"max_depths[{i}] (stage {i + 2}) must be >= {min(spec.depths)}, got {cap}")
        if problems:
            raise ValueError("; ".join(problems))
        self.expands = tuple(sorted(int(e) for e in expands))
        self.kernels = tuple(sorted(int(k) for k in kernels))
        self.depth_choices = tuple(tuple(d for d in s.depths if d <= cap) for s, cap in zip(_SEARCHED, caps))

    def sample(self, rng: np.random.Generator) -> DetectorArch:
        n = len(_SEARCHED)
        depths = tuple(int(c[rng.integers(len(c))]) for c in self.depth_choices)
        expands = tuple(int(self.expands[i]) for i in rng.integers(len(self.expands), size=n))
        kernels = tuple(int(self.kernels[i]) for i in rng.integers(len(self.kernels), size=n))
        return DetectorArch(depths=depths, expands=expands, kernels=kernels)

    def validate(self, arch: DetectorArch) -> None:
        if not isinstance(arch, DetectorArch):
            raise InvalidArchitecture(f"expected a DetectorArch, got {type(arch).__name__}")
        for i, d in enumerate(arch.depths):
            if d not in self.depth_choices[i]:
                raise InvalidArchitecture(f"stage {i + 2} depth must be in {list(self.depth_choices[i])}, got {d}")
        if set(arch.expands) - set(self.expands):
            raise InvalidArchitecture(f"expand ratios must be in {list(self.expands)}, got {list(arch.expands)}")
        if set(arch.kernels) - set(self.kernels):
            raise InvalidArchitecture(f"kernels must be in {list(self.kernels)}, got {list(arch.kernels)}")

    def from_json(self, text: str | dict[str, Any]) -> DetectorArch:
        payload = json.loads(text) if isinstance(text, str) else text
        arch = DetectorArch.from_dict(payload)
        self.validate(arch)
        return arch

    def enumerate(self) -> Iterator[DetectorArch]:
        """Every architecture in a fixed order (lazy: the full space has 7.6 million members)."""
        per_stage = [list(itertools.product(d, self.expands, self.kernels)) for d in self.depth_choices]
        for combo in itertools.product(*per_stage):
            depths, expands, kernels = zip(*combo)
            yield DetectorArch(depths=depths, expands=expands, kernels=kernels)

    def size(self) -> float:
        per_choice = len(self.expands) * len(self.kernels)
        return float(math.prod(len(d) * per_choice for d in self.depth_choices))

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "expands": list(self.expands),
            "kernels": list(self.kernels),
            "max_depths": [max(d) for d in self.depth_choices],
        }
