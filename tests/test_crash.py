"""Crash consistency of tuning: a kill or Ctrl-C anywhere, a torn journal, a full disk or a lost run
file never changes a result.

Each kill is real: the work runs in a forked child that SIGKILLs itself at a chosen point (a hook
patched into the child only), so no cleanup runs, exactly as with ``kill -9``. The same command then
runs again here, and what it leaves (every trial's parameters, value and run, the tuned export) must
equal what an uninterrupted run leaves in another directory.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
from faults import die, during_eval, killed_in_child, on_call
from hydra import compose, initialize_config_dir
from optuna.trial import TrialState

from suite.cli import CONF_DIR, guarded
from suite.store import runs as store_runs
from suite.store.runs import RunStore
from suite.tune import trials as T
from suite.tune import tuner
from suite.tune.claims import slot_of
from suite.tune.journal import JournalLock, UnsyncedFileBackend
from suite.tune.storage import default_journal, open_storage
from suite.tune.tuner import cell_name_of, tune_cell
from suite.types import StoreError

# Two batches of four: the first drawn at random, the second by TPE and pruned against the first.
TUNE = ("task=tiny_mlp", "task.n=256", "batch_size=full", "optimizer=adam", "budget.epochs=30", "eval.points=5",
        "progress=false", "threads=1", "tune.n_trials=8", "tune.batch=4", "tune.tpe.n_startup_trials=3",
        "tune.median.n_startup_trials=2", "tune.prune_after=0")


def tcfg(results_dir, *overrides):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name="config", overrides=[*TUNE, f"results_dir={results_dir}", *overrides])


def quiet(*_):
    pass


def study_of(cfg) -> optuna.Study:
    name = cell_name_of(cfg)
    return optuna.load_study(study_name=name, storage=open_storage(default_journal(cfg.results_dir, name)))


def state(cfg) -> dict:
    """Everything a tuning run leaves that a rerun must reproduce: per slot, the trial's parameters,
    value and state and its stored run; the tuned export."""
    finished = study_of(cfg).get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
    rows = pd.read_parquet(Path(cfg.results_dir) / "runs")
    last = rows.sort_values("step").groupby("run_id").tail(1).set_index("run_id")
    trials = {slot_of(t): (t.params, t.value, t.state.name, t.user_attrs.get("diverged", False),
                           t.user_attrs["run_id"], last.loc[t.user_attrs["run_id"], "val_loss"]) for t in finished}
    exported = json.loads(next(Path(cfg.results_dir, "tuned").glob("*.json")).read_text())
    assert len(last) == len(finished) == cfg.tune.n_trials  # one run per trial, no leftovers
    return {"trials": trials, "runs": sorted(last.index), "trial_tags": sorted(last["trial"]),
            "tuned": {k: exported[k] for k in ("lr", "hparams", "value", "run_id", "n_finished", "n_pruned")}}


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    cfg = tcfg(tmp_path_factory.mktemp("clean"))
    tune_cell(cfg, echo=quiet)
    return state(cfg)


def in_tell(n_tell: int, n_append: int, action, patch=setattr):
    """From the ``n_tell``-th tell of a trial on, the ``n_append``-th journal append (and every
    later one) runs ``action(backend, logs)`` instead of appending."""
    armed, appends = [False], [0]
    on_call(T, "_tell", n_tell, lambda *_: armed.__setitem__(0, True), patch)
    original = UnsyncedFileBackend.append_logs

    def append_logs(self, logs):
        appends[0] += armed[0]
        if armed[0] and appends[0] >= n_append:
            return action(self, logs)
        return original(self, logs)

    patch(UnsyncedFileBackend, "append_logs", append_logs)


def half_then_die(backend, logs):
    """Write half the record, then die: a kill mid-append."""
    text = "\n".join(json.dumps(log, separators=(",", ":")) for log in logs) + "\n"
    with open(backend._file_path, "ab") as f:
        f.write(text.encode()[: len(text) // 2])
    die()


KILL_POINTS = {  # where in two stacked batches of four trials
    "before the first batch trains": lambda: on_call(tuner, "run_batch", 1),
    "while the first batch trains": lambda: during_eval(1, 7),
    "while the second batch trains": lambda: during_eval(2, 4),
    # a batch is stored in one commit: its traces' file, then its rows' file (the commit), then the tells
    "after the first batch's traces, before its rows' commit": lambda: on_call(store_runs, "write_atomic", 2),
    "after the first batch's commit, before its tells": lambda: on_call(T, "_tell", 1),
    "between the first batch's tells": lambda: on_call(T, "_tell", 3),
    "after the second batch's traces, before its rows' commit": lambda: on_call(store_runs, "write_atomic", 4),
    "between the second batch's tells": lambda: on_call(T, "_tell", 7),
    "mid-append of the second batch's third tell": lambda: in_tell(7, 2, half_then_die),
    "after the first batch, before the second": lambda: on_call(tuner, "claim_batch", 2),
}


@pytest.mark.parametrize("point", KILL_POINTS)
def test_kill_9_anywhere_then_rerun_gives_the_uninterrupted_trials(point, clean, tmp_path):
    cfg = tcfg(tmp_path)
    killed_in_child(lambda: tune_cell(cfg, echo=quiet), KILL_POINTS[point])
    lines: list[str] = []
    summary = tune_cell(cfg, echo=lines.append)
    assert state(cfg) == clean
    assert summary["n_queued"] == summary["n_running"] == 0 and "running elsewhere" in lines[-1]
    assert not list((tmp_path / "runs").glob(".*.tmp")), "no temporary file survives the next start"


def test_ctrl_c_mid_batch_then_rerun_gives_the_uninterrupted_trials(clean, tmp_path, monkeypatch):
    cfg = tcfg(tmp_path)

    def interrupt():
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        during_eval(2, 3, interrupt, m.setattr)
        with pytest.raises(KeyboardInterrupt):
            tune_cell(cfg, echo=quiet)
    queued = study_of(cfg).get_trials(states=(TrialState.WAITING,))
    assert len(queued) == 4 and all("retry_of" in t.user_attrs for t in queued)  # the batch, queued again
    lines: list[str] = []
    tune_cell(cfg, echo=lines.append)
    assert "4 queued" not in lines[-1] and state(cfg) == clean


def test_a_full_disk_fails_cleanly_and_the_rerun_redoes_the_lost_trials(clean, tmp_path, monkeypatch, capsys):
    cfg = tcfg(tmp_path)
    real = pd.DataFrame.to_parquet
    calls = [0]

    def fills_up(self, path, **kw):
        calls[0] += 1
        if calls[0] == 4:  # the second batch's rows (each batch: its traces, then its rows)
            Path(path).write_bytes(b"PAR1 half a file")
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(self, path, **kw)

    monkeypatch.setattr(pd.DataFrame, "to_parquet", fills_up)
    with pytest.raises(SystemExit) as exit_:
        guarded(lambda c: tune_cell(c, echo=quiet))(cfg)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "no space left on the device" in err and "re-run the same command" in err
    assert len(study_of(cfg).get_trials(states=(TrialState.WAITING,))) == 4  # queued with their parameters
    monkeypatch.setattr(pd.DataFrame, "to_parquet", real)
    tune_cell(cfg, echo=quiet)
    assert state(cfg) == clean


def test_a_full_disk_mid_journal_append_is_one_message_and_recovers(clean, tmp_path, monkeypatch, capsys):
    cfg = tcfg(tmp_path)

    def disk_full(backend, logs):  # half a record fits, then the disk is full (and stays full)
        with open(backend._file_path, "ab") as f:
            f.write(json.dumps(logs[0]).encode()[:30])
        raise OSError(errno.ENOSPC, "No space left on device", backend._file_path)

    with monkeypatch.context() as m:
        in_tell(6, 1, disk_full, m.setattr)
        with pytest.raises(SystemExit):
            guarded(lambda c: tune_cell(c, echo=quiet))(cfg)
    err = capsys.readouterr().err
    assert "no space left on the device" in err and "Traceback" not in err and "server" not in err
    lines: list[str] = []
    tune_cell(cfg, echo=lines.append)
    assert any("cut a torn last record" in line for line in lines)
    assert state(cfg) == clean


@pytest.fixture
def small_disk(tmp_path):
    """A 96 kB tmpfs (room for one batch of four trial runs, not two), where root may mount one; else skipped."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a small tmpfs needs root and mount")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96k", "tmpfs", str(mnt)], capture_output=True, text=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_a_real_full_disk_then_more_space_gives_the_uninterrupted_trials(clean, small_disk, capsys):
    cfg = tcfg(small_disk / "results")
    with pytest.raises(SystemExit) as exit_:
        guarded(lambda c: tune_cell(c, echo=quiet))(cfg)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "no space left on the device" in err and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1
    subprocess.run(["mount", "-o", "remount,size=20m", str(small_disk)], check=True)  # space freed
    tune_cell(cfg, echo=quiet)
    assert state(cfg) == clean
    assert not list((small_disk / "results").rglob(".*.tmp"))


