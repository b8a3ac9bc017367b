"""The global CNN space of Efficient Global NAS (search depth, width, per-layer op and kernel).

Paper: ``efficient-global-nas-macro-micro.txt`` §3.1. A network is a plain stack of ``depth``
convolutional layers (no pooling, no skip connections, no FC layers: global average pooling and one
linear head). Only the first layer's width is searched; channels double, with stride 2, at fixed
fractions of the depth (``REDUCTION_FRACTIONS``). Each layer's operation is a depthwise-separable
(``sep``) or plain (``conv``) convolution with kernel 3 or 5. Space size: Eq. 1,
``N_arch = (O * K) ** D_f * D * W``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from search_algos.spaces.base import Encoded, InvalidArchitecture, SearchSpace

__all__ = [
    "EqualParamsSpace",
    "GlobalArch",
    "GlobalSpace",
    "OPS",
    "KERNELS",
    "REDUCTION_FRACTIONS",
    "count_params",
    "layer_plan",
]

OPS: tuple[str, ...] = ("sep", "conv")
KERNELS: tuple[int, ...] = (3, 5)
# Channels double (stride 2) at 1/3 and 2/3 of the depth, as in the cell stacks the paper builds on
# (DARTS [15]); the paper fixes a doubling rate but not the positions.
REDUCTION_FRACTIONS: tuple[float, ...] = (1 / 3, 2 / 3)
_SHORT = {"sep": "s", "conv": "c"}


@dataclass(frozen=True)
class GlobalArch(Encoded):
    """One network of the global space.

    Attributes:
        depth: number of convolutional layers (>= 1).
        width: output channels of the first layer (>= 1); doubles at each reduction layer.
        ops: per-layer operation, each in :data:`OPS`.
        kernels: per-layer kernel size, each in :data:`KERNELS`.
    """

    depth: int
    width: int
    ops: tuple[str, ...]
    kernels: tuple[int, ...]

    space: ClassVar[str] = "global"

    def __post_init__(self) -> None:
        # Accept lists from JSON but store tuples so the value stays hashable and frozen.
        object.__setattr__(self, "ops", tuple(self.ops))
        object.__setattr__(self, "kernels", tuple(int(k) for k in self.kernels))
        if not isinstance(self.depth, int) or isinstance(self.depth, bool) or self.depth < 1:
            raise InvalidArchitecture(f"depth must be an integer >= 1, got {self.depth!r}")
        if not isinstance(self.width, int) or isinstance(self.width, bool) or self.width < 1:
            raise InvalidArchitecture(f"width must be an integer >= 1, got {self.width!r}")
        if len(self.ops) != self.depth or len(self.kernels) != self.depth:
            raise InvalidArchitecture(
                f"ops and kernels need one entry per layer (depth={self.depth}), "
                f"got {len(self.ops)} ops and {len(self.kernels)} kernels"
            )
        bad_ops = sorted({o for o in self.ops if o not in OPS})
        if bad_ops:
            raise InvalidArchitecture(f"unknown op(s) {bad_ops}; valid ops: {list(OPS)}")
        bad_k = sorted({k for k in self.kernels if k not in KERNELS})
        if bad_k:
            raise InvalidArchitecture(f"unknown kernel size(s) {bad_k}; valid kernels: {list(KERNELS)}")

    # -- constructors -------------------------------------------------------------------------
    @classmethod
    def uniform(cls, depth: int, width: int, op: str = "sep", kernel: int = 3) -> GlobalArch:
        """All layers share one op and kernel (the macro search's starting point, Algorithm 1)."""
        return cls(depth=depth, width=width, ops=(op,) * depth, kernels=(kernel,) * depth)

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> GlobalArch:
        payload = dict(payload)
        space = payload.pop("space", cls.space)
        if space != cls.space:
            raise InvalidArchitecture(f"encoding is for space {space!r}, expected {cls.space!r}")
        unknown = sorted(set(payload) - {"depth", "width", "ops", "kernels"})
        if unknown:
            raise InvalidArchitecture(f"unknown field(s) {unknown} in a global-space encoding")
        try:
            return cls(**payload)
        except TypeError as exc:  # a missing field
            raise InvalidArchitecture(f"incomplete global-space encoding: {exc}") from None

    # -- derived values ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "space": self.space,
            "depth": self.depth,
            "width": self.width,
            "ops": list(self.ops),
            "kernels": list(self.kernels),
        }

    def summary(self) -> str:
        """A short human line, e.g. ``D=5 W=32 [s3 s3 c5 s3 s5]``."""
        layers = " ".join(f"{_SHORT[o]}{k}" for o, k in zip(self.ops, self.kernels))
        return f"D={self.depth} W={self.width} [{layers}]"

    def with_layer(self, index: int, *, op: str | None = None, kernel: int | None = None) -> GlobalArch:
        """A copy with layer ``index`` changed (micro search, Algorithm 1)."""
        if not 0 <= index < self.depth:
            raise InvalidArchitecture(f"layer index must be in [0, {self.depth - 1}], got {index}")
        ops, kernels = list(self.ops), list(self.kernels)
        if op is not None:
            ops[index] = op
        if kernel is not None:
            kernels[index] = kernel
        return dataclasses.replace(self, ops=tuple(ops), kernels=tuple(kernels))

    def grown(self) -> GlobalArch:
        """One more layer, appended as ``sep`` 3x3 (macro Grow step)."""
        return GlobalArch(self.depth + 1, self.width, self.ops + ("sep",), self.kernels + (3,))

    def with_width(self, width: int) -> GlobalArch:
        return dataclasses.replace(self, width=width)


