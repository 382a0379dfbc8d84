"""Snapshots that keep any optimizer whole (``suite.optim.restore``), shown on an optimizer that
keeps its settings as attributes (``keeps_attributes``), brought in by YAML like a user's.

``copy.deepcopy`` of such an optimizer loses its settings (torch pickles only ``defaults``,
``state`` and ``param_groups``), so the target protocol's replay used to die in its ``step``.
Here: the copy continues bit for bit; ``suite-check-optimizer`` passes it and exercises every
mechanism; the target protocol works with it end to end through ``train()``, tuning (stacked)
and ``suite-study``. The registry's own entries are checked the same way in
``test_optimizers.py``.
"""
from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from keeps_attributes import YAML, AttributeMomentum
from torch import nn
from user_config import byo_cfg, registry_restored, user_env, write_yaml  # noqa: F401 (a fixture)

from suite.optim.external import register_external
from suite.optim.restore import restore_optimizer
from suite.run.conformance import check_command
from suite.run.mechanisms import snapshot_check
from suite.tune.tuner import tune_cell

NOISY = YAML.replace("name: attrmom", "name: attrnoisy").replace("lr_affine: true\nelementwise: true\n", "")


@pytest.fixture
def conf(tmp_path):
    return write_yaml(write_yaml(tmp_path / "conf", "attrmom", YAML), "attrnoisy", NOISY)


def stepped(opt: torch.optim.Optimizer, params: list[nn.Parameter], grads: list[list[torch.Tensor]]) -> None:
    for step_grads in grads:
        for p, g in zip(params, step_grads):
            p.grad = g.clone()
        opt.step()


def test_a_deep_copy_loses_its_settings_and_a_restored_copy_continues_bit_for_bit():
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    params = list(model.parameters())
    grads = [[torch.randn_like(p) for p in params] for _ in range(6)]
    opt = AttributeMomentum(params, lr=0.1, beta=0.8)
    stepped(opt, params, grads[:3])

    lost = copy.deepcopy(opt)  # what SingleEngine.snapshot did
    with pytest.raises(AttributeError, match="has no attribute"):
        stepped(lost, [p for g in lost.param_groups for p in g["params"]], grads[3:4])

    twin_model = copy.deepcopy(model)
    twin = restore_optimizer(opt, AttributeMomentum(twin_model.parameters(), lr=0.1, beta=0.8))
    assert (twin.beta, twin.steps) == (0.8, 3)
    mine, theirs = twin.state[twin_model.weight]["momentum"], opt.state[model.weight]["momentum"]
    assert mine.dtype == torch.float64 and torch.equal(mine, theirs)  # kept as kept: load_state_dict casts it
    assert mine.data_ptr() != theirs.data_ptr()
    stepped(twin, list(twin_model.parameters()), grads[3:])
    stepped(opt, params, grads[3:])
    for a, b in zip(twin_model.parameters(), params):
        assert torch.equal(a, b)


def test_suite_check_optimizer_passes_it_and_exercises_every_mechanism(conf, capsys):
    assert check_command(byo_cfg(conf, "optimizer=attrmom")) == 0
    lines = capsys.readouterr().out.splitlines()
    status = {name: line.split()[0] for line in lines for name in (
        "snapshot and replay", "state_dict round trip", "eval mode", "closure", "stacking parity") if name in line}
    assert status == {"snapshot and replay": "PASS", "state_dict round trip": "PASS", "eval mode": "SKIP",
                      "closure": "SKIP", "stacking parity": "PASS"}
    assert any("(one run and a stack)" in line for line in lines)  # the stacked engine's copy too
    assert any("load_state_dict casts" in line and "float64 -> float32" in line for line in lines)


def test_a_replay_draws_the_random_numbers_the_run_drew():
    """An optimizer that draws from torch's global generator: the replay draws the same noise, and
    the run continues as if no replay had happened (snapshot_check compares both)."""
    register_external(yaml.safe_load(NOISY), "attrnoisy.yaml")
    check = snapshot_check("attrnoisy", {"beta": 0.9, "noise": 0.01})
    assert check.status == "PASS", check.detail


def test_tuning_with_a_target_stacks_it_and_locates_each_trials_target(conf, tmp_path):
    cfg = byo_cfg(conf, "optimizer=attrmom", "task=tiny_mlp", "task.n=200", "budget.epochs=100",
                  "budget.max_steps=150", "eval.points=4", "target={metric: val_loss, relative: 0.6}",
                  "tune.n_trials=4", "tune.batch=4", "tune.lr_range=[0.01,0.3]", f"results_dir={tmp_path / 'res'}",
                  "progress=false")
    best = tune_cell(cfg, echo=lambda *_: None)
    rows = pd.read_parquet(tmp_path / "res" / "runs")
    assert best["n_finished"] == 4 and rows["stack_size"].eq(4).all()
    located = rows.groupby("run_id")["steps_to_target"].last()
    assert located.notna().sum() >= 2 and best["value"] == located.min()  # located by replays, scored by steps


def test_a_target_study_through_suite_study_runs_it(conf, tmp_path):
    out = subprocess.run(
        [str(Path(sys.executable).with_name("suite-study")), "--config-dir", str(conf), "study=quick",
         "study.optimizers=[attrmom]", "study.tasks=[tiny_mlp]", "study.batch_sizes=[32]", "study.n_trials=2",
         "study.tune_batch=2", "study.widen=false", "study.budgets.tiny_mlp.max_steps=150", "study.eval_points=4",
         "study.targets.tiny_mlp.value=0.2", "+study.report.figures.formats=[png]", f"results_dir={tmp_path / 'res'}",
         "progress=false"], env=user_env(), cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = pd.read_parquet(tmp_path / "res" / "runs")
    last = rows.sort_values("step").groupby("run_id").tail(1)
    assert set(rows["optimizer"]) == {"attrmom"} and last["steps_to_target"].notna().any()  # lrs drawn at random
    assert (tmp_path / "res" / "report" / "README.md").is_file()
