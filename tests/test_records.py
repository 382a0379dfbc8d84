"""The results store: row schema, run id, atomic writes, damaged files never mistaken or overwritten."""
from __future__ import annotations

import dataclasses
import json
import math

import pandas as pd
import pytest
import torch

from suite.optim.registry import resolve_hparams
from suite.store.identity import run_config, run_id
from suite.store.runs import RunStore
from suite.store.tuned import read_tuned, tuned_path
from suite.tasks import build_task
from suite.train import train
from suite.train.rows import make_frame
from suite.types import COLUMNS, COMMAND_VARIABLE, HPARAM_COLUMNS, LATER_COLUMNS, EvalSpec, RunSpec, StoreError

TASK_OPTIONS = {"name": "regression", "n": 64, "n_val": 16, "n_test": 16}


@pytest.fixture(scope="module")
def task():
    return build_task(TASK_OPTIONS)


def make_spec(**kw) -> RunSpec:
    base = dict(task="regression", optimizer="adam", hparams=resolve_hparams("adam", {}), lr=0.01,
                batch_size=16, epochs=1.0, eval=EvalSpec(points=3))
    return RunSpec(**{**base, **kw})


def frame_for(task, spec: RunSpec, **tags) -> pd.DataFrame:
    return make_frame(spec, task, run_config(spec, TASK_OPTIONS), train(task, spec), tags=tags or None)


# --- run id ---------------------------------------------------------------------------------------

