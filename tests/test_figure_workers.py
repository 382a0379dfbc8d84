"""The report's figure workers (suite.report.figures.render): started only on cores that sit idle,
and a figure a worker writes is the figure the report's own process would have written."""
from __future__ import annotations

import multiprocessing
import os
import struct
import sys
import time

import pytest

from suite.report.figures import style
from suite.report.figures.render import Renderer, figure_workers, free_cores
from suite.types import usable_cores

LINUX = sys.platform.startswith("linux")


def _spin(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def test_the_idle_cores_are_a_share_of_the_usable_ones():
    free = free_cores()
    assert 0 <= free <= usable_cores() + 1e-9


@pytest.mark.skipif(not LINUX, reason="idle cores are read from Linux's /proc/stat")
def test_no_workers_while_every_core_is_busy():
    context = multiprocessing.get_context("fork")
    spinners = [context.Process(target=_spin, args=(3.0,), daemon=True) for _ in range(usable_cores())]
    for spinner in spinners:
        spinner.start()
    try:
        time.sleep(0.2)  # every spinner running
        assert figure_workers() == 0
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.join()


def _figure():
    fig, (ax, other) = style.grid(2)
    ax.plot([1, 10, 100], [3.0, 1.0, 0.5], marker="o", label="sgd")
    other.bar(["1", "32"], [4.0, 9.0])
    ax.set(xscale="log", yscale="log", title="batch 1")
    style.legend(fig, *style.handles(["sgd", "adam"], style.palette(["sgd", "adam"])))
    return fig


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="workers are forked")
def test_a_figure_written_by_a_worker_is_the_file_written_here(tmp_path):
    opts = style.FigureOptions()
    here = style.save(_figure(), tmp_path / "here" / "fig", opts)
    (tmp_path / "worker").mkdir()
    with Renderer(workers=2) as renderer:
        fig = _figure()
        assert renderer.submit(fig, tmp_path / "worker" / "fig", opts.formats, opts.dpi)  # pickled, handed over
        style.plt.close(fig)
    there = tmp_path / "worker" / "fig.png"
    # The same figure, not always the same bytes: now and then a pool worker's tight box comes out a
    # few pixels off the calling process's (4 px in 3 of 10 pools tried; a plain fork: never).
    assert _size(there) == pytest.approx(_size(here), rel=0.01) and os.path.getsize(there) > 1000


def _size(png) -> tuple[int, int]:
    width, height = struct.unpack(">II", png.read_bytes()[16:24])  # the IHDR chunk
    return width, height
