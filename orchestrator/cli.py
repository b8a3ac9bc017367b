"""The ``facenas`` command line (DESIGN.md §3, Contracts).

Exit codes: 0 success, 2 bad input (one line per problem on stderr, no traceback), 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from orchestrator.errors import UserError

if TYPE_CHECKING:  # the CLI imports the config module lazily (start-up time)
    from orchestrator.config import ExperimentConfig
    from orchestrator.methods import Command, Method

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="facenas",
        description="Neural architecture search on face-analysis tasks, orchestrated by Ray.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="start an experiment from a YAML config")
    run.add_argument("config", help="experiment YAML, e.g. configs/quickstart.yaml")
    run.add_argument("--name", help="run name (default: the config's `name`)")
    run.add_argument("--storage", help="folder holding runs and the benchmark store (default: config `storage`)")
    run.add_argument("--address", help="attach to a Ray cluster (default: RAY_ADDRESS, else an embedded local Ray)")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                     help="override a config value, e.g. --set searcher.num_samples=20 (repeatable)")
    run.add_argument("--dashboard", action="store_true", help=_DASHBOARD_HELP)

    resume = sub.add_parser("resume", help="continue an interrupted run where it stopped")
    resume.add_argument("run_dir")
    resume.add_argument("--address", help="attach to a Ray cluster instead of an embedded local Ray")
    resume.add_argument("--dashboard", action="store_true", help=_DASHBOARD_HELP)

    status = sub.add_parser("status", help="show the stages and best result of a run")
    status.add_argument("run_dir")

    report = sub.add_parser("report", help="write RUN_DIR/report.html")
    report.add_argument("run_dir")

    export = sub.add_parser("export", help="write the best architecture as a standalone TorchScript file")
    export.add_argument("run_dir")
    export.add_argument("--out", required=True, help="file to write, e.g. model.pt")

    compare = sub.add_parser("compare", help="several finished runs side by side (table and plot)")
    compare.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    compare.add_argument("--out", default="compare.png", help="plot file to write (PNG; default compare.png)")

    board = sub.add_parser("tensorboard", help="start TensorBoard on 127.0.0.1 over a run's event files")
    board.add_argument("run_dir")
    board.add_argument("--port", type=int, default=6006, help="port on 127.0.0.1 (default 6006)")

    groups: dict[str, argparse._SubParsersAction] = {}
    for method, command in _method_commands():
        if command.group not in groups:
            if command.group not in _GROUPS:
                raise ValueError(f"method {method.name!r} adds command group {command.group!r}; "
                                 f"known groups: {', '.join(_GROUPS)}")
            group = sub.add_parser(command.group, help=_GROUPS[command.group])
            groups[command.group] = group.add_subparsers(dest="action", required=True, metavar="ACTION")
        action = groups[command.group].add_parser(command.action, help=command.help)
        action.add_argument("config", help=command.config_help)
        action.add_argument("--storage", help="folder holding runs and the benchmark store (default: config `storage`)")
        action.add_argument("--address", help="attach to a Ray cluster (default: RAY_ADDRESS, else an embedded local Ray)")
        action.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                            help="override a config value (repeatable)")
    return p


_DASHBOARD_HELP = ("serve the Ray dashboard of the local Ray on 127.0.0.1 and print its URL (needs the dashboard "
                   "extra; a cluster attached with --address has its own)")

# The command groups methods may add actions to (orchestrator.methods.base.Command), with their help.
_GROUPS = {"benchmark": "the shared benchmark store"}


def _method_commands() -> list[tuple[Method, Command]]:
    """Every CLI command of the registered methods, in registration order."""
    from orchestrator.methods import METHODS

    return [(method, command) for method in METHODS.in_order() for command in method.commands]


def _finish(paths, best: dict) -> None:
    from search_algos.spaces import decode_arch

    arch = decode_arch(best["space"], best["arch"])
    test = ", ".join(f"{k}={v:.2f}" for k, v in best.get("test", {}).items() if isinstance(v, float) and v == v)
    print(f"best architecture: {arch.summary()}")
    print(f"  {best['metric']}={best['value']:.2f}  params={best['params']:,}  {test}")
    by_yaw = best.get("nme_by_yaw")
    if by_yaw:
        bins = "  ".join(f"{k}: {v:.2f}" for k, v in by_yaw.items() if isinstance(v, float))
        print(f"  test NME (%) by yaw bin: {bins}")
    print(f"results: {paths.results}")
    print(f"best:    {paths.best}")


def _start(config: ExperimentConfig, *, address: str | None, dashboard: bool = False) -> None:
    """Start (or attach to) Ray and refuse a config asking for more GPUs than it has (Ray stopped again)."""
    from orchestrator.runtime import check_gpus, start_ray, stop_ray

    print(start_ray(address, num_cpus=config.resources.num_cpus, dashboard=dashboard))
    try:
        check_gpus(config.gpus_needed, asked_by=_gpu_keys(config))
    except UserError:
        stop_ray()
        raise


def _gpu_keys(config: ExperimentConfig) -> str:
    """The config keys that ask for GPUs, as the refusal names them."""
    keys = [f"training.use_gpu: {str(config.training.use_gpu).lower()}"]
    if config.training.train_workers > 1:
        keys.append(f"training.train_workers: {config.training.train_workers}")
    else:
        keys.append(f"resources.gpus_per_trial: {config.resources.gpus_per_trial:g}")
    return " with ".join(keys)


def _execute(paths, config, *, address: str | None, dashboard: bool = False, started: bool = False) -> int:
    """Start (or attach to) Ray unless ``started``, run every unfinished stage, print the outcome, stop Ray."""
    from orchestrator.experiment import execute
    from orchestrator.runtime import stop_ray

    if not started:
        _start(config, address=address, dashboard=dashboard)
    try:
        _finish(paths, execute(config, paths))
    finally:
        stop_ray()
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from orchestrator.config import load_config
    from orchestrator.experiment import prepare
    from orchestrator.runtime import check_address, check_dashboard, check_storage

    config, raw = load_config(args.config, args.overrides)
    check_address(args.address)
    check_dashboard(args.dashboard)
    check_storage(args.storage or config.storage)
    started = config.gpus_needed > 0
    if started:  # GPUs are checked against the cluster before the run directory is created
        _start(config, address=args.address, dashboard=args.dashboard)
    try:
        paths = prepare(config, raw, storage=args.storage, name=args.name)
    except BaseException:
        if started:
            from orchestrator.runtime import stop_ray

            stop_ray()
        raise
    print(f"run directory: {paths.root}")
    return _execute(paths, config, address=args.address, dashboard=args.dashboard, started=started)


def _cmd_resume(args: argparse.Namespace) -> int:
    from orchestrator.experiment import open_run
    from orchestrator.runtime import check_address, check_dashboard, check_storage

    paths, config, _raw = open_run(args.run_dir)
    if paths.best.is_file():
        raise UserError(
            f"run {paths.root} already finished (best.json exists); nothing to resume — "
            "start another with `facenas run CONFIG --name NEW`"
        )
    check_address(args.address)
    check_dashboard(args.dashboard)
    check_storage(paths.storage)
    print(f"resuming {paths.root}")
    return _execute(paths, config, address=args.address, dashboard=args.dashboard)


def _cmd_status(args: argparse.Namespace) -> int:
    from orchestrator.experiment import open_run
    from orchestrator.status import describe

    paths, config, _raw = open_run(args.run_dir)
    print(describe(paths, config))
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from orchestrator.experiment import open_run
    from orchestrator.report import write_report

    paths, config, _raw = open_run(args.run_dir)
    out = write_report(paths, config)
    print(f"report: {out}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from orchestrator.experiment import open_run
    from orchestrator.export import export_best

    paths, config, _raw = open_run(args.run_dir)
    done = export_best(paths, config, args.out)
    print(f"exported {done.summary} to {done.path} (TorchScript: torch.jit.load, no facenas needed)")
    print(f"  input {tuple(done.input_shape)} -> output {tuple(done.output_shape)}; details in its extra file facenas.json")
    if done.weights is not None:
        print(f"  weights: trained, from {done.weights}")
    else:
        print("  weights: FRESHLY INITIALISED: the run kept no trained weights for this evaluation "
              "(served from the benchmark store, or trained before weights were kept); the file has the "
              "architecture, not the trained network")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from orchestrator.compare import compare_runs

    table, plot = compare_runs(args.run_dirs, args.out)
    print(table)
    print(f"plot: {plot}")
    return 0


def _cmd_tensorboard(args: argparse.Namespace) -> int:
    from functools import partial

    from orchestrator.experiment import open_run
    from orchestrator.tensorboard_view import serve

    paths, _config, _raw = open_run(args.run_dir)
    if not 1 <= args.port <= 65535:
        raise UserError(f"--port must be in 1..65535, got {args.port}")
    serve(paths.root, args.port, announce=partial(print, flush=True))
    return 0


def _cmd_method(args: argparse.Namespace) -> int:
    """``facenas <group> <action> CONFIG``: a method's offline job (``orchestrator.methods.base.Command``)."""
    from pathlib import Path

    from orchestrator.config import load_config
    from orchestrator.runtime import check_address, stop_ray

    method, command = next((m, c) for m, c in _method_commands()
                           if (c.group, c.action) == (args.command, args.action))
    config, _raw = load_config(args.config, args.overrides)
    if config.searcher.name != method.name:
        raise UserError(
            f"{args.config}: {command.group} {command.action} needs searcher.name: {method.name} ({command.needs}), "
            f"got {config.searcher.name!r}"
        )
    check_address(args.address)
    storage = Path(args.storage or config.storage).expanduser().resolve()
    _start(config, address=args.address)
    try:
        lines = command.run(config, storage)
    except KeyboardInterrupt:
        print(f"facenas: {command.interrupted}", file=sys.stderr)
        return 130
    finally:
        stop_ray()
    for line in lines:
        print(line)
    return 0


_COMMANDS = {
    "run": _cmd_run, "resume": _cmd_resume, "status": _cmd_status, "report": _cmd_report, "export": _cmd_export,
    "compare": _cmd_compare, "tensorboard": _cmd_tensorboard,
}


def _loopback_only(args: argparse.Namespace) -> None:
    """An embedded local Ray listens on 127.0.0.1 only.

    Ray (2.60, Linux) otherwise rewrites ``_node_ip_address="127.0.0.1"`` to the machine's outward
    address and its servers listen on every interface. The switch is read when Ray is imported, so it
    is set here, before any module that imports Ray.
    """
    if args.command in ("run", "resume", *_GROUPS) and not (args.address or os.environ.get("RAY_ADDRESS")):
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _loopback_only(args)
    try:
        return _COMMANDS.get(args.command, _cmd_method)(args)
    except UserError as exc:
        for line in exc.problems:
            print(f"facenas: {line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("facenas: interrupted; continue with `facenas resume RUN_DIR`", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
