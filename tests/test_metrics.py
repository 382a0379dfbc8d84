"""Convergence metrics on hand-made row tables whose answers are known by construction."""
from __future__ import annotations

import json
import math

import pandas as pd
import pytest
from scipy import stats

from suite.report.data.metrics import (
    aggregate,
    annotate,
    final_runs,
    performance_profile,
    pick_best,
    ranks,
    summarize_runs,
)
from suite.report.data.trials import trial_stats
from suite.report.stats.seeds import t_interval
from suite.types import COLUMNS, ConfigError, Target
from suite.cell import Cell

TARGETS = {"regression": Target("excess_loss", relative=1e-3), "tiny_mlp": Target("val_loss", value=0.05),
           "mnist": Target("val_accuracy", value=0.9)}


def hand_run(values: dict[str, list[float]], steps=(0, 10, 20, 30, 40), *, task="regression", optimizer="sgd",
             batch_size=10, accumulation_steps=1, lr=0.1, seed=0, diverged=False, pruned=False, trial=None,
             n_train=100, warmup_steps=3, times=None, options=None) -> pd.DataFrame:
    """One run's rows: ``values`` maps metric columns to one value per step; the rest is filled in."""
    n = len(steps)
    config = {"task": task, "optimizer": optimizer, "lr": lr, "batch_size": batch_size, "seed": seed,
              "accumulation_steps": accumulation_steps, "task_options": options or {"name": task}}
    if trial is not None:
        config["trial"] = trial  # as suite.tune does: a trial's tags are part of its identity
    rid = f"{task}-{optimizer}-{batch_size}x{accumulation_steps}-{lr}-{seed}-{trial}"
    regime = "GD" if batch_size >= n_train else "SGD" if batch_size == 1 else "mini-batch"
    frame = pd.DataFrame({c: [math.nan] * n for c in COLUMNS})
    frame = frame.assign(
        run_id=rid, task=task, model="m", optimizer=optimizer, regime=regime, batch_size=batch_size,
        micro_batch=batch_size // accumulation_steps, accumulation_steps=accumulation_steps,
        accumulation_reduction="mean", sampling="shuffle", lr=lr, seed=seed, n_train=n_train, step=list(steps),
        epoch=[s * batch_size / n_train for s in steps], samples=[s * batch_size for s in steps],
        time_s=times if times is not None else [max(s - warmup_steps, 0) * 0.01 for s in steps],
        diverged=diverged, pruned=pruned, warmup_steps=warmup_steps, config=json.dumps(config, sort_keys=True))
    for col, vals in values.items():
        frame[col] = vals
    if trial is not None:
        frame["study"], frame["trial"] = "s", float(trial)
    return frame


def summarize(*runs: pd.DataFrame) -> pd.DataFrame:
    return summarize_runs(annotate(pd.concat(runs, ignore_index=True)), TARGETS)


def test_target_reached_at_the_first_evaluation_that_meets_it():
    # excess loss 10 -> target 1e-3 x 10 = 0.01; 0.009 at step 30 is the first row at or below it.
    run = hand_run({"excess_loss": [10, 1, 0.05, 0.009, 0.001], "train_loss": [11, 2, 1.05, 1.009, 1.001],
                    "val_loss": [11, 2, 1.1, 1.01, 1.0]})
    s = summarize(run).iloc[0]
    assert s["steps_to_target"] == 30 and s["reached"]
    assert s["epochs_to_target"] == 30 * 10 / 100 and s["samples_to_target"] == 300
    assert s["seconds_to_target"] == pytest.approx(0.27)
    assert s["final_excess_loss"] == 0.001 and s["best_train_loss"] == 1.001 and s["initial_excess_loss"] == 10


def test_target_not_reached_is_nan_and_counted():
    run = hand_run({"excess_loss": [10, 5, 1, 0.5, 0.2]})
    s = summarize(run)
    assert math.isnan(s["steps_to_target"].iloc[0]) and not s["reached"].iloc[0]
    cell = aggregate(s).iloc[0]
    assert cell["n_reached"] == 0 and math.isnan(cell["steps_to_target"])


def test_accuracy_target_is_met_from_below_and_absolute_loss_targets_work():
    acc = hand_run({"val_accuracy": [0.1, 0.5, 0.89, 0.9, 0.95], "val_loss": [2, 1, 0.5, 0.4, 0.3]}, task="mnist")
    mlp = hand_run({"val_loss": [1, 0.2, 0.06, 0.05, 0.01]}, task="tiny_mlp")
    s = summarize(acc, mlp).set_index("task")
    assert s.loc["mnist", "steps_to_target"] == 30  # 0.9 >= 0.9
    assert s.loc["tiny_mlp", "steps_to_target"] == 30  # 0.05 <= 0.05
    assert s.loc["mnist", "best_val_accuracy"] == 0.95


