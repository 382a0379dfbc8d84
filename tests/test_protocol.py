"""The measurement protocol: trial values under both protocols on constructed cases (censoring,
ranking of unreached trials), range widening (triggers and stops), tuning end to end under a
target and with several tuning seeds, and the theory checks on the conditioned quadratic (GD and
heavy-ball rates, GD's divergence boundary at 2/L)."""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from suite.optim.registry import resolve_hparams
from suite.report.science.tables import _grid_boundary  # the report's boundary rule, tested on real runs
from suite.report.stats.batch_science import linear_rate
from suite.run.prepare import prepare
from suite.store.runs import RunStore
from suite.tasks import build_task
from suite.train import train, train_many
from suite.tune.objective import SHORTFALL_CAP, intermediate, trial_value
from suite.tune.tuner import tune_cell
from suite.tune.widening import MAX_WIDENINGS, decide
from suite.types import ConfigError, EvalSpec, RunResult, RunSpec, Target

ACC = Target("val_accuracy", value=0.9)


def spec(target=ACC, max_steps=1000) -> RunSpec:
    return RunSpec(task="tiny_mlp", optimizer="sgd", hparams=resolve_hparams("sgd", {}), lr=0.1, batch_size=10,
                   epochs=1e6, max_steps=max_steps, eval=EvalSpec(points=5), target=target)


def result(first, last, steps_to_target=math.nan, diverged=False, metric="val_accuracy") -> RunResult:
    rows = [{"val_loss": 2.0, metric: first}, {"val_loss": 0.5, metric: last}]
    return RunResult(rows=rows, diverged=diverged, steps=1000, train_seconds=1.0, impl="foreach",
                     steps_to_target=steps_to_target)


def test_target_protocol_ranks_reached_before_unreached_before_diverged():
    s = spec()
    reached_late = trial_value(s, 100, result(0.1, 0.95, steps_to_target=990))
    reached_early = trial_value(s, 100, result(0.1, 0.95, steps_to_target=120))
    close = trial_value(s, 100, result(0.1, 0.89))
    far = trial_value(s, 100, result(0.1, 0.5))
    diverged = trial_value(s, 100, result(0.1, math.nan, diverged=True))
    assert reached_early == 120 and reached_late == 990
    assert reached_early < reached_late < close < far < diverged
    assert all(math.isfinite(v) for v in (close, far, diverged))


def test_censored_trials_are_ordered_by_their_final_shortfall_for_losses_too():
    s = spec(Target("val_loss", value=0.1))
    values = [trial_value(s, 100, result(2.0, last, metric="val_loss")) for last in (0.11, 0.2, 1.0, math.inf)]
    assert values == sorted(values) and values[0] > 1000
    assert values[-1] == 1001 + 1000 * SHORTFALL_CAP


def test_budget_protocol_is_the_final_validation_loss():
    s = spec(target=None)
    assert trial_value(s, 100, result(0.1, 0.9)) == 0.5
    assert trial_value(s, 100, result(0.1, 0.9, diverged=True)) == pytest.approx(1000 * 2.0)


def test_intermediate_values_are_smaller_is_better():
    assert intermediate(spec(), {"val_accuracy": 0.8, "val_loss": 0.3}) == -0.8
    assert intermediate(spec(target=None), {"val_accuracy": 0.8, "val_loss": 0.3}) == 0.3


def test_widening_triggers_at_either_edge_and_stops():
    assert not decide(1e-2, (1e-4, 1.0), [], 0).widened  # interior: nothing to do
    top = decide(0.8, (1e-4, 1.0), [], 0)
    assert top.widened and top.lr_range == (1e-4, 10.0) and top.edge is None
    bottom = decide(1.2e-4, (1e-4, 1.0), [], 0)
    assert bottom.widened and bottom.lr_range == pytest.approx((1e-5, 1.0))
    stuck = decide(0.8, (1e-4, 1.0), [], MAX_WIDENINGS)
    assert not stuck.widened and "after 2 widenings" in stuck.edge


def test_an_optimum_at_the_stability_limit_is_not_widened_but_named():
    decision = decide(0.9, (1e-4, 1.0), diverged_lrs=[1.1, 3.0], widenings=0)
    assert not decision.widened and "diverged" in decision.edge


