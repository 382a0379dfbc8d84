"""A study in protocol parts, with re-tunings, refinement and the robust choice: the tuner's side of
the contract the report reads (run configs per part, exports with their resolution and re-tuning,
tags on trials and final runs), on constructed trials and on one tiny study end to end."""
from __future__ import annotations

import json
import math
from pathlib import Path

import optuna
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from optuna.distributions import FloatDistribution
from optuna.trial import create_trial

from suite.cli import CONF_DIR
from suite.study.parts import RETUNE_SEED_STRIDE
from suite.study.presets import cell_config, expand, validate
from suite.study.runner import jobs_of, study_and_report
from suite.tune.refine import REFINE_DECADES, refine_lrs
from suite.tune.space import tune_spec
from suite.tune.storage import open_storage
from suite.tune.summary import best_trial, resolution
from suite.types import ConfigError
from suite.cell import Cell

LR = {"lr": FloatDistribution(1e-4, 10.0, log=True)}
TSPEC = tune_spec({"sampler": "tpe", "pruner": "none", "n_trials": 4, "lr_range": [1e-4, 10.0]}, "sgd")


def study_cfg(results_dir: Path, *overrides: str):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name="study_app", overrides=[f"results_dir={results_dir}", *overrides])


def trial(number: int, lr: float, value: float, **attrs) -> optuna.trial.FrozenTrial:
    made = create_trial(params={"lr": lr}, distributions=LR, value=value, user_attrs=attrs)
    made.number = number
    return made


# --- the tuner's choice and resolution, on constructed trials ---------------------------------------

def test_a_trial_with_a_collapsed_seed_ranks_behind_every_finished_one():
    trials = [trial(0, 0.5, 90.0, collapsed=True), trial(1, 0.1, 120.0), trial(2, 0.2, 100.0),
              trial(3, 0.9, 10.0, diverged=True)]
    assert best_trial(trials).number == 2  # least value among trials whose seeds all finished
    assert best_trial([trials[0], trials[3]]).number == 0  # chosen only where no trial finished every seed


def test_resolution_is_the_lr_interval_of_trials_within_ten_percent_of_the_best():
    trials = [trial(0, 0.10, 100.0), trial(1, 0.08, 109.0), trial(2, 0.2, 110.0), trial(3, 0.02, 111.0),
              trial(4, 1.0, 50.0, diverged=True), trial(5, 0.05, 300.0)]
    got = resolution(trials, TSPEC)
    assert got == {"tolerance": 0.1, "lr_lo": 0.08, "lr_hi": 0.2, "n_within": 2, "resolved": True}
    alone = resolution([trials[0], trials[3], trials[5]], TSPEC)
    assert (alone["n_within"], alone["resolved"], alone["lr_lo"], alone["lr_hi"]) == (0, False, 0.1, 0.1)
    assert resolution([trials[4]], TSPEC)["resolved"] is False  # nothing usable: nothing resolved


def test_refinement_lrs_lie_within_a_quarter_decade_of_the_best_and_inside_the_range():
    lrs = refine_lrs(0.01, (1e-4, 1.0), 4)
    assert len(lrs) == 4 and len(set(lrs)) == 4 and 0.01 not in lrs
    decades = sorted(math.log10(lr / 0.01) for lr in lrs)
    assert decades == pytest.approx([-0.25, -0.125, 0.125, 0.25])
    clipped = refine_lrs(0.9, (1e-4, 1.0), 4)  # near the top of the range: clipped to it, each lr once
    assert max(clipped) == 1.0 and len(clipped) == 3
    assert all(abs(math.log10(lr / 0.9)) <= REFINE_DECADES + 1e-12 for lr in clipped)


# --- presets: parts, budgets per part, validation -----------------------------------------------------

PARTS = ["study.tasks=[regression]", "study.optimizers=[sgd]", "study.batch_sizes=[4,full]", "study.protocol=null",
         "study.parts=[target,budget]", "study.seeds=[0]", "study.tune_seeds=[1000]", "study.eval_points=4",
         "study.budgets.regression.max_steps=60", "study.budgets.regression.epochs=1", "progress=false"]


