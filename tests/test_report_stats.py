"""The report's statistics and the displays built on them, on hand-made rows with known answers:
Student-t intervals and paired Holm tests against scipy, tie marking, exact steps-to-target and
censoring."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from test_metrics import TARGETS, hand_run

from suite.report.data.metrics import aggregate, annotate, final_runs, summarize_runs
from suite.report.stats.seeds import compare_to_best, holm, t_interval, tied_ranks
from suite.report.tables import comparison
from suite.report.tables.render import latex, markdown


def holm_step_down(p: list[float], alpha: float) -> list[bool]:
    """Holm's rule as written: sort ascending, reject H_(i) while p_(i) <= alpha / (m - i + 1)."""
    order = sorted(range(len(p)), key=lambda i: p[i])
    reject = [False] * len(p)
    for rank, i in enumerate(order):
        if p[i] > alpha / (len(p) - rank):
            break
        reject[i] = True
    return reject


def test_t_interval_equals_scipy():
    x = [0.31, 0.35, 0.29, 0.4, 0.33]
    mean, lo, hi = t_interval(x, 0.95)
    assert mean == pytest.approx(np.mean(x))
    assert (lo, hi) == pytest.approx(stats.t.interval(0.95, len(x) - 1, loc=np.mean(x), scale=stats.sem(x)))


@pytest.mark.parametrize("seed", range(20))
def test_holm_adjusted_p_values_reject_exactly_what_the_step_down_rule_rejects(seed):
    rng = np.random.default_rng(seed)
    p = list(np.round(rng.uniform(0, 0.1, size=rng.integers(1, 8)), 3))  # rounding makes ties
    for alpha in (0.01, 0.05, 0.1):
        assert list(holm(p) <= alpha) == holm_step_down(p, alpha)
    assert (holm(p) >= np.asarray(p)).all() and (holm(p) <= 1).all()


def test_compare_to_best_is_a_paired_t_test_with_holm_correction():
    seeds = [0, 1, 2, 3, 4]
    best = pd.Series([1.0, 1.2, 0.9, 1.1, 1.0], index=seeds)
    tied = best + pd.Series([0.3, -0.2, 0.1, -0.1, 0.05], index=seeds)  # noisy difference: not separable
    worse = best + pd.Series([0.5, 0.52, 0.49, 0.51, 0.5], index=seeds)  # small but consistent: separable
    out = compare_to_best({"a": best, "b": tied, "c": worse}, maximize=False, alpha=0.05)
    raw = [stats.ttest_rel(tied, best).pvalue, stats.ttest_rel(worse, best).pvalue]
    assert list(out.loc[["b", "c"], "p_holm"]) == pytest.approx(list(holm(raw)))
    assert out.loc["a", "best"] and not out.loc["b", "best"]
    assert out.loc["b", "tied_best"] and not out.loc["c", "tied_best"]
    # Pairs are formed by seed: shuffling the order of the values does not change the test.
    shuffled = compare_to_best({"a": best, "c": worse.iloc[::-1]}, maximize=False)
    assert shuffled.loc["c", "p_holm"] == pytest.approx(stats.ttest_rel(worse, best).pvalue)
    one_seed = compare_to_best({"a": best.iloc[:1], "c": worse.iloc[:1]}, maximize=False)
    assert one_seed.loc["c", "tied_best"]  # one seed cannot separate anything


def test_tied_cells_share_rank_one():
    values = pd.DataFrame({"a": [1.0, 5.0], "b": [1.1, 2.0], "c": [3.0, 1.0]}, index=["r1", "r2"])
    tied = pd.DataFrame({"a": [True, False], "b": [True, False], "c": [False, True]}, index=values.index)
    r = tied_ranks(values, tied)
    assert list(r.loc["r1"]) == [1, 1, 3] and list(r.loc["r2"]) == [3, 2, 1]


def _cell_frames(values: dict[str, list[float]], steps: dict[str, list[float]] | None = None):
    """Final runs of three optimizers × seeds at batch 10, summarized and aggregated (the report's path)."""
    frames = []
    for opt, finals in values.items():
        for seed, v in enumerate(finals):
            frames.append(hand_run({"val_loss": [2.0, v], "excess_loss": [10, 10 * v]}, steps=(0, 40),
                                   optimizer=opt, seed=seed))
    runs = summarize_runs(annotate(pd.concat(frames, ignore_index=True)), TARGETS)
    return runs, aggregate(final_runs(runs))