def changed(value):
    """A different value of the same kind (for every RunSpec field type)."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value * 2 + 1
    if isinstance(value, str):
        return value + "x"
    if isinstance(value, dict):
        return {**value, "eps": 1e-6}
    if dataclasses.is_dataclass(value):  # EvalSpec, LRSchedule: change its first field
        first = dataclasses.fields(value)[0].name
        return dataclasses.replace(value, **{first: changed(getattr(value, first))})
    if value is None:
        return 5
    raise AssertionError(f"no rule to change {value!r}; extend changed() for the new RunSpec field")


@pytest.mark.parametrize("field", [f.name for f in dataclasses.fields(RunSpec)])
def test_run_id_changes_with_every_spec_field(field):
    spec = make_spec()
    other = dataclasses.replace(spec, **{field: changed(getattr(spec, field))})
    assert run_id(run_config(spec, TASK_OPTIONS)) != run_id(run_config(other, TASK_OPTIONS))


@pytest.mark.parametrize("key", [k for k in TASK_OPTIONS if k != "name"] + ["sigma"])
def test_run_id_changes_with_task_options(key):
    base = run_id(run_config(make_spec(), TASK_OPTIONS))
    assert run_id(run_config(make_spec(), {**TASK_OPTIONS, key: 7})) != base


def test_run_id_ignores_key_order():
    spec = make_spec()
    reordered = dict(reversed(list(TASK_OPTIONS.items())))
    assert run_id(run_config(spec, TASK_OPTIONS)) == run_id(run_config(spec, reordered))


# Stable across processes: tests/test_cli.py::test_run_id_stable_across_processes (the stored file
# of a suite-train subprocess is named by the id this process computes).


# --- rows -----------------------------------------------------------------------------------------

def test_frame_has_every_column(task):
    spec = make_spec(accumulation_steps=4)
    frame = frame_for(task, spec, study="quick", trial=3)
    assert list(frame.columns) == [*COLUMNS, "study", "trial", "config"]
    assert len(frame) == 3 and frame["step"].tolist() == [0, 1, 4]
    last = frame.iloc[-1]
    assert last["regime"] == "mini-batch" and last["micro_batch"] == 4 and last["accumulation_steps"] == 4
    assert last["beta1"] == 0.9 and last["beta2"] == 0.999 and math.isnan(last["momentum"])
    assert last["optimizer_impl"] == "fused" and last["torch_version"] == torch.__version__
    assert last["threads"] == torch.get_num_threads() and last["device"] == "cpu"
    assert last["excess_loss"] == pytest.approx(last["train_loss"] - task.optimal_loss)
    assert not last["diverged"] and math.isnan(last["diverged_step"]) and not last["pruned"]
    assert json.loads(last["config"]) == json.loads(json.dumps(run_config(spec, TASK_OPTIONS), default=str))
    assert frame["run_id"].nunique() == 1 and frame["study"].eq("quick").all()
    assert set(HPARAM_COLUMNS) <= set(frame.columns)


def test_diverged_run_records_its_step(task):
    frame = frame_for(task, make_spec(optimizer="sgd", hparams={"weight_decay": 0.0}, lr=1e4, epochs=20.0))
    assert frame["diverged"].all() and frame["diverged_step"].iloc[-1] == frame["step"].iloc[-1]
    assert frame["regime"].iloc[0] == "mini-batch"


@pytest.mark.parametrize("batch_size,label", [(64, "GD"), (1, "SGD")])
def test_regime_label(task, batch_size, label):
    assert frame_for(task, make_spec(batch_size=batch_size, epochs=0.1))["regime"].eq(label).all()


# --- the store ------------------------------------------------------------------------------------

def test_write_then_read_back_as_one_table(task, tmp_path):
    store = RunStore(tmp_path)
    frames = [frame_for(task, make_spec(seed=s)) for s in range(3)]
    for frame in frames:
        path = store.write(frame)
        assert path.name == f"{frame['run_id'].iloc[0]}.parquet" and store.has(frame["run_id"].iloc[0])
    table = pd.read_parquet(tmp_path / "runs")
    assert len(table) == 9 and table["run_id"].nunique() == 3 and sorted(table["seed"].unique()) == [0, 1, 2]
    assert len(store.load()) == 9
    assert [p.name for p in (tmp_path / "runs").iterdir() if p.name.startswith(".")] == []


def test_dot_temp_files_are_ignored(task, tmp_path):
    store = RunStore(tmp_path)
    store.write(frame_for(task, make_spec()))
    (tmp_path / "runs" / ".abc.123.tmp").write_bytes(b"PAR1 half a file")
    assert len(pd.read_parquet(tmp_path / "runs")) == 3
    assert len(store.load()) == 3


def test_crash_mid_write_leaves_no_result(task, tmp_path, monkeypatch):
    """A write killed half-way (simulated: the parquet writer raises after some bytes) is invisible."""
    store = RunStore(tmp_path)
    store.write(frame_for(task, make_spec(seed=0)))
    frame = frame_for(task, make_spec(seed=1))
    rid = frame["run_id"].iloc[0]

    def die_half_way(self, path, **kw):
        with open(path, "wb") as f:
            f.write(b"PAR1" + b"\0" * 100)
        raise KeyboardInterrupt

    monkeypatch.setattr(pd.DataFrame, "to_parquet", die_half_way)
    with pytest.raises(KeyboardInterrupt):
        store.write(frame)
    monkeypatch.undo()
    assert not store.has(rid) and not store.path(rid).exists()
    assert len(pd.read_parquet(tmp_path / "runs")) == 3 and len(store.load()) == 3


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_corrupt_file_is_reported_and_left_alone(task, tmp_path, damage):
    store = RunStore(tmp_path)
    frame = frame_for(task, make_spec())
    rid = frame["run_id"].iloc[0]
    good = store.write(frame).read_bytes()
    content = {"garbage": b"not parquet at all", "truncated": good[:len(good) // 2], "empty": b""}[damage]
    store.path(rid).write_bytes(content)
    with pytest.raises(StoreError, match="is not a readable parquet file.*left untouched") as err:
        store.has(rid)
    assert str(store.path(rid)) in str(err.value)
    with pytest.raises(StoreError, match=rid):
        store.load()
    assert store.path(rid).read_bytes() == content


def test_every_damaged_file_is_named_in_one_pass_with_the_fix_of_the_command_run(task, tmp_path, monkeypatch):
    store = RunStore(tmp_path)
    paths = [store.write(frame_for(task, make_spec(seed=seed)), trace=None) for seed in range(4)]
    for path in paths[:3]:
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    for line, fix in [("suite-study study=quick", "then re-run suite-study: it trains those runs again"),
                      ("suite-report results/quick", "then run suite-report again: it reports the other runs")]:
        monkeypatch.setenv(COMMAND_VARIABLE, line)
        for look in (store.load, lambda: store.survey(print)):
            with pytest.raises(StoreError) as err:
                look()
            message = str(err.value)
            assert message.startswith(f"3 files under {store.runs} are not readable runs of this suite (") and fix in message
            assert all(f"{p.name}: not a readable parquet file" in message for p in paths[:3]) and paths[3].name not in message
    assert "trains" not in message  # suite-report never trains


def test_a_damaged_trace_makes_its_run_count_as_not_stored(task, tmp_path, monkeypatch):
    store = RunStore(tmp_path)
    frame = frame_for(task, make_spec())
    rid = frame["run_id"].iloc[0]
    store.write(frame, trace=frame[["run_id"]].head(1).assign(step_lo=0, step_hi=0, count=1, mean=1.0, min=1.0, max=1.0))
    trace = store.traces / f"{rid}.parquet"
    assert store.has(rid) and len(store.load_traces([rid])) == 1
    trace.write_bytes(trace.read_bytes()[:20])
    said: list[str] = []
    monkeypatch.setenv(COMMAND_VARIABLE, "suite-tune task=regression")
    store.survey(said.append)
    assert said == [f"damaged trace file(s) under {store.traces}: {trace.name} (not readable parquet); suite-tune "
                    f"trains their runs again when it reaches them, which rebuilds them."]
    assert not store.has(rid) and store.load_traces([rid]).empty  # trained again; the report leaves it out


@pytest.mark.parametrize("line, again", [("suite-study study=quick", "re-run suite-study: it exports"),
                                         ("suite-tune task=regression", "re-run suite-tune: it exports"),
                                         ("suite-train lr=tuned", "re-run suite-tune with the cell's overrides")])
def test_a_damaged_tuned_export_names_the_command_that_rewrites_it(line, again, tmp_path, monkeypatch):
    monkeypatch.setenv(COMMAND_VARIABLE, line)
    tuned_path(tmp_path, "cell").parent.mkdir(parents=True)
    tuned_path(tmp_path, "cell").write_text('{"lr": 0.1')
    with pytest.raises(StoreError, match=f"not a readable tuned configuration .*; delete it and {again}"):
        read_tuned(tmp_path, "cell")


def test_load_empty_store_says_how_to_fill_it(tmp_path):
    with pytest.raises(StoreError, match="no runs stored under .*suite-train results_dir="):
        RunStore(tmp_path).load()


def test_unwritable_results_dir(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("results_dir points below a regular file, which nobody (root included) can mkdir in")
    with pytest.raises(StoreError, match="is not writable.*results_dir=<dir>"):
        RunStore(blocker / "results").ensure_writable()
    RunStore(tmp_path / "fine").ensure_writable()
    assert list((tmp_path / "fine" / "runs").iterdir()) == [], "the write probe is removed"


def test_trials_and_final_runs_read_as_one_table_with_pandas(tmp_path, compose):
    """Tag columns exist with fixed types in every file, whichever file pyarrow reads first."""
    from suite.run.prepare import prepare

    store = RunStore(tmp_path)
    for i, tags in enumerate([None, {"study": "cell-a", "trial": 3}, None]):
        p = prepare(compose("budget.max_steps=3", "eval.points=2", f"seed={i}", "progress=false"))
        store.write(make_frame(p.spec, p.task, run_config(p.spec, p.config["task_options"]), train(p.task, p.spec),
                               tags=tags))
    rows = pd.read_parquet(tmp_path / "runs")
    last = rows.sort_values("step").groupby("run_id").tail(1).sort_values("seed")
    assert last["trial"].tolist()[1] == 3 and last["trial"].isna().sum() == 2
    assert last["study"].tolist()[1] == "cell-a" and last["study"].isna().sum() == 2


def test_a_foreign_parquet_file_is_named_with_what_it_lacks(task, tmp_path):
    store = RunStore(tmp_path)
    store.write(frame_for(task, make_spec()))
    foreign = tmp_path / "runs" / "notes.parquet"
    pd.DataFrame({"a": [1, 2]}).to_parquet(foreign)
    with pytest.raises(StoreError, match=f"{foreign} is not a run file of this suite: it lacks the column.s. run_id"):
        store.load()
    mistyped = frame_for(task, make_spec(seed=3)).astype({"lr": "str"})
    foreign.unlink()
    path = store.write(mistyped)
    with pytest.raises(StoreError, match="column types differ .lr is large_string, not float64"):
        store.has(path.stem)
    assert path.is_file()  # left untouched


def test_runs_stored_before_a_column_existed_read_with_its_later_value(task, tmp_path):
    store = RunStore(tmp_path)
    new = frame_for(task, make_spec())
    old = frame_for(task, make_spec(seed=4)).drop(columns=list(LATER_COLUMNS))
    store.write(new)
    store.write(old)
    rows = store.load()
    older = rows[rows["run_id"] == old["run_id"].iloc[0]]
    assert older["b_noise_exact"].isna().all() and (older["lr_schedule"] == "constant").all()
    assert store.read(old["run_id"].iloc[0])["b_simple_est"].isna().all()


def test_a_full_disk_mid_write_is_one_message_and_leaves_nothing(task, tmp_path, monkeypatch):
    import errno

    store = RunStore(tmp_path)
    frame = frame_for(task, make_spec())

    def disk_full(self, path, **kw):
        with open(path, "wb") as f:
            f.write(b"PAR1" + b"\0" * 100)
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(pd.DataFrame, "to_parquet", disk_full)
    with pytest.raises(StoreError, match="storing run .* failed: no space left on the device .*re-run the same"):
        store.write(frame)
    assert list((tmp_path / "runs").iterdir()) == []  # neither the result nor its temporary file


def test_temporary_files_of_dead_processes_are_cleaned_at_the_next_start(tmp_path):
    import os
    import socket
    import subprocess
    import sys

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    runs = tmp_path / "runs"
    runs.mkdir()
    host = socket.gethostname()
    dead, mine = runs / f".abc.{host}:{gone.pid}.tmp", runs / f".abc.{host}:{os.getpid()}.tmp"
    remote, old_style = runs / ".abc.elsewhere.example:1.tmp", runs / f".abd.{gone.pid}.tmp"
    for p in (dead, mine, remote, old_style):
        p.write_bytes(b"PAR1 half")
    RunStore(tmp_path).ensure_writable()
    assert sorted(p.name for p in runs.iterdir()) == sorted([mine.name, remote.name])


def test_an_empty_results_dir_is_refused():
    with pytest.raises(StoreError, match="results_dir is empty"):
        RunStore("")
