"""Tuning: real Optuna studies on real storages, trials trained and stored by the suite.

Budgets are tiny (regression, full batch, tens of steps) except where a test checks the quality
of the search. Three ``suite-tune`` processes share one journal file in the concurrency test.
"""
from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
import torch
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from optuna.trial import TrialState

from suite.cli import CONF_DIR
from suite.run.execute import execute
from suite.run.prepare import prepare
from suite.tune.claims import claim
from suite.tune.space import PRUNERS, SAMPLERS, lr_grid, tune_spec
from suite.tune.storage import default_journal, mask_url, open_storage
from suite.tune.tuner import _open_study, cell_name_of, load_tuned, tune_cell
from suite.types import ConfigError, StoreError

SUITE_TUNE = str(Path(sys.executable).with_name("suite-tune"))
TINY = ("batch_size=full", "budget.epochs=20", "eval.points=4", "progress=false", "threads=1")


def tcfg(results_dir, *overrides):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return hydra_compose(config_name="config", overrides=[*TINY, f"results_dir={results_dir}", *overrides])


def study_of(cfg) -> optuna.Study:
    name = cell_name_of(cfg)
    url = cfg.tune.storage or default_journal(cfg.results_dir, name)
    return optuna.load_study(study_name=name, storage=open_storage(url))


def runs(results_dir) -> pd.DataFrame:
    return pd.read_parquet(Path(results_dir) / "runs")


def quiet(*_):
    pass


def reference_val_losses(task, lrs: np.ndarray, steps: int) -> np.ndarray:
    """Validation MSE after ``steps`` full-batch GD steps of ``Linear(1, 1)`` for every lr at once.

    Written from the formulas (∇w = 2·mean(r·x), ∇b = 2·mean(r)), in float64, from the suite's
    seed-0 initialization: an independent reference for the grid the tuner is judged against.
    """
    model = task.make_model(0)
    x, y = task.train.x.double(), task.train.y.double()
    lr = torch.tensor(lrs, dtype=torch.float64)
    w = model.weight.detach().double().view(1).repeat(len(lrs))
    b = model.bias.detach().double().repeat(len(lrs))
    for _ in range(steps):
        r = x * w + b - y  # n × K residuals
        w, b = w - lr * 2 * (r * x).mean(0), b - lr * 2 * r.mean(0)
    val = ((task.val.x.double() * w + b - task.val.y.double()) ** 2).mean(0)
    return torch.nan_to_num(val, nan=math.inf).numpy()


def test_six_trials_find_an_lr_within_10_percent_of_the_fine_grid_best(results_dir):
    cfg = tcfg(results_dir, "budget.epochs=1000", "tune.n_trials=6")
    best = tune_cell(cfg, echo=quiet)
    task = prepare(cfg).task
    lo, hi = tune_spec(cfg.tune, "sgd").lr_range
    grid = np.geomspace(lo, hi, 400)
    losses = reference_val_losses(task, grid, steps=1000)
    # The reference agrees with the suite's own run of the chosen lr (float32 vs float64).
    assert reference_val_losses(task, np.array([best["lr"]]), 1000)[0] == pytest.approx(best["value"], rel=1e-3)
    assert best["value"] <= 1.1 * losses.min(), (best["lr"], grid[losses.argmin()])
    assert best["n_finished"] == 6 and best["trial"] is not None


