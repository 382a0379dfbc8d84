"""``suite-train`` end to end, as a user runs it: the console script in a subprocess.

Each subprocess pays ~3 s of CPU to import torch, pandas and Hydra, so all of them are launched
together from one module fixture (four at a time) and the tests assert on the outcomes. Bad
input is checked in-process through the same function the console script runs (``guarded``).
"""
from __future__ import annotations

import os
import re
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pytest
import torch

from suite.cli import guarded
from suite.optim.registry import OPTIMIZERS
from suite.run.execute import execute
from suite.run.prepare import prepare
from suite.tasks import TASKS
from suite.types import COLUMNS

# The columns every row carries (besides the hyperparameter columns).
ISSUE_COLUMNS = (
    "run_id", "task", "model", "optimizer", "regime", "batch_size", "accumulation_steps", "sampling", "lr",
    "seed", "step", "epoch", "samples", "time_s", "train_loss", "minibatch_loss", "val_loss", "test_loss",
    "val_accuracy", "test_accuracy", "excess_loss", "diverged", "device", "torch_version", "threads", "hostname",
)
COMMON = ("threads=1", "progress=false")  # one thread: the machine is shared; no bar in captured logs
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"  # what device=auto picks
DAMAGED = b"PAR1 this run was cut off mid-write"  # a run file cut off mid-write


