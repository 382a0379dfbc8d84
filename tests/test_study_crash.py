"""Crash consistency of studies: a kill anywhere (a trial batch, a final run, the report), then the
same command, gives the uninterrupted study; two studies on one directory give one study; a cell
held by another process is waited for, never given a default lr; a cell whose every trial
diverged is marked in the report.

Two cells (tiny_mlp with Adam at batch 32 and full), four tuning trials in batches of two, two
seeds: each study takes a second or two, and kills are real (``faults``).
"""
from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
from faults import during_eval, killed_in_child, on_call
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from suite.cli import CONF_DIR
from suite.report.figures import curves
from suite.report.figures.render import Renderer
from suite.store.locks import HolderLock, worker_id
from suite.study import cell as study_cell
from suite.study import launchers
from suite.study.cell import Job, final_lock, run_cell
from suite.study.presets import cell_config, expand, validate
from suite.study.runner import study_and_report
from suite.tune.storage import default_journal, open_storage
from suite.tune.summary import UNREACHED
from suite.tune.tuner import cell_name_of, tune_cell

TWO_CELLS = [
    "study.tasks=[tiny_mlp]", "study.optimizers=[adam]", "study.batch_sizes=[32,full]", "study.seeds=[0,1]",
    "study.n_trials=4", "study.tune_batch=2", "study.budgets.tiny_mlp.max_steps=30", "study.eval_points=4",
    "+study.task_options.tiny_mlp.n=256", "progress=false", "+study.report.figures.formats=[png]", "study.widen=false",
]


def study_cfg(results_dir: Path, *overrides: str):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name="study_app", overrides=[f"results_dir={results_dir}", *TWO_CELLS, *overrides])


def quiet(*_):
    pass


def study_state(root: Path) -> dict:
    """What a study leaves: every run (trials by cell and slot), the tuned lrs, the report's numbers."""
    rows = pd.read_parquet(root / "runs")
    last = rows.sort_values("step").groupby("run_id").tail(1)
    cells = pd.read_csv(root / "report" / "cells.csv")
    cells = cells.drop(columns=[c for c in cells if "throughput" in c or "seconds" in c or c == "run_ids"])
    cells = cells.astype(object).where(cells.notna(), None)  # NaN != NaN
    lr_table = (root / "report" / "tables" / "tiny_mlp" / "best_lr.md").read_text()
    tuned = {p.stem: {k: json.loads(p.read_text())[k] for k in ("lr", "value", "run_id", "n_finished")}
             for p in (root / "tuned").glob("*.json")}
    trials = last[last["trial"].notna()]
    return {"trials": sorted(zip(trials["study"], trials["trial"], trials["run_id"], trials["lr"], trials["val_loss"])),
            "finals": sorted(last.loc[last["trial"].isna(), "run_id"]), "tuned": tuned, "lr_table": lr_table,
            "cells": cells.sort_values(list(cells.columns[:4])).reset_index(drop=True).to_dict("list")}


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    root = tmp_path_factory.mktemp("clean")
    study_and_report(study_cfg(root), echo=quiet)
    return study_state(root)


KILL_POINTS = {
    "during the first trial batch": lambda: during_eval(1, 3),
    "during the second cell's trials": lambda: during_eval(3, 2),
    # the final runs of a cell are stored in one commit: killed while it is being built
    "while the first cell's final runs are stored": lambda: on_call(study_cell, "run_frames", 2),
    "after the first cell": lambda: on_call(launchers, "run_cell", 2),
    "during the report": lambda: on_call(curves, "curves", 1),
}


@pytest.mark.parametrize("point", KILL_POINTS)
def test_kill_9_anywhere_in_a_study_then_rerun_gives_the_uninterrupted_study(point, clean, tmp_path):
    cfg = study_cfg(tmp_path)
    killed_in_child(lambda: study_and_report(cfg, echo=quiet), KILL_POINTS[point])
    lines: list[str] = []
    study_and_report(cfg, echo=lines.append)
    assert study_state(tmp_path) == clean
    assert "registry lr" not in "\n".join(lines)
    assert not list(tmp_path.glob(".report.*")), "the half-built report of the killed process is gone"


