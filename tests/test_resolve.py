"""Bisection rounds that resolve a cell's optimum (``tune.resolve``): where they probe, that they stop
when the optimum is resolved or the budget is spent, and that a kill between recording a round and
queueing its trials resumes to the same trials as a run never interrupted."""
from __future__ import annotations

import json
import math
import subprocess
import sys

import optuna
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from suite.cli import CONF_DIR
from suite.study.runner import study_and_report
from suite.tune.refine import ROUNDS, bisection_lrs
from suite.tune.space import values_of, tune_spec
from suite.tune.storage import default_journal, open_storage
from suite.tune.summary import best_trial
from suite.tune.tuner import cell_name_of, tune_cell

TINY = ("batch_size=full", "budget.epochs=20", "eval.points=4", "progress=false", "threads=1", "tune.pruner=none",
        "tune.n_trials=4", "tune.batch=2")


def tcfg(results_dir, *overrides):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name="config", overrides=[*TINY, f"results_dir={results_dir}", *overrides])


def study_of(cfg) -> optuna.Study:
    name = cell_name_of(cfg)
    return optuna.load_study(study_name=name, storage=open_storage(default_journal(cfg.results_dir, name)))


def trial_values(study: optuna.Study) -> list[tuple[int, float, float]]:
    return sorted((t.user_attrs["slot"], t.params["lr"], t.value) for t in study.get_trials() if t.value is not None)


def test_bisection_probes_the_geometric_midpoints_of_the_gaps_beside_the_best():
    lrs = bisection_lrs(0.01, [0.001, 0.005, 0.01, 0.04], (1e-4, 1.0))
    assert lrs == pytest.approx([math.sqrt(0.005 * 0.01), math.sqrt(0.01 * 0.04)])
    assert bisection_lrs(0.01, [0.005, 0.01], (1e-4, 1.0)) == pytest.approx([math.sqrt(0.005 * 0.01)])  # nothing above
    closed = bisection_lrs(0.01, [0.00999999999999, 0.01, 0.0100000000001], (1e-4, 1.0))
    assert closed == []  # the gaps closed to the rounding of sampled values: nothing left to halve


def test_rounds_stop_when_resolved_or_when_the_budget_is_spent(tmp_path):
    cfg = tcfg(tmp_path, "tune.resolve=5")
    export = tune_cell(cfg, echo=lambda *_: None)
    assert 0 < export["n_resolving"] <= 5 and export["n_trials"] == 4 + export["n_resolving"]
    assert export["resolution"]["resolved"] or export["n_resolving"] == 5
    study = study_of(cfg)
    tspec = tune_spec(cfg.tune, "sgd")
    for r in study.user_attrs[ROUNDS]:  # each round probes between its best and that best's neighbours
        before = [t for t in study.get_trials() if t.user_attrs["slot"] < r["first"]]
        best = values_of(best_trial(before).params, tspec)[0]
        tried = sorted(values_of(t.params, tspec)[0] for t in before)
        assert r["lrs"] == bisection_lrs(best, tried, tspec.lr_range)[: len(r["lrs"])]
    again = tune_cell(cfg, echo=lambda *_: None)  # finished: nothing more to run, the same choice
    assert again["n_run_here"] == 0 and again["lr"] == export["lr"]


def test_a_round_recorded_but_not_queued_resumes_to_the_trials_of_an_uninterrupted_run(tmp_path):
    whole = tcfg(tmp_path / "whole", "tune.resolve=2")
    tune_cell(whole, echo=lambda *_: None)
    cut = tcfg(tmp_path / "cut", "tune.resolve=2")
    tune_cell(tcfg(tmp_path / "cut", "tune.resolve=0"), echo=lambda *_: None)  # the search alone
    study = study_of(cut)
    tspec = tune_spec(cut.tune, "sgd")
    trials = study.get_trials()
    best = best_trial(trials)
    lrs = bisection_lrs(values_of(best.params, tspec)[0], [values_of(t.params, tspec)[0] for t in trials], tspec.lr_range)
    study.set_user_attr(ROUNDS, [{"first": 4, "params": dict(best.params), "lrs": lrs}])  # killed here
    resumed = tune_cell(cut, echo=lambda *_: None)
    assert lrs and resumed["n_resolving"] == 2
    assert trial_values(study_of(cut)) == trial_values(study_of(whole))


STUDY = ["study.tasks=[regression]", "study.optimizers=[sgd]", "study.batch_sizes=[full]", "study.seeds=[0]",
         "study.tune_seeds=[1000]", "study.n_trials=4", "study.tune_batch=2", "study.eval_points=4", "study.widen=false",
         "study.budgets.regression.max_steps=40", "progress=false", "+study.report.figures.formats=[png]"]


def test_a_study_continued_with_bisection_rounds_runs_them_on_its_finished_cells(tmp_path):
    def study(*overrides):
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            cfg = compose(config_name="study_app", overrides=[f"results_dir={tmp_path}", *STUDY, *overrides])
        return study_and_report(cfg, echo=lambda *_: None)

    def export():
        (path,) = (tmp_path / "tuned").glob("*.json")
        return json.loads(path.read_text())

    study("study.resolve=0")
    before = export()
    assert before["n_resolving"] == 0 and before["n_finished"] == 4
    study("study.resolve=3")  # the finished cell is not skipped: its optimum is bisected now
    after = export()
    assert 0 < after["n_resolving"] <= 3 and after["n_finished"] == 4 + after["n_resolving"]
    assert after["resolution"]["resolved"] or after["n_resolving"] == 3


def test_refinement_runs_once_when_the_best_trial_is_trial_zero(tmp_path):
    # The study marks its refinement with the number of the trial it refined around: 0 is a mark too
    # (read as "not refined" it queued the refinement again and again, without end).
    cfg = tcfg(tmp_path, "tune.n_trials=1", "tune.refine=2")
    code = ("import sys; from omegaconf import OmegaConf; from suite.tune.tuner import tune_cell; "
            "e = tune_cell(OmegaConf.load(sys.argv[1]), echo=lambda *_: None); print(e['n_trials'], e['n_refined'])")
    (tmp_path / "cfg.yaml").write_text(OmegaConf.to_yaml(cfg))
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "cfg.yaml")], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["3", "2"]
