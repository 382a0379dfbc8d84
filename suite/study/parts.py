"""A study's protocol parts and re-tunings: which runs each part trains, and with which budget.

A preset names one protocol (``study.protocol``) or several parts (``study.parts: [target,
budget]``), all in one results directory, sharing the data, the final seeds and the extras. Each
part tunes every cell for its own objective:

* ``target``: the step cap ``study.budgets.<task>.max_steps`` is the same for every batch size of
  a task, and the epochs equal it, so an epoch budget never cuts a target run short (an epoch has
  at least one step); every run (trial or final) stops at the task's target, and trials are
  ranked by their steps to it.
* ``budget``: ``study.budgets.<task>.epochs`` is the same for every batch size, with no step cap;
  trials are ranked by their final validation loss, and the final runs give the final metrics.

A preset that names no protocol trains the budgets as written (epochs with their caps).
``study.axes.<task>.parts`` keeps some of the parts for one task (e.g. a task whose final metrics
mean nothing at the resolution of its floating point measured in its target part only).

Re-tunings (``study.retunes.<task>: k``) repeat the whole tuning of each cell of that task ``k``
more times, each with its own sampler seed (``tune.seed + r``) and tuning seeds (the study's
shifted by ``r × RETUNE_SEED_STRIDE``), disjoint from the final seeds and from every other
tuning's; the tuning noise is their spread. Re-tuning ``r`` exports ``tuned/<cell>~r<r>.json`` and
tags its trials and final runs ``retune: r`` (0 is the primary tuning).
"""
from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from suite.run import validate as V
from suite.tasks import TASKS
from suite.types import ConfigError

PROTOCOLS = ("target", "budget")
RETUNE_SEED_STRIDE = 100  # re-tuning r trains its trials at the tuning seeds + r × this


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


def parts_of(study: DictConfig, task: str | None = None) -> list[str | None]:
    """The protocol parts in the order they run (``[None]``: a study that names none); of one
    ``task``, where ``study.axes.<task>.parts`` keeps some of them."""
    parts = _plain(study.get("parts"))
    parts = list(parts) if parts else [study.get("protocol")]
    own = ((_plain(study.get("axes")) or {}).get(task) or {}).get("parts") if task is not None else None
    return [p for p in parts if p in own] if own else parts


def check_parts(study: DictConfig) -> list[str | None]:
    """``study.parts`` and ``study.protocol``: one of them, known protocols, each part once; a task's
    own parts (``study.axes.<task>.parts``) among the study's."""
    parts, protocol = _plain(study.get("parts")), study.get("protocol")
    if parts is None:
        if protocol is not None and protocol not in PROTOCOLS:
            raise ConfigError(f"study.protocol={protocol!r} is invalid; valid: {', '.join(PROTOCOLS)}.")
        parts = [protocol]
    elif not isinstance(parts, list) or not parts or any(p not in PROTOCOLS for p in parts) \
            or len(set(parts)) != len(parts):
        raise ConfigError(f"study.parts={parts!r} is invalid; list each of {', '.join(PROTOCOLS)} at most once, "
                          f"e.g. study.parts=[target,budget].")
    elif protocol is not None:
        raise ConfigError(f"study.parts={parts} and study.protocol={protocol!r} both name the protocol; set "
                          f"study.protocol=null for a study in parts (or drop study.parts).")
    for task, own in (_plain(study.get("axes")) or {}).items():
        own = own.get("parts") if isinstance(own, dict) else None
        if own is not None and (not isinstance(own, list) or not own or set(own) - set(parts)):
            raise ConfigError(f"study.axes.{task}.parts={own!r} is invalid; list some of the study's parts "
                              f"({', '.join(map(str, parts))}), e.g. study.axes.{task}.parts=[{parts[0]}].")
    return parts


def check_budgets(study: DictConfig) -> None:
    """Each part of each task finds what it needs in ``study.budgets.<task>``."""
    for task in study.tasks:
        budget, parts = _plain(study.budgets.get(task)) or {}, parts_of(study, task)
        V.budget({**budget, "epochs": budget.get("epochs") or 0})  # as written, before a part derives its own
        if "target" in parts and budget.get("max_steps") is None:
            raise ConfigError(f"the target protocol needs a step cap per task; study.budgets.{task} has no "
                              f"max_steps (e.g. study.budgets.{task}.max_steps=2000).")
        if "budget" in parts and budget.get("epochs") is None:
            raise ConfigError(f"the budget protocol needs epochs per task; study.budgets.{task} has none "
                              f"(e.g. study.budgets.{task}.epochs=10).")
    if parts_of(study) == ["budget"]:  # a budget study alone: a cap would make the epochs unequal across batches
        capped = [t for t in study.tasks if (study.budgets.get(t) or {}).get("max_steps") is not None]
        if capped:
            raise ConfigError(f"study.protocol=budget gives every batch size the same epochs; drop the step caps "
                              f"study.budgets.{capped[0]}.max_steps (or use study.protocol=target).")


def part_budget(study: DictConfig, task: str, part: str | None) -> dict[str, Any]:
    """The run budget of ``task``'s cells in ``part`` (None: as the preset writes it)."""
    budget = dict(_plain(study.budgets[task]))
    if part == "target":
        return {**budget, "epochs": budget["max_steps"]}  # never binds before the cap: an epoch has >= 1 step
    if part == "budget":
        return {**budget, "max_steps": None}
    return budget


def retunes_of(study: DictConfig, task: str) -> int:
    """How many re-tunings each cell of ``task`` gets besides its primary tuning."""
    return int((_plain(study.get("retunes")) or {}).get(task, 0)) if study.tune else 0


def retune_seeds(tune_seeds: list[int] | None, retune: int) -> list[int] | None:
    """The tuning seeds of re-tuning ``retune`` (0: the study's own)."""
    return None if tune_seeds is None else [s + retune * RETUNE_SEED_STRIDE for s in tune_seeds]


def check_retunes(study: DictConfig, final_seeds: dict[str, list[int]], tune_seeds: dict[str, list[int] | None]) -> None:
    """``study.retunes``: counts >= 0 per task (tasks the study leaves out are ignored), each with
    tuning seeds disjoint from the final seeds in every re-tuning."""
    retunes = _plain(study.get("retunes")) or {}
    if not isinstance(retunes, dict):
        raise ConfigError(f"study.retunes={retunes!r} must map task names to counts, e.g. "
                          f"study.retunes={{regression: 2}}.")
    for task, k in retunes.items():
        if task not in TASKS or isinstance(k, bool) or not isinstance(k, int) or k < 0:
            raise ConfigError(f"study.retunes.{task}={k!r} is invalid: keys are task names ({', '.join(TASKS)}), "
                              f"values integers >= 0, e.g. study.retunes.{study.tasks[0]}=2.")
        if task not in study.tasks:  # a preset's re-tunings of a task this command leaves out
            continue
        if k and study.tune and tune_seeds[task] is None:
            raise ConfigError(f"study.retunes.{task}={k} re-tunes with tuning seeds of its own; set "
                              f"study.tune_seeds (e.g. study.tune_seeds=[1000]).")
        for r in range(1, k + 1 if study.tune else 1):
            shared = set(retune_seeds(tune_seeds[task], r)) & set(final_seeds[task])
            if shared:
                raise ConfigError(f"re-tuning {r} of {task} would train trials at seeds {sorted(shared)}, which are "
                                  f"final seeds; pick study.tune_seeds further from study.seeds.")
