"""``suite-report`` on a tiny stored study of the target protocol: a conditioned regression, two
optimizers × four batch sizes × three seeds trained with the declared target (exact steps-to-target),
tuning trials with the tuner's exports, the quadratic-theory runs and (B, η)/(kB, kη) runs, and
noise-scale columns. The batch-size science's outputs have their promised names and columns, and
their numbers are what the stored rows say."""
from __future__ import annotations

import itertools
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from suite.cli import CONF_DIR
from suite.report.build import write_report
from suite.report.stats.batch_science import optimal_parameters
from suite.run.prepare import prepare
from suite.store.runs import RunStore
from suite.train import train_many
from suite.train.rows import make_frame, make_trace

KAPPA = 10.0  # L = 2κ = 20, μ = 2: GD is stable below 2/L = 0.1
TASK = ["task.dim=4", f"task.condition_number={KAPPA}", "task.n=256", "task.n_val=256", "task.n_test=256"]
TARGET = {"metric": "excess_loss", "relative": 0.01}
SEEDS, TUNE_SEED, BATCHES = (0, 1, 2), 100, (4, 16, 64, "full")
LRS = {"sgd": [0.01, 0.03, 0.09, 0.11], "adam": [0.03, 0.3]}  # sgd brackets 2/L at full batch; adam's best is an edge
FAST = ["figures.formats=[png]", "figures.dpi=50", "science.resamples=100"]
ABANDONED = ("sgd", 16)  # a cell with final runs at a superseded lr beside its reported ones


def base(optimizer: str, root: Path) -> dict:
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("config", overrides=[*TASK, f"optimizer={optimizer}", "device=cpu", "progress=false",
                                            f"results_dir={root}", "budget.epochs=1000", "budget.max_steps=100",
                                            "eval.points=8"])
    return OmegaConf.to_container(cfg, resolve=True)


def train_cell(store: RunStore, configs: list[dict], tags: list, noise: bool = False) -> list:
    prepared = [prepare(c) for c in configs]
    results = train_many(prepared[0].task, [p.spec for p in prepared])
    for p, result, tag in zip(prepared, results, tags):
        frame = make_frame(p.spec, p.task, p.config, result, tags=tag)
        if noise:  # stand-ins for the loop's measurement, NaN where it was not measured
            frame["b_simple_exact"] = 10.0 / (frame["excess_loss"] / frame["excess_loss"].iloc[0]) ** 0.25
            frame["b_simple_est"] = (1.1 * frame["b_simple_exact"]).where(frame["step"] > 0)
            frame["b_noise_exact"] = 0.8 * frame["b_simple_exact"]
            frame.loc[frame.index[-1], ["b_simple_exact", "b_simple_est", "b_noise_exact"]] = math.nan
        store.write(frame, make_trace(frame["run_id"].iloc[0], result))
    return results


def export(root: Path, name: str, optimizer: str, lr: float, value: float) -> None:
    """The tuner's export, as it writes it (sgd's with the keys of the widening tuner, adam's without)."""
    data = {"cell": name, "lr": lr, "value": value, "n_trials": len(LRS[optimizer]), "n_finished": len(LRS[optimizer]),
            "lr_range": [LRS[optimizer][0], LRS[optimizer][-1]], "objective": "steps to target"}
    if optimizer == "sgd":
        data.update(edge=None, lr_range_initial=[0.01, 0.05], lr_source="tuned")
    (root / "tuned").mkdir(exist_ok=True)
    (root / "tuned" / f"{name}.json").write_text(json.dumps(data))