@pytest.mark.parametrize("storage", [None, "sqlite", "journal"])
def test_rerun_continues_to_n_trials_in_total(tmp_path, storage):
    urls = {None: [], "sqlite": [f"tune.storage=sqlite:///{tmp_path / 'optuna.db'}"],
            "journal": [f"tune.storage=journal:{tmp_path / 'elsewhere' / 'study.log'}"]}
    url = urls[storage]
    first = tune_cell(tcfg(tmp_path, "tune.n_trials=3", *url), echo=quiet)
    second = tune_cell(tcfg(tmp_path, "tune.n_trials=5", *url), echo=quiet)
    third = tune_cell(tcfg(tmp_path, "tune.n_trials=5", *url), echo=quiet)
    assert (first["n_run_here"], second["n_run_here"], third["n_run_here"]) == (3, 2, 0)
    assert third["n_finished"] == 5
    study = study_of(tcfg(tmp_path, *url))
    assert [t.number for t in study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))] == list(range(5))
    rows = runs(tmp_path)
    assert sorted(rows.groupby("trial").run_id.nunique().index) == list(range(5))
    assert (rows.groupby("trial").run_id.nunique() == 1).all() and (rows.study == first["cell"]).all()
    assert len(list((tmp_path / "runs").glob("*.parquet"))) == 5


def test_trials_asked_in_batches_are_all_trained_and_recorded(results_dir):
    cfg = tcfg(results_dir, "tune.n_trials=7", "tune.batch=3", "tune.tpe.n_startup_trials=3")
    summary = tune_cell(cfg, echo=quiet)
    trials = study_of(cfg).get_trials()
    assert summary["n_finished"] == summary["n_run_here"] == len(trials) == 7
    assert len({t.params["lr"] for t in trials}) == 7  # constant liar: a batch does not repeat itself
    assert sorted(runs(results_dir).trial.unique()) == list(range(7))


def trial_lrs(results_dir, seed) -> list[float]:
    cfg = tcfg(results_dir, "tune.n_trials=4", f"tune.seed={seed}", "tune.tpe.n_startup_trials=2")
    tune_cell(cfg, echo=quiet)
    return [t.params["lr"] for t in study_of(cfg).get_trials()]


def test_same_seed_same_trials_other_seed_other_trials(tmp_path):
    a, b, c = (trial_lrs(tmp_path / name, seed) for name, seed in (("a", 0), ("b", 0), ("c", 1)))
    assert a == b and len(a) == 4
    assert not set(a) & set(c)


def test_a_forced_divergence_is_a_finished_penalized_trial(results_dir):
    cfg = tcfg(results_dir, "tune.n_trials=2", "tune.lr_range=[50,100]")
    summary = tune_cell(cfg, echo=quiet)
    trials = study_of(cfg).get_trials()
    rows = runs(results_dir)
    initial_val = rows[rows.step == 0].val_loss.iloc[0]
    for t in trials:
        assert t.state == TrialState.COMPLETE and t.user_attrs["diverged"] is True
        assert math.isfinite(t.value) and t.value == pytest.approx(cfg.divergence_factor * initial_val)
    assert rows.diverged.all() and summary["n_diverged"] == 2
    exported = load_tuned(results_dir, cfg)  # no usable lr, exported with why (the report reads it)
    assert summary["lr"] is None and exported["lr"] is None and exported["lr_source"].startswith("registry")


def test_pruned_trials_are_told_pruned_and_their_rows_stored(results_dir):
    cfg = tcfg(results_dir, "tune.n_trials=8", "tune.median.n_startup_trials=1", "tune.prune_after=0",
               "budget.epochs=40", "eval.points=8", "tune.sampler=random")
    summary = tune_cell(cfg, echo=quiet)
    pruned = study_of(cfg).get_trials(states=(TrialState.PRUNED,))
    assert pruned and summary["n_pruned"] == len(pruned)
    rows = runs(results_dir)
    for t in pruned:
        mine = rows[rows.trial == t.number]
        assert mine.pruned.all() and mine.step.max() < 40 and t.intermediate_values
        assert t.value == mine.val_loss.iloc[-1]  # Optuna keeps the last reported value


