"""The HyperFD ranker's named random streams draw what they always drew (issue 16: named salts).

The ranker draws from ``default_rng([seed, SALT, counter])``; the salts are pinned (a changed one silently
changes every suggestion and every trained ranker), must be distinct (one salt for two streams would make
the exploration picks, the batches and the dropout masks draw the same numbers), and the exploration picks
are checked against a generator built here from the literal salt.
"""

from __future__ import annotations

import numpy as np
import torch

from search_algos.hyperfd import PerformanceRanker, RankerSettings
from search_algos.hyperfd import ranker as ranker_module
from tests.search_algos.hyperfd.test_ranker import FEATURES, synthetic_configs

torch.set_num_threads(1)


def test_the_salts_are_the_historic_values_and_distinct():
    salts = {name: getattr(ranker_module, name) for name in dir(ranker_module) if name.endswith("_SALT")}
    assert salts == {"_BATCH_SALT": 11, "_DROPOUT_SALT": 13, "_EXPLORE_SALT": 7}
    assert len(set(salts.values())) == len(salts)


def test_the_exploration_picks_come_from_the_seed_salt_7_and_the_tasks_seen():
    configs = synthetic_configs()
    ranker = PerformanceRanker(FEATURES, config_kind="vector", config_dim=6, settings=RankerSettings(), seed=5)
    ranker.add_configs(configs)
    features = {"a": 0.3, "b": -1.0, "c": 2.0}
    keys = list(configs)
    scores = ranker.score(features, keys)
    order = [keys[i] for i in np.lexsort((np.arange(len(keys)), -scores))]
    budget = 6  # explore_ratio 0.5: three by score, three drawn from the rest of the top half
    rest = order[3 : len(keys) // 2]
    for tasks_seen in (0, 2):
        ranker.tasks_seen = tasks_seen
        extra = np.random.default_rng([5, 7, tasks_seen]).choice(len(rest), size=3, replace=False)
        assert ranker.suggest(features, keys, budget) == order[:3] + [rest[int(i)] for i in sorted(extra)]
