"""RNAS-MER operations, mixed op, partial channels, attention, cells and networks (no Ray)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from search_algos.spaces.rnas import DARTS_OPS, HYBRID_OPS, RnasGenotype, path_weights
from trainables.microexpr.model import (
    Attention3d, BaselineC3D, MixedOp, RnasNetwork, RnasSupernet, SearchCell, SupernetSpec, baseline_for_params,
    channel_shuffle, count_params, make_op, model_size_mb,
)

torch.set_num_threads(1)


def _x(c: int = 4, requires_grad: bool = True) -> torch.Tensor:
    torch.manual_seed(0)
    return torch.randn(2, c, 4, 6, 6, requires_grad=requires_grad)  # (B, C, T, H, W)


@pytest.mark.parametrize("name", sorted(set(HYBRID_OPS) | set(DARTS_OPS)))
def test_every_op_keeps_the_shape_and_passes_gradients(name):
    op = make_op(name, 4, affine=True)
    x = _x()
    y = op(x)
    assert y.shape == x.shape
    (y * torch.arange(y.numel()).view_as(y).float()).sum().backward()
    grad = x.grad
    assert grad is not None and torch.isfinite(grad).all()
    if name == "none":
        assert torch.count_nonzero(grad) == 0 and torch.count_nonzero(y) == 0
    else:
        assert torch.count_nonzero(grad) > 0
    for p in op.parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all()


def test_pairs_combine_two_independent_convolutions():
    x = _x(requires_grad=False)
    for kind, ref in (("add", lambda a, b: a + b), ("max", torch.maximum), ("avg", lambda a, b: (a + b) / 2)):
        op = make_op(f"{kind}_1_5", 4).eval()
        assert op.a[1].kernel_size == (1, 1, 1) and op.b[1].kernel_size == (5, 5, 5)
        assert not torch.equal(op.a[1].weight.flatten()[:4], op.b[1].weight.flatten()[:4])
        torch.testing.assert_close(op(x), ref(op.a(x), op.b(x)))
    with pytest.raises(ValueError, match="valid operations"):
        make_op("conv_7x", 4)


def test_mixed_op_is_the_weighted_sum_of_its_ops():
    mixed = MixedOp(4, HYBRID_OPS, partial=1).eval()
    x = _x(requires_grad=False)
    w = torch.softmax(torch.randn(len(HYBRID_OPS)), 0)
    want = torch.zeros_like(x)
    for i in range(len(HYBRID_OPS)):
        want = want + w[i] * mixed.ops[i](x)
    torch.testing.assert_close(mixed(x, w), want)


def test_channel_shuffle_by_hand():
    x = torch.arange(8.0).view(1, 8, 1, 1, 1)
    assert channel_shuffle(x, 4).flatten().tolist() == [0, 2, 4, 6, 1, 3, 5, 7]
    assert channel_shuffle(x, 2).flatten().tolist() == [0, 4, 1, 5, 2, 6, 3, 7]


def test_partial_channels_are_mixed_then_concatenated_with_the_bypass_then_shuffled():
    mixed = MixedOp(8, HYBRID_OPS, partial=4).eval()
    x = _x(8, requires_grad=False)
    w = torch.softmax(torch.randn(len(HYBRID_OPS)), 0)
    selected = x[:, :2]
    mix = sum(w[i] * mixed.ops[i](selected) for i in range(len(HYBRID_OPS)))
    joined = torch.cat([mix, x[:, 2:]], dim=1)
    order = [0, 2, 4, 6, 1, 3, 5, 7]  # shuffle of 8 channels in 4 groups, by hand
    torch.testing.assert_close(mixed(x, w), joined[:, order])
    out = mixed(x, w)
    for position, source in enumerate(order):  # the bypassed channels (2..7) are the input's own
        if source >= 2:
            torch.testing.assert_close(out[:, position], x[:, source])


def test_shared_kernels_build_each_hybrid_from_the_same_convolutions():
    mixed = MixedOp(4, HYBRID_OPS, partial=1, shared=True).eval()
    x = _x(requires_grad=False)
    nu = {k: mixed.shared.convs[str(k)](x) for k in (1, 3, 5)}
    outs = mixed.candidates(x)
    torch.testing.assert_close(outs[HYBRID_OPS.index("add_1_3")], nu[1] + nu[3])
    torch.testing.assert_close(outs[HYBRID_OPS.index("max_3_5")], torch.maximum(nu[3], nu[5]))
    torch.testing.assert_close(outs[HYBRID_OPS.index("avg_1_5")], (nu[1] + nu[5]) / 2)
    torch.testing.assert_close(outs[HYBRID_OPS.index("conv_5")], nu[5])
    torch.testing.assert_close(outs[HYBRID_OPS.index("skip")], x)
    w = torch.softmax(torch.randn(len(HYBRID_OPS)), 0)
    torch.testing.assert_close(mixed(x, w), sum(wi * o for wi, o in zip(w, outs)))


def test_attention_adds_the_channel_and_spatial_gates_of_eq4():
    att = Attention3d(8)
    for p in att.parameters():
        torch.nn.init.zeros_(p)
    x = _x(8, requires_grad=False)
    torch.testing.assert_close(att(x), x * 1.0)  # sigmoid(0) + sigmoid(0): the features pass unscaled
    torch.manual_seed(1)
    att = Attention3d(8)
    ca = torch.sigmoid(att.mlp(x.mean(dim=(2, 3, 4), keepdim=True)) + att.mlp(x.amax(dim=(2, 3, 4), keepdim=True)))
    sa = torch.sigmoid(att.spatial(torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], 1)))
    torch.testing.assert_close(att(x), x * (ca + sa))


def test_search_cell_edge_normalisation_against_explicit_sum():
    cell = SearchCell(4, 2, HYBRID_OPS, partial=1, attention=False, edge_norm=True).eval()
    s0, s1 = _x(requires_grad=False), _x(requires_grad=False) * 2
    alpha = torch.randn(5, len(HYBRID_OPS))
    eta = torch.randn(5)
    w = torch.softmax(alpha, -1)
    e0, e1 = torch.softmax(eta[:2], 0), torch.softmax(eta[2:], 0)
    n0 = e0[0] * cell.edges[0](s0, w[0]) + e0[1] * cell.edges[1](s1, w[1])
    n1 = e1[0] * cell.edges[2](s0, w[2]) + e1[1] * cell.edges[3](s1, w[3]) + e1[2] * cell.edges[4](n0, w[4])
    torch.testing.assert_close(cell(s0, s1, w, eta), n0 + n1)


def test_search_cell_on_two_first_inputs_equals_two_calls():
    cell = SearchCell(4, 3, HYBRID_OPS, partial=2, attention=True, edge_norm=True).eval()
    s0a, s0b, s1 = _x(requires_grad=False), _x(requires_grad=False) * -1.5, _x(requires_grad=False) * 2
    w = torch.softmax(torch.randn(9, len(HYBRID_OPS)), -1)
    eta = torch.randn(9)
    both = cell.forward_many([s0a, s0b], s1, w, eta)
    torch.testing.assert_close(both[0], cell(s0a, s1, w, eta))
    torch.testing.assert_close(both[1], cell(s0b, s1, w, eta))


SPECS = {
    "rnas": {},
    "darts_ops": {"ops": "darts"},
    "no_partial": {"partial": 1},
    "no_attention": {"attention": False},
    "no_edge_norm": {"edge_norm": False},
    "incoming_beta": {"normalisation": "incoming"},
}


@pytest.mark.parametrize("switch", sorted(SPECS))
def test_every_ablation_switch_builds_and_takes_a_search_step(switch):
    from trainables.microexpr.train import SearchSettings, _search_optimisers, search_step

    spec = SupernetSpec(channels=4, cells=3, nodes=2, levels=3, shared_kernels=True, **SPECS[switch])
    net = RnasSupernet(spec)
    torch.manual_seed(0)
    batch_a = (torch.randn(2, 1, 4, 16, 16), torch.tensor([0, 2]))
    batch_b = (torch.randn(2, 1, 4, 16, 16), torch.tensor([1, 0]))
    w_opt, a_opt, _ = _search_optimisers(net, SearchSettings(epochs=1))
    weights_before = [p.detach().clone() for p in net.weight_parameters()]
    alpha, beta, eta = net.alpha.detach().clone(), net.beta.detach().clone(), net.eta.detach().clone()
    loss_w, loss_a = search_step(net, w_opt, a_opt, batch_a, batch_b)
    assert np.isfinite(loss_w) and np.isfinite(loss_a)
    assert any(not torch.equal(b, p) for b, p in zip(weights_before, net.weight_parameters()))  # w moved on A
    assert not torch.equal(alpha, net.alpha) and not torch.equal(beta, net.beta)  # alpha, beta moved on B
    assert torch.equal(eta, net.eta) != spec.edge_norm  # eta moves only with edge normalisation
    np.testing.assert_allclose(net.path_weights().detach().numpy(),
                               path_weights(net.beta.detach().numpy(), spec.normalisation), rtol=1e-6)
    genotype = net.genotype()
    assert genotype.ops == spec.ops and genotype.attention == spec.attention and len(genotype.path) == 3
    model = RnasNetwork(genotype, channels=4, num_classes=3)
    assert model(batch_a[0]).shape == (2, 3)
    assert (len(net.cells["1_0"].edges[0].ops) or 0) == (0 if spec.shared_kernels and spec.ops == "hybrid" else 8)
    assert net.cells["1_0"].edges[0].partial == spec.partial
    assert (net.cells["1_0"].attention is None) != spec.attention


def test_discrete_network_and_baseline_sizes():
    genotype = RnasGenotype(path=(1, 1, 2), cell=(((0, "conv_3"), (1, "add_1_5")), ((0, "skip"), (2, "max_3_5"))),
                            levels=3)
    model = RnasNetwork(genotype, channels=4, num_classes=3)
    assert [len(c.ops) for c in model.cells] == [4, 4, 4]
    assert model.head.in_features == 16  # level 2: 4 * 2**2 channels
    params = count_params(model)
    assert model_size_mb(model) == pytest.approx(params * 4 / 1e6, rel=0.2)
    baseline = baseline_for_params(params, num_classes=3)
    assert isinstance(baseline, BaselineC3D)
    closer = [abs(count_params(BaselineC3D(w, num_classes=3)) - params) for w in (baseline.width - 1, baseline.width + 1)]
    assert abs(count_params(baseline) - params) <= min(closer)
    assert baseline(torch.randn(2, 1, 8, 32, 32)).shape == (2, 3)