@pytest.mark.parametrize("sampler", list(SAMPLERS))
@pytest.mark.parametrize("pruner", list(PRUNERS))
def test_every_sampler_and_pruner_runs_a_recorded_study(tmp_path, sampler, pruner):
    cfg = tcfg(tmp_path, "tune.n_trials=3", f"tune.sampler={sampler}", f"tune.pruner={pruner}", "tune.seed=7")
    summary = tune_cell(cfg, echo=quiet)
    study = study_of(cfg)
    assert summary["n_finished"] == 3 and study.user_attrs["sampler"]["sampler"] == sampler
    assert study.user_attrs["sampler"]["seed"] == 7
    if sampler == "grid":  # every point once
        assert sorted(t.params["lr"] for t in study.trials) == lr_grid(tune_spec(cfg.tune, "sgd"))


def test_export_feeds_suite_train_lr_tuned(results_dir):
    cfg = tcfg(results_dir, "optimizer=momentum", "tune.search=[momentum]", "tune.n_trials=3")
    with pytest.raises(ConfigError, match="suite-tune task=regression optimizer=momentum batch_size=full"):
        prepare(tcfg(results_dir, "optimizer=momentum", "tune.search=[momentum]", "lr=tuned"))
    best = tune_cell(cfg, echo=quiet)
    exported = json.loads(Path(best["path"]).read_text())
    assert Path(best["path"]).name == f"{cell_name_of(cfg)}.json" and exported == load_tuned(results_dir, cfg)
    raw = study_of(cfg).best_params["lr"]  # as drawn; the trial trained (and is exported) at 12 digits
    assert exported["lr"] == float(f"{raw:.12g}") != raw and exported["sampler"]["seed"] == 0
    assert runs(results_dir).set_index("run_id").loc[exported["run_id"], "lr"].iloc[0] == exported["lr"]
    assert exported["hparams"]["momentum"] == pytest.approx(1 - exported["params"]["one_minus_momentum"])
    run_cfg = tcfg(results_dir, "optimizer=momentum", "tune.search=[momentum]", "lr=tuned", "seed=3")
    spec = prepare(run_cfg).spec
    assert (spec.lr, spec.hparams["momentum"]) == (exported["lr"], exported["hparams"]["momentum"])
    frame = execute(run_cfg, echo=quiet)
    assert frame.lr.iloc[0] == exported["lr"] and frame["trial"].isna().all()  # a plain run, not a trial


def test_searched_hyperparameters_are_on_their_log_scales(results_dir):
    cfg = tcfg(results_dir, "optimizer=adam", "tune.search=[beta1,eps]", "tune.n_trials=3", "tune.pruner=none")
    tune_cell(cfg, echo=quiet)
    rows = runs(results_dir).groupby("trial").first()
    for t in study_of(cfg).get_trials():
        assert set(t.params) == {"lr", "one_minus_beta1", "eps"}
        assert all(d.log for d in t.distributions.values())
        assert rows.loc[t.number, "beta1"] == pytest.approx(1 - t.params["one_minus_beta1"])
        assert rows.loc[t.number, "eps"] == pytest.approx(t.params["eps"])


def test_cell_name_is_stable_readable_and_separates_cells(tmp_path):
    name = cell_name_of(tcfg(tmp_path))
    assert name.startswith("regression-sgd-bfull-")
    same = [tcfg(tmp_path / "other", "lr=0.3", "seed=5", "device=cpu", "tune.n_trials=9", "threads=2")]
    assert all(cell_name_of(c) == name for c in same)
    assert cell_name_of(prepare(tcfg(tmp_path))) == name
    others = ["batch_size=100", "task.sigma=0.2", "optimizer.weight_decay=0.1", "budget.epochs=21",
              "sampling=sequential", "dtype=float64"]
    names = {cell_name_of(tcfg(tmp_path, o)) for o in others}
    assert len(names) == len(others) and name not in names
    assert cell_name_of(tcfg(tmp_path, "batch_size=100", "accumulation_steps=4")).startswith("regression-sgd-b100-acc4-")