def run_cli(script, args, env, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([script, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=300)


def run_all(script, cases: dict[str, list[str]], env, cwd, workers: int) -> dict[str, subprocess.CompletedProcess]:
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {key: pool.submit(run_cli, script, args, env, cwd) for key, args in cases.items()}
        return {key: f.result() for key, f in futures.items()}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """Hermetic data search: no user cache, no env var (the system directory stays searched)."""
    e = {k: v for k, v in os.environ.items() if k not in ("OPTSUITE_DATA_DIR", "HYDRA_FULL_ERROR")}
    e["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("cache"))
    return e


@pytest.fixture(scope="module")
def fake_dir(tmp_path_factory, write_dataset):
    return write_dataset(tmp_path_factory.mktemp("mnist"))


@pytest.fixture(scope="module")
def task_args(fake_dir, fashion_mnist_dir) -> dict[str, list[str]]:
    """One small run per task; fashion_mnist reads the real files when they are installed."""
    fashion = [] if fashion_mnist_dir else [f"task.data_dir={fake_dir}", "task.val_size=20"]
    return {
        "regression": ["task=regression", "batch_size=full", "lr=0.5", "budget.epochs=30", "eval.points=4"],
        "tiny_mlp": ["task=tiny_mlp", "task.n=200", "optimizer=adam", "lr=0.01", "budget.epochs=2", "eval.points=3"],
        "fashion_mnist": ["task=fashion_mnist", "task.train_size=512", "budget.max_steps=5", "eval.points=2", *fashion],
        "mnist": ["task=mnist", f"task.data_dir={fake_dir}", "task.val_size=20", "optimizer=momentum", "batch_size=16",
                  "accumulation_steps=4", "sampling=sequential", "budget.max_steps=5", "eval.points=2"],
    }


@pytest.fixture(scope="module")
def launched(tmp_path_factory, env, task_args, compose, suite_train):
    """Every subprocess of this module, started together (4 at a time): the end-to-end run of each
    task, and the console script on the inputs only Hydra sees plus one SuiteError."""
    root = tmp_path_factory.mktemp("cli")
    cases = {name: [*args, f"results_dir={root / name}", *COMMON] for name, args in task_args.items()}
    cases["tiny_mlp"].remove("progress=false")  # this one shows its progress bar
    damaged = root / "damaged" / "runs" / f"{prepare(compose('budget.max_steps=3')).run_id}.parquet"
    damaged.parent.mkdir(parents=True)
    damaged.write_bytes(DAMAGED)
    cases.update({
        "unknown-task": ["task=cifar10", *COMMON],
        "unknown-optimizer": ["optimizer=no_such_optimizer", *COMMON],
        "corrupt-parquet": ["budget.max_steps=3", f"results_dir={root / 'damaged'}", "force=true", *COMMON],
    })
    return root, damaged, run_all(suite_train, cases, env, root, workers=4)


@pytest.fixture(scope="module")
def trained(launched):
    root, _, outcomes = launched
    return root, outcomes


def test_every_task_has_an_end_to_end_run(task_args):
    assert set(task_args) == set(TASKS)


@pytest.mark.parametrize("task", ["regression", "tiny_mlp", "fashion_mnist", "mnist"])
def test_end_to_end(task, trained):
    root, outcomes = trained
    out = outcomes[task]
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr
    files = list((root / task / "runs").glob("*.parquet"))
    assert len(files) == 1 and f"stored: {files[0]}" in out.stdout
    rows = pd.read_parquet(root / task / "runs")
    assert set(ISSUE_COLUMNS) <= set(rows.columns) and list(rows.columns[:len(COLUMNS)]) == list(COLUMNS)
    last = rows.iloc[-1]
    assert rows["task"].eq(task).all() and rows["step"].is_monotonic_increasing and rows["step"].iloc[0] == 0
    assert rows["train_loss"].notna().all() and not rows["diverged"].any()
    assert last["time_s"] > 0 and last["device"] == DEVICE and last["threads"] == 1
    assert pd.api.types.is_integer_dtype(rows["batch_size"])
    classifier = task in ("fashion_mnist", "mnist")
    assert rows["test_accuracy"].notna().all() == classifier and rows["test_accuracy"].isna().all() != classifier
    assert rows["excess_loss"].notna().all() == (task == "regression")
    assert f"task={task}" in out.stdout and "train loss" in out.stdout


def test_run_id_stable_across_processes(trained, task_args, compose):
    """The file a subprocess stored is named by the id this process computes for the same config."""
    root, _ = trained
    for task, args in task_args.items():
        expected = prepare(compose(*args)).run_id
        assert (root / task / "runs" / f"{expected}.parquet").is_file(), task


def test_progress_bar_and_summary(trained):
    _, outcomes = trained
    assert re.search(r"\d+/\d+ \[", outcomes["tiny_mlp"].stderr), "a progress bar on stderr"
    assert not re.search(r"\d+/\d+ \[", outcomes["regression"].stderr), "progress=false: no bar"


def test_labels_and_gd_result(trained):
    root, _ = trained
    reg = pd.read_parquet(root / "regression" / "runs")
    assert reg["regime"].eq("GD").all() and reg["batch_size"].eq(1000).all()
    mnist = pd.read_parquet(root / "mnist" / "runs")
    assert mnist["micro_batch"].eq(4).all() and mnist["sampling"].eq("sequential").all()
    assert mnist["optimizer_impl"].iloc[0] == "fused" and mnist["momentum"].eq(0.9).all()


def test_rerun_skips_and_force_reruns(trained, task_args, compose):
    """The run a subprocess stored is found by this process (same run id) and skipped; force re-runs it."""
    root, _ = trained
    cfg = compose(*task_args["regression"], f"results_dir={root / 'regression'}", "progress=false")
    (path,) = (root / "regression" / "runs").glob("*.parquet")
    before, stamp, first = path.read_bytes(), path.stat().st_mtime_ns, pd.read_parquet(path)
    said: list[str] = []
    assert execute(cfg, echo=said.append) is None
    assert said == [f"run {path.stem} is already stored at {path}; skipped (force=true re-runs it)."]
    assert path.read_bytes() == before and path.stat().st_mtime_ns == stamp
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name], "no new file, no temp file left"
    cfg.force = True
    frame = execute(cfg, echo=said.append)
    assert frame is not None and f"stored: {path}" in said[-1]
    assert path.stat().st_mtime_ns != stamp and sorted(p.name for p in path.parent.iterdir()) == [path.name]
    assert pd.read_parquet(path)["train_loss"].tolist() == pytest.approx(first["train_loss"].tolist(), rel=1e-6)


# --- bad input ------------------------------------------------------------------------------------
# Every case runs the plain function behind the console script (``guarded(execute)`` on a composed
# config, as ``suite-train`` does after Hydra parsed the command line): exit status 2, one line on
# stderr, no traceback, nothing stored. The console script itself is run in a subprocess for the
# cases only Hydra reports (unknown task / optimizer) and for one SuiteError end to end.

BAD = {  # id -> (overrides, what stderr says)
    "batch-zero": (["batch_size=0"], "batch_size=0 is invalid for this task: it must be an integer from 1 to n=1000"),
    "batch-negative": (["batch_size=-4"], "batch_size=-4 is invalid for this task"),
    "batch-too-big": (["batch_size=1001"], "batch_size=1001 is invalid for this task"),
    "accumulation": (["batch_size=32", "accumulation_steps=5"], "accumulation_steps=5 must be a positive integer "
                                                                 "that divides batch_size=32"),
    "lr-zero": (["lr=0"], "lr=0 is invalid; the learning rate must be a finite number > 0"),
    "lr-negative": (["lr=-0.5"], "lr=-0.5 is invalid"),
    "lr-nan": (["lr=nan"], "lr=nan is invalid"),
    "lr-inf": (["lr=inf"], "lr=inf is invalid"),
    "epochs-negative": (["budget.epochs=-1"], "budget.epochs=-1 is invalid; it must be a finite number >= 0"),
    "hparam-range": (["optimizer=momentum", "optimizer.momentum=1.5"], "momentum=1.5 is out of range"),
    "impl-fused": (["optimizer=rmsprop", "optimizer.impl=fused"], "torch has no fused RMSprop"),
}


def run_guarded(cfg, capsys) -> str:
    with pytest.raises(SystemExit) as exit_:
        guarded(execute)(cfg)
    captured = capsys.readouterr()
    assert exit_.value.code == 2
    assert "Traceback" not in captured.err + captured.out and "stored:" not in captured.out
    assert captured.err.startswith("error: ")
    return captured.err


@pytest.mark.parametrize("case", BAD)
def test_bad_input_one_line_exit_2(case, compose, results_dir, capsys):
    overrides, expected = BAD[case]
    err = run_guarded(compose(*overrides, f"results_dir={results_dir}", "progress=false"), capsys)
    assert expected in err and len(err.strip().splitlines()) == 1, err
    assert not (results_dir / "runs").exists() or not list((results_dir / "runs").glob("*.parquet"))


def test_missing_idx_files(compose, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("OPTSUITE_DATA_DIR", raising=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    err = run_guarded(compose("task=mnist", f"task.data_dir={empty}", f"results_dir={tmp_path / 'r'}"), capsys)
    assert f"task.data_dir={empty}: the directory lacks train-images-idx3-ubyte" in err  # one message
    assert "task.data_dir" in err and "python -m suite.tasks.idx mnist" in err and len(err.splitlines()) == 1
    if Path("/usr/share/datasets/mnist").is_dir():
        return  # MNIST is installed system-wide, so nothing is missing without a data_dir
    err = run_guarded(compose("task=mnist", f"results_dir={tmp_path / 'r'}"), capsys)
    assert "dataset 'mnist' not found" in err  # it lists the directories searched, one a line
    for searched in (tmp_path / "cache" / "optsuite" / "mnist", Path("/usr/share/datasets/mnist")):
        assert f"  {searched}\n" in err
    assert "task.data_dir=<dir>" in err


def test_corrupt_idx_file(compose, tmp_path, capsys, write_dataset):
    corrupt = write_dataset(tmp_path / "corrupt", gz=False)
    labels = corrupt / "train-labels-idx1-ubyte"
    labels.write_bytes(labels.read_bytes()[:50])
    err = run_guarded(compose("task=mnist", f"task.data_dir={corrupt}", "task.val_size=20",
                              f"results_dir={tmp_path / 'r'}"), capsys)
    assert f"{labels} has 50 bytes" in err and "truncated or corrupt" in err and len(err.splitlines()) == 1


def test_unwritable_results_dir(compose, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory (root can write anywhere, but cannot mkdir below a file)")
    err = run_guarded(compose(f"results_dir={blocker / 'results'}"), capsys)
    assert f"results_dir {blocker / 'results'} is not writable" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("force", [False, True])
def test_corrupt_parquet_is_reported_and_left_untouched(force, compose, results_dir, capsys):
    cfg = compose("budget.max_steps=3", f"results_dir={results_dir}", f"force={str(force).lower()}")
    path = results_dir / "runs" / f"{prepare(cfg).run_id}.parquet"
    path.parent.mkdir(parents=True)
    path.write_bytes(DAMAGED)
    err = run_guarded(cfg, capsys)
    assert f"{path} is not a readable parquet file" in err and "left untouched" in err
    assert len(err.splitlines()) == 1
    assert path.read_bytes() == DAMAGED and sorted(p.name for p in path.parent.iterdir()) == [path.name]



@pytest.fixture(scope="module")
def console(launched):
    _, damaged, outcomes = launched
    return damaged, outcomes


@pytest.mark.parametrize("case,names", [("unknown-task", TASKS), ("unknown-optimizer", OPTIMIZERS)])
def test_unknown_names_are_one_line_with_the_choices(case, names, console):
    """Hydra refuses these while it composes the command line; the suite composes it first and says it
    in one line (exit 2), as it does every other bad input."""
    _, outcomes = console
    out = outcomes[case]
    assert out.returncode == 2 and "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1
    group, name = ("task", "cifar10") if case == "unknown-task" else ("optimizer", "no_such_optimizer")
    assert out.stderr.startswith(f"error: {group}={name}: no such {group}; valid: "), out.stderr
    listing = out.stderr.split("valid: ", 1)[1].split(".")[0].split(", ")
    assert set(names) <= set(listing), out.stderr


@pytest.mark.parametrize("overrides, message", [
    (["+optimiser=adam"], "error: unknown config key optimiser; valid top-level keys: task, optimizer"),
    (["eval.points=abc"], "error: eval.points='abc' is invalid"),
    (["eval.every_steps=abc"], "error: eval.every_steps='abc' must be null or an integer"),
    (["results_dir="], "error: results_dir='' is invalid"),
])
def test_what_hydra_lets_through_is_refused_in_one_line(overrides, message, compose, results_dir, capsys):
    """Hydra accepts these (a '+' key, a string where a number belongs, an empty value); the suite
    refuses them before any work: one line, exit 2, nothing written."""
    err = run_guarded(compose(f"results_dir={results_dir}", *overrides, "progress=false"), capsys)
    assert err.startswith(message) and len(err.strip().splitlines()) == 1, err
    assert not results_dir.exists()


def test_console_script_suite_error(console):
    """A SuiteError through the console script: one line, exit 2, and the damaged file untouched
    even with force=true (the in-process cases above cover every other bad input)."""
    path, outcomes = console
    out = outcomes["corrupt-parquet"]
    assert out.returncode == 2 and "Traceback" not in out.stderr + out.stdout, out.stderr
    assert out.stderr.startswith("error: ") and f"{path} is not a readable parquet file" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "stored:" not in out.stdout
    assert path.read_bytes() == DAMAGED