def test_pivot_marks_best_and_ties_in_every_rendering():
    values = {"sgd": [1.0, 1.1, 0.9, 1.05], "adam": [1.2, 0.95, 1.0, 1.1], "momentum": [2.0, 2.1, 1.9, 2.05]}
    runs, cells = _cell_frames(values)
    table = comparison.pivot(cells, "final_val_loss", "final_val_loss", "caption", maximize=False, runs=runs, alpha=0.05)
    data = table.data.set_index("optimizer")
    assert data.loc["sgd", "best"] and not data.loc["sgd", "tied_best"]
    assert data.loc["adam", "tied_best"] and not data.loc["momentum", "tied_best"] and not data.loc["momentum", "best"]
    md, tex = markdown(table), latex(table)
    assert "**≈ 1.06 [" in md and md.count("**") == 4 and md.count("≈") == 1
    assert r"\textbf{$\approx$ 1.06" in tex and tex.count(r"\textbf{") == 2
    score = [comparison.Score("final_val_loss", "final", False)]
    ranking = comparison.ranking(cells, score, None, runs, 0.05).data.set_index("optimizer")
    assert ranking.loc["adam", "mean rank (final val loss)"] == 1 == ranking.loc["sgd", "mean rank (final val loss)"]
    assert ranking.loc["momentum", "mean rank (final val loss)"] == 3 and ranking.loc["adam", "wins"] == 1


def _target_run(excess, *, target=None, exact=math.nan, bracket=math.nan, **kw) -> pd.DataFrame:
    frame = hand_run({"excess_loss": excess}, **kw)
    if target is not None:
        config = json.loads(frame["config"].iloc[0])
        frame["config"] = json.dumps({**config, "target": target}, sort_keys=True)
    return frame.assign(steps_to_target=exact, to_target_bracket=bracket)


def test_exact_steps_to_target_where_the_run_had_the_reports_target_else_the_evaluations():
    declared = {"metric": "excess_loss", "value": None, "relative": 1e-3}
    exact = _target_run([10, 1, 0.05, 0.009, 0.001], target=declared, exact=23.0, bracket=1.0, seed=0)
    other = _target_run([10, 1, 0.05, 0.009, 0.001], target={**declared, "relative": 1e-2}, exact=11.0, seed=1)
    old = _target_run([10, 1, 0.05, 0.009, 0.001], seed=2)
    runs = summarize_runs(annotate(pd.concat([exact, other, old])), TARGETS).set_index("seed")
    assert runs.loc[0, "steps_to_target"] == 23 and runs.loc[0, "to_target_bracket"] == 1
    assert runs.loc[0, "target_source"] == "exact"
    assert runs.loc[0, "epochs_to_target"] == 23 * 10 / 100 and runs.loc[0, "samples_to_target"] == 230
    assert runs.loc[0, "seconds_to_target"] == pytest.approx(np.interp(23, [0, 10, 20, 30, 40],
                                                                       [0, 0.07, 0.17, 0.27, 0.37]))
    for seed in (1, 2):  # another target, or no target at all: the first evaluation that meets it
        assert runs.loc[seed, "steps_to_target"] == 30 and runs.loc[seed, "to_target_bracket"] == 10
        assert runs.loc[seed, "target_source"] == "evaluations"


