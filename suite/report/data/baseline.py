"""The baseline a comparison stands beside (``study.baseline`` in the results directory's
config.yaml, :mod:`suite.study.baseline`): its rows and tuner exports, restricted to the compared
tasks, read as if they were part of this store, so every table, figure and statistic shows the new
optimizers beside the published ones. The baseline is read where it was published, never copied.

What depends on the machine is not compared across machines: the baseline's clock readings
(``time_s``, hence its seconds to target and throughput) are left out (NaN), so timings are
shown for the new optimizers only; a note says so and where the baseline's own are.
"""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf

from suite.report.data.tuned import read_exports
from suite.store.published import opened


def _compared(root: Path) -> tuple[str | None, list[str]]:
    """The baseline the study in ``root`` names (None: none) and the tasks it compares."""
    path = root / "config.yaml"
    study = (OmegaConf.to_container(OmegaConf.load(path), resolve=True) if path.is_file() else {}).get("study") or {}
    return study.get("baseline"), list(study.get("tasks") or [])


def _task_of(export: dict) -> str | None:
    """The task of a tuner export (named in its cell's run identity)."""
    task = (export.get("cell_config") or {}).get("task")
    return task.get("name") if isinstance(task, dict) else task


def with_baseline(root: Path, rows: pd.DataFrame, exports: pd.DataFrame,
                  notes: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``rows`` and ``exports`` of ``root`` with the baseline's beside them (unchanged without one)."""
    source, tasks = _compared(root)
    if not source:
        return rows, exports
    with opened(source) as published:
        theirs = published.rows()
        their_exports = read_exports(published.root, notes)
        env = published.environment
    theirs = theirs[theirs["task"].isin(tasks) & ~theirs["run_id"].isin(rows["run_id"])].copy()
    theirs["time_s"] = math.nan  # measured on another machine
    their_exports = their_exports[[_task_of(data) in (*tasks, None) for data in their_exports["data"]]]
    optimizers = sorted(theirs["optimizer"].unique())
    notes.append(f"compared with the baseline `{source}` (suite {env.get('suite_version', '?')}, commit "
                 f"{env.get('git_commit', '?')}, results version {env.get('results_version', '?')}): its "
                 f"{theirs['run_id'].nunique()} runs of {', '.join(optimizers)} on {', '.join(tasks)} are read from "
                 f"there, never retrained. Steps, epochs, samples and metrics compare across machines; seconds and "
                 f"throughput are shown for this study's optimizers only (the baseline's were measured on "
                 f"{env.get('device_name', 'another machine')}: see its own report).")
    return pd.concat([rows, theirs], ignore_index=True), pd.concat([exports, their_exports], ignore_index=True)
