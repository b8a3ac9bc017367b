"""The shared cross-dataset benchmark store: every finished evaluation of every run, on disk as Parquet.

A trial whose key ``(space, arch_key, dataset_id, fidelity, seed, protocol)`` is already stored returns the
stored metrics (``cached=true``) and trains nothing (``protocol`` = a hash of the training settings, so a
result trained with another lr or batch size is a different row; parts written before the column existed
get it rebuilt from their config when loaded); a transfer ranker learns from these rows across datasets
(``orchestrator.methods``). Dataset meta-features live in a second
table keyed by ``dataset_id``; only finite scalar features are accepted, so raw images can never be stored.

Layout under ``root`` (``<storage>/benchmark``)::

    evaluations/part-<time_ns>-<uuid8>.parquet   one file per put / put_many, columns EVALUATION_COLUMNS
    datasets/part-<time_ns>-<uuid8>.parquet      one file per put_dataset, columns DATASET_COLUMNS

Durability argument (why an acknowledged write survives any crash of the actor, its node or the driver):

1. A write never modifies an existing file. It writes a *new* part with
   :func:`search_algos.durable.write_durable`: a ``*.tmp`` file in the same folder, flushed and ``fsync``-ed,
   ``os.replace``-d to its final name (atomic on POSIX within one file system), then the folder ``fsync``-ed
   so the rename itself is on disk. Only then is the in-memory index updated and the call answered. So a
   part file is either absent or complete, and every answered write is in a complete part file.
2. A crash before the rename leaves at most a ``*.tmp`` file; loading ignores those (and deletes them once
   they are older than ``_STALE_TMP_S``, so a store that is writing concurrently is not disturbed). The
   write was not acknowledged, the caller retries it.
3. Loading reads every part and de-duplicates by key, keeping the earliest ``created_at``. So a row that
   reached disk twice (a retried write whose first answer was lost when the actor died, two store
   instances on one folder, a crash in the middle of compaction) is still seen exactly once.
4. Compaction (more than ``max_parts`` parts) merges a few parts of similar size into one (so a row is
   rewritten at most ``log2(rows)`` times, see :func:`_parts_to_merge`). It first writes the new part,
   holding the kept row of every key whose kept row is in a replaced part, by the same durable procedure,
   and only then removes the parts it replaces. A row it leaves out is a duplicate whose kept copy is in a
   part that is not removed. A crash between the two steps leaves rows in two files, which step 3 makes
   harmless; it never leaves a row in no file.

Writes are serialised by one process (the named Ray actor that :class:`StoreClient` talks to), so the
in-memory index is the single source of truth while the actor lives; when Ray restarts the actor
(``max_restarts=-1``), ``__init__`` rebuilds the index from disk. Puts are idempotent (a stored key is
never written again), which makes Ray's and the client's retries of an unanswered put safe.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import numbers
import os
import threading
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from orchestrator.errors import UserError
from search_algos.durable import TMP_SUFFIX, fsync_dir, write_durable

__all__ = [
    "DATASET_COLUMNS",
    "EVALUATION_COLUMNS",
    "BenchmarkStore",
    "StoreClient",
    "StoreError",
    "check_store",
    "protocol_of",
]

_log = logging.getLogger(__name__)

EVALUATION_COLUMNS = (
    "space",
    "arch_key",
    "config",
    "dataset_id",
    "fidelity",
    "seed",
    "metrics",
    "cost_s",
    "run",
    "created_at",
    "protocol",
)
DATASET_COLUMNS = ("dataset_id", "name", "features", "created_at")

_EVALUATION_SCHEMA = pa.schema(
    [
        ("space", pa.string()),
        ("arch_key", pa.string()),
        ("config", pa.string()),  # JSON of the evaluated config, arch included
        ("dataset_id", pa.string()),
        ("fidelity", pa.int64()),  # epochs
        ("seed", pa.int64()),
        ("metrics", pa.string()),  # JSON dict name -> float
        ("cost_s", pa.float64()),
        ("run", pa.string()),
        ("created_at", pa.float64()),  # unix seconds
        ("protocol", pa.string()),  # protocol_of(config["training"]): how the evaluation was trained
    ]
)
_DATASET_SCHEMA = pa.schema(
    [
        ("dataset_id", pa.string()),
        ("name", pa.string()),
        ("features", pa.string()),  # JSON dict name -> finite float (meta-features only)
        ("created_at", pa.float64()),
    ]
)
_EVALUATION_KEY = ("space", "arch_key", "dataset_id", "fidelity", "seed", "protocol")
# Columns a part written by an older facenas may lack, with how to rebuild them from the row.
_DERIVED: dict[str, Any] = {"protocol": lambda row: protocol_of(row["config"])}
_DATASET_KEY = ("dataset_id",)

_DEFAULT_MAX_PARTS = 64  # compaction threshold: loading stays one read per part, a few dozen parts is cheap
_STALE_TMP_S = 600.0  # a *.tmp older than this is a crash leftover; a younger one may be a write in flight
_PART_PREFIX = "part-"
_PART_SUFFIX = ".parquet"
_TMP_SUFFIX = TMP_SUFFIX  # what search_algos.durable names its temporary files: never a part
_LOAD_ATTEMPTS = 5  # a part may vanish while listing when another store instance compacts the folder


class StoreError(UserError, ValueError):
    """The benchmark store cannot be used as it is on disk, or its actor cannot be reached.

    The message is one line naming the problem and the fix; being a :class:`UserError`, the CLI prints
    it as such (exit code 2, no traceback).
    """


# ----------------------------------------------------------------------------------------------------------
# Durable Parquet parts


def _write_part(directory: str, table: pa.Table) -> str:
    """Write ``table`` as a new part file, durably, and return its file name.

    Args:
        directory: The table's folder.
        table: Rows to write, already in the table's schema.

    Returns:
        The new part's file name (not the path).
    """
    name = f"{_PART_PREFIX}{time.time_ns()}-{uuid.uuid4().hex[:8]}{_PART_SUFFIX}"
    write_durable(os.path.join(directory, name), lambda fh: pq.write_table(table, fh))
    return name


def _bad_file(path: str, problem: str) -> StoreError:
    return StoreError(
        f"benchmark file {path} {problem}; move it away or delete it, "
        "facenas rebuilds the store from the other files"
    )


def _types_match(found: pa.DataType, expected: pa.DataType) -> bool:
    if pa.types.is_string(expected):
        return pa.types.is_string(found) or pa.types.is_large_string(found)
    return found.equals(expected)


def _schema_problem(found: pa.Schema, schema: pa.Schema) -> str | None:
    """What is wrong with a part file's schema (a missing or wrongly typed column), or None."""
    for field in schema:
        if field.name not in found.names:
            if field.name in _DERIVED:
                continue  # an older part: rebuilt from the row when loaded
            return f"has the wrong schema (missing column {field.name!r})"
        kind = found.field(field.name).type
        if not _types_match(kind, field.type):
            return f"has the wrong schema (column {field.name!r} is {kind}, expected {field.type})"
    return None