def science_study(root: Path) -> None:
    store = RunStore(root)
    for optimizer, lrs in LRS.items():
        b = base(optimizer, root)
        for bs in BATCHES:
            name = f"regression-{optimizer}-b{bs}"
            trials = [dict(b, batch_size=bs, lr=lr, seed=TUNE_SEED, target=TARGET) for lr in lrs]
            results = train_cell(store, trials, [{"study": name, "trial": i} for i in range(len(lrs))])
            values = [math.inf if r.diverged else r.rows[-1]["val_loss"] for r in results]
            best = lrs[values.index(min(values))]
            export(root, name, optimizer, best, min(values))
            finals = [dict(b, batch_size=bs, lr=best, seed=s, target=TARGET) for s in SEEDS]
            train_cell(store, finals, [None] * len(SEEDS), noise=True)
            if (optimizer, bs) == ABANDONED:  # an earlier lr of the cell, superseded: stored, never reported
                train_cell(store, [dict(f, lr=lrs[0]) for f in finals], [None] * len(SEEDS), noise=True)
    opt, long = optimal_parameters(KAPPA), {"epochs": 150, "max_steps": None, "max_seconds": None}
    gd = dict(base("sgd", root), batch_size="full", lr=opt["gd_lr"], dtype="float64", budget=long)
    hb = base("momentum", root)
    hb = dict(hb, batch_size="full", lr=opt["hb_lr"], dtype="float64", budget=long,
              optimizer=dict(hb["optimizer"], momentum=opt["hb_momentum"]))
    for config in (gd, hb):
        train_cell(store, [config], [{"purpose": "theory"}])
    for bs in (4, 8, 16):
        train_cell(store, [dict(base("sgd", root), batch_size=bs, lr=0.0025 * bs)], [{"purpose": "lr_scaling"}])
    (root / "config.yaml").write_text(
        "study:\n  name: science\n  protocol: target\n  seeds: [0, 1, 2]\n  tune_seeds: [100]\n  workers: 2\n"
        "  targets:\n    regression: {metric: excess_loss, relative: 0.01}\n")
    (root / "environment.json").write_text(json.dumps({"workers": 2, "cpu_count": 2, "wall_seconds": 42.0}))


@pytest.fixture(scope="module")
def study(tmp_path_factory, torch_threads):
    root = tmp_path_factory.mktemp("science")
    with torch_threads(1):
        science_study(root)
    readme = write_report(root, FAST, echo=lambda *_: None).read_text()
    return {"root": root, "readme": readme, "rows": RunStore(root).load(), "tables": root / "report" / "tables"}


def _csv(study, name: str, task: str = "regression") -> pd.DataFrame:
    return pd.read_csv(study["tables"] / task / f"{name}.csv")


def test_science_outputs_have_their_promised_columns(study):
    expected = {
        "batch_scaling": ["optimizer", "b_crit", "b_crit_lo", "b_crit_hi", "b_crit_relation", "s_min", "s_min_lo",
                          "s_min_hi", "e_min", "fit_rmse_log", "n_batch_sizes", "censored", "failed", "b_min", "b_max",
                          "n_tunings", "b_crit_seeds_lo", "b_crit_seeds_hi", "b_crit_resid_lo", "b_crit_resid_hi",
                          "jackknife_lo", "jackknife_hi", "fragile", "faster_than_perfect", "faster_pairs"],
        "lr_scaling": ["optimizer", "slope", "slope_lo", "slope_hi", "b_max_used", "n_batch_sizes"],
        "noise_scale": ["optimizer", "batch_size", "seed", "step", "train_loss", "b_simple_est", "b_simple_exact",
                        "b_noise_exact", "diverged"],
        "tunability": ["optimizer", "batch_size", "k", "objective", "median_best", "p_finished"],
    }
    for name, columns in expected.items():
        assert list(_csv(study, name).columns) == columns, name
        assert (study["tables"] / "regression" / f"{name}.md").is_file()
        assert (study["tables"] / "regression" / f"{name}.tex").is_file()
    theory = pd.read_csv(study["tables"] / "theory.csv")
    assert list(theory.columns) == ["method", "kappa", "lr", "momentum", "rate_measured", "rate_theory",
                                    "max_stable_lr", "two_over_L"]
    figures = study["root"] / "report" / "figures" / "regression"
    for name in ("batch_scaling", "noise_scale", "tunability", "lr_scaling_curves", "minibatch_loss",
                 "steps_to_target", "best_lr"):
        assert (figures / f"{name}.png").stat().st_size > 5_000, name


