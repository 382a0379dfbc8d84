"""Tuned configurations: ``<results_dir>/tuned/<cell>.json``, each cell's best trial as exported by
the tuner (``suite.tune``) and read by ``lr=tuned`` runs and studies."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

from suite.store.locks import HolderLock, io_error, worker_id
from suite.store.files import clean_stale_temporaries
from suite.types import StoreError, command


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
        again = command() if command() in ("suite-tune", "suite-study") else "suite-tune with the cell's overrides"
        raise StoreError(f"{path} is not a readable tuned configuration ({type(e).__name__}: {e}); delete it and "
                         f"re-run {again}: it exports the cell's best trial again from its Optuna study.") from None


def write_tuned(results_dir: str | Path, name: str, payload: Mapping[str, Any]) -> Path:
    """Write atomically; a concurrent worker's export built from more finished trials is kept."""
    path = tuned_path(results_dir, name)
    tmp = path.parent / f".{name}.{worker_id()}.tmp"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        clean_stale_temporaries(path.parent)
        with HolderLock(path.parent / f".{name}.lock"):  # serializes read-compare-write among workers
            current = read_tuned(results_dir, name)
            if current is not None and current.get("n_finished", 0) > payload["n_finished"]:
                return path
            tmp.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")
            os.replace(tmp, path)  # readers see the old export or the whole new one
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise io_error(e, f"exporting the tuned configuration of {name}") from None
    return path
