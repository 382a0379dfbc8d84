"""Stacked training (K configurations as one model) against K separate ordinary runs.

The reference is ``suite.train.train``, one run per configuration; the stacked trainer must
reproduce each run's parameters and rows (float64, 1e-9 relative), for every optimizer, with and
without accumulation, through divergence, pruning and time-outs of single configurations.
"""
from __future__ import annotations

import dataclasses
import math

import pandas as pd
import pytest
import torch
from task_cases import CASES, small_task
from torch import nn

from suite.optim.registry import OPTIMIZERS, OptimizerSpec, resolve_hparams
from suite.store.identity import run_config
from suite.tasks import build_task
from suite.tasks.stacking import NoStackedLayers
from suite.train import train, train_many
from suite.train.batches import BatchStream, StackBatches
from suite.train.rows import make_frame
from suite.train.stack_models import VmapStack, stack_models, stacked_loss, unstack
from suite.train.stacked import StackedRun, check_stackable, stacking_pays, train_stacked
from suite.types import ConfigError, EvalSpec, RunSpec

RTOL = 1e-9
TINY = {"name": "tiny_mlp", "n": 64, "n_val": 32, "n_test": 32}
LOSS_COLUMNS = ("train_loss", "minibatch_loss", "val_loss", "test_loss", "val_accuracy", "test_accuracy")


@pytest.fixture(scope="module")
def tiny():
    return build_task(TINY)


def spec(optimizer: str = "sgd", **kw) -> RunSpec:
    base = dict(task="tiny_mlp", optimizer=optimizer, hparams=resolve_hparams(optimizer, {}),
                lr=OPTIMIZERS[optimizer].lr_default, batch_size=8, epochs=100.0, max_steps=20,
                eval=EvalSpec(every_steps=5), dtype="float64")
    return RunSpec(**{**base, **kw})


def cell(base: RunSpec, lr_factors=(1.0, 0.5, 2.0, 0.25), seeds=(0, 1, 2, 0)) -> list[RunSpec]:
    """K = 4 configurations of one cell: different lrs, seeds 0, 1, 2 and 0 again (shared batches)."""
    return [dataclasses.replace(base, lr=base.lr * f, seed=s) for f, s in zip(lr_factors, seeds)]


def separate(task, specs):
    """The reference: one ordinary ``train`` per spec, with the model each run trained."""
    results, models = [], []
    for s in specs:
        made = []

        def make(seed, made=made):
            made.append(task.make_model(seed))
            return made[-1]

        results.append(train(dataclasses.replace(task, make_model=make), s))
        models.append(made[0])
    return results, models


def stacked(task, specs, **kw):
    run = StackedRun(task, specs, **kw)
    results = run.run()
    return results, [run.final_state(i) for i in range(len(specs))]


def assert_close(a: float, b: float) -> None:
    assert (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, rel=RTOL, abs=1e-300), (a, b)


def assert_same_run(got, want, got_state, want_model) -> None:
    """Same rows (up to time), same outcome, same parameters."""
    assert (got.diverged, got.pruned, got.steps, got.impl) == (want.diverged, want.pruned, want.steps, want.impl)
    assert [r["step"] for r in got.rows] == [r["step"] for r in want.rows]
    for g, w in zip(got.rows, want.rows):
        assert {k for k in g} == {k for k in w}
        for key in LOSS_COLUMNS + ("epoch", "samples", "excess_loss"):
            assert_close(g[key], w[key])
    want_state = want_model.state_dict()
    assert set(got_state) == set(want_state)
    for name, tensor in want_state.items():
        torch.testing.assert_close(got_state[name], tensor, rtol=RTOL, atol=0.0, equal_nan=True)


# --- the core equivalence ----------------------------------------------------------------------------

STACKABLE = [name for name, entry in OPTIMIZERS.items() if entry.stackable]


@pytest.mark.parametrize("accumulation, reduction", [(1, "mean"), (2, "mean"), (2, "sum")])
@pytest.mark.parametrize("optimizer", STACKABLE)
def test_stacked_equals_separate_runs(tiny, optimizer, accumulation, reduction):
    specs = cell(spec(optimizer, accumulation_steps=accumulation, accumulation_reduction=reduction))
    want, models = separate(tiny, specs)
    got, states = stacked(tiny, specs)
    assert not any(r.diverged for r in want)
    for g, w, st, m in zip(got, want, states, models, strict=True):
        assert_same_run(g, w, st, m)
        assert w.rows[-1]["train_loss"] != w.rows[0]["train_loss"]  # it trained


