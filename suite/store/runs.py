"""The results store: the runs of one batch written together, in one atomic commit; resume by run id.

Layout (``pandas.read_parquet("<results_dir>/runs")`` reads every run as one table):

* ``runs/<name>.parquet``: the rows (``suite.types.ROW_SCHEMA``, one per evaluation point) of the
  runs of one batch, i.e. the runs a command trains together: a tuning batch (``tune.batch`` trials
  stacked, times ``tune.seeds``), a cell's final runs over its seeds, a group of extras. A batch of
  one run is ``<run_id>.parquet`` (the layout of stores written before batches, which resume
  unchanged); a larger one ``batch-<hash of its run ids>.parquet``, so a batch trained again after
  a kill takes the same name.
* ``traces/<name>.parquet``: the mini-batch loss traces of the same runs (``TRACE_SCHEMA``).

A batch is committed by renaming its rows file into place, after its trace file, with one
``fsync`` (of the rows file, before the rename) for the whole batch: a kill at any point leaves all
of the batch's runs stored or none of them (a trace file whose rows file was never committed is
ignored, and overwritten when the batch is trained again). Writes go through temporary dot-files
(``suite.store.files``). Which file holds which run is :class:`suite.store.index.RunIndex`'s
business: a resume pass reads each file's metadata once, so it costs per file, not per run.

A run stored again (its trace was damaged, so it counted as not stored and was trained again) is
removed from its old file after the new one is committed; should a kill fall in between, readers
take the newer file's rows. Every file read is checked against ``ROW_SCHEMA``.
"""
from __future__ import annotations

import hashlib
from time import perf_counter
from pathlib import Path
from typing import Callable, Iterable

import pandas as pd
import pyarrow as pa
import pyarrow.compute as compute
import pyarrow.parquet as pq

from suite.store.compact import COMPACT_AT, compact, settle_superseded, superseded
from suite.store.files import (TRACE_PARQUET, clean_stale_temporaries, damaged_error, read_trace, run_file_problem,
                               with_later_columns, write_atomic)
from suite.store.index import index_of
from suite.store.locks import HolderLock, worker_id
from suite.types import StoreError, command

Stored = tuple[pd.DataFrame, "pd.DataFrame | None"]  # a run's rows and its trace


_written = [0.0]  # seconds this process spent storing runs


def storage_seconds() -> float:
    """Seconds this process has spent storing runs (a study's time split, ``suite.train.timing``)."""
    return _written[0]


def batch_name(run_ids: Iterable[str]) -> str:
    """The file name of a batch: its run id alone, or ``batch-<hash of its run ids>``."""
    ids = sorted(set(run_ids))
    if len(ids) == 1:
        return f"{ids[0]}.parquet"
    return f"batch-{hashlib.sha256(','.join(ids).encode()).hexdigest()[:16]}.parquet"


