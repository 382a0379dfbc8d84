"""Bring your own optimizer: a user's optimizer class + one YAML file in their own config
directory runs in every command, with no file of the suite edited.

The worked example of the README (``examples/myopt``, ``examples/conf/optimizer/myopt.yaml``)
runs through the console scripts in subprocesses (``PYTHONPATH=examples``, ``--config-dir
examples/conf``), all launched together by one module fixture: suite-train and
suite-check-optimizer (suite-study with two worker processes is a ``slow`` test; by default a
study cell's job runs in-process on its config alone, as a fresh worker gets it). Tuning,
registration, bad YAML files and the checks are tested in-process on configs
composed as the console scripts compose them (the user's directory on the search path, Hydra's
runtime config set, so messages name the file as they do for a user).
"""
from __future__ import annotations

import dataclasses
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pytest
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf
from user_config import EXAMPLES, byo_cfg, registry_restored, user_env, write_yaml  # noqa: F401 (a fixture)

from suite.cli import guarded
from suite.optim.build import build_optimizer
from suite.optim.external import spec_from_options
from suite.optim.registry import OPTIMIZERS, resolve_hparams
from suite.run.conformance import check_command
from suite.run.execute import execute
from suite.run.prepare import prepare
from suite.study.cell import Job, run_cell
from suite.tasks import build_task
from suite.train.stacked import train_many
from suite.tune.tuner import tune_cell
from suite.types import ConfigError, EvalSpec, RunSpec

BIN = Path(sys.executable).parent
COMMON = ("threads=1", "progress=false")


# --- the worked example, through the console scripts ---------------------------------------------

@pytest.fixture(scope="module")
def launched(tmp_path_factory):
    root = tmp_path_factory.mktemp("byo")
    env = user_env()
    bad = write_yaml(root / "bad", "badkw", "name: badkw\ncls: myopt.Signum\nlr_default: 0.01\n"
                                           "lr_range: [1.0e-4, 1.0]\nmomentum: 0.9\n")
    cd = ("--config-dir", str(EXAMPLES / "conf"))
    cases = {
        "train": ("suite-train", *cd, "optimizer=myopt", "task=tiny_mlp", "task.n=200", "budget.epochs=2",
                  f"results_dir={root / 'train'}"),
        "check": ("suite-check-optimizer", *cd, "optimizer=myopt"),
        "bad-train": ("suite-train", "--config-dir", str(bad), "optimizer=badkw", f"results_dir={root / 'bad-res'}"),
        "unknown-check": ("suite-check-optimizer", "optimizer=no_such_optimizer"),
    }

    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {key: pool.submit(run_script, args, env, root) for key, args in cases.items()}
        return root, {key: f.result() for key, f in futures.items()}


def run_script(args, env, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / args[0]), *args[1:], *COMMON], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def test_suite_train_runs_the_users_optimizer(launched):
    root, out = launched
    assert out["train"].returncode == 0, out["train"].stderr
    rows = pd.read_parquet(root / "train" / "runs")
    assert rows["optimizer"].eq("myopt").all() and rows["lr"].eq(0.003).all() and not rows["diverged"].any()
    assert rows["train_loss"].iloc[-1] < rows["train_loss"].iloc[0]
    assert '"beta": 0.9' in rows["config"].iloc[0]  # its own hyperparameter lives in the config column


def test_suite_check_optimizer_passes_the_example(launched):
    _, out = launched
    check = out["check"]
    assert check.returncode == 0, check.stdout + check.stderr
    lines = check.stdout.strip().splitlines()
    assert lines[0].startswith("optimizer myopt = myopt.Signum") and "examples/conf/optimizer/myopt.yaml" in lines[0]
    assert lines[-1].startswith("verdict: PASS")
    for name in ("builds", "descends", "deterministic", "bounds", "state size", "stacking parity",
                 "short run: regression", "short run: tiny_mlp"):
        assert any(line.split()[:1] == ["PASS"] and name in line for line in lines), name
    assert len(lines) <= 24, "one screen"


def test_tuning_stacks_it_after_the_parity_check(tmp_path):
    cfg = byo_cfg(EXAMPLES / "conf", "optimizer=myopt", "task=tiny_mlp", "task.n=200", "budget.epochs=2",
                  "tune.n_trials=4", "tune.batch=4", f"results_dir={tmp_path}", "progress=false")
    best = tune_cell(cfg, echo=lambda *_: None)
    assert best["lr"] is not None and best["n_finished"] == 4
    rows = pd.read_parquet(tmp_path / "runs")
    assert rows["trial"].nunique() == 4 and rows["stack_size"].eq(4).all()  # declared lr-affine: stacked


