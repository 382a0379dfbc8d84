"""The store at scale: a synthetic results directory of N runs (no training), then the three things
that read all of it, timed each in a fresh process with its peak memory:

* ``resume``: what a study does before it trains anything: :meth:`RunStore.survey` (every stored
  file checked), then :meth:`RunStore.has` for every run id (each cell's final runs and trials are
  skipped this way);
* ``read_parquet``: ``pandas.read_parquet(<dir>/runs)``, the documented way to read the rows;
* ``report``: ``suite-report <dir>`` as it is on this branch.

The rows are real ones: the runs of a stored store (default ``results/standard/rows.parquet``, the
published standard study: 5.6k runs of 114 cells), copied as often as N needs, each copy with new run
ids and its final runs' seeds and its trials' numbers moved out of the others' way (so a copy adds
seeds and trials to every cell, as a larger study would). Each run gets a trace of up to
``--trace-bins`` bins. Runs are written the way the suite writes them (``RunStore.write_batch``, in
batches of ``--batch`` runs, merged every ``COMPACT_AT`` files), or with ``--layout files`` one file
per run and no merge (the layout before batches), for comparison. The tuned exports and the study's
``config.yaml``/``environment.json`` are copied beside, so the report finds what it reads.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from suite.store.compact import COMPACT_AT, PART
from suite.store.files import with_later_columns
from suite.store.runs import RunStore
from suite.types import ROW_SCHEMA, TRACE_SCHEMA

TEMPLATE = Path("results/standard")


def template_runs(source: Path) -> pd.DataFrame:
    """The stored rows of ``source`` (a results directory or a rows parquet file), typed as now."""
    rows = pd.read_parquet(source / "rows.parquet" if (source / "rows.parquet").exists() else source / "runs")
    rows = with_later_columns(rows)
    extra = [c for c in rows.columns if c not in ROW_SCHEMA]
    return rows[[*[c for c in ROW_SCHEMA if c != "config"], *extra, "config"]].astype(ROW_SCHEMA)


def _copy(rows: pd.DataFrame, k: int) -> pd.DataFrame:
    """Copy ``k`` of the template's rows (or traces): new run ids; in rows, final runs' seeds and
    trials' numbers moved by 1000·k."""
    if k == 0:
        return rows
    ids = {rid: hashlib.sha256(f"{rid}/{k}".encode()).hexdigest()[:16] for rid in rows["run_id"].unique()}
    rows = rows.assign(run_id=rows["run_id"].map(ids).astype(rows["run_id"].dtype))
    if "trial" not in rows:
        return rows
    trial = rows["trial"].notna()
    return rows.assign(seed=rows["seed"].where(trial, rows["seed"] + 1000 * k), trial=rows["trial"] + 1000 * k)