class RunStore:
    """``<results_dir>/runs/`` and ``traces/``: the runs of each batch in one file each."""

    def __init__(self, results_dir: str | Path, compact_at: int = COMPACT_AT):
        if not str(results_dir).strip():
            raise StoreError("results_dir is empty; give the directory that holds the results, e.g. "
                             "results_dir=results/local.")
        self.root = Path(results_dir)
        self.runs = self.root / "runs"
        self.traces = self.root / "traces"  # each run's mini-batch loss trace, beside its rows
        self.index = index_of(self.runs, self.traces)  # shared by every store of this directory
        self.compact_at = compact_at  # batch files that trigger a merge into one part (suite.store.compact)

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
            self._settle()
        except OSError as e:
            raise StoreError(
                f"results_dir {self.root} is not writable ({e.strerror}). "
                f"Pass a directory you can write to: results_dir=<dir>."
            ) from None

    def _settle(self) -> None:
        """Finish what a killed merge or rewrite left (files whose every run a newer file holds)."""
        self.index.refresh()
        lock = HolderLock(self._compact_lock)
        if superseded(self.index) and lock.acquire(blocking=False):
            try:
                self.index.refresh()
                settle_superseded(self.index)
            finally:
                lock.release()

    @property
    def _compact_lock(self) -> Path:
        return self.root / "locks" / "compact.lock"

    def path(self, rid: str) -> Path:
        """The rows file that holds run ``rid`` (where its own file would be, when none does)."""
        name = self.index.locate(rid)
        return self.runs / (name or f"{rid}.parquet")

    def problem(self, path: Path) -> str | None:
        """Why the rows file ``path`` cannot be taken as runs (damaged, or not the suite's), or None."""
        return run_file_problem(path)

    def has(self, rid: str) -> bool:
        """True if the run is stored whole. A damaged rows file is an error, never overwritten (while
        one exists, a run found in no readable file might be in it); a damaged trace makes the runs of
        its file count as not stored, so the command trains them again and writes them anew (their
        rows are deterministic, so they come back as they were)."""
        name = self.index.locate(rid)
        if name is None:
            unknown = [(path, problem) for path, problem in self.index.damaged()]
            if unknown:
                raise damaged_error(self.runs, unknown)
            return False
        entry = self.index.files[name]
        if entry.problem:
            raise damaged_error(self.runs, [(self.runs / name, entry.problem)])
        return entry.trace_problem is None

    def stored(self, run_ids: Iterable[str]) -> list[bool]:
        """:meth:`has` for each run, after one look at the directory."""
        self.index.refresh()
        return [self.has(rid) for rid in run_ids]

    def survey(self, notice: Callable[[str], object]) -> None:
        """One pass over every stored file, before a command writes anything: all damaged rows files in
        one error; damaged traces named in one notice (their runs are trained again when the command
        reaches them, see :meth:`has`)."""
        self.index.refresh()
        damaged = self.index.damaged()
        if damaged:
            raise damaged_error(self.runs, damaged)
        traces = self.index.damaged_traces()
        if traces:
            notice(f"damaged trace file(s) under {self.traces}: {', '.join(p.name for p in traces)} (not readable "
                   f"parquet); {command()} trains their runs again when it reaches them, which rebuilds them.")

    def damaged_traces(self) -> list[Path]:
        self.index.refresh()
        return self.index.damaged_traces()

    def write(self, frame: pd.DataFrame, trace: pd.DataFrame | None = None) -> Path:
        """Store one run (a batch of one)."""
        return self.write_batch([(frame, trace)])

    def write_batch(self, runs: list[Stored]) -> Path:
        """Store the runs of one batch in one commit: traces first, then the rows, whose rename
        marks them all stored at once."""
        began = perf_counter()
        rids = [frame["run_id"].iloc[0] for frame, _ in runs]
        before = {rid: self.index.where.get(rid) for rid in rids}  # where has() found them (a damaged trace's)
        name = batch_name(rids)
        what = f"storing run {rids[0]}" if len(rids) == 1 else f"storing the {len(rids)} runs of batch {name}"
        traces = [trace for _, trace in runs if trace is not None]
        if traces:
            write_atomic(_concat(traces), self.traces / name, f"{what} (their traces)", options=TRACE_PARQUET)
        path = write_atomic(_concat([frame for frame, _ in runs]), self.runs / name, f"{what} in {self.runs}",
                            sync=True)
        for old in {old for old in before.values() if old not in (None, name)}:
            self._drop(old, set(rids))
        compact(self.index, self._compact_lock, self.compact_at)
        _written[0] += perf_counter() - began
        return path

    def _drop(self, name: str, rids: set[str]) -> None:
        """Remove ``rids`` (stored again elsewhere) from the file ``name``; the file goes when it empties."""
        rows_path, trace_path = self.runs / name, self.traces / name
        rows = pd.read_parquet(rows_path)
        kept = rows[~rows["run_id"].isin(rids)]
        if kept.empty:
            rows_path.unlink(missing_ok=True)
            trace_path.unlink(missing_ok=True)
            return
        trace = read_trace(trace_path) if trace_path.exists() else None
        if trace is not None:
            write_atomic(trace[~trace["run_id"].isin(rids)], trace_path, f"rewriting the traces of {name}",
                         options=TRACE_PARQUET)
        write_atomic(kept, rows_path, f"rewriting {name} without the runs stored again", sync=True)

    def load_traces(self, run_ids=None) -> pd.DataFrame:
        """The readable stored traces (of ``run_ids``, or all) as one table; empty when none is. A
        damaged trace is left out (:meth:`damaged_traces` names them)."""
        self.index.refresh()
        frames = []
        for name, wanted in sorted(self.index.holders(run_ids).items()):
            path = self.traces / name
            frame = read_trace(path) if path.exists() and not self.index.files[name].trace_problem else None
            if frame is not None:
                frames.append(frame[frame["run_id"].isin(wanted)])
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def read(self, rid: str) -> pd.DataFrame:
        """The stored rows of one run (checked)."""
        if not self.has(rid) and self.index.locate(rid) is None:
            raise StoreError(f"run {rid} is not stored under {self.runs}.")
        rows = pd.read_parquet(self.path(rid), filters=[("run_id", "==", rid)])
        return with_later_columns(rows)

    def load(self) -> pd.DataFrame:
        """All stored rows as one table (``config`` a category); every damaged or foreign file is named, all
        in one error."""
        self.index.refresh()
        if not self.index.files:
            raise StoreError(f"no runs stored under {self.runs}; train some first "
                             f"(suite-train results_dir={self.root}).")
        damaged = self.index.damaged()
        if damaged:
            raise damaged_error(self.runs, damaged)
        tables = []
        for name, wanted in sorted(self.index.holders().items()):
            # A run's config (JSON) repeats on each of its rows: read dictionary-encoded it comes out as a
            # pandas category, its text once per distinct config (a 100k-run store: 1.0 GiB less, 5x faster).
            table = pq.read_table(self.runs / name, read_dictionary=["config"])
            if len(wanted) < len(self.index.files[name].run_ids):  # some of its runs are stored again elsewhere
                table = table.filter(compute.is_in(table.column("run_id"), pa.array(sorted(wanted))))
            tables.append(table)
        rows = pa.concat_tables(tables, promote_options="permissive").to_pandas()
        return with_later_columns(rows)


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)


def export_rows(results_dir: str | Path, path: str | Path) -> int:
    """All stored rows of ``results_dir`` as one compressed parquet file (for publishing)."""
    rows = RunStore(results_dir).load()
    rows["config"] = rows["config"].astype("str")  # the published file keeps plain text configs
    rows.to_parquet(path, index=False, compression="zstd")
    return len(rows)
