"""The results store: row schema, run id, environment, atomic parquet files, resume.

One run = one file ``<results_dir>/runs/<run_id>.parquet`` with one row per evaluation point;
``pandas.read_parquet("<results_dir>/runs")`` reads them all as one table. A file is written
under a temporary dot-name and renamed into place, so a kill mid-write never leaves a partial
file that looks like a result (pyarrow ignores dot-files when reading a directory).
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import os
import platform
import socket
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

import pandas as pd
import pyarrow.parquet as pq
import torch

from suite.optimizers import HPARAM_COLUMNS, regime
from suite.types import RunResult, RunSpec, StoreError, Task

SUITE_VERSION = "0.1.0"
REPO = Path(__file__).resolve().parent.parent

# Columns every row carries, in this order (then ``study``, ``trial``, any other tags, ``config``).
COLUMNS = (
    "run_id", "task", "model", "optimizer", "optimizer_impl", "regime", "batch_size", "micro_batch",
    "accumulation_steps", "accumulation_reduction", "sampling", "lr", *HPARAM_COLUMNS, "seed",
    "n_train", "step", "epoch", "samples", "time_s", "train_loss", "minibatch_loss", "val_loss",
    "test_loss", "val_accuracy", "test_accuracy", "excess_loss", "optimal_loss", "diverged",
    "diverged_step", "pruned", "stack_size", "warmup_steps", "dtype", "device", "device_name", "threads",
    "hostname", "torch_version", "python_version", "suite_version", "git_commit", "created_at",
)


def run_config(spec: RunSpec, task_options: Mapping[str, Any]) -> dict[str, Any]:
    """Everything that determines a run's result: the identity that ``run_id`` hashes."""
    return {"task_options": dict(task_options), **dataclasses.asdict(spec)}


def run_id(config: Mapping[str, Any]) -> str:
    canonical = json.dumps(config, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


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
    """Machine and versions that every row carries."""
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
    """The run's rows: its curve plus the static columns (config, regime, environment)."""
    hp = {c: float(spec.hparams[c]) if c in spec.hparams else math.nan for c in HPARAM_COLUMNS}
    diverged_step = result.steps if result.diverged else math.nan
    static = {
        "run_id": run_id(config), "task": task.name, "model": task.model_name, "optimizer": spec.optimizer,
        "optimizer_impl": result.impl, "regime": regime(spec.batch_size, task.n_train),
        "batch_size": spec.batch_size, "micro_batch": spec.micro_batch,
        "accumulation_steps": spec.accumulation_steps, "accumulation_reduction": spec.accumulation_reduction,
        "sampling": spec.sampling, "lr": spec.lr, **hp, "seed": spec.seed, "n_train": task.n_train,
        "optimal_loss": task.optimal_loss if task.optimal_loss is not None else math.nan,
        "diverged": result.diverged, "diverged_step": diverged_step, "pruned": result.pruned,
        "stack_size": result.stack_size, "warmup_steps": spec.warmup_steps,
        "dtype": spec.dtype, **environment(spec.device),
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    frame = pd.DataFrame([{**static, **row} for row in result.rows], columns=list(COLUMNS))
    tags = dict(tags or {})
    # Every file carries the tuning tags with fixed types (null where a run is no trial), so a
    # store mixing trials and final runs reads as one table with pandas.read_parquet(runs/).
    frame["study"] = pd.Series([tags.pop("study", None)] * len(frame), dtype="string")
    frame["trial"] = pd.Series([tags.pop("trial", None)] * len(frame), dtype="float64")
    for key, value in tags.items():
        frame[key] = value
    frame["config"] = json.dumps(config, sort_keys=True, default=str)
    return frame


class RunStore:
    """``<results_dir>/runs/``: one parquet file per run id."""

    def __init__(self, results_dir: str | Path):
        self.root = Path(results_dir)
        self.runs = self.root / "runs"

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

    def write(self, frame: pd.DataFrame) -> Path:
        rid = frame["run_id"].iloc[0]
        final = self.path(rid)
        tmp = self.runs / f".{rid}.{os.getpid()}.tmp"
        self.runs.mkdir(parents=True, exist_ok=True)  # callers other than execute() skip ensure_writable
        frame.to_parquet(tmp, index=False)
        os.replace(tmp, final)  # atomic on POSIX: readers see the old state or the whole file
        return final

    def load(self) -> pd.DataFrame:
        """All stored rows as one table; names every damaged file instead of crashing on one."""
        files = sorted(self.runs.glob("*.parquet")) if self.runs.is_dir() else []
        if not files:
            raise StoreError(f"no runs stored under {self.runs}; train some first (suite-train results_dir={self.root}).")
        for path in files:
            self._check(path)
        return pd.concat([pd.read_parquet(p) for p in files], ignore_index=True)


def export_rows(results_dir: str | Path, path: str | Path) -> int:
    """All stored rows of ``results_dir`` as one compressed parquet file (for publishing)."""
    rows = RunStore(results_dir).load()
    rows.to_parquet(path, index=False, compression="zstd")
    return len(rows)
