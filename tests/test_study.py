"""suite-study: presets compose and run, resume after kill -9, workers agree, axes validate."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

from suite.cli import CONF_DIR
from suite.optim.registry import OPTIMIZERS
from suite.study.presets import expand, optimizer_names, validate
from suite.study.runner import _checked, jobs_of, study_and_report
from suite.types import ConfigError

SUITE_STUDY = str(Path(sys.executable).with_name("suite-study"))
PRESETS = sorted(p.stem for p in (Path(CONF_DIR) / "study").glob("*.yaml"))

# A shrunken matrix: two optimizers, batch 1 and full, tiny budgets, two seeds.
SMALL = [
    "study.tasks=[regression,tiny_mlp]", "study.optimizers=[sgd,adam]", "study.batch_sizes=[1,full]",
    "study.seeds=[0,1]", "study.budgets.regression.max_steps=40", "study.budgets.tiny_mlp.max_steps=40",
    "study.eval_points=4", "progress=false",
]


def study_cfg(results_dir: Path, *overrides: str):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name="study_app", overrides=[f"results_dir={results_dir}", *overrides])


def final_table(results_dir: Path) -> pd.DataFrame:
    """The report's per-cell table (final runs, mean over seeds) without its clock-time columns."""
    table = pd.read_csv(results_dir / "report" / "cells.csv")
    timed = [c for c in table if "throughput" in c or "seconds" in c]
    return table.drop(columns=timed).sort_values(["task", "optimizer", "batch_size"]).reset_index(drop=True)


def final_ids(results_dir: Path) -> list[str]:
    rows = pd.read_parquet(results_dir / "runs")
    if "trial" in rows:
        rows = rows[rows["trial"].isna()]
    return sorted(rows["run_id"].unique())


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_composes_and_expands(preset, tmp_path):
    cfg = study_cfg(tmp_path, f"study={preset}", "study.tasks=[regression,tiny_mlp]")
    cells = expand(cfg.study, validate(cfg.study))
    assert cells and {c.optimizer for c in cells} == set(optimizer_names(cfg.study))
    assert all(c.batch_size == "full" or c.batch_size <= 1000 for c in cells)


def test_quick_preset_covers_the_tutorial_optimizers_and_every_task():
    cfg = study_cfg(Path("unused"))
    assert set(cfg.study.optimizers) >= {name for name, spec in OPTIMIZERS.items() if spec.tutorial}
    assert set(cfg.study.optimizers) <= set(OPTIMIZERS)
    assert {"regression", "tiny_mlp", "fashion_mnist"} <= set(cfg.study.tasks)
    assert 1 in cfg.study.batch_sizes and "full" in cfg.study.batch_sizes


@pytest.mark.parametrize("workers", [1, 2])
def test_several_workers_start_the_longest_cells_first(workers):
    """With more than one worker the pool gets the cells with the most arithmetic first (the quick
    study's full-batch Fashion-MNIST cells), so the workers' last cells are short; one worker keeps
    the study's order."""
    cfg = study_cfg(Path("unused"), f"study.workers={workers}")
    jobs = jobs_of(cfg, expand(cfg.study, validate(cfg.study)))
    ordered = [job.label for job in _checked(jobs, cfg.study)]
    if workers == 1:
        assert ordered == [job.label for job in jobs]
    else:
        assert sorted(ordered) == sorted(job.label for job in jobs)
        assert all(label.startswith("fashion_mnist/") and label.endswith("(GD)") for label in ordered[:7])
        assert all(label.startswith("regression/") and label.endswith("/1 (SGD)") for label in ordered[-7:])


@pytest.mark.parametrize("preset", ["modern", "full"])
def test_modern_and_full_presets_cover_every_registry_optimizer(preset):
    cfg = study_cfg(Path("unused"), f"study={preset}")
    assert cfg.study.optimizers == "all" and optimizer_names(cfg.study) == list(OPTIMIZERS)


FULL_BATCH_ONLY = [name for name, spec in OPTIMIZERS.items() if spec.full_batch_only]


@pytest.mark.skipif(not FULL_BATCH_ONLY, reason="no full-batch-only entry")
def test_full_batch_only_optimizers_get_their_full_batch_cells_only(tmp_path):
    only = FULL_BATCH_ONLY[0]
    cfg = study_cfg(tmp_path, "study.tasks=[regression]", f"study.optimizers=[sgd,{only}]", "study.accumulation=[8x4]")
    cells = expand(cfg.study, validate(cfg.study))
    assert {c.batch_size for c in cells if c.optimizer == only} == {"full"}
    assert {(c.batch_size, c.accumulation_steps) for c in cells if c.optimizer == "sgd"} == {
        (1, 1), (32, 1), ("full", 1), (32, 4)}
    cfg = study_cfg(tmp_path, "study.tasks=[regression]", f"study.optimizers=[sgd,{only}]", "study.batch_sizes=[1,32]")
    with pytest.raises(ConfigError, match=rf"{only}, which run at batch_size=full only.*add full or drop them"):
        validate(cfg.study)


