"""Ctrl-C during ``Tuner.fit``: the stage learns of it by its own flag (unit, no Ray).

Tune ends its run gracefully on SIGINT/SIGUSR1 and ``fit`` returns normally; ``run_stage`` must still
know, so the stage is not marked done (the end-to-end check is
``tests/test_run_integration.py::test_ctrl_c_stops_the_run_unfinished_and_resume_completes_it``).
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator

import pytest

from orchestrator.pipeline import _stop_signal_flag


@pytest.fixture(autouse=True)
def _known_handlers() -> Iterator[None]:
    """Python's own handlers while a test runs; whatever was there before afterwards."""
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGUSR1)}
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGUSR1, signal.SIG_DFL)
    yield
    for signum, handler in before.items():
        signal.signal(signum, handler)


def _install_like_tune(signum: int = signal.SIGINT) -> threading.Event:
    """What Tune 2.60 does when ``fit`` starts: its handler ends the run and puts the old SIGINT handler back."""
    original = signal.getsignal(signal.SIGINT)
    stop = threading.Event()

    def signal_interrupt_tune_run(sig: int, frame: object) -> None:
        stop.set()
        signal.signal(signal.SIGINT, original)

    signal.signal(signum, signal_interrupt_tune_run)
    return stop


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGUSR1])
def test_a_stop_signal_that_tune_handles_sets_the_flag(signum: int) -> None:
    with _stop_signal_flag() as interrupted:
        stop = _install_like_tune(signum)
        os.kill(os.getpid(), signum)
        assert stop.is_set(), "Tune's handler still ends the run"
        assert interrupted.is_set()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL


def test_a_second_ctrl_c_raises_at_once_and_the_handlers_are_put_back() -> None:
    with pytest.raises(KeyboardInterrupt):
        with _stop_signal_flag() as interrupted:
            _install_like_tune()
            os.kill(os.getpid(), signal.SIGINT)  # Tune's: the run ends gracefully
            os.kill(os.getpid(), signal.SIGINT)  # the handler Tune put back: Python's KeyboardInterrupt
    assert interrupted.is_set()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_run_that_finishes_leaves_the_flag_clear_and_not_tunes_handler() -> None:
    register = signal.signal
    with _stop_signal_flag() as interrupted:
        _install_like_tune()
        _install_like_tune(signal.SIGUSR1)
    assert not interrupted.is_set()
    assert signal.signal is register
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL


def test_the_installed_tune_registers_its_handler_so_that_the_flag_hears_of_it() -> None:
    """The same with the handler of the installed Ray Tune (the function ``Tuner.fit`` calls)."""
    from ray.tune import tune as tune_run

    with _stop_signal_flag() as interrupted:
        stop = tune_run._setup_signal_catching()
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.is_set() and interrupted.is_set()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_outside_the_main_thread_nothing_is_installed() -> None:
    seen: list[bool] = []
    register = signal.signal

    def stage() -> None:
        with _stop_signal_flag() as interrupted:
            seen.append(signal.signal is register and not interrupted.is_set())

    worker = threading.Thread(target=stage)
    worker.start()
    worker.join()
    assert seen == [True]
