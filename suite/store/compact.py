"""The periodic merge: once ``COMPACT_AT`` batch files have gathered under ``runs/``, they are merged
into one part file (``runs/part-<hash>.parquet``, its traces in ``traces/part-<hash>.parquet``), so
a store of 100,000 runs is a few hundred files, not tens of thousands: a resume pass and
``pandas.read_parquet(<results_dir>/runs)`` open few files.

The merge keeps the store's guarantees. It runs under ``locks/compact.lock`` (one process at a time;
another that finds it held skips the merge), writes the part's traces, then commits the part's
rows by a rename (one ``fsync``), and only then deletes the merged files. A run then briefly in two
files is read from the newer one, the part (``suite.store.index``); a kill before the deletions
end leaves files whose every run a newer file holds, which the next writer deletes
(:func:`settle_superseded`). Files that are damaged, or whose trace is, are never merged.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from suite.store.files import TRACE_PARQUET, write_atomic
from suite.store.index import RunIndex
from suite.store.locks import HolderLock

COMPACT_AT = 256  # batch files that trigger a merge into one part
MAX_MERGE = 4 * COMPACT_AT  # files merged at once at most (a store of one file per run is merged over several writes)
PART = "part-"


def _batch_files(runs: Path) -> int:
    """How many batch files (not parts) ``runs/`` lists: a directory listing, no file opened."""
    if not runs.is_dir():
        return 0
    with os.scandir(runs) as entries:
        return sum(1 for e in entries if e.name.endswith(".parquet") and not e.name.startswith((".", PART)))


def mergeable(index: RunIndex) -> list[str]:
    """The readable batch files (not parts) with readable (or no) traces."""
    return sorted(name for name, entry in index.files.items()
                  if not name.startswith(PART) and not entry.problem and not entry.trace_problem)


def superseded(index: RunIndex) -> list[str]:
    """The rows files whose every run a newer file holds: what a merge or a rewrite killed before
    its deletions leaves."""
    return [name for name, entry in index.files.items()
            if entry.run_ids and not entry.problem and all(index.where.get(rid) not in (None, name)
                                                           for rid in entry.run_ids)]


def settle_superseded(index: RunIndex) -> int:
    """Delete the :func:`superseded` files and their traces (call under the merge's lock); how many."""
    done = superseded(index)
    for name in done:
        (index.runs / name).unlink(missing_ok=True)
        (index.traces / name).unlink(missing_ok=True)
    if done:
        index.refresh()
    return len(done)


def _read_all(paths: list[Path]) -> pa.Table:
    tables = [pq.read_table(path) for path in paths]
    return pa.concat_tables(tables, promote_options="permissive").replace_schema_metadata(None)


def compact(index: RunIndex, lock_path: Path, at: int = COMPACT_AT) -> int:
    """Merge the batch files into one part once there are ``at`` of them; returns how many were
    merged (0: not due, or another process is merging)."""
    if _batch_files(index.runs) < at:
        return 0
    lock = HolderLock(lock_path)
    if not lock.acquire(blocking=False):
        return 0
    try:
        index.refresh()
        settle_superseded(index)
        names = mergeable(index)[:MAX_MERGE]
        if len(names) < at:
            return 0
        part = f"{PART}{hashlib.sha256(','.join(names).encode()).hexdigest()[:16]}.parquet"
        traces = [index.traces / name for name in names if (index.traces / name).exists()]
        if traces:
            write_atomic(_read_all(traces), index.traces / part, f"merging {len(traces)} trace files",
                         options=TRACE_PARQUET)
        write_atomic(_read_all([index.runs / name for name in names]), index.runs / part,
                     f"merging {len(names)} run files into {part}", sync=True)
        index.refresh()
        settle_superseded(index)
        return len(names)
    finally:
        lock.release()
