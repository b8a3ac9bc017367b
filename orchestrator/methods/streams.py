"""Named random streams of the methods' pipelines: every seed word the orchestrator layer salts a seed with.

A stream is ``numpy.random.default_rng([seed, SALT, ...])`` with the run's ``seed`` (config ``seed``)
first: distinct salts give independent streams from one seed, so adding a draw to one stream never
shifts another's numbers, and the same seed gives the same draws, also after a resume. The values are
the ones the pipelines have always used (changing one changes every result drawn from it); they are
arbitrary, only distinct. The trainables name their own streams beside the loops that draw them (they
may not import orchestrator); the searchers own their generators from their ``seed``.

Lives under ``orchestrator/methods/`` because it names methods (the shared orchestrator modules may not).
"""

from __future__ import annotations

__all__ = [
    "HYPERFD_ORDER_SALT",
    "HYPERFD_POOL_SALT",
    "HYPERFD_POOL_SPACE_STRIDE",
    "HYPERFD_RANDOM_PICK_SALT",
    "HYPERFD_SEARCH_PICK_SALT",
    "HYPERFD_TABLE_RANDOM_SALT",
    "MONAS_ABLATION_SALT",
    "hyperfd_pool_seed",
]

# HyperFD (methods/hyperfd/)
HYPERFD_POOL_SALT = 23  # sample_pool: which configs of a space make its pool
HYPERFD_POOL_SPACE_STRIDE = 1000  # pool seed = seed + stride * the space's index in SPACES (hyperfd_pool_seed)
HYPERFD_RANDOM_PICK_SALT = 17  # Plan: the pool configs evaluated on each offline dataset, per space
HYPERFD_ORDER_SALT = 31  # domain_orders: the k-th random order of the online domains
HYPERFD_SEARCH_PICK_SALT = 41  # the warm-started search: the random configs after the ranker's picks
HYPERFD_TABLE_RANDOM_SALT = 97  # Table 7: the random-search baseline's picks per order and domain

# MONAS (methods/monas.py)
MONAS_ABLATION_SALT = 7919  # the children whose one-shot and stand-alone NME Table IV's tau compares


def hyperfd_pool_seed(seed: int, space_index: int) -> int:
    """The seed of a space's pool: ``seed + 1000 * space_index`` (by the space's fixed index, not its place
    in the config, so a run of one space sees the same pool as a run of all)."""
    return seed + HYPERFD_POOL_SPACE_STRIDE * space_index
