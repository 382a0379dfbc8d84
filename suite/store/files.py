"""The store's files one at a time: atomic writes, schema checks, stale temporaries, one message for
every damaged file.

A file is written under a temporary dot-name (``.<name>.<host:pid>.tmp``) and renamed into place,
so a kill or a full disk mid-write never leaves a partial file that looks like a result (pyarrow
ignores dot-files when reading a directory); the temporary files of dead local processes are
removed at the next start.
"""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from suite.store.locks import alive, io_error, worker_id
from suite.types import LATER_COLUMNS, ROW_SCHEMA, StoreError, command

# pandas dtype in ROW_SCHEMA -> the Arrow types a stored column may have
ARROW_TYPES = {"str": ("string", "large_string", "null"), "int64": ("int64",), "float64": ("double",),
               "bool": ("bool",)}


def schema_problem(path: Path) -> str | None:
    """Why ``path`` is not a run file of this suite (missing or mistyped columns), or None."""
    schema = pq.read_metadata(path).schema.to_arrow_schema()
    types = dict(zip(schema.names, map(str, schema.types)))
    missing = [c for c in ROW_SCHEMA if c not in types and c not in LATER_COLUMNS]
    if missing:
        shown = ", ".join(missing[:6]) + (f" and {len(missing) - 6} more" if len(missing) > 6 else "")
        return f"it lacks the column(s) {shown}"
    wrong = [f"{c} is {types[c]}, not {d}" for c, d in ROW_SCHEMA.items() if c in types and types[c] not in ARROW_TYPES[d]]
    return f"column types differ ({'; '.join(wrong[:4])})" if wrong else None


def run_file_problem(path: Path) -> str | None:
    """Why the rows file ``path`` cannot be taken as runs (damaged, or not the suite's), or None."""
    try:
        problem = schema_problem(path)
    except Exception as e:  # pyarrow raises several types for damaged files
        return f"not a readable parquet file ({type(e).__name__})"
    return f"not a run file of this suite: {problem} (see suite.types.ROW_SCHEMA)" if problem else None


def trace_problem(path: Path) -> str | None:
    """Why the trace file ``path`` cannot be read, or None (also when there is none: runs stored
    before traces existed have none)."""
    if not path.exists():
        return None
    try:
        pq.read_metadata(path)
    except Exception as e:  # pyarrow raises several types for damaged files
        return type(e).__name__
    return None


def read_trace(path: Path) -> pd.DataFrame | None:
    try:
        return pd.read_parquet(path)
    except Exception:  # damaged: named by RunStore.damaged_traces, left out here
        return None


def with_later_columns(rows: pd.DataFrame) -> pd.DataFrame:
    """Rows of runs stored before a column existed get its ``LATER_COLUMNS`` value."""
    for col, value in LATER_COLUMNS.items():
        rows[col] = rows[col].fillna(value) if col in rows else value
    return rows


def clean_stale_temporaries(directory: Path) -> int:
    """Remove ``.*.<host:pid>.tmp`` files left by dead processes of this host (a kill or a full disk
    mid-write); files of live or remote processes are theirs."""
    removed = 0
    for tmp in directory.glob(".*.tmp") if directory.is_dir() else ():
        holder = tmp.name[:-len(".tmp")].split(".", 2)[-1]  # .<name>.<holder>.tmp
        if holder and not alive(holder if ":" in holder else f"{worker_id().rpartition(':')[0]}:{holder}"):
            tmp.unlink(missing_ok=True)
            removed += 1
    return removed


# Traces are three float columns of losses (nearly incompressible as they come) and step counts:
# split into byte streams and zstd-compressed they take 57% of the bytes and are written 8x faster
# than with the defaults, faster than their runs' rows.
TRACE_PARQUET = {"compression": "zstd", "use_byte_stream_split": ["mean", "min", "max"], "use_dictionary": ["run_id"]}


def write_atomic(frame: pd.DataFrame | pa.Table, final: Path, what: str, sync: bool = False,
                 options: dict | None = None) -> Path:
    """Write under a temporary dot-name and rename into place: readers see the old state or the
    whole file; a full disk or a kill leaves no partial file under the final name. ``sync``: the
    file reaches the disk before the rename (the commit of a batch: one ``fsync`` for all its runs).
    ``options``: pyarrow's parquet writer options (:data:`TRACE_PARQUET` for traces)."""
    tmp = final.parent / f".{final.stem}.{worker_id()}.tmp"
    try:
        final.parent.mkdir(parents=True, exist_ok=True)  # callers other than execute() skip ensure_writable
        if isinstance(frame, pa.Table):
            pq.write_table(frame, tmp, **(options or {}))
        else:
            frame.to_parquet(tmp, index=False, **(options or {}))
        if sync:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp, final)  # atomic on POSIX
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise io_error(e, what) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return final


def damaged_error(runs: Path, damaged: list[tuple[Path, str]]) -> StoreError:
    """One message for every damaged or foreign run file found, with the fix for the command the user ran."""
    one = len(damaged) == 1
    if command() == "suite-report":
        then = ("then run suite-report again: it reports the other runs (the suite-study or suite-train command "
                "that stored a run stores it again under the same id)")
    else:
        then = (f"then re-run {command()}: it trains {'that run' if one else 'those runs'} again under the same "
                f"id{'' if one else 's'} (a tuning trial with its parameters, checked against the value its study "
                f"holds; a batch's file holds all the runs of its batch, which are all trained again)")
    if one:
        (path, problem), = damaged
        return StoreError(f"{path} is {problem}. It was left untouched: move it out of {runs} (or delete it), {then}.")
    listed = "; ".join(f"{path.name}: {problem}" for path, problem in damaged)
    return StoreError(f"{len(damaged)} files under {runs} are not readable runs of this suite ({listed}). They were "
                      f"left untouched: move them out of {runs} (or delete them), {then}.")