def _bounds(run_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start and end rows of each run in ``run_ids`` (rows grouped by run, in order)."""
    starts = np.flatnonzero(np.r_[True, run_ids[1:] != run_ids[:-1]])
    return starts, np.r_[starts[1:], len(run_ids)]


def _traces(rows: pd.DataFrame, bins: int) -> pd.DataFrame:
    """Traces shaped like the loop's: ``min(steps, bins)`` log-spaced bins over each run's steps, the
    losses interpolated from its evaluations (``rows`` grouped by run, sorted by step)."""
    rid, step, loss = rows["run_id"].to_numpy(), rows["step"].to_numpy(), rows["train_loss"].to_numpy()
    columns = {k: [] for k in TRACE_SCHEMA}
    for a, b in zip(*_bounds(rid)):
        steps = max(int(step[b - 1]), 1)
        edges = (np.arange(steps + 1) if steps <= bins else
                 np.unique(np.round(np.geomspace(1, steps + 1, bins + 1)).astype(int) - 1))
        mean = np.interp(edges[1:], step[a:b], loss[a:b])
        for key, value in (("run_id", np.full(len(mean), rid[a], dtype=object)), ("step_lo", edges[:-1] + 1),
                           ("step_hi", edges[1:]), ("count", np.diff(edges)), ("mean", mean),
                           ("min", mean * 0.9), ("max", mean * 1.1)):
            columns[key].append(value)
    return pd.DataFrame({k: np.concatenate(v) for k, v in columns.items()}).astype(TRACE_SCHEMA)


def _runs_of(frame: pd.DataFrame) -> list[pa.Table]:
    """``frame`` (grouped by run, in order) as one Arrow table per run (zero-copy slices)."""
    table = pa.Table.from_pandas(frame, preserve_index=False)
    return [table.slice(a, b - a) for a, b in zip(*_bounds(frame["run_id"].to_numpy()))]


def _write_part(store: RunStore, runs: list[tuple[pa.Table, pa.Table]]) -> None:
    """What a merge writes for these runs (``suite.store.compact``): one part, its traces beside."""
    name = f"{PART}{hashlib.sha256(runs[0][0]['run_id'][0].as_py().encode()).hexdigest()[:16]}.parquet"
    for folder, k in ((store.traces, 1), (store.runs, 0)):
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.concat_tables([run[k] for run in runs]).replace_schema_metadata(None), folder / name)


def _write_batch(store: RunStore, runs: list[tuple[pa.Table, pa.Table]]) -> None:
    store.write_batch([(rows.to_pandas(), trace.to_pandas()) for rows, trace in runs])


def generate(out: Path, n_runs: int, source: Path, layout: str, batch: int, trace_bins: int) -> int:
    """Write ``n_runs`` runs under ``out``; returns how many files ``runs/`` holds. The template's runs
    are taken in a fixed random order (a prefix of them samples every cell). ``batches``: the layout
    the suite leaves (parts of ``COMPACT_AT`` merged batches, written here directly as a merge writes
    them, then the batch files written since the last merge); ``files``: one file per run."""
    template = template_runs(source)
    order = np.random.default_rng(0).permutation(template["run_id"].unique())
    rank = pd.Series(np.arange(len(order)), index=order)
    template = template.assign(_rank=template["run_id"].map(rank)).sort_values(["_rank", "step"]).drop(columns="_rank")
    traces = _traces(template, trace_bins)
    store = RunStore(out, compact_at=COMPACT_AT if layout == "batches" else 1 << 60)
    runs = []
    for k in range(-(-n_runs // len(order))):
        runs += zip(_runs_of(_copy(template, k)), _runs_of(_copy(traces, k)))
    runs = runs[:n_runs]
    real_fsync, os.fsync = os.fsync, lambda fd: None  # synthetic rows need not reach the disk
    try:
        if layout == "files":
            for run in runs:
                _write_batch(store, [run])
        else:
            per_part = COMPACT_AT * batch
            merged = len(runs) // per_part * per_part
            for i in range(0, merged, per_part):
                _write_part(store, runs[i:i + per_part])
            for i in range(merged, len(runs), batch):
                _write_batch(store, runs[i:i + batch])
    finally:
        os.fsync = real_fsync
    for name in ("config.yaml", "environment.json"):
        if (source / name).exists():
            shutil.copy(source / name, out / name)
    if (source / "tuned").is_dir():
        shutil.copytree(source / "tuned", out / "tuned", dirs_exist_ok=True)
    return len(list(store.runs.glob("*.parquet")))


RESUME = """
import sys, time
from suite.store.runs import RunStore
import pyarrow.parquet as pq, pyarrow.compute as compute
began = time.perf_counter()
store = RunStore(sys.argv[1])
store.survey(print)
ids = set()
for name in store.index.files:
    ids.update(store.index.files[name].run_ids)
surveyed = time.perf_counter() - began
assert all(store.has(rid) for rid in ids)
print(len(ids), surveyed, time.perf_counter() - began)
"""
READ = """
import sys, pandas as pd
rows = pd.read_parquet(sys.argv[1] + "/runs")
print(len(rows), rows["run_id"].nunique())
"""


# Runs a command and prints its peak memory: a small parent, so the peak is the command's own (a child
# forked from the benchmark would start with the benchmark's memory).
PEAK = ("import resource, subprocess, sys; done = subprocess.run(sys.argv[1:]); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); sys.exit(done.returncode)")


def timed(command: list[str], timeout: float | None = None) -> dict:
    """Wall seconds and peak resident memory (GiB) of ``command`` in a fresh process (stopped, with
    its children, after ``timeout`` seconds)."""
    began = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-c", PEAK, *command], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, start_new_session=True)
    try:
        out, err = child.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        child.communicate()
        return {"seconds": None, "timed_out_after_s": timeout}
    wall = time.perf_counter() - began
    lines = err.strip().splitlines()
    peak = lines.pop() if lines and lines[-1].isdigit() else None
    return {"seconds": round(wall, 2), "peak_gib": round(int(peak) / 2**20, 2) if peak else None,
            "exit": child.returncode, "said": (out.strip().splitlines() or [""])[-1][:200],
            "error": lines[-1:] if child.returncode else []}


def measure(out: Path, report: bool, report_timeout: float | None) -> dict:
    python = sys.executable
    result = {"resume": timed([python, "-c", RESUME, str(out)]), "read_parquet": timed([python, "-c", READ, str(out)])}
    if report:
        result["report"] = timed([str(Path(python).with_name("suite-report")), str(out)], report_timeout)
    return result


def main(argv: list[str] | None = None) -> int:
    """``scripts/bench_store.py``: generate a store of N runs and time resume, read_parquet and report."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=100_000, help="runs in the synthetic store")
    p.add_argument("--dir", default="results/bench_store", help="where the store is written (emptied first)")
    p.add_argument("--source", default=str(TEMPLATE), help="a results directory whose rows are the template")
    p.add_argument("--layout", choices=("batches", "files"), default="batches",
                   help="batches: as the suite writes (batch files merged into parts); files: one file per run")
    p.add_argument("--batch", type=int, default=4, help="runs per batch (the full preset stacks 4 trials)")
    p.add_argument("--trace-bins", type=int, default=128, help="bins of each run's trace (the loop keeps up to 512)")
    p.add_argument("--no-report", action="store_true", help="skip timing suite-report")
    p.add_argument("--report-timeout", type=float, default=None, help="stop suite-report after this many seconds")
    p.add_argument("--keep", action="store_true", help="time the store already in --dir, generate nothing")
    args = p.parse_args(argv)
    out, source = Path(args.dir), Path(args.source)
    if not args.keep and not (source / "rows.parquet").exists() and not (source / "runs").is_dir():
        print(f"error: --source {source} holds no rows.parquet or runs/; pass a results directory "
              f"(e.g. --source results/standard after make reproduce, or any study's results_dir).", file=sys.stderr)
        return 2
    info = {"runs": args.runs, "layout": args.layout, "batch": args.batch}
    if not args.keep:
        shutil.rmtree(out, ignore_errors=True)
        began = time.perf_counter()
        info["files"] = generate(out, args.runs, source, args.layout, args.batch, args.trace_bins)
        info["generate_seconds"] = round(time.perf_counter() - began, 1)
    info.update(measure(out, not args.no_report, args.report_timeout))
    print(json.dumps(info, indent=1))
    return 0