# --- end to end: a tuning study under the protocol --------------------------------------------------

TUNE = ("task=tiny_mlp", "task.n=256", "batch_size=full", "optimizer=adam", "budget.epochs=60", "eval.points=6",
        "progress=false", "threads=1", "tune.n_trials=4", "tune.batch=4", "tune.tpe.n_startup_trials=4",
        "tune.pruner=none")


def tune(compose, results_dir, *overrides):
    return tune_cell(compose(*TUNE, f"results_dir={results_dir}", *overrides), echo=lambda *_: None)


def test_a_study_widens_a_range_whose_optimum_sits_at_its_edge(compose, tmp_path):
    best = tune(compose, tmp_path, "tune.lr_range=[1e-5,2e-5]", "tune.widen=true")  # far below Adam's optimum here
    assert best["lr_range_initial"] == [1e-5, 2e-5] and best["widenings"] >= 1
    assert best["lr_range"][1] >= 2e-4 and best["n_finished"] == 4 + 4 * best["widenings"]
    assert best["lr"] > 2e-5  # the widened range holds a better lr than the original edge
    again = tune(compose, tmp_path, "tune.lr_range=[1e-5,2e-5]", "tune.widen=true")  # a rerun keeps it
    assert (again["lr_range"], again["n_finished"], again["lr"]) == (best["lr_range"], best["n_finished"], best["lr"])
    fixed = tune(compose, tmp_path / "off", "tune.lr_range=[1e-5,2e-5]")
    assert fixed["lr_range"] == [1e-5, 2e-5] and fixed["n_finished"] == 4 and fixed["widenings"] == 0


def test_target_protocol_trials_stop_at_their_target_and_score_their_steps(compose, tmp_path):
    best = tune(compose, tmp_path, "target={metric: val_loss, value: 0.2}", "tune.lr_range=[1e-3,1e-1]")
    assert best["objective"].startswith("steps to val_loss ≤ 0.2")
    rows = pd.read_parquet(tmp_path / "runs")
    last = rows.sort_values("step").groupby("run_id").tail(1)
    reached = last[last["steps_to_target"].notna()]
    assert len(reached) >= 1 and (reached["step"] >= reached["steps_to_target"]).all()
    assert (reached["step"] < 60).any()  # a trial that reached the target stopped before its budget
    assert best["value"] == pytest.approx(reached["steps_to_target"].min())


def test_a_trial_with_several_tuning_seeds_scores_their_mean_and_redoes_a_lost_run(compose, tmp_path):
    cfg = compose(*TUNE, f"results_dir={tmp_path}", "tune.seeds=[1000,1001,1002]", "target={metric: val_loss, value: 0.2}",
                  "tune.lr_range=[1e-3,1e-1]")
    best = tune_cell(cfg, echo=lambda *_: None)
    rows = pd.read_parquet(tmp_path / "runs")
    last = rows.sort_values("step").groupby("run_id").tail(1)
    assert len(last) == 3 * 4 and sorted(last.groupby("trial")["seed"].apply(sorted).iloc[0]) == [1000, 1001, 1002]
    mine = last[last["trial"] == best["slot"]]
    values = [s if s == s else math.inf for s in mine["steps_to_target"]]  # all reached for the best trial
    assert best["value"] == pytest.approx(sum(values) / 3)
    lost = mine["run_id"].iloc[1]
    RunStore(tmp_path).path(lost).unlink()  # the file of its batch: every run of the batch is lost
    lines: list[str] = []
    again = tune_cell(cfg, echo=lines.append)
    assert RunStore(tmp_path).has(lost) and again["value"] == best["value"]
    assert any("equals the" in line for line in lines), lines  # retrained in its recorded stack: bit for bit


