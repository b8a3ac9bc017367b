"""The MONAS multi-path supernet: D scales x L columns, one searchable edge per (column, scale pair).

Paper: ``monas-multipath-oneshot-nas-3d-face-alignment.txt`` §III-A, Eq. 1-4. The network is a grid of
nodes: column ``l`` in ``0..L-1`` holds one node per scale ``d`` in ``0..D-1`` (resolution ``H / 2**d``);
a node sums the outputs of its incoming edges (Eq. 1: every node of column ``l + 1`` may take every node of
column ``l``, at any scale). Each edge ``(l, d_out, d_in)`` is in one of three states (Eq. 2-4 folded into
one integer, ``search_algos.spaces.multipath``): none (absent), HPM (resample, then an HPM block) or
identity (resample only; the pure identity at the same scale). Column 0 is filled by the stem; the output
node is ``(L-1, scale 0)`` (DESIGN.md §1: output at the highest resolution), where a small head regresses
the UV position map.

Decisions where the paper is silent (DESIGN.md §1):

- **Channels per scale** ``c_d = channels * 2**min(d, 3)``: doubling per halving keeps the cost of every
  scale about equal (HRNet's rule); the cap at ``8 * channels`` bounds the parameters when ``D > 4`` (the
  paper's D = 4 never reaches it).
- **Resampling** ``d_in -> d_out``: down by ``d_out - d_in`` strided 3x3 convs, each halving the resolution
  and stepping the channels to the next scale's (conv-BN-ReLU between steps, conv-BN on the last, as
  HRNet); up by a 1x1 conv + BN to ``c_out`` followed by bilinear interpolation. The DESIGN says
  "interpolation + 1x1 conv": both are linear and bilinear weights sum to 1, so they commute (exactly
  without BN, up to BN's batch statistics with it) and the conv runs at the low resolution, 4**k times
  cheaper. Same scale: nothing (channels depend on the scale only, so they always agree).
- **Output** (B, 3, H, W): the UV position map normalised by the image size, ``uv_pixels / image_size``
  for x, y and z alike (z is in the same pixel units in 300W-LP's UV maps), so targets lie around
  [0, 1] whatever the image size; the loss and the metrics multiply by ``image_size`` again.

Execution skips dead branches: only the edges on a path from column 0 to the output node run
(:func:`active_plan`), and the stem computes only the scales those edges read. :meth:`MultipathSupernet.
child_model` extracts one child as a standalone, TorchScript-able module.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Dict, List

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from search_algos.spaces.multipath import EDGE_HPM, EDGE_IDENTITY, EDGE_NONE, active_edges

__all__ = [
    "ActivePlan",
    "HPMBlock",
    "MultipathChild",
    "MultipathSupernet",
    "active_plan",
    "edges_array",
    "make_resampler",
    "scale_channels",
]

_CHANNEL_CAP_DOUBLINGS = 3  # c_d stops growing after scale 3 (8x the base width)


def scale_channels(channels: int, scales: int) -> tuple[int, ...]:
    """Channels of each scale: ``c_d = channels * 2**min(d, 3)`` (see the module docstring)."""
    return tuple(channels * 2 ** min(d, _CHANNEL_CAP_DOUBLINGS) for d in range(scales))


# --------------------------------------------------------------------------------------------------
# Blocks
# --------------------------------------------------------------------------------------------------


def _bn_relu_conv(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        OrderedDict(
            bn=nn.BatchNorm2d(c_in),
            relu=nn.ReLU(),
            conv=nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        )
    )


class HPMBlock(nn.Module):
    """Hierarchical, parallel and multi-scale residual block (Bulat & Tzimiropoulos 2017), paper Eq. 4.

    Three 3x3 convs in series with ``C/2``, ``C/4``, ``C/4`` outputs, each taking the previous one's
    output (receptive fields 3, 5, 7: the "multi-scale" part); their outputs are concatenated back to
    ``C`` channels and added to the input.

    BN + ReLU placement: pre-activation (BN -> ReLU -> conv) on each conv, as in Bulat's block, and no
    activation after the sum. Two reasons: the residual path stays the exact identity, so an HPM edge is
    "identity + refinement" and the identity state is its special case; and the first BN normalises the
    block's input, which in a supernet is a node sum whose scale depends on how many edges the sampled
    child feeds into that node.

    Args:
        channels: ``C``, a multiple of 4.

    Shapes:
        ``(B, C, H, W) -> (B, C, H, W)``.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        if channels < 4 or channels % 4:
            raise ValueError(f"HPMBlock needs channels a multiple of 4 (C/2, C/4, C/4), but got {channels}")
        half, quarter = channels // 2, channels // 4
        self.conv1 = _bn_relu_conv(channels, half)
        self.conv2 = _bn_relu_conv(half, quarter)
        self.conv3 = _bn_relu_conv(quarter, quarter)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.conv1(x)  # (B, C/2, H, W)
        b = self.conv2(a)  # (B, C/4, H, W)
        c = self.conv3(b)  # (B, C/4, H, W)
        return x + torch.cat([a, b, c], dim=1)  # (B, C, H, W)


