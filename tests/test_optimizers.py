"""Contract test over the optimizer registry: a new entry is tested here with no test edits.

Every entry must build a real torch optimizer, lower the regression loss through the training
loop, give an identical curve under the same seed, reject bad hyperparameters with a
:class:`ConfigError` that names the fix, take a short run on a small instance of every task
at its default lr without diverging, and survive every mechanism the suite applies to an
optimizer (the copy a target's replay starts from, ``state_dict`` round trip, eval mode and
closure where declared; stacking is ``test_stacked.py``'s).
"""
from __future__ import annotations

import math

import pytest
import torch

from suite.optim.build import build_optimizer, optimizer_class
from suite.optim.registry import BOUNDS, IMPLS, OPTIMIZERS, get_spec, resolve_hparams
from suite.run.conformance import short_run, short_task_options
from suite.run.mechanisms import closure_check, eval_mode_check, round_trip_check, snapshot_check
from suite.tasks import TASKS, build_task
from suite.train import train
from suite.types import ConfigError, EvalSpec, RunSpec
from suite.cell import Cell

NAMES = list(OPTIMIZERS)


@pytest.fixture(scope="module")
def regression():
    return build_task({"name": "regression", "n": 512, "n_val": 64, "n_test": 64})


def regression_spec(name: str, **kw) -> RunSpec:
    spec = OPTIMIZERS[name]
    base = dict(task="regression", optimizer=name, hparams=resolve_hparams(name, {}), lr=spec.lr_default,
                batch_size=512 if spec.full_batch_only else 32, epochs=8.0, eval=EvalSpec(points=6), warmup_steps=1)
    return RunSpec(**{**base, **kw})


def curve(result) -> list[tuple]:
    """The curve without the clock (timing is the one thing that may differ between runs)."""
    return [tuple(v for k, v in sorted(row.items()) if k != "time_s") for row in result.rows]


def out_of_range(spec, key: str) -> list:
    """Values just outside the entry's interval for ``key``, plus non-numbers."""
    lo, hi, lo_in, hi_in = spec.bound(key)
    bad = [math.nan, "0.5", True, [0.5]]
    bad.append(lo - 0.5 if lo_in else lo)
    bad.append(hi + 0.5 if hi_in and math.isfinite(hi) else hi)
    return bad


@pytest.mark.parametrize("name", NAMES)
def test_entry_is_complete(name):
    spec = OPTIMIZERS[name]
    assert spec.name == name
    assert issubclass(optimizer_class(spec), torch.optim.Optimizer)
    assert spec.doc and "θ" in spec.doc, "the docstring states the update rule in the code's symbols"
    lo, hi = spec.lr_range
    assert 0 < lo < spec.lr_default < hi
    for key in spec.defaults:
        assert key in spec.bounds or key in BOUNDS, f"{name}.{key} has no valid range (OptimizerSpec.bounds)"
    assert resolve_hparams(name, {}) == dict(spec.defaults)


@pytest.mark.parametrize("name,impl", [(n, i) for n in NAMES for i in IMPLS
                                       if (i != "fused" or OPTIMIZERS[n].fused) and (i != "foreach" or OPTIMIZERS[n].foreach)])
def test_builds_every_implementation(name, impl):
    """Every implementation torch offers (impl=fused where it has none: test_fused_flag_is_truthful)."""
    spec = OPTIMIZERS[name]
    param = torch.zeros(4, requires_grad=True)
    opt, ran = build_optimizer(name, [param], spec.lr_default, {}, impl)
    assert ran == (("fused" if spec.fused else "foreach" if spec.foreach else "forloop") if impl == "auto" else impl)
    assert type(opt) is optimizer_class(spec, ran)
    group = opt.param_groups[0]
    assert group["lr"] == spec.lr_default
    for key, value in spec.constructor_kwargs(spec.defaults).items():
        assert group[key] == value

    def closure():
        param.grad = torch.ones(4)
        return (param * param.grad).sum()

    if spec.closure:  # its step evaluates the loss (and gradient) itself
        opt.step(closure)
    else:
        closure()
        opt.step()
    assert not torch.equal(param.detach(), torch.zeros(4)), "one step moves the parameters"


@pytest.mark.parametrize("name", NAMES)
def test_fused_flag_is_truthful(name):
    """``spec.fused`` says whether torch accepts ``fused=True``; ``impl=fused`` is refused otherwise."""
    spec = OPTIMIZERS[name]
    param = torch.zeros(2, requires_grad=True)
    try:
        optimizer_class(spec)([param], lr=0.1, fused=True)
        torch_has_fused = True
    except (TypeError, RuntimeError):
        torch_has_fused = False
    assert spec.fused == torch_has_fused
    if not spec.fused:
        with pytest.raises(ConfigError, match="no fused .*impl=foreach"):
            build_optimizer(name, [param], 0.1, {}, "fused")


