"""``facenas tensorboard RUN_DIR [--port N]``: TensorBoard on 127.0.0.1 over a run's event files.

What a run writes for it: every trial's reported metrics (Ray Tune's default TensorBoard logger, one
``events.out.tfevents.*`` per trial folder ``RUN_DIR/<stage>/trial_*``; needs ``tensorboardX``) and the
per-epoch losses of a supernet (``RUN_DIR/<stage>/tensorboard``, written by rank 0 of the supernet
training). The viewer runs in this process until Ctrl-C.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

from orchestrator.errors import UserError

__all__ = ["event_files", "serve"]


def event_files(run_dir: Path) -> list[Path]:
    """Every TensorBoard event file under ``run_dir``."""
    return sorted(run_dir.rglob("events.out.tfevents.*"))


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def serve(run_dir: Path, port: int, *, announce=print) -> None:
    """Start TensorBoard on ``127.0.0.1:port`` with ``run_dir`` as its log folder; block until Ctrl-C.

    Raises:
        UserError: the run has no event files yet, or the port is taken.
    """
    files = event_files(run_dir)
    if not files:
        raise UserError(f"{run_dir} has no TensorBoard event files yet; they appear once its first trial reports")
    if not _port_free(port):
        raise UserError(f"port {port} on 127.0.0.1 is in use; pass another with --port")
    from tensorboard import program

    board = program.TensorBoard()
    board.configure(argv=[None, "--logdir", str(run_dir), "--host", "127.0.0.1", "--port", str(port),
                          "--reload_interval", "5"])
    url = board.launch()
    announce(f"TensorBoard for {run_dir} ({len(files)} event files): {url}")
    announce("stop it with Ctrl-C")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        announce("TensorBoard stopped")
