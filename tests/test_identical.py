"""What "identical" means (README, "Stacked training"): a stacked configuration's numbers depend on
its stack's members and their order, never on when the others stop, so everything that trains a
run again (a retried batch split between two workers, a lost trial run, final runs and extras
resumed) trains it in its first stack and gets its values bit for bit; a different stack size or
thread count changes them within ``REPRODUCE_RTOL``, which the README states.
"""
from __future__ import annotations

import dataclasses
import math

import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir

from suite.cli import CONF_DIR
from suite.optim.registry import resolve_hparams
from suite.store.runs import RunStore
from suite.study.extras import _train_purpose
from suite.tasks import build_task
from suite.train import train, train_stacked
from suite.train.stacked import REPRODUCE_RTOL
from suite.tune import tuner
from suite.tune.claims import slot_of
from suite.tune.trials import release_all, run_batch
from suite.types import EvalSpec, RunSpec

CLOCK = ["time_s", "created_at"]
TUNE = ("task=tiny_mlp", "task.n=256", "batch_size=32", "optimizer=adam", "budget.epochs=30", "budget.max_steps=60",
        "eval.points=5", "progress=false", "threads=1", "tune.n_trials=8", "tune.batch=4")


def tcfg(results_dir, *overrides):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name="config", overrides=[*TUNE, f"results_dir={results_dir}", *overrides])


def runs_of(results_dir) -> pd.DataFrame:
    """Every stored row but the clock, in a fixed order."""
    rows = pd.read_parquet(results_dir / "runs").drop(columns=CLOCK)
    return rows.sort_values(["run_id", "step"]).reset_index(drop=True)


def trials_of(cfg) -> list[tuple]:
    study = tuner._open_cell(tuner._plain(cfg), lambda *_: None, survey=False).study
    return sorted((slot_of(t), t.state.name, t.params["lr"], t.value) for t in study.get_trials()
                  if t.state.is_finished() and t.state.name != "FAIL")


def spec(**kw) -> RunSpec:
    base = dict(task="tiny_mlp", optimizer="adam", hparams=resolve_hparams("adam", {}), lr=0.01, batch_size=16,
                epochs=100.0, max_steps=40, eval=EvalSpec(every_steps=10))
    return RunSpec(**{**base, **kw})


def test_a_member_that_leaves_a_stack_early_changes_no_other_members_bits():
    task = build_task({"name": "tiny_mlp", "n": 64, "n_val": 16, "n_test": 16})
    specs = [spec(lr=lr, seed=s) for lr, s in ((0.01, 0), (0.03, 1), (0.003, 2))]
    whole = train_stacked(task, specs)
    pruned = train_stacked(task, specs, on_eval=lambda i, row: i == 2 and row["step"] >= 10)
    assert pruned[2].pruned and pruned[2].steps == 10
    for a, b in zip(whole[:2], pruned[:2]):
        assert [{k: v for k, v in r.items() if k != "time_s"} for r in a.rows] == \
               [{k: v for k, v in r.items() if k != "time_s"} for r in b.rows]


def test_a_retried_batch_split_between_two_workers_gives_the_uninterrupted_values(tmp_path):
    # A grid up to lr 3: the second half of the first batch holds lr 3, which does worse than the first half and
    # would be pruned against it (it is not, uninterrupted: the pruner never sees a trial's own stack).
    pruning = ("tune.sampler=grid", "tune.lr_range=[0.001,3]", "tune.median.n_startup_trials=1", "tune.prune_after=0")
    clean = tcfg(tmp_path / "clean", *pruning)
    tuner.tune_cell(clean, echo=lambda *_: None)
    cfg = tcfg(tmp_path / "split", *pruning)
    cell = tuner._open_cell(tuner._plain(cfg), lambda *_: None, survey=False)
    first = tuner.claim_batch(cell)  # four trials, their stack recorded ...
    release_all(cell, first, KeyboardInterrupt())  # ... then the worker dies before telling: all queued again
    other = dataclasses.replace(cell, worker="another-host:1")
    halves = [[tuner._claim_one(w, slot) for slot in (s, s + 1)] for w, s in ((cell, 0), (other, 2))]
    for worker, half in zip((cell, other), halves):
        for c in half:
            c.stack = c.trial.user_attrs["stack"]
        assert c.stack == [0, 1, 2, 3] and len(half) == 2  # two trials each, one recorded stack of four
        run_batch(worker, half)
    tuner.tune_cell(cfg, echo=lambda *_: None)
    assert trials_of(cfg) == trials_of(clean)
    pd.testing.assert_frame_equal(runs_of(tmp_path / "split"), runs_of(tmp_path / "clean"))


def test_extras_resumed_after_a_lost_run_give_its_values_bit_for_bit(tmp_path):
    configs = [tcfg(tmp_path, f"lr={lr}", "seed=0") for lr in (0.003, 0.01, 0.03)]
    assert _train_purpose(configs[0], configs, "theory") == 3
    store = RunStore(tmp_path)
    good = runs_of(tmp_path)
    assert good["stack_size"].eq(3).all()
    store.path(good["run_id"].iloc[0]).unlink()  # the file of their batch: all three are lost
    assert _train_purpose(configs[0], configs, "theory") == 3
    pd.testing.assert_frame_equal(runs_of(tmp_path), good)


def max_relative_difference(a, b) -> float:
    pairs = [(x[c], y[c]) for x, y in zip(a.rows, b.rows, strict=True)
             for c in ("train_loss", "val_loss", "test_loss", "minibatch_loss")]
    return max(abs(x - y) / abs(y) for x, y in pairs if math.isfinite(y) and y != 0)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_another_stack_size_or_thread_count_stays_within_the_stated_tolerance(dtype, torch_threads, write_dataset,
                                                                              tmp_path):
    tiny = build_task({"name": "tiny_mlp", "n": 256})
    alone = spec(dtype=dtype, max_steps=200, eval=EvalSpec(points=8))
    others = [dataclasses.replace(alone, lr=alone.lr * f, seed=s) for f, s in ((0.5, 1), (2.0, 2), (0.25, 3))]
    single = train(tiny, alone)
    assert max_relative_difference(train_stacked(tiny, [alone, *others])[0], single) <= REPRODUCE_RTOL[dtype]
    assert max_relative_difference(train(tiny, alone), single) == 0.0  # same stack (alone), same threads: same bits
    # Threads split only big ops (tiny_mlp's are not): an MNIST-sized MLP on 600 images the test writes.
    images = build_task({"name": "mnist", "data_dir": str(write_dataset(tmp_path / "mnist", n_train=600, n_test=100)),
                         "val_size": 100})
    mlp = spec(task="mnist", dtype=dtype, batch_size=64, max_steps=60, eval=EvalSpec(points=5), lr=1e-3)
    with torch_threads(2):
        two = train(images, mlp)
    assert max_relative_difference(two, train(images, mlp)) <= REPRODUCE_RTOL[dtype]
