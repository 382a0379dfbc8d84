"""``suite-report`` on a hand-made store of a study in two parts (stored rows and tuner exports
written as the study writes them, with answers known by construction): one protocol per table,
failures counted as failures, censored medians, the metric's floor, timings of stacked runs,
abandoned configurations, the tuner's resolution and the tuning noise of re-tunings."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_metrics import hand_run

from suite.report.build import write_report
from suite.report.stats.censored import median_interval, median_ranks
from suite.store.runs import RunStore
from suite.types import ROW_SCHEMA, collapsed

TARGET = {"metric": "excess_loss", "relative": 1e-3, "value": None}
FAST = ["figures.formats=[png]", "figures.dpi=40", "figures.minibatch=false", "science.resamples=0"]
SEEDS = range(5)
CAP = 40
OPTIMAL = 0.01  # the regression's optimal loss: the floor of its excess loss is 10 * eps32 * 0.01 = 1.2e-8
# Target part, batch 10: steps to target per seed (inf: not reached within the cap); adam's last seed collapsed.
STEPS = {"sgd": [10, 12, 14, math.inf, math.inf], "momentum": [20, 22, 21, 23, 20], "adam": [3, 3, 3, 3, math.inf]}
TARGET_LR = {"sgd": 0.1, "momentum": 0.01, "adam": 0.001}
ABANDONED_LR = 0.05  # sgd's final runs at an lr its export no longer names
# Budget part: final excess loss per tuning r and batch size; adam's first seed at batch 10 collapsed (r = 0).
BUDGET = {
    0: {10: {"sgd": 1.0, "momentum": 2.0, "adam": 0.5}, 100: {"sgd": 1e-9, "momentum": -2e-9, "adam": 4e-9}},
    1: {10: {"sgd": 1.8, "momentum": 1.5, "adam": 3.0}, 100: {"sgd": 2e-9, "momentum": 1e-9, "adam": -1e-9}},
    2: {10: {"sgd": 1.0, "momentum": 2.0, "adam": 3.0}, 100: {"sgd": 3e-9, "momentum": 1e-9, "adam": 2e-9}},
}
RUN_CONFIG = {"impl": "auto", "hparams": {}, "epochs": 4.0, "max_steps": CAP, "max_seconds": None, "warmup_steps": 3,
              "eval": {"points": 2, "schedule": "log", "every_steps": None, "every_epochs": None},
              "sampling": "shuffle", "accumulation_reduction": "mean", "dtype": "float32", "device": "cpu",
              "divergence_factor": 1000.0}
NOISE = [0.0, 0.02, -0.03, 0.02, -0.01]  # per seed, relative (mean 0)


def stored(frame: pd.DataFrame, **tags) -> pd.DataFrame:
    """A hand-made run's rows with the stored schema's types, and its tags."""
    frame = frame.copy()
    for column, kind in ROW_SCHEMA.items():
        if kind == "str":
            frame[column] = frame[column].astype(object).where(frame[column].notna(), None)
        elif kind == "int64":
            frame[column] = frame[column].fillna(1).astype("int64")
        else:
            frame[column] = frame[column].astype(kind)
    for key, value in tags.items():
        frame.insert(len(frame.columns) - 1, key, value)
    return frame


def run(part: str, optimizer: str, batch: int, lr: float, seed: int, excess: list[float], val: list[float], *,
        steps_to_target=math.nan, stack: int = 1, retune: int = 0, trial: int | None = None) -> pd.DataFrame:
    frame = hand_run({"excess_loss": excess, "val_loss": val}, steps=tuple(np.linspace(0, CAP, len(excess))),
                     optimizer=optimizer, batch_size=batch, lr=lr, seed=seed, trial=trial)
    config = {**RUN_CONFIG, **json.loads(frame["config"].iloc[0])}
    config.update({"target": TARGET, "stop_at_target": True} if part == "target" else {"max_steps": None})
    if retune:
        config["retune"] = retune
    frame["config"] = json.dumps(config, sort_keys=True)
    frame["run_id"] = f"{part}-r{retune}-{frame['run_id'].iloc[0]}"
    frame = frame.assign(steps_to_target=steps_to_target, to_target_bracket=0.0 if steps_to_target > 0 else math.nan,
                         stack_size=stack, optimal_loss=OPTIMAL, dtype="float32", threads=1,
                         study=cell_name(part, optimizer, batch, retune) if trial is not None else None,
                         trial=math.nan if trial is None else float(trial))
    return stored(frame, **({"retune": retune} if retune else {}))


def cell_name(part: str, optimizer: str, batch: int, retune: int = 0) -> str:
    return f"regression-{optimizer}-b{batch}-{part}" + (f"~r{retune}" if retune else "")


def export(root: Path, part: str, optimizer: str, batch: int, lr: float, retune: int, resolved: bool) -> None:
    name = cell_name(part, optimizer, batch, retune)
    data = {"cell": name, "lr": lr, "hparams": {}, "retune": retune, "lr_range": [1e-5, 10.0],
            "resolution": {"tolerance": 0.1, "lr_lo": lr / 2, "lr_hi": lr * 2, "n_within": 3 if resolved else 1,
                           "resolved": resolved}}
    (root / "tuned" / f"{name}.json").write_text(json.dumps(data))


def target_part(store: RunStore, root: Path) -> None:
    for optimizer, steps in STEPS.items():
        lr = TARGET_LR[optimizer]
        for seed, s in zip(SEEDS, steps):
            reached = math.isfinite(s)
            final = (0.005 if reached else 0.5) if (optimizer, seed) != ("adam", 4) else 20.0
            val = [2.0, 1.0 if final < 10 else 3.0]  # adam's last seed ends above its initial loss: collapsed
            store.write(run("target", optimizer, 10, lr, seed, [10.0, final], val,
                            steps_to_target=s if reached else math.nan, stack=3))
        for seed in SEEDS if optimizer == "sgd" else ():
            store.write(run("target", optimizer, 10, ABANDONED_LR, seed, [10.0, 0.005], [2.0, 1.0], steps_to_target=5))
        store.write(run("target", optimizer, 10, lr, 100, [10.0, 0.005], [2.0, 1.0], steps_to_target=15, trial=0))
        export(root, "target", optimizer, 10, lr, 0, resolved=optimizer != "sgd")


def budget_part(store: RunStore, root: Path) -> None:
    for retune, rows in BUDGET.items():
        for batch, values in rows.items():
            for optimizer, value in values.items():
                lr = 0.1 * (1 + retune) * (2 if optimizer == "adam" else 1)
                for seed, noise in zip(SEEDS, NOISE):
                    broken = (retune, batch, optimizer, seed) == (0, 10, "adam", 0)
                    final = value * (1 + noise) if batch == 10 else value + noise * 1e-9
                    store.write(run("budget", optimizer, batch, lr, seed, [10.0, final], [2.0, 2.5 if broken else 1.0],
                                    retune=retune))
                store.write(run("budget", optimizer, batch, lr, 100, [10.0, value], [2.0, 1.0], retune=retune,
                                trial=0))
                export(root, "budget", optimizer, batch, lr, retune, resolved=True)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("parts")
    (root / "tuned").mkdir()
    store = RunStore(root)
    target_part(store, root)
    budget_part(store, root)
    (root / "config.yaml").write_text(
        "study:\n  name: parts\n  parts: [target, budget]\n  seeds: [0, 1, 2, 3, 4]\n  tune_seeds: [100]\n"
        "  workers: 1\n  targets:\n    regression: {metric: excess_loss, relative: 0.001}\n")
    readme = write_report(root, FAST, echo=lambda *_: None).read_text()
    return {"root": root, "readme": readme, "tables": root / "report" / "tables"}


def table(report, part: str, name: str, task: str = "regression") -> pd.DataFrame:
    return pd.read_csv(report["tables"] / task / part / f"{name}.csv")


def test_each_part_shows_only_the_quantities_its_protocol_defines(report):
    target, budget = report["tables"] / "regression" / "target", report["tables"] / "regression" / "budget"
    assert {p.stem for p in target.glob("*.md")} >= {"steps_to_target", "epochs_to_target", "samples_to_target",
                                                      "seconds_to_target", "best_lr", "ranking", "tuning"}
    assert not list(target.glob("final_*"))
    assert {p.stem for p in budget.glob("*.md")} >= {"final_excess_loss", "final_test_loss", "best_lr", "ranking",
                                                      "tuning"}
    assert not list(budget.glob("*_to_target*"))
    readme = report["readme"]
    assert "## regression: target part" in readme and "## regression: budget part" in readme
    assert "**Protocol: target**" in readme and "**Protocol: budget**" in readme and "2 parts" in readme
    assert (report["tables"] / "target" / "performance_profile.md").is_file()
    assert not (report["tables"] / "budget" / "performance_profile.md").exists()
    ranks = table(report, "target", "ranking")
    assert "mean rank (steps to target)" in ranks and "mean rank (final excess loss)" not in ranks
    assert "mean rank (final excess loss)" in table(report, "budget", "ranking")


def test_a_cell_with_one_collapsed_seed_is_neither_best_nor_tied(report):
    assert collapsed(2.0, 2.5) and not collapsed(2.0, 1.0) and collapsed(2.0, math.nan)
    assert collapsed(2.3, 1.0, 0.1, 0.12) and not collapsed(2.3, 1.0, 0.1, 0.2)  # accuracy at chance + 0.02
    final = table(report, "budget", "final_excess_loss").set_index(["optimizer", "batch_size"])
    adam, sgd = final.loc[("adam", 10)], final.loc[("sgd", 10)]
    assert adam["final_excess_loss"] < sgd["final_excess_loss"]  # the lowest mean, averaged over a failure
    assert adam["n_collapsed"] == 1 and not adam["best"] and not adam["tied_best"]
    assert sgd["best"]
    md = (report["tables"] / "regression" / "budget" / "final_excess_loss.md").read_text()
    assert "(4/5 finished)" in md and "**0.5" not in md
    ranks = table(report, "budget", "ranking").set_index("optimizer")
    assert ranks.loc["adam", "failed final runs"] == 1
    steps = table(report, "target", "steps_to_target").set_index("optimizer")
    assert steps.loc["adam", "steps_to_target"] == 3 and not steps.loc["adam", "best"]  # fewest steps, a failed seed
    assert not steps.loc["adam", "tied_best"] and steps.loc["sgd", "best"]
    profile = pd.read_csv(report["tables"] / "target" / "performance_profile.csv").set_index("tau")
    assert profile.loc[1, "adam"] == 0 and profile.loc[1, "sgd"] == 1  # unsolved, though its median is least


def test_censored_seeds_count_in_the_median_and_the_interval_never_goes_below_one_step(report):
    steps = table(report, "target", "steps_to_target").set_index("optimizer")
    sgd = steps.loc["sgd"]
    assert sgd["steps_to_target"] == 14  # median of 10, 12, 14, >40, >40; the survivors' mean would say 12
    assert sgd["n_reached"] == 3 and math.isinf(sgd["steps_to_target_hi"]) and sgd["steps_to_target_lo"] == 10
    assert (steps["steps_to_target_lo"] >= 1).all()
    md = (report["tables"] / "regression" / "target" / "steps_to_target.md").read_text()
    assert "14 [10, > 40] (3/5 reached)" in md
    assert median_interval([1, 1, 2, 60, 90], 0.95)[:3] == (2, 1, 90)  # a t-interval would reach below zero
    assert median_interval([5, 7, math.inf, math.inf, math.inf], 0.95)[0] == math.inf  # fewer than half: censored
    assert median_ranks(10, 0.95) == (2, 9, pytest.approx(1 - 2 * 11 / 1024))


def test_abandoned_configurations_are_excluded_but_kept_in_runs_csv(report):
    cells = pd.read_csv(report["root"] / "report" / "cells.csv")
    assert ABANDONED_LR not in set(cells["lr"])
    assert len(cells) == len(cells.drop_duplicates(["part", "optimizer", "batch_size", "retune"]))  # one per tuning
    assert len(cells) == 3 + 3 * 2 * 3  # target: 3 cells; budget: 3 optimizers x 2 batch sizes x 3 tunings
    runs = pd.read_csv(report["root"] / "report" / "runs.csv")
    gone = runs[runs["abandoned"]]
    assert len(gone) == 5 and set(gone["lr"]) == {ABANDONED_LR}
    assert {"collapsed", "part"} <= set(runs.columns) and runs.loc[runs["collapsed"], "optimizer"].tolist() == [
        "adam", "adam"]
    assert table(report, "target", "best_lr").set_index("optimizer").loc["sgd", "lr"] == TARGET_LR["sgd"]
    assert "5 runs of configurations the study abandoned" in report["readme"]


def test_values_below_the_metrics_resolution_are_not_bolded(report):
    final = table(report, "budget", "final_excess_loss")
    floor = final[final["batch_size"] == 100]
    assert floor["at_floor"].all() and not (floor["best"] | floor["tied_best"]).any()
    md = (report["tables"] / "regression" / "budget" / "final_excess_loss.md").read_text()
    row = next(line for line in md.splitlines() if line.startswith("| 100"))
    assert row.count("at floor (±1.19e-08)") == 3 and "**" not in row
    ranks = table(report, "budget", "ranking").set_index("optimizer")
    assert ranks.loc["momentum", "mean rank (final excess loss)"] == (2 + 1) / 2  # 2nd at batch 10, tied 1st at 100


def test_throughput_of_stacked_runs_is_not_bolded(report):
    for name in ("throughput", "seconds_to_target"):
        stacked = table(report, "target", name)
        assert not (stacked["best"] | stacked["tied_best"]).any(), name
        assert "**" not in (report["tables"] / "regression" / "target" / f"{name}.md").read_text()
    alone = table(report, "budget", "throughput")  # unstacked, one worker: compared
    assert alone["best"].any()
    assert "Not compared (nothing bold)" in report["readme"] and "`make bench`" in report["readme"]


def test_the_tuners_resolution_is_shown_and_unresolved_cells_flagged(report):
    tuning = table(report, "target", "tuning").set_index("optimizer")
    assert not tuning.loc["sgd", "resolution_resolved"] and tuning.loc["adam", "resolution_resolved"]
    md = (report["tables"] / "regression" / "target" / "tuning.md").read_text()
    assert "0.05–0.2, 1 within 10%: not resolved ◦" in md and "0.0005–0.002, 3 within 10%: resolved" in md
    readme = report["readme"]
    assert "Tuning resolution: 2 of 3 tuned cells resolved (67%" in readme
    assert "**unresolved optimum** (◦" in readme and "regression / target: 1 of 3 tuned cells: sgd at 10" in readme
    assert "| 0.1 ◦ |" in (report["tables"] / "regression" / "target" / "best_lr.md").read_text()


def test_tuning_noise_and_ranking_stability_by_hand(report):
    noise = table(report, "budget", "tuning_noise").set_index(["optimizer", "batch_label"])
    sgd = noise.loc[("sgd", "10")]
    assert sgd["tunings"] == 3 and (sgd["lr_min"], sgd["lr_max"]) == pytest.approx((0.1, 0.3))
    assert sgd["lr_spread_decades"] == pytest.approx(math.log10(3))
    assert sgd["value_min"] == pytest.approx(1.0) and sgd["value_max"] == pytest.approx(1.8)
    assert noise.loc[("adam", "10"), "not_comparable"] == 1  # its first tuning's collapsed seed
    stability = pd.read_csv(report["tables"] / "ranking_stability.csv").set_index(["task", "part"])
    line = stability.loc[("regression", "budget")]
    # Batch 10 ranks sgd < momentum < adam (r = 0; adam, with a failed seed, last), momentum < sgd < adam (r = 1)
    # and sgd < momentum < adam (r = 2): tau = (2 - 1)/3, 1 and 1/3 for the three pairs. Batch 100 sits at the
    # floor: all tied in every tuning, no order to correlate, and the same (tied) best.
    assert line["kendall_tau_mean"] == pytest.approx((1 / 3 + 1 + 1 / 3) / 3)
    assert (line["pairs"], line["rows"], line["best_changes"], line["tunings"]) == (3, 2, 1, 3)
    assert "## Tuning noise and ranking stability" in report["readme"]
    # The main tables show the first tuning only.
    assert set(table(report, "budget", "best_lr")["lr"]) == {0.1, 0.2}


def test_an_untuned_study_reports_its_fixed_lr_and_a_plain_store_every_configuration():
    from suite.report.data.metrics import annotate, summarize_runs
    from suite.report.data.protocol import Study
    from suite.report.data.reported import abandoned
    from suite.report.data.tuned import EXPORTS

    finals = [hand_run({"val_loss": [2.0, 1.0]}, steps=(0, 10), lr=lr, seed=seed)
              for lr in (0.1, 0.2) for seed in (0, 1)]
    runs = summarize_runs(annotate(pd.concat(finals, ignore_index=True)), {})
    none = pd.DataFrame(columns=[*EXPORTS, "optimizer"])
    fixed = abandoned(runs, none, Study(name="tutorials", tune=False, lr=0.1))
    assert set(runs.loc[fixed, "lr"]) == {0.2} and fixed.sum() == 2
    default = abandoned(runs, none, Study(name="quick", tune=False))  # at sgd's registry default lr: no run
    assert not default.any()  # (the default may have changed since): every configuration is reported
    assert not abandoned(runs, none, Study()).any()  # plain suite-train runs: every configuration is reported
    assert not abandoned(runs, none, Study(name="quick")).any()  # a tuned study's cell without an export yet