@pytest.mark.parametrize("override, error, match", [
    ("tune.n_trials=0", ConfigError, "tune.n_trials=0"),
    ("tune.n_trials=-3", ConfigError, "integer >= 1"),
    ("tune.lr_range=[1.0,0.1]", ConfigError, "0 < low < high"),
    ("tune.lr_range=[0,0.1]", ConfigError, "0 < low < high"),
    ("tune.sampler=cmaes", ConfigError, "tpe, qmc, random, grid"),
    ("tune.pruner=asha", ConfigError, "median, hyperband, none"),
    ("tune.search=[momentum]", ConfigError, "optimizer 'sgd' has no searchable"),
    ("tune.ranges.eps=[1e-9,1e-6]", ConfigError, "does not search"),
    ("tune.storage=mongodb://u:secret@db/x", ConfigError, "unknown storage scheme 'mongodb'"),
    ("tune.storage=not-a-url", ConfigError, "not a storage URL"),
])
def test_bad_input_is_one_clear_error(results_dir, override, error, match):
    with pytest.raises(error, match=match) as e:
        tune_cell(tcfg(results_dir, override), echo=quiet)
    assert "secret" not in str(e.value)


def test_grid_with_extra_search_and_bad_ranges_are_refused(results_dir):
    with pytest.raises(ConfigError, match="grid searches the learning rate only"):
        tune_cell(tcfg(results_dir, "optimizer=momentum", "tune.sampler=grid", "tune.search=[momentum]"), echo=quiet)
    with pytest.raises(ConfigError, match="one_minus_momentum.*invalid momentum"):
        tune_cell(tcfg(results_dir, "optimizer=momentum", "tune.search=[momentum]",
                       "tune.ranges.one_minus_momentum=[0.1,1.0]"), echo=quiet)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_database_names_the_url_without_its_password(results_dir):
    url = f"postgresql://tuner:s3cr3t-pw@127.0.0.1:{free_port()}/optsuite"
    with pytest.raises(StoreError) as e:
        tune_cell(tcfg(results_dir, f"tune.storage={url}"), echo=quiet)
    msg = str(e.value)
    assert mask_url(url) in msg and "tuner:***@127.0.0.1" in msg and "s3cr3t" not in msg
    with pytest.raises(StoreError, match="cannot open the Optuna storage sqlite:///"):
        open_storage(f"sqlite:///{results_dir}/no/such/dir/x.db")


def test_continuing_with_other_sampler_settings_is_refused(results_dir):
    tune_cell(tcfg(results_dir, "tune.n_trials=1"), echo=quiet)
    with pytest.raises(ConfigError, match="was started with sampler settings"):
        tune_cell(tcfg(results_dir, "tune.n_trials=2", "tune.seed=1"), echo=quiet)


def test_every_tune_preset_composes_and_validates(tmp_path):
    for path in sorted(Path(CONF_DIR, "tune").glob("*.yaml")):
        spec = tune_spec(tcfg(tmp_path, f"tune={path.stem}").tune, "adam")
        assert spec.n_trials >= 1 and spec.sampler in SAMPLERS
    deepobs = tune_spec(tcfg(tmp_path, "tune=deepobs").tune, "sgd")
    assert (deepobs.sampler, deepobs.n_trials, deepobs.lr_range) == ("grid", 36, (1e-5, 100.0))


def test_a_surplus_claim_is_released_untrained(results_dir):
    cfg = tcfg(results_dir, "tune.n_trials=2")
    tune_cell(tcfg(results_dir, "tune.n_trials=1"), echo=quiet)
    study = study_of(cfg)
    other = study.ask()  # another worker took the second (last) slot after our count
    assert claim(study, 2, "me:1") is None
    surplus = study.trials[-1]
    assert surplus.state == TrialState.FAIL and surplus.user_attrs["surplus"] and not surplus.params
    assert study.trials[other.number].state == TrialState.RUNNING and surplus.number == other.number + 1
    assert claim(study, 3, "me:1").user_attrs["worker"] == "me:1"  # a free slot is claimed


def dead_pid() -> int:
    """The pid of a process that has exited (a worker that died)."""
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    return gone.pid


