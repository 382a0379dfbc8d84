"""The batch layout of the store: the runs a command trains together are stored in one commit (all
or none, a ``kill -9`` anywhere included), read back run by run, and moved when stored again; a
tuning batch costs one ``fsync`` of its rows and one of its study's journal, and Optuna is sent only
the intermediate values its pruner reads."""
from __future__ import annotations

import os
from pathlib import Path

import optuna
import pandas as pd
import pytest
from faults import die, killed_in_child, on_call
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from test_records import TASK_OPTIONS, make_spec

from suite.cli import CONF_DIR
from suite.store import compact as compact_module
from suite.store import runs as store_runs
from suite.store.identity import run_config
from suite.store.runs import RunStore, batch_name
from suite.tasks import build_task
from suite.train import train
from suite.train.rows import make_frame, make_trace
from suite.tune import journal
from suite.tune.tuner import cell_name_of, tune_cell
from suite.tune.storage import default_journal, open_storage


@pytest.fixture(scope="module")
def batch():
    """Three runs as the store keeps them: (rows, trace) each."""
    task = build_task(TASK_OPTIONS)
    out = []
    for seed in range(3):
        spec = make_spec(seed=seed)
        result = train(task, spec)
        frame = make_frame(spec, task, run_config(spec, TASK_OPTIONS), result)
        out.append((frame, make_trace(frame["run_id"].iloc[0], result)))
    return out


def ids(batch) -> list[str]:
    return [frame["run_id"].iloc[0] for frame, _ in batch]


def test_a_batch_is_one_file_read_back_run_by_run(batch, tmp_path):
    store = RunStore(tmp_path)
    path = store.write_batch(batch)
    assert path.name == batch_name(ids(batch)) and path.name.startswith("batch-")
    assert [p.name for p in store.runs.iterdir()] == [path.name] and (store.traces / path.name).is_file()
    assert store.stored(ids(batch)) == [True] * 3 and {store.path(rid) for rid in ids(batch)} == {path}
    assert len(pd.read_parquet(tmp_path / "runs")) == 9 and len(store.load()) == 9
    for frame, trace in batch:
        rid = frame["run_id"].iloc[0]
        pd.testing.assert_frame_equal(store.read(rid).drop(columns="created_at"), frame.drop(columns="created_at"),
                                      check_dtype=False)
        assert len(store.load_traces([rid])) == len(trace)
    assert RunStore(tmp_path).stored(ids(batch)) == [True] * 3  # another process finds them as well


def interrupted_before_commit(self, path, **kw):
    """The rows' file of the batch is cut off mid-write (its traces are already in place)."""
    if ".batch-" in str(path) and "/runs/" in str(path):
        Path(path).write_bytes(b"PAR1" + b"\0" * 64)
        raise KeyboardInterrupt
    return original_to_parquet(self, path, **kw)


original_to_parquet = pd.DataFrame.to_parquet


def test_an_interrupted_batch_leaves_none_of_its_runs_then_stores_all(batch, tmp_path, monkeypatch):
    store = RunStore(tmp_path)
    monkeypatch.setattr(pd.DataFrame, "to_parquet", interrupted_before_commit)
    with pytest.raises(KeyboardInterrupt):
        store.write_batch(batch)
    monkeypatch.undo()
    assert (store.traces / batch_name(ids(batch))).is_file()  # written before the commit, not counted
    assert store.stored(ids(batch)) == [False] * 3 and store.load_traces(ids(batch)).empty
    assert not [p for p in store.runs.iterdir() if not p.name.startswith(".")]
    store.write_batch(batch)
    assert store.stored(ids(batch)) == [True] * 3
    assert len(store.load_traces(ids(batch))) == sum(len(t) for _, t in batch)


@pytest.mark.parametrize("kill, stored", [("after its traces, before its rows' commit", False),
                                          ("after its rows' commit", True)])
def test_kill_9_around_the_commit_leaves_all_or_none(batch, tmp_path, kill, stored):
    store = RunStore(tmp_path)
    if stored:
        killed_in_child(lambda: (store.write_batch(batch), die()), lambda: None)
    else:
        killed_in_child(lambda: store.write_batch(batch), lambda: on_call(store_runs, "write_atomic", 2))
    again = RunStore(tmp_path)
    again.ensure_writable()  # what the next command does first: the dead writer's temporary files go
    assert again.stored(ids(batch)) == [stored] * 3
    assert not list(again.runs.glob(".*.tmp")) and not list(again.traces.glob(".*.tmp"))
    rows = pd.read_parquet(tmp_path / "runs") if stored else None
    assert rows is None or sorted(rows["run_id"].unique()) == sorted(ids(batch))


def test_runs_stored_again_leave_their_old_file(batch, tmp_path):
    store = RunStore(tmp_path)
    old = store.write_batch(batch)
    trace = store.traces / old.name
    trace.write_bytes(trace.read_bytes()[:20])  # damaged: its runs count as not stored
    assert store.stored(ids(batch)) == [False] * 3
    store.write_batch(batch[:2])  # the command trains two of them again, in another batch
    assert old.is_file() and store.stored(ids(batch)) == [True, True, False]
    table = pd.read_parquet(tmp_path / "runs")
    assert table.groupby("run_id").size().to_dict() == {rid: 3 for rid in ids(batch)}  # each run once
    store.write(*batch[2])
    assert not old.exists() and not trace.exists() and store.stored(ids(batch)) == [True] * 3


