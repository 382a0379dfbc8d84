"""What the study declared before it ran (``<results_dir>/config.yaml``) and where it ran
(``environment.json``): its measurement protocol, its targets, seeds and load. The report states
these; it never changes them."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import OmegaConf

from suite.types import Target

PROTOCOLS = {
    "target": ("**Protocol: target** (time to result, as in Shallue et al. 2019 and AlgoPerf): each task has a fixed "
               "target, declared in the study before it ran, and a step cap equal for every batch size; every run "
               "stops at the target; tuning trials are ranked by their steps to reach it, and a trial that does not "
               "reach it within the cap ranks behind every trial that does (among themselves by their final "
               "distance to the target). Its tables compare steps, epochs and samples to the target (and seconds "
               "where runs trained alone); a cell whose median is beyond the cap is shown as censored, with the "
               "cap."),
    "budget": ("**Protocol: budget** (fixed compute, as in DeepOBS): every batch size of a task trains the same "
               "number of epochs with no step cap (full batch gets as many steps as epochs); tuning trials are "
               "ranked by their final validation loss, and the tables compare the end of training (final metrics). "
               "Steps to a target are not shown: these lrs were not tuned for them."),
}
PARTS = tuple(PROTOCOLS)  # the order parts are reported in


def part_of(config: dict) -> str:
    """A run's protocol, from its config (never a tag): trained toward a ``target``, the target part;
    else the budget part (older stores, plain ``suite-train`` runs)."""
    return "target" if config.get("target") else "budget"


@dataclass
class Study:
    """The parts of a study's resolved config the report states (empty when there is none)."""

    name: str | None = None
    protocol: str | None = None
    targets: dict[str, Any] = field(default_factory=dict)
    report: Any = None  # the study's report: section (report options)
    seeds: list = field(default_factory=list)
    tune_seeds: list = field(default_factory=list)
    workers: int | None = None
    threads: dict[str, Any] = field(default_factory=dict)
    tune: bool = True
    lr: float | None = None  # an untuned study's fixed lr (None: the registry's default)
    parts: list = field(default_factory=list)  # the protocols of a study in parts (study.parts)


def _plain(node) -> Any:
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


def read_study(root: Path) -> Study:
    path = root / "config.yaml"
    if not path.is_file():
        return Study()
    cfg = OmegaConf.load(path)
    study = cfg.get("study") or {}
    get = (lambda k: _plain(study.get(k))) if study else (lambda k: None)
    return Study(name=get("name"), protocol=get("protocol"), targets=get("targets") or {}, report=cfg.get("report"),
                 seeds=list(get("seeds") or []), tune_seeds=list(get("tune_seeds") or []),
                 workers=get("workers"), threads=get("threads") or {}, tune=get("tune") is not False,
                 lr=get("lr"), parts=list(get("parts") or []))


def read_environment(root: Path) -> dict[str, Any]:
    path = root / "environment.json"
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        return {}


def protocol_changes(env: dict[str, Any]) -> list[tuple[str, str]]:
    """``(change, by whom)`` for each change of a study's protocol after it first ran (an invocation
    with ``study.change_protocol=true`` records them in environment.json)."""
    out = []
    for i in env.get("invocations") or []:
        if isinstance(i, dict) and i.get("changed"):
            by = (f"`{i['command']}`" if i.get("command") else "an invocation") + \
                f" (started {i.get('started')}, study.change_protocol=true)"
            out += [(str(change), by) for change in i["changed"]]
    return out


def target_source(task: str, study: Study, overrides: list[str], env: dict[str, Any] | None = None) -> str:
    """Where a task's target came from, for the README."""
    if any(o.startswith(f"targets.{task}") for o in overrides):
        return "set on the suite-report command line, not declared by the study"
    changed = [(c, by) for c, by in protocol_changes(env or {}) if c.startswith(f"study.targets.{task}")]
    if task in study.targets and changed:
        return "target changed after the study ran, by " + "; ".join(f"{by}: {c}" for c, by in changed)
    if task in study.targets:
        return "declared in the study before it ran (config.yaml study.targets)"
    if study.report is not None and task in (study.report.get("targets") or {}):
        return "the study's report options (config.yaml report.targets)"
    return "conf/report.yaml"


