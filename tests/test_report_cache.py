"""The report's per-run summary cache and its figure formats: a second report summarizes nothing and
writes the same report; a run stored again with other rows, or a new run, is summarized (and only
it), with the report equal to one built without the cache; ``.cache/`` is never read as runs;
figures come in the formats asked for, and a bad ``figures.formats`` is one line, exit 2."""
from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from suite.cli import CONF_DIR, report_main
from suite.report.build import write_report
from suite.report.data import summary_cache
from suite.run.execute import store_run
from suite.run.prepare import prepare
from suite.store.runs import RunStore, export_rows
from suite.train import train

FAST = ["figures.dpi=40", "figures.minibatch=false", "science.resamples=0"]
TEXTS = (".md", ".csv", ".tex")


def _train(root: Path, lr: float, seed: int, trial: int | None = None) -> str:
    overrides = ["task=regression", "optimizer=sgd", "batch_size=8", "budget.epochs=2", "budget.max_steps=40",
                 "eval.points=4", "device=cpu", "progress=false", f"lr={lr}", f"seed={seed}"]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        p = prepare(compose("config", overrides=overrides))
    tags = {"study": "regression-sgd-8", "trial": trial} if trial is not None else None
    store_run(RunStore(root), p.spec, p.task, p.config, train(p.task, p.spec), tags=tags)
    return p.run_id


@pytest.fixture(scope="module")
def store(tmp_path_factory, torch_threads) -> Path:
    root = tmp_path_factory.mktemp("cache") / "store"
    with torch_threads(1):
        for trial, lr in enumerate((0.01, 0.05)):
            _train(root, lr, seed=0, trial=trial)
        for seed in (0, 1):
            _train(root, 0.05, seed)
    return root


@pytest.fixture
def summarized(monkeypatch) -> list[set[str]]:
    """The run ids each report summarized (one set per report)."""
    calls: list[set[str]] = []
    real = summary_cache.summarize_runs

    def counting(rows, targets):
        calls.append(set(rows["run_id"]))
        return real(rows, targets)

    monkeypatch.setattr(summary_cache, "summarize_runs", counting)
    return calls


def _report(root: Path, overrides=()) -> dict[str, bytes]:
    """Every text the report writes (README, runs.csv, cells.csv, each table as md, tex and csv)."""
    write_report(root, [*FAST, *overrides], echo=lambda *_: None)
    report = root / "report"
    return {str(p.relative_to(report)): p.read_bytes() for p in sorted(report.rglob("*"))
            if p.suffix in TEXTS}


def _without_cache(root: Path) -> dict[str, bytes]:
    """The report of the same runs built from scratch (in a copy without the cache)."""
    fresh = root.parent / "fresh" / root.name  # the same name: the README's title is the directory's
    shutil.rmtree(fresh, ignore_errors=True)
    shutil.copytree(root, fresh, ignore=shutil.ignore_patterns(".cache", "report"))
    return _report(fresh)


def _copy(store: Path, tmp_path: Path) -> Path:
    root = tmp_path / "store"
    shutil.copytree(store, root, ignore=shutil.ignore_patterns(".cache", "report"))
    return root


def test_second_report_summarizes_nothing_and_is_the_same(store, tmp_path, summarized):
    root = _copy(store, tmp_path)
    first = _report(root)
    assert summarized == [set(RunStore(root).load()["run_id"])] and (root / summary_cache.CACHE).is_file()
    assert {"README.md", "runs.csv", "cells.csv"} < set(first) and any(k.startswith("tables/") for k in first)
    second = _report(root)
    assert len(summarized) == 1  # nothing summarized the second time
    assert second == first


def test_runs_summarized_a_few_at_a_time_give_the_same_report(store, tmp_path, summarized, monkeypatch):
    whole = _report(_copy(store, tmp_path / "whole"))
    monkeypatch.setattr(summary_cache, "SUMMARY_CHUNK", 1)
    root = _copy(store, tmp_path / "chunked")
    assert _report(root) == whole
    whole_ids, *chunks = summarized
    assert len(whole_ids) > 1 and [len(ids) for ids in chunks] == [1] * len(whole_ids)
    assert set().union(*chunks) == whole_ids