def test_two_studies_on_one_directory_give_one_study(clean, tmp_path):
    cfg = study_cfg(tmp_path)
    children = []
    for _ in range(2):
        pid = os.fork()
        if pid == 0:
            try:
                study_and_report(cfg, echo=quiet)
            finally:
                os._exit(0)
        children.append(pid)
    for pid in children:
        assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    # Each trial and final run once, one report of two cells: one study's result. (Two processes may
    # split a batch of trials into two stacks, which round differently: values agree to float precision.)
    got = study_state(tmp_path)
    assert [t[:4] for t in got["trials"]] == [t[:4] for t in clean["trials"]]  # cell, slot, run id, lr
    assert [t[4] for t in got["trials"]] == pytest.approx([t[4] for t in clean["trials"]], rel=1e-4)
    assert got["finals"] == clean["finals"] and got["lr_table"] == clean["lr_table"]
    assert {k: v["lr"] for k, v in got["tuned"].items()} == {k: v["lr"] for k, v in clean["tuned"].items()}
    assert len(got["cells"]["optimizer"]) == 2 and got["cells"]["n_runs"] == [2, 2]


def test_a_cell_held_by_another_process_is_waited_for(tmp_path):
    job = first_cell(study_cfg(tmp_path))
    tune_cell(job, echo=quiet)
    lock = final_lock(tmp_path, cell_name_of(job))
    lock.acquire()  # another process trains this cell's final runs ...
    as_job = Job("cell", OmegaConf.to_container(job), (0, 1), tuning=OmegaConf.to_container(job))
    assert run_cell(as_job, wait=False, echo=quiet) is None  # ... so come back later
    said: list[str] = []
    threading.Timer(0.5, lock.release).start()
    summary = run_cell(as_job, wait=True, echo=said.append)
    assert said == [f"{cell_name_of(job)}: waiting for {worker_id()}, which is training this cell's final runs."]
    assert summary["lr_source"] == UNREACHED and summary["trained"] == 2  # 30 steps stay short of the target


def first_cell(cfg):
    return cell_config(cfg, expand(cfg.study, validate(cfg.study))[0])


def test_trials_held_by_another_worker_are_waited_for_never_replaced(tmp_path):
    tune_cell(first_cell(study_cfg(tmp_path)), echo=quiet)  # four trials finished
    job = first_cell(study_cfg(tmp_path, "study.n_trials=5"))
    name = cell_name_of(job)
    study = optuna.load_study(study_name=name, storage=open_storage(default_journal(tmp_path, name)))
    held = study.ask()  # the fifth, held by a worker on another machine
    held.set_user_attr("worker", "another-host.example:123")
    held.set_user_attr("slot", 4)
    assert tune_cell(job, echo=quiet, wait=False) is None  # come back later
    threading.Timer(0.6, lambda: study.tell(held, 1.0)).start()
    said: list[str] = []
    started = time.monotonic()
    summary = tune_cell(job, echo=quiet, notice=said.append)
    assert time.monotonic() - started >= 0.5 and summary["n_finished"] == 5 and summary["n_run_here"] == 0
    assert len(said) == 1 and f"waiting for trial(s) {held.number} held by another-host.example:123" in said[0]


def test_a_cell_whose_every_trial_diverged_is_marked_in_the_report(tmp_path):
    cfg = study_cfg(tmp_path, "study.batch_sizes=[full]", "study.seeds=[0]", "study.n_trials=2",
                    "tune.lr_range=[50,100]")
    lines: list[str] = []
    study_and_report(cfg, echo=lines.append)
    assert any("use the registry lr because no tuning trial finished without diverging" in line for line in lines)
    readme = (tmp_path / "report" / "README.md").read_text()
    assert "- **registry-default lr** (‡): tiny_mlp / target / adam / batch 256 (GD)" in readme
    assert "0.001 ‡" in (tmp_path / "report" / "tables" / "tiny_mlp" / "best_lr.md").read_text()


def test_a_killed_report_leaves_no_figure_worker_holding_its_locks(tmp_path):
    # A report's figure workers are forked with copies of its descriptors, its file locks among them.
    lock_path = tmp_path / "locks" / "report.lock"
    ready, told = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            HolderLock(lock_path).acquire()
            Renderer(workers=2)
            os.write(told, b"1")
            time.sleep(120)
        finally:
            os._exit(0)
    os.read(ready, 1)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    lock, deadline = HolderLock(lock_path), time.monotonic() + 10
    while not lock.acquire(blocking=False):
        assert time.monotonic() < deadline, "a figure worker of the killed report still holds its lock"
        time.sleep(0.05)
    lock.release()
