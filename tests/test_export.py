"""``facenas export``: the TorchScript file loads and runs in a Python process where facenas cannot be
imported (isolated mode, no site processing: the editable install's finder is not active), for a
global run (with kept trained weights) and a MONAS multipath run (freshly initialised)."""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import torch

from orchestrator.cli import main
from orchestrator.evaluate import weights_path
from tests.synthetic_runs import global_run, multipath_run

# Runs with `python -I -S`: no cwd / PYTHONPATH / site .pth files on sys.path; only the stdlib and the
# directory holding torch are added, so `import orchestrator` (an editable install) must fail.
_STANDALONE = r"""
import json, sys
sys.path.append(sys.argv[1])
for name in ("orchestrator", "search_algos", "trainables", "facenas"):
    try:
        __import__(name)
    except ImportError:
        pass
    else:
        raise SystemExit(f"{name} is importable: the check would prove nothing")
import torch
for model_path, x_path, y_path in zip(*[iter(sys.argv[2:])] * 3):
    extra = {"facenas.json": ""}
    model = torch.jit.load(model_path, _extra_files=extra)
    with torch.no_grad():
        y = model(torch.load(x_path))
    torch.save(y, y_path)
    print(json.dumps({"shape": list(y.shape), "meta": json.loads(extra["facenas.json"])}))
"""


def _run_standalone(jobs: list[tuple[Path, torch.Tensor]], tmp: Path) -> list[tuple[torch.Tensor, dict]]:
    """Load each model and run it on its input in ONE isolated process (torch imports once)."""
    args = []
    for i, (model, x) in enumerate(jobs):
        torch.save(x, tmp / f"x{i}.pt")
        args += [str(model), str(tmp / f"x{i}.pt"), str(tmp / f"y{i}.pt")]
    done = subprocess.run(
        [sys.executable, "-I", "-S", "-c", _STANDALONE, sysconfig.get_paths()["purelib"], *args],
        capture_output=True, text=True, timeout=300, cwd=tmp,
    )
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    infos = [json.loads(line) for line in done.stdout.strip().splitlines()[-len(jobs):]]
    return [(torch.load(tmp / f"y{i}.pt"), info) for i, info in enumerate(infos)]


def test_exports_run_without_facenas(tmp_path: Path, capsys) -> None:
    """A global run with kept trained weights and a MONAS run without (freshly initialised)."""
    global_model, x_global, trained = _global_export(tmp_path / "g", capsys)
    child_model, x_child, reference = _multipath_export(tmp_path / "m", capsys)
    (y_global, info_global), (y_child, info_child) = _run_standalone(
        [(global_model, x_global), (child_model, x_child)], tmp_path)
    with torch.no_grad():
        assert torch.allclose(y_global, trained(x_global), atol=1e-5)
        assert torch.allclose(y_child, reference(x_child), atol=1e-5)
    assert info_global["shape"] == [3, 10]
    assert info_global["meta"]["weights"] == "trained" and info_global["meta"]["input_shape"] == [1, 1, 8, 8]
    assert info_child["shape"] == [2, 3, 16, 16] and info_child["meta"]["weights"] == "freshly initialised"


def _global_export(tmp_path: Path, capsys) -> tuple[Path, torch.Tensor, torch.nn.Module]:
    from search_algos.spaces import decode_arch
    from trainables.classification.model import build_global_cnn

    run = global_run(tmp_path / "runs" / "rnd", searcher="random")
    best = json.loads((run / "best.json").read_text())
    arch = decode_arch("global", best["arch"])
    torch.manual_seed(123)  # "trained" weights: differ from the export's fresh init (seed 0)
    trained = build_global_cnn(arch, in_channels=1, num_classes=10)
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(0.05 * torch.randn_like(p))
        for m in trained.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    kept = Path(weights_path(str(run), best["stage"], best["arch_key"], best["epochs"]))
    kept.parent.mkdir(parents=True)
    torch.save(trained.state_dict(), kept)

    out = tmp_path / "model.pt"
    assert main(["export", str(run), "--out", str(out)]) == 0
    assert f"weights: trained, from {kept}" in capsys.readouterr().out
    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    return out, x, trained.eval()


def _multipath_export(tmp_path: Path, capsys) -> tuple[Path, torch.Tensor, torch.nn.Module]:
    from search_algos.spaces import decode_arch
    from trainables.alignment.model import MultipathSupernet

    run = multipath_run(tmp_path / "runs" / "monas")
    out = tmp_path / "child.pt"
    assert main(["export", str(run), "--out", str(out)]) == 0
    assert "FRESHLY INITIALISED" in capsys.readouterr().out
    best = json.loads((run / "best.json").read_text())
    arch = decode_arch("multipath", best["arch"])
    torch.manual_seed(0)  # the run's seed: the export's init
    reference = MultipathSupernet(layers=4, scales=3, channels=4).child_model(arch).eval()
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    return out, x, reference


@pytest.mark.parametrize("problem", ["unfinished", "no_folder"])
def test_export_bad_input_is_one_line_and_writes_nothing(tmp_path: Path, capsys, problem: str) -> None:
    run = global_run(tmp_path / "runs" / "rnd", searcher="random")
    out = tmp_path / "model.pt"
    if problem == "unfinished":
        (run / "best.json").unlink()
    else:
        out = tmp_path / "missing" / "model.pt"
    assert main(["export", str(run), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and ("no best.json" in err[0] or "does not exist" in err[0])
    assert not out.exists() and not list(out.parent.glob(f".{out.name}*"))  # no temporary file either