class _Upsample(nn.Module):
    """1x1 conv + BN at the low resolution, then bilinear interpolation by ``factor``."""

    def __init__(self, c_in: int, c_out: int, factor: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 1, bias=False)
        self.bn = nn.BatchNorm2d(c_out)
        self.factor = float(factor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.conv(x))  # (B, c_out, h, w)
        # (B, c_out, h * factor, w * factor)
        return F.interpolate(x, scale_factor=self.factor, mode="bilinear", align_corners=False)


def _down_step(c_in: int, c_out: int, last: bool) -> nn.Sequential:
    layers: OrderedDict[str, nn.Module] = OrderedDict(
        conv=nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False), bn=nn.BatchNorm2d(c_out)
    )
    if not last:
        layers["relu"] = nn.ReLU()
    return nn.Sequential(layers)


def make_resampler(d_in: int, d_out: int, channels: tuple[int, ...]) -> nn.Module:
    """The resampler of an edge from scale ``d_in`` to scale ``d_out``.

    Args:
        d_in: source scale (resolution ``H / 2**d_in``).
        d_out: target scale.
        channels: channels of every scale (:func:`scale_channels`).

    Returns:
        ``nn.Identity`` at the same scale; ``d_out - d_in`` strided 3x3 conv steps down (each to the
        next scale's channels); 1x1 conv + BN + bilinear x ``2**(d_in - d_out)`` up. Maps
        ``(B, c_in, H/2**d_in, W/2**d_in) -> (B, c_out, H/2**d_out, W/2**d_out)``.
    """
    if d_out == d_in:
        return nn.Identity()
    if d_out > d_in:
        steps = [_down_step(channels[d], channels[d + 1], last=d + 1 == d_out) for d in range(d_in, d_out)]
        return steps[0] if len(steps) == 1 else nn.Sequential(*steps)
    return _Upsample(channels[d_in], channels[d_out], factor=2 ** (d_in - d_out))


class _Stem(nn.Module):
    """Image -> column 0: a 3x3 conv to scale 0, then one strided 3x3 conv per further scale.

    Shapes: ``(B, in_channels, H, W) -> [(B, c_0, H, W), (B, c_1, H/2, W/2), ...]``, one tensor per module
    in ``down`` plus one.
    """

    def __init__(self, inp: nn.Module, down: list[nn.Module]) -> None:
        super().__init__()
        self.inp = inp
        self.down = nn.ModuleList(down)

    @classmethod
    def build(cls, in_channels: int, channels: tuple[int, ...]) -> _Stem:
        def conv_bn_relu(c_in: int, c_out: int, stride: int) -> nn.Sequential:
            return nn.Sequential(
                OrderedDict(
                    conv=nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
                    bn=nn.BatchNorm2d(c_out),
                    relu=nn.ReLU(),
                )
            )

        inp = conv_bn_relu(in_channels, channels[0], 1)
        return cls(inp, [conv_bn_relu(channels[d - 1], channels[d], 2) for d in range(1, len(channels))])

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        feats = [self.inp(x)]  # [(B, c_0, H, W)]
        for step in self.down:
            feats.append(step(feats[-1]))  # (B, c_d, H / 2**d, W / 2**d)
        return feats


def _head(channels: int) -> nn.Sequential:
    """Output node (scale 0) -> normalised UV map: conv-BN-ReLU, then a 3x3 conv to 3 channels."""
    return nn.Sequential(
        OrderedDict(
            conv=nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            bn=nn.BatchNorm2d(channels),
            relu=nn.ReLU(),
            out=nn.Conv2d(channels, 3, 3, padding=1),
        )
    )