def test_a_trial_left_running_by_a_dead_worker_is_failed_and_redone(results_dir):
    cfg = tcfg(results_dir, "tune.n_trials=3")
    tune_cell(tcfg(results_dir, "tune.n_trials=1"), echo=quiet)
    study = study_of(cfg)
    abandoned = study.ask()
    abandoned.set_user_attr("worker", f"{socket.gethostname()}:{dead_pid()}")
    lr = abandoned.suggest_float("lr", 1e-4, 3.0, log=True)
    lines = []
    summary = tune_cell(cfg, echo=lines.append)
    trials = study_of(cfg).trials
    assert trials[abandoned.number].state == TrialState.FAIL
    assert summary["n_finished"] == 3 and summary["n_failed"] == 1 and summary["n_run_here"] == 2
    assert any(f"trial {abandoned.number} was left running" in line for line in lines)
    retry = [t for t in trials if t.user_attrs.get("retry_of") == abandoned.number]  # same point, redone
    assert len(retry) == 1 and retry[0].params["lr"] == lr and retry[0].state == TrialState.COMPLETE


def test_a_grid_point_lost_with_its_worker_is_still_evaluated(results_dir):
    cfg = tcfg(results_dir, "tune.sampler=grid", "tune.n_trials=5", "tune.pruner=none")
    tspec = tune_spec(cfg.tune, "sgd")
    name = cell_name_of(cfg)
    study = _open_study(name, default_journal(results_dir, name), tspec, prepare(cfg))
    lost = study.ask()  # a worker took grid point 0, then died
    lost.set_user_attr("worker", f"{socket.gethostname()}:{dead_pid()}")
    lost.suggest_float("lr", *tspec.lr_range, log=True)
    tune_cell(cfg, echo=quiet)
    done = study_of(cfg).get_trials(states=(TrialState.COMPLETE,))
    assert sorted(t.params["lr"] for t in done) == lr_grid(tspec)


def test_three_concurrent_workers_share_one_study_on_the_default_storage(tmp_path):
    if not Path(SUITE_TUNE).is_file():
        pytest.fail(f"console script {SUITE_TUNE} not found; install the package (make install)")
    args = [SUITE_TUNE, *TINY, f"results_dir={tmp_path}", "tune.n_trials=24"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with ThreadPoolExecutor(3) as pool:
        procs = list(pool.map(lambda _: subprocess.run(args, capture_output=True, text=True, timeout=300, env=env),
                              range(3)))
    for p in procs:
        assert p.returncode == 0 and "Traceback" not in p.stderr and "error" not in p.stderr.lower(), p.stderr
    check_shared_study(tcfg(tmp_path), 24, sum(int(p.stdout.split(" trained by this worker")[0].rsplit(" ", 1)[1])
                                               for p in procs))


def check_shared_study(cfg, n_trials: int, trained: int) -> None:
    """Every finished trial trained once and stored once; ``n_trials`` finished in total."""
    study = study_of(cfg)
    finished = study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
    assert n_trials <= len(finished) <= n_trials + 2  # the tolerance ...
    assert len(finished) == n_trials == trained  # ... and what the claims achieve: exactly n
    assert not study.get_trials(states=(TrialState.RUNNING,))
    assert all(t.user_attrs.get("surplus") for t in study.get_trials(states=(TrialState.FAIL,)))
    rows = runs(cfg.results_dir)
    per_trial = rows.groupby("trial").run_id.nunique()
    assert sorted(per_trial.index) == sorted(t.number for t in finished) and (per_trial == 1).all()
    assert len(list(Path(cfg.results_dir, "runs").glob("*.parquet"))) == n_trials
    assert {t.user_attrs["run_id"] for t in finished} == set(rows.run_id)
    exported = load_tuned(cfg.results_dir, cfg)
    assert exported["n_finished"] == n_trials and exported["value"] == min(
        t.value for t in finished if t.state == TrialState.COMPLETE and not t.user_attrs.get("diverged"))