@pytest.mark.parametrize("optimizer", STACKABLE)
def test_one_divergence_leaves_the_others_identical(tiny, optimizer):
    lr = OPTIMIZERS[optimizer].lr_default
    # K = 5: the diverging configuration's last row is evaluated alone (few rows: no stacked eval).
    specs = cell(spec(optimizer, eval=EvalSpec(every_steps=10)), lr_factors=(1.0, 0.5, 0.25, 1.0, 0.7),
                 seeds=(0, 1, 2, 3, 0))
    specs[2] = dataclasses.replace(specs[2], lr=lr * 1e4)  # explodes within a few steps
    want, models = separate(tiny, specs)
    got, states = stacked(tiny, specs)
    assert [r.diverged for r in got] == [False, False, True, False, False]
    assert got[2].steps < 20 and got[2].rows[-1]["step"] == got[2].steps
    for g, w, st, m in zip(got, want, states, models, strict=True):
        assert_same_run(g, w, st, m)


def test_rows_equal_separate_runs_rows(tiny):
    specs = cell(spec("adam", accumulation_steps=2))
    specs[1] = dataclasses.replace(specs[1], lr=1e3)  # one diverges: its rows stop there
    want, _ = separate(tiny, specs)
    got = train_stacked(tiny, specs)
    for s, g, w in zip(specs, got, want):
        config = run_config(s, TINY)
        frames = [make_frame(s, tiny, config, r) for r in (g, w)]
        assert (frames[0]["stack_size"] == len(specs)).all() and (frames[1]["stack_size"] == 1).all()
        frames = [f.drop(columns=["time_s", "created_at", "stack_size"]) for f in frames]  # how it ran, not what
        assert list(frames[0].columns) == list(frames[1].columns)
        floats = [c for c in frames[0].columns if frames[0][c].dtype.kind == "f"]
        pd.testing.assert_frame_equal(frames[0].drop(columns=floats), frames[1].drop(columns=floats))
        pd.testing.assert_frame_equal(frames[0][floats], frames[1][floats], rtol=RTOL, atol=0.0)
    assert got[1].diverged and not got[0].diverged


def test_k1_is_the_ordinary_loop_bit_for_bit(tiny):
    s = spec("adam", dtype="float32", seed=3)
    want = train(tiny, s)
    for got in (train_stacked(tiny, [s])[0], train_many(tiny, [s])[0]):
        assert [{k: v for k, v in r.items() if k != "time_s"} for r in got.rows] == \
               [{k: v for k, v in r.items() if k != "time_s"} for r in want.rows]
        assert (got.steps, got.diverged, got.impl) == (want.steps, want.diverged, want.impl)


def test_train_many_stacks_small_cells(tiny):
    specs = cell(spec("momentum"))
    want, _ = separate(tiny, specs)
    got = train_many(tiny, specs)
    for g, w in zip(got, want):
        for gr, wr in zip(g.rows, w.rows, strict=True):
            assert_close(gr["train_loss"], wr["train_loss"])
    assert stacking_pays(tiny, specs)


# --- per-configuration stops: pruning, time-outs ----------------------------------------------------

def test_pruning_stops_only_that_configuration(tiny):
    specs = cell(spec("rmsprop"))
    calls = []

    def prune(i, row):
        calls.append((i, row["step"]))
        return i == 1 and row["step"] == 10

    got = train_stacked(tiny, specs, on_eval=prune)
    assert (1, 15) not in calls and (0, 15) in calls  # the pruned configuration is asked no more
    want = [train(tiny, s, on_eval=lambda row, i=i: prune(i, row)) for i, s in enumerate(specs)]
    assert [r.pruned for r in got] == [False, True, False, False]
    assert [r.steps for r in got] == [20, 10, 20, 20]
    for g, w in zip(got, want):
        assert (g.pruned, g.steps) == (w.pruned, w.steps)
        assert [r["step"] for r in g.rows] == [r["step"] for r in w.rows]
        for gr, wr in zip(g.rows, w.rows):
            assert_close(gr["val_loss"], wr["val_loss"])


def test_max_seconds_stops_like_single_runs(tiny):
    specs = cell(spec("sgd", max_seconds=1e-9, warmup_steps=2, max_steps=50))
    want, models = separate(tiny, specs)
    got, states = stacked(tiny, specs)
    assert all(r.steps == want[0].steps < 50 for r in got + want)
    for g, w, st, m in zip(got, want, states, models):
        assert_same_run(g, w, st, m)
        assert g.rows[-1]["time_s"] >= 1e-9 and g.train_seconds == g.rows[-1]["time_s"]


