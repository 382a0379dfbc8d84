"""The embedded Optuna journal: its lock, and a torn tail cut under that lock.

Optuna's journal file is an append-only log of JSON records, one a line. A process killed
mid-append, or a write stopped by a full disk, leaves a torn last line; the next append would land
on it and make the file unreadable from there on. So every append here takes :class:`JournalLock`
(the ``lock_obj`` Optuna's ``JournalFileBackend`` holds around each append), and whoever takes it
first checks the tail: a last line that is not a whole record is cut off before anything is
appended. Because every writer takes the same lock, the cut never touches a live append of another
process. The lock is an ``flock`` that records its holder and dies with it (``suite.store.locks``),
so a ``kill -9`` mid-append never leaves a lock file that stalls the next run (Optuna's own
symlink lock waits 30 s for that). A damaged record *inside* the file cannot be cut without losing
what follows: :func:`open_journal` names its file and line.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from suite.store.locks import HolderLock
from suite.types import StoreError

CHUNK = 1 << 16
TRIAL_ID = re.compile(rb'"trial_id":\s*(\d+)')


@dataclass(frozen=True)
class Cut:
    """A torn or foreign last record cut off the journal."""

    path: Path
    line: int  # 1-based line number it started on
    nbytes: int
    trial_id: int | None  # Optuna's trial id the record was about, where it can be read


def _is_record(line: bytes) -> bool:
    try:
        record = json.loads(line)
    except ValueError:
        return False
    return isinstance(record, dict) and "op_code" in record


def _line_start(f, end: int) -> int:
    """Offset where the line ending at ``end`` starts (its own newline at ``end - 1`` excluded)."""
    hi = end - 1
    while hi > 0:
        lo = max(0, hi - CHUNK)
        f.seek(lo)
        i = f.read(hi - lo).rfind(b"\n")
        if i >= 0:
            return lo + i + 1
        hi = lo
    return 0


def cut_torn_tail(path: Path) -> list[Cut]:
    """Cut last lines that are not whole records (call under the journal's lock)."""
    with open(path, "r+b") as f:
        end = f.seek(0, os.SEEK_END)
        torn = []
        while end > 0:
            start = _line_start(f, end)
            f.seek(start)
            line = f.read(end - start)
            if line.endswith(b"\n") and _is_record(line):
                break
            torn.append((start, line))
            end = start
        if not torn:
            return []
        f.truncate(end)
        f.flush()
        os.fsync(f.fileno())
        f.seek(0)
        first_line = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(CHUNK), b"")) + 1
    cuts = []
    for i, (start, line) in enumerate(reversed(torn)):
        found = TRIAL_ID.search(line)
        cuts.append(Cut(path, first_line + i, len(line), int(found.group(1)) if found else None))
    return cuts


class JournalLock:
    """Optuna's journal lock as an ``flock`` on ``<journal>.flock``; taking it cuts a torn tail.
    (``JournalFileBackend(lock_obj=...)`` needs only ``acquire`` and ``release``, the interface of
    Optuna's ``JournalFileOpenLock`` and ``JournalFileSymlinkLock``.)"""

    def __init__(self, journal: Path):
        self.journal = journal
        self.lock = HolderLock(journal.with_name(journal.name + ".flock"))
        self.cuts: list[Cut] = []  # what this process cut, for the tuner to report and settle

    def acquire(self) -> bool:
        self.lock.acquire()
        try:
            self.cuts += cut_torn_tail(self.journal)
        except BaseException:
            self.lock.release()
            raise
        return True

    def release(self) -> None:
        self.lock.release()


class UnsyncedFileBackend(JournalFileBackend):
    """Optuna's file backend without its ``fsync`` after every append (1,600 of them for the reports
    of a 64-trial batch): an append reaches the kernel before the lock is released, which is all a
    ``kill -9`` or another process needs; :meth:`Journal.sync` puts the file on the disk once per
    batch, after its trials are told."""

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        what = "\n".join(json.dumps(log, separators=(",", ":")) for log in logs) + "\n"
        self._lock.acquire()
        try:
            with open(self._file_path, "ab") as f:
                f.write(what.encode("utf-8"))
        finally:
            self._lock.release()


class Journal(JournalStorage):
    """A JournalStorage on a file whose lock reports the torn records it cut."""

    def __init__(self, path: Path):
        self.path = path
        self.lock = JournalLock(path)
        backend = UnsyncedFileBackend(str(path), lock_obj=self.lock)
        self.lock.acquire()  # settle a torn tail before the log is replayed
        self.lock.release()
        super().__init__(backend)

    def sync(self) -> None:
        """Put every append so far on the disk (one ``fsync``)."""
        fd = os.open(self.path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def take_cuts(self) -> list[Cut]:
        cuts, self.lock.cuts = self.lock.cuts, []
        return cuts


def damaged_line(path: Path) -> tuple[int, str] | None:
    """The first line of ``path`` that is not a whole JSON record, with what is wrong with it."""
    with open(path, "rb") as f:
        for number, line in enumerate(f, start=1):
            if not line.endswith(b"\n"):
                return number, "a record cut off mid-write"
            if not _is_record(line):
                return number, f"not a journal record ({line[:40].decode(errors='replace').strip()!r}...)"
    return None


def open_journal(path: Path) -> Journal:
    """The journal at ``path``; a damaged record inside it is an error that names the file and line."""
    try:
        return Journal(path)
    except (ValueError, KeyError, TypeError) as e:  # what Optuna's replay raises on a bad record
        found = damaged_line(path)
        if found is None:
            what, keep = f"a record cannot be replayed ({type(e).__name__}: {e})", ""
        else:
            what = f"line {found[0]} is {found[1]}, and records follow it, so it was not cut"
            keep = (f"keep the records before it (head -n {found[0] - 1} {path} > {path}.fixed && mv {path}.fixed "
                    f"{path}; trials whose records are lost are redone, from their stored runs where they exist), or ")
        raise StoreError(
            f"the Optuna journal {path} is damaged: {what}. The stored runs are kept. To go on, {keep}move the file "
            f"away to tune this cell afresh (trials drawn again are matched to their stored runs)."
        ) from None
