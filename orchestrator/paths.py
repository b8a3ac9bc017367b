"""Every path of a run directory, in one place (the run-directory contract of the README).

``RUN_DIR = <storage>/<name>/`` holds the resolved ``config.yaml``, ``results.parquet``, ``best.json``,
``report.html``, one folder per stage (Tune's experiment) and, beside the runs, the shared benchmark store
``<storage>/benchmark``. Inside a stage folder the trials keep their own files::

    <stage>/_checkpoints/<evaluation>.pt    training state of an unfinished evaluation (keyed by the
                                            evaluation, not the trial, so a retry continues it)
    <stage>/weights/<arch_key>-e<N>[-s<seed>].pt   final weights of an evaluation, read by `facenas export`
    <stage>/supernet.pt                     a trained supernet's weights (the one-shot stages score on them)
    <stage>/tensorboard/                    a supernet's own TensorBoard events (Train workers write none)
    <stage>/_history/<search>.json          a search trial's per-epoch diagnostics
    <stage>/_folds/<arch_key>/fold-NNN.json one cross-validation fold's predictions
    _train/<name>/                          the Ray Train runs of trials with several workers

Imports nothing but the standard library: trials in Ray workers build their paths with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["CONFIG_FILE", "STAGE_EVALUATIONS", "STAGE_MARKER", "STORE_DIR", "RunPaths"]

STORE_DIR = "benchmark"  # <storage>/benchmark: the shared store, beside the runs
CONFIG_FILE = "config.yaml"
STAGE_MARKER = "stage.json"  # <stage>/stage.json: written last, when the stage has finished
STAGE_EVALUATIONS = "evaluations.parquet"  # <stage>/evaluations.parquet: a finished stage's rows


@dataclass(frozen=True)
class RunPaths:
    """The files and folders of one run directory ``root`` (names fixed: old runs must still resume)."""

    root: Path

    @classmethod
    def of(cls, run_dir: str | Path) -> RunPaths:
        """The paths of ``run_dir`` as given (a trial's ``storage_path``; not resolved again)."""
        return cls(Path(run_dir))

    # -- the run's own files ------------------------------------------------------------------------

    @property
    def config(self) -> Path:
        return self.root / CONFIG_FILE

    @property
    def results(self) -> Path:
        return self.root / "results.parquet"

    @property
    def best(self) -> Path:
        return self.root / "best.json"

    @property
    def report(self) -> Path:
        return self.root / "report.html"

    @property
    def storage(self) -> Path:
        return self.root.parent

    @property
    def store(self) -> Path:
        return self.storage / STORE_DIR

    @property
    def train_runs(self) -> Path:
        """Where the Ray Train runs of multi-worker trials live (``RUN_DIR/_train``)."""
        return self.root / "_train"

    def run_file(self, name: str) -> Path:
        """A file a method keeps for the whole run beside ``best.json`` (a cache of a warm-up, a table)."""
        return self.root / name

    # -- a stage's files ----------------------------------------------------------------------------

    def stage(self, stage: str) -> Path:
        """The stage's folder (Tune's experiment)."""
        return self.root / stage

    def stage_marker(self, stage: str) -> Path:
        """The file that says ``stage`` finished (its searcher's summary and seconds); absent until then."""
        return self.stage(stage) / STAGE_MARKER

    def stage_evaluations(self, stage: str) -> Path:
        """A finished stage's evaluations (its rows of ``results.parquet``)."""
        return self.stage(stage) / STAGE_EVALUATIONS

    def stage_markers(self) -> list[Path]:
        """The markers of every finished stage (unordered)."""
        return list(self.root.glob(f"*/{STAGE_MARKER}"))

    def scheduler_journal(self, stage: str) -> Path:
        """What ``stage``'s trial scheduler has seen (``orchestrator.schedulers``), replayed on a resume."""
        return self.stage(stage) / "scheduler-journal.jsonl"

    def checkpoints_dir(self, stage: str) -> Path:
        """The training states of ``stage``'s unfinished evaluations."""
        return self.stage(stage) / "_checkpoints"

    def checkpoint(self, stage: str, name: str) -> Path:
        """The training state of an unfinished evaluation of ``stage``."""
        return self.checkpoints_dir(stage) / name

    def weights_dir(self, stage: str) -> Path:
        return self.stage(stage) / "weights"

    def weights(self, stage: str, arch_key: str, epochs: int, seed: int | None = None) -> Path:
        """An evaluation's kept weights: ``<arch_key>-e<epochs>.pt``, ``-s<seed>`` added for a seed other than
        the run's (a retraining over several seeds), so the run's own seed keeps the name export reads."""
        suffix = "" if seed is None else f"-s{seed}"
        return self.weights_dir(stage) / f"{arch_key}-e{epochs}{suffix}.pt"

    def supernet(self, stage: str) -> Path:
        """A trained supernet's weights."""
        return self.stage(stage) / "supernet.pt"

    def tensorboard(self, stage: str) -> Path:
        """A stage's own TensorBoard events (those that Tune's loggers do not write)."""
        return self.stage(stage) / "tensorboard"

    def history_dir(self, stage: str) -> Path:
        return self.stage(stage) / "_history"

    def history(self, stage: str, name: str) -> Path:
        """A search trial's per-epoch diagnostics (``name`` ends with ``.json``)."""
        return self.history_dir(stage) / name

    def folds(self, stage: str, arch_key: str | None = None) -> Path:
        """The fold predictions of ``stage`` (of one network's cross-validation when ``arch_key`` is given)."""
        folder = self.stage(stage) / "_folds"
        return folder if arch_key is None else folder / arch_key

    def fold(self, stage: str, arch_key: str, subject: int) -> Path:
        """One fold's predictions: ``fold-NNN.json`` by the held-out subject."""
        return self.folds(stage, arch_key) / f"fold-{subject:03d}.json"