class _Edge(nn.Module):
    """One supernet edge: its resampler and its HPM block (the HPM block runs in the HPM state only)."""

    def __init__(self, d_in: int, d_out: int, channels: tuple[int, ...]) -> None:
        super().__init__()
        self.resample = make_resampler(d_in, d_out, channels)
        self.hpm = HPMBlock(channels[d_out])

    def as_op(self, state: int) -> nn.Module:
        """The module this edge is in ``state`` (shared, not copied)."""
        return nn.Sequential(self.resample, self.hpm) if state == EDGE_HPM else self.resample


# --------------------------------------------------------------------------------------------------
# Execution plan
# --------------------------------------------------------------------------------------------------


def edges_array(arch: Any, layers: int, scales: int) -> np.ndarray:
    """``arch`` (a ``MultipathArch`` or its array) as an int8 array (L-1, D, D), checked against the net.

    Raises:
        ValueError: wrong shape or a state outside {none, HPM, identity} (``InvalidArchitecture`` is a
            ``ValueError``).
    """
    array = np.asarray(arch.as_array() if hasattr(arch, "as_array") else arch)
    if array.shape != (layers - 1, scales, scales):
        raise ValueError(
            f"arch must have edges of shape (layers-1, scales, scales) = {(layers - 1, scales, scales)} "
            f"for this supernet, but got {array.shape}"
        )
    bad = ~np.isin(array, (EDGE_NONE, EDGE_HPM, EDGE_IDENTITY))
    if bad.any():
        raise ValueError(
            f"edge states must be in {{{EDGE_NONE}, {EDGE_HPM}, {EDGE_IDENTITY}}}, but got "
            f"{sorted(set(array[bad].tolist()))}"
        )
    return array.astype(np.int8)


@dataclass(frozen=True)
class ActivePlan:
    """The edges a child runs, in execution order, and how many stem scales they read.

    Attributes:
        edges: ``(l, d_out, d_in, state)`` of every active edge (:func:`~search_algos.spaces.multipath.
            active_edges`: on a path from column 0 to the output), sorted by column, then ``d_out``, then
            ``d_in``, so node sums always add in the same order.
        stem_scales: scales of column 0 that are computed (``1 + max d_in`` over column 0's edges).
    """

    edges: tuple[tuple[int, int, int, int], ...]
    stem_scales: int


def active_plan(edges: np.ndarray) -> ActivePlan:
    """The :class:`ActivePlan` of an (L-1, D, D) edge array; dead edges are left out.

    Raises:
        ValueError: the output node ``(L-1, 0)`` gets no input.
    """
    run = active_edges(edges)  # (L-1, D_out, D_in) bool
    if not run[-1, 0].any():
        raise ValueError(
            f"the output node (column {len(edges)}, scale 0) has no path from the stem; the arch is "
            f"invalid:\n{edges}"
        )
    plan = tuple((int(l), int(o), int(i), int(edges[l, o, i])) for l, o, i in zip(*np.nonzero(run)))
    return ActivePlan(edges=plan, stem_scales=1 + max(i for l, _, i, _ in plan if l == 0))


# --------------------------------------------------------------------------------------------------
# Networks
# --------------------------------------------------------------------------------------------------


class MultipathChild(nn.Module):
    """One child network: its stem scales, its active edges in order, and the head. Needs no arch.

    Node ``(l, d)`` is slot ``l * D + d``; edge ``k`` reads slot ``src[k]`` and adds into ``dst[k]``.
    TorchScript-able (``torch.jit.script(child)``).

    Shapes:
        ``(B, in_channels, H, W) -> (B, 3, H, W)``; H and W multiples of ``2**d`` for every scale ``d``
        the edges reach (the supernet checks ``2**(D-1)``).
    """

    def __init__(
        self, stem: _Stem, ops: list[nn.Module], src: list[int], dst: list[int], out: int, head: nn.Module
    ) -> None:
        super().__init__()
        self.stem = stem
        self.ops = nn.ModuleList(ops)
        self.src: List[int] = list(src)
        self.dst: List[int] = list(dst)
        self.out = out
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes: Dict[int, torch.Tensor] = {}
        for d, feat in enumerate(self.stem(x)):
            nodes[d] = feat  # column 0, scale d: (B, c_d, H / 2**d, W / 2**d)
        for k, op in enumerate(self.ops):
            y = op(nodes[self.src[k]])  # (B, c_out, H / 2**d_out, W / 2**d_out)
            target = self.dst[k]
            if target in nodes:
                nodes[target] = nodes[target] + y
            else:
                nodes[target] = y
        return self.head(nodes[self.out])  # (B, 3, H, W)


