"""``facenas report``: the page renders in headless Chromium with every image loaded, for a MONAS run
and a macro-micro run (architecture pictures), plus the Pareto front against a naive reference."""

from __future__ import annotations

import base64
import io
import itertools
import os
import random
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from orchestrator.cli import main
from orchestrator.report import pareto_front
from tests.synthetic_runs import global_run, multipath_run

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--hide-scrollbars",
]
# Appended to a copy of the page: after load, mark every image that failed to decode, then count.
_CHECK_SCRIPT = """<script>
window.addEventListener('load', function () {
  var imgs = document.images, broken = 0;
  for (var i = 0; i < imgs.length; i++) {
    if (!imgs[i].complete || imgs[i].naturalWidth === 0) { broken++; imgs[i].setAttribute('data-broken', '1'); }
  }
  document.body.setAttribute('data-images', imgs.length + ':' + broken);
});
</script>"""


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail("chromium is not installed but CI is set: .ci/run must install it (apt-get install -y chromium)")
    pytest.skip("chromium not found (not in CI): install Debian's `chromium` to run the rendering test")


def _browser(page: Path, tmp: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp / f"profile-{len(list(tmp.glob('profile-*')))}"
    return subprocess.run(
        [_chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args, page.as_uri()],
        capture_output=True, text=True, timeout=120,
    )


def _render(report: Path, tmp: Path) -> tuple[str, Path]:
    """(DOM after load with the image check, screenshot PNG path)."""
    checked = tmp / "checked.html"
    checked.write_text(report.read_text().replace("</body>", _CHECK_SCRIPT + "</body>"))
    dom = _browser(checked, tmp, "--virtual-time-budget=5000", "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    shot = tmp / "shot.png"
    done = _browser(report, tmp, f"--screenshot={shot}", "--window-size=1200,2400")
    assert done.returncode == 0 and shot.is_file(), done.stderr[-2000:]
    return dom.stdout, shot


def _non_blank(png: Path) -> float:
    """Share of pixels that differ from the most common colour (0 for a blank page)."""
    import numpy as np
    from matplotlib.image import imread

    pixels = (imread(str(png))[..., :3] * 255).astype(int).reshape(-1, 3)
    codes = pixels[:, 0] * 65536 + pixels[:, 1] * 256 + pixels[:, 2]
    return 1.0 - np.bincount(codes).max() / len(codes)


def _images(page: str) -> list[str]:
    return re.findall(r'<img alt="([^"]*)" src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)


def _check_page(run: Path, tmp: Path, picture_alt: str) -> str:
    assert main(["report", str(run)]) == 0
    report = run / "report.html"
    page = report.read_text()
    images = _images(page)
    alts = [alt for alt, _ in images]
    assert picture_alt in alts and "metric vs parameters, Pareto front" in alts and "time per stage" in alts
    for _alt, data in images:  # each embedded image is a whole PNG
        assert base64.b64decode(data)[:8] == b"\x89PNG\r\n\x1a\n"
    assert "src=\"http" not in page and "src='http" not in page  # self-contained
    dom, shot = _render(report, tmp)
    counts = re.search(r'data-images="(\d+):(\d+)"', dom)
    assert counts, "the check script did not run"
    assert int(counts.group(1)) == len(images) and int(counts.group(2)) == 0, counts.group(0)
    assert _non_blank(shot) > 0.02
    return page


def test_monas_report_renders_with_grid_and_sa_plots(tmp_path: Path) -> None:
    run = multipath_run(tmp_path / "runs" / "monas")
    page = _check_page(run, tmp_path, "best architecture (multipath space)")
    assert "SAMOS simulated annealing (search)" in page
    assert "val_nme" in page
    assert "supernet0000" not in page  # the supernet's val_loss is not an evaluation of val_nme


def test_macro_micro_report_renders_with_block_diagram_and_phases(tmp_path: Path) -> None:
    run = global_run(tmp_path / "runs" / "mm", searcher="macro_micro")
    page = _check_page(run, tmp_path, "best architecture (global space)")
    assert "macro-micro greedy search (Algorithm 1)" in page


def test_the_image_check_sees_a_broken_image(tmp_path: Path) -> None:
    """The rendering check can fail: a page with one undecodable image is reported as such."""
    good = _png_uri()
    page = tmp_path / "page.html"
    page.write_text(f'<!doctype html><html><body><img alt="a" src="{good}">'
                    '<img alt="b" src="data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAA"></body></html>')
    dom, shot = _render(page, tmp_path)
    assert 'data-images="2:1"' in dom and dom.count('data-broken="1"') == 1
    assert re.search(r'<img alt="b" [^>]*data-broken="1"', dom)


def _png_uri() -> str:
    import matplotlib.pyplot as plt

    from orchestrator.report import _png

    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1], [1, 0])
    return _png(fig)


def _replace_methods(monkeypatch: pytest.MonkeyPatch, names: tuple[str, ...], **changes: object) -> None:
    """Swap the registered methods ``names`` for copies with ``changes`` (restored after the test)."""
    from dataclasses import replace

    from orchestrator.methods import METHODS

    for name in names:
        monkeypatch.setitem(METHODS._items, name, replace(METHODS.get(name), **changes))


_GLOBAL_SPACE_METHODS = ("random", "macro_micro")  # both draw the global space (one picture)


def test_space_without_picture_gets_a_note_and_hpo_draws_are_plotted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = global_run(tmp_path / "runs" / "rnd", searcher="random", hpo=True)
    _replace_methods(monkeypatch, _GLOBAL_SPACE_METHODS, picture=None)
    assert main(["report", str(run)]) == 0
    page = (run / "report.html").read_text()
    assert "no architecture picture is registered for space &#x27;global&#x27; (pictures exist for: multipath, rnas)" in page
    assert "best architecture (global space)" not in page
    # the run's Optuna draws get their own panel
    assert "hyper-parameters drawn by Optuna (search)" in [alt for alt, _ in _images(page)]


def test_every_method_brings_its_pictures_to_the_report() -> None:
    from orchestrator.methods import METHODS
    from orchestrator.methods.global_nas import draw_global, macro_micro_plots
    from orchestrator.methods.monas import draw_multipath, samos_plots
    from orchestrator.methods.rnas_mer_pictures import rnas_figure, search_plots

    assert METHODS.by_space("picture") == {"global": draw_global, "multipath": draw_multipath, "rnas": rnas_figure}
    plots = {m.name: m.plots for m in METHODS.in_order() if m.plots is not None}
    assert plots == {"macro_micro": macro_micro_plots, "samos": samos_plots, "rnas_mer": search_plots}


def test_searcher_plots_that_fail_are_a_note_and_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(run: object) -> object:
        raise RuntimeError("cannot plot this")

    run = global_run(tmp_path / "runs" / "mm", searcher="macro_micro")
    _replace_methods(monkeypatch, ("macro_micro",), plots=broken)
    with caplog.at_level("WARNING", logger="orchestrator.report"):
        assert main(["report", str(run)]) == 0
    page = (run / "report.html").read_text()
    assert "the macro_micro searcher&#x27;s plots could not be drawn: RuntimeError: cannot plot this" in page
    assert "best architecture (global space)" in [alt for alt, _ in _images(page)]  # the rest still drawn
    assert any("cannot plot this" in r.getMessage() for r in caplog.records)


def test_a_registered_picture_that_fails_is_a_note_and_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(arch: object) -> object:
        raise RuntimeError("cannot draw this")

    run = global_run(tmp_path / "runs" / "rnd", searcher="random")
    _replace_methods(monkeypatch, _GLOBAL_SPACE_METHODS, picture=broken)
    with caplog.at_level("WARNING", logger="orchestrator.report"):
        assert main(["report", str(run)]) == 0
    page = (run / "report.html").read_text()
    assert "the global picture could not be drawn: RuntimeError: cannot draw this" in page
    assert any("cannot draw this" in r.getMessage() for r in caplog.records)


def test_report_of_unfinished_run_is_a_user_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = global_run(tmp_path / "runs" / "rnd", searcher="random")
    (run / "results.parquet").unlink()
    assert main(["report", str(run)]) == 2
    assert "no results.parquet yet" in capsys.readouterr().err
    assert not (run / "report.html").exists()


def _naive_front(params: list[float], values: list[float], mode: str) -> set[int]:
    better = (lambda a, b: a > b) if mode == "max" else (lambda a, b: a < b)
    front = set()
    for i in range(len(params)):
        dominated = any(
            params[j] <= params[i] and (better(values[j], values[i]) or values[j] == values[i])
            and (params[j] < params[i] or better(values[j], values[i]))
            for j in range(len(params)) if j != i
        )
        if not dominated:
            front.add(i)
    return front


@pytest.mark.parametrize("mode", ["max", "min"])
def test_pareto_front_matches_naive_reference(mode: str) -> None:
    rng = random.Random(3)
    for _ in range(200):
        n = rng.randint(1, 12)
        params = [float(rng.randint(1, 6)) for _ in range(n)]
        values = [float(rng.randint(0, 5)) for _ in range(n)]
        got = pareto_front(params, values, mode)
        # duplicates (same params and value): the naive rule keeps all of them, we keep one
        unique = {(params[i], values[i]) for i in got}
        assert unique == {(params[i], values[i]) for i in _naive_front(params, values, mode)}
        assert len(unique) == len(got)
        assert [params[i] for i in got] == sorted(params[i] for i in got)
