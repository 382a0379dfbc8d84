"""``suite-report`` on the rows of a tiny real study: every table and figure is rendered, table
cells equal what the rows say, partial results are reported with notes, bad input is one clear
error, and nothing under ``runs/`` is ever written."""
from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

from suite.cli import CONF_DIR, report_main
from suite.report.benchmarks import load_benchmarks, throughput_table
from suite.report.build import main, write_report
from suite.run.execute import store_run
from suite.run.prepare import prepare
from suite.store.runs import RunStore
from suite.train import train
from suite.types import StoreError

SUITE_REPORT = str(Path(sys.executable).with_name("suite-report"))
LRS = {"sgd": [0.03, 0.3, 3.0], "adam": [0.01, 0.1]}  # sgd at 3.0 diverges on both tasks
BATCHES = (8, "full")
TASK_TABLES = {"regression": ["final_excess_loss", "final_test_loss"],
               "tiny_mlp": ["final_train_loss", "final_test_loss"]}
# Plain suite-train runs (no target in their config) are budget-protocol runs: final metrics, never steps to target.
COMMON_TABLES = ["best_lr", "throughput", "ranking", "tuning"]
FIGURES = ["loss_vs_epoch", "loss_vs_time", "minibatch_loss", "best_lr", "throughput", "lr_sensitivity"]
OVERRIDES = ["targets.tiny_mlp.value=0.15"]  # reachable within the tiny budget
FAST = ["figures.formats=[png]", "figures.minibatch=false", "figures.dpi=60"]  # partial reports: fewer pixels


def tiny_study(root: Path) -> dict:
    """Tuning trials (seed 0, tagged) per cell, then the best trial's lr over seeds 0 and 1, the way
    suite.study does it (a final run already stored as a trial is not trained again)."""
    store, chosen = RunStore(root), {}
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        for task in ("regression", "tiny_mlp"):
            for opt in LRS:
                for bs in BATCHES:
                    base = [f"task={task}", f"optimizer={opt}", f"batch_size={bs}", "budget.epochs=4",
                            "budget.max_steps=60", "eval.points=6", "device=cpu", "progress=false"]
                    scores = {}
                    for i, lr in enumerate(LRS[opt]):
                        p = prepare(compose("config", overrides=[*base, f"lr={lr}", "seed=0"]))
                        result = train(p.task, p.spec)
                        store_run(store, p.spec, p.task, p.config, result,
                                  tags={"study": f"{task}-{opt}-{bs}", "trial": i})
                        scores[lr] = math.inf if result.diverged else result.rows[-1]["val_loss"]
                    best = min(scores, key=scores.get)
                    chosen[(task, opt, bs)] = best
                    for seed in (0, 1):
                        p = prepare(compose("config", overrides=[*base, f"lr={best}", f"seed={seed}"]))
                        if not store.has(p.run_id):
                            store_run(store, p.spec, p.task, p.config, train(p.task, p.spec))
    return chosen