def layer_plan(arch: GlobalArch, in_channels: int) -> list[tuple[int, int, int, str, int]]:
    """Per layer ``(c_in, c_out, stride, op, kernel)``, the single source of truth for the model.

    The trainable builds exactly these layers and :func:`count_params` counts them, so the two
    cannot drift apart.
    """
    reductions = {min(int(arch.depth * f), arch.depth - 1) for f in REDUCTION_FRACTIONS}
    plan = []
    c_in, c = in_channels, arch.width
    for i, (op, k) in enumerate(zip(arch.ops, arch.kernels)):
        stride = 2 if i in reductions else 1
        c_out = c * 2 if (stride == 2 and i > 0) else c
        plan.append((c_in, c_out, stride, op, k))
        c_in = c = c_out
    return plan


def count_params(arch: GlobalArch, *, in_channels: int, num_classes: int) -> int:
    """Trainable parameters of the network, without building it.

    ``sep``: depthwise k x k (no bias) + pointwise 1x1 (no bias) + BatchNorm(c_out).
    ``conv``: k x k (no bias) + BatchNorm(c_out). Head: Linear(c_last, num_classes).
    """
    total = 0
    c_last = in_channels
    for c_in, c_out, _stride, op, k in layer_plan(arch, in_channels):
        if op == "sep":
            total += c_in * k * k + c_in * c_out
        else:
            total += c_in * c_out * k * k
        total += 2 * c_out
        c_last = c_out
    return total + c_last * num_classes + num_classes


class GlobalSpace(SearchSpace[GlobalArch]):
    """Bounds of the global space (paper defaults: depth 5..100, width 16..128 step 2).

    Args:
        d_min, d_max: depth bounds (inclusive).
        w_min, w_max, w_step: first-layer width grid ``w_min, w_min + w_step, ..., <= w_max``.
        ops, kernels: the per-layer choices (subsets of :data:`OPS`, :data:`KERNELS`).

    Raises:
        ValueError: when the bounds are inconsistent.
    """

    name: ClassVar[str] = "global"

    def __init__(
        self,
        *,
        d_min: int = 5,
        d_max: int = 100,
        w_min: int = 16,
        w_max: int = 128,
        w_step: int = 2,
        ops: tuple[str, ...] = OPS,
        kernels: tuple[int, ...] = KERNELS,
    ) -> None:
        problems = []
        if not 1 <= d_min <= d_max:
            problems.append(f"1 <= d_min <= d_max must hold, but got d_min={d_min}, d_max={d_max}")
        if not 1 <= w_min <= w_max:
            problems.append(f"1 <= w_min <= w_max must hold, but got w_min={w_min}, w_max={w_max}")
        if w_step < 1:
            problems.append(f"w_step must be >= 1, got {w_step}")
        if not ops or set(ops) - set(OPS):
            problems.append(f"ops must be a non-empty subset of {list(OPS)}, got {list(ops)}")
        if not kernels or set(kernels) - set(KERNELS):
            problems.append(f"kernels must be a non-empty subset of {list(KERNELS)}, got {list(kernels)}")
        if problems:
            raise ValueError("; ".join(problems))
        self.d_min, self.d_max = d_min, d_max
        self.w_min, self.w_max, self.w_step = w_min, w_max, w_step
        self.ops, self.kernels = tuple(ops), tuple(kernels)

    @property
    def widths(self) -> list[int]:
        return list(range(self.w_min, self.w_max + 1, self.w_step))

    def sample(self, rng: np.random.Generator) -> GlobalArch:
        depth = int(rng.integers(self.d_min, self.d_max + 1))
        width = int(rng.choice(self.widths))
        ops = tuple(str(self.ops[i]) for i in rng.integers(0, len(self.ops), size=depth))
        kernels = tuple(int(self.kernels[i]) for i in rng.integers(0, len(self.kernels), size=depth))
        return GlobalArch(depth=depth, width=width, ops=ops, kernels=kernels)

    def validate(self, arch: GlobalArch) -> None:
        if not self.d_min <= arch.depth <= self.d_max:
            raise InvalidArchitecture(f"depth must be in [{self.d_min}, {self.d_max}], got {arch.depth}")
        if arch.width not in self.widths:
            raise InvalidArchitecture(
                f"width must be in {self.w_min}..{self.w_max} step {self.w_step}, got {arch.width}"
            )
        if set(arch.ops) - set(self.ops):
            raise InvalidArchitecture(f"ops must be in {list(self.ops)}, got {sorted(set(arch.ops))}")
        if set(arch.kernels) - set(self.kernels):
            raise InvalidArchitecture(f"kernels must be in {list(self.kernels)}, got {sorted(set(arch.kernels))}")

    def from_json(self, text: str | dict[str, Any]) -> GlobalArch:
        import json

        payload = json.loads(text) if isinstance(text, str) else text
        arch = GlobalArch.from_dict(payload)
        self.validate(arch)
        return arch

    def size(self, final_depth: int | None = None) -> float:
        """Eq. 1: ``(O*K)**D_f * D * W``; without ``final_depth``, the exact count over all depths."""
        n_w = len(self.widths)
        choices = len(self.ops) * len(self.kernels)
        if final_depth is not None:
            return float(choices) ** final_depth * (self.d_max - self.d_min + 1) * n_w
        return math.fsum(float(choices) ** d * n_w for d in range(self.d_min, self.d_max + 1))

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "d_min": self.d_min,
            "d_max": self.d_max,
            "w_min": self.w_min,
            "w_max": self.w_max,
            "w_step": self.w_step,
            "ops": list(self.ops),
            "kernels": list(self.kernels),
        }