def test_task_without_target_has_no_to_target_numbers():
    run = hand_run({"val_loss": [1, 0.1, 0.01, 0.001, 0.0001]}, task="fashion_mnist")
    s = summarize(run).iloc[0]
    assert not s["has_target"] and math.isnan(s["steps_to_target"])


def test_diverged_run_has_no_final_value_and_loses_to_a_finished_configuration():
    good = hand_run({"val_loss": [1, 0.8, 0.6, 0.5, 0.4]}, lr=0.1)
    # A diverged run's last row holds an exploded (finite) loss; it must not read as a result.
    bad = hand_run({"val_loss": [1, 0.3, 0.1, 2e3], "train_loss": [1, 0.3, 0.1, 2e3]}, steps=(0, 10, 20, 25),
                   lr=1.0, diverged=True)
    s = summarize(good, bad).set_index("lr")
    assert math.isnan(s.loc[1.0, "final_val_loss"]) and s.loc[1.0, "best_train_loss"] == 0.1
    configs = aggregate(s.reset_index())
    assert configs.set_index("lr").loc[1.0, "n_diverged"] == 1
    best = pick_best(configs, "final_val_loss")
    assert len(best) == 1 and best["lr"].iloc[0] == 0.1  # lower mean loss never beats a finished config


def test_seeds_aggregate_to_mean_with_a_student_t_interval():
    runs = [hand_run({"train_loss": [5, 4, 3, 2, v]}, seed=i) for i, v in enumerate([1.0, 2.0, 3.0])]
    cell = aggregate(summarize(*runs), confidence=0.9).iloc[0]
    assert cell["n_runs"] == 3 and cell["n_seeds"] == 3
    assert cell["final_train_loss"] == 2.0
    # The interval is the Student-t interval of the mean: scipy's t.interval on the standard error.
    lo, hi = stats.t.interval(0.9, 2, loc=2.0, scale=stats.sem([1.0, 2.0, 3.0]))
    assert (cell["final_train_loss_lo"], cell["final_train_loss_hi"]) == pytest.approx((lo, hi), rel=1e-12)
    assert lo < 1.0 and hi > 3.0  # three seeds: wider than their range, unlike a percentile bootstrap


def test_t_interval_of_one_value_or_none():
    value, lo, hi = t_interval([4.0])
    assert value == 4.0 and math.isnan(lo) and math.isnan(hi)  # one seed: no interval
    assert all(math.isnan(v) for v in t_interval([math.nan]))
    assert t_interval([2.0, 2.0, 2.0]) == (2.0, 2.0, 2.0)


def test_throughput_counts_samples_after_warmup_per_training_second():
    # 100 steps of batch 10, 3 of them untimed warm-up, 0.97 s on the training clock.
    run = hand_run({"train_loss": [1, 0.5]}, steps=(0, 100), times=[0.0, 0.97])
    assert summarize(run)["throughput"].iloc[0] == pytest.approx(97 * 10 / 0.97)
    only_warmup = hand_run({"train_loss": [1, 0.5]}, steps=(0, 3), times=[0.0, 0.0], lr=0.2)
    assert math.isnan(summarize(only_warmup)["throughput"].iloc[0])


def test_trial_stats_divergence_largest_stable_lr_and_sensitivity():
    losses = {0.001: 1.0, 0.01: 0.105, 0.1: 0.1, 1.0: 0.108, 100.0: 0.1}
    trials = [hand_run({"val_loss": [2, 1, v]}, steps=(0, 5, 10), lr=lr, trial=i)
              for i, (lr, v) in enumerate(losses.items())]
    trials.append(hand_run({"val_loss": [2, 1e4]}, steps=(0, 3), lr=10.0, trial=5, diverged=True))
    trials.append(hand_run({"val_loss": [2, 0.01]}, steps=(0, 5), lr=0.5, trial=6, pruned=True))
    stats = trial_stats(summarize(*trials)).iloc[0]
    assert stats["n_trials"] == 7 and stats["n_diverged"] == 1 and stats["n_pruned"] == 1
    assert stats["frac_lrs_diverged"] == pytest.approx(1 / 6)  # pruned lr 0.5 is not a finished lr
    assert stats["largest_stable_lr"] == 100.0
    assert stats["best_trial_lr"] == 0.1
    # within 10% of 0.1: lrs 0.01..1 (contiguous); lr 100 is as good but cut off by the diverged lr 10.
    assert stats["sensitivity_decades"] == pytest.approx(2.0)
    assert (stats["sensitivity_low_lr"], stats["sensitivity_high_lr"]) == (0.01, 1.0)