def test_a_missing_trial_run_is_retrained_and_agrees_with_its_study(clean, tmp_path):
    cfg = tcfg(tmp_path)
    tune_cell(cfg, echo=quiet)
    lost = clean["trials"][5][4]
    path = RunStore(tmp_path).path(lost)
    good = pd.read_parquet(path)
    path.unlink()
    lines: list[str] = []
    tune_cell(cfg, echo=lines.append)
    assert any(f"retrained it as run {lost}: its value equals the" in line for line in lines), lines
    assert state(cfg) == clean
    again = pd.read_parquet(path)  # retrained in its recorded stack: bit for bit, not to rounding
    clock = ["time_s", "created_at"]
    pd.testing.assert_frame_equal(again.drop(columns=clock), good.drop(columns=clock))
    path.write_bytes(b"PAR1 damaged")  # a damaged one: the message says what the rerun will do
    with pytest.raises(StoreError, match=f"{path} is not a readable parquet file.*trains that run again"):
        tune_cell(cfg, echo=quiet)


def journal_of(cfg) -> Path:
    return Path(cfg.results_dir) / "optuna" / f"{cell_name_of(cfg)}.log"


@pytest.mark.parametrize("tail", [b'{"op_code":6,"worker_id":"x","trial_id":3,"sta', b"garbage\n", b"\0\0\0\0"])
def test_a_torn_or_garbage_journal_tail_is_cut_with_a_notice(tail, tmp_path):
    cfg = tcfg(tmp_path, "tune.n_trials=4")
    tune_cell(cfg, echo=quiet)
    journal = journal_of(cfg)
    whole = journal.read_bytes()
    with open(journal, "ab") as f:
        f.write(tail)
    lines: list[str] = []
    summary = tune_cell(tcfg(tmp_path, "tune.n_trials=6"), echo=lines.append)
    cut = [line for line in lines if "cut a torn last record" in line]
    line = whole.count(b"\n") + 1
    assert len(cut) == 1 and str(journal) in cut[0] and f"line {line}," in cut[0]
    assert summary["n_finished"] == 6 and journal.read_bytes().startswith(whole)
    assert tune_cell(tcfg(tmp_path, "tune.n_trials=6"), echo=quiet)["n_run_here"] == 0  # readable again


