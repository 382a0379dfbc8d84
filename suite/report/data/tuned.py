"""The tuner's exports (``tuned/*.json``) as the report reads them: which cell and which re-tuning
each one names, the configuration it names (lr + searched hyperparameters) and how well its
optimum is resolved. The report shows these; it never recomputes them.

An export is linked to its cell through the cell's tuning trials, which carry the tuning study's
name as their ``study`` tag: the export's ``cell`` (or file name) and its ``retune`` (0, the primary
tuning, where absent) pick the trials, and the trials give the cell's key (:data:`TUNED_CELL`).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from suite.report.data.metrics import TUNED_CELL

RESOLUTION = ("tolerance", "lr_lo", "lr_hi", "n_within", "resolved")
CELL_KEYS = tuple(k for k in TUNED_CELL if k != "retune")
EXPORTS = ("name", "cell", "retune", "lr", "hparams", "data", *(f"resolution_{k}" for k in RESOLUTION))


def _line(path: Path, data: dict) -> dict:
    resolution = data.get("resolution") or {}
    resolved = resolution.get("resolved")
    return {"name": path.stem, "cell": data.get("cell") or path.stem, "retune": int(data.get("retune") or 0),
            "lr": data.get("lr"), "hparams": dict(data.get("hparams") or {}), "data": data,
            **{f"resolution_{k}": resolution.get(k, math.nan) for k in RESOLUTION[:-1]},
            "resolution_resolved": None if resolved is None else bool(resolved)}


def read_exports(root: Path, notes: list[str]) -> pd.DataFrame:
    """One line per readable ``tuned/*.json`` (:data:`EXPORTS`; ``data`` is the whole export); an
    unreadable file becomes a note."""
    lines = []
    for path in sorted((root / "tuned").glob("*.json")):
        try:
            data = json.loads(path.read_text())
            lines.append(_line(path, data))
        except (OSError, ValueError, TypeError, AttributeError) as e:
            notes.append(f"`tuned/{path.name}` is not a readable tuner export ({type(e).__name__}); its flags "
                         f"are not shown.")
    return pd.DataFrame(lines, columns=list(EXPORTS))


def link(exports: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """The exports with their cell's key (:data:`TUNED_CELL`), from the trials tagged with their
    study; an export none of whose trials is stored keeps NaN keys (it is linked to no cell)."""
    keys = pd.DataFrame(columns=[*TUNED_CELL, "study"])
    if len(runs) and "study" in runs:
        trials = runs[runs["is_trial"] & runs["study"].notna()]
        keys = trials[[*TUNED_CELL, "study"]].drop_duplicates(["study", "retune"])
    by_name = exports.merge(keys.rename(columns={"study": "name"}), on=["name", "retune"], how="left")
    by_cell = exports.merge(keys.rename(columns={"study": "cell"}), on=["cell", "retune"], how="left")
    return by_name.fillna(by_cell[list(CELL_KEYS)])
