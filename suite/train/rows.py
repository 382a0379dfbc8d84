"""A finished run as stored rows (``suite.types.ROW_SCHEMA``): its curve plus the static columns
(configuration, regime, the machine and versions that ran it)."""
from __future__ import annotations

import functools
import json
import math
import platform
import socket
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

import pandas as pd
import torch

from suite.store.identity import run_id
from suite.types import HPARAM_COLUMNS, ROW_SCHEMA, TRACE_SCHEMA, RunResult, RunSpec, Task
from suite.cell import Cell

SUITE_VERSION = "0.1.0"
REPO = Path(__file__).resolve().parents[2]


@functools.lru_cache(maxsize=None)
def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty", "--abbrev=12"],
                             capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device: str) -> dict[str, Any]:
    """Machine and versions that every row carries (``suite.types.ENVIRONMENT_COLUMNS``)."""
    dev = torch.device(device)
    return {
        "device": dev.type,
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else _cpu_name(),
        "threads": torch.get_num_threads(), "hostname": socket.gethostname(),
        "torch_version": torch.__version__, "python_version": platform.python_version(),
        "suite_version": SUITE_VERSION, "git_commit": _git_commit(),
    }


def make_frame(spec: RunSpec, task: Task, config: Mapping[str, Any], result: RunResult,
               tags: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """The run's rows, with the columns and dtypes of ``ROW_SCHEMA``.

    ``tags`` (``study``, ``trial``) mark a tuning trial; every file carries both columns (null
    where a run is no trial) with fixed types, so ``pandas.read_parquet(runs/)`` reads a store
    that mixes trials and final runs as one table. Other tags become extra columns.
    """
    tags = dict(tags or {})
    static = {
        # the columns named after a RunSpec or RunResult field hold its value
        **{c: getattr(spec, c) for c in ROW_SCHEMA if hasattr(spec, c)},
        **{c: getattr(result, c) for c in ROW_SCHEMA if hasattr(result, c)},
        **{c: float(spec.hparams[c]) if c in spec.hparams else math.nan for c in HPARAM_COLUMNS},
        "run_id": run_id(config), "task": task.name, "model": task.model_name, "optimizer_impl": result.impl,
        "regime": Cell.of(spec, task.n_train).regime, "n_train": task.n_train,
        "optimal_loss": task.optimal_loss if task.optimal_loss is not None else math.nan,
        "diverged_step": result.steps if result.diverged else math.nan,
        "lr_schedule": spec.lr_schedule.describe(), **environment(spec.device),
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "study": tags.pop("study", None), "trial": tags.pop("trial", None),
        "config": json.dumps(config, sort_keys=True, default=str),
    }
    frame = _typed_columns(static, result.rows)
    for key, value in tags.items():
        frame.insert(len(frame.columns) - 1, key, value)  # extra tags before config, which closes every row
    return frame


def _typed_columns(static: Mapping[str, Any], rows: list[dict[str, Any]]) -> pd.DataFrame:
    """``ROW_SCHEMA``'s columns built one by one with their dtype (a row's value over the static
    one, NaN where neither has it): many times faster than typing a frame built from records, which
    matters when a batch of 64 short trials is stored."""
    n, row_keys = len(rows), set().union(*rows) if rows else set()
    columns = {}
    for col, dtype in ROW_SCHEMA.items():
        if col in row_keys:
            values = [row.get(col, static.get(col, math.nan)) for row in rows]
        else:
            values = [static.get(col, math.nan)] * n
        columns[col] = pd.array(values, dtype=_dtype(dtype))
    return pd.DataFrame(columns, copy=False)


@functools.lru_cache(maxsize=None)
def _dtype(name: str):
    """The pandas dtype named ``name``, looked up once (pandas searches its registry for every string)."""
    return pd.api.types.pandas_dtype(name)


def make_trace(run_id: str, result: RunResult) -> pd.DataFrame:
    """The run's mini-batch loss trace (``TRACE_SCHEMA``): one line per bin of steps."""
    bins = result.trace or {k: [] for k in TRACE_SCHEMA if k != "run_id"}
    n = len(bins["step_lo"])
    return pd.DataFrame({col: pd.array([run_id] * n if col == "run_id" else bins[col], dtype=_dtype(dtype))
                         for col, dtype in TRACE_SCHEMA.items()}, copy=False)
