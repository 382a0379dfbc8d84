"""Loop features beyond the basic schedule: learning-rate schedules (single and stacked alike), the
per-step mini-batch loss trace, and exact steps-to-target by replaying a segment."""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from suite.optim.registry import OPTIMIZERS, resolve_hparams
from suite.tasks import build_task
from suite.train import train, train_stacked
from suite.train.schedule import lr_factor
from suite.train.trace import MAX_BINS, bin_trace
from suite.types import EvalSpec, LRSchedule, RunSpec, Target

SCHEDULES = [LRSchedule("cosine", warmup=0.2), LRSchedule("linear", final=0.1, warmup=3),
             LRSchedule("step", step_every=0.25, step_gamma=0.5), LRSchedule("constant", warmup=5)]


@pytest.fixture(scope="module")
def tiny():
    return build_task({"name": "tiny_mlp", "n": 64, "n_val": 32, "n_test": 32})


def spec(optimizer="sgd", **kw) -> RunSpec:
    base = dict(task="tiny_mlp", optimizer=optimizer, hparams=resolve_hparams(optimizer, {}),
                lr=OPTIMIZERS[optimizer].lr_default, batch_size=8, epochs=100.0, max_steps=40,
                eval=EvalSpec(every_steps=10), dtype="float64")
    return RunSpec(**{**base, **kw})


# --- learning-rate schedules -------------------------------------------------------------------

def test_schedule_factors():
    assert lr_factor(LRSchedule(), 100) is None  # constant: no scheduler, no cost
    cos = lr_factor(LRSchedule("cosine", warmup=10), 110)
    assert [cos(t) for t in (0, 4, 9)] == pytest.approx([0.1, 0.5, 1.0])
    assert cos(10) == pytest.approx(1.0) and cos(60) == pytest.approx(0.5) and cos(110) == pytest.approx(0.0)
    lin = lr_factor(LRSchedule("linear", final=0.2), 100)
    assert lin(0) == 1.0 and lin(50) == pytest.approx(0.6) and lin(100) == pytest.approx(0.2)
    step = lr_factor(LRSchedule("step", step_every=0.25, step_gamma=0.1), 100)
    assert [step(t) for t in (0, 24, 25, 50, 99)] == pytest.approx([1, 1, 0.1, 0.01, 0.001])
    assert lr_factor(LRSchedule("cosine", warmup=0.1), 100)(4) == pytest.approx(0.5)  # a fraction of the run


def test_a_schedule_scales_the_optimizers_lr_step_by_step(tiny):
    """SGD without momentum: each step moves by lr·factor(t)·g, so the run equals a hand loop."""
    s = spec(lr_schedule=LRSchedule("cosine", warmup=0.25), eval=EvalSpec(points=2, schedule="linear"))
    got = train(tiny, s)
    factor = lr_factor(s.lr_schedule, 40)
    model = tiny.make_model(0).double()
    from suite.train.batches import BatchStream
    batches = BatchStream(64, 8, "shuffle", 0, torch.device("cpu"))
    x, y = tiny.train.x.double(), tiny.train.y.double()
    for t in range(40):
        sel = next(batches)
        model.zero_grad()
        tiny.loss(model(x[sel]), y[sel]).backward()
        with torch.no_grad():
            for p in model.parameters():
                p -= s.lr * factor(t) * p.grad
    with torch.no_grad():
        assert got.rows[-1]["train_loss"] == pytest.approx(tiny.loss(model(x), y).item(), rel=1e-10)


@pytest.mark.parametrize("schedule", SCHEDULES, ids=lambda s: s.describe())
@pytest.mark.parametrize("optimizer", [n for n, e in OPTIMIZERS.items() if e.stackable])
def test_schedules_stacked_equal_separate_runs(tiny, optimizer, schedule):
    base = spec(optimizer, lr_schedule=schedule)
    specs = [dataclasses.replace(base, lr=base.lr * f, seed=s) for f, s in ((1.0, 0), (0.5, 1), (2.0, 2), (0.3, 0))]
    specs.append(dataclasses.replace(base, lr=base.lr * 1e4, seed=3))  # diverges: the stack shrinks mid-schedule
    want = [train(tiny, s) for s in specs]
    got = train_stacked(tiny, specs)
    for g, w in zip(got, want):
        assert (g.diverged, g.steps) == (w.diverged, w.steps)
        for gr, wr in zip(g.rows, w.rows, strict=True):
            assert gr["train_loss"] == pytest.approx(wr["train_loss"], rel=1e-9, nan_ok=True)
    constant = train(tiny, dataclasses.replace(base, lr_schedule=LRSchedule()))
    assert want[0].rows[-1]["train_loss"] != constant.rows[-1]["train_loss"]  # the schedule mattered


# --- the per-step trace ---------------------------------------------------------------------------

def test_trace_holds_every_steps_minibatch_loss(tiny):
    result = train(tiny, spec(max_steps=40, batch_size=8))
    t = result.trace
    assert t["step_lo"] == list(range(1, 41)) and t["count"] == [1] * 40  # short run: every step
    assert t["mean"][-1] == t["min"][-1] == t["max"][-1] == pytest.approx(result.rows[-1]["minibatch_loss"])
    for row in result.rows[1:]:
        assert t["mean"][row["step"] - 1] == pytest.approx(row["minibatch_loss"])


