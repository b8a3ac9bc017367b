"""orchestrator.compat: old module paths resolve only while restoring; the old JobListSearcher reads back.

No Ray: the fixtures are a pickle and a state file made by commit 154e898's ``JobListSearcher``
(``tests/data/old_runs/README.md``).
"""

from __future__ import annotations

import importlib
import json
import pickle
import sys
from pathlib import Path

import pytest
from ray.tune.search import Searcher

from orchestrator.compat import MOVED, JobListSearcher, old_module_paths
from search_algos.fixed import FixedArchSearcher

OLD_RUNS = Path(__file__).resolve().parents[1] / "data" / "old_runs"


def test_old_paths_resolve_inside_the_block_only():
    with old_module_paths():
        hpo = importlib.import_module("orchestrator.hpo")
        from search_algos.hpo import HpoSearcher

        assert hpo.HpoSearcher is HpoSearcher
        assert importlib.import_module("orchestrator.hyperfd").JobListSearcher is JobListSearcher
        with pytest.raises(AttributeError, match="before the redesign"):
            hpo.NoSuchName  # noqa: B018
    assert not any(name in sys.modules for name in MOVED if name != "trainables.microexpr")
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("orchestrator.hpo")


def test_every_target_module_of_the_map_exists():
    for old, targets in MOVED.items():
        for new in targets:
            assert importlib.util.find_spec(new) is not None, f"{old} -> {new}: no such module"


def _old_searcher() -> FixedArchSearcher:
    with old_module_paths():
        searcher = pickle.loads((OLD_RUNS / "job_list_searcher.pkl").read_bytes())
    assert isinstance(searcher, FixedArchSearcher)
    return searcher


def test_old_job_list_searcher_continues_as_a_fixed_arch_searcher(tmp_path):
    searcher = _old_searcher()
    # what Tune does on resume: restore the saved state into the unpickled searcher
    searcher.restore(str(OLD_RUNS / "job_list_searcher_state.json"))
    jobs = json.loads((OLD_RUNS / "job_list_searcher_state.json").read_text())["state"]["jobs"]
    third = searcher.suggest("t3")  # 2 of 3 were issued before the interruption
    assert third == {"arch": jobs[2]["arch"], "epochs": jobs[2]["epochs"], "dataset_id": jobs[2]["dataset_id"]}
    assert searcher.suggest("t4") == Searcher.FINISHED

    # its saved state reads back into a plain FixedArchSearcher (what the pipeline builds at the end)
    searcher.on_trial_complete("t3", {"val_ap50": 0.7})
    path = tmp_path / "searcher-state.pkl"
    searcher.save(str(path))
    fresh = FixedArchSearcher(["x"], metric="val_ap50", mode="max")
    fresh.restore(str(path))
    assert fresh.archs == [j["arch"] for j in jobs] and fresh.extras == [{"dataset_id": j["dataset_id"]} for j in jobs]
    assert fresh.best_result()["value"] == pytest.approx(0.7)


_NOWHERE = "orchestrator.gone_module_aaaaa"  # as long as this module's name: the pickle stays valid


class _Gone:
    """Pickled under a module name that no map knows (see below)."""


def test_a_stage_that_cannot_be_read_back_is_one_user_error_line(tmp_path):
    from orchestrator.errors import UserError
    from orchestrator.pipeline import _restore

    blob = pickle.dumps({"_tune_config": _Gone()})
    assert _Gone.__module__.encode() in blob and len(_Gone.__module__) == len(_NOWHERE)
    stage_dir = tmp_path / "search"
    stage_dir.mkdir()
    (stage_dir / "tuner.pkl").write_bytes(blob.replace(_Gone.__module__.encode(), _NOWHERE.encode()))
    with pytest.raises(UserError) as caught:  # the CLI prints it as one line, exit code 2
        _restore(stage_dir, trainable=None)
    (line,) = caught.value.problems
    assert str(stage_dir) in line and _NOWHERE in line and "delete that folder" in line