def test_each_part_gets_its_own_budget_target_and_runs(tmp_path):
    cfg = study_cfg(tmp_path, *PARTS, "study.retunes={regression: 1}")
    cells = expand(cfg.study, validate(cfg.study))
    target, budget = (cell_config(cfg, Cell("regression", "sgd", 4), part) for part in ("target", "budget"))
    assert target.budget.max_steps == 60 and target.budget.epochs == 60 and target.stop_at_target
    assert target.target is not None
    assert budget.budget.max_steps is None and budget.budget.epochs == 1 and budget.target is None
    retuned = cell_config(cfg, Cell("regression", "sgd", 4), "target", retune=1)
    assert retuned.tune.retune == 1 and list(retuned.tune.seeds) == [1000 + RETUNE_SEED_STRIDE]
    assert retuned.tune.seed == cfg.tune.seed + 1
    jobs = jobs_of(cfg, cells)
    assert len(jobs) == len(cells) * 2 * 2  # parts x (primary + one re-tuning)
    assert len({job.label for job in jobs}) == len(jobs)


@pytest.mark.parametrize("overrides, message", [
    (["study.parts=[target,target]"], r"study.parts=\['target', 'target'\] is invalid; list each of target, budget"),
    (["study.parts=[speed]"], r"study.parts=\['speed'\] is invalid"),
    (["study.protocol=target"], r"both name the protocol; set study.protocol=null"),
    (["study.budgets.regression.max_steps=null"], r"target protocol needs a step cap per task; study.budgets.regression"),
    (["study.retunes={regression: -1}"], r"study.retunes.regression=-1 is invalid"),
    (["study.retunes={regression: 1}", "study.seeds=[1100]"], r"re-tuning 1 of regression would train trials at "
                                                               r"seeds \[1100\], which are final seeds"),
    (["+study.axes.regression.parts=[speed]"], r"study.axes.regression.parts=\['speed'\] is invalid"),
    (["study.refine=-2"], r"study.refine=-2 must be an integer >= 0"),
])
def test_bad_parts_retunes_and_refinement_are_refused_in_one_line(tmp_path, overrides, message):
    cfg = study_cfg(tmp_path, *PARTS, *overrides)
    with pytest.raises(ConfigError, match=message):
        study_and_report(cfg, echo=lambda *_: None)
    assert not any(tmp_path.iterdir())  # nothing written


# --- one tiny study in two parts, re-tuned and refined, end to end ------------------------------------

def exports(root: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in (root / "tuned").glob("*.json")}


def test_a_two_part_study_writes_both_parts_with_retunings_refinement_and_resolution(tmp_path):
    cfg = study_cfg(tmp_path, *PARTS, "study.retunes={regression: 1}", "study.n_trials=4", "study.tune_batch=4",
                    "study.refine=2", "study.widen=false")
    study_and_report(cfg, echo=lambda *_: None)
    found = exports(tmp_path)
    assert len(found) == 2 * 2 * 2  # batch sizes x parts x (primary + re-tuning)
    primary = {k: v for k, v in found.items() if "~" not in k}
    for stem, export in found.items():
        assert export["retune"] == (1 if stem.endswith("~r1") else 0)
        assert stem.removesuffix("~r1") in primary
        assert set(export["resolution"]) == {"tolerance", "lr_lo", "lr_hi", "n_within", "resolved"}
        assert export["n_refined"] == 2 and export["n_trials"] == 6
    rows = pd.read_parquet(tmp_path / "runs")
    last = rows.sort_values("step").groupby("run_id").tail(1)
    trials, finals = last[last["trial"].notna()], last[last["trial"].isna()]
    retune = trials["retune"].fillna(0).astype(int)
    assert set(trials.loc[retune == 1, "study"]) == {k for k in found if k.endswith("~r1")}
    assert set(trials.loc[retune == 0, "study"]) == set(primary)
    assert set(trials.loc[retune == 1, "seed"]) == {1000 + RETUNE_SEED_STRIDE}
    assert finals["retune"].fillna(0).astype(int).value_counts().to_dict() == {0: 4, 1: 4}  # cells x parts, one seed
    configs = last["config"].map(json.loads)
    assert {bool(c.get("target")) for c in configs} == {True, False}  # both parts' runs in one store
    for stem, export in found.items():  # every refinement trial within a quarter decade of the best before it
        journal = optuna.load_study(study_name=stem, storage=open_storage(export["storage"]))
        by_number = {t.number: t for t in journal.get_trials(deepcopy=False)}
        centre = by_number[journal.user_attrs["refined"]].params["lr"]
        refined = [t.params["lr"] for t in by_number.values() if t.user_attrs.get("refines")]
        assert refined and all(abs(math.log10(lr / centre)) <= REFINE_DECADES + 1e-9 for lr in refined)
    readme = (tmp_path / "report" / "README.md").read_text()
    assert "**Protocol: target**" in readme and "**Protocol: budget**" in readme
