"""RNAS-MER networks: hybrid 3D operations, the refined hybrid cell, the OPEN supernet and its decoded net.

Paper: ``rnas-mer-micro-expression-nas.txt`` (``shared/papers``):

- Table 1: the 14 hybrid operations (:data:`search_algos.spaces.rnas.HYBRID_OPS`): ``Add / Max / Avg``
  of two 3D convolutions ``nu_e`` (``e x e x e``) for ``e`` in ``{1, 3, 5}``, the single ``nu_1, nu_3,
  nu_5``, ``skip`` and ``none``. Each ``nu_e`` here is ReLU -> Conv3d(e) -> BatchNorm (DARTS order); the
  two convolutions of a pair have their own weights. The DARTS set (ablations, Table 3) in 3D is
  :data:`~search_algos.spaces.rnas.DARTS_OPS`.
- Eq. 1: partial channel connections (PC-DARTS): ``1/k`` of the channels (the mask ``M``) go through the
  softmax(alpha)-weighted mix, the rest bypass it; the two parts are concatenated and channel-shuffled.
- Eq. 2: edge normalisation: node ``j`` sums its incoming edges weighted by ``softmax(eta)``.
- Eq. 3-4: the cell's output is spatio-temporal attention over the *sum* of its N nodes. Eq. 4 adds
  two gates computed side by side from the same features ("in a decoupled manner", §3.1.1): channel
  attention (shared MLP over average- and max-pooled features) and spatial attention (a ``3 x 7 x 7``
  convolution over channel-wise average and max); the features are multiplied by the sum.
- Eq. 5-8: the OPEN outer space: states ``(layer, level)``, level ``j`` at down-sampling ``2 ** (j + 1)``
  and ``channels * 2 ** j`` channels; each state is the beta-weighted sum (Eq. 6) of its cell applied
  to each incoming state; strided convolutions reduce (stride ``(1, 2, 2)``: clips are short in time).
- Algorithm 1 decode stage: :meth:`RnasSupernet.genotype`; :class:`RnasNetwork` is the discrete network
  of a genotype, retrained under LOSO.

Shapes: clips are ``(B, 1, T, H, W)``; features ``(B, C, T, H', W')``.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from search_algos.spaces.rnas import (
    EXIT, OP_SETS, RnasGenotype, architecture_entropy, cell_edges, decode_genotype, transition_groups,
)

__all__ = [
    "MODEL_REVISION",
    "Attention3d",
    "BaselineC3D",
    "MixedOp",
    "RnasNetwork",
    "RnasSupernet",
    "SearchCell",
    "SupernetSpec",
    "baseline_for_params",
    "channel_shuffle",
    "count_params",
    "make_op",
    "model_size_mb",
]


MODEL_REVISION = 2
"""Bumped when the networks of a genotype compute something else (2: Eq. 4's added attention gates, was
CBAM's sequential ones). Stored LOSO results and search checkpoints of another revision are not reused."""


# -- operations (Table 1 and DARTS in 3D) ------------------------------------------------------------


class _Conv(nn.Sequential):
    """``nu_e``: ReLU -> Conv3d(e x e x e, same padding) -> BatchNorm3d."""

    def __init__(self, channels: int, kernel: int, affine: bool) -> None:
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv3d(channels, channels, kernel, padding=kernel // 2, bias=False),
            nn.BatchNorm3d(channels, affine=affine),
        )


class _Pair(nn.Module):
    """``Add / Max / Avg (nu_a, nu_b)`` of Table 1: two convolutions with their own weights, combined."""

    def __init__(self, combine: str, a: int, b: int, channels: int, affine: bool) -> None:
        super().__init__()
        self.combine = combine
        self.a, self.b = _Conv(channels, a, affine), _Conv(channels, b, affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _combine(self.combine, self.a(x), self.b(x))


class _Zero(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 0.0


class _SepConv(nn.Sequential):
    """DARTS's separable convolution in 3D: (ReLU, depthwise k, pointwise, BN) twice."""

    def __init__(self, channels: int, kernel: int, affine: bool) -> None:
        layers: list[nn.Module] = []
        for _ in range(2):
            layers += [
                nn.ReLU(inplace=False),
                nn.Conv3d(channels, channels, kernel, padding=kernel // 2, groups=channels, bias=False),
                nn.Conv3d(channels, channels, 1, bias=False),
                nn.BatchNorm3d(channels, affine=affine),
            ]
        super().__init__(*layers)


class _DilConv(nn.Sequential):
    """DARTS's dilated separable convolution in 3D (dilation 2)."""

    def __init__(self, channels: int, kernel: int, affine: bool) -> None:
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv3d(channels, channels, kernel, padding=kernel - 1, dilation=2, groups=channels, bias=False),
            nn.Conv3d(channels, channels, 1, bias=False),
            nn.BatchNorm3d(channels, affine=affine),
        )


class _Pool(nn.Module):
    """3x3x3 max or average pooling, stride 1, then BN (DARTS). Padding is explicit: torch refuses a
    3-wide window over a 2x2 map even with ``padding=1``; the average counts real voxels only."""

    def __init__(self, kind: str, channels: int, affine: bool) -> None:
        super().__init__()
        self.kind = kind
        self.bn = nn.BatchNorm3d(channels, affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "max":
            pooled = F.max_pool3d(F.pad(x, (1,) * 6, value=float("-inf")), 3, stride=1)
        else:
            ones = torch.ones_like(x[:1, :1])
            pooled = F.avg_pool3d(F.pad(x, (1,) * 6), 3, stride=1) / F.avg_pool3d(F.pad(ones, (1,) * 6), 3, stride=1)
        return self.bn(pooled)


def make_op(name: str, channels: int, affine: bool = True) -> nn.Module:
    """One operation of Table 1 (hybrid) or of DARTS, shape-preserving: ``(B, C, T, H, W) -> same``.

    Raises:
        ValueError: ``name`` is in neither set (the message lists both).
    """
    parts = name.split("_")
    if name == "none":
        return _Zero()
    if name == "skip":
        return nn.Identity()
    if name in ("max_pool_3", "avg_pool_3"):
        return _Pool(parts[0], channels, affine)
    if name in OP_SETS["hybrid"] and parts[0] in ("add", "max", "avg"):
        return _Pair(parts[0], int(parts[1]), int(parts[2]), channels, affine)
    if name in OP_SETS["hybrid"] and parts[0] == "conv":
        return _Conv(channels, int(parts[1]), affine)
    if name in ("sep_conv_3", "sep_conv_5"):
        return _SepConv(channels, int(parts[2]), affine)
    if name in ("dil_conv_3", "dil_conv_5"):
        return _DilConv(channels, int(parts[2]), affine)
    valid = sorted(set(OP_SETS["hybrid"]) | set(OP_SETS["darts"]))
    raise ValueError(f"unknown operation {name!r}; valid operations: {', '.join(valid)}")


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """ShuffleNet's channel shuffle: ``(B, g * m, ...) -> (B, m * g, ...)`` with channels interleaved."""
    b, c = x.shape[:2]
    rest = x.shape[2:]
    return x.view(b, groups, c // groups, *rest).transpose(1, 2).reshape(b, c, *rest)


def _combine(kind: str, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    if kind == "add":
        return a + b
    if kind == "max":
        return torch.maximum(a, b)
    return 0.5 * (a + b)


class _SharedHybrid(nn.Module):
    """All hybrid operations of one edge computed from ONE set of convolutions ``nu_1, nu_3, nu_5``.

    A weight-sharing relaxation for the search only (like Single-Path NAS's super-kernels): 3
    convolutions per edge instead of 21, so the supernet fits a 2-core budget. ``Add(nu_1, nu_3)``
    then reuses the ``nu_1`` of ``conv_1``; the decoded network always has independent weights.
    """

    def __init__(self, channels: int, ops: tuple[str, ...]) -> None:
        super().__init__()
        self.names = ops
        kernels = sorted({int(k) for name in ops for k in name.split("_")[1:] if name.split("_")[0] in ("add", "max", "avg", "conv")})
        self.convs = nn.ModuleDict({str(k): _Conv(channels, k, affine=False) for k in kernels})

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        nu = {int(k): conv(x) for k, conv in self.convs.items()}
        outs = []
        for name in self.names:
            parts = name.split("_")
            if name == "none":
                outs.append(x * 0.0)
            elif name == "skip":
                outs.append(x)
            elif parts[0] == "conv":
                outs.append(nu[int(parts[1])])
            else:
                outs.append(_combine(parts[0], nu[int(parts[1])], nu[int(parts[2])]))
        return outs


class MixedOp(nn.Module):
    """Eq. 1: ``sum_h softmax(alpha)_h h(M x) || (1 - M) x``, then channel shuffle (PC-DARTS).

    Args:
        channels: C of the edge.
        ops: operation names.
        partial: ``k``: ``C / k`` channels go through the operations (``1``: all of them, no shuffle).
        shared: compute the hybrid operations from one set of convolutions (:class:`_SharedHybrid`).
    """

    def __init__(self, channels: int, ops: tuple[str, ...], partial: int = 4, shared: bool = False) -> None:
        super().__init__()
        if partial < 1 or channels % partial:
            raise ValueError(f"channels ({channels}) must be a positive multiple of partial ({partial})")
        self.partial = partial
        width = channels // partial
        self.shared = _SharedHybrid(width, ops) if shared else None
        self.ops = nn.ModuleList() if shared else nn.ModuleList(make_op(name, width, affine=False) for name in ops)

    def candidates(self, selected: torch.Tensor) -> list[torch.Tensor]:
        """Every operation's output on the selected channels, in ``ops`` order."""
        if self.shared is not None:
            return self.shared(selected)
        return [op(selected) for op in self.ops]

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """``x``: (B, C, T, H, W); ``weights``: (|ops|,) softmax(alpha) of this edge."""
        k = self.partial
        selected = x[:, : x.shape[1] // k]  # M x: (B, C/k, T, H, W)
        mixed = sum(w * out for w, out in zip(weights, self.candidates(selected)))
        if k == 1:
            return mixed
        out = torch.cat([mixed, x[:, x.shape[1] // k:]], dim=1)  # (B, C, T, H, W)
        return channel_shuffle(out, k)


class Attention3d(nn.Module):
    """Eq. 4, 3D: ``ST(F) = sigma(MLP(AP F) + MLP(MP F)) + sigma(C_{3x7x7}([AP_c F; MP_c F]))``; out ``F * ST(F)``.

    Channel gate: one MLP ``C -> C/r -> C`` over the average- and max-pooled ``(T, H, W)``; spatial gate:
    a ``3 x 7 x 7`` convolution over the channel-wise mean and max of ``F``. Both gates see the same
    ``F`` and are *added*, as Eq. 4 writes them, so the multiplier lies in ``(0, 2)`` and is about 1 at
    initialisation. (CBAM applies the two gates one after the other, ``F * M_c * M_s``, which scales
    every cell's output by about 1/4 at initialisation; stacked six times without a shortcut that made
    the decoded networks fail to fit their training folds: see ``tests/trainables/microexpr/test_fit.py``.)
    """

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.mlp = nn.Sequential(nn.Conv3d(channels, hidden, 1), nn.ReLU(), nn.Conv3d(hidden, channels, 1))
        self.spatial = nn.Conv3d(2, 1, (3, 7, 7), padding=(1, 3, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        avg = F.adaptive_avg_pool3d(x, 1)  # (B, C, 1, 1, 1)
        mx = F.adaptive_max_pool3d(x, 1)
        channel = torch.sigmoid(self.mlp(avg) + self.mlp(mx))  # (B, C, 1, 1, 1)
        maps = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)  # (B, 2, T, H, W)
        spatial = torch.sigmoid(self.spatial(maps))  # (B, 1, T, H, W)
        return x * (channel + spatial)


class SearchCell(nn.Module):
    """The refined hybrid module during search (Eq. 1-3): N nodes of mixed ops, sum, attention.

    Inputs 0 and 1 (previous state, the one before) are already at this cell's resolution and width.
    """

    def __init__(self, channels: int, nodes: int, ops: tuple[str, ...], *, partial: int, attention: bool,
                 edge_norm: bool, shared: bool = False) -> None:
        super().__init__()
        self.nodes, self.edge_norm = nodes, edge_norm
        self.edges = nn.ModuleList(MixedOp(channels, ops, partial, shared) for _ in cell_edges(nodes))
        self.attention = Attention3d(channels) if attention else None

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, op_weights: torch.Tensor, eta: torch.Tensor) -> torch.Tensor:
        """``op_weights``: (E, |ops|) softmax(alpha); ``eta``: (E,) raw edge logits."""
        return self.forward_many([s0], s1, op_weights, eta)[0]

    def forward_many(self, firsts: list[torch.Tensor], s1: torch.Tensor, op_weights: torch.Tensor,
                     eta: torch.Tensor) -> list[torch.Tensor]:
        """The cell on each of several first inputs with one second input: ``[cell(s0, s1) for s0 in firsts]``.

        Eq. 6 applies a state's cell to the "stay" and the "down" predecessor with the same ``I^{l-2}``;
        the edges leaving that second input are computed once for both (the same values, and their
        BatchNorm statistics are updated once per forward).
        """
        starts, start = [], 0
        for n in range(self.nodes):
            starts.append(start)
            start += n + 2
        edge_ws = [torch.softmax(eta[b:b + n + 2], dim=0) if self.edge_norm else None for n, b in enumerate(starts)]
        from_s1 = [self.edges[b + 1](s1, op_weights[b + 1]) for b in starts]  # input 1 of every node
        outs = []
        for s0 in firsts:
            states = [s0, s1]
            for n, b in enumerate(starts):
                node = 0
                for i in range(n + 2):
                    out = from_s1[n] if i == 1 else self.edges[b + i](states[i], op_weights[b + i])
                    node = node + (edge_ws[n][i] * out if edge_ws[n] is not None else out)
                states.append(node)
            out = sum(states[2:])  # Eq. 3: the sum of the nodes
            outs.append(self.attention(out) if self.attention is not None else out)
        return outs


def _relu_conv_bn(c_in: int, c_out: int, kernel: int, stride: tuple[int, int, int], affine: bool) -> nn.Sequential:
    return nn.Sequential(
        nn.ReLU(inplace=False),
        nn.Conv3d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.BatchNorm3d(c_out, affine=affine),
    )


def _resample(c_in: int, c_out: int, steps: int, affine: bool) -> nn.Module:
    """1x1 convolution at equal resolution; else ``steps`` strided 3x3x3 convolutions (stride (1, 2, 2))."""
    if steps == 0:
        return _relu_conv_bn(c_in, c_out, 1, (1, 1, 1), affine)
    layers = []
    for s in range(steps):
        layers.append(_relu_conv_bn(c_in if s == 0 else c_out, c_out, 3, (1, 2, 2), affine))
    return nn.Sequential(*layers)


class _Stem(nn.Module):
    """Two stem states at level 0 (down-sampling 2): ``(B, 1, T, H, W) -> 2 x (B, C, T, H/2, W/2)``."""

    def __init__(self, in_channels: int, channels: int) -> None:
        super().__init__()
        self.stem0 = nn.Sequential(
            nn.Conv3d(in_channels, channels, 3, stride=(1, 2, 2), padding=1, bias=False), nn.BatchNorm3d(channels)
        )
        self.stem1 = _relu_conv_bn(channels, channels, 3, (1, 1, 1), True)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s0 = self.stem0(x)
        return s0, self.stem1(s0)


@dataclass(frozen=True)
class SupernetSpec:
    """The searched space and how the supernet relaxes it (ablation switches of Table 3).

    Attributes:
        channels: width at level 0; level j has ``channels * 2 ** j``.
        cells: L (paper: 6). nodes: N (DESIGN.md: 4). levels: resolutions (paper: 4, ``{2, 4, 8, 16}``).
        ops: ``hybrid`` (Table 1) or ``darts`` (ablations 1-2).
        partial: k of the partial channel connections (paper: 4; 1 = none, ablations 1 and 4).
        attention: spatio-temporal attention at the cell output (off: ablation 3).
        edge_norm: edge normalisation with eta (off: ablations 1 and 4).
        normalisation: beta normalisation (``outgoing`` or ``incoming``; see the space module).
        shared_kernels: hybrid operations of an edge share their convolutions during the search
            (:class:`_SharedHybrid`; hybrid set only).
    """

    channels: int = 8
    cells: int = 6
    nodes: int = 4
    levels: int = 4
    ops: str = "hybrid"
    partial: int = 4
    attention: bool = True
    edge_norm: bool = True
    normalisation: str = "outgoing"
    shared_kernels: bool = False
    num_classes: int = 3
    in_channels: int = 1


def _reach(layer: int, levels: int) -> int:
    """The deepest level a state of ``layer`` can be at (stems are layers -1 and 0, at level 0)."""
    return min(max(layer, 0), levels - 1)


class RnasSupernet(nn.Module):
    """The OPEN supernet (Eq. 6) over states ``(layer m = 1..L, level j)`` with one cell module per state.

    ``h(m, j) = sum_kind w[m-1, j, kind] * Cell_{m,j}(pre(h(m-1, j - kind)), pre2(h(m-2, j')))`` where
    ``kind`` 0 is "stay", 1 is "down" (a strided reduction), ``w`` = :func:`path_weights` of beta, and
    ``j' = min(j, deepest level of layer m-2)``. The logits sum a linear head over every final state.
    Architecture parameters: ``alpha (E, |ops|)`` and ``eta (E,)`` shared by all cells, ``beta (L, levels, 2)``.
    """

    def __init__(self, spec: SupernetSpec) -> None:
        super().__init__()
        self.spec = spec
        names = OP_SETS[spec.ops]
        edges = len(cell_edges(spec.nodes))
        gen = torch.Generator().manual_seed(0)
        self.alpha = nn.Parameter(1e-3 * torch.randn(edges, len(names), generator=gen))
        self.eta = nn.Parameter(1e-3 * torch.randn(edges, generator=gen))
        self.beta = nn.Parameter(1e-3 * torch.randn(spec.cells, spec.levels, 2, generator=gen))
        c = [spec.channels * 2**j for j in range(spec.levels)]
        self.stem = _Stem(spec.in_channels, spec.channels)
        self.cells = nn.ModuleDict()
        self.pre = nn.ModuleDict()
        for m in range(1, spec.cells + 1):
            for j in range(_reach(m, spec.levels) + 1):
                self.cells[f"{m}_{j}"] = SearchCell(c[j], spec.nodes, names, partial=spec.partial,
                                                    attention=spec.attention, edge_norm=spec.edge_norm,
                                                    shared=spec.shared_kernels and spec.ops == "hybrid")
                for kind in (0, 1):
                    src = j - kind
                    if 0 <= src <= _reach(m - 1, spec.levels):
                        self.pre[f"{m}_{j}_{kind}"] = _resample(c[src], c[j], kind, affine=False)
                src2 = min(j, _reach(m - 2, spec.levels))
                self.pre[f"{m}_{j}_pp"] = _resample(c[src2], c[j], j - src2, affine=False)
        final = _reach(spec.cells, spec.levels)
        self.heads = nn.ModuleList(nn.Linear(c[j], spec.num_classes) for j in range(final + 1))
        self._groups = transition_groups(spec.cells, spec.levels, spec.normalisation)

    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.alpha, self.eta, self.beta]

    def weight_parameters(self) -> list[nn.Parameter]:
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    def path_weights(self) -> torch.Tensor:
        """Eq. 7-8 in torch (differentiable), the same groups as the space's :func:`path_weights`."""
        spec = self.spec
        zero = self.beta.new_zeros(())
        exit_logit = self.beta.new_full((), EXIT)  # the deepest level's exit (outgoing reading of Eq. 7)
        out = [[[zero, zero] for _ in range(spec.levels)] for _ in range(spec.cells)]
        for k, group in self._groups:
            logits = [self.beta[k, t, kind] if t < spec.levels else exit_logit for t, kind in group]
            weights = torch.softmax(torch.stack(logits), dim=0)
            for (t, kind), w in zip(group, weights):
                if t < spec.levels:
                    out[k][t][kind] = w
        return torch.stack([torch.stack([torch.stack(pair) for pair in row]) for row in out])  # (L, levels, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spec = self.spec
        op_w = torch.softmax(self.alpha, dim=-1)  # (E, |ops|)
        path_w = self.path_weights()  # (L, levels, 2)
        s_prev, s_cur = self.stem(x)
        layers: list[dict[int, torch.Tensor]] = [{0: s_prev}, {0: s_cur}]  # layers -1 and 0
        for m in range(1, spec.cells + 1):
            before, last = layers[-2], layers[-1]
            states: dict[int, torch.Tensor] = {}
            for j in range(_reach(m, spec.levels) + 1):
                cell = self.cells[f"{m}_{j}"]
                pp = self.pre[f"{m}_{j}_pp"](before[min(j, max(before))])
                kinds = [kind for kind in (0, 1) if f"{m}_{j}_{kind}" in self.pre]
                prevs = [self.pre[f"{m}_{j}_{kind}"](last[j - kind]) for kind in kinds]
                outs = cell.forward_many(prevs, pp, op_w, self.eta)
                states[j] = sum(path_w[m - 1, j, kind] * out for kind, out in zip(kinds, outs))
            layers.append(states)
        final = layers[-1]
        return sum(head(final[j].mean(dim=(2, 3, 4))) for j, head in enumerate(self.heads))  # (B, classes)

    def entropy(self) -> dict[str, float]:
        """:func:`~search_algos.spaces.rnas.architecture_entropy` of the current ``alpha, eta, beta``."""
        spec = self.spec
        eta = self.eta.detach().cpu().numpy() if spec.edge_norm else np.zeros(self.eta.shape)
        return architecture_entropy(self.alpha.detach().cpu().numpy(), eta, self.beta.detach().cpu().numpy(),
                                    normalisation=spec.normalisation)

    def genotype(self) -> RnasGenotype:
        """The decode stage: Viterbi path over beta and the top-2 cell from alpha and eta."""
        spec = self.spec
        eta = self.eta.detach().cpu().numpy() if spec.edge_norm else np.zeros(self.eta.shape)
        return decode_genotype(
            self.alpha.detach().cpu().numpy(), eta, self.beta.detach().cpu().numpy(),
            ops=spec.ops, attention=spec.attention, normalisation=spec.normalisation,
        )


class _FixedCell(nn.Module):
    """A decoded cell: each node sums its two chosen operations; the output is attention over the sum."""

    def __init__(self, channels: int, genes: tuple[tuple[tuple[int, str], ...], ...], attention: bool) -> None:
        super().__init__()
        self.genes = genes
        self.ops = nn.ModuleList(make_op(op, channels, affine=True) for node in genes for _, op in node)
        self.attention = Attention3d(channels) if attention else None

    def forward(self, s0: torch.Tensor, s1: torch.Tensor) -> torch.Tensor:
        states = [s0, s1]
        index = 0
        for node in self.genes:
            total = 0
            for i, _ in node:
                total = total + self.ops[index](states[i])
                index += 1
            states.append(total)
        out = sum(states[2:])
        return self.attention(out) if self.attention is not None else out


class RnasNetwork(nn.Module):
    """The discrete network of a genotype: stems, one cell per path step, a linear head on the last state.

    Cell ``m`` (at level ``p_m``) receives the previous state (``p_{m-1}``, reduced once if the path goes
    down) and the one before (``p_{m-2}``, reduced 0-2 times); the stems are at level 0.
    """

    def __init__(self, genotype: RnasGenotype, *, channels: int, num_classes: int, in_channels: int = 1,
                 dropout: float = 0.2) -> None:
        super().__init__()
        self.genotype = genotype
        c = [channels * 2**j for j in range(genotype.levels)]
        levels = (0, 0, *genotype.path)  # stem0, stem1, cells
        self.stem = _Stem(in_channels, channels)
        self.pre0, self.pre1, self.cells = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        for m in range(len(genotype.path)):
            j, j1, j2 = levels[m + 2], levels[m + 1], levels[m]
            self.pre0.append(_resample(c[j1], c[j], j - j1, affine=True))
            self.pre1.append(_resample(c[j2], c[j], j - j2, affine=True))
            self.cells.append(_FixedCell(c[j], genotype.cell, genotype.attention))
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(c[genotype.path[-1]], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s_before, s_last = self.stem(x)
        for pre0, pre1, cell in zip(self.pre0, self.pre1, self.cells):
            s_before, s_last = s_last, cell(pre0(s_last), pre1(s_before))
        return self.head(self.dropout(s_last.mean(dim=(2, 3, 4))))  # (B, classes)


class BaselineC3D(nn.Module):
    """A hand-designed 3D CNN (C3D-like): four conv-BN-ReLU blocks of widths w, 2w, 4w, 4w.

    The first convolution halves space (``stem_stride`` 2, like the RNAS stems), max pooling halves
    space after block 1 and time and space after blocks 2 and 3; global average pooling and a linear
    head follow. Used as the LOSO baseline at a parameter count close to the searched network's; the
    early down-sampling keeps its compute near the searched network's too (parameters sit in the deep,
    low-resolution blocks of both).
    """

    def __init__(self, width: int, *, num_classes: int, in_channels: int = 1, dropout: float = 0.2,
                 stem_stride: int = 2) -> None:
        super().__init__()
        widths = [width, 2 * width, 4 * width, 4 * width]
        pools = [(1, 2, 2), (2, 2, 2), (2, 2, 2), None]
        layers: list[nn.Module] = []
        c_in = in_channels
        for i, (w, pool) in enumerate(zip(widths, pools)):
            stride = (1, stem_stride, stem_stride) if i == 0 else (1, 1, 1)
            layers += [nn.Conv3d(c_in, w, 3, stride=stride, padding=1, bias=False), nn.BatchNorm3d(w), nn.ReLU()]
            if pool is not None:
                layers.append(nn.MaxPool3d(pool, ceil_mode=True))
            c_in = w
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(c_in, num_classes)
        self.width = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(x).mean(dim=(2, 3, 4))))  # (B, classes)


def count_params(model: nn.Module) -> int:
    return int(sum(p.numel() for p in model.parameters()))


def model_size_mb(model: nn.Module) -> float:
    """Bytes of the saved ``state_dict`` (float32), in MB (10^6 bytes): Table 5's "memory"."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.tell() / 1e6


def baseline_for_params(params: int, *, num_classes: int, in_channels: int = 1) -> BaselineC3D:
    """The :class:`BaselineC3D` whose parameter count is closest to ``params`` (width 2..256).

    The count grows with the width, so a bisection finds the two widths around ``params``.
    """

    def size(width: int) -> int:
        return count_params(BaselineC3D(width, num_classes=num_classes, in_channels=in_channels))

    low, high = 2, 256
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (mid, high) if size(mid) <= params else (low, mid)
    best = min((low, high), key=lambda w: (abs(size(w) - params), w))
    return BaselineC3D(best, num_classes=num_classes, in_channels=in_channels)
