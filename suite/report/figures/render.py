"""Figures written by worker processes while the report goes on computing.

Laying a figure out and writing its files (``tight_layout`` and one ``savefig`` per format, each of
which draws the figure twice for ``bbox_inches="tight"``) is most of a report's time. A figure
function draws its artists as before and calls :func:`suite.report.figures.style.save`; with a
:class:`Renderer` in its options, ``save`` pickles the figure (matplotlib figures pickle without
their canvas), hands it to a worker process and returns the path at once; the worker unpickles it,
finishes and writes it exactly as ``save`` would have (the same code: :func:`write_figure`).
``suite-report`` waits for every figure before it swaps the report into place, so a failed figure
fails the report as before. A figure that does not pickle is written in the calling process.

Workers are forked (spawned where the platform has no fork) when the renderer starts, before the
report reads any rows, so each is a small process: one per usable core that sat idle as the renderer
started (:func:`free_cores`, sampled for ``SAMPLE_S``), and none (every figure written in the
calling process) where fewer than two were idle. Workers pay for a fork, a pickle per figure and a
core; on a busy machine (other studies, the test suite's other workers) they would only fight the
report for the cores it has: there the quick report took the same wall time without them and 4 s
less CPU (15 vs 19 s), while on an idle 2-core machine the published report is faster with them
(PNG and PDF of every figure). A worker dies with the report that started it (:func:`die_with`):
it holds copies of that process's file locks.
"""
from __future__ import annotations

import ctypes
import multiprocessing
import os
import pickle
import signal
import sys
import time
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path

from suite.report.figures.style import plt, write_figure
from suite.types import usable_cores


SAMPLE_S = 0.05  # how long the idle cores are measured (5 clock ticks of /proc/stat)


def _core_ticks(cores: set[int]) -> dict[int, tuple[int, int]]:
    """(idle, total) clock ticks so far of each core in ``cores`` (Linux's /proc/stat)."""
    ticks = {}
    with open("/proc/stat") as stat:
        for line in stat:
            name, *fields = line.split()
            if name[:3] == "cpu" and name[3:].isdigit() and int(name[3:]) in cores:
                user, nice, system, idle, iowait, *rest = (int(v) for v in fields[:8])
                ticks[int(name[3:])] = (idle + iowait, user + nice + system + idle + iowait + sum(rest))
    return ticks


def free_cores(sample_s: float = SAMPLE_S) -> float:
    """How many of this process's usable cores sat idle over ``sample_s`` (this process sleeps
    meanwhile, so its own core counts as idle when nothing else takes it); all of them where
    /proc/stat cannot be read."""
    try:
        cores = set(os.sched_getaffinity(0))
        before = _core_ticks(cores)
        time.sleep(sample_s)
        after = _core_ticks(cores)
    except (AttributeError, OSError, ValueError):  # no affinity (not Linux), no or odd /proc/stat
        return float(usable_cores())
    shares = [(after[c][0] - before[c][0]) / (after[c][1] - before[c][1])
              for c in after if c in before and after[c][1] > before[c][1]]
    return sum(shares) if shares else float(usable_cores())


def figure_workers() -> int:
    """One worker per idle usable core, none where fewer than two are idle (see the module)."""
    idle = round(free_cores())
    return idle if idle > 1 else 0


def _render(pickled: bytes, stem: Path, formats: tuple[str, ...], dpi: int) -> None:
    """In a worker: the figure back from its pickle, written in every format, closed."""
    fig = pickle.loads(pickled)
    try:
        write_figure(fig, stem, formats, dpi)
    finally:
        plt.close(fig)


def _ready() -> int:
    return os.getpid()


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with(parent: int) -> None:
    """A worker's first act: die with the report that started it. A forked worker holds copies of
    every descriptor its parent had open, the report's and the study's file locks among them; if it
    outlived a report killed with ``kill -9`` it would hold those locks, and the next command would
    wait for them forever."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the report died before the line above took effect
        os._exit(1)


class Renderer:
    """A pool of worker processes writing figures; :meth:`wait` returns once every figure is written
    (raising the first failure). Use as a context manager: leaving it waits, or on an error cancels
    what has not started."""

    def __init__(self, workers: int | None = None):
        self.workers = figure_workers() if workers is None else workers
        self._pool: ProcessPoolExecutor | None = None
        self._pending: list[tuple[Path, Future]] = []
        if self.workers > 1:
            methods = multiprocessing.get_all_start_methods()
            context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
            self._pool = ProcessPoolExecutor(self.workers, mp_context=context, initializer=die_with,
                                             initargs=(os.getpid(),))
            self._pool.submit(_ready).result()  # start the workers now, while this process is small

    def submit(self, fig, stem: Path, formats: tuple[str, ...], dpi: int) -> bool:
        """Hand ``fig`` to a worker; False (nothing done) without workers or when it does not pickle."""
        if self._pool is None:
            return False
        try:
            pickled = pickle.dumps(fig, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:  # an artist that does not pickle: the caller writes the figure itself
            return False
        self._pending.append((stem, self._pool.submit(_render, pickled, stem, formats, dpi)))
        return True

    def wait(self) -> None:
        """Block until every figure handed over is written; raise the first failure."""
        pending, self._pending = self._pending, []
        for _, future in pending:
            future.result()

    def close(self, cancel: bool = False) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=cancel)
            self._pool = None

    def __enter__(self) -> "Renderer":
        return self

    def __exit__(self, kind, error, trace) -> None:
        try:
            if kind is None:
                self.wait()
        finally:
            self.close(cancel=kind is not None)
