"""Cells and their tuned configurations: the study name of a cell, ``tuned/<cell>.json``.

A cell is everything that shapes a run's curve except the searched hyperparameters and the
seed: task and its options, optimizer and its fixed hyperparameters, batch size, accumulation,
sampling, budget, evaluation schedule, divergence limit, dtype. Device, implementation, threads
and paths are left out: they change speed or location, not the experiment, so a study can be
shared by CPU and GPU workers. The name is readable (``regression-sgd-bfull-<hash>``) and the
hash covers the rest, so two cells never share a study and a cell always finds its own.

This module sits below ``run`` (``suite-train lr=tuned`` reads the export) and ``tune`` (which
writes it), and needs neither.
"""
from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

from suite.optimizers import resolve_hparams
from suite.types import ConfigError, RunSpec, StoreError

CELL_FIELDS = ("task", "optimizer", "batch_size", "accumulation_steps", "accumulation_reduction", "sampling",
               "epochs", "max_steps", "max_seconds", "divergence_factor", "dtype")
NOT_IDENTITY_TASK_OPTIONS = ("data_dir",)  # where the files are, not what they are
NOT_IDENTITY_EVAL = ("batch", "test")  # chunk size (memory only); the test split (never tuned on)


def cell_identity(spec: RunSpec, task_options: Mapping[str, Any], searched: Iterable[str] = ()) -> dict[str, Any]:
    """The cell's defining values (what the study name hashes)."""
    searched = sorted(searched)
    ident = {k: getattr(spec, k) for k in CELL_FIELDS}
    ident["eval"] = {k: v for k, v in dataclasses.asdict(spec.eval).items() if k not in NOT_IDENTITY_EVAL}
    ident["task_options"] = {k: v for k, v in task_options.items() if k not in NOT_IDENTITY_TASK_OPTIONS}
    ident["hparams"] = {k: v for k, v in spec.hparams.items() if k not in searched}
    ident["searched"] = searched
    return ident


def cell_name(spec: RunSpec, task_options: Mapping[str, Any], n_train: int, searched: Iterable[str] = ()) -> str:
    """``<task>-<optimizer>-b<batch|full>[-acc<k>]-<hash of the rest>``: stable across lr, seed, machine."""
    ident = cell_identity(spec, task_options, searched)
    digest = hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:10]
    batch = "full" if spec.batch_size >= n_train else str(spec.batch_size)
    acc = f"-acc{spec.accumulation_steps}" if spec.accumulation_steps > 1 else ""
    return f"{spec.task}-{spec.optimizer}-b{batch}{acc}-{digest}"


def tuned_path(results_dir: str | Path, name: str) -> Path:
    return Path(results_dir) / "tuned" / f"{name}.json"


def read_tuned(results_dir: str | Path, name: str) -> dict[str, Any] | None:
    """The exported best configuration of cell ``name``, or ``None`` if it has none yet."""
    path = tuned_path(results_dir, name)
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise StoreError(
            f"{path} is not a readable tuned configuration ({e}); delete it and re-run suite-tune.") from None


def write_tuned(results_dir: str | Path, name: str, payload: Mapping[str, Any]) -> Path:
    """Write atomically; a concurrent worker's export built from more finished trials is kept."""
    path = tuned_path(results_dir, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # serializes read-compare-write among local workers
        current = read_tuned(results_dir, name)
        if current is not None and current.get("n_finished", 0) > payload["n_finished"]:
            return path
        tmp = path.parent / f".{name}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")
        os.replace(tmp, path)  # readers see the old export or the whole new one
    return path


def apply_tuned(spec: RunSpec, task_options: Mapping[str, Any], n_train: int, searched: Iterable[str],
                results_dir: str | Path) -> RunSpec:
    """``lr=tuned``: the spec with the cell's tuned lr and searched hyperparameters."""
    name = cell_name(spec, task_options, n_train, searched)
    tuned = read_tuned(results_dir, name)
    if tuned is None:
        batch = "full" if spec.batch_size >= n_train else spec.batch_size
        raise ConfigError(
            f"lr=tuned: cell {name} has no tuned result under {tuned_path(results_dir, name).parent}. Tune it first "
            f"with the same overrides, e.g.: suite-tune task={spec.task} optimizer={spec.optimizer} "
            f"batch_size={batch} results_dir={results_dir} (plus any other overrides of this command)."
        )
    hparams = resolve_hparams(spec.optimizer, {**spec.hparams, **tuned["hparams"]})
    return dataclasses.replace(spec, lr=float(tuned["lr"]), hparams=hparams)