def test_a_study_cell_job_registers_it_from_its_config_alone(tmp_path):
    """What a worker process gets is the cell's config as YAML: enough to register the entry."""
    cfg = byo_cfg(EXAMPLES / "conf", "optimizer=myopt", "task=regression", "batch_size=full", "budget.max_steps=10",
                  "eval.points=3", f"results_dir={tmp_path}", "progress=false")
    HydraConfig.instance().cfg = None  # a fresh worker: no Hydra, no registry entry
    OPTIMIZERS.pop("myopt", None)
    summary = run_cell(Job("byo", OmegaConf.to_container(cfg, resolve=True), (0, 1)))
    assert summary["trained"] == 2 and OPTIMIZERS["myopt"].external
    assert set(pd.read_parquet(tmp_path / "runs")["optimizer"]) == {"myopt"}


@pytest.mark.slow
def test_suite_study_with_two_workers_runs_it(tmp_path):
    out = run_script(("suite-study", "--config-dir", str(EXAMPLES / "conf"), "study.optimizers=[sgd,myopt]",
                      "study.tasks=[regression]", "study.batch_sizes=[full]", "study.n_trials=2", "study.tune_batch=2",
                      "study.workers=2", "study.budgets.regression.max_steps=20", "study.eval_points=3",
                      f"results_dir={tmp_path}"), user_env(), tmp_path)
    assert out.returncode == 0, out.stderr
    rows = pd.read_parquet(tmp_path / "runs")
    assert set(rows["optimizer"]) == {"sgd", "myopt"}
    assert (tmp_path / "report" / "README.md").is_file()


def test_bad_yaml_through_the_console_script(launched):
    root, out = launched
    bad = out["bad-train"]
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
    assert str(root / "bad" / "optimizer" / "badkw.yaml") in bad.stderr  # the file, by its full path
    assert "takes no keyword argument momentum" in bad.stderr and not (root / "bad-res").exists()


def test_check_of_an_unknown_name_is_bad_input(launched):
    _, out = launched
    assert out["unknown-check"].returncode == 2  # Hydra's refusal: bad input, never "a check failed"
    assert "no_such_optimizer" in out["unknown-check"].stderr


# --- registration and bad input, in-process ----------------------------------------------------------

GOOD = "name: {name}\ncls: myopt.Signum\nlr_default: 0.01\nlr_range: [1.0e-4, 1.0]\n"
BAD_YAML = {  # name -> (the YAML after name:, what the message says)
    "noimport": ("cls: nosuchpkg.optim.Fast\nlr_default: 0.01\nlr_range: [1.0e-4, 1.0]\n",
                 "cannot import nosuchpkg.optim.Fast (No module named 'nosuchpkg'). Fix: make its package importable"),
    "noclass": ("cls: myopt.NoSuchClass\nlr_default: 0.01\nlr_range: [1.0e-4, 1.0]\n",
                "cannot import myopt.NoSuchClass"),
    "notopt": ("cls: collections.OrderedDict\nlr_default: 0.01\nlr_range: [1.0e-4, 1.0]\n",
               "collections.OrderedDict is not a torch.optim.Optimizer subclass. Fix: point cls: at"),
    "badkw": ("cls: myopt.Signum\nlr_default: 0.01\nlr_range: [1.0e-4, 1.0]\nmomentum: 0.9\n",
              "Signum.__init__ takes no keyword argument momentum; it takes: lr, beta, weight_decay. Fix: rename"),
    "badrange": ("cls: myopt.Signum\nlr_default: 0.01\nlr_range: [1.0, 1.0e-4]\n",
                 "lr_range=[1.0, 0.0001] must satisfy 0 < low < high. Fix:"),
    "equalrange": ("cls: myopt.Signum\nlr_default: 0.01\nlr_range: [0.1, 0.1]\n", "must satisfy 0 < low < high"),
    "badbound": ("cls: myopt.Signum\nlr_default: 0.01\nlr_range: [1.0e-4, 1.0]\nbounds: {beta: [1.0, 0.0]}\n"
                 "beta: 0.9\n", "bounds.beta=[1.0, 0.0] has low >= high. Fix: write bounds.beta as [low, high]"),
    "nobound": ("cls: myopt.Signum\nlr_default: 0.01\nlr_range: [1.0e-4, 1.0]\nbeta: 0.9\n",
                "hyperparameter 'beta' has no valid range. Fix: declare it: bounds: {beta: [low, high]}"),
    "lroutside": ("cls: myopt.Signum\nlr_default: 5.0\nlr_range: [1.0e-4, 1.0]\n",
                  "lr_default=5.0 must be a number inside lr_range"),
    "clash": ("name: adam\ncls: myopt.Signum\nlr_default: 0.01\nlr_range: [1.0e-4, 1.0]\n",
              "name 'adam' is a built-in optimizer of the suite. Fix: give yours another name"),
    "ctorfails": ("cls: myopt.Signum\nlr_default: 0.01\nlr_range: [1.0e-4, 1.0]\nbeta: 1.0\n"
                  "bounds: {beta: [0.0, 1.0]}\n", "fails: ValueError: beta must lie in [0, 1)"),
}


