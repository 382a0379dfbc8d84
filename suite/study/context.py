"""What a study writes beside its results: the resolved config (``config.yaml``) and the
environment (``environment.json``), including the study's wall time.

A study may take several invocations (a resume after an interrupt, or several processes sharing
the directory): each one appends ``{started, worker, git_commit, seconds}`` to ``invocations``
(``seconds`` stays null for one that was interrupted), and ``wall_seconds`` is the length of the
union of the finished invocations' intervals (concurrent processes are not counted twice; an
interrupted invocation's time is not known, and the report says how many there were). It is the
time of tuning, final and extra runs; the report written after it is not included, but an
invocation's seconds are recorded only once its report is written, so one killed at any point (the
report included) stays interrupted. Each invocation also records where its time went
(``time_split``, :mod:`suite.study.time_split`), and the study's is their sum.

A study's protocol is fixed once it has run (:data:`PROTOCOL`): a command that would change the
recorded one is refused before anything is written, unless it says ``study.change_protocol=true``;
then the invocation records each change and its command line, and the report states them.
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
from suite.study.time_split import study_split
from suite.train.device import resolve_device
from suite.train.rows import environment
from suite.types import RESULTS_VERSION, ConfigError, StoreError, command_line

# What a study's config.yaml fixes once it has run. The protocol (what a number in its tables means)
# changes only with study.change_protocol=true; the tuner's sampler settings never do (each cell's
# Optuna study keeps them, and continuing it with others is refused: a new sampler is a new study).
PROTOCOL = ("study.protocol", "study.parts", "study.targets", "study.budgets", "study.eval_points", "study.eval",
            "study.lr_schedule", "study.tune_seeds")
SAMPLER = ("tune.sampler", "tune.seed", "tune.options")


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


ABSENT = object()  # a setting the config does not have


def _leaves(node, prefix: str) -> dict[str, object]:
    """``{dotted.key: value}`` for every leaf under ``node`` (a mapping; other values are leaves)."""
    if not isinstance(node, dict) or not node:
        return {prefix: node}
    return {k: v for key, value in node.items() for k, v in _leaves(value, f"{prefix}.{key}").items()}


def setting(config: dict, dotted: str):
    """The value at a dotted key of a plain config, or :data:`ABSENT` where it has none."""
    node = config
    for key in dotted.split("."):
        if not isinstance(node, dict) or key not in node:
            return ABSENT
        node = node[key]
    return node


def _changed(recorded: dict, given: dict, keys: tuple[str, ...]) -> list[str]:
    """``key: old -> new`` for each leaf of ``keys`` that differs (keys the record lacks are not compared:
    it was written by a version without them)."""
    out = []
    for key in keys:
        old, new = setting(recorded, key), setting(given, key)
        if old is ABSENT:
            continue
        before, after = _leaves(old, key), _leaves(None if new is ABSENT else new, key)
        out += [f"{k}: {before.get(k)} -> {after.get(k)}" for k in sorted(set(before) | set(after))
                if before.get(k) != after.get(k)]
    return out


def protocol_changes(cfg: DictConfig) -> list[str]:
    """The changes this command makes to the protocol recorded in ``<results_dir>/config.yaml`` (none
    for a new study). Refused (nothing is written) unless ``study.change_protocol=true``; a change of
    the tuner's sampler settings always."""
    path = Path(cfg.results_dir) / "config.yaml"
    if not path.is_file():
        return []
    try:
        recorded = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    except Exception as e:  # YAML or interpolation errors: the record cannot be compared
        raise StoreError(f"{path} (the study's recorded config) cannot be read ({type(e).__name__}: "
                         f"{str(e).splitlines()[0]}); restore it, or move it away to record this command's "
                         f"config as the study's.") from None
    given = OmegaConf.to_container(cfg, resolve=True)
    where = f"the study recorded in {path}"
    sampler = _changed(recorded, given, SAMPLER)
    if sampler:
        raise ConfigError(f"this command would change the tuner's sampler settings of {where} ({'; '.join(sampler)}); "
                          f"each cell's Optuna study keeps them. Use the recorded values, or another "
                          f"results_dir=<dir> for a new study.")
    changes = _changed(recorded, given, PROTOCOL)
    if changes and not cfg.study.get("change_protocol", False):
        raise ConfigError(f"this command would change the protocol of {where} ({'; '.join(changes)}); a study's "
                          f"protocol is fixed before it runs. Use another results_dir=<dir> for a new study, or add "
                          f"study.change_protocol=true to change it on purpose (recorded, and stated in the report).")
    return changes


def write_context(cfg: DictConfig, started: str, changes: list[str] = ()) -> None:
    """The resolved study config and the environment, with this invocation (started at ``started``,
    ISO UTC; its command line and the protocol ``changes`` it made, where any) added to the earlier
    ones."""
    root = Path(cfg.results_dir)
    root.mkdir(parents=True, exist_ok=True)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    resolved["study"].pop("change_protocol", None)  # this invocation's permission, recorded below
    resolved["study"].pop("estimate", None)  # a cost estimate writes nothing
    write_atomically(root / "config.yaml", OmegaConf.to_yaml(resolved))
    env = {**environment(resolve_device(str(cfg.device))), "cpu_count": os.cpu_count(),
           "optuna_version": optuna.__version__, "pandas_version": pandas.__version__, "workers": cfg.study.workers,
           "results_version": RESULTS_VERSION}
    with HolderLock(root / "locks" / "environment.lock"):
        earlier = _read_env(root)
        mine = {"started": started, "worker": worker_id(), "git_commit": env["git_commit"], "seconds": None,
                "command": command_line(), **({"changed": list(changes)} if changes else {})}
        invocations = [*_earlier_invocations(earlier), mine]
        env.update(invocations=invocations, wall_seconds=earlier.get("wall_seconds"))
        write_atomically(root / "environment.json", json.dumps(env, indent=2) + "\n")


def _earlier_invocations(env: dict) -> list[dict]:
    """The invocations recorded so far; a file that kept only a total becomes one invocation of
    unknown start (counted whole)."""
    if "invocations" in env:
        return list(env["invocations"])
    seconds = env.get("wall_seconds")
    return [{"started": None, "git_commit": env.get("git_commit"), "seconds": seconds}] if seconds else []


def finished_environment(results_dir: str | Path, started: str, seconds: float, split: dict | None = None) -> dict:
    """``environment.json`` as it reads once this invocation (``seconds`` of study time, its time
    ``split``: ``suite.study.time_split``) has finished: what its report states, before
    :func:`record_wall_time` writes it."""
    env = _read_env(Path(results_dir))
    invocations = env.setdefault("invocations", [])
    mine = [i for i in invocations if i.get("started") == started and i.get("worker") == worker_id()]
    if not mine:
        invocations.append({"started": started, "worker": worker_id()})
        mine = invocations[-1:]
    mine[0]["seconds"] = round(seconds, 1)
    if split is not None:
        mine[0]["time_split"] = split
    env["wall_seconds"] = round(union_seconds(invocations), 1)
    split_of_study = study_split(invocations)
    if split_of_study is not None:
        env["time_split"] = split_of_study
    return env


def record_wall_time(results_dir: str | Path, started: str, seconds: float, split: dict | None = None) -> None:
    """This invocation's wall time and time split, and the study's (the union of its finished
    invocations; the sum of their splits)."""
    root = Path(results_dir)
    with HolderLock(root / "locks" / "environment.lock"):
        env = finished_environment(root, started, seconds, split)
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
