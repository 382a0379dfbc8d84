"""Per-run summaries kept between reports, in ``<results_dir>/.cache/report_summaries.parquet``.

A run's summary (:func:`suite.report.data.metrics.summarize_runs`: final and best metrics, steps to
target, censoring, throughput) depends on three things only: the run's stored rows, its task's
target and the code that computes it. Each cached summary is keyed by a digest of all three (the
rows' content, never file names, sizes or times), so a report re-run after a few new runs
summarizes only those, and a summary is never reused for anything but exactly the rows, target and
code it came from: a run stored again with other rows under the same id, a changed target or an
edited summary gets a fresh one. The task label (which depends on the other runs of the task) is
taken from the current rows, never from the cache.

The file holds the summaries of the runs now stored (those of runs no longer stored are dropped),
written under a temporary name and renamed into place; a cache that cannot be read is rebuilt, one
that cannot be written is skipped (the report is the same either way). ``.cache/`` sits beside
``runs/``, never under it, so nothing that reads runs sees it; deleting it is always safe.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Mapping

import pandas as pd

from suite import cell, types
from suite.report.data import metrics, to_target
from suite.report.data.metrics import summarize_runs
from suite.types import Target

CACHE = Path(".cache") / "report_summaries.parquet"
DIGEST = "summary_digest"
CROSS_RUN = "task_label"  # depends on the task's other runs: always from the current rows
SUMMARY_CHUNK = 10_000  # runs summarized together


def _code_digest() -> bytes:
    """The source of the modules a summary is computed by (and of the row contract and the cell they read)."""
    sources = [Path(module.__file__).read_bytes() for module in (metrics, to_target, types, cell)]
    return hashlib.blake2b(b"\0".join(sources), digest_size=16).digest()


def run_digests(rows: pd.DataFrame, targets: Mapping[str, Target]) -> pd.Series:
    """A hex digest per run id of its stored rows (content, in stored order), its task's target and
    the summary code. ``rows`` as stored (before :func:`metrics.annotate`)."""
    row_hashes = pd.util.hash_pandas_object(rows, index=False).to_numpy()
    code, tasks = _code_digest(), rows["task"].to_numpy()
    digests = {}
    for rid, index in rows.groupby("run_id", sort=False).indices.items():
        task = tasks[index[0]]
        target = repr(targets.get(task)).encode()
        digest = hashlib.blake2b(code + target, digest_size=16)
        digest.update(",".join(rows.columns).encode())
        digest.update(row_hashes[index].tobytes())
        digests[rid] = digest.hexdigest()
    return pd.Series(digests, name=DIGEST)


def read_cache(root: Path) -> pd.DataFrame | None:
    try:
        return pd.read_parquet(root / CACHE)
    except Exception:  # absent, damaged or from another version: rebuilt from the rows
        return None


def write_cache(root: Path, summaries: pd.DataFrame) -> None:
    path = root / CACHE
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        summaries.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    except Exception:  # read-only results, a full disk, a column parquet cannot hold: no cache this time
        tmp.unlink(missing_ok=True)


def _summarize(rows: pd.DataFrame, run_ids: list[str], targets: Mapping[str, Target]) -> pd.DataFrame:
    """:func:`summarize_runs` of ``run_ids``, :data:`SUMMARY_CHUNK` runs at a time: a summary depends
    on its run's rows only, and a chunk's copies of its rows stay small (all 100k runs of a large
    store at once: 1.9 GiB more at the peak)."""
    chunk_of = pd.Series(range(len(run_ids)), index=run_ids) // SUMMARY_CHUNK
    parts = [summarize_runs(part, targets) for _, part in rows.groupby(rows["run_id"].map(chunk_of))]  # one pass
    return parts[0] if len(parts) == 1 else pd.concat(parts, ignore_index=True)


def cached_summaries(root: Path, stored: pd.DataFrame, rows: pd.DataFrame,
                     targets: Mapping[str, Target]) -> pd.DataFrame:
    """:func:`summarize_runs` of ``rows`` (annotated), computing only the runs whose digest the cache
    lacks. ``stored``: the same rows as stored, for the digests."""
    digests = run_digests(stored, targets)
    cached = read_cache(root)
    usable = cached is not None and {DIGEST, "run_id"} <= set(cached)
    hits = cached[cached[DIGEST].to_numpy() == digests.reindex(cached["run_id"]).to_numpy()] if usable else None
    known = set(hits["run_id"]) if hits is not None else set()
    fresh_ids = [rid for rid in digests.index if rid not in known]
    fresh = _summarize(rows, fresh_ids, targets) if fresh_ids else None
    parts = [part for part in (hits, fresh) if part is not None and len(part)]
    columns = [c for c in (fresh if fresh is not None else hits).columns if c != DIGEST]
    out = parts[0] if len(parts) == 1 else pd.concat(parts, ignore_index=True)
    out = out[columns].sort_values("run_id", kind="stable").reset_index(drop=True)
    out[CROSS_RUN] = out["run_id"].map(rows.groupby("run_id", sort=False)[CROSS_RUN].first())
    if fresh_ids or not usable or len(cached) != len(out):  # new summaries, or entries of runs gone
        write_cache(root, out.assign(**{DIGEST: out["run_id"].map(digests)}))
    return out