def test_trial_stats_under_the_target_protocol_score_trials_by_their_steps_over_seeds():
    nan = math.nan

    def trial(lr, i, seed, steps, loss, **kw):  # a tiny_mlp trial trained with a target: it stores its steps
        run = hand_run({"val_loss": [1, loss], "steps_to_target": [steps] * 2, "to_target_bracket": [0.0] * 2},
                       steps=(0, 30), task="tiny_mlp", lr=lr, trial=i, seed=seed, **kw)
        config = {**json.loads(run["config"].iloc[0]), "target": {"metric": "val_loss", "value": 0.05}}
        return run.assign(config=json.dumps(config, sort_keys=True))
    runs = [trial(0.01, 0, s, nan, 0.1) for s in (1000, 1001)]  # never reaches: behind every trial that does
    runs += [trial(0.1, 1, 1000, 10, 0.03), trial(0.1, 1, 1001, 20, 0.03)]  # mean 15
    runs += [trial(0.3, 2, s, 20, 0.02) for s in (1000, 1001)]  # 20: not within 10% of 15
    runs += [trial(1.0, 3, 1000, 5, 0.01), trial(1.0, 3, 1001, nan, 1e4, diverged=True)]
    stats = trial_stats(summarize(*runs)).iloc[0]
    assert stats["n_trials"] == 4 and stats["n_diverged"] == 1 and stats["trial_objective"] == "steps to target"
    # the fastest run (lr 1.0, 5 steps) belongs to a trial with a diverged seed: that trial is not the best
    assert stats["best_trial_lr"] == 0.1 and stats["best_trial_score"] == 15.0
    assert stats["largest_stable_lr"] == 0.3 and stats["sensitivity_metric"] == "steps_to_target"
    assert stats["sensitivity_decades"] == 0.0
    faster = trial_stats(summarize(*runs[:2], *runs[4:6], trial(0.1, 1, 1000, 21, 0.03),
                                   trial(0.1, 1, 1001, 21, 0.03))).iloc[0]
    assert faster["best_trial_lr"] == 0.3 and faster["sensitivity_decades"] == pytest.approx(math.log10(3))
    tie = trial_stats(summarize(*runs[:2], *runs[4:6], trial(0.1, 1, 1000, 20, 0.04),
                                trial(0.1, 1, 1001, 20, 0.04))).iloc[0]
    assert tie["best_trial_lr"] == 0.1  # as the tuner breaks a tie: the earlier trial, whatever its loss


def test_when_no_trial_reaches_the_target_the_best_is_the_least_shortfall_on_its_metric():
    def trial(lr, i, acc, loss):  # trained to val_accuracy >= 0.9; neither reaches it
        run = hand_run({"val_accuracy": [0.1, acc], "val_loss": [2.3, loss]}, steps=(0, 50), task="mnist", lr=lr,
                       trial=i)
        config = {**json.loads(run["config"].iloc[0]), "target": {"metric": "val_accuracy", "value": 0.9}}
        return run.assign(config=json.dumps(config, sort_keys=True))
    stats = trial_stats(summarize(trial(0.1, 0, 0.85, 0.40), trial(1.0, 1, 0.86, 0.45))).iloc[0]
    assert stats["best_trial_lr"] == 1.0  # closer to the target, though its loss is higher (as the tuner ranks)
    assert stats["best_trial_score"] == pytest.approx(50 + 1 + 50 * (0.9 - 0.86) / 0.9)
    assert math.isnan(stats["sensitivity_decades"])  # no trial reached it: no steps to compare


def test_trial_with_a_final_configuration_counts_as_that_seed():
    final = hand_run({"val_loss": [1, 0.5]}, steps=(0, 10), seed=1)
    trial = hand_run({"val_loss": [1, 0.4]}, steps=(0, 10), seed=0).assign(study="s", trial=0.0)
    other = hand_run({"val_loss": [1, 0.9]}, steps=(0, 10), lr=0.5, trial=1)
    runs = summarize(final, trial, other)
    chosen = final_runs(runs)
    assert sorted(chosen["seed"]) == [0, 1] and set(chosen["lr"]) == {0.1}
    assert aggregate(chosen).iloc[0]["final_val_loss"] == pytest.approx(0.45)
    # With the study's final seeds known, a trial of a tuning seed is never a final seed.
    assert sorted(final_runs(runs, seeds=[1])["seed"]) == [1]
    assert sorted(final_runs(runs, seeds=[0, 1])["seed"]) == [0, 1]


