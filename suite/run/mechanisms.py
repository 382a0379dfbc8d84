"""Conformance checks of what the suite does to an optimizer besides stepping it: the copy a
target's replay starts from (``snapshot and replay``), ``state_dict`` round trip, eval mode and
closure, each where it applies. ``suite.run.conformance`` runs them with the other checks.

They train on tiny_mlp's data through a 1-8-8-1 tanh net (:func:`check_task`), which has a hidden
matrix, so a composite such as Muon gives each of its parts parameters.
"""
from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Mapping

import torch
from torch import nn

from suite.optim.build import build_optimizer
from suite.optim.registry import get_spec
from suite.tasks import build_task
from suite.tasks.parts import seeded_model
from suite.train.device import rng_as, rng_state
from suite.train.loop import Engine
from suite.train.single import SingleEngine, train
from suite.train.stacked import StackEngine
from suite.types import EvalSpec, LRSchedule, RunResult, RunSpec, Target, Task

STEPS = 24  # steps of a check's run
COPY_STEPS = 6  # steps a copy and its original take side by side


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # PASS | FAIL | SKIP
    detail: str


def run_spec(name: str, hparams: Mapping[str, Any], task: Task, **kw) -> RunSpec:
    """A check's run: the entry's default lr, batch 32 (full for full-batch-only entries), one warm-up step."""
    entry = get_spec(name)
    base = dict(task=task.name, optimizer=name, hparams=dict(hparams), lr=entry.lr_default,
                batch_size=task.n_train if entry.full_batch_only else min(32, task.n_train), warmup_steps=1)
    return RunSpec(**{**base, **kw})


def check_task() -> Task:
    task = build_task({"name": "tiny_mlp", "n": 64, "n_val": 16, "n_test": 16})
    net = seeded_model(lambda: nn.Sequential(nn.Linear(1, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 1)))
    return dataclasses.replace(task, make_model=net, model_name="mlp1-8-8-1")


def _short(name: str, hparams: Mapping[str, Any], task: Task, **kw) -> RunSpec:
    """STEPS steps at batch 8 (full for full-batch-only entries) under a cosine schedule with warm-up
    (so a copy must carry the schedule too)."""
    batch = task.n_train if get_spec(name).full_batch_only else 8
    return run_spec(name, hparams, task, batch_size=batch, epochs=STEPS * batch / task.n_train, max_steps=STEPS,
                    lr_schedule=LRSchedule("cosine", warmup=2), **kw)


def curve(result: RunResult) -> list[tuple]:
    """A run's rows without the clock (timing is the one thing that may differ between runs)."""
    return [tuple(v for k, v in sorted(row.items()) if k != "time_s") for row in result.rows]


def _copy_differs(engine: Engine, what: str) -> str | None:
    """Step ``engine``, evaluate it, copy it; then the original and the copy take COPY_STEPS steps
    each (under the same random state): what differs, or None."""
    device = engine.task.train.x.device
    for _ in range(3):
        engine.step()
    engine.evaluate(range(len(engine.live())))  # eval mode where declared
    twin, rng = engine.snapshot(), rng_state(device)
    want = [engine.step().detach().clone() for _ in range(COPY_STEPS)]
    with rng_as(rng, device):
        got = [twin.step().detach().clone() for _ in range(COPY_STEPS)]
    for k, (g, w) in enumerate(zip(got, want), start=1):
        if not torch.equal(g, w):
            return f"{what}: step {k} after the copy gives loss {g.tolist()} in the copy, {w.tolist()} in the original"
    for pos in range(len(engine.live())):
        w = {n: t.detach().clone() for n, t in engine.model_at(pos).state_dict().items()}
        for n, t in twin.model_at(pos).state_dict().items():
            if not torch.equal(t, w[n]):
                return f"{what}: after {COPY_STEPS} steps the copy's {n} differs from the original's"
    return None


