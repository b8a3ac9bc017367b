"""One durable file write: a reader sees the old file or the whole new one, and a returned write is on disk.

Every file facenas replaces in place (``config.yaml``, ``results.parquet``, ``best.json``, ``report.html``,
evaluation states, the benchmark store's parts, searcher states, exports) is written by :func:`write_durable`
or one of its wrappers, never by hand.

Durability argument (why, once the call returns, the new content survives a crash of the process, the
node or the machine, and why no crash ever leaves a torn file at ``path``):

1. The content goes to a *new* temporary file in the same folder (``.<name>.<random>.tmp``: hidden, and
   ending in ``.tmp`` so that folder scans skip it, e.g. the benchmark store's loader), never to ``path``
   itself. A crash while writing leaves ``path`` untouched.
2. The temporary file is flushed and ``fsync``-ed before it is renamed, so the rename can never make a
   name point at data that is still only in the page cache (a torn or empty file after a power loss).
3. ``os.replace`` renames it onto ``path``: atomic on POSIX (and on Windows) within one file system,
   which the same folder guarantees. Readers see the old file or the new one, never a mixture.
4. The folder is ``fsync``-ed after the rename, so the rename itself (the folder's entry) is on disk when
   the call returns; without this a crash could bring back the old file after the write was reported.
5. If anything before the rename fails (the writer raises, the disk is full, the process is interrupted),
   the temporary file is removed and the exception propagates: ``path`` keeps its old content (or stays
   absent) and no temporary file is left behind. Only a crash of the process itself between steps 1 and
   3 can leave a ``*.tmp`` file, never a partial ``path``.

The folder must exist (callers create their run folders once; a missing folder is a caller's error, not
something to paper over here). Files are created with the default permissions (``0o666`` less the umask),
as ``open(path, "w")`` would.

Why this module lives in ``search_algos``: searchers save their state through it (``ArchSearcher.save``)
and may not import ``orchestrator`` (DESIGN.md §2), while ``orchestrator`` may import ``search_algos``;
the lowest layer that every writer may import is therefore the home. It needs nothing but the standard
library. Trainables write no file that needs it (Ray Train copies their checkpoint folders itself).
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable
from typing import IO, Any

__all__ = [
    "TMP_SUFFIX",
    "fsync_dir",
    "write_bytes_durable",
    "write_durable",
    "write_json_durable",
    "write_text_durable",
]

TMP_SUFFIX = ".tmp"  # every temporary file ends so; folder scans that list final files skip these


def fsync_dir(folder: str | os.PathLike[str]) -> None:
    """Make a rename or unlink inside ``folder`` durable (POSIX; elsewhere folders cannot be fsync-ed)."""
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durable(path: str | os.PathLike[str], write: Callable[[IO[bytes]], object]) -> None:
    """Replace ``path`` durably with what ``write`` writes into a binary file object.

    For writers that stream into a file (``pq.write_table``, ``torch.save``, ``fig.savefig``); see the
    module docstring for the durability argument.

    Args:
        path: the final file; its folder must exist.
        write: called once with the temporary file opened for binary writing; its return value is
            ignored. It must not close the file.

    Raises:
        FileNotFoundError: the folder of ``path`` does not exist.
        Exception: whatever ``write`` raises, after the temporary file is removed.
    """
    final = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(final))
    tmp = os.path.join(folder, f".{os.path.basename(final)}.{uuid.uuid4().hex[:12]}{TMP_SUFFIX}")
    try:
        # O_EXCL: never write into someone else's file; 0o666 & ~umask like open(path, "w").
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, final)
    except BaseException:
        try:
            os.remove(tmp)
        except OSError:
            pass  # never created, or already renamed
        raise
    fsync_dir(folder)


def write_bytes_durable(path: str | os.PathLike[str], data: bytes) -> None:
    """Replace ``path`` durably with ``data`` (see :func:`write_durable`)."""
    write_durable(path, lambda fh: fh.write(data))


def write_text_durable(path: str | os.PathLike[str], text: str, *, encoding: str = "utf-8") -> None:
    """Replace ``path`` durably with ``text`` encoded as ``encoding`` (see :func:`write_durable`)."""
    write_bytes_durable(path, text.encode(encoding))


def write_json_durable(path: str | os.PathLike[str], payload: Any, *, sort_keys: bool = True) -> None:
    """Replace ``path`` durably with ``payload`` as indented JSON and a final newline.

    Strict JSON: NaN and infinities are refused (``ValueError``) before anything is written, since other
    tools reading these files (``jq``, JavaScript) reject them.

    Args:
        path: the final file; its folder must exist.
        payload: JSON-serialisable value.
        sort_keys: sort object keys (stable diffs between runs); ``False`` keeps the payload's order.
    """
    text = json.dumps(payload, indent=2, sort_keys=sort_keys, allow_nan=False) + "\n"
    write_text_durable(path, text)
