"""The training loop: evaluation schedule, sampling, divergence, timing, caps, pruning, train_many,
and gradient descent reaching the known optimum of the regression."""
from __future__ import annotations

import math

import pytest
import torch

from suite.optim.registry import resolve_hparams
from suite.tasks import build_task
from suite.train import train, train_many
from suite.train.batches import BatchStream, batch_rows
from suite.train.schedule import eval_steps, total_steps
from suite.train.single import clear_grads
from suite.types import EvalSpec, RunSpec


@pytest.fixture(scope="module")
def reg():
    return build_task({"name": "regression", "n": 200, "n_val": 50, "n_test": 50})


def spec(**kw) -> RunSpec:
    optimizer = kw.pop("optimizer", "sgd")
    base = dict(task="regression", optimizer=optimizer, hparams=resolve_hparams(optimizer, {}), lr=0.1,
                batch_size=20, epochs=2.0)
    return RunSpec(**{**base, **kw})


def steps_of(result) -> list[int]:
    return [row["step"] for row in result.rows]


# --- evaluation schedule -------------------------------------------------------------------------

@pytest.mark.parametrize("ev", [EvalSpec(points=5), EvalSpec(points=5, schedule="linear"), EvalSpec(every_steps=7),
                                EvalSpec(every_epochs=0.25), EvalSpec(points=2), EvalSpec(points=100)])
