"""``facenas export RUN_DIR --out model.pt``: the best architecture as a standalone TorchScript file.

The file loads with ``torch.jit.load`` alone (no facenas, no Ray): the network is built from
``best.json``'s architecture by the export of the method that searches its space
(``orchestrator.methods.base.Method.export``, found by the space's name), scripted with
``torch.jit.script`` and checked against the eager network on an example input before it is written.
Weights: the final weights the run kept for that evaluation
(``RUN_DIR/<stage>/weights/<arch_key>-e<epochs>.pt``, see ``orchestrator.evaluate.weights_path``) when
they exist; otherwise the network is freshly initialised (seed of the run) and the command says so.
The file carries ``facenas.json`` (architecture, input shape, where the weights come from) as a
TorchScript extra file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from orchestrator.config import ExperimentConfig
from orchestrator.errors import UserError
from orchestrator.evaluate import weights_path
from orchestrator.experiment import RunPaths
from orchestrator.methods import METHODS
from search_algos.durable import write_durable

__all__ = ["EXTRA_FILE", "Exported", "export_best"]

EXTRA_FILE = "facenas.json"


@dataclass(frozen=True)
class Exported:
    """What was written: the file, the architecture line, the input shape and the weights' origin."""

    path: Path
    summary: str
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    weights: Path | None  # None: freshly initialised


def _network(
    space: str, arch: Any, config: ExperimentConfig, seed: int
) -> tuple[torch.nn.Module, tuple[int, ...], dict[str, Any]]:
    """The eager network of ``arch`` (seeded init), the shape of one input batch, and how to prepare inputs."""
    exports = METHODS.by_space("export")
    if space not in exports:
        raise UserError(f"export supports the spaces {_listed(list(exports))}, not {space!r}; nothing was written")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return exports[space](arch, config)


def _listed(names: list[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    return " and ".join(filter(None, [", ".join(names[:-1]), names[-1]])) if names else "none"


def export_best(paths: RunPaths, config: ExperimentConfig, out: str | Path) -> Exported:
    """Write the best architecture of a finished run as TorchScript to ``out``.

    Raises:
        UserError: the run has no best.json, or ``out``'s folder does not exist.
    """
    from search_algos.spaces import decode_arch

    out = Path(out).expanduser()
    if not paths.best.is_file():
        raise UserError(f"{paths.root} has no best.json (the run has not finished); "
                        f"finish it with `facenas resume {paths.root}` first")
    if not out.parent.is_dir():
        raise UserError(f"--out {out}: folder {out.parent} does not exist; create it or pass another path")
    if out.is_dir():
        raise UserError(f"--out {out} is a folder; pass a file path such as {out / 'model.pt'}")
    best = json.loads(paths.best.read_text())
    space = best.get("space", config.space.name)
    arch = decode_arch(space, best["arch"])
    model, input_shape, prepare = _network(space, arch, config, config.seed)
    kept = Path(weights_path(str(paths.root), best["stage"], best["arch_key"], int(best["epochs"])))
    weights = kept if kept.is_file() else None
    if weights is not None:
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    model.eval()
    scripted = torch.jit.script(model)
    example = torch.rand(input_shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected, got = model(example), scripted(example)
    if not torch.allclose(expected, got, atol=1e-5, rtol=1e-4):  # scripting must not change the network
        raise RuntimeError("the scripted network disagrees with the eager one; please report this")
    meta = {
        "space": space, "arch": json.loads(arch.to_json()), "summary": arch.summary(),
        "input_shape": list(input_shape), "output_shape": list(got.shape), "run": paths.root.name,
        "stage": best["stage"], "metric": best["metric"], "value": best["value"],
        "weights": "trained" if weights is not None else "freshly initialised", "prepare": prepare,
    }
    write_durable(out, lambda fh: torch.jit.save(scripted, fh, _extra_files={EXTRA_FILE: json.dumps(meta)}))
    return Exported(out, arch.summary(), tuple(input_shape), tuple(got.shape), weights)
