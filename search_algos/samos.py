"""SAMOS: simulated annealing over the multi-path space, as a Ray Tune searcher.

Paper: ``monas-multipath-oneshot-nas-3d-face-alignment.txt`` (in ``shared/papers``): §III-C and
Algorithm 2 (Simulated Annealing based Multi-path One-shot Search), §IV-B (reduce rate 0.85,
200 iterations). Trials evaluate a child on the trained supernet (one-shot, ``epochs = 0``) and report
its penalty (e.g. ``val_nme``).

Readings where the paper is unclear (all are settings or documented defaults):

- Neighbour (Algorithm 2: "based on Eq. 7-8"): change one edge's state, then repair validity
  (:meth:`MultipathSpace.neighbour`; DESIGN.md §1).
- Initial temperature (its value is missing from the paper's text): unless ``t0`` is given, T0 is
  calibrated so that a median worsening is accepted with probability 1/2 (DESIGN.md §1):
  ``T0 = median(positive dp) / ln 2`` over ``calibration`` neighbours of the start. When no neighbour
  was worse, the median size of the non-zero changes is used instead; when every penalty was equal
  (or failed), ``DEFAULT_T0`` (1e-3, i.e. a nearly greedy search). See :func:`calibrate_t0`.
- Budget: ``iterations`` counts *every* evaluation of a chain: the start, the calibration neighbours
  (which also update the best seen; the chain stays at the start), and the annealing moves. So a chain
  makes exactly ``iterations`` suggestions; with the defaults, 1 + 8 + 191 = 200.
- Each annealing move: neighbour of the current child, evaluate, ``dp = p_new - p``; accept when
  ``dp < 0``, else when ``u < exp(-dp / T)`` (``u`` uniform, drawn at every move from the chain's own
  generator); then ``T <- cooling * T``. The first move uses T0. Equal penalties (``dp = 0``) are
  accepted, as ``exp(0) = 1`` in Algorithm 2.
- Failures (errored trial, missing metric, NaN/inf) have penalty ``+inf``: never accepted from a finite
  current child, never the best unless every evaluation failed. Between two failures ``dp = 0``.
- The result is the best child seen (all phases), not the last one; ties keep the earliest.
- Several chains (``chains > 1``, beyond the paper): independent annealing chains, chain ``c`` with its
  own generator seeded by ``(seed, c)``; each chain makes ``iterations`` evaluations. A chain is a pure
  function of the seed and its results, whatever the completion order across trials and chains. Its
  start and calibration neighbours are drawn up front, so they may run in parallel; annealing moves
  are sequential within a chain. The overall best is the lowest penalty over chains (ties: lower chain).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from ray.tune.search import Searcher

from search_algos.base import ArchSearcher
from search_algos.spaces.multipath import MultipathArch, MultipathSpace

__all__ = ["DEFAULT_T0", "SAMOSSearcher", "acceptance_probability", "calibrate_t0"]

DEFAULT_T0 = 1e-3  # used only when calibration saw no change at all (see calibrate_t0)
_LN2 = math.log(2.0)


def acceptance_probability(delta: float, temperature: float) -> float:
    """Probability of accepting a move whose penalty changes by ``delta`` at ``temperature`` (Algorithm 2).

    1 for ``delta <= 0``; ``exp(-delta / T)`` for a worsening; 0 for an infinite worsening or ``T <= 0``.
    """
    if delta <= 0:
        return 1.0
    if not math.isfinite(delta) or temperature <= 0:
        return 0.0
    return math.exp(-delta / temperature)


def calibrate_t0(deltas: list[float]) -> tuple[float, str]:
    """Initial temperature from the penalty changes of neighbours of the start, and how it was found.

    Returns:
        ``(median(positive finite deltas) / ln 2, "median_worsening")`` so that a median worsening is
        accepted with probability 1/2; else ``(median(|non-zero finite deltas|) / ln 2, "median_change")``;
        else ``(DEFAULT_T0, "default")``.
    """
    finite = [d for d in deltas if math.isfinite(d)]
    worse = [d for d in finite if d > 0]
    if worse:
        return statistics.median(worse) / _LN2, "median_worsening"
    moved = [abs(d) for d in finite if d != 0]
    if moved:
        return statistics.median(moved) / _LN2, "median_change"
    return DEFAULT_T0, "default"


def _delta(new: float, old: float) -> float:
    """``new - old``, with two failures (``inf``) counting as equal."""
    if math.isinf(new) and math.isinf(old) and new == old:
        return 0.0
    return new - old


# JSON has no infinities: penalties (and deltas) travel as strings when not finite.
def _enc(value: float | None) -> float | str | None:
    if value is None or math.isfinite(value):
        return value
    return "inf" if value > 0 else "-inf"


def _dec(value: float | str | None) -> float | None:
    return None if value is None else float(value)


def _plain(value: float | None) -> float | None:
    """For reports: non-finite penalties become ``None``."""
    return value if value is not None and math.isfinite(value) else None


@dataclass
class _Chain:
    """One annealing chain: its planned steps, received results and committed history.

    Steps are numbered ``0..iterations-1``: 0 is the start, ``1..n_cal`` the calibration neighbours,
    the rest annealing moves. A step is *planned* (its child is drawn), then *issued* to a trial, then
    *received*, then *committed* in step order.
    """

    index: int
    rng: np.random.Generator
    planned: dict[int, MultipathArch] = field(default_factory=dict)
    issued: set[int] = field(default_factory=set)
    received: dict[int, float] = field(default_factory=dict)
    committed: int = 0
    current: MultipathArch | None = None
    current_p: float = math.inf
    best: MultipathArch | None = None
    best_p: float = math.inf
    best_step: int | None = None
    t0: float | None = None
    t0_source: str | None = None
    temperature: float | None = None
    deltas: list[float] = field(default_factory=list)  # calibration: p(neighbour) - p(start)
    trajectory: list[dict[str, Any]] = field(default_factory=list)

    def ready_step(self) -> int | None:
        """The lowest planned step not yet handed to a trial."""
        free = [s for s in self.planned if s not in self.issued]
        return min(free) if free else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "rng": self.rng.bit_generator.state,
            "planned": {str(s): a.to_dict() for s, a in sorted(self.planned.items())},
            "issued": sorted(self.issued),
            "received": {str(s): _enc(p) for s, p in sorted(self.received.items())},
            "committed": self.committed,
            "current": self.current.to_dict() if self.current else None,
            "current_p": _enc(self.current_p),
            "best": self.best.to_dict() if self.best else None,
            "best_p": _enc(self.best_p),
            "best_step": self.best_step,
            "t0": self.t0,
            "t0_source": self.t0_source,
            "temperature": self.temperature,
            "deltas": [_enc(d) for d in self.deltas],
            "trajectory": [dict(e) for e in self.trajectory],
        }

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> _Chain:
        rng = np.random.default_rng()
        rng.bit_generator.state = payload["rng"]
        arch = lambda d: MultipathArch.from_dict(d) if d else None  # noqa: E731
        return cls(
            index=int(payload["index"]),
            rng=rng,
            planned={int(s): MultipathArch.from_dict(a) for s, a in payload["planned"].items()},
            issued={int(s) for s in payload["issued"]},
            received={int(s): _dec(p) for s, p in payload["received"].items()},
            committed=int(payload["committed"]),
            current=arch(payload["current"]),
            current_p=_dec(payload["current_p"]),
            best=arch(payload["best"]),
            best_p=_dec(payload["best_p"]),
            best_step=payload["best_step"],
            t0=payload["t0"],
            t0_source=payload["t0_source"],
            temperature=payload["temperature"],
            deltas=[_dec(d) for d in payload["deltas"]],
            trajectory=[dict(e) for e in payload["trajectory"]],
        )


class SAMOSSearcher(ArchSearcher):
    """Simulated annealing over multi-path children (Algorithm 2, §III-C), with exact resume.

    Each chain starts at a uniformly drawn valid child (or ``init``), evaluates it, calibrates T0 on
    ``calibration`` neighbours of the start (unless ``t0`` is given), then anneals: neighbour
    (:meth:`MultipathSpace.neighbour`), evaluate, accept with probability ``min(1, exp(-dp / T))``,
    ``T <- cooling * T``. The module docstring lists the readings of the paper.

    Trials receive ``{"arch": <MultipathArch JSON>, "epochs": 0, "chain": c, "step": i}`` and must report
    ``metric`` (a penalty under ``mode="min"``, e.g. ``val_nme``; with ``mode="max"`` the penalty is
    minus the metric). Failed trials count as the worst penalty.

    Args:
        space: the multi-path space to search.
        metric: the reported value (``val_nme``).
        mode: ``"min"`` (a penalty) or ``"max"``.
        seed: chain ``c`` uses a generator seeded by ``(seed, c)``.
        iterations: evaluations per chain, start and calibration included (paper: 200).
        cooling: the factor ``T <- cooling * T`` per annealing move, in (0, 1] (paper: 0.85).
        t0: initial temperature; ``None`` calibrates it (then ``calibration`` applies).
        calibration: neighbours of the start evaluated to calibrate T0 (capped at ``iterations - 1``).
        chains: independent chains run side by side (1 = the paper's search).
        init: a start child (JSON) for every chain instead of a random one.

    Raises:
        ValueError: on bad arguments (the message names the rule and the value).

    Example:
        >>> searcher = SAMOSSearcher(space=MultipathSpace(layers=10, scales=4), metric="val_nme",
        ...                          seed=0, iterations=200, chains=2)
        >>> tuner = tune.Tuner(evaluate_child, tune_config=tune.TuneConfig(search_alg=searcher,
        ...                                                                 num_samples=-1))
    """

    def __init__(
        self,
        *,
        space: MultipathSpace,
        metric: str = "val_nme",
        mode: str = "min",
        seed: int = 0,
        iterations: int = 200,
        cooling: float = 0.85,
        t0: float | None = None,
        calibration: int = 8,
        chains: int = 1,
        init: str | None = None,
    ) -> None:
        problems = []
        if not isinstance(space, MultipathSpace):
            problems.append(f"space must be a MultipathSpace, got {type(space).__name__}")
        for name, value in (("iterations", iterations), ("chains", chains), ("calibration", calibration)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                problems.append(f"{name} must be an integer >= 1, got {value!r}")
        if isinstance(cooling, bool) or not isinstance(cooling, (int, float)) or not 0 < cooling <= 1:
            problems.append(f"cooling must be in (0, 1], got {cooling!r}")
        if t0 is not None and (isinstance(t0, bool) or not isinstance(t0, (int, float)) or not 0 < t0 < math.inf):
            problems.append(f"t0 must be a finite number > 0 or None (calibrate), got {t0!r}")
        if problems:
            raise ValueError("; ".join(problems))
        init_arch = None
        if init is not None:
            try:
                init_arch = space.from_json(init)
            except ValueError as exc:  # InvalidArchitecture, or malformed JSON
                raise ValueError(f"init is not a child of {space.describe()}: {exc}") from None
        super().__init__(metric=metric, mode=mode, seed=seed)
        self.space = space
        self.iterations = iterations
        self.cooling = float(cooling)
        self.t0 = None if t0 is None else float(t0)
        self.calibration = calibration
        self.n_chains = chains
        self.init = init_arch
        # calibration evaluations per chain (0 with a given t0); the start takes one evaluation
        self.n_cal = 0 if t0 is not None else min(calibration, iterations - 1)
        self._chains = [self._new_chain(c) for c in range(chains)]
        self._live: dict[str, tuple[int, int]] = {}  # trial id -> (chain, step)

    # -- chain mechanics ---------------------------------------------------------------------------
    def _new_chain(self, c: int) -> _Chain:
        """Draw the start and the calibration neighbours, in this order, from the chain's generator."""
        chain = _Chain(index=c, rng=np.random.default_rng([self.seed, c]))
        start = self.init if self.init is not None else self.space.sample(chain.rng)
        chain.planned[0] = start
        for step in range(1, self.n_cal + 1):
            chain.planned[step] = self.space.neighbour(start, chain.rng)
        return chain

    def _commit(self, chain: _Chain, step: int, penalty: float) -> None:
        """Apply the result of ``step`` (the next one in order) to ``chain``; plan the next move."""
        arch = chain.planned.pop(step)
        chain.issued.discard(step)
        temperature = delta = None
        if step == 0:
            phase, accepted = "start", True
            chain.current, chain.current_p = arch, penalty
            if self.t0 is not None:
                chain.t0, chain.t0_source, chain.temperature = self.t0, "given", self.t0
        elif step <= self.n_cal:
            phase, accepted = "calibrate", False
            delta = _delta(penalty, chain.current_p)
            chain.deltas.append(delta)
            if step == self.n_cal:
                chain.t0, chain.t0_source = calibrate_t0(chain.deltas)
                chain.temperature = chain.t0
        else:
            phase = "anneal"
            delta = _delta(penalty, chain.current_p)
            temperature = chain.temperature
            u = float(chain.rng.random())  # drawn at every move: the stream does not depend on outcomes
            accepted = delta < 0 or u < acceptance_probability(delta, temperature)
            if accepted:
                chain.current, chain.current_p = arch, penalty
            chain.temperature = temperature * self.cooling
        if chain.best is None or penalty < chain.best_p:
            chain.best, chain.best_p, chain.best_step = arch, penalty, step
        chain.trajectory.append(
            {
                "chain": chain.index,
                "step": step,
                "phase": phase,
                "arch_key": arch.key(),
                "penalty": _plain(penalty),
                "delta": _plain(delta),
                "accepted": accepted,
                "temperature": temperature,
                "best_so_far": _plain(chain.best_p),
            }
        )
        chain.committed = step + 1
        if chain.committed < self.iterations and chain.committed not in chain.planned:
            chain.planned[chain.committed] = self.space.neighbour(chain.current, chain.rng)

    def _receive(self, chain: _Chain, step: int, penalty: float) -> None:
        chain.received[step] = penalty
        while chain.committed in chain.received:
            self._commit(chain, chain.committed, chain.received.pop(chain.committed))

    def _done(self, chain: _Chain) -> bool:
        return chain.committed >= self.iterations

    # -- Tune interface ----------------------------------------------------------------------------
    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        """A step of a chain that is not waiting (the one with the fewest trials out); ``None`` when
        every chain waits for results; ``FINISHED`` when every chain has made its ``iterations``."""
        outstanding = [0] * self.n_chains
        for c, _ in self._live.values():
            outstanding[c] += 1
        candidates = [(outstanding[ch.index], ch.index, s) for ch in self._chains if (s := ch.ready_step()) is not None]
        if not candidates:
            if all(self._done(ch) for ch in self._chains) and not self._live:
                return Searcher.FINISHED
            return None
        _, c, step = min(candidates)
        chain = self._chains[c]
        chain.issued.add(step)
        self._live[trial_id] = (c, step)
        return {"arch": chain.planned[step].to_json(), "epochs": 0, "chain": c, "step": step}

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        ref = self._live.pop(trial_id, None)
        if ref is None:
            return  # not ours, or reported twice
        c, step = ref
        self._receive(self._chains[c], step, -self.score(result, error=error))

    # -- state -------------------------------------------------------------------------------------
    def _settings(self) -> dict[str, Any]:
        return {
            "space": self.space.describe(),
            "metric": self.metric,
            "mode": self.mode,
            "seed": self.seed,
            "iterations": self.iterations,
            "cooling": self.cooling,
            "t0": self.t0,
            "calibration": self.calibration,
            "chains": self.n_chains,
            "init": self.init.to_json() if self.init is not None else None,
        }

    def get_state(self) -> dict[str, Any]:
        return {
            "version": 1,
            "settings": self._settings(),
            "chains": [ch.to_dict() for ch in self._chains],
            "live": {tid: [c, s] for tid, (c, s) in self._live.items()},
        }

    def set_state(self, state: dict[str, Any]) -> None:
        mine, saved = self._settings(), state.get("settings", {})
        differs = sorted(k for k in mine if saved.get(k) != mine[k])
        if differs:
            raise ValueError(
                f"saved searcher state differs in {differs} (saved {[saved.get(k) for k in differs]}, "
                f"now {[mine[k] for k in differs]}); resume with the run's own config"
            )
        self._chains = [_Chain.from_dict(ch) for ch in state["chains"]]
        self._live = {tid: (int(c), int(s)) for tid, (c, s) in state["live"].items()}

    # -- results -----------------------------------------------------------------------------------
    def _best_chain(self) -> _Chain | None:
        seen = [ch for ch in self._chains if ch.best is not None]
        return min(seen, key=lambda ch: (ch.best_p, ch.index)) if seen else None

    def best_arch(self) -> MultipathArch | None:
        """The best child seen so far over all chains (``None`` before the first result)."""
        chain = self._best_chain()
        return chain.best if chain else None

    def best_result(self) -> dict[str, Any] | None:
        """``{"penalty", "metric", "value", "chain", "step", "arch_key"}`` of :meth:`best_arch`
        (``penalty``/``value`` are ``None`` when every evaluation failed)."""
        chain = self._best_chain()
        if chain is None:
            return None
        penalty = _plain(chain.best_p)
        value = None if penalty is None else (penalty if self.mode == "min" else -penalty)
        return {
            "penalty": penalty,
            "metric": self.metric,
            "value": value,
            "chain": chain.index,
            "step": chain.best_step,
            "arch_key": chain.best.key(),
        }

    @property
    def trajectory(self) -> list[dict[str, Any]]:
        """Committed evaluations of every chain, by chain then step (plain dicts, for plots).

        Keys: ``chain, step, phase`` (start/calibrate/anneal)``, arch_key, penalty, delta`` (vs the
        current child; ``None`` for the start or non-finite)``, accepted, temperature`` (of an annealing
        move)``, best_so_far`` (the chain's best penalty after this step).
        """
        return [dict(e) for ch in self._chains for e in ch.trajectory]

    def summary(self) -> dict[str, Any]:
        """Figures for ``best.json`` and reports: the best child, T0s, acceptance rates, trajectory."""
        best, result = self.best_arch(), self.best_result()
        rates = []
        for ch in self._chains:
            moves = [e for e in ch.trajectory if e["phase"] == "anneal"]
            rates.append(sum(e["accepted"] for e in moves) / len(moves) if moves else None)
        moves = [e for ch in self._chains for e in ch.trajectory if e["phase"] == "anneal"]
        return {
            "best_arch": best.to_json() if best else None,
            "best_summary": best.summary() if best else None,
            "best_key": best.key() if best else None,
            "best_penalty": result["penalty"] if result else None,
            "best_value": result["value"] if result else None,
            "best_chain": result["chain"] if result else None,
            "best_step": result["step"] if result else None,
            "evaluations": sum(ch.committed for ch in self._chains),
            "iterations": self.iterations,
            "chains": self.n_chains,
            "done": all(self._done(ch) for ch in self._chains),
            "cooling": self.cooling,
            "t0": [ch.t0 for ch in self._chains],
            "t0_source": [ch.t0_source for ch in self._chains],
            "acceptance_rate": sum(e["accepted"] for e in moves) / len(moves) if moves else None,
            "acceptance_rate_by_chain": rates,
            "trajectory": self.trajectory,
        }
