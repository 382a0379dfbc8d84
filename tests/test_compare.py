"""Your optimizer against a published study (``study.baseline``): a small baseline study made here
(synthetic tasks, tiny budgets, two optimizers, two batch sizes), published as a directory and as an
archive, then the bring-your-own example (``examples/``: myopt, a Signum) compared against it. Only
the new optimizer's runs are trained; the baseline's rows are read beside them, never retrained;
an unfair comparison is refused before anything is written."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from user_config import EXAMPLES, byo_cfg, registry_restored, user_env  # noqa: F401 (a fixture)

from suite.cli import CONF_DIR
from suite.store.published import publish
from suite.store.runs import RunStore
from suite.study.baseline import compared
from suite.study.parts import RETUNE_SEED_STRIDE
from suite.study.runner import study_and_report
from suite.types import ConfigError

SUITE_STUDY = str(Path(sys.executable).with_name("suite-study"))
BASELINE = [
    "study.tasks=[regression,tiny_mlp]", "study.optimizers=[sgd,adam]", "study.batch_sizes=[4,full]",
    "study.seeds=[0,1]", "study.tune_seeds=[1000]", "study.n_trials=2", "study.tune_batch=2", "study.widen=false",
    "study.eval_points=4", "study.budgets.regression.max_steps=30", "study.budgets.tiny_mlp.max_steps=30",
    "+study.task_options.regression.n=64", "+study.task_options.tiny_mlp={n: 64, n_val: 64}", "progress=false",
    "study.retunes={regression: 1}",  # re-tuned like the published study: its final runs carry their retune
    "study.targets.regression.relative=0.5",  # reached within the 30 steps: counts to compare, not only censored cells
]
USER = EXAMPLES / "conf"


@pytest.fixture(scope="module")
def baseline(tmp_path_factory) -> tuple[Path, Path]:
    """The published baseline: its directory (runs/ exported to rows.parquet) and its archive."""
    root = tmp_path_factory.mktemp("published")
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="study_app", overrides=[f"results_dir={root / 'base'}", *BASELINE])
    study_and_report(cfg, echo=lambda *_: None)  # its own report: what a comparison's must agree with
    archive = publish(root / "base", root / "base.tar.gz")
    return root / "base", archive


def listing(root: Path) -> dict[str, float]:
    return {str(p.relative_to(root)): p.stat().st_mtime for p in root.rglob("*")}


def compare_cfg(results_dir: Path, *overrides: str):
    return byo_cfg(USER, f"results_dir={results_dir}", "study.optimizers=[myopt]", "progress=false", *overrides,
                   config_name="study_app")


def compare_command(results_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    """``suite-study --config-dir examples/conf study.optimizers=[myopt] ...`` as a user runs it."""
    return subprocess.run([SUITE_STUDY, "--config-dir", str(USER), "study.optimizers=[myopt]", "progress=false",
                           f"results_dir={results_dir}", *overrides], env=user_env(), capture_output=True, text=True,
                          timeout=600)


@pytest.fixture(scope="module")
def compared_dirs(baseline, tmp_path_factory):
    """The example optimizer against the baseline directory (every task) and its archive (regression)."""
    directory, archive = baseline
    before = listing(directory)
    out = tmp_path_factory.mktemp("compared")
    for name, overrides in (("all", [f"study.baseline={directory}"]),
                            ("one", [f"study.baseline={archive}", "study.tasks=[regression]"])):
        done = compare_command(out / name, *overrides)
        assert done.returncode == 0, done.stderr
    assert listing(directory) == before  # the baseline is read, never written
    return out


def test_only_the_new_optimizer_is_trained_under_the_baselines_protocol(baseline, compared_dirs):
    runs = RunStore(compared_dirs / "all").load()
    assert set(runs["optimizer"]) == {"myopt"}
    finals = runs[runs["trial"].isna()].drop_duplicates("run_id")
    assert len(finals) == (2 + 1) * 2 * 2  # (2 tasks + regression's re-tuning) x 2 batch sizes x 2 seeds: myopt only
    assert set(finals["seed"]) == {0, 1}
    trials = runs[runs["trial"].notna()].drop_duplicates("run_id")
    assert set(trials["seed"]) - {1000} == {1000 + RETUNE_SEED_STRIDE}  # the re-tuning's own tuning seed
    assert len(trials) == 2 * 2 * (2 + 1)  # 2 trials per cell and tuning, at its tuning seed
    mine = yaml.safe_load((compared_dirs / "all" / "config.yaml").read_text())
    theirs = yaml.safe_load((baseline[0] / "config.yaml").read_text())
    assert mine["study"]["baseline"] == str(baseline[0].resolve())
    for key in ("budgets", "targets", "task_options", "seeds", "tune_seeds", "n_trials", "eval_points", "protocol"):
        assert mine["study"][key] == theirs["study"][key], key
    assert mine["task"] == theirs["task"] and mine["tune"] == theirs["tune"]


def test_the_report_shows_the_new_optimizer_beside_the_baseline(compared_dirs):
    report = compared_dirs / "all" / "report"
    cells = pd.read_csv(report / "cells.csv")
    assert set(cells["optimizer"]) == {"sgd", "adam", "myopt"}
    assert set(cells["task"]) == {"regression", "tiny_mlp"}
    text = (report / "README.md").read_text()
    assert "myopt" in text and "adam" in text and "never retrained" in text
    runs = pd.read_csv(report / "runs.csv")
    assert runs.loc[runs["optimizer"] != "myopt", "time_s"].isna().all()  # measured elsewhere: not shown
    assert runs.loc[runs["optimizer"] == "myopt", "time_s"].notna().all()


def test_the_baseline_cells_read_as_in_the_baseline_s_own_report(baseline, compared_dirs):
    # Their seconds are not shown beside the new optimizer's; their steps to target must not change.
    key, shown = ["task_label", "part", "optimizer", "batch_size", "retune"], ["steps_to_target", "to_target_censored"]
    own = pd.read_csv(baseline[0] / "report" / "cells.csv")[key + shown]
    compared = pd.read_csv(compared_dirs / "all" / "report" / "cells.csv")
    merged = own.merge(compared[compared["optimizer"] != "myopt"][key + shown], on=key, suffixes=("", "_compared"))
    assert len(merged) == len(own) > 0 and not own["to_target_censored"].all()
    for column in shown:
        pd.testing.assert_series_equal(merged[column], merged[f"{column}_compared"], check_names=False)


def test_an_archive_baseline_restricted_to_some_tasks(compared_dirs):
    runs = RunStore(compared_dirs / "one").load()
    assert set(runs["optimizer"]) == {"myopt"} and set(runs["task"]) == {"regression"}
    cells = pd.read_csv(compared_dirs / "one" / "report" / "cells.csv")
    assert set(cells["task"]) == {"regression"} and set(cells["optimizer"]) == {"sgd", "adam", "myopt"}


@pytest.mark.parametrize("overrides, named", [
    (["study.task_options.regression.dim=7"], "study.task_options.regression.dim=7"),
    (["dtype=float64"], "dtype='float64'"),
    (["study.seeds=[0,1,2]"], "study.seeds=[0, 1, 2]"),
    (["study.batch_sizes=[4,8]"], "study.batch_sizes=[4, 8]"),
    (["study.optimizers=[myopt,adam]"], "adam is already in"),
    (["study.tasks=[fashion_mnist]"], "fashion_mnist is not a task of"),
])
def test_an_unfair_comparison_is_refused_naming_the_difference(baseline, tmp_path, overrides, named):
    out = tmp_path / "refused"
    with pytest.raises(ConfigError, match=None) as refused:
        compared(compare_cfg(out, f"study.baseline={baseline[0]}", *overrides))
    assert named in str(refused.value) and "\n" not in str(refused.value)
    assert not out.exists()


def _copy(directory: Path, into: Path) -> Path:
    shutil.copytree(directory, into, ignore=shutil.ignore_patterns("runs", "traces", "optuna", "locks", "report"))
    return into


def test_a_baseline_of_another_results_version_is_refused(baseline, tmp_path):
    old = _copy(baseline[0], tmp_path / "old")
    env = json.loads((old / "environment.json").read_text())
    env.pop("results_version")
    (old / "environment.json").write_text(json.dumps(env))
    with pytest.raises(ConfigError, match="no results version recorded.*Republish the baseline"):
        compared(compare_cfg(tmp_path / "out", f"study.baseline={old}"))


def test_other_data_is_refused_by_the_runs_starting_loss(baseline, tmp_path):
    other = _copy(baseline[0], tmp_path / "other")
    rows = pd.read_parquet(other / "rows.parquet")
    rows.loc[(rows["task"] == "tiny_mlp") & (rows["step"] == 0), "val_loss"] *= 1.01
    rows.to_parquet(other / "rows.parquet", index=False)
    with pytest.raises(ConfigError, match="the data or model of tiny_mlp differ"):
        compared(compare_cfg(tmp_path / "out", f"study.baseline={other}"))


def test_the_command_refuses_in_one_line_with_exit_status_2(baseline, tmp_path):
    out = tmp_path / "cli"
    done = compare_command(out, f"study.baseline={baseline[1]}", "study.task_options.regression.dim=7")
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "study.task_options.regression.dim=7" in done.stderr
    assert not out.exists()


def test_a_changed_default_is_refused_by_the_runs_identity(baseline, tmp_path):
    other = _copy(baseline[0], tmp_path / "other")
    rows = pd.read_parquet(other / "rows.parquet")
    rows["config"] = rows["config"].str.replace('"n_test": 1000', '"n_test": 999')  # as if made with another default
    rows.to_parquet(other / "rows.parquet", index=False)
    with pytest.raises(ConfigError, match="the runs of regression would differ .* in task_options.n_test: 1000 here, "
                                          "999 there"):
        compared(compare_cfg(tmp_path / "out", f"study.baseline={other}"))


def test_the_protocol_comes_from_the_baseline_and_the_machine_from_the_command(baseline, tmp_path):
    """A preset named on the command line changes nothing; machine settings are the command's."""
    config = compared(compare_cfg(tmp_path / "out", f"study.baseline={baseline[1]}", "study=standard",
                                  "study.workers=2", "study.tasks=[tiny_mlp]"))
    theirs = yaml.safe_load((baseline[0] / "config.yaml").read_text())
    study = OmegaConf.to_container(config.study)
    assert study["workers"] == 2 and study["tasks"] == ["tiny_mlp"] and study["optimizers"] == ["myopt"]
    assert study["name"] == f"{theirs['study']['name']}-vs-myopt" and study["extras"] == {}
    assert study["baseline"] == str(baseline[1].resolve()) and config.results_dir == str(tmp_path / "out")
    for key in ("budgets", "targets", "task_options", "batch_sizes", "seeds", "tune_seeds", "n_trials", "protocol"):
        assert study[key] == theirs["study"][key], key
    assert set(config) == set(theirs)  # nothing of Hydra's, nothing added at the top level
    assert not (tmp_path / "out").exists()