@pytest.mark.parametrize("name", NAMES)
def test_foreach_flag_is_truthful(name):
    """``spec.foreach`` says whether the class takes ``foreach=`` (or the entry names its foreach
    class); ``impl=foreach`` is refused otherwise."""
    spec = OPTIMIZERS[name]
    param = torch.zeros(2, requires_grad=True)
    flag = {} if "foreach" in spec.impl_cls else {"foreach": True}
    try:
        optimizer_class(spec, "foreach")([param], lr=0.1, **flag)
        takes_foreach = True
    except TypeError:
        takes_foreach = False
    assert spec.foreach == takes_foreach
    if not spec.foreach:
        with pytest.raises(ConfigError, match="no foreach implementation.*impl=forloop"):
            build_optimizer(name, [param], 0.1, {}, "foreach")


@pytest.mark.parametrize("name", NAMES)
def test_lowers_regression_loss(name, regression):
    result = train(regression, regression_spec(name))
    first, last = result.rows[0]["train_loss"], result.rows[-1]["train_loss"]
    assert not result.diverged
    assert last < 0.9 * first, f"{name} at its default lr barely moved: {first:.4g} -> {last:.4g}"


@pytest.fixture(scope="module")
def small_tasks(tmp_path_factory, write_dataset):
    """A small instance of every task (the image tasks from IDX files written here)."""
    data = write_dataset(tmp_path_factory.mktemp("idx"), n_train=600)
    return {t: build_task(short_task_options(t, str(data) if TASKS[t].dataset else None)) for t in TASKS}


@pytest.mark.parametrize("task", list(TASKS))
@pytest.mark.parametrize("name", NAMES)
def test_short_run_on_every_task_does_not_diverge(name, task, small_tasks):
    """At the registry's default lr (full batch for a full-batch-only entry), 20 steps on each task."""
    result = short_run(name, {}, small_tasks[task])
    assert not result.diverged, f"{name} diverged on {task} at its default lr {OPTIMIZERS[name].lr_default}"
    assert result.steps == 20 and math.isfinite(result.rows[-1]["train_loss"])


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_under_seed(name, regression):
    a, b = (train(regression, regression_spec(name, epochs=2.0, seed=3)) for _ in range(2))
    assert curve(a) == curve(b)
    other = train(regression, regression_spec(name, epochs=2.0, seed=4))
    assert curve(other) != curve(a), "the seed must change the initialization and batch order"


@pytest.mark.parametrize("check", [snapshot_check, round_trip_check, eval_mode_check, closure_check])
@pytest.mark.parametrize("name", NAMES)
def test_every_mechanism_the_suite_applies_to_it_works(name, check):
    """A copy continues bit for bit and a replay finds the exact step (the target protocol); its
    state dict survives a round trip; eval mode and closure work where declared, and are declared
    where the class has them."""
    result = check(name, resolve_hparams(name, {}))
    assert result.status != "FAIL", result.detail
    assert result.status == "PASS" or check in (eval_mode_check, closure_check)


@pytest.mark.parametrize("name", NAMES)
def test_rejects_unknown_and_out_of_range_hyperparameters(name):
    spec = OPTIMIZERS[name]
    with pytest.raises(ConfigError, match="has no hyperparameter bogus; it takes"):
        resolve_hparams(name, {"bogus": 1.0})
    for key in spec.defaults:
        for value in out_of_range(spec, key):
            with pytest.raises(ConfigError, match=rf"{key}=.* is out of range; it must lie in .*optimizer\.{key}="):
                resolve_hparams(name, {key: value})


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("lr", [0.0, -0.1, math.nan, math.inf, -math.inf, "0.1", True])
def test_rejects_bad_lr(name, lr):
    with pytest.raises(ConfigError, match="the learning rate must be a finite number > 0"):
        build_optimizer(name, [torch.zeros(2, requires_grad=True)], lr, {})


@pytest.mark.parametrize("name", NAMES)
def test_rejects_unknown_impl(name):
    with pytest.raises(ConfigError, match="optimizer.impl='cuda_graph' is invalid; valid: auto, forloop"):
        build_optimizer(name, [torch.zeros(2, requires_grad=True)], 0.1, {}, "cuda_graph")


def test_unknown_name_lists_valid_names():
    with pytest.raises(ConfigError) as err:
        get_spec("no_such_optimizer")
    assert "unknown optimizer 'no_such_optimizer'" in str(err.value)
    assert all(name in str(err.value) for name in NAMES)


@pytest.mark.parametrize("batch_size,n,label", [(1000, 1000, "GD"), (1, 1000, "SGD"), (32, 1000, "mini-batch"),
                                                (1, 1, "GD")])
def test_regime_from_batch_size(batch_size, n, label):
    assert Cell("regression", "sgd", batch_size, n_train=n).regime == label
