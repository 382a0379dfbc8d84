"""Which configuration of a cell the report shows, and which ones the study abandoned.

A cell's *reported configuration* is the one its tuner export names (lr + searched
hyperparameters; one per re-tuning), or, in a study that did not tune, the study's fixed lr (the
optimizer registry's default where the study gives none; where the cell has no run at that lr,
e.g. the default changed since, it reports every configuration it has). Any other configuration of that cell
found among the final runs (an earlier lr, an old search range) is *abandoned*: it stays in
storage and in ``runs.csv`` (``abandoned``) but enters no table, figure or ``cells.csv``. A cell
with no export in a study that tuned, or a store without a study (plain ``suite-train`` runs),
reports every configuration it has.
"""
from __future__ import annotations

import json
import math

import pandas as pd

from suite.optim.registry import OPTIMIZERS
from suite.report.data.metrics import TUNED_CELL
from suite.report.data.protocol import Study


def _named(exports: pd.DataFrame) -> dict[tuple, tuple[float, dict]]:
    """The configuration each linked export names, by its cell's key."""
    linked = exports[exports["optimizer"].notna() & exports["lr"].notna()]
    return {tuple(line[k] for k in TUNED_CELL): (float(line["lr"]), line["hparams"]) for _, line in linked.iterrows()}


def _fixed_lr(study: Study, optimizer: str) -> float | None:
    """The lr an untuned study ran every cell at (None: not known, so nothing is abandoned)."""
    if study.name is None or study.tune:
        return None
    if study.lr is not None:
        return float(study.lr)
    return OPTIMIZERS[optimizer].lr_default if optimizer in OPTIMIZERS else None


def _is_named(config: dict, lr: float, hparams: dict) -> bool:
    mine = config.get("hparams") or {}
    return math.isclose(config["lr"], lr, rel_tol=1e-9) and all(
        k in mine and math.isclose(float(mine[k]), float(v), rel_tol=1e-9) for k, v in hparams.items())


def abandoned(runs: pd.DataFrame, exports: pd.DataFrame, study: Study) -> pd.Series:
    """Per run: True for a final run (neither a trial nor an extra) of a configuration its cell does
    not report."""
    named = _named(exports)
    out = pd.Series(False, index=runs.index)
    finals = runs[~runs["is_trial"].astype(bool) & ~runs["is_extra"].astype(bool)]
    for key, cell in finals.groupby(list(TUNED_CELL), sort=False):
        configs = {k: json.loads(k) for k in cell["config_key"].unique()}
        if key in named:
            keep = {k for k, c in configs.items() if _is_named(c, *named[key])}
        elif (fixed := _fixed_lr(study, cell["optimizer"].iloc[0])) is not None:
            keep = {k for k, c in configs.items() if math.isclose(c["lr"], fixed, rel_tol=1e-9)} or set(configs)
        else:
            keep = set(configs)
        out[cell.index] = ~cell["config_key"].isin(keep)
    return out
