"""Unit tests of the Efficient Global NAS searcher (Algorithm 1, §3.3): no Ray, synthetic evaluators.

Each test drives :class:`MacroMicroSearcher` through a small loop (suggest -> evaluate -> complete)
with a deterministic accuracy function of (architecture, epochs), and checks the exact sequence of
evaluations and verdicts against sequences worked out by hand from the paper's rules.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable

import numpy as np
import pytest
from ray.tune.search import Searcher

from search_algos.macro_micro import PRESETS, MacroMicroSearcher, MacroMicroSettings, next_epochs
from search_algos.spaces.global_space import GlobalArch, GlobalSpace, count_params

IN_CH, N_CLS = 3, 10
SMALL = {"d_min": 3, "d_max": 12, "w_min": 8, "w_max": 16, "w_res": 2, "e_min_macro": 4, "e_min_micro": 1}
FAIL = "fail"  # the evaluator's way of saying "this trial errored"

Evaluate = Callable[[GlobalArch, int], "float | str"]


def settings(**overrides) -> MacroMicroSettings:
    return MacroMicroSettings(**{**SMALL, **overrides})


def searcher(cfg: MacroMicroSettings, speculate: int = 1) -> MacroMicroSearcher:
    return MacroMicroSearcher(settings=cfg, in_channels=IN_CH, num_classes=N_CLS, speculate=speculate)


def params(arch: GlobalArch) -> int:
    return count_params(arch, in_channels=IN_CH, num_classes=N_CLS)


def changes(arch: GlobalArch) -> frozenset[tuple[int, str]]:
    """Micro changes of ``arch`` relative to all-sep-3x3: {(layer, "conv" | "k5")}."""
    out = {(i, "conv") for i, op in enumerate(arch.ops) if op == "conv"}
    return frozenset(out | {(i, "k5") for i, k in enumerate(arch.kernels) if k == 5})


def table(
    *,
    grow: dict[int, float | str],
    prune: dict[int, float | str] | None = None,
    micro: dict[tuple[int, str], float] | None = None,
    micro_fail: frozenset[tuple[int, str]] = frozenset(),
    base: float = 60.0,
    micro_epochs: int = 1,
) -> Evaluate:
    """Macro accuracy by depth (grow, width w_max) or width (prune); micro = base + per-change bonus."""

    def evaluate(arch: GlobalArch, epochs: int) -> float | str:
        if epochs == micro_epochs:  # baseline and micro candidates (macro epochs are larger)
            present = changes(arch)
            if present & micro_fail:
                return FAIL
            return base + sum((micro or {}).get(c, 0.0) for c in present)
        assert not changes(arch), "macro candidates are all sep 3x3"
        if arch.width == SMALL["w_max"]:
            return grow.get(arch.depth, 0.0)
        return (prune or {}).get(arch.width, 0.0)

    return evaluate


class Driver:
    """Plays Tune: asks for suggestions, evaluates them, reports back in a chosen completion order.

    Args:
        order: "fifo", "lifo" or "random" (seeded): which outstanding trial finishes next.
    """

    def __init__(self, s: MacroMicroSearcher, evaluate: Evaluate, *, order: str = "fifo", seed: int = 0) -> None:
        self.searcher, self.evaluate, self.order = s, evaluate, order
        self.rng = np.random.default_rng(seed)
        self.pending: list[tuple[str, dict]] = []
        self.issued: list[tuple[GlobalArch, int]] = []
        self.count, self.max_outstanding, self.finished = 0, 0, False

    def fill(self) -> None:
        while True:
            config = self.searcher.suggest(f"trial_{self.count}")
            if config == Searcher.FINISHED:
                assert not self.pending, "FINISHED while trials are still outstanding"
                self.finished = True
                return
            if config is None:
                return
            assert set(config) - {"reference"} == {"arch", "epochs"} and isinstance(config["epochs"], int)
            assert config.get("reference") in (None, True)
            arch = GlobalArch.from_dict(json.loads(config["arch"]))
            self.issued.append((arch, config["epochs"]))
            self.pending.append((f"trial_{self.count}", config))
            self.count += 1
            self.max_outstanding = max(self.max_outstanding, len(self.pending))

    def complete_one(self) -> None:
        assert self.pending, "the searcher is waiting, but nothing is outstanding"
        if self.order == "fifo":
            pick = 0
        elif self.order == "lifo":
            pick = len(self.pending) - 1
        else:
            pick = int(self.rng.integers(len(self.pending)))
        trial_id, config = self.pending.pop(pick)
        acc = self.evaluate(GlobalArch.from_dict(json.loads(config["arch"])), config["epochs"])
        if acc == FAIL:
            self.searcher.on_trial_complete(trial_id, None, error=True)
        else:
            arch = GlobalArch.from_dict(json.loads(config["arch"]))
            self.searcher.on_trial_complete(trial_id, {"val_acc": acc, "params": params(arch)})

    def run(self, *, restore_every: int = 0, make: Callable[[], MacroMicroSearcher] | None = None) -> Driver:
        """Run to the end; with ``restore_every=n``, swap in a restored searcher every n completions."""
        done = 0
        while True:
            self.fill()
            if self.finished:
                return self
            self.complete_one()
            done += 1
            if restore_every and done % restore_every == 0:
                self.restore(make)

    def restore(self, make: Callable[[], MacroMicroSearcher]) -> None:
        """Save -> strict JSON text -> a fresh searcher; the outstanding trials keep running."""
        text = json.dumps(self.searcher.get_state(), allow_nan=False)
        fresh = make()
        fresh.set_state(json.loads(text))
        self.searcher = fresh


def decisions(s: MacroMicroSearcher, phase: str) -> list[tuple]:
    return [(e["summary"], e["epochs"], e["decision"]) for e in s.log if e["phase"] == phase]


# -- settings ------------------------------------------------------------------------------------


def test_presets_are_the_papers_tiny_and_mobile_settings():
    tiny = MacroMicroSettings.preset("tiny")
    assert (tiny.d_min, tiny.d_max, tiny.w_min, tiny.w_max, tiny.w_res) == (10, 100, 16, 64, 2)
    assert (tiny.e_min_macro, tiny.e_min_micro) == (10, 2)
    assert (tiny.grow_gain, tiny.drop_tolerance, tiny.max_drops) == (0.10, 0.05, 3)
    assert (tiny.prune_epochs_step, tiny.max_prune_failures, tiny.param_slack) == (2, 3, 10_000)
    assert tiny.width_step == tiny.w_res == 2
    mobile = MacroMicroSettings.preset("mobile")
    assert mobile == MacroMicroSettings.preset("tiny", w_max=128)
    assert sorted(PRESETS) == ["mobile", "tiny"]


def test_preset_errors_list_the_valid_names():
    with pytest.raises(ValueError, match=r"unknown preset 'huge'; valid presets: \['mobile', 'tiny'\]"):
        MacroMicroSettings.preset("huge")
    with pytest.raises(ValueError, match=r"unknown setting\(s\) \['dmin'\]; valid settings: \['d_min'"):
        MacroMicroSettings.preset("tiny", dmin=3)
    assert MacroMicroSettings.preset("tiny", width_step=1).width_step == 1


def test_settings_validation_reports_every_rule_with_its_values():
    with pytest.raises(ValueError) as info:
        settings(d_min=20, d_max=10, w_res=0, max_drops=0, drop_tolerance=-1)
    message = str(info.value)
    assert "1 <= d_min <= d_max must hold, but got d_min=20, d_max=10" in message
    assert "w_res >= 1 must hold, but got w_res=0" in message
    assert "max_drops >= 1 must hold, but got max_drops=0" in message
    assert "drop_tolerance >= 0 must hold, but got drop_tolerance=-1.0" in message
    with pytest.raises(ValueError, match="d_min must be an integer, got True"):
        settings(d_min=True)
    with pytest.raises(ValueError, match="grow_gain must be a finite number, got nan"):
        settings(grow_gain=math.nan)
    with pytest.raises(TypeError):
        MacroMicroSettings(3, 5, 8, 16, 2, 4, 1)  # keyword-only


def test_settings_validate_under_pydantic_and_forbid_unknown_keys():
    pydantic = pytest.importorskip("pydantic")
    adapter = pydantic.TypeAdapter(MacroMicroSettings)
    parsed = adapter.validate_python(dict(SMALL))
    assert parsed == settings() and parsed.width_step == 2
    with pytest.raises(pydantic.ValidationError, match="grow_gian"):
        adapter.validate_python({**SMALL, "grow_gian": 0.2})
    with pytest.raises(pydantic.ValidationError, match="d_min <= d_max"):
        adapter.validate_python({**SMALL, "d_min": 50})


def test_constructor_checks_its_arguments():
    with pytest.raises(ValueError, match="speculate must be an integer >= 1, got 0"):
        searcher(settings(), speculate=0)
    with pytest.raises(ValueError, match="mode must be 'max'"):
        MacroMicroSearcher(settings=settings(), in_channels=3, num_classes=10, mode="min")
    with pytest.raises(ValueError, match="in_channels must be an integer >= 1"):
        MacroMicroSearcher(settings=settings(), in_channels=0, num_classes=10)


# -- dynamic epochs (§3.2) -----------------------------------------------------------------------


def test_next_epochs_follows_the_parameter_relation():
    cfg = settings(param_slack=100)
    assert next_epochs(10, 1000, 1001, cfg) == 11  # more parameters: +1
    assert next_epochs(10, 1000, 999, cfg) == 12  # fewer: +2
    assert next_epochs(10, 1000, 1000, cfg) == 10  # equal: same
    assert next_epochs(2, 1000, 1100, cfg, matched=True) == 2  # param-matched (micro): same
    assert next_epochs(2, 1000, 600, cfg, matched=True) == 2
    with pytest.raises(ValueError, match="cand_params <= prev_params \\+ param_slack"):
        next_epochs(2, 1000, 1101, cfg, matched=True)


# -- macro: grow ---------------------------------------------------------------------------------


def test_grow_accepts_continues_and_stops_after_three_drops():
    evaluate = table(grow={3: 50.0, 4: 50.4, 5: 50.38, 6: 49.0, 7: 50.9, 8: 50.0, 9: 50.86, 10: 40.0, 11: 99.0})
    s = Driver(searcher(settings()), evaluate).run().searcher
    # Each candidate grows from the previous one and trains one epoch longer, whatever the verdict.
    assert decisions(s, "grow") == [
        ("D=3 W=16 [s3 s3 s3]", 4, "start"),
        ("D=4 W=16 [s3 s3 s3 s3]", 5, "accept"),  # 50.4 >= 50.0 + 0.10
        ("D=5 W=16 [s3 s3 s3 s3 s3]", 6, "continue"),  # 50.38 within 0.05 of 50.4
        ("D=6 W=16 [s3 s3 s3 s3 s3 s3]", 7, "drop"),  # drop 1
        ("D=7 W=16 [s3 s3 s3 s3 s3 s3 s3]", 8, "accept"),  # 50.9: new best
        ("D=8 W=16 [s3 s3 s3 s3 s3 s3 s3 s3]", 9, "drop"),  # drop 2 (drops are not reset by an accept)
        ("D=9 W=16 [s3 s3 s3 s3 s3 s3 s3 s3 s3]", 10, "continue"),  # 50.86 >= 50.9 - 0.05
        ("D=10 W=16 [s3 s3 s3 s3 s3 s3 s3 s3 s3 s3]", 11, "drop"),  # drop 3: stop (depth 11 never tried)
    ]
    summary = s.summary()
    assert summary["grow_stop"] == "drops"
    assert GlobalArch.from_dict(json.loads(summary["macro_arch"])).depth == 7  # the best's depth
    first_prune = next(e for e in s.log if e["phase"] == "prune")
    assert first_prune["summary"].startswith("D=7 W=14") and first_prune["epochs"] == 8 + 2


def test_grow_ties_sit_on_the_threshold_despite_binary_floating_point():
    # In binary floating point 49.97 < 50.02 - 0.05 and 50.12 < 50.02 + 0.10, although both are
    # exactly on the paper's thresholds; the searcher counts values within 1e-9 points as on them.
    assert 49.97 < 50.02 - 0.05 and 50.12 < 50.02 + 0.10
    evaluate = table(grow={3: 50.02, 4: 49.97, 5: 50.12, 6: 50.07, 7: 50.069, 8: 0.0, 9: 0.0})
    s = Driver(searcher(settings()), evaluate).run().searcher
    assert [d for _, _, d in decisions(s, "grow")] == [
        "start",
        "continue",  # == best - 0.05
        "accept",  # == best + 0.10
        "continue",  # 50.07 == 50.12 - 0.05
        "drop",  # 50.069 < 50.12 - 0.05
        "drop",
        "drop",
    ]


def test_grow_stops_at_d_max():
    evaluate = table(grow={d: 50.0 + d for d in range(3, 20)})
    s = Driver(searcher(settings(d_max=6)), evaluate).run().searcher
    assert [(e["summary"][:3], e["epochs"]) for e in s.log if e["phase"] == "grow"] == [
        ("D=3", 4), ("D=4", 5), ("D=5", 6), ("D=6", 7),
    ]  # fmt: skip
    assert s.summary()["grow_stop"] == "d_max"
    assert s.best_arch().depth == 6


# -- macro: prune --------------------------------------------------------------------------------


def test_prune_retains_fails_and_stops_at_w_min():
    evaluate = table(grow={3: 50.0, 4: 50.5, 5: 0.0, 6: 0.0, 7: 0.0}, prune={14: 50.45, 12: 50.2, 10: 50.8, 8: 50.74})
    s = Driver(searcher(settings()), evaluate).run().searcher
    # From the grow best (D=4, E=5): width -2 and epochs +2 each step; ref = best accuracy so far.
    assert decisions(s, "prune") == [
        ("D=4 W=14 [s3 s3 s3 s3]", 7, "accept"),  # 50.45 == 50.5 - 0.05: retained (ref stays 50.5)
        ("D=4 W=12 [s3 s3 s3 s3]", 9, "fail"),  # 50.2 < 50.45: failure 1
        ("D=4 W=10 [s3 s3 s3 s3]", 11, "accept"),  # pruned further from the failed one; ref -> 50.8
        ("D=4 W=8 [s3 s3 s3 s3]", 13, "fail"),  # 50.74 < 50.8 - 0.05; W_min reached: stop
    ]
    summary = s.summary()
    assert summary["prune_stop"] == "w_min"
    assert summary["macro_summary"] == "D=4 W=10 [s3 s3 s3 s3]"  # the last accepted


def test_prune_stops_after_three_failures():
    evaluate = table(grow={3: 50.0, 4: 0.0, 5: 0.0, 6: 0.0}, prune={14: 49.0, 12: 50.0, 10: 48.0, 8: 47.0})
    cfg = settings(w_min=4)
    s = Driver(searcher(cfg), evaluate).run().searcher
    assert decisions(s, "prune") == [
        ("D=3 W=14 [s3 s3 s3]", 6, "fail"),
        ("D=3 W=12 [s3 s3 s3]", 8, "accept"),
        ("D=3 W=10 [s3 s3 s3]", 10, "fail"),
        ("D=3 W=8 [s3 s3 s3]", 12, "fail"),  # third failure: W=6 and W=4 are never tried
    ]
    assert s.summary()["prune_stop"] == "failures"
    assert s.summary()["macro_summary"] == "D=3 W=12 [s3 s3 s3]"


# -- micro ---------------------------------------------------------------------------------------

MICRO_BONUS = {(0, "conv"): -1.0, (1, "conv"): 0.5, (1, "k5"): -0.1, (2, "conv"): 0.5, (3, "k5"): 0.25}


def micro_setup(**overrides) -> tuple[MacroMicroSettings, Evaluate]:
    """Macro ends at D=5 W=12 (no grow; prune accepts 14 and 12, then fails three times)."""
    cfg = settings(d_min=5, d_max=5, w_min=4, w_max=16, param_slack=300, **overrides)
    return cfg, table(grow={5: 70.0}, prune={14: 70.1, 12: 70.3, 10: 0.0, 8: 0.0, 6: 0.0}, micro=MICRO_BONUS)


def test_micro_keeps_improvements_at_matched_parameters():
    cfg, evaluate = micro_setup()
    driver = Driver(searcher(cfg), evaluate).run()
    s = driver.searcher
    baseline = [e for e in s.log if e["phase"] == "baseline"]
    assert [(e["summary"], e["epochs"]) for e in baseline] == [("D=5 W=12 [s3 s3 s3 s3 s3]", 1)]
    budget = baseline[0]["params"] + cfg.param_slack
    archs = {a.key(): a for a, _ in driver.issued}
    current = archs[baseline[0]["arch_key"]]
    verdicts, reduced = [], 0
    for e in (e for e in s.log if e["phase"] == "micro"):
        arch = archs[e["arch_key"]]
        verdicts.append((e["layer"], e["change"], e["decision"]))
        assert e["epochs"] == cfg.e_min_micro
        assert e["params"] == params(arch) <= budget
        # The width is cut only as far as needed: one step less would break the budget.
        if arch.width != current.width:
            reduced += 1
            assert params(arch.with_width(arch.width + cfg.width_step)) > budget
        if e["change"] == "op":
            expected = current.with_layer(e["layer"], op="conv")
        else:
            expected = current.with_layer(e["layer"], kernel=5)
        assert arch == expected.with_width(arch.width)  # the one change, on the current architecture
        if e["decision"] == "keep":
            current = arch
    assert reduced > 0, "the scenario must exercise the width reduction"
    assert verdicts == [
        (0, "op", "reject"),  # -1.0
        (0, "kernel", "reject"),  # equal accuracy is no improvement
        (1, "op", "keep"),
        (1, "kernel", "reject"),
        (2, "op", "keep"),
        (2, "kernel", "reject"),
        (3, "op", "reject"),
        (3, "kernel", "keep"),
        (4, "op", "reject"),
        (4, "kernel", "reject"),
    ]
    final = s.best_arch()
    assert final.ops == ("sep", "conv", "conv", "sep", "sep") and final.kernels == (3, 3, 3, 5, 3)
    assert final.width < 12
    assert s.best_result() == {"acc": 60.0 + 0.5 + 0.5 + 0.25, "params": params(final), "epochs": 1}
    summary = s.summary()
    assert summary["phase"] == "done" and summary["final_summary"] == final.summary()
    # Paper count: D' + W' + 1 + 2 D_f evaluations.
    assert summary["evaluations"] == {"grow": 1, "prune": 5, "baseline": 1, "micro": 10, "total": 17}
    assert summary["wasted"] == 0 and summary["skipped"] == 0


def test_micro_skips_changes_that_cannot_meet_the_budget():
    # w_min = w_max and no slack: no change fits at any allowed width; nothing is evaluated for it.
    cfg = settings(d_min=4, d_max=4, w_min=16, param_slack=0)
    s = Driver(searcher(cfg), table(grow={4: 70.0})).run().searcher
    skipped = [e for e in s.log if e["decision"] == "skipped_budget"]
    assert [(e["layer"], e["change"]) for e in skipped] == [(i, c) for i in range(4) for c in ("op", "kernel")]
    assert all(e["index"] is None and e["acc"] is None and e["params"] > params(GlobalArch.uniform(4, 16))
               for e in skipped)  # fmt: skip
    summary = s.summary()
    assert summary["evaluations"] == {"grow": 1, "prune": 0, "baseline": 1, "micro": 0, "total": 2}
    assert summary["skipped"] == 8 and summary["final_summary"] == "D=4 W=16 [s3 s3 s3 s3]"


def test_failed_trials_score_minus_inf_and_the_search_goes_on():
    evaluate = table(
        grow={3: FAIL, 4: 50.0, 5: FAIL, 6: math.nan, 7: 50.3, 8: 0.0},
        prune={14: FAIL, 12: 50.3, 10: 0.0, 8: 0.0},
        micro={(1, "conv"): 1.0},
        micro_fail=frozenset({(0, "conv"), (1, "k5")}),
    )
    s = Driver(searcher(settings(param_slack=2000)), evaluate).run().searcher
    assert [d for _, _, d in decisions(s, "grow")] == ["start", "accept", "drop", "drop", "accept", "drop"]
    assert [d for _, _, d in decisions(s, "prune")] == ["fail", "accept", "fail", "fail"]
    micro = {(e["layer"], e["change"]): (e["decision"], e["acc"]) for e in s.log if e["phase"] == "micro"}
    assert micro[(0, "op")] == ("reject", None) and micro[(1, "kernel")] == ("reject", None)
    assert micro[(1, "op")] == ("keep", 61.0)
    assert s.log[0]["acc"] is None and s.summary()["phase"] == "done"
    json.dumps(s.summary(), allow_nan=False)  # failures are None, never -inf/NaN, in reports


# -- state, speculation --------------------------------------------------------------------------

SCENARIO = table(
    grow={3: 50.0, 4: 50.3, 5: 50.28, 6: 49.0, 7: 50.6, 8: FAIL, 9: 50.58, 10: 40.0, 11: 99.0},
    prune={14: 50.58, 12: FAIL, 10: 50.7, 8: 49.0},
    micro={(0, "k5"): 0.2, (1, "conv"): 0.5, (3, "k5"): 0.1, (6, "k5"): 0.1},
    micro_fail=frozenset({(2, "conv")}),
    base=50.0,
)
SCENARIO_CFG = settings(param_slack=300)


def reference() -> MacroMicroSearcher:
    return Driver(searcher(SCENARIO_CFG), SCENARIO).run().searcher


def test_scenario_exercises_every_phase_and_verdict():
    s = reference()
    verdicts = {"start", "accept", "continue", "drop", "fail", "baseline", "keep", "reject", "skipped_budget"}
    assert {e["decision"] for e in s.log} == verdicts
    assert s.summary()["macro_summary"] == "D=7 W=10 [s3 s3 s3 s3 s3 s3 s3]"
    assert s.best_arch().width < 10  # micro kept changes that needed narrower layers


@pytest.mark.parametrize("speculate", [1, 4])
def test_state_round_trip_at_every_step_continues_identically(speculate):
    ref = reference()
    make = lambda: searcher(SCENARIO_CFG, speculate)  # noqa: E731
    restored = Driver(make(), SCENARIO, order="random", seed=3).run(restore_every=1, make=make).searcher
    assert restored.log == ref.log
    assert restored.best_arch() == ref.best_arch()


def test_results_of_trials_in_flight_at_save_time_are_used_after_restore(tmp_path):
    make = lambda: searcher(SCENARIO_CFG, 3)  # noqa: E731
    driver = Driver(make(), SCENARIO, order="lifo")
    for _ in range(9):  # into the prune phase, three trials out
        driver.fill()
        driver.complete_one()
    driver.fill()
    assert len(driver.pending) == 3 and driver.searcher.phase in ("grow", "prune")
    path = tmp_path / "searcher.json"
    driver.searcher.save(str(path))
    fresh = make()
    fresh.restore(str(path))
    driver.searcher = fresh
    in_flight = {(a.key(), e) for a, e in driver.issued[-3:]}
    issued_before = len(driver.issued)
    driver.run()
    s = driver.searcher
    assert s.log == reference().log
    # The outstanding trials were not suggested again: their results, arriving after restore, were used
    # (or counted as wasted), so every trial is accounted for.
    assert not in_flight & {(a.key(), e) for a, e in driver.issued[issued_before:]}
    assert len(driver.issued) == s.summary()["evaluations"]["total"] + s.summary()["wasted"]


def test_set_state_refuses_a_different_configuration():
    state = searcher(settings()).get_state()
    with pytest.raises(ValueError, match=r"differs in \['settings'\].*resume with the run's own config"):
        searcher(settings(d_max=20)).set_state(state)


@pytest.mark.parametrize(("order", "seed"), [("fifo", 0), ("lifo", 0), ("random", 1), ("random", 2)])
def test_speculation_commits_the_sequential_decisions(order, seed):
    ref = reference()
    driver = Driver(searcher(SCENARIO_CFG, 4), SCENARIO, order=order, seed=seed).run()
    s = driver.searcher
    assert s.log == ref.log
    assert s.best_arch() == ref.best_arch() and s.best_result() == ref.best_result()
    summary = s.summary()
    assert summary["evaluations"] == ref.summary()["evaluations"]
    assert 1 < driver.max_outstanding <= 4
    assert driver.count == summary["evaluations"]["total"] + summary["wasted"]  # every trial accounted for


def test_speculation_shortens_the_critical_path():
    """All outstanding trials finish together ("rounds"); speculation needs fewer rounds."""

    def rounds(k: int) -> tuple[int, int]:
        driver, n = Driver(searcher(SCENARIO_CFG, k), SCENARIO, order="lifo"), 0
        while True:
            driver.fill()
            if driver.finished:
                return n, driver.searcher.summary()["wasted"]
            while driver.pending:
                driver.complete_one()
            n += 1

    sequential, wasted_1 = rounds(1)
    speculative, wasted_4 = rounds(4)
    assert wasted_1 == 0 and sequential == reference().summary()["evaluations"]["total"]
    assert speculative < sequential and wasted_4 > 0


def test_suggested_configs_parse_in_the_global_space():
    driver = Driver(searcher(SCENARIO_CFG), SCENARIO)
    driver.fill()
    _, config = driver.pending[0]
    space = GlobalSpace(d_min=3, d_max=12, w_min=8, w_max=16, w_step=2)
    assert space.from_json(config["arch"]) == GlobalArch.uniform(3, 16) and config["epochs"] == 4
    assert driver.searcher.suggest("again") is None  # sequential: waits for the result


def test_an_early_result_does_not_idle_a_free_slot():
    """Step 2 finishing before step 1 leaves one slot free: it goes to step 3, not to waiting."""
    s = searcher(settings(), speculate=2)
    start = s.suggest("t0")
    s.on_trial_complete("t0", {"val_acc": 50.0})  # the start, committed
    first, second = s.suggest("t1"), s.suggest("t2")  # grow steps d_min+1 and d_min+2
    assert s.suggest("t3") is None  # two live trials: the window is full
    s.on_trial_complete("t2", {"val_acc": 52.0})  # the later step returns first: held, not committed
    third = s.suggest("t3")
    depth = lambda c: json.loads(c["arch"])["depth"]  # noqa: E731
    assert [depth(c) for c in (start, first, second, third)] == [3, 4, 5, 6]
    assert [c["epochs"] for c in (start, first, second, third)] == [4, 5, 6, 7]


# -- trial schedulers ----------------------------------------------------------------------------


def _run_with_stops(s: MacroMicroSearcher, evaluate: Evaluate, stop: Callable[[GlobalArch, int], bool],
                    *, restore_every: int = 0) -> tuple[MacroMicroSearcher, list[dict]]:
    """Drive ``s`` sequentially; a trial ``stop`` picks reports after 1 epoch only (a scheduler stopped it)."""
    configs, n = [], 0
    while True:
        config = s.suggest(f"t{n}")
        if config == Searcher.FINISHED:
            return s, configs
        assert config is not None, "sequential: a config or FINISHED"
        configs.append(config)
        arch = GlobalArch.from_dict(json.loads(config["arch"]))
        epochs = config["epochs"]
        trained = 1 if stop(arch, epochs) else epochs
        s.on_trial_complete(f"t{n}", {"val_acc": evaluate(arch, epochs), "epoch": trained, "epochs": epochs,
                                      "status": "ok", "cached": False})
        n += 1
        if restore_every and n % restore_every == 0:
            fresh = searcher(s.settings)
            fresh.set_state(json.loads(json.dumps(s.get_state(), allow_nan=False)))
            s = fresh


STOPS_CFG = settings(e_min_micro=2, param_slack=2000)
STOPS = table(grow={3: 50.0, 4: 50.3, 5: 50.0, 6: 50.0, 7: 50.0}, prune={14: 40.0, 12: 40.0, 10: 40.0},
              micro={(0, "conv"): 1.0, (1, "conv"): 1.0}, base=60.0, micro_epochs=2)


def _stopped(arch: GlobalArch, epochs: int) -> bool:
    # depth 4 (would be accepted: 50.3 >= 50.0 + 0.1) and the conv at layer 0 (would be kept: +1.0)
    return (arch.width == 16 and arch.depth == 4 and not changes(arch)) or changes(arch) == {(0, "conv")}


def test_a_candidate_a_scheduler_stopped_is_rejected_and_the_log_says_so():
    s, configs = _run_with_stops(searcher(STOPS_CFG), STOPS, _stopped)
    assert [d for _, _, d in decisions(s, "grow")] == ["start", "drop", "continue", "continue", "continue", "drop", "drop"]
    stopped = [e for e in s.log if "stopped_early" in e]
    assert [(e["phase"], e["summary"], e["decision"], e["stopped_early"]) for e in stopped] == [
        ("grow", "D=4 W=16 [s3 s3 s3 s3]", "drop", 1), ("micro", stopped[1]["summary"], "reject", 1)]
    assert stopped[1]["layer"] == 0 and stopped[1]["change"] == "op" and stopped[0]["acc"] is None
    # the same change on layer 1, not stopped, is kept: the stop rejected only the candidate it hit
    micro = {(e["layer"], e["change"]): e["decision"] for e in s.log if e["phase"] == "micro"}
    assert micro[(1, "op")] == "keep"
    assert s.summary()["stopped_early"] == 2 and s.summary()["phase"] == "done"
    # the references, and only they, say so in their trial config: the first candidate and the baseline
    refs = [(json.loads(c["arch"])["depth"], c["epochs"]) for c in configs if c.get("reference")]
    assert refs == [(3, STOPS_CFG.e_min_macro), (3, STOPS_CFG.e_min_micro)]
    assert all(c.get("reference") in (None, True) for c in configs)


def test_stopped_verdicts_survive_a_save_and_restore_at_every_step():
    want, _ = _run_with_stops(searcher(STOPS_CFG), STOPS, _stopped)
    got, _ = _run_with_stops(searcher(STOPS_CFG), STOPS, _stopped, restore_every=1)
    assert got.log == want.log and got.best_arch() == want.best_arch()


def test_a_stop_is_only_a_report_short_of_the_epochs():
    from search_algos.macro_micro import stopped_epochs

    assert stopped_epochs({"epoch": 2, "status": "ok"}, 5) == 2
    assert stopped_epochs({"epoch": 5, "status": "ok"}, 5) is None  # a whole training
    assert stopped_epochs({"epoch": 1, "status": "ok", "cached": True}, 5) is None  # a stored hit: whole
    assert stopped_epochs({"epoch": 1, "status": "failed"}, 5) is None  # a failure, scored as one
    assert stopped_epochs({"val_acc": 50.0}, 5) is None and stopped_epochs(None, 5) is None


def test_states_saved_before_schedulers_still_load():
    s = searcher(STOPS_CFG)
    s.suggest("t0")
    state = json.loads(json.dumps(s.get_state()))
    for trial in state["trials"].values():
        del trial["stopped"]  # what version 1 states saved before this change hold
    fresh = searcher(STOPS_CFG)
    fresh.set_state(state)
    fresh.on_trial_complete("t0", {"val_acc": 50.0, "epoch": STOPS_CFG.e_min_macro, "status": "ok"})
    assert fresh.log[0]["decision"] == "start"


def test_max_epochs_bounds_every_evaluation_of_the_search():
    s = reference()
    assert max(e["epochs"] for e in s.log if e["epochs"] is not None) <= s.max_epochs
    assert s.max_epochs == 4 + (12 - 3) * 1 + (16 - 8) // 2 * 2  # e_min_macro + grow steps + prune steps