def protocol_lines(study: Study, targets: dict[str, Target], sources: dict[str, str], tasks: set[str],
                   env: dict[str, Any] | None = None) -> list[str]:
    """The README's statement of the protocol (each part's, for a study in parts), the targets, any
    change made after the study ran, and the seeds."""
    declared = [p for p in study.parts or [study.protocol] if p]
    lines = [PROTOCOLS[p] if p in PROTOCOLS else f"**Protocol: {p}** (not one the report knows: target or budget)."
             for p in declared]
    if len(declared) > 1:
        lines = [f"**The study has {len(declared)} parts**, one per protocol, each tuned for its own objective; "
                 f"every table belongs to one part and says which:", *(f"- {line}" for line in lines)]
    if not declared:
        lines = ["**Protocol: not declared** (no `study.protocol` in config.yaml): runs trained toward a target are "
                 "reported as the target protocol's, the others as the budget protocol's (compared at the end of "
                 "their own budget)."]
    shown = [t for t in targets if t in tasks]
    lines += ["", "Targets: " + ("; ".join(f"{t}: {targets[t].describe()} ({sources[t]})" for t in shown)
                                 if shown else "none for these tasks") + "."]
    changed = [f"{c}, by {by}" for c, by in protocol_changes(env or {}) if not c.startswith("study.targets.")]
    if changed:
        lines += ["", "**Protocol changed after the study ran**: " + "; ".join(changed) + "."]
    if study.seeds:
        tune = f"; tuning trials used seed(s) {_seeds(study.tune_seeds)}" if study.tune_seeds else ""
        lines += ["", f"Final runs: seed(s) {_seeds(study.seeds)}{tune}."]
    return lines + [""]


def _seeds(seeds: list) -> str:
    """The seeds, each once (a config written before repeats were refused may list one twice)."""
    return ", ".join(map(str, dict.fromkeys(seeds)))


def trained_alone(stack_sizes: pd.Series, study: Study, env: dict[str, Any]) -> bool:
    """Whether runs had their clock to themselves: none trained stacked with other configurations
    (``stack_size`` 1: a stacked run's time is its share of one clock) and the study ran one worker
    at a time (a store without a study: as its runs say)."""
    workers = env.get("workers", study.workers)
    return bool((stack_sizes.fillna(1) <= 1).all()) and (not workers or int(workers) <= 1)


def load_text(rows: pd.DataFrame, study: Study, env: dict[str, Any]) -> str:
    """Under which load the runs' throughput was measured (their timings share the machine)."""
    threads = sorted({int(t) for t in rows["threads"].dropna().unique()})
    workers = env.get("workers", study.workers)
    cores, stacked = env.get("cpu_count"), rows["stack_size"].max()
    parts = [f"{workers} worker(s) at once" if workers else None,
             f"up to {stacked:.0f} configurations stacked on one clock" if stacked > 1 else None,
             f"{'/'.join(map(str, threads))} torch thread(s) per run" if threads else None,
             f"{cores} CPU core(s)" if cores else None]
    return "measured during the study with " + ", ".join(p for p in parts if p) + \
        " (shared-machine figures; the authoritative ones come from `make bench`)"


def _seconds(parts: dict, names: dict[str, str]) -> str:
    return ", ".join(f"{label} {parts[key]:,.1f} s" for key, label in names.items() if parts.get(key) is not None)


def time_split_lines(split: dict) -> list[tuple[str, str]]:
    """Where the study's time went (``suite.study.time_split``): its parts, and its training by phase."""
    parts = _seconds(split.get("seconds") or {}, {"tuning": "tuning", "final_runs": "final runs", "extras": "extras",
                                                  "report": "report (earlier invocations'; this one's is recorded after it)"})
    phases = _seconds(split.get("training_seconds") or {}, {"steps": "steps", "evaluation": "evaluation",
                                                            "target_replay": "target replay", "storage": "storage"})
    return [("study time split", parts), ("training time split", phases)]
