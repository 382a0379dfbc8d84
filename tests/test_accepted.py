"""A command is accepted or refused before it writes anything; a study's protocol moves only on purpose.

One finished study (one tiny_mlp cell, two trials, one seed, 30 steps: about two seconds) is copied
for each test that runs a command on it. Refusals are in-process through ``guarded``, as the
console script runs them: exit status 2, one line, and every file as it was.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from faults import killed_in_child, on_call
from hydra import compose, initialize_config_dir

from suite.report.figures import curves as report_curves
from suite.cli import CONF_DIR, guarded
from suite.report.build import write_report
from suite.store.runs import RunStore
from suite.study.runner import study_and_report
from suite.tune.summary import UNREACHED
from suite.tune.tuner import tune_cell
from suite.types import COMMAND_VARIABLE, ConfigError

ONE_CELL = [
    "study.tasks=[tiny_mlp]", "study.optimizers=[adam]", "study.batch_sizes=[full]", "study.seeds=[0]",
    "study.n_trials=2", "study.tune_batch=2", "study.budgets.tiny_mlp.max_steps=30", "study.eval_points=4",
    "+study.task_options.tiny_mlp.n=256", "progress=false", "+study.report.figures.formats=[png]", "study.widen=false",
]  # quick's tiny_mlp target (val_loss <= 0.05) is out of reach in 30 steps
REACHABLE = "study.targets.tiny_mlp.value=0.5"  # from about 0.56 at step 0


def study_cfg(results_dir: Path, *overrides: str):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name="study_app", overrides=[f"results_dir={results_dir}", *ONE_CELL, *overrides])


def quiet(*_):
    pass


@pytest.fixture(scope="module")
def finished(tmp_path_factory, torch_threads):
    root = tmp_path_factory.mktemp("finished") / "study"
    with torch_threads(1):
        study_and_report(study_cfg(root), echo=quiet)
    return root


@pytest.fixture
def study(finished, tmp_path):
    """A copy of the finished study, to run commands on."""
    return Path(shutil.copytree(finished, tmp_path / "study"))


def refused(cfg, capsys, run=study_and_report) -> str:
    with pytest.raises(SystemExit) as exit_:
        guarded(run)(cfg)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    return err


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


BAD_STUDY = {  # override -> what the one line says
    "study.threads.tiny_mlp=0": "threads=0 is not valid: give threads=auto",
    "study.eval_points=1": "eval.points=1 is invalid",
    "study.budgets.tiny_mlp.max_steps=-5": "budget.max_steps=-5 must be null or an integer >= 0",
    "study.seeds=[0,0]": "study.seeds=[0, 0] repeats seed(s) 0",
    "study.tune_seeds=[7,7]": "repeats seed(s) 7",
    "study.seeds=[9223372036854775808]": "a seed is an integer from 0 to 4294967295 (2^32 - 1)",
    "study.targets.tiny_mlp={metric: val_accuracy, value: 0.9}": "task tiny_mlp has no val_accuracy",
    "study.targets.tiny_mlp.value=-1": "a loss is never below 0",
    "+study.targets.tiny_mlp.relative=1.0": "give exactly one of value (absolute) or relative",
    "study.targets.tiny_mlp.metric=excess_loss": "task tiny_mlp has no excess_loss (its optimum is not known)",
    "tune.storage=nosuch://host/db": "unknown storage scheme 'nosuch'",
}


@pytest.mark.parametrize("override", BAD_STUDY)
def test_a_refused_study_writes_nothing(override, tmp_path, capsys):
    root = tmp_path / "new"
    assert BAD_STUDY[override] in refused(study_cfg(root, override), capsys)
    assert not root.exists()


def test_a_refused_tune_writes_nothing(compose, tmp_path, capsys):
    root = tmp_path / "tune"
    for bad, says in [("tune.storage=nosuch://host/db", "unknown storage scheme"), ("tune.seeds=[1,1]", "repeats"),
                      ("target={metric: val_accuracy, value: 0.9}", "task tiny_mlp has no val_accuracy")]:
        cfg = compose("task=tiny_mlp", bad, f"results_dir={root}", "progress=false")
        assert says in refused(cfg, capsys, run=lambda c: tune_cell(c, echo=quiet, survey=True))
        assert not root.exists()


def test_a_refused_command_leaves_a_finished_study_as_it_was(study, capsys):
    before = files(study)
    for overrides, says in [
        (["study.targets.tiny_mlp={metric: val_loss, value: 0.2}", "study.threads.tiny_mlp=0"], "threads=0"),
        (["study.eval_points=1"], "eval.points=1 is invalid"),
        (["study.budgets.tiny_mlp.max_steps=-5"], "budget.max_steps=-5"),
        (["study.targets.tiny_mlp={metric: val_loss, value: 0.2}"],
         "would change the protocol of the study recorded in "
         f"{study / 'config.yaml'} (study.targets.tiny_mlp.value: 0.05 -> 0.2); a study's protocol is fixed"),
        (["study.budgets.tiny_mlp.max_steps=60"], "(study.budgets.tiny_mlp.max_steps: 30 -> 60)"),
        (["tune.sampler=random"], "would change the tuner's sampler settings"),
    ]:
        assert says in refused(study_cfg(study, *overrides), capsys)
        assert files(study) == before, overrides  # config, environment (no invocation added), report


def test_no_trial_reaching_the_target_is_flagged_never_exported_as_tuned(finished):
    (export,) = [json.loads(p.read_text()) for p in (finished / "tuned").glob("*.json")]
    assert export["lr_source"] == UNREACHED and export["target_reached"] is False and export["lr"] > 0
    readme = (finished / "report" / "README.md").read_text()
    assert ("- **target not reached in tuning** (§): tiny_mlp / target / adam / batch 256 (GD): tuned (no trial "
            "reached") in readme
    assert "§" in (finished / "report" / "tables" / "tiny_mlp" / "best_lr.md").read_text()
    env = json.loads((finished / "environment.json").read_text())
    assert [i["seconds"] is not None for i in env["invocations"]] == [True] and env["wall_seconds"] > 0


def test_a_protocol_change_on_purpose_is_recorded_and_reported(study, monkeypatch):
    line = f"suite-study results_dir={study} study.change_protocol=true {REACHABLE}"
    monkeypatch.setenv(COMMAND_VARIABLE, line)
    study_and_report(study_cfg(study, "study.change_protocol=true", REACHABLE), echo=quiet)
    env = json.loads((study / "environment.json").read_text())
    last = env["invocations"][-1]
    assert last["changed"] == ["study.targets.tiny_mlp.value: 0.05 -> 0.5"] and last["command"] == line
    recorded = (study / "config.yaml").read_text()
    assert "value: 0.5" in recorded and "change_protocol" not in recorded
    readme = (study / "report" / "README.md").read_text()
    assert f"tiny_mlp: val_loss ≤ 0.5 (target changed after the study ran, by `{line}`" in readme
    exports = [json.loads(p.read_text()) for p in (study / "tuned").glob("*.json")]
    (export,) = [e for e in exports if e["cell_config"]["target"]["value"] == 0.5]  # a new cell: a new target
    assert export["lr_source"] == "tuned" and export["target_reached"] is True  # this target is reached


def test_an_invocation_killed_during_the_report_is_interrupted(tmp_path):
    root = tmp_path / "killed"
    killed_in_child(lambda: study_and_report(study_cfg(root), echo=quiet), lambda: on_call(report_curves, "curves", 1))
    env = json.loads((root / "environment.json").read_text())
    assert [i["seconds"] for i in env["invocations"]] == [None] and env.get("wall_seconds") is None


def test_a_damaged_trace_is_named_by_the_report_and_rebuilt_by_the_study(study, capsys):
    rows = pd.read_parquet(study / "runs")
    final = rows.loc[rows["trial"].isna(), "run_id"].iloc[0]
    trace = study / "traces" / RunStore(study).path(final).name  # the traces of its cell's final runs
    whole = pd.read_parquet(trace)
    trace.write_bytes(trace.read_bytes()[: trace.stat().st_size // 2])  # cut in half
    said: list[str] = []
    write_report(study, echo=quiet, notice=said.append)
    assert len(said) == 1 and f"{trace.name}" in said[0] and "trains" not in said[0].replace("training", "")
    assert f"damaged trace file(s) `traces/{trace.name}`" in (study / "report" / "README.md").read_text()
    study_and_report(study_cfg(study), echo=quiet)
    err = capsys.readouterr().err
    assert f"damaged trace file(s) under {study / 'traces'}: {trace.name}" in err
    pd.testing.assert_frame_equal(pd.read_parquet(trace), whole)  # the run trained again: the same trace
    assert "damaged" not in (study / "report" / "README.md").read_text()


def test_report_targets_are_checked_against_the_stored_runs(finished):
    before = files(finished / "report")
    for override, says in [("targets.tiny_mlp={metric: val_accuracy, value: 0.9}", "tiny_mlp's runs store no "
                            "val_accuracy (they store train_loss, val_loss)"),
                           ("targets.tiny_mlp.value=-1", "targets.tiny_mlp: target {metric: val_loss, value: -1"),
                           ("targets.tiny_mlp.metric=excess_loss", "store no excess_loss")]:
        with pytest.raises(ConfigError, match="targets.tiny_mlp") as err:
            write_report(finished, [override], echo=quiet)
        assert says in str(err.value)
    assert files(finished / "report") == before and not list(finished.glob(".report.*"))


def test_suite_train_rebuilds_a_damaged_trace_of_its_run(compose, tmp_path):
    from suite.run.execute import execute

    cfg = compose("task=tiny_mlp", "budget.max_steps=5", "eval.points=2", f"results_dir={tmp_path}", "progress=false")
    execute(cfg, echo=quiet)
    (trace,) = (tmp_path / "traces").glob("*.parquet")
    whole = pd.read_parquet(trace)
    trace.write_bytes(trace.read_bytes()[: trace.stat().st_size // 2])
    said: list[str] = []
    execute(cfg, echo=said.append)
    assert said[0] == f"run {trace.stem}: its trace {trace} is damaged; training the run again rebuilds it."
    pd.testing.assert_frame_equal(pd.read_parquet(trace), whole)