def test_time_is_apportioned_among_live_configurations(tiny):
    specs = cell(spec("sgd", max_steps=40))
    run = StackedRun(tiny, specs)
    got = run.run()
    # Nothing diverged: every configuration got the same share, and the shares add up to the clock.
    assert len({r.train_seconds for r in got}) == 1
    assert sum(r.train_seconds for r in got) == pytest.approx(run.clock.elapsed, rel=1e-9)


# --- batches: common random numbers ---------------------------------------------------------------

def test_same_seed_same_batches_different_seed_own_order(tiny):
    task = tiny.to(torch.device("cpu"), torch.float64)
    batches = StackBatches(task, spec(batch_size=8, accumulation_steps=2), [0, 1, 0])
    streams = {seed: iter(BatchStream(64, 8, "shuffle", seed, torch.device("cpu"))) for seed in (0, 1)}
    for _ in range(12):  # past an epoch boundary
        micro = batches.next()
        assert len(micro) == 2 and not any(shared for _, _, shared in micro)
        x = torch.cat([xb for xb, _, _ in micro], dim=1)  # the two micro-batches make the batch
        sel = {seed: next(streams[seed]) for seed in (0, 1)}  # each seed's single-run batch
        for pos, seed in enumerate((0, 1, 0)):
            assert torch.equal(x[pos], task.train.x[sel[seed]])
    one_seed = StackBatches(task, spec(), [5, 5])
    assert all(shared for _, _, shared in one_seed.next())  # one batch passed once for all


# --- stacked models ------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["layers", "vmap"])
@pytest.mark.parametrize("name,i", CASES)
def test_stacked_model_slices_are_the_models(name, i, method, fake_mnist_dir):
    """Every task's models, stacked by hand-written layers (its model class's own ``stacked`` or
    torch's Linear/Sequential; a model without them is vmap's only) and by vmap."""
    task = small_task(name, i, fake_mnist_dir).to(torch.device("cpu"), torch.float64)
    models = [task.make_model(seed).double() for seed in (0, 1, 2)]
    if method == "layers":
        try:
            model = stack_models(models, method)
        except NoStackedLayers:
            pytest.skip(f"{type(models[0]).__name__} has no hand-written stacked layers (vmap covers it)")
        assert not isinstance(model, VmapStack)
    else:
        model = stack_models(models, method)
        assert isinstance(model, VmapStack)
    x, y = task.train.x[:5], task.train.y[:5]
    loss = stacked_loss(task.loss)
    per_config = torch.stack([x, x.flip(0), x.roll(1, 0)])
    for inputs, shared in ((x, True), (per_config, False)):
        out = model(inputs, shared)
        targets = y if shared else torch.stack([y, y.flip(0), y.roll(1, 0)])
        losses = loss(out, targets, shared)
        losses.sum().backward()
        for k, m in enumerate(models):
            xk, yk = (x, y) if shared else (per_config[k], targets[k])
            torch.testing.assert_close(out[k], m(xk), rtol=1e-12, atol=1e-12)
            m.zero_grad()
            task.loss(m(xk), yk).backward()
            grads = {n: p.grad for n, p in m.named_parameters()}
            stacked_grads = _config_grads(model, k)
            for n, g in grads.items():
                torch.testing.assert_close(stacked_grads[n], g, rtol=1e-12, atol=1e-12)
        model.zero_grad()
    for k, m in enumerate(models):
        back = unstack(model, k, task.make_model(99).double())
        for n, t in m.state_dict().items():
            assert torch.equal(back.state_dict()[n], t)


def _config_grads(model, k):
    """Configuration k's gradients, named like the ordinary model's (same slicing as config_state)."""
    saved = {id(p): p.data for p in model.parameters()}
    for p in model.parameters():
        p.data = p.grad
    grads = {n: t.clone() for n, t in model.config_state(k).items()}
    for p in model.parameters():
        p.data = saved[id(p)]
    return grads


@pytest.mark.parametrize("name,i", CASES)
def test_every_task_trains_stacked_like_separate_runs(name, i, fake_mnist_dir):
    task = small_task(name, i, fake_mnist_dir)
    base = RunSpec(task=name, optimizer="adam", hparams=resolve_hparams("adam", {}), lr=1e-3, batch_size=8,
                   max_steps=6, eval=EvalSpec(every_steps=3), dtype="float64")
    specs = cell(base, seeds=(0, 1, 0, 2))
    want, models = separate(task, specs)
    got, states = stacked(task, specs)
    for g, w, st, m in zip(got, want, states, models):
        assert_same_run(g, w, st, m)