def check_store(root: str) -> None:
    """Check the part files of the store at ``root`` without loading them (no Ray, nothing written).

    Reads each part's Parquet footer only, so a run or resume can refuse a bad store file before
    anything starts; :class:`BenchmarkStore` still checks the values when it loads.

    Raises:
        StoreError: ``root`` is not a folder, or a part file is unreadable or has the wrong schema.
    """
    root = os.path.abspath(root)
    if os.path.exists(root) and not os.path.isdir(root):
        raise StoreError(f"benchmark store path {root} is a file, not a folder; move it away")
    for table, schema in (("evaluations", _EVALUATION_SCHEMA), ("datasets", _DATASET_SCHEMA)):
        folder = os.path.join(root, table)
        if not os.path.isdir(folder):
            continue
        for name in sorted(os.listdir(folder)):
            if not (name.startswith(_PART_PREFIX) and name.endswith(_PART_SUFFIX)):
                continue
            path = os.path.join(folder, name)
            try:
                found = pq.read_schema(path)
            except FileNotFoundError:
                continue  # compacted away meanwhile
            except (pa.ArrowException, OSError) as exc:
                reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise _bad_file(path, f"is not a readable Parquet file ({reason})") from None
            problem = _schema_problem(found, schema)
            if problem:
                raise _bad_file(path, problem)


