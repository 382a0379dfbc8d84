"""A published study, read as a baseline: a results directory or an archive of one (``.tar.gz``,
``.tgz``, ``.tar``) holding what a comparison needs and nothing else: ``config.yaml`` (the resolved
study: its protocol), ``environment.json`` (the suite version, commit and results version that
made it, the machine), ``rows.parquet`` (every evaluation row of every run, :func:`export_rows`)
and ``tuned/`` (each cell's tuner export). A directory that still has its ``runs/`` may lack
``rows.parquet``: its store is read instead.

A baseline is never written: an archive is unpacked into a temporary directory that is removed
when the reader is done (:func:`opened`). :func:`publish` writes such an archive from a study.
"""
from __future__ import annotations

import contextlib
import json
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pandas as pd
import yaml

from suite.store.files import run_file_problem, with_later_columns
from suite.store.runs import RunStore, export_rows
from suite.types import StoreError

ARCHIVES = (".tar.gz", ".tgz", ".tar")
PUBLISHED = ("config.yaml", "environment.json", "rows.parquet", "tuned")  # what an archive carries
ROWS = "rows.parquet"


@dataclass
class Published:
    """A readable published study (``root``: its directory, or where its archive was unpacked)."""

    source: Path  # what the user named: the directory or the archive
    root: Path
    config: dict[str, Any]
    environment: dict[str, Any]
    _rows: pd.DataFrame | None = field(default=None, repr=False)

    def rows(self) -> pd.DataFrame:
        """Every stored row of the study (``rows.parquet``, else its ``runs/``), checked like a run
        file; read once."""
        if self._rows is None:
            self._rows = self._read_rows()
        return self._rows

    def _read_rows(self) -> pd.DataFrame:
        path = self.root / ROWS
        if not path.is_file():
            return RunStore(self.root).load()
        problem = run_file_problem(path)
        if problem:
            raise StoreError(f"{self.source}: {ROWS} is {problem}; publish the study again "
                             f"(suite.store.published.publish, or scripts/publish_study.sh).")
        return with_later_columns(pd.read_parquet(path))

    def optimizers(self) -> set[str]:
        """The optimizers the study trained: those its config names (a list) and those its rows hold."""
        named = self.config["study"].get("optimizers")
        return set(named if isinstance(named, list) else []) | set(self.rows()["optimizer"].unique())


def is_archive(path: Path) -> bool:
    return path.name.endswith(ARCHIVES)


@contextlib.contextmanager
def opened(source: str | Path) -> Iterator[Published]:
    """The published study at ``source`` (a directory or an archive), readable while the context
    lasts; an archive is unpacked into a temporary directory, removed afterwards."""
    source = Path(source).expanduser()
    if not source.exists():
        raise StoreError(f"study.baseline={source} does not exist; give a published study's directory (it holds "
                         f"config.yaml, rows.parquet, tuned/) or its archive ({', '.join(ARCHIVES)}).")
    if source.is_dir():
        yield _read(source, source)
        return
    if not is_archive(source):
        raise StoreError(f"study.baseline={source} is neither a directory nor an archive ({', '.join(ARCHIVES)}); "
                         f"give a published study's directory or its archive.")
    with tempfile.TemporaryDirectory(prefix="optsuite-baseline-") as tmp:
        yield _read(source, _unpack(source, Path(tmp)))


def _unpack(archive: Path, into: Path) -> Path:
    """The archive's study directory (its top folder, or the archive's root) under ``into``."""
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(into, filter="data")  # no links out of it, no absolute paths
    except (tarfile.TarError, OSError) as e:
        raise StoreError(f"study.baseline={archive} cannot be unpacked ({type(e).__name__}: {e}); give an archive "
                         f"made by publish (scripts/publish_study.sh) or the study's directory.") from None
    found = [p.parent for p in into.rglob("config.yaml")]
    return min(found, key=lambda p: len(p.parts)) if found else into


def _read(source: Path, root: Path) -> Published:
    missing = [name for name in ("config.yaml", "environment.json") if not (root / name).exists()]
    if not (root / ROWS).is_file() and not (root / "runs").is_dir():
        missing.append(ROWS)
    if missing:
        raise StoreError(f"study.baseline={source} lacks {', '.join(missing)}: a published study carries "
                         f"{', '.join(PUBLISHED)}; publish it again with scripts/publish_study.sh.")
    try:
        config = yaml.safe_load((root / "config.yaml").read_text())
        environment = json.loads((root / "environment.json").read_text())
    except (OSError, ValueError, yaml.YAMLError) as e:
        raise StoreError(f"study.baseline={source}: config.yaml or environment.json cannot be read "
                         f"({type(e).__name__}); publish the study again.") from None
    if not isinstance(config, dict) or not isinstance(config.get("study"), dict):
        raise StoreError(f"study.baseline={source}: its config.yaml has no study section; a baseline is a study "
                         f"written by suite-study.")
    return Published(source, root, config, environment if isinstance(environment, dict) else {})


def publish(results_dir: str | Path, archive: str | Path) -> Path:
    """``archive`` (``.tar.gz``) with what a comparison needs of the study in ``results_dir``:
    its ``rows.parquet`` (exported from ``runs/`` first where the directory has them), ``config.yaml``,
    ``environment.json`` and ``tuned/``, under one folder named like the directory."""
    root, archive = Path(results_dir), Path(archive)
    if (root / "runs").is_dir():
        export_rows(root, root / ROWS)
    _read(root, root)  # refuses a directory that is no study
    with tarfile.open(archive, "w:gz") as tar:
        for name in PUBLISHED:
            if (root / name).exists():
                tar.add(root / name, arcname=f"{root.resolve().name}/{name}")
    return archive
