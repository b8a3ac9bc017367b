"""The config's ``scheduler`` section as a Ray Tune trial scheduler (:func:`build_scheduler`).

It applies to the stages whose trials train a candidate for several epochs and report every epoch
(``Stage.tunable``; the ``random`` searcher's search stage): ``asha`` (``AsyncHyperBandScheduler``: a trial
below the top ``1/reduction_factor`` of its rung at ``grace_period * reduction_factor**k`` epochs is
stopped) or ``hyperband`` (synchronous HyperBand). A stopped trial keeps the metric of its last reported
epoch; its row in results.parquet says so (``epochs`` = the epochs it trained, ``error`` = ``stopped early
by <name> ...``). It is never written to the benchmark store (only whole trainings are).

The ``hpo`` section, Optuna-drawn training hyper-parameters on the same stages, is
:class:`search_algos.hpo.HpoSearcher`.
"""

from __future__ import annotations

from typing import Any

__all__ = ["build_scheduler"]


def build_scheduler(settings: dict[str, Any], *, metric: str, mode: str, max_epochs: int | None) -> Any:
    """The Tune scheduler of a ``scheduler`` section, or None for ``name: none``.

    Args:
        settings: the section (``name, grace_period, reduction_factor, brackets, max_t``).
        metric, mode: what the stage optimises.
        max_epochs: the stage's training length (the default ``max_t``); ``training_iteration`` counts
            reported epochs.
    """
    from ray.tune.schedulers import AsyncHyperBandScheduler, HyperBandScheduler

    name = settings["name"]
    if name == "none":
        return None
    max_t = settings.get("max_t") or max_epochs or 100
    if name == "asha":
        return AsyncHyperBandScheduler(
            time_attr="training_iteration", metric=metric, mode=mode, max_t=max_t,
            grace_period=min(settings["grace_period"], max_t), reduction_factor=settings["reduction_factor"],
            brackets=settings["brackets"],
        )
    if name == "hyperband":
        return HyperBandScheduler(
            time_attr="training_iteration", metric=metric, mode=mode, max_t=max_t,
            reduction_factor=settings["reduction_factor"],
        )
    raise ValueError(f"unknown scheduler {name!r}")