def _read_part(path: str, schema: pa.Schema) -> list[dict[str, Any]]:
    """Read one part file and check it against ``schema``.

    Raises:
        FileNotFoundError: The file vanished (another store instance compacted it); the caller relists.
        StoreError: The file is unreadable, misses a column, has a wrongly typed column or empty values.
    """
    try:
        table = pq.read_table(path)
    except FileNotFoundError:
        raise
    except (pa.ArrowException, OSError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise _bad_file(path, f"is not a readable Parquet file ({reason})") from None
    problem = _schema_problem(table.schema, schema)
    if problem:
        raise _bad_file(path, problem)
    present = [f.name for f in schema if f.name in table.column_names]
    for name in present:
        if table.column(name).null_count:
            raise _bad_file(path, f"has empty values in column {name!r}")
    # Extra columns are ignored: a newer facenas may add columns, an older one still reads the rest.
    rows = table.select(present).cast(pa.schema([schema.field(n) for n in present])).to_pylist()
    for name in schema.names:
        if name not in present:  # written before the column existed: rebuild it from the row
            for row in rows:
                row[name] = _DERIVED[name](row)
    return rows


class _PartTable:
    """One append-only table: a folder of Parquet parts plus an in-memory index by key.

    Not thread-safe on its own; :class:`BenchmarkStore` serialises access.
    """

    def __init__(
        self, directory: str, schema: pa.Schema, key_columns: tuple[str, ...], *, max_parts: int,
        prefix: int | None = None,
    ) -> None:
        self._dir = directory
        self._schema = schema
        self._key_columns = key_columns
        self._max_parts = max_parts
        self._prefix = prefix  # also index the earliest row of each key[:prefix] (see first())
        self._rows: dict[tuple[Any, ...], dict[str, Any]] = {}
        self._first: dict[tuple[Any, ...], tuple[Any, ...]] = {}
        # Part name -> the keys whose kept row (self._rows) it holds, oldest part first: compaction rewrites
        # only the rows of the parts it merges.
        self._parts: dict[str, list[tuple[Any, ...]]] = {}
        os.makedirs(directory, exist_ok=True)
        self._load()
        self._compact()

    def key(self, row: Mapping[str, Any]) -> tuple[Any, ...]:
        return tuple(row[c] for c in self._key_columns)

    def get(self, key: tuple[Any, ...]) -> dict[str, Any] | None:
        return self._rows.get(key)

    def first(self, prefix: tuple[Any, ...]) -> dict[str, Any] | None:
        """The earliest stored row whose key starts with ``prefix`` (``len(prefix)`` = the table's prefix)."""
        key = self._first.get(prefix)
        return None if key is None else self._rows[key]

    def _index_first(self, key: tuple[Any, ...], row: Mapping[str, Any]) -> None:
        if self._prefix is None:
            return
        head = key[: self._prefix]
        kept = self._first.get(head)
        if kept is None or row["created_at"] < self._rows[kept]["created_at"]:
            self._first[head] = key

    def values(self) -> Iterable[dict[str, Any]]:
        return self._rows.values()

    def __len__(self) -> int:
        return len(self._rows)

    @property
    def part_count(self) -> int:
        return len(self._parts)

    def add(self, rows: list[dict[str, Any]]) -> list[bool]:
        """Store the rows whose key is new, in one durable part; returns one flag per row (True = written)."""
        flags: list[bool] = []
        fresh: dict[tuple[Any, ...], dict[str, Any]] = {}
        for row in rows:
            key = self.key(row)
            is_new = key not in self._rows and key not in fresh
            flags.append(is_new)
            if is_new:
                fresh[key] = row
        if fresh:
            table = pa.Table.from_pylist(list(fresh.values()), schema=self._schema)
            self._parts[_write_part(self._dir, table)] = list(fresh)  # durable before the index learns of it
            self._rows.update(fresh)
            for key, row in fresh.items():
                self._index_first(key, row)
            self._compact()
        return flags

    def _load(self) -> None:
        for _ in range(_LOAD_ATTEMPTS):
            try:
                self._load_once()
                return
            except FileNotFoundError:
                continue  # a part vanished under us: another instance compacted; list again
        self._load_once()

    def _load_once(self) -> None:
        rows: dict[tuple[Any, ...], dict[str, Any]] = {}
        holder: dict[tuple[Any, ...], str] = {}  # key -> the part its kept row came from
        names = sorted(os.listdir(self._dir))
        self._remove_stale_tmp(n for n in names if n.endswith(_TMP_SUFFIX))
        parts = [n for n in names if n.startswith(_PART_PREFIX) and n.endswith(_PART_SUFFIX)]
        for name in parts:  # time order: on equal created_at the older file wins
            for row in _read_part(os.path.join(self._dir, name), self._schema):
                key = self.key(row)
                kept = rows.get(key)
                if kept is None or row["created_at"] < kept["created_at"]:
                    rows[key], holder[key] = row, name
        self._parts = {name: [] for name in parts}  # a part whose rows are all kept elsewhere holds none
        for key, name in holder.items():
            self._parts[name].append(key)
        self._rows, self._first = rows, {}
        for key, row in rows.items():
            self._index_first(key, row)

    def _remove_stale_tmp(self, names: Iterable[str]) -> None:
        now = time.time()
        for name in names:
            path = os.path.join(self._dir, name)
            try:
                if now - os.path.getmtime(path) > _STALE_TMP_S:
                    os.remove(path)
            except OSError:
                pass  # gone already, or not ours to remove: it is ignored either way

    def _compact(self) -> None:
        """Merge parts while there are more than ``max_parts`` (:func:`_parts_to_merge` picks which)."""
        while len(self._parts) > self._max_parts:
            names = list(self._parts)
            chosen = [names[i] for i in _parts_to_merge([len(self._parts[n]) for n in names])]
            if not self._merge(chosen):
                return

    def _merge(self, replaced: list[str]) -> bool:
        """Replace the parts ``replaced`` by one holding their kept rows; False if writing it failed.

        Best effort: a failure leaves the (valid) parts as they were.
        """
        keys = [key for name in replaced for key in self._parts[name]]
        try:
            table = pa.Table.from_pylist([self._rows[k] for k in keys], schema=self._schema)
            merged = _write_part(self._dir, table) if keys else None  # no rows: nothing to keep
        except OSError as exc:
            _log.warning("benchmark store: compaction of %s failed (%s); parts kept", self._dir, exc)
            return False
        for name in replaced:
            del self._parts[name]
        if merged is not None:
            self._parts[merged] = keys
        # A crash from here on leaves rows in two files; loading de-duplicates them.
        for name in replaced:
            try:
                os.remove(os.path.join(self._dir, name))
            except FileNotFoundError:
                pass
            except OSError as exc:
                _log.warning("benchmark store: could not remove compacted part %s (%s)", name, exc)
        fsync_dir(self._dir)  # the removals, like the compacted part, are on disk
        return True


def _size_tier(rows: int) -> int:
    """``floor(log2(rows))`` (0 for an empty part): parts of one tier differ in size by less than 2x."""
    return max(rows, 1).bit_length() - 1


def _parts_to_merge(sizes: Sequence[int]) -> list[int]:
    """Which parts one compaction merges: every part of the lowest size tier that holds two or more.

    Merging two or more parts of tier ``t`` gives a part of at least ``2 * 2**t`` rows, tier ``t + 1`` or
    more: each compaction that rewrites a row lifts it at least one tier, so a row is rewritten at most
    ``log2(rows)`` times, and filling the store costs O(rows log rows) writes, never O(rows^2) (rewriting
    every row at each compaction did). When every tier holds one part (so more tiers than ``max_parts``:
    only a ``max_parts`` below ``log2(rows)``), the two smallest parts are merged.

    Args:
        sizes: Rows held by each part.

    Returns:
        Indices into ``sizes``, ascending.
    """
    tiers: dict[int, list[int]] = {}
    for i, size in enumerate(sizes):
        tiers.setdefault(_size_tier(size), []).append(i)
    crowded = [t for t, members in tiers.items() if len(members) > 1]
    if crowded:
        return tiers[min(crowded)]
    return sorted(sorted(range(len(sizes)), key=lambda i: sizes[i])[:2])


# ----------------------------------------------------------------------------------------------------------
# Row validation (parse once at the boundary)


def _type_name(value: Any) -> str:
    return type(value).__name__


def _check_str(column: str, value: Any, *, nonempty: bool) -> str:
    if not isinstance(value, str):
        raise ValueError(f"column {column!r} must be a str, got {value!r} ({_type_name(value)})")
    if nonempty and not value:
        raise ValueError(f"column {column!r} must be a non-empty str, got ''")
    return value


def _check_int(column: str, value: Any, *, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"column {column!r} must be an int, got {value!r} ({_type_name(value)})")
    value = int(value)
    if not -(2**63) <= value < 2**63:
        raise ValueError(f"column {column!r} must fit in int64, got {value}")
    if minimum is not None and value < minimum:
        raise ValueError(f"column {column!r} must be >= {minimum}, got {value}")
    return value


def _check_float(column: str, value: Any, *, minimum: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"column {column!r} must be a float, got {value!r} ({_type_name(value)})")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"column {column!r} must be finite, got {value}")
    if minimum is not None and value < minimum:
        raise ValueError(f"column {column!r} must be >= {minimum}, got {value}")
    return value