class EqualParamsSpace(GlobalSpace):
    """The networks of a global space whose parameter count lies within ``band`` of ``params``.

    Why (issue 13): the paper's RI (§4.1) compares the searched network with random networks of the
    whole space, so a search that ends on a larger network than the average random one wins by size
    alone. The baseline drawn here has the searched network's size: RI against it measures what the
    search found beyond parameters.

    :meth:`sample` draws from the bounds' own distribution and keeps the first network inside the band
    (rejection sampling: the conditional distribution, deterministic in the generator).

    Args:
        space: the bounds (depth, width, ops, kernels).
        params: the target parameter count (the searched network's :func:`count_params`).
        band: relative half-width: counts in ``[params (1 - band), params (1 + band)]`` are accepted.
        in_channels, num_classes: the dataset's, for :func:`count_params`.
        max_draws: draws before :meth:`sample` gives up (a band the bounds cannot reach).

    Raises:
        ValueError: for a band outside (0, 1) or a target below 1.
    """

    def __init__(
        self,
        space: GlobalSpace,
        *,
        params: int,
        band: float,
        in_channels: int,
        num_classes: int,
        max_draws: int = 100_000,
    ) -> None:
        if not 0.0 < band < 1.0 or params < 1:
            raise ValueError(f"EqualParamsSpace needs 0 < band < 1 and params >= 1, got band={band}, params={params}")
        super().__init__(
            d_min=space.d_min, d_max=space.d_max, w_min=space.w_min, w_max=space.w_max, w_step=space.w_step,
            ops=space.ops, kernels=space.kernels,
        )
        self.params, self.band = int(params), float(band)
        self.in_channels, self.num_classes = in_channels, num_classes
        self.max_draws = max_draws

    @property
    def bounds(self) -> tuple[float, float]:
        return self.params * (1.0 - self.band), self.params * (1.0 + self.band)

    def sample(self, rng: np.random.Generator) -> GlobalArch:
        low, high = self.bounds
        for _ in range(self.max_draws):
            arch = super().sample(rng)
            if low <= count_params(arch, in_channels=self.in_channels, num_classes=self.num_classes) <= high:
                return arch
        raise ValueError(
            f"no network of the space has {low:.0f}-{high:.0f} parameters in {self.max_draws} draws: "
            "widen the band or the space's bounds"
        )

    def validate(self, arch: GlobalArch) -> None:
        super().validate(arch)
        low, high = self.bounds
        n = count_params(arch, in_channels=self.in_channels, num_classes=self.num_classes)
        if not low <= n <= high:
            raise InvalidArchitecture(f"parameters must be in [{low:.0f}, {high:.0f}], got {n}")

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "params": self.params, "band": self.band}