def test_stored_configs_load_as_a_category_and_export_as_text(store, tmp_path):
    rows = RunStore(store).load()
    assert isinstance(rows["config"].dtype, pd.CategoricalDtype)
    assert rows["config"].nunique() == rows["run_id"].nunique()
    assert export_rows(store, tmp_path / "rows.parquet") == len(rows)
    exported = pd.read_parquet(tmp_path / "rows.parquet")
    assert exported["config"].dtype == "str" and exported["config"].tolist() == rows["config"].astype(str).tolist()


def test_a_target_changed_on_the_command_line_summarizes_again(store, tmp_path, summarized):
    root = _copy(store, tmp_path)
    _report(root)
    _report(root, ["targets.regression.relative=0.5"])
    assert len(summarized) == 2 and summarized[1] == summarized[0]


def test_a_run_stored_again_with_other_rows_is_summarized_again(store, tmp_path, summarized):
    root = _copy(store, tmp_path)
    _report(root)
    rid = sorted(summarized[0])[0]
    path = RunStore(root).path(rid)
    rows = pd.read_parquet(path)
    rows.loc[rows.index[-1], "val_loss"] = rows["val_loss"].iloc[-1] * 2  # same name, other content
    rows.to_parquet(path, index=False)
    again = _report(root)
    assert summarized[1] == {rid}
    assert again == _without_cache(root)


def test_a_new_run_only_adds_its_summary(store, tmp_path, summarized):
    root = _copy(store, tmp_path)
    _report(root)
    rid = _train(root, 0.05, seed=2)
    again = _report(root)
    assert summarized[1] == {rid}
    assert len(pd.read_parquet(root / summary_cache.CACHE)) == len(summarized[0]) + 1
    assert again == _without_cache(root)


def test_cache_is_never_read_as_runs(store, tmp_path):
    root = _copy(store, tmp_path)
    before = len(RunStore(root).load()), len(pd.read_parquet(root / "runs"))
    _report(root)
    assert (root / ".cache").is_dir() and not list((root / "runs").glob("*cache*"))
    assert (len(RunStore(root).load()), len(pd.read_parquet(root / "runs"))) == before


def test_a_damaged_cache_is_rebuilt(store, tmp_path, summarized):
    root = _copy(store, tmp_path)
    first = _report(root)
    (root / summary_cache.CACHE).write_bytes(b"not parquet")
    assert _report(root) == first and len(summarized) == 2
    assert len(pd.read_parquet(root / summary_cache.CACHE)) == len(summarized[0])


@pytest.mark.parametrize("formats, expected", [((), {"png"}), (["figures.formats=[pdf]"], {"pdf"}),
                                               (["figures.formats=[png,pdf]"], {"png", "pdf"})])
def test_figures_come_in_the_formats_asked_for(store, tmp_path, formats, expected):
    root = _copy(store, tmp_path)
    _report(root, formats)
    written = {p.suffix[1:] for p in (root / "report" / "figures").rglob("*.*")}
    assert written == expected
    readme = (root / "report" / "README.md").read_text()
    assert f"loss_vs_epoch.{sorted(expected)[-1]}" in readme


def test_the_published_study_asks_for_png_and_pdf():
    assert list(OmegaConf.load(Path(CONF_DIR) / "study" / "standard.yaml").report.figures.formats) == ["png", "pdf"]
    assert list(OmegaConf.load(Path(CONF_DIR) / "report.yaml").figures.formats) == ["png"]


@pytest.mark.parametrize("value", ["jpeg", "[jpeg]", "[]", "[png,png]"])
def test_bad_formats_are_one_line_and_exit_2(store, tmp_path, capsys, value):
    root = _copy(store, tmp_path)
    with pytest.raises(SystemExit) as exit_:
        report_main([str(root), f"figures.formats={value}"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "figures.formats" in err and "png, pdf, svg" in err, err
    assert not (root / "report").exists() and not (root / ".cache").exists()