class MultipathSupernet(nn.Module):
    """The MONAS supernet (paper §III-A): every edge of every column, each with a resampler and an HPM.

    Args:
        layers: ``L``, columns of nodes (``L - 1`` edge transitions); >= 2.
        scales: ``D``, scales per column; >= 1.
        channels: base width ``c_0`` (a multiple of 4); scale ``d`` has ``scale_channels(...)[d]``.
        in_channels: image channels.

    Shapes:
        ``forward(x, arch)``: ``(B, in_channels, H, W) -> (B, 3, H, W)``, the normalised UV map (module
        docstring); H and W must be multiples of ``2**(scales - 1)``.
    """

    def __init__(self, *, layers: int, scales: int, channels: int = 8, in_channels: int = 3) -> None:
        super().__init__()
        problems = []
        if layers < 2:
            problems.append(f"layers >= 2 must hold (one edge transition at least), but got layers={layers}")
        if scales < 1:
            problems.append(f"scales >= 1 must hold, but got scales={scales}")
        if channels < 4 or channels % 4:
            problems.append(f"channels must be a multiple of 4 (HPM splits C/2, C/4, C/4), but got {channels}")
        if in_channels < 1:
            problems.append(f"in_channels >= 1 must hold, but got in_channels={in_channels}")
        if problems:
            raise ValueError("invalid MultipathSupernet: " + "; ".join(problems))
        self.layers, self.scales, self.channels = layers, scales, channels
        self.scale_channels = scale_channels(channels, scales)
        self.stem = _Stem.build(in_channels, self.scale_channels)
        self.edges = nn.ModuleDict(
            {
                self.edge_name(l, o, i): _Edge(i, o, self.scale_channels)
                for l in range(layers - 1)
                for o in range(scales)
                for i in range(scales)
            }
        )
        self.head = _head(self.scale_channels[0])

    @staticmethod
    def edge_name(l: int, d_out: int, d_in: int) -> str:
        """Key of edge ``(l, d_out, d_in)`` in :attr:`edges` (and in the state dict: ``edges.<key>.``)."""
        return f"l{l}_o{d_out}_i{d_in}"

    def plan(self, arch: Any) -> ActivePlan:
        """The active edges of ``arch`` (a ``MultipathArch`` or its (L-1, D, D) array)."""
        return active_plan(edges_array(arch, self.layers, self.scales))

    def _view(self, plan: ActivePlan) -> MultipathChild:
        """A child that shares this supernet's modules (no copy): what ``forward`` runs."""
        stem = _Stem(self.stem.inp, list(self.stem.down[: plan.stem_scales - 1]))
        ops = [self.edges[self.edge_name(l, o, i)].as_op(state) for l, o, i, state in plan.edges]
        src = [l * self.scales + i for l, _, i, _ in plan.edges]
        dst = [(l + 1) * self.scales + o for l, o, _, _ in plan.edges]
        return MultipathChild(stem, ops, src, dst, out=(self.layers - 1) * self.scales, head=self.head)

    def forward(self, x: torch.Tensor, arch: Any) -> torch.Tensor:
        """Run the child ``arch`` on ``x`` (B, in_channels, H, W) -> (B, 3, H, W); dead edges do not run."""
        unit = 2 ** (self.scales - 1)
        if x.shape[-2] % unit or x.shape[-1] % unit:
            raise ValueError(
                f"image height and width must be multiples of 2**(scales-1) = {unit}, but got "
                f"{tuple(x.shape[-2:])}"
            )
        return self._view(self.plan(arch))(x)

    def child_params(self, arch: Any) -> int:
        """Parameters of ``arch``'s stand-alone network (:meth:`child_model`), counted without building it."""
        return sum(p.numel() for p in self._view(self.plan(arch)).parameters())

    def child_model(self, arch: Any, *, inherit_weights: bool = False) -> MultipathChild:
        """A standalone network of ``arch``'s active edges (stand-alone retraining; export).

        Args:
            arch: a ``MultipathArch`` or its (L-1, D, D) array.
            inherit_weights: copy this supernet's weights and BN statistics; by default every module is
                freshly initialised (from torch's global RNG; seed it for a reproducible init).

        Returns:
            A :class:`MultipathChild` holding copies of only the active edges' modules; ``forward(x)``
            needs no arch and equals ``self(x, arch)`` when ``inherit_weights``.
        """
        child = copy.deepcopy(self._view(self.plan(arch)))
        if not inherit_weights:
            for module in child.modules():
                if isinstance(module, (nn.Conv2d, nn.BatchNorm2d)):
                    module.reset_parameters()  # what a freshly constructed module holds
        return child