class Scaled(nn.Module):
    """A model kind with no hand-written stacked layers (and a buffer): stacked through vmap."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(1, 1)
        self.register_buffer("scale", torch.tensor(0.5))

    def forward(self, x):
        return self.lin(x) * self.scale


def test_unknown_model_kind_trains_through_vmap(tiny):
    def make(seed):
        torch.manual_seed(seed)
        return Scaled()

    task = dataclasses.replace(tiny, make_model=make)
    specs = cell(spec("adam"), seeds=(0, 1, 2, 3))
    specs[3] = dataclasses.replace(specs[3], lr=1e4)  # its departure re-slices parameters and buffers
    want, models = separate(task, specs)
    run = StackedRun(task, specs)
    assert isinstance(run.stack.model, VmapStack)
    got = run.run()
    for i, (g, w, m) in enumerate(zip(got, want, models)):
        assert_same_run(g, w, run.final_state(i), m)
    assert got[3].diverged


# --- what can and cannot be stacked -------------------------------------------------------------------

class CappedSGD(torch.optim.SGD):
    """SGD whose step is capped at 0.01 per coordinate: a subclass of SGD whose step is NOT affine in lr."""

    @torch.no_grad()
    def step(self, closure=None):
        before = [p.clone() for g in self.param_groups for p in g["params"]]
        super().step(closure)
        for p, b in zip((p for g in self.param_groups for p in g["params"]), before):
            p.copy_(b + (p - b).clamp(-0.01, 0.01))


def test_an_entry_that_does_not_declare_exactness_is_never_stacked(tiny, monkeypatch):
    entry = OptimizerSpec("capped_sgd", f"{__name__}.CappedSGD", {"weight_decay": 0.0}, 0.5, (1e-3, 10.0),
                          {"momentum": 0.0}, doc="θ -= clamp(lr·g, -0.01, 0.01)")
    monkeypatch.setitem(OPTIMIZERS, entry.name, entry)
    specs = cell(spec("capped_sgd", lr=0.5), lr_factors=(1.0, 4.0, 0.01, 2.0))
    assert not stacking_pays(tiny, specs)
    with pytest.raises(ConfigError, match="does not declare an lr-affine, elementwise step"):
        train_stacked(tiny, specs)
    got = train_many(tiny, specs)  # falls back to separate runs: exact by construction
    want, _ = separate(tiny, specs)
    assert all(r.stack_size == 1 for r in got)
    for g, w in zip(got, want):
        assert [r["train_loss"] for r in g.rows] == [r["train_loss"] for r in w.rows]
    # Stacked anyway (as an issubclass(SGD) rule would), the cap would bind per configuration at
    # lr = 1 and the lr scaling after it would be wrong: the declaration is what keeps it out.
    monkeypatch.setitem(OPTIMIZERS, entry.name, dataclasses.replace(entry, lr_affine=True, elementwise=True))
    wrong = train_stacked(tiny, specs)
    assert any(not math.isclose(a["train_loss"], b["train_loss"], rel_tol=1e-6)
               for g, w in zip(wrong, want) for a, b in zip(g.rows, w.rows))


def test_not_one_cell_is_a_clear_error(tiny):
    specs = [spec(), spec(batch_size=16)]
    with pytest.raises(ConfigError, match=r"batch_size differs \(8 vs 16\).*train_many"):
        check_stackable(specs)
    with pytest.raises(ConfigError, match="batch_size differs"):
        train_stacked(tiny, specs)
    assert not stacking_pays(tiny, specs)
    with pytest.raises(ConfigError, match="no configurations"):
        check_stackable([])


def test_stacking_pays_for_small_models_only(tiny, fake_mnist_options):
    assert stacking_pays(tiny, cell(spec()))
    assert not stacking_pays(tiny, [spec()])  # K = 1: nothing to share
    big = build_task({**fake_mnist_options})  # the 784-256-128-10 MLP: arithmetic-bound, stacking loses
    base = RunSpec(task="mnist", optimizer="sgd", hparams=resolve_hparams("sgd", {}), lr=0.1, batch_size=1)
    assert not stacking_pays(big, cell(base))


def test_stack_models_rejects_bad_requests(tiny):
    with pytest.raises(ConfigError, match="valid: auto, layers, vmap"):
        stack_models([tiny.make_model(0)], "magic")
    with pytest.raises(ConfigError, match="different kinds"):
        stack_models([tiny.make_model(0), nn.Linear(1, 1)])
    with pytest.raises(ConfigError, match="use method=vmap"):
        stack_models([Scaled(), Scaled()], "layers")
    normed = [nn.Sequential(nn.Linear(1, 4), nn.LayerNorm(4), nn.Linear(4, 1)) for _ in range(2)]
    with pytest.raises(ConfigError, match="LayerNorm"):
        stack_models(normed, "layers")
    assert isinstance(stack_models(normed), VmapStack)  # auto falls back to vmap
