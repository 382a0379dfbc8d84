"""The results store: one parquet file per run, written atomically; resume by run id.

One run = one file ``<results_dir>/runs/<run_id>.parquet`` with one row per evaluation point
(``suite.types.ROW_SCHEMA``); ``pandas.read_parquet("<results_dir>/runs")`` reads them all as
one table. A file is written under a temporary dot-name and renamed into place, so a kill
mid-write never leaves a partial file that looks like a result (pyarrow ignores dot-files when
reading a directory).
"""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from suite.types import StoreError


class RunStore:
    """``<results_dir>/runs/``: one parquet file per run id."""

    def __init__(self, results_dir: str | Path):
        self.root = Path(results_dir)
        self.runs = self.root / "runs"
        self.traces = self.root / "traces"  # each run's mini-batch loss trace, beside its rows

    def ensure_writable(self) -> None:
        """Fail before any training if the directory cannot take results."""
        probe = self.runs / f".write-test-{os.getpid()}"
        try:
            self.runs.mkdir(parents=True, exist_ok=True)
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as e:
            raise StoreError(
                f"results_dir {self.root} is not writable ({e.strerror}). "
                f"Pass a directory you can write to: results_dir=<dir>."
            ) from None

    def path(self, rid: str) -> Path:
        return self.runs / f"{rid}.parquet"

    def _check(self, path: Path) -> None:
        try:
            pq.read_metadata(path)
        except Exception as e:  # pyarrow raises several types for damaged files
            raise StoreError(
                f"{path} is not a readable parquet file ({type(e).__name__}: {e}). It was left untouched: "
                f"move it away or delete it, then re-run to redo that run."
            ) from None

    def has(self, rid: str) -> bool:
        """True if the run is stored; a damaged file under its name is an error, never overwritten."""
        path = self.path(rid)
        if not path.exists():
            return False
        self._check(path)
        return True

    def write(self, frame: pd.DataFrame, trace: pd.DataFrame | None = None) -> Path:
        """Store a run's rows (and its trace first: the rows' file is what marks a run as stored)."""
        rid = frame["run_id"].iloc[0]
        if trace is not None:
            _write_atomic(trace, self.traces / f"{rid}.parquet")
        return _write_atomic(frame, self.path(rid))

    def load_traces(self, run_ids=None) -> pd.DataFrame:
        """The stored traces (of ``run_ids``, or all) as one table; empty when none is stored."""
        files = sorted(self.traces.glob("*.parquet")) if self.traces.is_dir() else []
        if run_ids is not None:
            wanted = set(run_ids)
            files = [f for f in files if f.stem in wanted]
        return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True) if files else pd.DataFrame()

    def load(self) -> pd.DataFrame:
        """All stored rows as one table; names every damaged file instead of crashing on one."""
        files = sorted(self.runs.glob("*.parquet")) if self.runs.is_dir() else []
        if not files:
            raise StoreError(f"no runs stored under {self.runs}; train some first (suite-train results_dir={self.root}).")
        for path in files:
            self._check(path)
        return pd.concat([pd.read_parquet(p) for p in files], ignore_index=True)


def _write_atomic(frame: pd.DataFrame, final: Path) -> Path:
    tmp = final.parent / f".{final.stem}.{os.getpid()}.tmp"
    final.parent.mkdir(parents=True, exist_ok=True)  # callers other than execute() skip ensure_writable
    frame.to_parquet(tmp, index=False)
    os.replace(tmp, final)  # atomic on POSIX: readers see the old state or the whole file
    return final


def export_rows(results_dir: str | Path, path: str | Path) -> int:
    """All stored rows of ``results_dir`` as one compressed parquet file (for publishing)."""
    rows = RunStore(results_dir).load()
    rows.to_parquet(path, index=False, compression="zstd")
    return len(rows)