def test_censored_cells_say_why_and_show_their_cap():
    declared = {"metric": "excess_loss", "value": None, "relative": 1e-3}
    capped = [_target_run([10, 5, 1, 0.5, 0.2], target=declared, seed=s) for s in (0, 1)]
    diverged = _target_run([10, 1e4], steps=(0, 7), target=declared, diverged=True, lr=1.0)
    reached = [_target_run([10, 1, 0.001, 0.001, 0.001], target=declared, exact=17.0, bracket=1.0, seed=s,
                           optimizer="adam") for s in (0, 1)]
    runs = summarize_runs(annotate(pd.concat([*capped, diverged, *reached])), TARGETS)
    why = runs.set_index(["optimizer", "lr", "seed"])
    assert why.loc[("sgd", 0.1, 0), "censor_reason"] == "cap" and why.loc[("sgd", 0.1, 0), "cap_steps"] == 40
    assert why.loc[("sgd", 1.0, 0), "censor_reason"] == "diverged"
    assert why.loc[("adam", 0.1, 0), "censor_reason"] == "" and not why.loc[("adam", 0.1, 0), "censored"]
    cells = aggregate(final_runs(runs))
    cells = cells[cells["lr"] == 0.1]
    table = comparison.pivot(cells, "steps_to_target", "steps_to_target", "c", style="target", maximize=False, runs=runs)
    assert table.text.loc["10", "sgd"] == "censored (cap 40 steps)"
    assert table.text.loc["10", "adam"] == "17" and bool(table.bold.loc["10", "adam"])
    assert set(table.data.columns) >= {"to_target_bracket", "n_censored", "cap_steps", "best", "tied_best"}
    assert "censored (cap 40 steps)" in markdown(table) and "censored (cap 40 steps)" in latex(table)


def test_a_run_stopped_by_its_time_limit_is_censored_for_that_reason():
    run = _target_run([10, 5, 1, 0.5, 0.2], target={"metric": "excess_loss", "value": None, "relative": 1e-3})
    config = json.loads(run["config"].iloc[0])
    run["config"] = json.dumps({**config, "max_seconds": 0.37})  # the last evaluation's clock reading
    runs = summarize_runs(annotate(run), TARGETS)
    assert runs["censor_reason"].iloc[0] == "time limit"
    table = comparison.pivot(aggregate(runs), "steps_to_target", "s", "c", style="target", maximize=False, runs=runs)
    assert table.text.loc["10", "sgd"] == "censored (time limit; at most 40 steps)"


def _steps_cells(steps: dict[str, list[float]], cap: int):
    """Target runs of optimizers × seeds at batch 10 with the given steps to target (inf: not reached by ``cap``)."""
    declared = {"metric": "excess_loss", "value": None, "relative": 1e-3}
    frames = [_target_run([10, 0.001 if math.isfinite(s) else 1.0], steps=(0, cap), target=declared,
                          exact=s if math.isfinite(s) else math.nan, bracket=1.0, optimizer=opt, seed=seed)
              for opt, values in steps.items() for seed, s in enumerate(values)]
    runs = summarize_runs(annotate(pd.concat(frames, ignore_index=True)), TARGETS)
    return runs, aggregate(final_runs(runs))


def test_steps_are_compared_as_log_counts_and_a_censored_best_separates_no_one():
    runs, cells = _steps_cells({"sgd": [10, 11, 10, 10, 11], "adam": [20, 21, 22, 20, 21]}, cap=30)
    marks = comparison.pivot(cells, "steps_to_target", "s", "c", style="target", maximize=False, runs=runs)
    data = marks.data.set_index("optimizer")
    assert data.loc["sgd", "best"] and not data.loc["adam", "tied_best"]  # twice the steps on every seed
    log_p = stats.ttest_rel(np.log([20, 21, 22, 20, 21]), np.log([10, 11, 10, 10, 11])).pvalue
    assert log_p < 0.05
    # Ten seeds, sgd's last one ran out of its 30 steps: entered at the cap the test separates adam (p < 0.001),
    # but that seed may have needed far more steps than adam's; a best with a censored seed separates no one.
    adam = [20, 21, 22, 20, 21, 20, 22, 21, 20, 21]
    assert stats.ttest_rel(np.log(adam), np.log([10] * 9 + [30])).pvalue < 0.001
    runs, cells = _steps_cells({"sgd": [10] * 9 + [math.inf], "adam": adam}, cap=30)
    data = comparison.pivot(cells, "steps_to_target", "s", "c", style="target", maximize=False,
                            runs=runs).data.set_index("optimizer")
    assert data.loc["sgd", "steps_to_target"] == 10 and data.loc["sgd", "best"] and data.loc["adam", "tied_best"]
