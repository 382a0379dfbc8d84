"""The results store: one parquet file per run, written atomically; resume by run id.

One run = one file ``<results_dir>/runs/<run_id>.parquet`` with one row per evaluation point
(``suite.types.ROW_SCHEMA``); ``pandas.read_parquet("<results_dir>/runs")`` reads them all as
one table. A file is written under a temporary dot-name (``.<run_id>.<host:pid>.tmp``) and
renamed into place, so a kill or a full disk mid-write never leaves a partial file that looks like
a result (pyarrow ignores dot-files when reading a directory); the temporary files of dead local
processes are removed at the next start. Every file read is checked against ``ROW_SCHEMA``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import pandas as pd
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


class RunStore:
    """``<results_dir>/runs/``: one parquet file per run id."""

    def __init__(self, results_dir: str | Path):
        if not str(results_dir).strip():
            raise StoreError("results_dir is empty; give the directory that holds the results, e.g. "
                             "results_dir=results/local.")
        self.root = Path(results_dir)
        self.runs = self.root / "runs"
        self.traces = self.root / "traces"  # each run's mini-batch loss trace, beside its rows

    def ensure_writable(self) -> None:
        """Fail before any training if the directory cannot take results; clean stale temporaries."""
        probe = self.runs / f".write-test.{worker_id()}.tmp"
        try:
            self.runs.mkdir(parents=True, exist_ok=True)
            clean_stale_temporaries(self.runs)
            if self.traces.is_dir():
                clean_stale_temporaries(self.traces)
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as e:
            raise StoreError(
                f"results_dir {self.root} is not writable ({e.strerror}). "
                f"Pass a directory you can write to: results_dir=<dir>."
            ) from None

    def path(self, rid: str) -> Path:
        return self.runs / f"{rid}.parquet"

    def problem(self, path: Path) -> str | None:
        """Why the run file ``path`` cannot be taken as a run (damaged, or not the suite's), or None."""
        try:
            problem = schema_problem(path)
        except Exception as e:  # pyarrow raises several types for damaged files
            return f"not a readable parquet file ({type(e).__name__})"
        return f"not a run file of this suite: {problem} (see suite.types.ROW_SCHEMA)" if problem else None

    def _check(self, path: Path) -> None:
        problem = self.problem(path)
        if problem:
            raise damaged_error(self.runs, [(path, problem)])

    def has(self, rid: str) -> bool:
        """True if the run is stored whole. A damaged run file is an error, never overwritten; a
        damaged trace makes the run count as not stored, so the command trains it again and writes
        both files anew (its rows are deterministic, so they come back as they were)."""
        path = self.path(rid)
        if not path.exists():
            return False
        self._check(path)
        return trace_problem(self.traces / path.name) is None

    def survey(self, notice: Callable[[str], object]) -> None:
        """One pass over every stored file, before a command writes anything: all damaged run files in
        one error; damaged traces named in one notice (their runs are trained again when the command
        reaches them, see :meth:`has`)."""
        files = sorted(self.runs.glob("*.parquet")) if self.runs.is_dir() else []
        damaged = [(path, problem) for path in files if (problem := self.problem(path))]
        if damaged:
            raise damaged_error(self.runs, damaged)
        traces = self.damaged_traces()
        if traces:
            notice(f"damaged trace file(s) under {self.traces}: {', '.join(p.name for p in traces)} (not readable "
                   f"parquet); {command()} trains their runs again when it reaches them, which rebuilds them.")

    def damaged_traces(self) -> list[Path]:
        files = sorted(self.traces.glob("*.parquet")) if self.traces.is_dir() else []
        return [path for path in files if trace_problem(path)]

    def write(self, frame: pd.DataFrame, trace: pd.DataFrame | None = None) -> Path:
        """Store a run's rows (and its trace first: the rows' file is what marks a run as stored)."""
        rid = frame["run_id"].iloc[0]
        if trace is not None:
            _write_atomic(trace, self.traces / f"{rid}.parquet", f"storing the trace of run {rid}")
        return _write_atomic(frame, self.path(rid), f"storing run {rid} in {self.runs}")

    def load_traces(self, run_ids=None) -> pd.DataFrame:
        """The readable stored traces (of ``run_ids``, or all) as one table; empty when none is. A
        damaged trace is left out (:meth:`damaged_traces` names them)."""
        files = sorted(self.traces.glob("*.parquet")) if self.traces.is_dir() else []
        if run_ids is not None:
            wanted = set(run_ids)
            files = [f for f in files if f.stem in wanted]
        frames = [frame for frame in map(_read_trace, files) if frame is not None]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def read(self, rid: str) -> pd.DataFrame:
        """The stored rows of one run (checked)."""
        path = self.path(rid)
        self._check(path)
        return _with_later_columns(pd.read_parquet(path))

    def load(self) -> pd.DataFrame:
        """All stored rows as one table; every damaged or foreign file is named, all in one error."""
        files = sorted(self.runs.glob("*.parquet")) if self.runs.is_dir() else []
        if not files:
            raise StoreError(f"no runs stored under {self.runs}; train some first (suite-train results_dir={self.root}).")
        damaged = [(path, problem) for path in files if (problem := self.problem(path))]
        if damaged:
            raise damaged_error(self.runs, damaged)
        return _with_later_columns(pd.concat([pd.read_parquet(p) for p in files], ignore_index=True))


def _with_later_columns(rows: pd.DataFrame) -> pd.DataFrame:
    """Rows of runs stored before a column existed get its ``LATER_COLUMNS`` value."""
    for col, value in LATER_COLUMNS.items():
        rows[col] = rows[col].fillna(value) if col in rows else value
    return rows


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


def _read_trace(path: Path) -> pd.DataFrame | None:
    try:
        return pd.read_parquet(path)
    except Exception:  # damaged: named by RunStore.damaged_traces, left out here
        return None


def damaged_error(runs: Path, damaged: list[tuple[Path, str]]) -> StoreError:
    """One message for every damaged or foreign run file found, with the fix for the command the user ran."""
    one = len(damaged) == 1
    if command() == "suite-report":
        then = ("then run suite-report again: it reports the other runs (the suite-study or suite-train command "
                "that stored a run stores it again under the same id)")
    else:
        then = (f"then re-run {command()}: it trains {'that run' if one else 'those runs'} again under the same "
                f"id{'' if one else 's'} (a tuning trial with its parameters, checked against the value its study "
                f"holds)")
    if one:
        (path, problem), = damaged
        return StoreError(f"{path} is {problem}. It was left untouched: move it out of {runs} (or delete it), {then}.")
    listed = "; ".join(f"{path.name}: {problem}" for path, problem in damaged)
    return StoreError(f"{len(damaged)} files under {runs} are not readable runs of this suite ({listed}). They were "
                      f"left untouched: move them out of {runs} (or delete them), {then}.")


def _write_atomic(frame: pd.DataFrame, final: Path, what: str) -> Path:
    """Write under a temporary dot-name and rename into place: readers see the old state or the
    whole file; a full disk or a kill leaves no partial file under the final name."""
    tmp = final.parent / f".{final.stem}.{worker_id()}.tmp"
    try:
        final.parent.mkdir(parents=True, exist_ok=True)  # callers other than execute() skip ensure_writable
        frame.to_parquet(tmp, index=False)
        os.replace(tmp, final)  # atomic on POSIX
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise io_error(e, what) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return final


def export_rows(results_dir: str | Path, path: str | Path) -> int:
    """All stored rows of ``results_dir`` as one compressed parquet file (for publishing)."""
    rows = RunStore(results_dir).load()
    rows.to_parquet(path, index=False, compression="zstd")
    return len(rows)
