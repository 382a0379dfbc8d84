"""What a study writes beside its results: the resolved config (``config.yaml``) and the
environment (``environment.json``), including the study's wall time.

A study may take several invocations (a resume after an interrupt, or several processes sharing
the directory): each one appends ``{started, worker, git_commit, seconds}`` to ``invocations``
(``seconds`` stays null for one that was interrupted), and ``wall_seconds`` is the length of the
union of the finished invocations' intervals (concurrent processes are not counted twice; an
interrupted invocation's time is not known, and the report says how many there were). It is the
time of tuning, final and extra runs; the report written after it is not included.
"""
from __future__ import annotations

import json
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

import optuna
import pandas
from omegaconf import DictConfig, OmegaConf

from suite.store.locks import HolderLock, io_error, worker_id
from suite.train.device import resolve_device
from suite.train.rows import environment


def write_atomically(path: Path, text: str) -> None:
    """Readers (a report, another study on this directory) see the old file or the new one whole."""
    tmp = path.with_name(f".{path.name}.{worker_id()}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise io_error(e, f"writing {path}") from None


def _read_env(root: Path) -> dict:
    path = root / "environment.json"
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except ValueError:
        return {}  # a damaged file is rewritten whole


def write_context(cfg: DictConfig, started: str) -> None:
    """The resolved study config and the environment, with this invocation (started at ``started``,
    ISO UTC) added to the earlier ones."""
    root = Path(cfg.results_dir)
    root.mkdir(parents=True, exist_ok=True)
    write_atomically(root / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    env = {**environment(resolve_device(str(cfg.device))), "cpu_count": os.cpu_count(),
           "optuna_version": optuna.__version__, "pandas_version": pandas.__version__, "workers": cfg.study.workers}
    with HolderLock(root / "locks" / "environment.lock"):
        earlier = _read_env(root)
        invocations = [*_earlier_invocations(earlier),
                       {"started": started, "worker": worker_id(), "git_commit": env["git_commit"], "seconds": None}]
        env.update(invocations=invocations, wall_seconds=earlier.get("wall_seconds"))
        write_atomically(root / "environment.json", json.dumps(env, indent=2) + "\n")


def _earlier_invocations(env: dict) -> list[dict]:
    """The invocations recorded so far; a file that kept only a total becomes one invocation of
    unknown start (counted whole)."""
    if "invocations" in env:
        return list(env["invocations"])
    seconds = env.get("wall_seconds")
    return [{"started": None, "git_commit": env.get("git_commit"), "seconds": seconds}] if seconds else []


def record_wall_time(results_dir: str | Path, started: str, seconds: float) -> None:
    """This invocation's wall time, and the study's (the union of its finished invocations)."""
    root = Path(results_dir)
    with HolderLock(root / "locks" / "environment.lock"):
        env = _read_env(root)
        invocations = env.setdefault("invocations", [])
        mine = [i for i in invocations if i.get("started") == started and i.get("worker") == worker_id()]
        if mine:
            mine[0]["seconds"] = round(seconds, 1)
        else:
            invocations.append({"started": started, "worker": worker_id(), "seconds": round(seconds, 1)})
        env["wall_seconds"] = round(union_seconds(invocations), 1)
        write_atomically(root / "environment.json", json.dumps(env, indent=2) + "\n")


def union_seconds(invocations: list[dict]) -> float:
    """Seconds covered by the finished invocations' [started, started + seconds] intervals."""
    finished = [i for i in invocations if i.get("seconds") is not None]
    spans = sorted((start, start + timedelta(seconds=i["seconds"])) for i in finished if i.get("started")
                   for start in [datetime.fromisoformat(i["started"])])
    total = sum(float(i["seconds"]) for i in finished if not i.get("started"))  # start unknown: counted whole
    end = None
    for lo, hi in spans:
        if end is not None and lo < end:
            lo = end
        if hi > lo:
            total += (hi - lo).total_seconds()
        end = hi if end is None else max(end, hi)
    return total


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
