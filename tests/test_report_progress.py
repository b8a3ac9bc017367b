"""Progress: the live bars (rich: trials done / total, per-trial epochs, quiet off a terminal, picklable for
Tune) and the one line per finished trial (``ProgressPrinter``), which shows a trial's own description."""

from __future__ import annotations

import io
import pickle
from types import SimpleNamespace

import pytest
from rich.console import Console

from orchestrator.pipeline import ProgressPrinter
from orchestrator.progress import LiveProgress, live_progress


def _tasks(live: LiveProgress) -> dict[str, tuple[float, float | None]]:
    return {t.description.strip(): (t.completed, t.total) for t in live._progress.tasks}


def test_bars_follow_trials_and_epochs() -> None:
    out = io.StringIO()
    live = LiveProgress("supernet", 2, console=Console(file=out, force_terminal=True, width=120))
    a, b = SimpleNamespace(trial_id="aaaa"), SimpleNamespace(trial_id="bbbb")
    live.on_trial_result(0, [], a, {"epoch": 1, "epochs": 3})
    live.on_trial_result(0, [], a, {"epoch": 2, "epochs": 3})
    live.on_trial_result(0, [], b, {"val_nme": 3.0})  # no epochs (a one-shot evaluation): no epoch bar
    assert _tasks(live) == {"supernet: trials": (0, 2), "supernet aaaa epochs": (2, 3)}
    live.on_trial_complete(0, [], a)
    live.on_trial_result(0, [], a, {"epoch": 3, "epochs": 3})  # late: must not bring the bar back
    live.on_trial_error(0, [], b)
    assert _tasks(live) == {"supernet: trials": (2, 2)}
    live.close()
    assert "2/2" in out.getvalue()


def test_quiet_when_stdout_is_not_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdout", io.StringIO())
    assert live_progress("search", 10) is None


def test_a_pickled_copy_is_quiet() -> None:
    live = LiveProgress("search", 3, console=Console(file=io.StringIO(), force_terminal=True))
    copy = pickle.loads(pickle.dumps(live))
    live.close()
    copy.on_trial_result(0, [], SimpleNamespace(trial_id="x"), {"epoch": 1, "epochs": 2})
    copy.on_trial_complete(0, [], SimpleNamespace(trial_id="x"))
    copy.close()
    assert copy._progress is None


# -- one line per finished trial ---------------------------------------------------------------------------

_GLOBAL_ARCH = '{"depth":3,"kernels":[3,3,3],"ops":["conv","sep","sep"],"space":"global","width":12}'
_GLOBAL_SUMMARY = "D=3 W=12 [c3 s3 s3]"


def _trial(result: dict, config: dict | None = None, error: str = "") -> SimpleNamespace:
    return SimpleNamespace(last_result=result, config=config or {}, get_error=lambda: error)


def _printed(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return capsys.readouterr().out.splitlines()


def test_a_trial_is_shown_by_its_arch_summary(capsys: pytest.CaptureFixture[str]) -> None:
    printer = ProgressPrinter("search", "val_acc", "max", 2)
    printer.on_trial_complete(0, [], _trial({"val_acc": 80.0, "arch": _GLOBAL_ARCH, "params": 1200, "epochs": 3}))
    assert _printed(capsys) == [
        f"[search] trial 1/2 {_GLOBAL_SUMMARY}  val_acc=80.00  best=80.00  params=1,200  epochs=3"]


def test_a_trial_that_describes_itself_is_shown_by_its_description(capsys: pytest.CaptureFixture[str]) -> None:
    printer = ProgressPrinter("loso", "val_uar", "max", None)
    described = {"val_uar": 50.0, "arch": _GLOBAL_ARCH, "describe": "fold 3: my own words", "params": 10, "epochs": 2}
    printer.on_trial_complete(0, [], _trial(described))
    printer.on_trial_complete(0, [], _trial(dict(described, val_uar=float("nan"), status="failed", error="boom")))
    printer.on_trial_error(0, [], _trial(described, {"arch": _GLOBAL_ARCH}, error="Traceback\nValueError: bad"))
    assert _printed(capsys) == [
        "[loso] trial 1 fold 3: my own words  val_uar=50.00  best=50.00  params=10  epochs=2",
        "[loso] trial 2 fold 3: my own words  FAILED: boom",
        "[loso] trial 3 fold 3: my own words  FAILED: ValueError: bad",
    ]


def test_the_printer_knows_no_method_names(capsys: pytest.CaptureFixture[str]) -> None:
    """Keys that meant something to one method (``model``, ``fold``) no longer change the line."""
    printer = ProgressPrinter("loso", "val_uar", "max", None)
    printer.on_trial_complete(0, [], _trial({"val_uar": 50.0, "arch": _GLOBAL_ARCH, "model": "baseline",
                                             "width": 8.0, "fold": 3.0, "params": 10, "epochs": 2}))
    assert _printed(capsys) == [f"[loso] trial 1 {_GLOBAL_SUMMARY}  val_uar=50.00  best=50.00  params=10  epochs=2"]


@pytest.mark.parametrize("model", ["searched", "baseline"])
def test_loso_folds_describe_the_network_they_train(
    model: str, tmp_path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """RNAS-MER's fold trials say which network a fold trains (the baseline's carry the searched arch)."""
    import numpy as np

    from ray import tune

    import orchestrator.methods.rnas_mer as rnas
    import orchestrator.trial
    from search_algos.spaces.rnas import RnasSpace

    genotype = RnasSpace(cells=2, nodes=2, levels=2).sample(np.random.default_rng(0))
    reports: list[dict] = []
    monkeypatch.setattr(tune, "report", reports.append)  # the trial imports Ray Tune and the store lookup when run
    # a stored evaluation of the fold: its predictions are reported without training
    monkeypatch.setattr(orchestrator.trial, "lookup",
                        lambda *a, **k: {"metrics": {"truth": [0, 1], "predicted": [0, 1]}})
    job = rnas.MerJob(
        data={"name": "microexpr", "subjects": 2, "episodes": 1, "frames": 4, "image_size": 16}, spec={}, search={},
        fold={"epochs": 1, "batch_size": 4}, retrain_channels=4, seed=0, store=None, run="r", stage="loso",
        storage_path=str(tmp_path),
    )
    rnas.fold_trial({"arch": genotype.to_json(), "model": model, "fold": 1}, job)
    [result] = reports
    printer = ProgressPrinter("loso", "val_uar", "max", None)
    printer.on_trial_complete(0, [], _trial(result))
    network = genotype.summary() if model == "searched" else f"baseline 3D CNN (width {int(result['width'])})"
    assert _printed(capsys)[0].startswith(f"[loso] trial 1 fold 1: {network}  val_uar=")
