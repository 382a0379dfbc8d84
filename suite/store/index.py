"""Which rows file holds which run: the store's index, kept in memory and brought up to date from the
directory listing (a file is read once, and again only when its size, time or inode change).

A rows file named ``<run_id>.parquet`` holds that one run (its name says so, so it is not opened to
learn it); any other name (``batch-<hash>.parquet``) holds the runs its ``run_id`` column lists. Each
file's schema and its trace (``traces/<same name>``) are checked once per version of the file. Where
a run is in two files (a rerun of a run whose trace was damaged, killed before the old file was
rewritten without it), the newer file holds it.
"""
from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path

import pyarrow.parquet as pq

from suite.store.files import run_file_problem, trace_problem

RUN_ID = re.compile(r"^[0-9a-f]{16}$")
Key = tuple[int, int, int]  # (mtime_ns, size, inode): a file's version


def _key(path: Path) -> Key | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino


@dataclasses.dataclass
class Entry:
    """One rows file as last read: its version, the runs it holds, what is wrong with it or its trace."""

    key: Key
    run_ids: tuple[str, ...]
    problem: str | None
    trace_key: Key | None
    trace_problem: str | None


def _run_ids(path: Path) -> tuple[str, ...]:
    if RUN_ID.match(path.stem):
        return (path.stem,)
    column = pq.read_table(path, columns=["run_id"]).column("run_id")
    return tuple(dict.fromkeys(column.to_pylist()))


class RunIndex:
    """``runs/*.parquet`` -> the runs each holds, and run id -> the file that holds it."""

    def __init__(self, runs: Path, traces: Path):
        self.runs, self.traces = runs, traces
        self.files: dict[str, Entry] = {}
        self.where: dict[str, str] = {}

    def _read(self, name: str, key: Key) -> Entry:
        path, trace = self.runs / name, self.traces / name
        problem = run_file_problem(path)
        try:
            run_ids = _run_ids(path) if problem is None else ((path.stem,) if RUN_ID.match(path.stem) else ())
        except Exception as e:  # pyarrow raises several types for damaged files
            run_ids, problem = (), f"not a readable parquet file ({type(e).__name__})"
        trace_key = _key(trace)
        return Entry(key, run_ids, problem, trace_key, trace_problem(trace) if trace_key else None)

    def refresh(self) -> None:
        """Bring the index up to date with the directory (new, changed and removed files)."""
        listed = {}
        if self.runs.is_dir():
            with os.scandir(self.runs) as entries:
                for e in entries:
                    if e.name.endswith(".parquet") and not e.name.startswith(".") and e.is_file():
                        st = e.stat()
                        listed[e.name] = (st.st_mtime_ns, st.st_size, st.st_ino)
        changed = set(self.files) - set(listed)
        for name in changed:
            del self.files[name]
        for name, key in listed.items():
            entry = self.files.get(name)
            if entry is None or entry.key != key or entry.trace_key != _key(self.traces / name):
                self.files[name] = self._read(name, key)
                changed.add(name)
        if changed:
            self._rebuild()

    def _rebuild(self) -> None:
        self.where = {}
        for name, entry in sorted(self.files.items(), key=lambda item: item[1].key[0]):  # newer files win
            for rid in entry.run_ids:
                self.where[rid] = name

    def _current(self, name: str) -> bool:
        entry = self.files.get(name)
        return (entry is not None and _key(self.runs / name) == entry.key
                and _key(self.traces / name) == entry.trace_key)

    def locate(self, rid: str) -> str | None:
        """The name of the rows file that holds ``rid`` now, or None."""
        name = self.where.get(rid)
        if name is not None and self._current(name):
            return name
        self.refresh()
        return self.where.get(rid)

    def damaged(self) -> list[tuple[Path, str]]:
        return [(self.runs / name, e.problem) for name, e in sorted(self.files.items()) if e.problem]

    def damaged_traces(self) -> list[Path]:
        return [self.traces / name for name, e in sorted(self.files.items()) if e.trace_problem]

    def holders(self, run_ids=None) -> dict[str, set[str]]:
        """File name -> the wanted runs (all, or of ``run_ids``) that it holds now."""
        out: dict[str, set[str]] = {}
        for rid in self.where if run_ids is None else run_ids:
            name = self.where.get(rid)
            if name is not None:
                out.setdefault(name, set()).add(rid)
        return out


_SHARED: dict[tuple[str, str], RunIndex] = {}


def index_of(runs: Path, traces: Path) -> RunIndex:
    """The one index of ``runs`` in this process: every store of a results directory shares it, so a
    file is read once per process, not once per store (a study opens a store per cell and per job).
    Sharing is safe because each entry is checked against its file's version before it is trusted."""
    key = os.path.abspath(runs), os.path.abspath(traces)
    if key not in _SHARED:
        _SHARED[key] = RunIndex(runs, traces)
    return _SHARED[key]
