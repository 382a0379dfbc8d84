"""One run against the store: skip it if stored (unless ``force``), else train, store, summarize."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

import pandas as pd
from omegaconf import DictConfig

from suite.run.prepare import prepare
from suite.store.runs import RunStore
from suite.train.rows import make_frame, make_trace
from suite.train.single import train
from suite.train.threads import use_threads
from suite.types import RunResult, RunSpec, Task


def execute(cfg: DictConfig, echo=print) -> pd.DataFrame | None:
    """Run one config against the store: skip it if stored (unless force), else train and store.

    Returns the stored rows, or ``None`` when the run was already stored and skipped.
    """
    prepared = prepare(cfg)
    use_threads(cfg.get("threads"), prepared.task, prepared.spec)
    store = RunStore(cfg.results_dir)
    store.ensure_writable()
    rid = prepared.run_id
    stored = store.has(rid)
    if stored and not cfg.force:
        echo(f"run {rid} is already stored at {store.path(rid)}; skipped (force=true re-runs it).")
        return None
    if not stored and store.path(rid).exists():
        echo(f"run {rid}: its trace {store.traces / f'{rid}.parquet'} is damaged; training the run again rebuilds it.")
    result = train(prepared.task, prepared.spec, progress=bool(cfg.progress))
    frame, path = store_run(store, prepared.spec, prepared.task, prepared.config, result)
    echo(summary(frame, path))
    return frame


def run_frames(spec: RunSpec, task: Task, config: Mapping[str, Any], result: RunResult,
               tags: Mapping[str, Any] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A finished run as the store keeps it: its rows and its trace (``RunStore.write_batch`` takes a list)."""
    frame = make_frame(spec, task, config, result, tags=tags)
    return frame, make_trace(frame["run_id"].iloc[0], result)


def store_run(store: RunStore, spec: RunSpec, task: Task, config: Mapping[str, Any], result: RunResult,
              tags: Mapping[str, Any] | None = None) -> tuple[pd.DataFrame, Path]:
    """Store one finished run (a batch of one): ``runs/<run_id>.parquet`` and its trace (``traces/``)."""
    frame, trace = run_frames(spec, task, config, result, tags)
    return frame, store.write(frame, trace)


def summary(frame: pd.DataFrame, path) -> str:
    """One screen: what ran, how fast, where it ended, where it is stored."""
    first, last = frame.iloc[0], frame.iloc[-1]
    timed_steps = max(last["step"] - first["warmup_steps"], 0)
    throughput = timed_steps * last["batch_size"] / last["time_s"] if last["time_s"] > 0 else math.nan
    lines = [
        f"run {last['run_id']}  task={last['task']} model={last['model']}",
        f"  optimizer={last['optimizer']} ({last['optimizer_impl']})  lr={last['lr']:.4g}  regime={last['regime']}  "
        f"batch={last['batch_size']}" + (f" ({last['micro_batch']}x{last['accumulation_steps']})"
                                          if last['accumulation_steps'] > 1 else "") +
        f"  sampling={last['sampling']}  seed={last['seed']}",
        f"  steps={last['step']}  epochs={last['epoch']:.3g}  train time={last['time_s']:.3f}s  "
        f"throughput={throughput:,.0f} samples/s  device={last['device']} threads={last['threads']}",
        f"  train loss {first['train_loss']:.5g} -> {last['train_loss']:.5g}   val loss {last['val_loss']:.5g}   "
        f"test loss {last['test_loss']:.5g}",
    ]
    if not math.isnan(last["val_accuracy"]):
        lines.append(f"  val accuracy {last['val_accuracy']:.4f}   test accuracy {last['test_accuracy']:.4f}")
    if not math.isnan(last["excess_loss"]):
        lines.append(f"  excess loss {last['excess_loss']:.3e} (optimum {last['optimal_loss']:.6g})")
    if last["diverged"]:
        lines.append(f"  DIVERGED at step {int(last['diverged_step'])}: the loss became NaN/inf or exceeded "
                     f"the divergence limit; try a smaller lr.")
    lines.append(f"  stored: {path}")
    return "\n".join(lines)
