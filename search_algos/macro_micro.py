"""Efficient Global NAS: greedy macro search (grow depth, prune width), then micro search (op, kernel).

Paper: ``efficient-global-nas-macro-micro.txt`` (in ``shared/papers``): §3.2 "Applicability to NAS"
(dynamic-epoch ranking), §3.3 Algorithm 1 with its *Macro* and *Micro Architecture Search* paragraphs,
§4.1 "Search and Training Settings" (the *tiny* and *mobile* presets).

The search is sequential: every decision depends on the previous result. :class:`MacroMicroSearcher`
runs it as a Ray Tune searcher; with ``speculate=k > 1`` it also hands out up to ``k`` candidates the
sequential search will *probably* evaluate next, and uses a result only when it is exactly the
evaluation (step index, architecture, epochs) the sequential search asks for at that step. So the
committed decisions, and the chosen architecture, are those of the sequential search.

Readings where the paper is unclear (all thresholds are settings):

- Units: accuracies are percent points; the thresholds (+0.10 gain, 0.05 drop) are in the same units.
- Grow: depth ``L`` and epochs ``E`` are running counters (Algorithm 1): each candidate grows from the
  previous *candidate*, whatever its verdict, and is trained one epoch longer than it. A candidate at
  least ``best + grow_gain`` is accepted (new best); one at least ``best - drop_tolerance`` lets the
  search "continue searching for depth" without changing the best; anything lower (or a failed trial)
  is a drop. Drops are counted over the whole grow phase (not reset by an accept); the phase stops after
  ``max_drops`` drops or after evaluating depth ``d_max``. The macro depth is the best's depth.
- Prune: starts from the grow best (its neighbour for the epoch rule) and, like grow, steps ``C`` down
  from the previous candidate whatever its verdict, +2 epochs each. A candidate is accepted when it is at
  least ``ref - drop_tolerance`` where ``ref`` is the best accuracy seen in the macro result so far (grow
  best, then any higher accepted prune). Stops after ``max_prune_failures`` failures or after the
  first candidate whose width cannot be reduced by ``w_res`` without going below ``w_min``. The macro
  result is the last accepted candidate (the grow best when none is).
- Dynamic epochs (:func:`next_epochs`): more parameters than the neighbour: +1 epoch; fewer: +2;
  "similar" means *param-matched* (the micro candidates, matched to the baseline within
  ``param_slack``), or an equal count. We do not read "similar" as a symmetric +-0.01M band: at the
  tiny preset one 64-channel separable layer adds only 4,800 parameters, and such a band would freeze
  the epochs of some grow steps, against §3.3's "an additional epoch for each added layer".
- Micro: layers in order; for layer ``i`` first ``op_i <- conv`` then ``kernel_i <- 5``, each applied to
  the current architecture (with earlier kept changes). The first-layer width is reduced in steps of
  ``width_step`` only as far as needed for ``count_params <= baseline + param_slack``, never below
  ``w_min`` (the space's lower bound; a narrower network leaves the searched space). A change that does
  not fit at ``w_min`` is skipped without an evaluation and recorded in the log. A candidate is kept only
  when it beats the current best strictly ("if Acc improves").
- Ties: thresholds such as ``best + 0.10`` are computed in binary floating point (``50.02 + 0.10 >
  50.12``), so values within ``1e-9`` points of a threshold count as on it: on ``best + grow_gain``
  accepts, on ``best - drop_tolerance`` continues (or retains), and an equal micro accuracy is rejected.
- Failed trials (``error=True``, no result, NaN/inf) score ``-inf``: a drop in grow, a failure in
  prune, a rejection in micro. The search carries on.
- Trial schedulers (not in the paper; ``orchestrator.schedulers``): a candidate a scheduler stopped
  before its epochs is rejected like a failed one (a drop, a prune failure, a micro rejection); its log
  entry says ``stopped_early: <epochs trained>``. Its accuracy after fewer epochs is not compared with
  the others, since the dynamic-epoch ranking gives every candidate its own training length. The two
  references every verdict is measured against, the first macro candidate and the micro baseline, are
  marked ``reference`` in their trial config and trained in full; their per-epoch accuracies still
  fill the scheduler's rungs, against which later candidates are stopped.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from ray.tune.search import Searcher

from search_algos.base import REFERENCE_KEY, ArchSearcher
from search_algos.spaces.global_space import GlobalArch, count_params

__all__ = ["PRESETS", "MacroMicroSearcher", "MacroMicroSettings", "next_epochs", "stopped_epochs"]

# The evaluations every later verdict is measured against (the first macro candidate, the micro
# baseline) carry ``REFERENCE_KEY: True`` in their trial config: a trial scheduler trains them in full
# (``orchestrator.schedulers.StageScheduler``). Every other evaluation may be stopped early.
REFERENCE_STEPS = ("start", "baseline")

# Values within this many percent points of a threshold count as on it (see the module docstring).
_EPS = 1e-9

# §4.1 "Search and Training Settings": tiny, and mobile = tiny with W_max = 128.
PRESETS: dict[str, dict[str, int]] = {
    "tiny": {"d_min": 10, "d_max": 100, "w_min": 16, "w_max": 64, "w_res": 2, "e_min_macro": 10, "e_min_micro": 2},
    "mobile": {"d_min": 10, "d_max": 100, "w_min": 16, "w_max": 128, "w_res": 2, "e_min_macro": 10, "e_min_micro": 2},
}

_INT_FIELDS = (
    "d_min", "d_max", "w_min", "w_max", "w_res", "e_min_macro", "e_min_micro",
    "max_drops", "grow_epochs_step", "prune_epochs_step", "max_prune_failures", "width_step",
)  # fmt: skip
_FLOAT_FIELDS = ("grow_gain", "drop_tolerance", "param_slack")


@dataclass(frozen=True, kw_only=True)
class MacroMicroSettings:
    """Bounds and thresholds of Algorithm 1 (§3.3); presets from §4.1 via :meth:`preset`.

    Attributes:
        d_min, d_max: depth bounds; the search starts at ``d_min`` and grows to at most ``d_max``.
        w_min, w_max: first-layer width bounds; the search starts at ``w_max`` and prunes towards ``w_min``.
        w_res: width removed per prune step (``W_res``).
        e_min_macro: epochs of the first macro candidate (``E_min`` of the macro search).
        e_min_micro: epochs of the micro baseline and every micro candidate (``E_min`` of the micro search).
        grow_gain: accuracy gain (percent points) that accepts a grown layer (``L+_acc+`` = 0.10).
        drop_tolerance: accuracy drop (points) still tolerated when growing or pruning (``L+_acc-`` = 0.05).
        max_drops: grow stops after this many drops ("three times").
        grow_epochs_step: extra epochs for a candidate with more parameters than its neighbour (§3.2: 1).
        prune_epochs_step: extra epochs for a candidate with fewer parameters (§3.2/§3.3: 2).
        max_prune_failures: prune stops after this many failures ("three times").
        param_slack: parameters a micro candidate may exceed the macro baseline by (DESIGN: +0.01M).
        width_step: channels removed per step when matching a micro candidate's parameters
            (``C--`` in Algorithm 1); ``None`` means ``w_res``.

    Raises:
        ValueError: listing every broken rule with its values.
    """

    d_min: int
    d_max: int
    w_min: int
    w_max: int
    w_res: int
    e_min_macro: int
    e_min_micro: int
    grow_gain: float = 0.10
    drop_tolerance: float = 0.05
    max_drops: int = 3
    grow_epochs_step: int = 1
    prune_epochs_step: int = 2
    max_prune_failures: int = 3
    param_slack: float = 0.01e6
    width_step: int | None = None

    # Read by pydantic when the orchestrator's config embeds these settings: unknown keys are errors.
    __pydantic_config__ = {"extra": "forbid"}

    def __post_init__(self) -> None:
        if self.width_step is None:
            object.__setattr__(self, "width_step", self.w_res)
        problems = [
            f"{name} must be an integer, got {getattr(self, name)!r}"
            for name in _INT_FIELDS
            if not isinstance(getattr(self, name), int) or isinstance(getattr(self, name), bool)
        ]
        for name in _FLOAT_FIELDS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                problems.append(f"{name} must be a finite number, got {value!r}")
            else:
                object.__setattr__(self, name, float(value))
        if problems:
            raise ValueError("invalid MacroMicroSettings: " + "; ".join(problems))
        if not 1 <= self.d_min <= self.d_max:
            problems.append(f"1 <= d_min <= d_max must hold, but got d_min={self.d_min}, d_max={self.d_max}")
        if not 1 <= self.w_min <= self.w_max:
            problems.append(f"1 <= w_min <= w_max must hold, but got w_min={self.w_min}, w_max={self.w_max}")
        for name in ("w_res", "width_step", "e_min_macro", "e_min_micro", "max_drops", "max_prune_failures"):
            if getattr(self, name) < 1:
                problems.append(f"{name} >= 1 must hold, but got {name}={getattr(self, name)}")
        for name in ("grow_epochs_step", "prune_epochs_step", "grow_gain", "drop_tolerance", "param_slack"):
            if getattr(self, name) < 0:
                problems.append(f"{name} >= 0 must hold, but got {name}={getattr(self, name)}")
        if problems:
            raise ValueError("invalid MacroMicroSettings: " + "; ".join(problems))

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> MacroMicroSettings:
        """The §4.1 settings ``"tiny"`` or ``"mobile"``, with ``overrides`` applied.

        Raises:
            ValueError: for an unknown preset (the valid ones are listed) or an unknown override.
        """
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; valid presets: {sorted(PRESETS)}")
        valid = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(overrides) - set(valid))
        if unknown:
            raise ValueError(f"unknown setting(s) {unknown}; valid settings: {valid}")
        return cls(**{**PRESETS[name], **overrides})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def next_epochs(
    prev_epochs: int,
    prev_params: int,
    cand_params: int,
    settings: MacroMicroSettings,
    *,
    matched: bool = False,
) -> int:
    """Training epochs of a candidate relative to the neighbour it is compared with (§3.2).

    More parameters than the neighbour: ``+grow_epochs_step`` (1); fewer: ``+prune_epochs_step`` (2),
    since a smaller network is expected to catch up by longer training; similar: the same epochs.
    "Similar" is an equal count, or ``matched=True``: the candidate's width was reduced to fit the
    neighbour's budget (micro search, ``cand_params <= prev_params + param_slack``).

    Args:
        prev_epochs: epochs the neighbour was trained for.
        prev_params: the neighbour's parameter count.
        cand_params: the candidate's parameter count.
        settings: supplies the epoch steps and ``param_slack``.
        matched: the candidate was param-matched to the neighbour.

    Returns:
        The candidate's epochs.

    Raises:
        ValueError: when ``matched`` but the candidate exceeds the neighbour's budget.
    """
    if matched:
        if cand_params > prev_params + settings.param_slack:
            raise ValueError(
                f"a matched candidate needs cand_params <= prev_params + param_slack, but got "
                f"cand_params={cand_params}, prev_params={prev_params}, param_slack={settings.param_slack:g}"
            )
        return prev_epochs
    if cand_params > prev_params:
        return prev_epochs + settings.grow_epochs_step
    if cand_params < prev_params:
        return prev_epochs + settings.prune_epochs_step
    return prev_epochs


@lru_cache(maxsize=65536)
def _params(arch: GlobalArch, in_channels: int, num_classes: int) -> int:
    return count_params(arch, in_channels=in_channels, num_classes=num_classes)


def _enc(score: float) -> float | None:
    """JSON-safe score: failures (``-inf``) become ``None``."""
    return score if math.isfinite(score) else None


def _dec(value: float | None) -> float:
    return -math.inf if value is None else float(value)


@dataclass(frozen=True)
class _Step:
    """One evaluation the sequential search asks for: the ``index``-th of the run."""

    index: int
    phase: str  # "grow" | "prune" | "baseline" | "micro"
    change: str  # "start" | "grow" | "prune" | "baseline" | "op" | "kernel"
    layer: int | None
    arch: GlobalArch
    epochs: int
    params: int

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["arch"] = self.arch.to_dict()
        return out

    @classmethod
    def from_dict(cls, payload: dict[str, Any] | None) -> _Step | None:
        if payload is None:
            return None
        return cls(**{**payload, "arch": GlobalArch.from_dict(payload["arch"])})


@dataclass
class _Engine:
    """Algorithm 1 as a state machine: ``next`` is the evaluation it needs, ``commit`` feeds its score.

    Every field is an immutable value, so ``copy.copy`` gives an independent engine (used to look ahead).
    ``best`` is the grow best (grow), the last accepted candidate (prune) or the current architecture
    (micro); ``head`` is the candidate the next grow/prune step is derived from (its neighbour).
    """

    settings: MacroMicroSettings
    in_channels: int
    num_classes: int
    phase: str = "grow"
    n: int = 0  # committed evaluations; the index of ``next``
    next: _Step | None = None
    head: _Step | None = None
    best: _Step | None = None
    best_score: float = -math.inf
    ref: float = -math.inf  # prune: best accuracy of the macro result so far
    drops: int = 0
    failures: int = 0
    macro: GlobalArch | None = None
    base_params: int = 0
    layer: int = 0
    part: str = "op"  # micro: "op" then "kernel" for each layer
    grow_stop: str | None = None
    prune_stop: str | None = None

    @classmethod
    def begin(cls, settings: MacroMicroSettings, in_channels: int, num_classes: int) -> _Engine:
        engine = cls(settings, in_channels, num_classes)
        start = GlobalArch.uniform(settings.d_min, settings.w_max, "sep", 3)
        engine.next = engine._step("grow", "start", start, settings.e_min_macro)
        return engine

    def _step(self, phase: str, change: str, arch: GlobalArch, epochs: int, layer: int | None = None) -> _Step:
        return _Step(self.n, phase, change, layer, arch, epochs, _params(arch, self.in_channels, self.num_classes))

    # -- committing --------------------------------------------------------------------------------
    def commit(self, score: float) -> list[dict[str, Any]]:
        """Apply the score of ``next``; plan the following step. Returns the new log entries."""
        step = self.next
        if step is None:
            raise RuntimeError("the search is finished; there is no pending evaluation to commit")
        self.n += 1
        judge = {
            "grow": self._judge_grow,
            "prune": self._judge_prune,
            "baseline": self._judge_baseline,
            "micro": self._judge_micro,
        }[step.phase]
        entries = [_entry(step, score, judge(step, score))]
        # The verdict may have moved the phase on (a baseline always does); plan in the new phase.
        plan = {"grow": self._plan_grow, "prune": self._plan_prune, "micro": self._plan_micro}[self.phase]
        return entries + plan()

    def _judge_grow(self, step: _Step, score: float) -> str:
        s = self.settings
        self.head = step
        if step.change == "start":
            self.best, self.best_score = step, score
            return "start"
        if math.isfinite(score) and score >= self.best_score + s.grow_gain - _EPS:
            self.best, self.best_score = step, score
            return "accept"
        if math.isfinite(score) and score >= self.best_score - s.drop_tolerance - _EPS:
            return "continue"
        self.drops += 1
        return "drop"

    def _plan_grow(self) -> list[dict[str, Any]]:
        s = self.settings
        if self.head.arch.depth >= s.d_max or self.drops >= s.max_drops:
            self.grow_stop = "d_max" if self.head.arch.depth >= s.d_max else "drops"
            self.phase, self.head, self.ref = "prune", self.best, self.best_score
            return self._plan_prune()
        arch = self.head.arch.grown()
        epochs = next_epochs(self.head.epochs, self.head.params, _params(arch, self.in_channels, self.num_classes), s)
        self.next = self._step("grow", "grow", arch, epochs)
        return []

    def _judge_prune(self, step: _Step, score: float) -> str:
        self.head = step
        if math.isfinite(score) and score >= self.ref - self.settings.drop_tolerance - _EPS:
            self.best, self.best_score = step, score
            self.ref = max(self.ref, score)
            return "accept"
        self.failures += 1
        return "fail"

    def _plan_prune(self) -> list[dict[str, Any]]:
        s = self.settings
        width = self.head.arch.width - s.w_res
        if self.failures >= s.max_prune_failures or width < s.w_min:
            self.prune_stop = "failures" if self.failures >= s.max_prune_failures else "w_min"
            self.phase, self.macro = "baseline", self.best.arch
            self.next = self._step("baseline", "baseline", self.macro, s.e_min_micro)
            return []
        arch = self.head.arch.with_width(width)
        epochs = next_epochs(self.head.epochs, self.head.params, _params(arch, self.in_channels, self.num_classes), s)
        self.next = self._step("prune", "prune", arch, epochs)
        return []

    def _judge_baseline(self, step: _Step, score: float) -> str:
        self.best, self.best_score, self.base_params = step, score, step.params
        self.phase, self.layer, self.part = "micro", 0, "op"
        return "baseline"

    def _judge_micro(self, step: _Step, score: float) -> str:
        kept = math.isfinite(score) and score > self.best_score + _EPS
        if kept:
            self.best, self.best_score = step, score
        self._advance()
        return "keep" if kept else "reject"

    def _advance(self) -> None:
        if self.part == "op":
            self.part = "kernel"
        else:
            self.layer, self.part = self.layer + 1, "op"

    def _plan_micro(self) -> list[dict[str, Any]]:
        s = self.settings
        skipped = []
        budget = self.base_params + s.param_slack
        while self.layer < self.best.arch.depth:
            current = self.best.arch
            if self.part == "op":
                changed = current.with_layer(self.layer, op="conv")
            else:
                changed = current.with_layer(self.layer, kernel=5)
            width = changed.width
            arch = changed
            while _params(arch, self.in_channels, self.num_classes) > budget and width - s.width_step >= s.w_min:
                width -= s.width_step
                arch = changed.with_width(width)
            params = _params(arch, self.in_channels, self.num_classes)
            if params <= budget:
                epochs = next_epochs(s.e_min_micro, self.base_params, params, s, matched=True)
                self.next = self._step("micro", self.part, arch, epochs, self.layer)
                return skipped
            skipped.append(
                {
                    "phase": "micro",
                    "index": None,
                    "layer": self.layer,
                    "change": self.part,
                    "arch_key": arch.key(),
                    "summary": arch.summary(),
                    "epochs": None,
                    "acc": None,
                    "params": params,
                    "decision": "skipped_budget",
                }
            )
            self._advance()
        self.phase, self.next = "done", None
        return skipped

    # -- looking ahead -----------------------------------------------------------------------------
    def _likely_score(self) -> float:
        """A score that keeps the search going the way it most often goes (used only to look ahead).

        Grow and prune: a verdict that neither stops nor changes the candidate sequence (within the
        tolerated band); micro: a rejection, so the next alternatives are built on the current arch.
        """
        if self.phase == "micro":
            return -math.inf
        if self.phase == "prune":
            return self.ref if math.isfinite(self.ref) else 0.0
        if self.phase == "grow" and self.best is not None and math.isfinite(self.best_score):
            return self.best_score
        return 0.0

    def lookahead(self, k: int) -> list[_Step]:
        """``next`` and the k-1 steps after it, assuming the likely verdicts."""
        out: list[_Step] = []
        engine = copy.copy(self)
        while len(out) < k and engine.next is not None:
            out.append(engine.next)
            if len(out) < k:
                engine.commit(engine._likely_score())
        return out

    # -- state -------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "phase": self.phase,
            "n": self.n,
            "next": self.next.to_dict() if self.next else None,
            "head": self.head.to_dict() if self.head else None,
            "best": self.best.to_dict() if self.best else None,
            "best_score": _enc(self.best_score),
            "ref": _enc(self.ref),
            "drops": self.drops,
            "failures": self.failures,
            "macro": self.macro.to_dict() if self.macro else None,
            "base_params": self.base_params,
            "layer": self.layer,
            "part": self.part,
            "grow_stop": self.grow_stop,
            "prune_stop": self.prune_stop,
        }

    @classmethod
    def from_dict(
        cls, payload: dict[str, Any], settings: MacroMicroSettings, in_channels: int, num_classes: int
    ) -> _Engine:
        return cls(
            settings,
            in_channels,
            num_classes,
            phase=payload["phase"],
            n=int(payload["n"]),
            next=_Step.from_dict(payload["next"]),
            head=_Step.from_dict(payload["head"]),
            best=_Step.from_dict(payload["best"]),
            best_score=_dec(payload["best_score"]),
            ref=_dec(payload["ref"]),
            drops=int(payload["drops"]),
            failures=int(payload["failures"]),
            macro=GlobalArch.from_dict(payload["macro"]) if payload["macro"] else None,
            base_params=int(payload["base_params"]),
            layer=int(payload["layer"]),
            part=payload["part"],
            grow_stop=payload["grow_stop"],
            prune_stop=payload["prune_stop"],
        )


def _entry(step: _Step, score: float, decision: str) -> dict[str, Any]:
    return {
        "phase": step.phase,
        "index": step.index,
        "layer": step.layer,
        "change": step.change,
        "arch_key": step.arch.key(),
        "summary": step.arch.summary(),
        "epochs": step.epochs,
        "acc": _enc(score),
        "params": step.params,
        "decision": decision,
    }


@dataclass
class _Trial:
    """A suggestion handed to Tune: which step (index, arch, epochs) it evaluates, and its score."""

    index: int
    key: str
    epochs: int
    live: bool = True
    score: float | None = None  # set when it returns; -inf for a failure or a trial stopped early
    stopped: int | None = None  # epochs trained when a scheduler stopped it before ``epochs``

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "key": self.key,
            "epochs": self.epochs,
            "live": self.live,
            "score": None if self.score is None else _enc(self.score),
            "stopped": self.stopped,
        }

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> _Trial:
        live = bool(payload["live"])
        stopped = payload.get("stopped")  # absent in states saved before schedulers applied
        return cls(
            int(payload["index"]), payload["key"], int(payload["epochs"]), live, None if live else _dec(payload["score"]),
            None if stopped is None else int(stopped),
        )


def stopped_epochs(result: dict[str, Any] | None, planned: int) -> int | None:
    """Epochs a trial trained when a trial scheduler stopped it before its ``planned`` epochs, else None.

    A trial reports every epoch (``epoch`` = epochs trained so far); its last report is what Tune hands
    the searcher. A whole training, a stored hit, or a failed trial is not a stop.
    """
    if not result or result.get("status", "ok") != "ok" or result.get("cached"):
        return None
    trained = result.get("epoch")
    if trained is None:
        return None
    trained = int(trained)
    return trained if trained < planned else None


class MacroMicroSearcher(ArchSearcher):
    """Efficient Global NAS (Algorithm 1, §3.3) as a Ray Tune searcher, with optional speculation.

    Macro search grows depth from ``d_min`` (+1 epoch per layer) while accuracy improves, then prunes
    the first-layer width from ``w_max`` by ``w_res`` (+2 epochs per step) while accuracy is retained;
    micro search retrains that macro architecture for ``e_min_micro`` epochs as a baseline and tries,
    layer by layer, a plain convolution and a 5x5 kernel at (about) the baseline's parameter count,
    keeping a change only when it improves accuracy. Epochs follow the dynamic-epoch ranking of §3.2
    (:func:`next_epochs`). In the paper's terms the search evaluates ``D' + W' + 1 + 2 D_f``
    architectures (fewer when a micro change cannot meet the parameter budget).

    Trials receive ``{"arch": <GlobalArch JSON>, "epochs": int}`` and must report ``metric`` (validation
    accuracy in percent points). A reported ``params`` is not needed: the searcher counts parameters
    itself with :func:`count_params` (the trainable builds the same layer plan), since epochs and
    micro widths must be fixed before training. Failed trials count as ``-inf``.

    Speculation (beyond the paper): with ``speculate=k > 1`` up to ``k`` trials run at once: the
    evaluation the sequential search needs now, and the ones it needs next if the pending verdicts go
    the likely way (grow/prune continue; micro alternatives rejected). Verdicts are committed in the
    paper's order, each from the trial that evaluated exactly that step; other results are discarded
    and counted as ``wasted``. The outcome equals the sequential search's for the same evaluator.

    Args:
        settings: bounds and thresholds, e.g. ``MacroMicroSettings.preset("tiny")``.
        in_channels: image channels of the dataset (for parameter counts).
        num_classes: classes of the dataset (for parameter counts).
        metric: the reported accuracy (percent points).
        mode: must be ``"max"`` (the thresholds are accuracy gains).
        seed: kept for the common interface; the search itself uses no randomness.
        speculate: how many trials may be outstanding at once (1 = the paper's sequential search).

    Raises:
        ValueError: on bad arguments (the message names the rule and the value).

    Example:
        >>> searcher = MacroMicroSearcher(settings=MacroMicroSettings.preset("tiny"), in_channels=3,
        ...                               num_classes=10, metric="val_acc", speculate=4)
        >>> tuner = tune.Tuner(trainable, tune_config=tune.TuneConfig(search_alg=searcher,
        ...                                                          num_samples=-1))
    """

    def __init__(
        self,
        *,
        settings: MacroMicroSettings,
        in_channels: int,
        num_classes: int,
        metric: str = "val_acc",
        mode: str = "max",
        seed: int = 0,
        speculate: int = 1,
    ) -> None:
        problems = []
        if not isinstance(settings, MacroMicroSettings):
            problems.append(f"settings must be a MacroMicroSettings, got {type(settings).__name__}")
        for name, value in (("in_channels", in_channels), ("num_classes", num_classes), ("speculate", speculate)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                problems.append(f"{name} must be an integer >= 1, got {value!r}")
        if mode != "max":
            problems.append(f"mode must be 'max' (Algorithm 1 thresholds are accuracy gains), got {mode!r}")
        if problems:
            raise ValueError("; ".join(problems))
        super().__init__(metric=metric, mode=mode, seed=seed)
        self.settings = settings
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.speculate = speculate
        self._engine = _Engine.begin(settings, in_channels, num_classes)
        self._trials: dict[str, _Trial] = {}
        self._log: list[dict[str, Any]] = []
        self._wasted = 0

    # -- Tune interface ----------------------------------------------------------------------------
    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        """The next evaluation (or a speculative one); ``None`` while waiting; FINISHED when done."""
        self._drain()
        if self._engine.next is None:
            return Searcher.FINISHED if not self._trials else None
        if sum(t.live for t in self._trials.values()) >= self.speculate:
            return None
        issued = {(t.index, t.key, t.epochs) for t in self._trials.values()}
        # Results that came back early (a later step finished before the current one) are held until
        # their turn; they must not use up the window, or a free slot idles while the current step runs.
        held = sum(not t.live for t in self._trials.values())
        for step in self._engine.lookahead(self.speculate + held):
            if (step.index, step.arch.key(), step.epochs) not in issued:
                self._trials[trial_id] = _Trial(step.index, step.arch.key(), step.epochs)
                config = {"arch": step.arch.to_json(), "epochs": step.epochs}
                if step.change in REFERENCE_STEPS:
                    config[REFERENCE_KEY] = True  # trained in full whatever a scheduler says (module docstring)
                return config
        return None

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        trial = self._trials.get(trial_id)
        if trial is None or not trial.live:
            return  # not ours (or reported twice)
        if self._stale(trial):  # that step was committed from another trial, or the search ended
            del self._trials[trial_id]
            self._wasted += 1
            return
        trial.stopped = None if error else stopped_epochs(result, trial.epochs)
        # A candidate a scheduler stopped is rejected: it trained fewer epochs than the dynamic-epoch
        # ranking gives it, so its accuracy is not comparable with the reference's (§3.2).
        trial.live = False
        trial.score = -math.inf if trial.stopped is not None else self.score(result, error=error)
        self._drain()

    def _drain(self) -> None:
        """Commit every step, in order, whose exact evaluation has returned; discard stale results."""
        engine = self._engine
        while engine.next is not None:
            step = engine.next
            key = step.arch.key()
            found = next(
                (
                    tid
                    for tid, t in self._trials.items()
                    if not t.live and t.index == step.index and t.key == key and t.epochs == step.epochs
                ),
                None,
            )
            if found is None:
                return
            trial = self._trials.pop(found)
            entries = engine.commit(trial.score)
            if trial.stopped is not None:
                entries[0]["stopped_early"] = trial.stopped  # the verdict's entry: rejected, and why
            self._log.extend(entries)
            for tid in [tid for tid, t in self._trials.items() if not t.live and self._stale(t)]:
                del self._trials[tid]
                self._wasted += 1

    def _stale(self, trial: _Trial) -> bool:
        """A result the sequential search will never ask for: its step is past, or the search ended."""
        return trial.index < self._engine.n or self._engine.next is None

    # -- state -------------------------------------------------------------------------------------
    def get_state(self) -> dict[str, Any]:
        return {
            "version": 1,
            "settings": self.settings.to_dict(),
            "in_channels": self.in_channels,
            "num_classes": self.num_classes,
            "engine": self._engine.to_dict(),
            "trials": {tid: t.to_dict() for tid, t in self._trials.items()},
            "log": [dict(e) for e in self._log],
            "wasted": self._wasted,
        }

    def set_state(self, state: dict[str, Any]) -> None:
        mine = {"settings": self.settings.to_dict(), "in_channels": self.in_channels, "num_classes": self.num_classes}
        differs = sorted(k for k, v in mine.items() if state.get(k) != v)
        if differs:
            raise ValueError(
                f"saved searcher state differs in {differs} (saved {[state.get(k) for k in differs]}, "
                f"now {[mine[k] for k in differs]}); resume with the run's own config"
            )
        self._engine = _Engine.from_dict(state["engine"], self.settings, self.in_channels, self.num_classes)
        self._trials = {tid: _Trial.from_dict(t) for tid, t in state["trials"].items()}
        self._log = [dict(e) for e in state["log"]]
        self._wasted = int(state["wasted"])

    # -- reporting ---------------------------------------------------------------------------------
    @property
    def phase(self) -> str:
        """``"grow"``, ``"prune"``, ``"baseline"``, ``"micro"`` or ``"done"``."""
        return self._engine.phase

    @property
    def max_epochs(self) -> int:
        """The most epochs any evaluation of this search can train (a trial scheduler's ``max_t``).

        Each grow step adds at most ``grow_epochs_step`` and each prune step ``prune_epochs_step``
        (§3.2), so the longest macro candidate trains ``e_min_macro + (d_max - d_min) grow steps +
        (w_max - w_min) / w_res prune steps``; micro candidates train ``e_min_micro`` (param-matched).
        """
        s = self.settings
        macro = s.e_min_macro + (s.d_max - s.d_min) * s.grow_epochs_step + (s.w_max - s.w_min) // s.w_res * s.prune_epochs_step
        return max(macro, s.e_min_micro)

    @property
    def log(self) -> list[dict[str, Any]]:
        """Committed decisions in order (and skipped micro changes), as plain dicts."""
        return [dict(e) for e in self._log]

    def best_arch(self) -> GlobalArch | None:
        """The final architecture once done; before that the best so far of the current phase."""
        return self._engine.best.arch if self._engine.best else None

    def best_result(self) -> dict[str, Any] | None:
        """``{"acc", "params", "epochs"}`` of :meth:`best_arch` (``acc`` is ``None`` for a failure)."""
        best = self._engine.best
        if best is None:
            return None
        return {"acc": _enc(self._engine.best_score), "params": best.params, "epochs": best.epochs}

    def summary(self) -> dict[str, Any]:
        """Figures for ``best.json`` and reports.

        ``evaluations`` counts committed evaluations by phase, in the paper's terms ``grow`` = D',
        ``prune`` = W', ``baseline`` = 1 and ``micro`` = 2 D_f less ``skipped`` changes; ``wasted``
        counts speculative trials whose results were discarded; ``log`` lists every verdict in order
        (``{phase, index, layer, change, arch_key, summary, epochs, acc, params, decision}``).
        """
        engine = self._engine
        counts = {"grow": 0, "prune": 0, "baseline": 0, "micro": 0}
        for entry in self._log:
            if entry["index"] is not None:
                counts[entry["phase"]] += 1
        done = engine.phase == "done"
        result = self.best_result() if done else None
        return {
            "phase": engine.phase,
            "macro_arch": engine.macro.to_json() if engine.macro else None,
            "macro_summary": engine.macro.summary() if engine.macro else None,
            "final_arch": engine.best.arch.to_json() if done else None,
            "final_summary": engine.best.arch.summary() if done else None,
            "final_acc": result["acc"] if result else None,
            "final_params": result["params"] if result else None,
            "evaluations": {**counts, "total": sum(counts.values())},
            "skipped": sum(e["decision"] == "skipped_budget" for e in self._log),
            "stopped_early": sum("stopped_early" in e for e in self._log),
            "wasted": self._wasted,
            "speculate": self.speculate,
            "grow_stop": engine.grow_stop,
            "prune_stop": engine.prune_stop,
            "log": self.log,
        }