def test_critical_batch_fit_and_lr_slopes_are_stated(study):
    fits = _csv(study, "batch_scaling").set_index("optimizer")
    assert set(fits.index) == {"sgd", "adam"} and (fits["n_batch_sizes"] == 4).all()
    assert (fits["b_crit_lo"] <= fits["b_crit"]).all() and (fits["b_crit"] <= fits["b_crit_hi"]).all()
    assert fits["e_min"].to_numpy() == pytest.approx((fits["s_min"] * fits["b_crit"]).to_numpy())
    slopes = _csv(study, "lr_scaling").set_index("optimizer")
    assert slopes.loc["adam", "n_batch_sizes"] == 0  # every adam lr sits at the edge of its range: none used
    assert slopes["slope"].isna().all()  # at most 4 batch sizes, fewer below B_crit: not enough points
    readme = study["readme"]
    assert "## Batch-size science" in readme and "- sgd: B_crit = " in readme
    assert "Goyal et al. 2017" in readme and "Malladi et al. 2022" in readme and "- adam: not enough points" in readme
    assert "- sgd (the theory's case): B_crit = " in readme and "vs B_noise (exact) at the target = " in readme


def test_noise_scale_rows_are_the_measured_evaluations_of_reported_configurations(study):
    noise = _csv(study, "noise_scale")
    rows = study["rows"]
    finals = rows[rows["trial"].isna() & rows["purpose"].isna()]
    measured = finals[finals["b_simple_est"].notna() | finals["b_simple_exact"].notna()]
    abandoned = measured[(measured["optimizer"] == ABANDONED[0]) & (measured["batch_size"] == ABANDONED[1])
                         & (measured["lr"] == LRS[ABANDONED[0]][0])]
    assert len(abandoned) and len(noise) == len(measured) - len(abandoned) > 0  # abandoned runs are left out
    mine = noise[(noise["optimizer"] == ABANDONED[0]) & (noise["batch_size"] == ABANDONED[1])]
    assert len(mine) == len(measured[measured["run_id"].isin(set(measured["run_id"]) - set(abandoned["run_id"]))
                                     & (measured["optimizer"] == ABANDONED[0])
                                     & (measured["batch_size"] == ABANDONED[1])])
    assert (noise["b_simple_est"].notna() | noise["b_simple_exact"].notna()).all()
    assert noise["b_simple_est"].isna().any()  # step 0 has the exact value only


def test_tunability_equals_brute_force_over_the_stored_trials(study):
    """On the tuner's objective (steps to target: these trials were trained with one): the lower
    median of the best of every k-subset, a failed trial (diverged or not reached) as +inf."""
    curves = _csv(study, "tunability")
    rows = study["rows"]
    last = rows[rows["trial"].notna()].sort_values("step").groupby("run_id").tail(1)
    cell = last[(last["optimizer"] == "sgd") & (last["batch_size"] == 256)]  # full batch: n = 256
    values = np.where(cell["diverged"] | cell["steps_to_target"].isna(), np.inf, cell["steps_to_target"])
    assert np.isinf(values).any() and np.isfinite(values).any()  # 0.11 diverges at full batch
    mine = curves[(curves["optimizer"] == "sgd") & (curves["batch_size"] == 256)].sort_values("k")
    assert (mine["objective"] == "steps to target").all() and list(mine["k"]) == [1, 2, 3, 4]
    for k, (best, p) in enumerate(zip(mine["median_best"], mine["p_finished"]), start=1):
        bests = sorted(min(c) for c in itertools.combinations(values, k))
        median = bests[math.ceil(len(bests) / 2) - 1]
        assert (best == pytest.approx(median)) if math.isfinite(median) else math.isnan(best)
        assert p == pytest.approx(np.mean([np.isfinite(min(c)) for c in itertools.combinations(values, k)]))


def test_theory_rates_and_the_divergence_boundary(study):
    theory = pd.read_csv(study["tables"] / "theory.csv").set_index("method")
    gd = theory.loc["gd"]
    assert gd["kappa"] == KAPPA and gd["two_over_L"] == pytest.approx(2 / (2 * KAPPA))
    assert gd["rate_theory"] == pytest.approx((KAPPA - 1) / (KAPPA + 1))
    assert gd["rate_measured"] == pytest.approx(gd["rate_theory"], rel=0.01)
    hb = theory.loc["heavy_ball"]
    root = (math.sqrt(KAPPA) - 1) / (math.sqrt(KAPPA) + 1)
    assert hb["rate_theory"] == pytest.approx(root, rel=1e-6)
    assert hb["rate_measured"] == pytest.approx(root, rel=0.1)  # a double root: t·ρ^t, slightly slower
    assert gd["max_stable_lr"] == pytest.approx(math.sqrt(0.09 * 0.11)) == theory.loc["heavy_ball", "max_stable_lr"]
    assert "Largest stable full-batch SGD lr" in study["readme"]


