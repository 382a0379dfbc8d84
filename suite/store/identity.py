"""Identities: a run's (``run_id``, a hash of everything that determines its result) and a cell's
(the name of its tuning study and tuned export).

A cell is everything that shapes a run's curve except the searched hyperparameters and the
seed: task and its options, optimizer and its fixed hyperparameters, batch size, accumulation,
sampling, budget, evaluation schedule, divergence limit, dtype. Device, implementation, threads
and paths are left out: they change speed or location, not the experiment, so a study can be
shared by CPU and GPU workers. The name is readable (``regression-sgd-bfull-<hash>``) and the
hash covers the rest, so two cells never share a study and a cell always finds its own.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any, Iterable, Mapping

from suite.types import LATER_FIELDS, RunSpec
from suite.cell import CELL_FIELDS, Cell


def _without_later_defaults(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``values`` without the fields added later (``suite.types.LATER_FIELDS``) at their value before them."""
    out = {}
    for key, value in values.items():
        name = prefix + key
        if name in LATER_FIELDS and value == LATER_FIELDS[name]:
            continue
        out[key] = _without_later_defaults(value, f"{name}.") if isinstance(value, dict) else value
    return out


NOT_IDENTITY_TASK_OPTIONS = ("data_dir",)  # where the files are, not what they are
NOT_IDENTITY_EVAL = ("batch", "test", "noise_scale")  # memory; the test split; a measurement beside the curve


def run_config(spec: RunSpec, task_options: Mapping[str, Any]) -> dict[str, Any]:
    """Everything that determines a run's result: the identity that ``run_id`` hashes."""
    return {"task_options": dict(task_options), **_without_later_defaults(dataclasses.asdict(spec))}


def run_id(config: Mapping[str, Any]) -> str:
    canonical = json.dumps(config, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def cell_identity(spec: RunSpec, task_options: Mapping[str, Any], searched: Iterable[str] = ()) -> dict[str, Any]:
    """The cell's defining values (what its name hashes)."""
    searched = sorted(searched)
    ident = {k: getattr(spec, k) for k in CELL_FIELDS}
    fields = dataclasses.asdict(spec)  # stop_at_target is not: a trial's curve up to its target is the run's
    ident.update(_without_later_defaults({k: fields[k] for k in LATER_FIELDS if k in fields and k != "stop_at_target"}))
    ident["eval"] = {k: v for k, v in dataclasses.asdict(spec.eval).items() if k not in NOT_IDENTITY_EVAL}
    ident["task_options"] = {k: v for k, v in task_options.items() if k not in NOT_IDENTITY_TASK_OPTIONS}
    ident["hparams"] = {k: v for k, v in spec.hparams.items() if k not in searched}
    ident["searched"] = searched
    return ident


def cell_name(spec: RunSpec, task_options: Mapping[str, Any], n_train: int, searched: Iterable[str] = ()) -> str:
    """``<Cell.name>-<hash of the rest>``: stable across lr, seed, machine."""
    ident = cell_identity(spec, task_options, searched)
    digest = hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:10]
    return f"{Cell.of(spec, n_train).name}-{digest}"