def _replay_differs(name: str, hparams: Mapping[str, Any], task: Task) -> str | None:
    """A run with a target met between its two evaluations locates its exact first step (found by a
    run evaluated at every step) and otherwise equals the same run without a target."""
    dense = train(task, _short(name, hparams, task, eval=EvalSpec(every_steps=1)))
    losses = [row["train_loss"] for row in dense.rows]
    threshold = losses[2 * len(losses) // 3]
    first = next((i for i, loss in enumerate(losses) if loss <= threshold), 0)
    if first == 0:
        return None  # it does not descend here ("descends" and the short runs say so): nothing to locate
    sparse = _short(name, hparams, task, eval=EvalSpec(points=2, schedule="linear"))
    plain, aimed = train(task, sparse), train(task, dataclasses.replace(sparse, target=Target("train_loss", threshold)))
    if aimed.steps_to_target != first:
        return (f"a run with a target located it at step {aimed.steps_to_target:g} by replay; evaluated at every "
                f"step it is met first at step {first}")
    if curve(aimed) != curve(plain):
        return "a run with a target (and its replay) differs from the same run without one"
    return None


def snapshot_check(name: str, hparams: Mapping[str, Any]) -> Check:
    """The copy a target's replay starts from continues exactly like the original, for a single
    run and (where the entry is stacked) a stack; a replay locates the exact step."""
    task, entry = check_task(), get_spec(name)
    spec = _short(name, hparams, task, eval=EvalSpec(points=2))
    problem = _copy_differs(SingleEngine(task, spec), "one run")
    if problem is None and entry.stackable:
        problem = _copy_differs(StackEngine(task, [spec, dataclasses.replace(spec, lr=spec.lr / 4, seed=1)]),
                                "a stack of 2")
    problem = problem or _replay_differs(name, hparams, task)
    fix = ("; a copy keeps the optimizer's state_dict and its data attributes (suite.optim.restore), state kept "
           "anywhere else is lost")
    return Check("snapshot and replay", "FAIL" if problem else "PASS",
                 problem + fix if problem else f"a copy's next {COPY_STEPS} steps equal the original's bit for bit"
                 + (" (one run and a stack)" if entry.stackable else "") + "; a replay finds the exact step")


def _difference(a: Any, b: Any, where: str, casts: list[str]) -> str | None:
    """Where two state dicts differ (None: equal); tensors torch cast on load are noted in ``casts``."""
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return f"{where}: keys {sorted(map(str, a.keys() ^ b.keys()))} appear on one side only"
        return next((d for k in a if (d := _difference(a[k], b[k], f"{where}[{k!r}]", casts))), None)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return f"{where}: {len(a)} items become {len(b)}"
        return next((d for i, (x, y) in enumerate(zip(a, b)) if (d := _difference(x, y, f"{where}[{i}]", casts))),
                    None)
    if torch.is_tensor(a) and torch.is_tensor(b):
        if a.dtype != b.dtype:
            casts.append(f"{where} {a.dtype} -> {b.dtype}".replace("torch.", ""))
        return None if torch.equal(a.to(b.dtype), b) else f"{where}: values change"
    same = a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))
    return None if same else f"{where}: {a!r} becomes {b!r}"


def round_trip_check(name: str, hparams: Mapping[str, Any]) -> Check:
    """``state_dict()`` after a few steps, loaded into a fresh optimizer, comes back unchanged."""
    task = check_task()
    engine = SingleEngine(task, _short(name, hparams, task))
    for _ in range(3):
        engine.step()
    saved = engine.opt.state_dict()
    spec = engine.spec
    fresh, _ = build_optimizer(name, copy.deepcopy(engine.model).parameters(), spec.lr, spec.hparams, engine.impl)
    fresh.load_state_dict(copy.deepcopy(saved))
    casts: list[str] = []
    problem = _difference(saved, fresh.state_dict(), "state_dict", casts)
    if problem:
        return Check("state_dict round trip", "FAIL", f"loaded into a fresh optimizer, {problem}")
    more = " and more" if len(casts) > 1 else ""
    note = f"; load_state_dict casts {casts[0]}{more} (copies keep it)" if casts else ""
    return Check("state_dict round trip", "PASS", f"state_dict -> load_state_dict -> state_dict is unchanged{note}")


def eval_mode_check(name: str, hparams: Mapping[str, Any]) -> Check:
    """Declared eval mode: the optimizer has train()/eval(), and evaluating (at x, in eval mode)
    does not move the training trajectory. Undeclared: it has no such modes."""
    entry, task = get_spec(name), check_task()
    opt, _ = build_optimizer(name, [torch.zeros(2, requires_grad=True)], entry.lr_default, hparams)
    modes = callable(getattr(opt, "eval", None)) and callable(getattr(opt, "train", None))
    if not entry.eval_mode:
        if modes:
            return Check("eval mode", "FAIL", "the class has train()/eval() modes but eval_mode is not declared, so "
                         "runs would be evaluated at its training point. Fix: eval_mode: true")
        return Check("eval mode", "SKIP", "no train()/eval() modes (none declared)")
    if not modes:
        return Check("eval mode", "FAIL", "eval_mode is declared but the class has no train()/eval() methods. "
                     "Fix: remove eval_mode: true")
    every = train(task, _short(name, hparams, task, eval=EvalSpec(every_steps=1)))
    ends = train(task, _short(name, hparams, task, eval=EvalSpec(points=2, schedule="linear")))
    if curve(every)[-1] != curve(ends)[-1]:
        return Check("eval mode", "FAIL", "evaluating at every step changed where the run ends: eval() then train() "
                     "does not give back the training point")
    return Check("eval mode", "PASS", "evaluated in eval mode; evaluating at every step or twice ends alike")


def closure_check(name: str, hparams: Mapping[str, Any]) -> Check:
    """Declared closure: ``step(closure)`` calls it and moves the parameters."""
    entry = get_spec(name)
    if not entry.closure:
        return Check("closure", "SKIP", "not declared: the training step calls step() without a closure")
    param = torch.zeros(4, requires_grad=True)
    opt, _ = build_optimizer(name, [param], entry.lr_default, hparams)
    calls = []

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = ((param - 1.0) ** 2).sum()
        loss.backward()
        calls.append(loss.item())
        return loss

    opt.step(closure)
    if not calls or torch.equal(param.detach(), torch.zeros(4)):
        return Check("closure", "FAIL", f"step(closure) called the closure {len(calls)} times and did not move the "
                     "parameters. Fix: remove closure: true, or fix step()")
    return Check("closure", "PASS", f"step(closure) called the closure {len(calls)} times and moved the parameters")
