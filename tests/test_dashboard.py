"""``facenas run CONFIG --dashboard`` seen in a real browser, and facenas's own Ray metrics scraped.

One tiny random search (4 three-epoch candidates on digits) runs through the CLI with ``--dashboard``: the
embedded Ray serves its dashboard on 127.0.0.1 and the CLI prints the URL. While the trials run, a poller
reads the dashboard's JSON APIs (the data its pages show) and, once the job, the benchmark-store actor and
the trials' actors are there, headless Chromium (Debian's package, as in tests/test_report.py) renders the
Actors and Jobs pages: their DOM must show them, and the screenshots are kept under the test's tmp dir.
After the run (the cluster is kept up: the CLI's ``stop_ray`` is held back) Ray's metrics endpoint must
export the ``facenas_*`` figures with the run's values, which it does with a delay: it is polled.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from tests.test_report import CHROMIUM_FLAGS, _chromium

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CANDIDATES = 4
CONFIG = {
    "name": "dash",
    "seed": 0,
    "data": {"dataset": "digits", "split_seed": 0, "val_fraction": 0.2, "test_fraction": 0.2},
    "space": {"name": "global", "d_min": 3, "d_max": 4, "w_min": 8, "w_max": 12, "w_step": 4},
    "searcher": {"name": "random", "num_samples": CANDIDATES, "epochs": 3},
    "training": {"batch_size": 16, "lr": 0.025, "momentum": 0.9, "weight_decay": 0.0003, "train_workers": 1},
    # One trial at a time: Tune reuses one actor for all of them, alive for the whole search. The driver
    # holds the first trial at its first result until the browser has looked (see the test), so the
    # trials' length does not matter: a fresh CI machine once ran a 10-epoch search before the look.
    "resources": {"cpus_per_trial": 1, "max_failures": 0, "max_concurrent_trials": 1},
}
TRIAL_CLASS = "ImplicitFunc"  # the actor class Tune wraps a function trainable in (ray 2.60)
TRIAL_REPR = "evaluate_candidate"  # its repr: the trainable's name (the Actors page's Repr column)
WATCH_S = 300  # the poller gives up after this long, well inside pytest's timeout (the run takes 1-3 minutes)
METRICS_S = 120  # Ray's metrics agent exports every few seconds; this is the most we wait
DASHBOARD_UP_S = 180  # the most the search waits for the dashboard's APIs to answer


def _is_trial_class(name: str) -> bool:
    """Whether the state API's ``class_name`` is Tune's function-trainable actor. Ray names it
    ``ImplicitFunc`` when the test runs alone and by its qualified name, ``wrap_function.<locals>.ImplicitFunc``,
    after the suite's earlier Tune runs in the same process (CI's whole suite: every poll missed the trials)."""
    return name.rsplit(".", 1)[-1] == TRIAL_CLASS


def _dashboard_extra() -> None:
    """Skip without the ``dashboard`` extra, except under CI, where ``.[test]`` must have brought it."""
    from orchestrator.errors import UserError
    from orchestrator.runtime import check_dashboard

    try:
        check_dashboard(True)
    except UserError as exc:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"CI is set but {exc}: the test extra must include the dashboard extra")
        pytest.skip(str(exc))


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as answer:
        return json.loads(answer.read())


def _actors(base: str) -> list[dict[str, Any]]:
    """The dashboard's actor list (Ray's state API, what the Actors page shows)."""
    return _get(f"{base}/api/v0/actors?limit=1000&detail=1")["data"]["result"]["result"]


def _browse(base: str, page: str, out: Path) -> tuple[str, Path]:
    """(DOM after the React app fetched its data, screenshot) of the dashboard's ``#/page``."""
    shot = out / f"dashboard-{page}.png"
    url = f"{base}/#/{page}"
    # The app renders after its API calls; the virtual-time budget lets Chromium wait for them.
    wait = ["--virtual-time-budget=20000", "--window-size=1600,1000"]
    dom = subprocess.run([_chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={out / f'profile-{page}-dom'}", *wait,
                          "--dump-dom", url], capture_output=True, text=True, timeout=180)
    assert dom.returncode == 0, dom.stderr[-2000:]
    done = subprocess.run([_chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={out / f'profile-{page}-shot'}", *wait,
                           f"--screenshot={shot}", url], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0 and shot.is_file(), done.stderr[-2000:]
    return dom.stdout, shot


def _rows(dom: str) -> list[str]:
    """The text of each table row of a page (tags stripped)."""
    return [re.sub(r"<[^>]+>", " ", row) for row in re.findall(r"<tr[^>]*>.*?</tr>", dom, flags=re.S)]


class _Watcher:
    """Polls the dashboard while the run goes on; looks at it in the browser once the trials run."""

    def __init__(self, *, store_name: str, out: Path) -> None:
        self.store_name, self.out = store_name, out
        self.base: str | None = None  # set from the line start_ray returns (the CLI prints it)
        self.seen: dict[str, Any] = {}
        self.errors: list[str] = []
        self.done = threading.Event()
        self.looked = threading.Event()  # set once the watcher is done looking (seen it all, or gave up)
        self.last: dict[str, Any] = {}  # what the last poll found (the failure message shows it)
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.done.set()
        self._thread.join(timeout=400)

    def _run(self) -> None:
        deadline = time.monotonic() + WATCH_S
        try:
            while not self.done.is_set() and time.monotonic() < deadline:
                if self.base is not None and self._look():
                    return
                time.sleep(1.0)
        except Exception as exc:  # reported by the test, not lost in the thread
            self.errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            self.looked.set()

    def _look(self) -> bool:
        """True once the browser has seen the job, the store actor and running trials."""
        try:
            jobs, actors = _get(f"{self.base}/api/jobs/"), _actors(self.base)
        except OSError:
            return False  # the dashboard is still starting
        job = next((j for j in jobs if str(j.get("driver_info", {}).get("pid")) == str(os.getpid())), None)
        store = [a for a in actors if a.get("name") == self.store_name and a["state"] == "ALIVE"]
        trials = [a for a in actors if _is_trial_class(a["class_name"]) and a["state"] == "ALIVE"]
        self.last = {"job": job and job["status"], "store_alive": len(store), "trials_alive": len(trials),
                     "jobs": [(j.get("driver_info", {}).get("pid"), j.get("status")) for j in jobs],
                     "actors": [(a.get("class_name"), a.get("name"), a.get("state")) for a in actors],
                     "pid": os.getpid()}
        if not (job and job["status"] == "RUNNING" and store and trials):
            return False
        self.seen["api"] = {"job": job["job_id"], "store": store[0]["actor_id"],
                            "trials": [(a["actor_id"], a.get("repr_name")) for a in trials]}
        actors_dom, self.seen["actors_png"] = _browse(self.base, "actors", self.out)
        jobs_dom, self.seen["jobs_png"] = _browse(self.base, "jobs", self.out)
        self.seen["problems"] = _page_problems(
            actor_rows=_rows(actors_dom), job_rows=_rows(jobs_dom), store_name=self.store_name, job_id=job["job_id"])
        # A page rendered before its data came, or after the trials ended: look again while they run.
        return not self.seen["problems"]


def _page_problems(*, actor_rows: list[str], job_rows: list[str], store_name: str, job_id: str) -> list[str]:
    """What the Actors and Jobs pages failed to show: the store actor alive, a trial alive, the job running."""
    problems = []
    store = [r for r in actor_rows if store_name in r]
    if not (store and "ALIVE" in store[0]):
        problems.append(f"Actors page: no ALIVE row for {store_name}: {store[:1] or actor_rows[:3]}")
    trials = [r for r in actor_rows if TRIAL_CLASS in r and TRIAL_REPR in r]
    if not any("ALIVE" in r for r in trials):
        problems.append(f"Actors page: no ALIVE {TRIAL_CLASS} ({TRIAL_REPR}) row: {trials[:2] or actor_rows[:3]}")
    job = [r for r in job_rows if job_id in r]
    if not (job and "RUNNING" in job[0]):
        problems.append(f"Jobs page: job {job_id} not RUNNING: {job[:1] or job_rows[:3]}")
    return problems


def _scrape(port: int) -> dict[tuple[str, frozenset], float]:
    """Ray's metrics endpoint, facenas's series only: (name, {tag=value}) -> value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    series = {}
    for line in text.splitlines():
        found = re.match(r"(ray_facenas_\w+)\{(.*)\}\s+(\S+)$", line)
        if found:
            tags = frozenset(re.findall(r'(stage|run)="([^"]*)"', found.group(2)))
            series[(found.group(1), tags)] = float(found.group(3))
    return series


def _metrics_when(port: int, ready: Any) -> dict[tuple[str, frozenset], float]:
    """Scrape until ``ready(series)`` holds (the agent exports with a delay); the last scrape on timeout."""
    deadline = time.monotonic() + METRICS_S
    while True:
        series = _scrape(port)
        if ready(series) or time.monotonic() > deadline:
            return series
        time.sleep(1.0)


@pytest.fixture
def no_ray():
    """No Ray in this process before the test (another module's) and none left after it."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    yield
    ray.shutdown()


def test_dashboard_shows_the_search_and_ray_exports_its_metrics(tmp_path, capsys, monkeypatch, no_ray):
    _chromium()  # skip (or fail under CI) before anything starts
    _dashboard_extra()
    import ray

    from orchestrator import cli, ray_metrics, runtime
    from orchestrator.store import StoreClient

    storage = tmp_path / "runs"
    config = tmp_path / "dash.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    watcher = _Watcher(store_name=StoreClient.actor_name(str(storage / "benchmark")), out=tmp_path)

    start_ray = runtime.start_ray

    def started(*args: Any, **kwargs: Any) -> str:  # what the CLI prints; the watcher reads the URL from it
        line = start_ray(*args, **kwargs)
        found = re.search(r"dashboard at (http://127\.0\.0\.1:\d+)", line)
        watcher.base = found.group(1) if found else None
        # The search starts once the dashboard answers: on an idle machine a short search otherwise ends
        # before the dashboard process has started (CI saw it: nothing to look at while trials ran).
        deadline = time.monotonic() + DASHBOARD_UP_S
        while watcher.base is not None and time.monotonic() < deadline:
            try:
                _get(f"{watcher.base}/api/jobs/")
                _actors(watcher.base)
                break
            except (OSError, ValueError, KeyError):  # not listening yet, or answering before its data
                time.sleep(0.5)
        return line

    def held(self: Any, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        # The driver holds the search at a trial's first result until the watcher has looked: the trial's
        # actor, the job and the store actor are alive meanwhile, so the look does not race the trials
        # (CI's idle machine once ran the whole search before the watcher's first complete poll).
        holds.append(watcher.looked.wait(WATCH_S))

    holds: list[bool] = []

    monkeypatch.setattr(runtime, "start_ray", started)
    monkeypatch.setattr(ray_metrics.RayMetrics, "on_trial_result", held, raising=False)
    monkeypatch.setattr(runtime, "stop_ray", lambda: None)  # keep the cluster up to scrape it after the run
    watcher.start()
    code = cli.main(["run", str(config), "--dashboard", "--storage", str(storage)])
    out = capsys.readouterr().out
    watcher.stop()
    for key in ("actors_png", "jobs_png"):
        if key in watcher.seen:
            print(f"dashboard screenshot: {watcher.seen[key]}")  # kept under the test's tmp dir
    assert code == 0, out
    port = ray.nodes()[0]["MetricsExportPort"]
    assert re.search(rf"^local Ray .*; dashboard at http://127\.0\.0\.1:\d+; metrics at http://127\.0\.0\.1:{port}/metrics$",
                     out, flags=re.M), out
    assert not watcher.errors, watcher.errors
    assert holds and all(holds), f"the driver's hold at a trial's result never ran or timed out: {holds}"
    assert "api" in watcher.seen, (
        f"the dashboard's APIs never showed the job, the store actor and running trials: last poll {watcher.last}: {out}")
    assert watcher.seen["problems"] == [], (watcher.seen["api"], watcher.seen["problems"])
    for png in (watcher.seen["actors_png"], watcher.seen["jobs_png"]):
        assert png.stat().st_size > 10_000, png  # a rendered page, not a blank one

    # facenas's figures on Ray's metrics endpoint, as the run's results say they should be.
    run = "dash"
    results = pd.read_parquet(storage / run / "results.parquet")
    search = results[results["stage"] == "search"]
    best = float(search[search["status"] == "ok"]["value"].max())
    stage_tags, run_tags = frozenset({("stage", "search"), ("run", run)}), frozenset({("run", run)})

    def ready(series: dict) -> bool:
        return (series.get(("ray_facenas_trials_finished_total", stage_tags), 0) >= CANDIDATES
                and series.get(("ray_facenas_store_rows", run_tags), 0) >= CANDIDATES
                and ("ray_facenas_best_value", stage_tags) in series)

    series = _metrics_when(port, ready)
    assert ready(series), sorted(series)
    assert series[("ray_facenas_trials_finished_total", stage_tags)] >= len(search)
    assert series.get(("ray_facenas_trials_failed_total", stage_tags), 0) == (search["status"] != "ok").sum()
    assert series[("ray_facenas_best_value", stage_tags)] == pytest.approx(best)
    lookups, hits = series[("ray_facenas_store_lookups", run_tags)], series[("ray_facenas_store_hits", run_tags)]
    assert lookups >= CANDIDATES and hits + series[("ray_facenas_store_misses", run_tags)] == lookups
    assert series[("ray_facenas_store_puts", run_tags)] >= len(search) - int(search["cached"].sum())
