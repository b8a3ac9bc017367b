"""The named random streams keep the numbers the pipelines always drew (issue 16: named salts).

A salt that changed would silently change every result drawn from its stream (pools, picks, orders),
so the values are pinned here, and they must stay distinct (two streams with one salt are one stream).
"""

from __future__ import annotations

import numpy as np

from orchestrator.methods import streams
from orchestrator.methods.hyperfd.online import domain_orders
from orchestrator.methods.hyperfd.plan import SPACES, pool_seed


def test_the_salts_are_the_historic_values_and_distinct():
    salts = {name: getattr(streams, name) for name in streams.__all__ if name.endswith("_SALT")}
    assert salts == {"HYPERFD_ORDER_SALT": 31, "HYPERFD_POOL_SALT": 23, "HYPERFD_RANDOM_PICK_SALT": 17,
                     "HYPERFD_SEARCH_PICK_SALT": 41, "HYPERFD_TABLE_RANDOM_SALT": 97, "MONAS_ABLATION_SALT": 7919}
    assert len(set(salts.values())) == len(salts)


def test_pool_seeds_and_domain_orders_draw_what_they_drew():
    assert [pool_seed(space, 3) for space in SPACES] == [3 + 1000 * i for i in range(len(SPACES))]
    domains = ["a", "b", "c", "d"]
    expected = [list(np.random.default_rng([7, 31, k]).permutation(domains)) for k in range(2)]
    assert domain_orders(domains, 2, 7) == expected


def test_the_flip_stream_of_the_micro_expression_loops():
    from trainables.microexpr.train import _flip_seed

    assert [_flip_seed(0, 1), _flip_seed(2, 5)] == [1, 2005]
