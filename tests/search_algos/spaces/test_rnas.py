"""RNAS-MER decode (pure numpy): Viterbi path (Algorithm 2) and top-2 cell on hand-made alpha/eta/beta."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from search_algos.spaces import decode_arch
from search_algos.spaces.base import InvalidArchitecture
from search_algos.spaces.rnas import (
    DARTS_OPS, HYBRID_OPS, RnasGenotype, RnasSpace, cell_edges, decode_cell, decode_genotype, path_weights,
    viterbi_path,
)

LN = math.log


def _beta(cells: int = 3, levels: int = 4) -> np.ndarray:
    return np.zeros((cells, levels, 2))


def test_outgoing_weights_by_hand():
    beta = _beta()
    beta[0, 1, 1] = LN(3)  # out of the stem: stay 1/4, down 3/4
    beta[1, 1, 0] = LN(4)  # out of (1, level 1): stay 4/5, down 1/5
    w = path_weights(beta)
    assert w[0, 0, 0] == pytest.approx(0.25) and w[0, 1, 1] == pytest.approx(0.75)
    assert w[0, 1, 0] == 0 and w[0, 2, 1] == 0  # states the stem cannot reach in one cell
    assert w[1, 1, 0] == pytest.approx(0.8) and w[1, 2, 1] == pytest.approx(0.2)
    assert w[1, 0, 0] == pytest.approx(0.5) and w[1, 1, 1] == pytest.approx(0.5)
    assert w[2, 3, 0] == 0  # level 3 cannot be reached after two cells


def test_last_level_keeps_a_pair_with_an_exit():
    # Eq. 7 for every s: the deepest level's "stay" shares its unit mass with an exit (logit 0).
    beta = np.random.default_rng(0).normal(size=(6, 4, 2))
    w = path_weights(beta)
    assert w[5, 3, 0] == pytest.approx(1.0 / (1.0 + np.exp(-beta[5, 3, 0])))
    beta[:, 3, 0] = 0.0  # stay into the deepest level from itself: 1/2, like an untrained pair
    assert np.allclose(path_weights(beta)[3:, 3, 0], 0.5)


def test_reaching_the_deepest_level_early_is_not_free():
    # All logits equal: every edge weighs 1/2, so every path of 6 cells has probability 1/64. Without the
    # exit the deepest level's stay weighed 1 and the path 1-2-3-3-3-3 won with 1/8.
    path, prob = viterbi_path(np.zeros((6, 4, 2)))
    assert prob == pytest.approx(0.5**6)
    assert path == (0, 0, 0, 0, 0, 0)  # ties go to "stay"

def test_incoming_weights_sum_to_one_per_state():
    beta = np.random.default_rng(1).normal(size=(6, 4, 2))
    w = path_weights(beta, "incoming")
    for k in range(6):
        for j in range(min(k + 2, 4)):
            assert w[k, j].sum() == pytest.approx(1.0)
    assert w[0, 0, 0] == 1.0 and w[0, 1, 1] == 1.0  # single incoming edge


@pytest.mark.parametrize("stay_over_down, want", [(2.0, (1, 1, 1)), (0.5, (1, 1, 2))])
def test_viterbi_known_path(stay_over_down, want):
    # P1 = [1/4, 3/4]; P2: level 1 via stay = 3/4 * 4/5 = 0.6 (beats 1/4 * 1/2), level 2 = 3/4 * 1/5.
    # Last cell out of (2, level 1): stay vs down in ratio stay_over_down; 0.6 * 2/3 = 0.4 wins.
    beta = _beta()
    beta[0, 1, 1] = LN(3)
    beta[1, 1, 0] = LN(4)
    beta[2, 1, 0] = LN(stay_over_down)
    path, prob = viterbi_path(beta)
    assert path == want
    assert prob == pytest.approx(0.4)


def _brute_force(beta: np.ndarray, normalisation: str) -> tuple[tuple[int, ...], float]:
    w = path_weights(beta, normalisation)
    cells, levels, _ = beta.shape
    best, best_p = None, -1.0
    for steps in itertools.product((0, 1), repeat=cells):
        level, p, path = 0, 1.0, []
        for k, step in enumerate(steps):
            level += step
            if level >= levels:
                p = 0.0
                break
            p *= w[k, level, step]
            path.append(level)
        if p > best_p + 1e-12:
            best, best_p = tuple(path), p
    return best, best_p


@pytest.mark.parametrize("normalisation", ["outgoing", "incoming"])
def test_viterbi_matches_enumeration(normalisation):
    rng = np.random.default_rng(7)
    for _ in range(20):
        beta = rng.normal(scale=2.0, size=(6, 4, 2))
        path, prob = viterbi_path(beta, normalisation)
        ref_path, ref_prob = _brute_force(beta, normalisation)
        assert prob == pytest.approx(ref_prob)
        w = path_weights(beta, normalisation)
        levels = (0, *path)
        along = np.prod([w[k, levels[k + 1], levels[k + 1] - levels[k]] for k in range(6)])
        assert along == pytest.approx(ref_prob)  # the returned path achieves the maximum


def test_outgoing_path_weights_and_exits_form_a_distribution():
    beta = np.random.default_rng(3).normal(size=(5, 4, 2))
    w = path_weights(beta)

    def mass(k: int, level: int) -> float:  # probability of every continuation from state (k, level)
        if k == 5:
            return 1.0
        stay = w[k, level, 0] * mass(k + 1, level)
        if level + 1 < 4:
            return stay + w[k, level + 1, 1] * mass(k + 1, level + 1)
        return stay + (1.0 - w[k, level, 0])  # the exit ends the path

    assert mass(0, 0) == pytest.approx(1.0)
    paths = sum(
        np.prod([w[k, lv, st] for k, (lv, st) in enumerate(zip(np.cumsum(steps), steps))])
        for steps in itertools.product((0, 1), repeat=5) if sum(steps) < 4
    )
    assert 0.0 < paths < 1.0  # the paths that stay in the space keep the rest: some mass left by the exit

def test_cell_decode_known_answer():
    ops = HYBRID_OPS
    edges = cell_edges(2)  # node 0: inputs 0, 1; node 1: inputs 0, 1, 2
    assert edges == [(0, 0), (0, 1), (1, 0), (1, 1), (1, 2)]
    alpha = np.zeros((5, len(ops)))
    eta = np.zeros(5)
    none = ops.index("none")
    # node 0: both inputs must be kept (only two); ops: conv_3 on input 0, max_1_5 on input 1.
    alpha[0, ops.index("conv_3")] = 2.0
    alpha[1, ops.index("max_1_5")] = 1.0
    alpha[1, none] = 5.0  # `none` dominates edge 1 but is never chosen
    # node 1: input 2 strongest by alpha alone, input 0 boosted by eta, input 1 weak.
    alpha[4, ops.index("skip")] = 3.0
    alpha[2, ops.index("avg_3_5")] = 1.0
    alpha[3, ops.index("add_1_3")] = 1.2
    eta[2] = 1.0  # softmax(eta) favours input 0 over input 1: 1.0 * e/(e+2) vs 1.2-weight * 1/(e+2)
    cell = decode_cell(alpha, eta, ops, 2)
    assert cell == (((0, "conv_3"), (1, "max_1_5")), ((0, "avg_3_5"), (2, "skip")))


def test_cell_decode_eta_changes_the_choice():
    ops = DARTS_OPS
    alpha = np.zeros((5, len(ops)))
    alpha[:, ops.index("sep_conv_3")] = [0, 0, 2.0, 1.9, 0.1]
    eta = np.zeros(5)
    assert decode_cell(alpha, eta, ops, 2)[1] == ((0, "sep_conv_3"), (1, "sep_conv_3"))
    eta[4] = 4.0  # edge normalisation lifts input 2 above the others
    assert decode_cell(alpha, eta, ops, 2)[1][1][0] == 2


def test_genotype_round_trip_and_validation():
    rng = np.random.default_rng(0)
    g = decode_genotype(rng.normal(size=(14, 14)), rng.normal(size=14), rng.normal(size=(6, 4, 2)))
    assert g.nodes == 4 and len(g.path) == 6
    again = decode_arch("rnas", g.to_json())
    assert again == g and again.key() == g.key()
    assert "rnas path" in g.summary()
    with pytest.raises(InvalidArchitecture, match="path"):
        RnasGenotype(path=(0, 2), cell=g.cell)  # jumps two levels
    with pytest.raises(InvalidArchitecture, match="none"):
        RnasGenotype(path=(0,), cell=(((0, "none"), (1, "skip")),))
    with pytest.raises(InvalidArchitecture, match="distinct inputs"):
        RnasGenotype(path=(0,), cell=(((0, "skip"), (0, "conv_1")),))
    space = RnasSpace(cells=6, nodes=4)
    for _ in range(10):
        space.validate(space.sample(rng))
    assert space.size() > 1e10


def test_pictures_draw_the_decoded_path_and_every_cell_operation():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from orchestrator.methods.rnas_mer_pictures import draw_rnas, rnas_figure

    g = RnasGenotype(path=(0, 1, 1, 2, 3, 3), cell=(((0, "conv_3"), (1, "add_1_5")), ((0, "skip"), (2, "max_3_5"))))
    fig, (ax_path, ax_cell) = plt.subplots(1, 2)
    draw_rnas(g.to_json(), ax_path, ax_cell)
    red = [line for line in ax_path.lines if line.get_color() == "#c0392b"]
    assert len(red) == 1 and list(red[0].get_ydata()) == [0, 0, 1, 1, 2, 3, 3]  # stem, then the path
    texts = {t.get_text() for t in ax_cell.texts}
    assert {"conv_3", "add_1_5", "skip", "max_3_5"} <= texts
    plt.close(fig)
    plt.close(rnas_figure(g))


def test_the_report_draws_an_rnas_genotype_through_the_method_registry():
    from orchestrator.methods import METHODS
    from orchestrator.pictures import arch_of

    g = RnasGenotype(path=(0, 0, 1, 1, 2, 2), cell=(((0, "conv_1"), (1, "avg_3_5")), ((1, "skip"), (2, "conv_5"))))
    fig = METHODS.by_space("picture")["rnas"](arch_of({"arch": g.to_dict(), "space": "rnas"}))
    assert len(fig.axes) == 2 and fig.axes[0].lines  # the path and the cell