def _plain_json(column: str, value: Any, path: str = "") -> Any:
    """Return ``value`` as plain JSON types; floats must be finite or NaN (NaN = "not measured")."""
    where = f"{column}{path}"
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        value = float(value)
        if math.isinf(value):
            raise ValueError(f"column {column!r}: value at {where} must be finite or NaN, got {value}")
        return value
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise ValueError(f"column {column!r}: keys must be str, got {k!r} at {where}")
            out[k] = _plain_json(column, v, f"{path}[{k!r}]")
        return out
    if isinstance(value, (list, tuple)):
        return [_plain_json(column, v, f"{path}[{i}]") for i, v in enumerate(value)]
    raise ValueError(
        f"column {column!r}: value at {where} is not JSON-serialisable ({_type_name(value)})"
    )


def _json_object_column(column: str, value: Any) -> str:
    """Accept a mapping or a JSON text of an object; return canonical JSON text."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ValueError(f"column {column!r} is not valid JSON ({exc})") from None
    if not isinstance(value, Mapping):
        raise ValueError(
            f"column {column!r} must be a JSON object (dict), got {_type_name(value)}"
        )
    return json.dumps(_plain_json(column, value), sort_keys=True, allow_nan=True)


def protocol_of(config: Mapping[str, Any] | str) -> str:
    """The training protocol of an evaluation's config: a short hash of ``config["training"]``.

    The lr, batch size, epochs schedule... that produced a result; two evaluations of one architecture
    trained differently are different rows. ``""`` when the config names no training (e.g. one-shot
    evaluation on a supernet). Args: the config as a dict or JSON text.
    """
    if isinstance(config, str):
        config = json.loads(config)
    training = config.get("training") if isinstance(config, Mapping) else None
    if training is None:
        return ""
    text = json.dumps(_plain_json("training", training), sort_keys=True, allow_nan=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _normalize_evaluation(row: Any) -> dict[str, Any]:
    """Validate one evaluation row and return it in storage form (config and metrics as JSON text).

    ``created_at`` may be left out; it defaults to now.

    Raises:
        ValueError: A column is missing, unknown, or of the wrong type; the message names the column.
    """
    if not isinstance(row, Mapping):
        raise ValueError(f"a benchmark row must be a dict, got {_type_name(row)}")
    unknown = sorted(set(row) - set(EVALUATION_COLUMNS))
    if unknown:
        raise ValueError(f"unknown column(s) {unknown}; the columns are {list(EVALUATION_COLUMNS)}")
    missing = [c for c in EVALUATION_COLUMNS if c not in row and c not in ("created_at", "protocol")]
    if missing:
        raise ValueError(f"missing column {missing[0]!r}; the columns are {list(EVALUATION_COLUMNS)}")
    config = _json_object_column("config", row["config"])
    return {
        "space": _check_str("space", row["space"], nonempty=True),
        "arch_key": _check_str("arch_key", row["arch_key"], nonempty=True),
        "config": config,
        "dataset_id": _check_str("dataset_id", row["dataset_id"], nonempty=True),
        "fidelity": _check_int("fidelity", row["fidelity"], minimum=0),
        "seed": _check_int("seed", row["seed"]),
        "metrics": _json_object_column("metrics", row["metrics"]),
        "cost_s": _check_float("cost_s", row["cost_s"], minimum=0.0),
        "run": _check_str("run", row["run"], nonempty=False),
        "created_at": _check_float("created_at", row.get("created_at", time.time())),
        "protocol": _check_str("protocol", row["protocol"], nonempty=False) if "protocol" in row
        else protocol_of(config),
    }


def _check_features(features: Any) -> str:
    """Dataset meta-features: a flat dict of finite numbers, as canonical JSON text.

    Raises:
        ValueError: Not a dict, a non-str name, or a value that is not one finite number (arrays included:
            raw images must never reach the store).
    """
    if not isinstance(features, Mapping):
        raise ValueError(f"features must be a dict of name -> float, got {_type_name(features)}")
    out: dict[str, float] = {}
    for name, value in features.items():
        if not isinstance(name, str):
            raise ValueError(f"feature names must be str, got {name!r}")
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ValueError(
                f"feature {name!r} must be one finite number, got {_type_name(value)}; the store keeps "
                "dataset meta-features only, never images or arrays"
            )
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"feature {name!r} must be finite, got {value}")
        out[name] = value
    return json.dumps(out, sort_keys=True)


def _public_row(row: Mapping[str, Any], json_column: str) -> dict[str, Any]:
    out = dict(row)
    out[json_column] = json.loads(row[json_column])
    return out


# ----------------------------------------------------------------------------------------------------------
# The store


class BenchmarkStore:
    """Every finished evaluation, keyed by ``(space, arch_key, dataset_id, fidelity, seed, protocol)``, on disk.

    A plain class (tested without Ray); :meth:`StoreClient.start` runs it as a named Ray actor. Writes are
    durable before they return (see the module docstring); lookups are O(1) from an in-memory index.

    Example:
        >>> store = BenchmarkStore("runs/benchmark")
        >>> store.put({"space": "global", "arch_key": "ab12", "config": {"arch": [3, 1]},
        ...            "dataset_id": "digits", "fidelity": 10, "seed": 0,
        ...            "metrics": {"val_acc": 0.97}, "cost_s": 12.5, "run": "quickstart"})
        True
        >>> store.lookup("global", "ab12", "digits", 10, 0)["metrics"]
        {'val_acc': 0.97}

    Args:
        root: The store's folder, ``<storage>/benchmark``; created if missing.
        max_parts: Compact a table into one part once it has more than this many part files.

    Raises:
        StoreError: A file under ``root`` is not a valid part of the store (message names the file).
    """

    def __init__(self, root: str, *, max_parts: int = _DEFAULT_MAX_PARTS) -> None:
        if max_parts < 1:
            raise ValueError(f"max_parts must be >= 1, got {max_parts}")
        self.root = os.path.abspath(root)
        self._lock = threading.RLock()
        self._evaluations = _PartTable(
            os.path.join(self.root, "evaluations"), _EVALUATION_SCHEMA, _EVALUATION_KEY,
            max_parts=max_parts, prefix=len(_EVALUATION_KEY) - 1,
        )
        self._datasets = _PartTable(
            os.path.join(self.root, "datasets"), _DATASET_SCHEMA, _DATASET_KEY, max_parts=max_parts
        )
        # Counters since this instance started (a restarted actor starts again from zero): see stats().
        self._lookups = 0
        self._hits = 0
        self._puts = 0

    def lookup(
        self, space: str, arch_key: str, dataset_id: str, fidelity: int, seed: int, protocol: str | None = None
    ) -> dict[str, Any] | None:
        """The stored evaluation for this key, or None.

        Args:
            protocol: The training protocol (:func:`protocol_of` of the config); None accepts any, and
                returns the earliest stored one.

        Returns:
            The row as a dict (columns ``EVALUATION_COLUMNS``) with ``metrics`` parsed to a dict;
            ``config`` stays JSON text.
        """
        head = (space, arch_key, dataset_id, int(fidelity), int(seed))
        with self._lock:
            row = self._evaluations.first(head) if protocol is None else self._evaluations.get((*head, protocol))
            self._lookups += 1
            self._hits += row is not None
        return None if row is None else _public_row(row, "metrics")

    def lookup_many(self, keys: Iterable[Sequence[Any]]) -> list[dict[str, Any] | None]:
        """:meth:`lookup` of many keys in one call (through the actor: one round trip for all of them).

        Args:
            keys: Each ``(space, arch_key, dataset_id, fidelity, seed)`` or ``(..., seed, protocol)``,
                the arguments of :meth:`lookup` in its order; a protocol of None accepts any.

        Returns:
            One entry per key, in order: the row as :meth:`lookup` returns it, or None.

        Raises:
            ValueError: A key has not 5 or 6 parts (message gives its index); nothing is looked up.
        """
        heads = []
        for i, key in enumerate(keys):
            key = tuple(key)
            if len(key) not in (5, 6):
                raise ValueError(
                    f"lookup key {i} must be (space, arch_key, dataset_id, fidelity, seed[, protocol]), "
                    f"got {len(key)} parts: {key!r}"
                )
            head = (key[0], key[1], key[2], int(key[3]), int(key[4]))
            heads.append((head, key[5] if len(key) == 6 else None))
        with self._lock:
            found = [
                self._evaluations.first(head) if protocol is None else self._evaluations.get((*head, protocol))
                for head, protocol in heads
            ]
            self._lookups += len(found)
            self._hits += sum(row is not None for row in found)
        return [None if row is None else _public_row(row, "metrics") for row in found]

    def put(self, row: Mapping[str, Any]) -> bool:
        """Store one evaluation, durably, before returning.

        Args:
            row: Columns ``EVALUATION_COLUMNS``; ``config`` and ``metrics`` as dicts or JSON text,
                ``created_at`` optional (defaults to now).

        Returns:
            True if written; False if its key was already stored (nothing written).

        Raises:
            ValueError: A column is missing, unknown or of the wrong type (message names it).
        """
        return self.put_many([row])[0]

    def put_many(self, rows: Iterable[Mapping[str, Any]]) -> list[bool]:
        """Store a batch of evaluations in one durable part file; validated as a whole first.

        Returns:
            One flag per row: True if written, False if its key was stored before (or earlier in the batch).

        Raises:
            ValueError: A row is invalid (message gives its index and column); nothing is written.
        """
        normalized = []
        for i, row in enumerate(rows):
            try:
                normalized.append(_normalize_evaluation(row))
            except ValueError as exc:
                raise ValueError(f"benchmark row {i}: {exc}") from None
        with self._lock:
            flags = self._evaluations.add(normalized)
            self._puts += sum(flags)
        return flags

    def rows(
        self, *, space: str | None = None, dataset_id: str | None = None, run: str | None = None
    ) -> list[dict[str, Any]]:
        """Stored evaluations matching every given filter, oldest first, ``metrics`` parsed to dicts."""
        with self._lock:
            found = [
                row
                for row in self._evaluations.values()
                if (space is None or row["space"] == space)
                and (dataset_id is None or row["dataset_id"] == dataset_id)
                and (run is None or row["run"] == run)
            ]
        found.sort(key=lambda r: r["created_at"])
        return [_public_row(r, "metrics") for r in found]

    def put_dataset(self, dataset_id: str, name: str, features: Mapping[str, float]) -> bool:
        """Store a dataset's meta-features, durably, before returning.

        Args:
            dataset_id: The key used in evaluation rows.
            name: A human-readable name.
            features: Flat dict of finite numbers (meta-features only; arrays are refused).

        Returns:
            True if written; False if ``dataset_id`` was already stored (the first features are kept).

        Raises:
            ValueError: An argument has the wrong type, or a feature is not one finite number.
        """
        row = {
            "dataset_id": _check_str("dataset_id", dataset_id, nonempty=True),
            "name": _check_str("name", name, nonempty=False),
            "features": _check_features(features),
            "created_at": time.time(),
        }
        with self._lock:
            return self._datasets.add([row])[0]

    def dataset(self, dataset_id: str) -> dict[str, Any] | None:
        """The dataset's row (``features`` parsed to a dict), or None."""
        with self._lock:
            row = self._datasets.get((dataset_id,))
        return None if row is None else _public_row(row, "features")

    def datasets(self) -> list[dict[str, Any]]:
        """Every stored dataset, oldest first, ``features`` parsed to dicts."""
        with self._lock:
            found = sorted(self._datasets.values(), key=lambda r: r["created_at"])
        return [_public_row(r, "features") for r in found]

    def count(self) -> int:
        """Number of stored evaluations (one per key)."""
        with self._lock:
            return len(self._evaluations)

    def stats(self) -> dict[str, int]:
        """Counters for monitoring (e.g. Ray metrics), since this instance started.

        Returns:
            ``{"rows", "lookups", "hits", "puts"}``: evaluations stored now (one per key, also those loaded
            from disk), evaluation keys looked up (each key of a batch counts), lookups that found a row,
            and evaluation rows written (a put of a key already stored writes nothing and is not counted).
            A restarted actor reloads its rows from disk but counts the rest from zero again.
        """
        with self._lock:
            return {"rows": len(self._evaluations), "lookups": self._lookups, "hits": self._hits,
                    "puts": self._puts}

    def ping(self) -> bool:
        """Always True; lets a client wait until the actor has loaded the store."""
        return True


