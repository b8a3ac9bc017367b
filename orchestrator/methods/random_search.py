"""Random search (``searcher: random``): seeded random architectures of the ``global`` space, each trained
from scratch; the baseline every method is compared with (DESIGN.md §1).

One stage, ``search`` (:class:`search_algos.random_search.RandomArchSearcher`). Its trials train for
``epochs`` and report each epoch, so a ``scheduler`` (ASHA) and ``hpo`` (Optuna) apply to it. The space,
its picture and its export are Efficient Global NAS's (:mod:`orchestrator.methods.global_nas`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

from orchestrator.methods.base import Method
from orchestrator.methods.global_nas import GlobalSpaceConfig, candidate_job, check_classification, draw_global, export_global
from orchestrator.sections import Section

if TYPE_CHECKING:
    from orchestrator.config import ExperimentConfig
    from orchestrator.methods.base import StagePlan
    from orchestrator.store import StoreClient

__all__ = ["METHOD", "RandomSearcherConfig", "random_stages"]


class RandomSearcherConfig(Section):
    """Random search: ``num_samples`` architectures, each trained ``epochs`` epochs."""

    name: Literal["random"] = "random"
    num_samples: int = Field(12, ge=1)
    epochs: int = Field(3, ge=1)
    tunable: ClassVar[bool] = True  # its trials train for `epochs` and report each: `scheduler` and `hpo` apply


def random_stages(config: ExperimentConfig, data: Any, store: StoreClient, run_dir: str) -> StagePlan:
    """The one ``search`` stage; best.json is its best evaluation (no select, no extras)."""
    from orchestrator.pipeline import Stage
    from search_algos.random_search import RandomArchSearcher

    s = config.searcher
    space = config.space.build()
    stage = Stage(
        name="search",
        make_searcher=lambda _earlier: RandomArchSearcher(
            space, num_samples=s.num_samples, epochs=s.epochs,
            metric=config.metric, mode=config.mode, seed=config.seed,
        ),
        job=candidate_job(config, store, run_dir, "search"),
        total=lambda _earlier: s.num_samples,
        tunable=True,
    )
    return [stage], None, None


METHOD = Method(
    name="random",
    title="random search",
    section=RandomSearcherConfig,
    data="classification",
    space=GlobalSpaceConfig,
    stages=random_stages,
    deciding="search",
    check=check_classification,
    export=export_global,
    picture=draw_global,
)
