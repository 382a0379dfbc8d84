"""pytest-benchmark JSON -> a tidy table -> the throughput table (Markdown, CSV) and a figure.

``suite-report`` calls these for ``<results_dir>/bench/*.json`` (written by ``make bench``):

    df = load_benchmarks("results/bench")   # one row per benchmark per file
    table = throughput_table(df)             # the training- and optimizer-step benchmarks
    throughput_figure(df, "throughput.png")  # samples/s against batch size

The benchmarks in ``tests/benchmarks/test_steps.py`` put the cell (``kind``, task, optimizer,
implementation, batch size, accumulation) and the measured bytes into ``extra_info``; those
keys become columns here. Other benchmarks in the files (e.g. the stacked-training ratios) load
as rows too, with their own ``extra_info`` columns, and are left out of the throughput table.
This module reads files and draws; it never imports torch itself.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from suite.types import StoreError

STATS = ("min", "max", "mean", "median", "stddev", "iqr")  # seconds per call in pytest-benchmark's JSON
STEP_KINDS = ("train-step", "accumulation", "opt-step")
TABLE_COLUMNS = (
    "kind", "task", "model", "optimizer", "impl", "batch_size", "accumulation_steps", "micro_batch",
    "median_ms", "iqr_ms", "samples_per_s", "speedup_vs_forloop", "peak_mib", "state_bytes_per_param",
    "n_params", "rounds", "iterations", "device", "threads",
)
INT_COLUMNS = ("batch_size", "accumulation_steps", "micro_batch", "n_params", "rounds", "iterations", "threads")
MIB = 2.0 ** 20


def load_benchmarks(path_or_dir: str | Path) -> pd.DataFrame:
    """Every benchmark in a pytest-benchmark JSON file (or in every ``*.json`` of a directory).

    Columns: ``file``, ``datetime``, ``name``, ``fullname``, ``group``, ``params`` (JSON text),
    the run's machine and commit (``node``, ``cpu``, ``python``, ``commit``, ``dirty``), the
    timing statistics in seconds per call (``min_s`` ... ``iqr_s``, ``rounds``, ``iterations``)
    and one column per ``extra_info`` key (lists and dicts as JSON text).
    """
    path = Path(path_or_dir)
    files = sorted(path.glob("*.json")) if path.is_dir() else [path]
    if not path.exists() or not files:
        raise StoreError(f"no pytest-benchmark JSON at {path}: run `make bench` (it writes results/bench/*.json) "
                         f"or pytest tests/benchmarks --benchmark-only --benchmark-json=<file>.")
    return pd.concat([_load_file(f) for f in files], ignore_index=True)


def _read(file: Path) -> dict:
    try:
        data = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise StoreError(f"{file} is not a readable JSON file ({type(e).__name__}: {e}); "
                         f"delete it or re-run `make bench` to write it again.") from None
    if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list):
        raise StoreError(f"{file} is not pytest-benchmark output (no 'benchmarks' list); such files come "
                         f"from pytest --benchmark-json=<file> (make bench writes them to results/bench/).")
    return data


def _scalar(value):
    return json.dumps(value, sort_keys=True) if isinstance(value, (list, dict)) else value


def _load_file(file: Path) -> pd.DataFrame:
    data = _read(file)
    machine, commit = data.get("machine_info") or {}, data.get("commit_info") or {}
    run = {"file": file.name, "datetime": data.get("datetime"), "node": machine.get("node"),
           "cpu": (machine.get("cpu") or {}).get("brand_raw"), "python": machine.get("python_version"),
           "commit": commit.get("id"), "dirty": commit.get("dirty")}
    rows = []
    for bench in data["benchmarks"]:
        stats = bench.get("stats") or {}
        rows.append({
            **run, "name": bench.get("name"), "fullname": bench.get("fullname"), "group": bench.get("group"),
            "params": json.dumps(bench.get("params"), sort_keys=True),
            **{f"{k}_s": stats.get(k, math.nan) for k in STATS},
            "rounds": stats.get("rounds"), "iterations": stats.get("iterations"),
            **{k: _scalar(v) for k, v in (bench.get("extra_info") or {}).items()},
        })
    return pd.DataFrame(rows, columns=None if rows else ["file", "name", "group"])


def _latest(df: pd.DataFrame) -> pd.DataFrame:
    """The newest result of each benchmark per machine and device (files may repeat a run)."""
    keys = [c for c in ("fullname", "node", "device") if c in df]
    return df.sort_values("datetime", kind="stable").drop_duplicates(keys, keep="last")


def throughput_table(df: pd.DataFrame) -> pd.DataFrame:
    """One line per training-step or optimizer-step benchmark: time, throughput, memory.

    ``median_ms``/``iqr_ms``: milliseconds per step (one update; with accumulation, all its
    micro-batches). ``samples_per_s`` = batch size / median. ``speedup_vs_forloop``: the
    for-loop implementation's median over this one's, same model and optimizer (opt-step
    rows). ``peak_mib``: the step's peak memory above what lives between steps.
    """
    if "kind" not in df:
        raise StoreError("these benchmark results hold no training- or optimizer-step benchmarks (no 'kind' "
                         "in extra_info); run tests/benchmarks/test_steps.py (make bench).")
    d = _latest(df[df["kind"].isin(STEP_KINDS)]).copy()
    for col in TABLE_COLUMNS:
        if col not in d:
            d[col] = math.nan
    d["median_ms"], d["iqr_ms"] = 1e3 * d["median_s"], 1e3 * d["iqr_s"]
    d["peak_mib"] = pd.to_numeric(d.get("peak_bytes"), errors="coerce") / MIB
    d["speedup_vs_forloop"] = _speedup(d)
    for col in INT_COLUMNS:  # integers, with <NA> where a column does not apply (opt-step batch size)
        d[col] = pd.to_numeric(d[col], errors="coerce").astype("Int64")
    order = ["kind", "task", "model", "optimizer", "impl", "batch_size", "accumulation_steps", "micro_batch"]
    return d.sort_values(order, kind="stable", na_position="first")[list(TABLE_COLUMNS)].reset_index(drop=True)


def _speedup(d: pd.DataFrame) -> pd.Series:
    opt = d[d["kind"] == "opt-step"]
    base = opt[opt["impl"] == "forloop"].set_index(["model", "optimizer", "device"])["median_s"]
    keys = pd.MultiIndex.from_frame(opt[["model", "optimizer", "device"]])
    ratio = pd.Series(base.reindex(keys).to_numpy() / opt["median_s"].to_numpy(), index=opt.index)
    return ratio.reindex(d.index)


def table_markdown(table: pd.DataFrame) -> str:
    """A Markdown table with numbers to 3 significant digits; missing values as an em dash."""
    def cell(v) -> str:
        if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
            return "—"
        if isinstance(v, float):
            return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.3g}"
        return str(v).replace("|", "\\|")

    keep = [c for c in table.columns if not table[c].isna().all()]
    lines = ["| " + " | ".join(keep) + " |", "|" + "|".join("---" for _ in keep) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table[keep].itertuples(index=False)]
    return "\n".join(lines) + "\n"


def throughput_figure(df: pd.DataFrame, path: str | Path) -> Path:
    """Training samples/s against batch size (log-log), one panel per task, one line per optimizer."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt
    import seaborn as sns

    d = _latest(df[df["kind"] == "train-step"]) if "kind" in df else df.iloc[:0]
    if d.empty:
        raise StoreError("no train-step benchmarks to plot; run tests/benchmarks/test_steps.py (make bench).")
    d = d.assign(batch_size=pd.to_numeric(d["batch_size"]), samples_per_s=pd.to_numeric(d["samples_per_s"]))
    grid = sns.relplot(data=d.sort_values("batch_size"), x="batch_size", y="samples_per_s", hue="optimizer",
                       col="task", kind="line", marker="o", facet_kws={"sharex": False, "sharey": False},
                       height=3.2, aspect=1.1)
    grid.set(xscale="log", yscale="log")
    grid.set_axis_labels("batch size", "training samples / s")
    grid.set_titles("{col_name}")
    grid.figure.subplots_adjust(wspace=0.35)  # per-panel y scales: room for each panel's tick labels
    device, threads = d["device"].iloc[0], d["threads"].iloc[0]
    grid.figure.suptitle(f"Training-step throughput (device={device}, threads={threads}; median of rounds)", y=1.03)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(grid.figure)
    return path


def write_throughput(df: pd.DataFrame, folder: str | Path) -> dict[str, Path]:
    """``throughput.md``, ``throughput.csv`` and ``throughput.png`` in ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    table = throughput_table(df)
    paths = {"md": folder / "throughput.md", "csv": folder / "throughput.csv", "png": folder / "throughput.png"}
    paths["md"].write_text(table_markdown(table))
    table.to_csv(paths["csv"], index=False)
    throughput_figure(df, paths["png"])
    return paths


def main(argv: list[str] | None = None) -> int:
    """``python -m suite.report.benchmarks <json file or dir> <out dir>``: write the throughput table and figure."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m suite.report.benchmarks <pytest-benchmark json file or dir> <out dir>", file=sys.stderr)
        return 2
    try:
        paths = write_throughput(load_benchmarks(args[0]), args[1])
    except StoreError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print("\n".join(f"wrote {p}" for p in paths.values()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