# ----------------------------------------------------------------------------------------------------------
# The Ray actor and its client

_REMOTE_STORE: Any = None  # ray.remote(BenchmarkStore), made on first use so importing needs no Ray
# The creating handle of every store actor this process started. Ray 2.60 reference-counts non-detached
# actors, names or not: once the creator's own handles are gone the actor is killed, and handles from
# ray.get_actor (here or in workers) do not keep it alive. Holding the creating handle here makes the
# actor live exactly as long as the driver (lifetime=None: it fate-shares with the driver).
_OWNED_HANDLES: dict[tuple[str, str], Any] = {}


def _remote_store_class() -> Any:
    global _REMOTE_STORE
    if _REMOTE_STORE is None:
        import ray

        _REMOTE_STORE = ray.remote(BenchmarkStore)
    return _REMOTE_STORE


def _creation_error(exc: BaseException) -> BaseException | None:
    """The exception the actor's ``__init__`` raised, if ``exc`` says the actor died of one."""
    if not getattr(exc, "actor_init_failed", False):
        return None
    for arg in getattr(exc, "args", ()):
        cause = getattr(arg, "cause", None)
        if isinstance(cause, BaseException):
            return cause
    return exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class _ActorMissing(Exception):
    """No actor of that name is registered (not started yet, or gone for good)."""