@pytest.mark.parametrize("case", BAD_YAML)
def test_bad_optimizer_yaml_is_one_clear_message_and_nothing_is_stored(case, tmp_path, capsys):
    body, message = BAD_YAML[case]
    conf = write_yaml(tmp_path / "conf", case, body if body.startswith("name:") else f"name: {case}\n{body}")
    results = tmp_path / "results"
    cfg = byo_cfg(conf, f"optimizer={case}", f"results_dir={results}", "progress=false")
    with pytest.raises(SystemExit) as exit_:
        guarded(execute)(cfg)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and len(err.strip().splitlines()) == 1, err
    assert message in err and str(conf / "optimizer" / f"{case}.yaml") in err, err  # the file, by its path
    assert not results.exists()


def test_a_yaml_entry_is_registered_from_the_composed_config(tmp_path):
    conf = write_yaml(tmp_path, "mine", GOOD.format(name="mine") + "state_per_param: 1\nbeta: 0.8\n"
                      "bounds: {beta: [0.0, 1.0, true, false]}\nweight_decay: 0.0\n")
    prepared = prepare(byo_cfg(conf, "optimizer=mine", "optimizer.beta=0.7", "task=regression"))
    entry = OPTIMIZERS["mine"]
    assert entry.external and entry.cls == "myopt.Signum" and entry.state_per_param == 1
    assert entry.bounds["beta"] == (0.0, 1.0, True, False) and not entry.stackable  # nothing declared
    assert prepared.spec.hparams == {"beta": 0.7, "weight_decay": 0.0} and prepared.spec.lr == 0.01
    with pytest.raises(ConfigError, match=r"beta=1.5 is out of range; it must lie in \[0.0, 1.0\)"):
        resolve_hparams("mine", {"beta": 1.5})


def test_a_yaml_cannot_claim_unknown_flags_or_families():
    base = {"name": "x", "cls": "myopt.Signum", "lr_default": 0.01, "lr_range": [1e-4, 1.0]}
    with pytest.raises(ConfigError, match="lr_affine='yes' must be true or false"):
        spec_from_options({**base, "lr_affine": "yes"}, "x.yaml")
    with pytest.raises(ConfigError, match=r"family='pink' is unknown\. Fix: one of sgd, adaptive"):
        spec_from_options({**base, "family": "pink"}, "x.yaml")
    with pytest.raises(ConfigError, match="hyperparameter nesterov=True is not a number.*under fixed:"):
        spec_from_options({**base, "nesterov": True}, "x.yaml")


# --- the checks catch a wrong declaration ----------------------------------------------------------

class CappedSignum(torch.optim.Optimizer):
    """Sign descent whose step is capped at 0.01: NOT lr-affine (the cap binds at lr = 1)."""

    def __init__(self, params, lr: float = 1e-3):
        super().__init__(params, {"lr": lr})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.add_((group["lr"] * torch.sign(p.grad)).clamp(-0.01, 0.01), alpha=-1.0)


LYING = f"name: capped\ncls: {__name__}.CappedSignum\nlr_default: 0.01\nlr_range: [1.0e-4, 1.0]\n" \
        "lr_affine: true\nelementwise: true\nstate_per_param: 2\n"


def test_check_fails_a_false_declaration_and_stacking_refuses_it(tmp_path, capsys):
    conf = write_yaml(tmp_path, "capped", LYING)
    assert check_command(byo_cfg(conf, "optimizer=capped")) == 1
    out = capsys.readouterr().out
    assert out.strip().splitlines()[-1].startswith("verdict: FAIL")
    assert any(line.startswith("  FAIL  stacking parity") and "not lr-affine or not elementwise" in line
               for line in out.splitlines())
    assert any(line.startswith("  FAIL  state size") and "declared 2x" in line for line in out.splitlines())
    task = build_task({"name": "tiny_mlp", "n": 32, "n_val": 8, "n_test": 8})
    base = RunSpec(task="tiny_mlp", optimizer="capped", hparams={}, lr=0.5, batch_size=8, max_steps=4,
                   eval=EvalSpec(points=2))
    specs = [dataclasses.replace(base, lr=lr) for lr in (0.5, 0.05)]
    with pytest.raises(ConfigError, match=rf"declares lr_affine and elementwise in {tmp_path}/optimizer/capped.yaml, "
                                          r"but K=2 stacked steps differ .*Remove lr_affine: true"):
        train_many(task, specs)


def test_a_missing_optional_package_names_the_extra(monkeypatch):
    gone = dataclasses.replace(OPTIMIZERS["lion"], cls="lion_pytorch_not_installed.Lion", impl_cls={})
    monkeypatch.setitem(OPTIMIZERS, "lion", gone)
    with pytest.raises(ConfigError, match=r"needs the lion-pytorch package, which is not installed.*"
                                          r"pip install -e '\.\[optimizers\]' \(or pip install lion-pytorch\)"):
        build_optimizer("lion", [torch.zeros(2, requires_grad=True)], 0.1, {})