def test_the_trial_of_a_torn_record_is_failed_and_queued_again(tmp_path):
    cfg = tcfg(tmp_path, "tune.n_trials=4", "tune.batch=1")
    tune_cell(tcfg(tmp_path, "tune.n_trials=2", "tune.batch=1"), echo=quiet)
    study = study_of(cfg)
    held = study.ask()  # a live worker (this process) asked it, then its next record was torn
    held.set_user_attr("worker", f"elsewhere.example:{os.getpid()}")
    lr = held.suggest_float("lr", 1e-5, 1e-1, log=True)  # adam's range
    with open(journal_of(cfg), "ab") as f:
        f.write(b'{"op_code":6,"worker_id":"w","trial_id":%d,"state":1,"val' % held._trial_id)
    lines: list[str] = []
    tune_cell(cfg, echo=lines.append)
    assert any(f"trial {held.number}, whose record it was, is failed and queued again" in line for line in lines)
    trials = study_of(cfg).trials
    retry = [t for t in trials if t.user_attrs.get("retry_of") == held.number]
    assert trials[held.number].state == TrialState.FAIL and retry[0].params["lr"] == lr


def test_a_damaged_record_inside_the_journal_names_its_line(tmp_path, capsys):
    cfg = tcfg(tmp_path, "tune.n_trials=2")
    tune_cell(cfg, echo=quiet)
    journal = journal_of(cfg)
    lines = journal.read_bytes().splitlines(keepends=True)
    journal.write_bytes(b"".join([*lines[:3], b"garbage\n", *lines[3:]]))
    with pytest.raises(SystemExit):
        guarded(lambda c: tune_cell(c, echo=quiet))(cfg)
    err = capsys.readouterr().err
    assert f"the Optuna journal {journal} is damaged: line 4 is not a journal record" in err
    assert "head -n 3" in err and "server" not in err and "password" not in err and "Traceback" not in err


def test_a_lock_left_by_kill_9_does_not_stall_the_next_run(tmp_path):
    cfg = tcfg(tmp_path, "tune.n_trials=1")
    tune_cell(cfg, echo=quiet)
    journal = journal_of(cfg)
    killed_in_child(lambda: JournalLock(journal).acquire() and die(), lambda: None)
    started = time.monotonic()
    tune_cell(tcfg(tmp_path, "tune.n_trials=2"), echo=quiet)
    assert time.monotonic() - started < 10  # Optuna's own lock would wait 30 s before forcing it


def test_a_repair_never_cuts_a_live_append(tmp_path):
    journal = tmp_path / "study.log"
    journal.write_bytes(b'{"op_code":0,"worker_id":"a"}\n')
    record = b'{"op_code":8,"worker_id":"b","trial_id":0,"user_attr":{"k":1}}\n'
    holding = threading.Event()

    def slow_append():
        with JournalLock(journal).lock:
            with open(journal, "ab") as f:
                f.write(record[:20])
                f.flush()
                holding.set()
                time.sleep(0.3)  # the append is half-written while another process wants the lock
                f.write(record[20:])

    writer = threading.Thread(target=slow_append)
    writer.start()
    holding.wait()
    other = JournalLock(journal)
    other.acquire()  # waits for the writer, then finds a whole record: nothing to cut
    other.release()
    writer.join()
    assert other.cuts == [] and journal.read_bytes().endswith(record)