def _driver_node_affinity() -> Any:
    """Pin the store to the driver's node (hard affinity).

    Soft affinity is not enough: on Ray 2.60 a 0-CPU actor with ``soft=True`` landed on a worker node in
    2 of 5 placements while the driver's node was alive, and a store on a worker node goes down with that
    node. The driver's node lives as long as the run does (the actor is not detached), so hard affinity
    costs nothing.
    """
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=False)


class StoreClient:
    """A picklable handle on the benchmark store actor, handed to trainables and searchers as an object.

    The driver calls :meth:`start`; everything else (Ray tasks, Tune trials) gets a pickled copy and finds
    the actor by name. Each call retries for up to ``retry_s`` while the actor is dead or restarting
    (Ray restarts it, and it reloads from disk); puts are idempotent, so retrying an unanswered put is safe.

    Args:
        root: The store's folder, ``<storage>/benchmark``.
        namespace: The Ray namespace of the actor (explicit, so a resumed driver finds it).
        retry_s: How long one call keeps retrying an unreachable actor.
    """

    def __init__(self, root: str, *, namespace: str = "facenas", retry_s: float = 60.0) -> None:
        self.root = os.path.abspath(root)
        self.namespace = namespace
        self.name = self.actor_name(self.root)
        self.retry_s = float(retry_s)
        self._handle: Any = None

    @staticmethod
    def actor_name(root: str) -> str:
        """The actor's name for ``root``: one store actor per folder."""
        digest = hashlib.sha256(os.path.abspath(root).encode()).hexdigest()[:8]
        return f"benchmark-store-{digest}"

    @classmethod
    def start(
        cls, root: str, *, namespace: str = "facenas", timeout_s: float = 120.0
    ) -> StoreClient:
        """Create the store actor, or attach to the live one for ``root``; driver only.

        The actor is created from the driver outside any placement group (DESIGN.md §6), on the
        driver's node (hard affinity): its files land where the driver writes the runs, even when the
        storage is not shared, and losing a worker node never takes the store with it. It restarts forever and reloads from disk.

        Args:
            root: The store's folder.
            namespace: The actor's Ray namespace.
            timeout_s: How long to wait for the actor to load the store.

        Returns:
            A client whose actor answers.

        Raises:
            StoreError: The store on disk is invalid (the actor's one-line message), or the actor did not
                answer within ``timeout_s``.
        """
        import ray
        from ray.exceptions import GetTimeoutError, RayActorError

        client = cls(root, namespace=namespace)
        # Two attempts: a named actor whose __init__ failed stays registered as dead, and get_if_exists
        # hands that corpse back. Kill it (which frees the name) and create a fresh one once.
        for attempt in range(2):
            handle = (
                _remote_store_class()
                .options(
                    name=client.name,
                    namespace=namespace,
                    get_if_exists=True,
                    max_restarts=-1,
                    max_task_retries=-1,
                    num_cpus=0,
                    lifetime=None,
                    scheduling_strategy=_driver_node_affinity(),
                )
                .remote(client.root)
            )
            try:
                ray.get(handle.ping.remote(), timeout=timeout_s)
            except GetTimeoutError:
                raise StoreError(
                    f"benchmark store at {client.root} did not load within {timeout_s:.0f} s; "
                    "check the Ray cluster has a live node, or pass a larger timeout_s"
                ) from None
            except RayActorError as exc:
                cause = _creation_error(exc) or exc
                ray.kill(handle, no_restart=True)  # frees the name
                _OWNED_HANDLES.pop((namespace, client.name), None)
                if attempt == 0:
                    continue
                if isinstance(cause, StoreError):
                    raise StoreError(_first_line(cause)) from None
                raise StoreError(
                    f"benchmark store at {client.root} failed to start ({_first_line(cause)}); "
                    "see the Ray worker logs"
                ) from None
            owned = _OWNED_HANDLES.get((namespace, client.name))
            if owned is None or owned._actor_id != handle._actor_id:
                # A fresh actor: keep its creating handle. For an actor that already existed,
                # get_if_exists returns a borrowed handle; replacing the creating one with it
                # would let Ray collect the actor.
                _OWNED_HANDLES[(namespace, client.name)] = handle
            client._handle = handle
            return client
        raise AssertionError("unreachable")  # pragma: no cover

    # -- calls -------------------------------------------------------------------------------------------

    def _resolve(self) -> Any:
        if self._handle is None:
            import ray

            try:
                self._handle = ray.get_actor(self.name, namespace=self.namespace)
            except ValueError:
                raise _ActorMissing(self.name) from None
        return self._handle

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        import ray
        from ray.exceptions import RayActorError, RayTaskError

        deadline = time.monotonic() + self.retry_s
        delay = 0.05
        while True:
            try:
                return ray.get(getattr(self._resolve(), method).remote(*args, **kwargs))
            except RayTaskError as exc:
                if isinstance(exc.cause, ValueError):  # invalid row or store: the store's own message
                    raise exc.cause from None
                raise
            except (RayActorError, _ActorMissing) as exc:
                cause = _creation_error(exc)
                if isinstance(cause, StoreError):  # restarted actor found a bad file while reloading
                    raise StoreError(_first_line(cause)) from None
                self._handle = None  # re-resolve: the actor may have been re-created under the name
                if time.monotonic() >= deadline:
                    raise StoreError(
                        f"benchmark store actor {self.name!r} (namespace {self.namespace!r}, root "
                        f"{self.root}) unreachable for {self.retry_s:.0f} s ({type(exc).__name__}); "
                        "start it from the driver with StoreClient.start(root)"
                    ) from None
                time.sleep(delay)
                delay = min(2 * delay, 1.0)

    def lookup(
        self, space: str, arch_key: str, dataset_id: str, fidelity: int, seed: int, protocol: str | None = None
    ) -> dict[str, Any] | None:
        """See :meth:`BenchmarkStore.lookup`."""
        return self._call("lookup", space, arch_key, dataset_id, fidelity, seed, protocol)

    def lookup_many(self, keys: Iterable[Sequence[Any]]) -> list[dict[str, Any] | None]:
        """See :meth:`BenchmarkStore.lookup_many`: one actor round trip for every key."""
        return self._call("lookup_many", [tuple(k) for k in keys])

    def put(self, row: Mapping[str, Any]) -> bool:
        """See :meth:`BenchmarkStore.put`. After a retry, False may mean "stored by the unanswered try"."""
        return self._call("put", dict(row))

    def put_many(self, rows: Iterable[Mapping[str, Any]]) -> list[bool]:
        """See :meth:`BenchmarkStore.put_many`."""
        return self._call("put_many", [dict(r) for r in rows])

    def rows(
        self, *, space: str | None = None, dataset_id: str | None = None, run: str | None = None
    ) -> list[dict[str, Any]]:
        """See :meth:`BenchmarkStore.rows`."""
        return self._call("rows", space=space, dataset_id=dataset_id, run=run)

    def put_dataset(self, dataset_id: str, name: str, features: Mapping[str, float]) -> bool:
        """See :meth:`BenchmarkStore.put_dataset`."""
        return self._call("put_dataset", dataset_id, name, dict(features))

    def dataset(self, dataset_id: str) -> dict[str, Any] | None:
        """See :meth:`BenchmarkStore.dataset`."""
        return self._call("dataset", dataset_id)

    def datasets(self) -> list[dict[str, Any]]:
        """See :meth:`BenchmarkStore.datasets`."""
        return self._call("datasets")

    def count(self) -> int:
        """See :meth:`BenchmarkStore.count`."""
        return self._call("count")

    def stats(self) -> dict[str, int]:
        """See :meth:`BenchmarkStore.stats`."""
        return self._call("stats")

    def ping(self) -> bool:
        """True once the actor answers (retrying while it restarts)."""
        return self._call("ping")

    # -- pickling: ship the address, never a cached handle -------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_handle"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def __repr__(self) -> str:
        return f"StoreClient(root={self.root!r}, namespace={self.namespace!r}, name={self.name!r})"