def test_gd_diverges_just_above_two_over_L_on_the_conditioned_quadratic():
    """The divergence boundary the theory extras measure (GD at constant lrs around 2/L) brackets 2/L
    to within the grid's 2%: below it GD converges, above it it diverges."""

    task = build_task({"name": "regression", "dim": 10, "condition_number": 100.0, "n": 200, "n_val": 20,
                       "n_test": 20})
    two_over_l = 2.0 / task.info["L"]
    factors = (0.9, 0.98, 1.02, 1.1)
    specs = [RunSpec(task="regression", optimizer="sgd", hparams=resolve_hparams("sgd", {}), lr=f * two_over_l,
                     batch_size=200, epochs=400.0, eval=EvalSpec(points=4), dtype="float64") for f in factors]
    results = train_many(task, specs)
    assert [r.diverged for r in results] == [False, False, True, True]
    summary = pd.DataFrame({"task_label": "regression", "purpose": "theory_boundary", "lr": [s.lr for s in specs],
                            "diverged": [r.diverged for r in results]})
    boundary = _grid_boundary(summary)["regression"]
    assert boundary == pytest.approx(two_over_l, rel=0.10)


def test_gd_and_heavy_ball_converge_at_their_theoretical_rates_on_the_kappa_100_quadratic():
    """GD at η = 2/(L+μ) and heavy ball at its optimal (η, μ), run by the suite on the conditioned
    regression (κ = 100, float64), measured the way the report measures them (every step's loss),
    within 5% of (κ−1)/(κ+1) and (√κ−1)/(√κ+1)."""
    task = build_task({"name": "regression", "dim": 10, "condition_number": 100.0, "n": 200, "n_val": 20,
                       "n_test": 20, "sigma": 0.0})
    big, small = task.info["L"], task.info["mu"]
    kappa = big / small
    heavy_mu = ((math.sqrt(kappa) - 1) / (math.sqrt(kappa) + 1)) ** 2
    cases = [("sgd", 2 / (big + small), {}, (kappa - 1) / (kappa + 1)),
             ("momentum", 4 / (math.sqrt(big) + math.sqrt(small)) ** 2, {"momentum": heavy_mu},
              (math.sqrt(kappa) - 1) / (math.sqrt(kappa) + 1))]
    for optimizer, lr, hp, theory in cases:
        s = RunSpec(task="regression", optimizer=optimizer, hparams=resolve_hparams(optimizer, hp), lr=lr,
                    batch_size=200, epochs=400.0, eval=EvalSpec(every_steps=1), dtype="float64")
        rows = train(task, s).rows
        excess = [r["excess_loss"] for r in rows]
        rate = linear_rate([r["step"] for r in rows], [1] * len(rows), excess, floor=1e-20)
        assert rate == pytest.approx(theory, rel=0.05), (optimizer, rate, theory)


def test_a_study_whose_every_trial_diverged_searches_lower_lrs():
    lower = decide(None, (1e-4, 1.0), diverged_lrs=[2e-4, 0.5], widenings=0)
    assert lower.widened and lower.lr_range == pytest.approx((1e-5, 1.0)) and lower.edge is None
    stuck = decide(None, (1e-6, 1.0), diverged_lrs=[2e-6, 0.5], widenings=MAX_WIDENINGS)
    assert not stuck.widened and "every trial diverged" in stuck.edge
    assert not decide(None, (1e-4, 1.0), diverged_lrs=[], widenings=0).widened  # nothing finished yet


def test_a_study_widens_below_a_range_where_every_trial_diverged(compose, tmp_path):
    best = tune(compose, tmp_path, "optimizer=sgd", "tune.lr_range=[20,100]", "tune.widen=true")
    assert best["lr_range_initial"] == [20, 100] and best["lr_range"] == pytest.approx([0.2, 100])
    assert best["widenings"] == 2 and best["edge"] is None and best["lr"] < 2  # found in the second new decade
    stuck = tune(compose, tmp_path / "stuck", "optimizer=sgd", "tune.lr_range=[200,1000]", "tune.widen=true")
    assert stuck["lr"] is None and "every trial diverged" in stuck["edge"]  # exported with the reason
    assert stuck["lr_source"].startswith("registry") and Path(stuck["path"]).is_file()
    with pytest.raises(ConfigError, match="no tuned lr: no tuning trial finished without diverging"):
        prepare(compose(*TUNE, f"results_dir={tmp_path / 'stuck'}", "optimizer=sgd", "lr=tuned"))