def test_long_traces_are_log_binned_and_cover_every_step():
    from array import array
    losses = array("d", [1.0 / (i + 1) for i in range(100_000)])
    bins = bin_trace(losses)
    assert len(bins["count"]) <= MAX_BINS and sum(bins["count"]) == 100_000
    assert bins["step_lo"][0] == 1 and bins["step_hi"][-1] == 100_000
    assert all(lo == hi + 1 for lo, hi in zip(bins["step_lo"][1:], bins["step_hi"][:-1]))
    assert bins["count"][:10] == [1] * 10  # the first steps stay exact
    for lo, hi, mean, low, high in zip(bins["step_lo"], bins["step_hi"], bins["mean"], bins["min"], bins["max"]):
        assert low == pytest.approx(1 / hi) and high == pytest.approx(1 / lo) and low <= mean <= high


def test_a_diverged_runs_trace_ends_at_its_bad_step(tiny):
    result = train(tiny, spec(lr=1e4))
    assert result.diverged and sum(result.trace["count"]) == result.steps
    assert not result.trace["max"][-1] < 1e6


# --- exact steps to target -------------------------------------------------------------------------

def first_step_meeting(task, s, target):
    """The reference: the same run evaluated after every step."""
    dense = train(task, dataclasses.replace(s, eval=EvalSpec(every_steps=1), target=None))
    initial = dense.rows[0][target.metric]
    hits = [r["step"] for r in dense.rows if target.met(r[target.metric], target.thresholds(initial))]
    return hits[0] if hits else math.nan


@pytest.mark.parametrize("target", [Target("val_loss", value=0.3), Target("train_loss", relative=0.5),
                                    Target("val_loss", value=0.12)], ids=str)
def test_replay_finds_the_first_step_that_meets_the_target(tiny, target):
    s = spec("momentum", max_steps=300, eval=EvalSpec(points=4), target=target)  # a coarse log grid
    exact = first_step_meeting(tiny, s, target)
    got = train(tiny, s)
    assert not math.isnan(exact)
    assert got.to_target_bracket <= max(1, 0.05 * exact)
    assert exact <= got.steps_to_target <= exact + got.to_target_bracket
    assert got.steps_to_target - exact <= max(1, 0.05 * exact)
    assert [r["step"] for r in got.rows] == [r["step"] for r in train(tiny, dataclasses.replace(s, target=None)).rows]


def test_replay_in_a_stack_matches_each_single_run(tiny):
    target = Target("val_loss", value=0.3)
    base = spec("adam", max_steps=200, eval=EvalSpec(points=5), target=target)
    specs = [dataclasses.replace(base, lr=base.lr * f, seed=sd) for f, sd in ((1, 0), (3, 1), (10, 2), (0.1, 0))]
    got = train_stacked(tiny, specs)
    for g, s in zip(got, specs):
        single = train(tiny, s)
        assert (g.steps_to_target, g.to_target_bracket) == (single.steps_to_target, single.to_target_bracket) \
            or (math.isnan(g.steps_to_target) and math.isnan(single.steps_to_target))
    assert any(math.isnan(g.steps_to_target) for g in got) and any(not math.isnan(g.steps_to_target) for g in got)


def test_unreached_target_is_nan_and_stop_at_target_ends_the_run(tiny):
    unreachable = train(tiny, spec(target=Target("val_loss", value=1e-9)))
    assert math.isnan(unreachable.steps_to_target) and unreachable.steps == 40
    s = spec("momentum", max_steps=300, eval=EvalSpec(every_steps=25), target=Target("val_loss", value=0.3))
    full, stopped = train(tiny, s), train(tiny, dataclasses.replace(s, stop_at_target=True))
    assert stopped.steps_to_target == full.steps_to_target and stopped.steps < full.steps
    assert stopped.steps >= stopped.steps_to_target and not stopped.pruned


def test_a_target_met_at_step_0_is_exact(tiny):
    result = train(tiny, spec(target=Target("val_loss", value=100.0)))
    assert (result.steps_to_target, result.to_target_bracket) == (0.0, 0.0)


def test_replay_under_a_schedule_leaves_the_run_unchanged_and_warns_nothing(tiny, recwarn):
    """The replayed copy has its own optimizer and schedule: the run's rows are those of the same run
    without a target, single and stacked, and torch's scheduler has nothing to warn about."""
    base = spec("adam", max_steps=300, eval=EvalSpec(points=8), lr_schedule=LRSchedule("linear"))
    specs = [dataclasses.replace(base, lr=base.lr * f, seed=i) for i, f in enumerate((1.0, 0.5, 2.0))]
    target = Target("val_loss", value=0.3)
    for plain, aimed in ((train(tiny, specs[0]), train(tiny, dataclasses.replace(specs[0], target=target))),
                         *zip(train_stacked(tiny, specs),
                              train_stacked(tiny, [dataclasses.replace(s, target=target) for s in specs]))):
        assert [r["train_loss"] for r in plain.rows] == [r["train_loss"] for r in aimed.rows]
    assert not math.isnan(aimed.steps_to_target)
    assert not [w for w in recwarn if "lr_scheduler" in str(w.message) or "optimizer.step()" in str(w.message)]