def test_shrunken_study_runs_end_to_end_and_resumes(tmp_path):
    cfg = study_cfg(tmp_path, *SMALL, "study.tune=false")
    lines: list[str] = []
    study_and_report(cfg, echo=lines.append)
    ids = final_ids(tmp_path)
    assert len(ids) == 2 * 2 * 2 * 2  # tasks x optimizers x batch sizes x seeds
    assert (tmp_path / "config.yaml").is_file() and (tmp_path / "environment.json").is_file()
    table = final_table(tmp_path)
    assert set(table["batch_size"]) == {1, 1000} and (table["n_seeds"] == 2).all()
    assert "Learning rates were not tuned" in (tmp_path / "report" / "README.md").read_text()
    mtimes = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "runs").iterdir()}
    study_and_report(cfg, echo=lines.append)  # resume: nothing left to do
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "runs").iterdir()} == mtimes
    assert "0 final run(s) trained now" in lines[-1]


def test_two_workers_give_the_same_table_as_one(tmp_path):
    tables = []
    for workers in (1, 2):
        out = tmp_path / f"w{workers}"
        study_and_report(study_cfg(out, *SMALL, "study.tune=false", "study.tasks=[regression]",
                                   f"study.workers={workers}"), echo=lambda *_: None)
        tables.append(final_table(out))
    pd.testing.assert_frame_equal(tables[0], tables[1])
    assert final_ids(tmp_path / "w1") == final_ids(tmp_path / "w2")


def test_submitit_local_executor_runs_cells(tmp_path):
    pytest.importorskip("submitit")
    cfg = study_cfg(tmp_path, *SMALL, "study.tune=false", "study.tasks=[regression]", "study.optimizers=[sgd]",
                    "study.launcher=submitit", "study.submitit.cluster=local", "study.workers=2")
    study_and_report(cfg, echo=lambda *_: None)
    assert len(final_ids(tmp_path)) == 2 * 2
    assert any((tmp_path / "submitit").iterdir())


def _run_until_killed(results_dir: Path, overrides: list[str], min_files: int) -> None:
    proc = subprocess.Popen([SUITE_STUDY, f"results_dir={results_dir}", *overrides],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    runs = results_dir / "runs"
    while time.time() < deadline and proc.poll() is None:
        if runs.is_dir() and len(list(runs.glob("*.parquet"))) >= min_files:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the study finished before it could be killed; make it bigger"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def test_kill_9_then_rerun_completes_with_the_same_runs(tmp_path):
    overrides = [*SMALL, "study.tune=false", "study.budgets.regression.max_steps=400",
                 "study.budgets.tiny_mlp.max_steps=400"]
    _run_until_killed(tmp_path / "killed", overrides, min_files=2)
    killed_before = len(list((tmp_path / "killed" / "runs").glob("*.parquet")))
    assert 2 <= killed_before < 8  # one file per cell: its two final runs are stored in one commit
    for out in ("killed", "clean"):  # in this process: the console script's run is the killed one
        study_and_report(study_cfg(tmp_path / out, *overrides), echo=lambda *_: None)
    assert final_ids(tmp_path / "killed") == final_ids(tmp_path / "clean")
    rows = pd.read_parquet(tmp_path / "killed" / "runs")
    assert not rows.duplicated(["run_id", "step"]).any()
    pd.testing.assert_frame_equal(final_table(tmp_path / "killed"), final_table(tmp_path / "clean"))


@pytest.mark.parametrize("override, message", [
    ("study.optimizers=[adam,no_such_optimizer]", "no_such_optimizer"),
    ("study.tasks=[cifar]", "cifar"),
    ("study.batch_sizes=[0,full]", "batch_sizes"),
    ("study.batch_sizes=[]", "batch_sizes"),
    ("study.accumulation=[64]", "MxK"),
    ("study.seeds=[-1]", "seeds"),
    ("study.workers=0", "workers"),
    ("study.launcher=mpi", "launcher"),
])
def test_bad_axes_are_rejected_with_the_valid_choices(tmp_path, override, message):
    cfg = study_cfg(tmp_path, *SMALL, "study.tune=false", override)
    with pytest.raises(ConfigError, match=message):
        study_and_report(cfg, echo=lambda *_: None)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_bad_axis_from_the_command_line_is_one_clear_line(tmp_path):
    out = subprocess.run([SUITE_STUDY, f"results_dir={tmp_path}", "study.optimizers=[adam,no_such_optimizer]"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert "no_such_optimizer" in out.stderr and "Traceback" not in out.stderr
    assert "sgd" in out.stderr  # the valid names are listed


@pytest.mark.slow
@pytest.mark.parametrize("min_files", [2, 9, 20])
def test_kill_9_a_tuned_study_from_outside_then_rerun_gives_the_clean_study(tmp_path, min_files):
    """The issue's reproduction, end to end through the console script: kill -9 once ``min_files``
    runs are stored (in the first trial batch, later trials, the final runs), then rerun."""
    overrides = [*SMALL, "study.n_trials=4", "study.tune_batch=4", "study.budgets.regression.max_steps=200",
                 "study.budgets.tiny_mlp.max_steps=200"]
    _run_until_killed(tmp_path / "killed", overrides, min_files=min_files)
    for out in ("killed", "clean"):
        done = subprocess.run([SUITE_STUDY, f"results_dir={tmp_path / out}", *overrides],
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr
        assert "registry lr" not in done.stdout
    killed, clean = (pd.read_parquet(tmp_path / out / "runs") for out in ("killed", "clean"))
    assert sorted(killed["run_id"].unique()) == sorted(clean["run_id"].unique())  # trials and final runs
    # Exact but for the last bit of excess_loss: the regression task's closed-form optimum (lstsq)
    # depends on the BLAS threading state of the process that built the task.
    pd.testing.assert_frame_equal(final_table(tmp_path / "killed"), final_table(tmp_path / "clean"), rtol=1e-12)