def snapshot(folder: Path) -> dict:
    return {p.name: (p.stat().st_mtime_ns, p.stat().st_size) for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def study(tmp_path_factory, torch_threads):
    root = tmp_path_factory.mktemp("study")
    with torch_threads(1):
        chosen = tiny_study(root)
    (root / "report").mkdir()
    (root / "report" / "stale.md").write_text("from an earlier report")
    before, top = snapshot(root / "runs"), sorted(p.name for p in root.iterdir())
    proc = subprocess.run([SUITE_REPORT, str(root), *OVERRIDES], capture_output=True, text=True, timeout=300)
    return {"root": root, "chosen": chosen, "proc": proc, "before": before, "top": top,
            "rows": RunStore(root).load()}


def test_suite_report_renders_every_table_and_figure(study):
    root, proc = study["root"], study["proc"]
    assert proc.returncode == 0, proc.stderr
    assert "report:" in proc.stdout and str(root / "report" / "README.md") in proc.stdout
    report = root / "report"
    readme = (report / "README.md").read_text()
    for task, names in TASK_TABLES.items():
        for name in names + COMMON_TABLES:
            for ext in ("md", "tex", "csv"):
                assert (report / "tables" / task / f"{name}.{ext}").stat().st_size > 0, (task, name, ext)
            assert f"tables/{task}/{name}.tex" in readme
        for name in FIGURES:
            png, pdf = report / "figures" / task / f"{name}.png", report / "figures" / task / f"{name}.pdf"
            assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000, (task, name)
            assert not pdf.exists()  # figures.formats defaults to [png]
            assert f"figures/{task}/{name}.png" in readme
    assert (report / "tables" / "summary_ranks.md").is_file() and "tables/summary_ranks.tex" in readme
    for task in TASK_TABLES:  # a single-protocol study shows only its part
        assert not list((report / "tables" / task).glob("*_to_target*"))
    assert not (report / "tables" / "performance_profile.md").exists()
    for section in ("## Environment", "## Fixed hyperparameters", "## regression", "## tiny_mlp", "git commit",
                    "torch version", "val_loss ≤ 0.15"):
        assert section in readme
    cells = pd.read_csv(report / "cells.csv")
    assert {"part", "retune", "n_failed", "epochs_to_target", "seconds_to_target_lo", "throughput"} <= set(cells.columns)
    assert set(cells["part"]) == {"budget"} and len(cells) == len(cells.drop_duplicates(
        ["task", "optimizer", "batch_size"]))  # one line per cell: every other configuration was a trial
    runs = pd.read_csv(report / "runs.csv")
    assert len(runs) == len(study["rows"]["run_id"].unique()) and {"collapsed", "part"} <= set(runs.columns)
    assert not (report / "stale.md").exists()  # a report replaces the previous one whole
    assert not list(root.glob(".report*"))


def test_report_never_writes_into_runs(study):
    assert snapshot(study["root"] / "runs") == study["before"]
    # report/ existed already; .cache/ (the per-run summaries) is the report's, beside runs/, never under it
    assert sorted(p.name for p in study["root"].iterdir()) == sorted([*study["top"], ".cache"])


def _final_rows(rows: pd.DataFrame, task: str, opt: str, bs, lr: float) -> pd.DataFrame:
    """The runs of a cell's chosen configuration, straight from the stored rows."""
    size = 1000 if bs == "full" else bs
    sel = rows[(rows["task"] == task) & (rows["optimizer"] == opt) & (rows["batch_size"] == size) & (rows["lr"] == lr)]
    assert sorted(sel["seed"].unique()) == [0, 1]
    return sel.sort_values(["run_id", "step"])


def _csv_cell(root: Path, task: str, table: str, opt: str, size: int) -> pd.Series:
    frame = pd.read_csv(root / "report" / "tables" / task / f"{table}.csv")
    return frame[(frame["optimizer"] == opt) & (frame["batch_size"] == size)].iloc[0]


@pytest.mark.parametrize("task, metric", [("regression", "excess_loss"), ("tiny_mlp", "train_loss")])
def test_table_cells_equal_what_the_rows_say(study, task, metric):
    root, chosen = study["root"], study["chosen"]
    n_reached = 0
    for (t, opt, bs), lr in chosen.items():
        if t != task:
            continue
        size = 1000 if bs == "full" else bs
        runs = _final_rows(study["rows"], task, opt, bs, lr)
        last = runs.groupby("run_id").tail(1)
        if last["diverged"].any():
            continue
        cell = _csv_cell(root, task, f"final_{metric}", opt, size)
        assert cell[f"final_{metric}"] == pytest.approx(last[metric].mean(), rel=1e-12)
        assert cell["n_runs"] == 2 and cell["lr"] == lr
        assert _csv_cell(root, task, "best_lr", opt, size)["lr"] == lr
        timed = (last["step"] - last["warmup_steps"]) * last["batch_size"] / last["time_s"]
        assert _csv_cell(root, task, "throughput", opt, size)["throughput"] == pytest.approx(timed.mean())
        if task == "regression":
            firsts = [g.loc[g["excess_loss"] <= 1e-3 * g["excess_loss"].iloc[0], "step"].min()
                      for _, g in runs.groupby("run_id")]
        else:
            firsts = [g.loc[g["val_loss"] <= 0.15, "step"].min() for _, g in runs.groupby("run_id")]
        cells = pd.read_csv(root / "report" / "cells.csv")
        steps = cells[(cells["task"] == task) & (cells["optimizer"] == opt) & (cells["batch_size"] == size)].iloc[0]
        reached = sorted(f for f in firsts if not math.isnan(f))
        assert steps["n_reached"] == len(reached)
        if len(reached) == 2:  # the median over both seeds is the smaller: by then half of them had reached it
            assert steps["steps_to_target"] == reached[0]
            n_reached += 1
    assert n_reached > 0  # the study is sized so that some cell reaches its target
    # Bold marks the row's best complete cell and the cells tied with it, in Markdown and LaTeX alike.
    frame = pd.read_csv(root / "report" / "tables" / task / f"final_{metric}.csv")
    for _, row in frame.groupby("batch_label"):
        ok = row[row["n_diverged"] == 0]
        assert list(row["best"]) == list(row[f"final_{metric}"] == ok[f"final_{metric}"].min())
        assert not (row["tied_best"] & (row["best"] | (row["n_diverged"] > 0))).any()
    md = (root / "report" / "tables" / task / f"final_{metric}.md").read_text()
    assert md.count("**") == 2 * int((frame["best"] | frame["tied_best"]).sum())
    assert md.count("≈") == int(frame["tied_best"].sum())


def test_latex_is_booktabs_with_escaped_text(study):
    tables = study["root"] / "report" / "tables"
    summary = (tables / "summary_ranks.tex").read_text()
    assert r"tiny\_mlp" in summary and "tiny_mlp" not in summary.replace(r"tiny\_mlp", "")
    for tex in tables.rglob("*.tex"):
        text = tex.read_text()
        assert all(rule in text for rule in (r"\toprule", r"\midrule", r"\bottomrule", r"\begin{tabular}")), tex
        assert not re.search(r"(?<!\\)_", text), f"unescaped underscore in {tex}"
        assert "×" not in text and "—" not in text  # written as $\times$ and ---
    assert r"\textbf{" in (tables / "regression" / "final_test_loss.tex").read_text()


def _copy_runs(src: Path, dst: Path, keep) -> Path:
    (dst / "runs").mkdir(parents=True)
    for f in (src / "runs").glob("*.parquet"):
        frame = pd.read_parquet(f)
        if frame["task"].iloc[0] == "regression" and keep(frame):
            shutil.copy(f, dst / "runs")
    return dst


def test_only_final_runs_omit_trial_figures_with_a_note(study, tmp_path):
    root = _copy_runs(study["root"], tmp_path / "finals", lambda f: "trial" not in f or f["trial"].isna().all())
    (root / "environment.json").write_text(json.dumps({"cpu_count": 2, "optuna_version": "5.0.0"}))
    (root / "bench").mkdir()  # a real pytest-benchmark file, as `make bench` writes them
    shutil.copy(Path(__file__).parent / "data" / "bench_fast.json", root / "bench")
    readme = write_report(root, FAST, echo=lambda *_: None).read_text()
    assert "no tuning trials stored" in readme and "optuna version" in readme
    assert "## Benchmarks" in readme and (root / "report" / "tables" / "benchmarks.tex").is_file()
    assert (root / "report" / "figures" / "benchmark_throughput.png").is_file()
    bench = pd.read_csv(root / "report" / "tables" / "benchmarks.csv")
    assert {"train-step", "opt-step"} <= set(bench["kind"]) and (bench["median_ms"] > 0).all()
    assert not (root / "report" / "figures" / "regression" / "lr_sensitivity.png").exists()
    assert not (root / "report" / "tables" / "regression" / "tuning.md").exists()
    assert (root / "report" / "figures" / "regression" / "loss_vs_epoch.png").is_file()
    assert (root / "report" / "tables" / "regression" / "final_excess_loss.md").is_file()


@pytest.mark.parametrize("where", ["science_section", "task_sections"])
def test_a_failing_section_fails_the_report_and_leaves_the_last_one(study, tmp_path, monkeypatch, where):
    """The sections across cells run in a forked child beside the per-task ones (suite.report.beside):
    an error on either side fails the report; the last report stays and no half-built one is left."""
    root = _copy_runs(study["root"], tmp_path / "failing", lambda f: True)
    write_report(root, FAST, echo=lambda *_: None)
    before = (root / "report" / "README.md").read_text()

    def broken(*_):
        raise ValueError(f"{where} broke")

    monkeypatch.setattr(f"suite.report.build.{where}", broken)
    with pytest.raises(ValueError, match=f"{where} broke"):
        write_report(root, FAST, echo=lambda *_: None)
    assert (root / "report" / "README.md").read_text() == before
    assert not list(root.glob(".report.*"))


def test_throughput_comes_from_the_benchmarks_where_they_cover_the_cells(study, tmp_path):
    root = tmp_path / "bench_study"
    (root / "runs").mkdir(parents=True)
    for f in (study["root"] / "runs").glob("*.parquet"):
        frame = pd.read_parquet(f)
        if frame["task"].iloc[0] == "tiny_mlp" and frame["trial"].isna().all():
            shutil.copy(f, root / "runs")
    bench = json.loads((Path(__file__).parent / "data" / "bench_fast.json").read_text())
    for b in bench["benchmarks"]:  # re-label the batch-32 step benchmarks as batch 8, a batch the study ran
        if b["extra_info"].get("kind") == "train-step" and b["extra_info"]["batch_size"] == 32:
            b["extra_info"].update(batch_size=8, micro_batch=8)
            b["name"] = b["fullname"] = b["name"].replace("b32", "b8")
    (root / "bench").mkdir()
    (root / "bench" / "steps.json").write_text(json.dumps(bench))
    readme = write_report(root, FAST, echo=lambda *_: None).read_text()
    table = pd.read_csv(root / "report" / "tables" / "tiny_mlp" / "throughput.csv").set_index(
        ["optimizer", "batch_size"])
    steps = throughput_table(load_benchmarks(root / "bench"))
    steps = steps[(steps["kind"] == "train-step") & (steps["batch_size"] == 8)].set_index("optimizer")
    for opt in ("sgd", "adam"):
        assert table.loc[(opt, 8), "throughput"] == pytest.approx(steps.loc[opt, "samples_per_s"])
    assert table.loc[("sgd", 1000), "throughput"] != table.loc[("sgd", 1000), "throughput"]  # not benchmarked: NaN
    assert "Throughput from `bench/*.json`" in readme


def test_only_trials_give_the_trial_figures_and_say_what_is_missing(study, tmp_path):
    root = _copy_runs(study["root"], tmp_path / "trials", lambda f: "trial" in f and f["trial"].notna().all())
    (root / "bench").mkdir()
    (root / "bench" / "broken.json").write_text("{not json")
    readme = write_report(root, FAST, echo=lambda *_: None).read_text()
    assert "no final runs yet" in readme
    assert "benchmark results under `bench/` are not shown" in readme and "broken.json" in readme
    assert (root / "report" / "figures" / "regression" / "lr_sensitivity.png").is_file()
    assert not (root / "report" / "tables" / "regression" / "final_excess_loss.md").exists()


def test_empty_results_are_one_clear_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit) as exit_:  # the console script's entry point, in-process
        report_main([str(tmp_path / "empty")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no runs stored under") and "Traceback" not in err
    with pytest.raises(StoreError, match="does not exist"):
        main([str(tmp_path / "missing")])


def test_damaged_run_file_is_named(study, tmp_path):
    root = tmp_path / "damaged"
    shutil.copytree(study["root"] / "runs", root / "runs")
    (root / "runs" / "broken.parquet").write_bytes(b"not parquet")
    with pytest.raises(StoreError, match="broken.parquet is not a readable parquet file"):
        main([str(root)])


def test_figures_survive_degenerate_data(study, tmp_path):
    """Nothing to put on a log axis (all steps untimed, every trial diverged) is not a crash."""
    from suite.report.data.metrics import annotate, summarize_runs
    from suite.report.figures.curves import FigureOptions, curves, sensitivity

    rows = annotate(study["rows"][study["rows"]["task"] == "regression"])
    opts = FigureOptions(formats=("png",), dpi=50)
    assert curves(rows.assign(time_s=0.0), "excess_loss", "time_s", tmp_path / "t", opts) is None
    runs = summarize_runs(rows, {})
    trials = runs[runs["is_trial"]].assign(diverged=lambda d: d["batch_size"] == 1000)
    assert sensitivity(trials, tmp_path / "s", opts)[0].is_file()