def test_exact_steps_to_target_feed_the_tables_and_runs_csv(study):
    rows = study["rows"]
    last = rows.sort_values("step").groupby("run_id").tail(1)
    runs = pd.read_csv(study["root"] / "report" / "runs.csv")
    assert {"to_target_bracket", "target_source", "censored", "censor_reason", "cap_steps"} <= set(runs.columns)
    finals = runs[runs["trial"].isna() & runs["purpose"].isna()]
    assert (finals["target_source"] == "exact").all()
    steps = _csv(study, "steps_to_target").set_index(["optimizer", "batch_size"])
    for (opt, bs), line in steps.iterrows():
        mine = last[(last["optimizer"] == opt) & (last["batch_size"] == bs) & last["trial"].isna()
                    & last["purpose"].isna() & (last["lr"] == line["lr"])]  # not the abandoned lr's runs
        assert line["n_runs"] == len(SEEDS)  # the tuning trial of the same configuration is no final seed
        if line["n_reached"] == line["n_runs"]:  # the median of three seeds
            assert line["steps_to_target"] == pytest.approx(mine["steps_to_target"].median())
            assert line["to_target_bracket"] <= max(1.0, 0.05 * line["steps_to_target"]) + 1


def test_readme_states_protocol_targets_load_and_flags(study):
    readme = study["readme"]
    assert "**Protocol: target**" in readme and "Final runs: seed(s) 0, 1, 2; tuning trials used seed(s) 100" in readme
    assert "excess_loss ≤ 0.01 × its step-0 value (declared in the study before it ran" in readme
    assert "study wall time | 0.7 min (42 s)" in readme
    assert ("measured during the study with 2 worker(s) at once, up to 3 configurations stacked on one clock, 1 torch "
            "thread(s) per run, 2 CPU core(s)") in readme
    assert ("**edge of range** (†): regression / target / adam / batch 4: optimum lr 0.3 within 0.25 decade of the "
            "upper bound") in readme
    assert "t-interval" in readme and "bootstrap interval" not in readme.replace("bootstrap interval over seeds", "")
    tuning = _csv(study, "tuning").set_index(["optimizer", "batch_size"])
    assert tuning.loc[("sgd", 16), "lr_range_initial"] == "0.01–0.05" and tuning.loc[("sgd", 16), "edge"] != "x"
    assert tuning.loc[("adam", 16), "edge"].startswith("optimum lr 0.3 within 0.25 decade of the upper bound")
    best_lr = (study["tables"] / "regression" / "best_lr.md").read_text()
    assert "| 0.3 † |" in best_lr and "† the tuned lr still sits at an edge of its search range" in readme


def test_a_store_of_theory_runs_alone_reports_them(study, tmp_path):
    for folder in ("runs", "traces"):
        (tmp_path / folder).mkdir()
    for f in (study["root"] / "runs").glob("*.parquet"):
        frame = pd.read_parquet(f)
        if "purpose" in frame and (frame["purpose"] == "theory").all():
            (tmp_path / "runs" / f.name).write_bytes(f.read_bytes())
            (tmp_path / "traces" / f.name).write_bytes((study["root"] / "traces" / f.name).read_bytes())
    write_report(tmp_path, FAST, echo=lambda *_: None)
    theory = pd.read_csv(tmp_path / "report" / "tables" / "theory.csv")
    assert sorted(theory["method"]) == ["gd", "heavy_ball"] and theory["max_stable_lr"].isna().all()  # no trials


def test_report_imports_without_torch():
    code = "import sys, suite.report.build; assert 'torch' not in sys.modules, 'suite.report pulled in torch'"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
