"""Who is working where: worker ids, locks that die with their holder, and I/O errors as one message.

A worker is ``host:pid``. A :class:`HolderLock` is an ``flock(2)`` on a file under the results
directory: the kernel releases it the moment its holder exits, however it exits (``kill -9``
included), so a lock is never left behind and a waiting process takes it over at once. The file
records its holder, so whoever waits can say for whom. (On a shared file system the lock needs
working POSIX locks, as NFSv4 and Lustre with ``-o flock`` provide.)
"""
from __future__ import annotations

import errno
import fcntl
import os
import socket
from pathlib import Path
from typing import Callable

from suite.types import StoreError


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def alive(worker: str) -> bool:
    """False only for a process of this host that no longer exists (others cannot be checked)."""
    host, _, pid = worker.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return True
    try:
        os.kill(int(pid), 0)  # signal 0: an existence check, nothing is sent
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


REASONS = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "the disk quota is exceeded",
           errno.EROFS: "the file system is read-only", errno.EACCES: "permission denied",
           errno.EPERM: "operation not permitted", errno.EIO: "an I/O error of the device",
           errno.EFBIG: "the file is too large for the file system"}


def io_error(e: OSError, doing: str) -> StoreError:
    """A failed write as one message: what failed, why, and that re-running loses nothing."""
    where = f" ({e.filename})" if e.filename else ""
    reason = REASONS.get(e.errno, e.strerror or type(e).__name__)
    return StoreError(
        f"{doing} failed: {reason}{where}. Nothing half-written is taken as a result: free space (or fix the "
        f"directory's permissions) and re-run the same command; finished runs are kept and the work in flight "
        f"is redone with the same parameters."
    )


class HolderLock:
    """An exclusive ``flock`` on ``path`` that records its holder (``host:pid``) in the file."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._fd: int | None = None

    def holder(self) -> str:
        """Who holds (or last held) the lock, as recorded in the file; '' if unknown."""
        try:
            return self.path.read_text().strip()
        except OSError:
            return ""

    def acquire(self, blocking: bool = True, on_wait: Callable[[str], object] | None = None) -> bool:
        """Take the lock; if another process holds it, call ``on_wait(holder)`` once and wait (or,
        with ``blocking=False``, return False at once)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if not blocking:
                    os.close(fd)
                    return False
                if on_wait is not None:
                    on_wait(self.holder() or "another process")
                fcntl.flock(fd, fcntl.LOCK_EX)
            try:  # informational only: a full disk must not stop the lock from working
                os.ftruncate(fd, 0)
                os.pwrite(fd, worker_id().encode(), 0)
            except OSError:
                pass
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return True

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.ftruncate(fd, 0)
        except OSError:
            pass
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def __enter__(self) -> HolderLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