@pytest.mark.parametrize("total", [1, 2, 13, 1000])
def test_eval_steps_always_include_first_and_last(ev, total):
    steps = eval_steps(ev, total, n=200, batch_size=20)
    assert steps[0] == 0 and steps[-1] == total and steps == sorted(set(steps))
    assert len(steps) <= max(ev.points, total // (ev.every_steps or 1)) + 2


def test_eval_cadences():
    assert eval_steps(EvalSpec(every_steps=7), 30, 200, 20) == [0, 7, 14, 21, 28, 30]
    assert eval_steps(EvalSpec(every_epochs=0.5), 40, 200, 20) == [0, 5, 10, 15, 20, 25, 30, 35, 40]
    assert eval_steps(EvalSpec(points=5, schedule="linear"), 100, 200, 20) == [0, 25, 50, 75, 100]
    log = eval_steps(EvalSpec(points=5), 1000, 200, 20)
    assert log == [0, 1, 10, 100, 1000]  # `points` in all: step 0 plus points-1 log-spaced from 1
    log = eval_steps(EvalSpec(points=30), 10**6, 200, 20)
    assert len(log) == 30
    ratios = [b / a for a, b in zip(log[5:], log[6:])]
    assert max(ratios) / min(ratios) < 1.1, "log-spaced: equal ratios between evaluation points"


def test_rows_follow_the_schedule(reg):
    result = train(reg, spec(eval=EvalSpec(every_steps=3)))
    assert steps_of(result) == eval_steps(EvalSpec(every_steps=3), 20, 200, 20) == [0, 3, 6, 9, 12, 15, 18, 20]
    for row in result.rows:
        assert row["samples"] == 20 * row["step"] and row["epoch"] == row["samples"] / 200
    assert math.isnan(result.rows[0]["minibatch_loss"]) and all(math.isfinite(r["minibatch_loss"])
                                                                for r in result.rows[1:])
    assert all(math.isnan(r["val_accuracy"]) for r in result.rows)  # regression: no accuracy
    assert result.rows[-1]["excess_loss"] == pytest.approx(result.rows[-1]["train_loss"] - reg.optimal_loss)


def test_total_steps():
    assert total_steps(spec(epochs=2.0, batch_size=20), 200) == 20
    assert total_steps(spec(epochs=1.0, batch_size=30), 200) == 7  # ceil: the last batch straddles
    assert total_steps(spec(epochs=0.0), 200) == 0
    assert total_steps(spec(epochs=10.0, max_steps=4), 200) == 4


# --- sampling -------------------------------------------------------------------------------------

def take(stream: BatchStream, steps: int, n: int) -> list[list[int]]:
    it = iter(stream)
    out = []
    for _ in range(steps):
        sel = next(it)
        out.append(list(range(n))[sel] if isinstance(sel, slice) else sel.tolist())
    return out


@pytest.mark.parametrize("n,b", [(10, 3), (10, 5), (12, 12), (7, 1)])
def test_sequential_is_the_seeds_chunking_with_wrap(n, b):
    batches = take(BatchStream(n, b, "sequential", 0, torch.device("cpu")), 9, n)
    for t, batch in enumerate(batches):
        ix = (t * b) % n  # tutorial 000's start index
        assert batch == [(ix + j) % n for j in range(b)]


@pytest.mark.parametrize("n,b", [(12, 3), (12, 1), (12, 4)])
def test_shuffle_visits_every_sample_once_per_epoch(n, b):
    batches = take(BatchStream(n, b, "shuffle", 0, torch.device("cpu")), 3 * n // b, n)
    per_epoch = n // b
    epochs = [sum(batches[e * per_epoch:(e + 1) * per_epoch], []) for e in range(3)]
    assert all(sorted(ep) == list(range(n)) for ep in epochs)
    assert len({tuple(ep) for ep in epochs}) == 3, "reshuffled every epoch"


def test_shuffle_straddling_batches_still_cover_each_epoch():
    stream = sum(take(BatchStream(10, 4, "shuffle", 1, torch.device("cpu")), 10, 10), [])  # 40 samples
    assert all(sorted(stream[i:i + 10]) == list(range(10)) for i in range(0, 40, 10))


def test_replacement_draws_iid_and_is_seeded():
    batches = take(BatchStream(10, 10, "replacement", 0, torch.device("cpu")), 20, 10)
    again = take(BatchStream(10, 10, "replacement", 0, torch.device("cpu")), 20, 10)
    assert batches == again
    assert all(0 <= i < 10 for batch in batches for i in batch)
    assert any(len(set(batch)) < 10 for batch in batches), "with replacement, repeats happen"
    assert take(BatchStream(10, 10, "replacement", 1, torch.device("cpu")), 20, 10) != batches


@pytest.mark.parametrize("sel", [slice(3, 7), torch.tensor([5, 0, 5, 9]), torch.tensor([[1, 2], [8, 3]])])
def test_batch_rows_are_the_indexed_rows(sel):
    x, y = torch.randn(10, 3, 2), torch.arange(10)
    for t in (x, y):
        got = batch_rows(t, sel)
        assert got.shape == t[sel].shape and torch.equal(got, t[sel])
    assert batch_rows(x, slice(3, 7)).data_ptr() == x[3].data_ptr()  # a slice stays a view


class OwnZeroGrad(torch.optim.SGD):
    """An optimizer with a zero_grad of its own (it counts its calls and keeps the gradients)."""

    calls = 0

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.calls += 1


def test_clear_grads_is_zero_grad_set_to_none_and_keeps_an_optimizers_own():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
    first, rest = list(model.parameters())[:2], list(model.parameters())[2:]
    opt = torch.optim.Adam([{"params": first}, {"params": rest, "lr": 0.1}])  # every group, not the first
    model(torch.randn(5, 3)).sum().backward()
    clear_grads(opt)
    assert all(p.grad is None for p in model.parameters())
    own = OwnZeroGrad(model.parameters(), lr=0.1)
    model(torch.randn(5, 3)).sum().backward()
    clear_grads(own)
    assert own.calls == 1 and all(p.grad is not None for p in model.parameters())


def test_sequential_loop_equals_hand_written_seed_loop(reg):
    """Through the real loop: sequential SGD (b=30, n=200: batches wrap) equals tutorial 000's loop."""
    result = train(reg, spec(sampling="sequential", batch_size=30, epochs=3.0, dtype="float64",
                             eval=EvalSpec(points=2)))
    x, y = reg.train.x.double(), reg.train.y.double()
    model = reg.make_model(0).double()
    for t in range(result.steps):
        ix = torch.arange(t * 30, t * 30 + 30) % 200
        model.zero_grad()
        reg.loss(model(x[ix]), y[ix]).backward()
        with torch.no_grad():
            for p in model.parameters():
                p -= 0.1 * p.grad
    with torch.no_grad():
        assert result.rows[-1]["train_loss"] == pytest.approx(reg.loss(model(x), y).item(), abs=1e-12)


# --- divergence, timing, caps ---------------------------------------------------------------------

def test_huge_lr_diverges_and_stops(reg):
    """The loss is checked after every step, not only at evaluation points: the run stops at once."""
    result = train(reg, spec(lr=1e3, epochs=50.0, eval=EvalSpec(points=2, schedule="linear")))  # evals: 0, 500
    assert result.diverged and result.steps <= 2 < total_steps(spec(epochs=50.0), 200)
    assert result.rows[-1]["step"] == result.steps
    last = result.rows[-1]["train_loss"]
    assert not last <= 1e3 * result.rows[0]["train_loss"]  # NaN/inf or past the factor


def test_divergence_factor(reg):
    assert not train(reg, spec(lr=0.1, divergence_factor=1e3)).diverged
    assert train(reg, spec(lr=1.5, batch_size=200, divergence_factor=2.0, epochs=40.0)).diverged


def test_warmup_not_timed_and_clock_monotone(reg):
    result = train(reg, spec(warmup_steps=3, eval=EvalSpec(every_steps=1)))
    times = {row["step"]: row["time_s"] for row in result.rows}
    assert all(times[s] == 0.0 for s in range(4))
    assert times[5] > 0.0
    values = [row["time_s"] for row in result.rows]
    assert values == sorted(values)
    assert result.train_seconds == values[-1]


def test_max_steps_cap(reg):
    result = train(reg, spec(epochs=100.0, max_steps=7))
    assert result.steps == 7 and steps_of(result)[-1] == 7


def test_max_seconds_cap(reg):
    full = total_steps(spec(epochs=1e4), 200)
    result = train(reg, spec(epochs=1e4, max_seconds=0.05, warmup_steps=0))
    assert result.steps < full and not result.diverged
    assert result.rows[-1]["time_s"] >= 0.05 and result.rows[-1]["step"] == result.steps


# --- pruning callback and train_many --------------------------------------------------------------

def test_on_eval_prunes(reg):
    seen = []

    def prune_second(row):
        seen.append(row["step"])
        return len(seen) == 2

    result = train(reg, spec(eval=EvalSpec(every_steps=4)), on_eval=prune_second)
    assert result.pruned and not result.diverged
    assert seen == [4, 8] and steps_of(result) == [0, 4, 8] and result.steps == 8
    kept = train(reg, spec(eval=EvalSpec(every_steps=4)), on_eval=lambda row: False)
    assert not kept.pruned and kept.steps == 20


def curve(result):
    return [{k: v for k, v in row.items() if k != "time_s"} for row in result.rows]


def test_train_many_equals_separate_runs(reg):
    specs = [spec(lr=0.05), spec(lr=0.2, seed=1), spec(lr=0.1, sampling="sequential")]
    many = train_many(reg, specs)
    for result, s in zip(many, specs, strict=True):
        single = train(reg, s)
        assert curve(result) == curve(single) and result.steps == single.steps and result.impl == single.impl


def test_train_many_of_one_cell_matches_separate_runs(reg):
    """Same cell, different lrs and seeds: train_many may stack them (suite.stacked); the curves
    still match separate runs to float tolerance."""
    specs = [spec(lr=lr, seed=seed, eval=EvalSpec(every_steps=4)) for lr, seed in ((0.05, 0), (0.2, 1), (0.1, 2))]
    for result, s in zip(train_many(reg, specs), specs, strict=True):
        single = train(reg, s)
        assert [r["step"] for r in result.rows] == [r["step"] for r in single.rows]
        for key in ("train_loss", "val_loss", "test_loss", "minibatch_loss"):
            assert [r[key] for r in result.rows] == pytest.approx([r[key] for r in single.rows], rel=1e-5,
                                                                 nan_ok=True), key


def test_train_many_routes_pruning_per_configuration(reg):
    specs = [spec(eval=EvalSpec(every_steps=5)) for _ in range(3)]
    results = train_many(reg, specs, on_eval=lambda i, row: i == 1)
    assert [r.pruned for r in results] == [False, True, False]
    assert [r.steps for r in results] == [20, 5, 20]


# --- gradient descent on the regression -----------------------------------------------------------

def test_gd_reaches_the_least_squares_optimum():
    task = build_task({"name": "regression"})
    lr = 0.9 * task.info["gd_max_stable_lr"]
    result = train(task, spec(lr=lr, batch_size=task.n_train, epochs=300.0, eval=EvalSpec(points=10)))
    first, last = result.rows[0], result.rows[-1]
    assert not result.diverged
    assert last["excess_loss"] < 1e-4 * first["train_loss"], (last["excess_loss"], first["train_loss"])
    assert last["excess_loss"] > -1e-6  # nothing beats the closed-form optimum (up to float32 rounding)


# --- the divergence check off the CPU (no host sync per step), run on the CPU -------------------

def loop_results(task, specs, check_every):
    from suite.train.loop import Loop
    from suite.train.single import SingleEngine
    from suite.train.stacked import StackEngine

    engine = SingleEngine(task, specs[0]) if len(specs) == 1 else StackEngine(task, specs)
    return Loop(engine, specs, check_every=check_every).run()


def without_time(rows):
    return [{k: v for k, v in r.items() if k != "time_s"} for r in rows]


@pytest.mark.parametrize("check_every", [3, 8, 64])
def test_deferred_divergence_check_finds_the_first_bad_step(reg, check_every):
    """Reading the losses every few steps (the GPU path) stops a run at the same first bad step, with
    that step's mini-batch loss; a run that does not diverge is unchanged, row for row."""
    diverging = spec(lr=30.0, epochs=50.0, eval=EvalSpec(every_steps=10))
    exact, deferred = (loop_results(reg, [diverging], every)[0] for every in (1, check_every))
    assert exact.diverged and deferred.diverged
    assert deferred.steps == exact.steps and [r["step"] for r in deferred.rows] == [r["step"] for r in exact.rows]
    assert deferred.rows[-1]["minibatch_loss"] == exact.rows[-1]["minibatch_loss"]
    assert without_time(deferred.rows[:-1]) == without_time(exact.rows[:-1])
    calm = spec(epochs=3.0, eval=EvalSpec(every_steps=7))
    assert without_time(loop_results(reg, [calm], 1)[0].rows) == \
        without_time(loop_results(reg, [calm], check_every)[0].rows)


def test_deferred_check_in_a_stack_leaves_the_others_unchanged(reg):
    specs = [spec(lr=lr, seed=s, epochs=20.0, eval=EvalSpec(every_steps=10), dtype="float64")
             for lr, s in ((0.05, 0), (30.0, 1), (0.1, 2))]
    exact, deferred = loop_results(reg, specs, 1), loop_results(reg, specs, 16)
    assert [r.diverged for r in deferred] == [False, True, False] == [r.diverged for r in exact]
    assert deferred[1].steps == exact[1].steps
    for i in (0, 2):
        assert without_time(deferred[i].rows) == without_time(exact[i].rows)