def test_batch_labels_show_regime_and_accumulation():
    def label(batch_size, accumulation_steps=1, reduction="mean", sampling="shuffle", n_train=1000):
        return Cell("regression", "sgd", batch_size, accumulation_steps, sampling, reduction, n_train=n_train).label
    assert label(1024, 16, n_train=2000) == "64×16"
    assert label(1024, 16) == "64×16 (GD)"
    assert label(1000) == label("full") == "1000 (GD)"
    assert label(1) == "1 (SGD)"
    assert label(32, reduction="sum", sampling="sequential") == "32 seq sum"
    rows = annotate(hand_run({"train_loss": [1, 0.5]}, steps=(0, 10), batch_size=32, accumulation_steps=4))
    assert set(rows["batch_label"]) == {"8×4"}


def test_task_labels_name_the_options_that_differ():
    a = hand_run({"train_loss": [1, 0.5]}, steps=(0, 1), options={"name": "regression", "dim": 1, "n": 10})
    b = hand_run({"train_loss": [1, 0.5]}, steps=(0, 1), lr=0.2, options={"name": "regression", "dim": 10, "n": 10})
    labels = set(annotate(pd.concat([a, b]))["task_label"])
    assert labels == {"regression (dim=1)", "regression (dim=10)"}


@pytest.mark.parametrize("kwargs, message", [
    ({"metric": "loss", "value": 1.0}, "unknown metric"),
    ({"metric": "val_loss"}, "exactly one of value"),
    ({"metric": "val_loss", "value": 1.0, "relative": 0.1}, "exactly one of value"),
    ({"metric": "val_accuracy", "relative": 0.5}, "absolute value"),
    ({"metric": "val_loss", "relative": -1.0}, r"lie in \(0, 1\)"),
    ({"metric": "excess_loss", "relative": 1.0}, r"lie in \(0, 1\) .*1 or more is met at step 0"),
    ({"metric": "val_accuracy", "value": 2}, r"an accuracy can only reach values in \(0, 1\]"),
    ({"metric": "val_accuracy", "value": 0}, r"an accuracy can only reach values in \(0, 1\]"),
    ({"metric": "val_loss", "value": -1}, "a loss is never below 0"),
])
def test_bad_targets_are_config_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        Target(**kwargs)


def test_performance_profile_and_ranks_known_answers():
    cost = pd.DataFrame({"a": [10, 20, math.nan], "b": [20, 10, 30]}, index=["p1", "p2", "p3"])
    prof = performance_profile(cost, [1, 2])
    assert prof.loc[1, "a"] == pytest.approx(1 / 3) and prof.loc[1, "b"] == pytest.approx(2 / 3)
    assert prof.loc[2, "a"] == pytest.approx(2 / 3) and prof.loc[2, "b"] == 1.0
    r = ranks(cost)
    assert list(r.loc["p1"]) == [1, 2] and list(r.loc["p3"]) == [2, 1]  # NaN ranks last
    assert list(ranks(cost, maximize=True).loc["p1"]) == [2, 1]
    none = ranks(pd.DataFrame({"a": [math.nan, 1.0], "b": [math.nan, 2.0]}))
    assert none.iloc[0].isna().all() and list(none.iloc[1]) == [1, 2]  # a row nobody finished ranks no one


def test_intervals_are_truncated_to_the_values_a_metric_can_take():
    runs = pd.DataFrame({"seed": range(5), "final_test_accuracy": [0.99, 0.99, 0.98, 0.99, 0.2],
                         "steps_to_target": [1.0, 1, 1, 1, 90], "final_excess_loss": [-1e-10, 1e-9, 2e-9, -2e-10, 0.0]})
    base = {"diverged": False, "collapsed": False, "failed": False, "reached": True, "censored": False,
            "cap_steps": 1, "to_target_bracket": 0.0, "censor_reason": "", "run_id": [f"r{i}" for i in range(5)],
            "g": 0, "task": "t", "model": "m", "batch_label": "1", "regime": "SGD", "lr": 0.1, "has_target": True}
    line = aggregate(runs.assign(**base), by=["g"], columns=list(runs.columns[1:])).iloc[0]
    assert line["final_test_accuracy_hi"] == 1.0 and 0.0 < line["final_test_accuracy_lo"] < line["final_test_accuracy"]
    # Steps are a median with an order-statistic interval: the counts the seeds took, never a t-interval
    # below one step (five seeds: [min, max], coverage 1 - 2/32).
    assert (line["steps_to_target"], line["steps_to_target_lo"], line["steps_to_target_hi"]) == (1, 1, 90)
    assert line["to_target_coverage"] == pytest.approx(1 - 2 / 32)
    assert line["final_excess_loss_lo"] < 0  # rounding noise around the optimum is shown as measured