def test_a_run_found_in_two_files_is_read_once_from_the_newer(batch, tmp_path):
    store = RunStore(tmp_path)
    store.write_batch(batch)
    newer = batch[0][0].assign(time_s=123.0)
    # a kill between the commit of its new file and the rewrite of its old one
    store_runs.write_atomic(newer, store.runs / batch_name(ids(batch)[:1]), "a copy")
    rows = RunStore(tmp_path).load()
    assert len(rows) == 9 and rows[rows["run_id"] == ids(batch)[0]]["time_s"].eq(123.0).all()


# --- tuning: one commit per batch, one journal fsync, reports only where the pruner reads --------

TINY = ("batch_size=full", "budget.epochs=20", "eval.points=5", "progress=false", "threads=1", "tune.n_trials=8",
        "tune.batch=4", "tune.sampler=random")


def tcfg(results_dir, *overrides):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return hydra_compose(config_name="config", overrides=[*TINY, f"results_dir={results_dir}", *overrides])


def trials_of(cfg) -> list[optuna.trial.FrozenTrial]:
    name = cell_name_of(cfg)
    return optuna.load_study(study_name=name, storage=open_storage(default_journal(cfg.results_dir, name))).get_trials()


def test_a_tuning_batch_is_one_file_and_two_fsyncs(tmp_path, monkeypatch):
    calls = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append(fd), real_fsync(fd))[1])
    cfg = tcfg(tmp_path, "tune.pruner=none")
    tune_cell(cfg, echo=lambda *_: None)
    monkeypatch.undo()
    assert len(list((tmp_path / "runs").glob("*.parquet"))) == 2 == len(list((tmp_path / "traces").glob("*.parquet")))
    assert len(calls) == 2 * 2, "one fsync of each batch's rows, one of the journal after its tells"
    assert all(not t.intermediate_values for t in trials_of(cfg)), "no pruner reads them: none is reported"


def test_reports_start_where_the_pruner_first_reads(tmp_path):
    cfg = tcfg(tmp_path, "tune.pruner=median", "tune.prune_after=0.2", "tune.median.n_startup_trials=1")
    tune_cell(cfg, echo=lambda *_: None)
    rows = pd.read_parquet(tmp_path / "runs")
    warmup = int(0.2 * rows["step"].max())  # the median pruner's n_warmup_steps
    early = sorted(s for s in rows["step"].unique() if 0 < s < warmup)
    assert early, "evaluations before the warm-up exist (and are not reported)"
    for t in trials_of(cfg):
        assert t.intermediate_values and min(t.intermediate_values) >= warmup


def test_the_journal_appends_without_fsync_and_syncs_once(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(os, "fsync", lambda fd: calls.append(fd))
    storage = journal.open_journal(tmp_path / "study.log")
    study = optuna.create_study(storage=storage, study_name="s")
    for _ in range(5):
        study.tell(study.ask(), 1.0)
    assert calls == []
    storage.sync()
    assert len(calls) == 1


# --- the periodic merge -----------------------------------------------------------------------------

def many_batches(batch, n: int) -> list[list]:
    """``n`` batches of one run each, told apart by seed (the rows are the template's)."""
    out = []
    for k in range(n):
        frame, trace = batch[k % 3]
        rid = f"{k:016x}"
        out.append([(frame.assign(run_id=rid, seed=100 + k), trace.assign(run_id=rid))])
    return out


def test_batch_files_are_merged_into_a_part_that_reads_as_before(batch, tmp_path):
    store = RunStore(tmp_path, compact_at=4)
    batches = many_batches(batch, 6)
    for b in batches:
        store.write_batch(b)
    names = sorted(p.name for p in store.runs.glob("*.parquet"))
    assert len(names) == 3 and names[-1].startswith("part-")  # 4 merged, then 2 new batch files
    rids = [b[0][0]["run_id"].iloc[0] for b in batches]
    fresh = RunStore(tmp_path)
    assert fresh.stored(rids) == [True] * 6 and len(fresh.load()) == 6 * 3
    assert len(pd.read_parquet(tmp_path / "runs")) == 6 * 3 and len(fresh.load_traces(rids)) == 6 * len(batch[0][1])
    assert sorted(fresh.load()["seed"].unique()) == list(range(100, 106))


def test_a_merge_killed_before_its_deletions_is_finished_by_the_next_writer(batch, tmp_path):
    store = RunStore(tmp_path, compact_at=4)
    batches = many_batches(batch, 4)
    for b in batches[:3]:
        store.write_batch(b)
    # the merge settles leftovers first (call 1), then deletes what its part holds (call 2): killed there
    killed_in_child(lambda: store.write_batch(batches[3]), lambda: on_call(compact_module, "settle_superseded", 2))
    assert len(list(store.runs.glob("*.parquet"))) == 5  # the part and the four files it merged
    again = RunStore(tmp_path, compact_at=4)
    assert len(again.load()) == 4 * 3  # each run read once, from the part
    again.ensure_writable()  # the next writer deletes what the part holds
    assert [p.name[:5] for p in again.runs.glob("*.parquet")] == ["part-"]
    assert len(pd.read_parquet(tmp_path / "runs")) == 4 * 3
