"""The optimizer conformance checks, for any registry entry (a user's included), and
``suite-check-optimizer``, which runs them and prints a one-screen verdict.

The checks are the registry contract the suite's own entries pass in its tests: it builds every
implementation it declares and a step moves the parameters; it lowers a regression loss at its
default lr; the same seed gives the same curve and another seed another; every hyperparameter
has a valid range and values outside it are refused; its state is the size it declares; every
mechanism the suite applies to an optimizer works on it (``suite.run.mechanisms``: the copy a
target's replay starts from continues bit for bit, its ``state_dict`` survives a round trip,
eval mode and closure where declared); stacked training equals separate runs where it declares
stacking exact; and a short run on every task at its default lr does not diverge (full batch
where the entry is full-batch only). A check that raises is a failure that names the exception.
Exit status of the command: 0 every check passed (or was skipped, with the reason), 1 one
failed, 2 bad input.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Mapping

import torch
from omegaconf import DictConfig, OmegaConf

from suite.optim.build import build_optimizer
from suite.optim.external import DECLARATIONS
from suite.optim.measure import optimizer_step, state_bytes
from suite.optim.registry import OptimizerSpec, get_spec, resolve_hparams
from suite.run.mechanisms import (Check, closure_check, curve, eval_mode_check, round_trip_check, run_spec,
                                  snapshot_check)
from suite.run.prepare import register_optimizer
from suite.run.validate import threads as checked_threads
from suite.tasks import TASKS, build_task
from suite.train.device import set_threads
from suite.train.parity import stacking_parity
from suite.train.single import train
from suite.types import DataError, EvalSpec, RunResult, Task

SHORT_STEPS = 20


def short_run(name: str, hparams: Mapping[str, Any], task: Task, steps: int = SHORT_STEPS) -> RunResult:
    """``steps`` steps of ``task`` at the entry's default lr (batch 8, or full for full-batch-only
    entries), evaluated on a 256-sample training subset at start, middle and end."""
    batch = task.n_train if get_spec(name).full_batch_only else min(8, task.n_train)
    return train(task, run_spec(name, hparams, task, batch_size=batch, epochs=steps * batch / task.n_train,
                             max_steps=steps, eval=EvalSpec(points=3, train_subset=256)))


def short_task_options(task: str, data_dir: str | None = None) -> dict[str, Any]:
    """A small instance of ``task``: its registry entry's first example (image tasks: at most 512
    training images, read from ``data_dir`` or the usual places)."""
    entry = TASKS[task]
    options = {"name": task, **entry.examples[0]}
    if entry.dataset:
        options["train_size"] = 512
        if data_dir is not None:
            options["data_dir"] = data_dir
    return options


def _short_runs(name: str, hparams: Mapping[str, Any]) -> list[Check]:
    checks = []
    for task_name in TASKS:
        try:
            task = build_task(short_task_options(task_name))
        except DataError as e:
            checks.append(Check(f"short run: {task_name}", "SKIP", str(e).split(". ")[0]))
            continue
        r = short_run(name, hparams, task)
        first, last = r.rows[0]["train_loss"], r.rows[-1]["train_loss"]
        ok = not r.diverged and math.isfinite(last)
        checks.append(Check(f"short run: {task_name}", "PASS" if ok else "FAIL",
                            f"{r.steps} steps at lr {get_spec(name).lr_default:g}: train loss {first:.4g} -> "
                            f"{last:.4g}" + ("" if ok else " (diverged: lower lr_default)")))
    return checks


def _builds(entry: OptimizerSpec, hparams: Mapping[str, Any]) -> Check:
    impls = ["forloop"] + ["foreach"] * entry.foreach + ["fused"] * entry.fused
    for impl in impls:
        param = torch.zeros(4, requires_grad=True)
        opt, _ = build_optimizer(entry.name, [param], entry.lr_default, hparams, impl)

        def closure():
            param.grad = torch.ones(4)
            return (param * param.grad).sum()

        if entry.closure:
            opt.step(closure)
        else:
            closure()
            opt.step()
        if torch.equal(param.detach(), torch.zeros(4)):
            return Check("builds", "FAIL", f"impl {impl}: one step with gradient 1 did not move the parameters")
    return Check("builds", "PASS", f"impl {', '.join(impls)}: one step moves the parameters")


def _descends(name: str, hparams: Mapping[str, Any]) -> Check:
    task = build_task({"name": "regression", "n": 512, "n_val": 64, "n_test": 64})
    spec = run_spec(name, hparams, task, epochs=8.0, eval=EvalSpec(points=6))
    r = train(task, spec)
    first, last = r.rows[0]["train_loss"], r.rows[-1]["train_loss"]
    ok = not r.diverged and last < 0.9 * first
    return Check("descends", "PASS" if ok else "FAIL", f"regression n=512, batch {spec.batch_size}, 8 epochs: "
                 f"train loss {first:.4g} -> {last:.4g}" + ("" if ok else " (needs < 0.9x: check lr_default)"))


def _deterministic(name: str, hparams: Mapping[str, Any]) -> Check:
    task = build_task({"name": "regression", "n": 512, "n_val": 64, "n_test": 64})
    a, b, other = (train(task, run_spec(name, hparams, task, epochs=2.0, seed=s)) for s in (3, 3, 4))
    if curve(a) != curve(b):
        return Check("deterministic", "FAIL", "two runs with the same seed gave different curves")
    if curve(other) == curve(a):
        return Check("deterministic", "FAIL", "another seed gave the same curve (does the class ignore the data?)")
    return Check("deterministic", "PASS", "same seed, same curve; another seed, another curve")


def _bounds(entry: OptimizerSpec) -> Check:
    refused = []
    for key in entry.defaults:
        lo, hi, lo_in, hi_in = entry.bound(key)
        outside = lo - 1.0 if lo_in and math.isfinite(lo) else lo if math.isfinite(lo) else (
            hi + 1.0 if hi_in and math.isfinite(hi) else hi)
        try:
            resolve_hparams(entry.name, {key: outside})
        except Exception:  # noqa: BLE001 - refused, as it should be
            refused.append(f"{key}={outside:g}")
            continue
        return Check("bounds", "FAIL", f"{key}={outside} lies outside its range and was accepted")
    return Check("bounds", "PASS", ("values outside the declared ranges are refused before any work (" +
                                    ", ".join(refused[:3]) + ")") if refused else "no hyperparameters besides lr")


def _state(entry: OptimizerSpec, hparams: Mapping[str, Any]) -> Check:
    model = build_task({"name": "tiny_mlp", "n": 10, "n_val": 1, "n_test": 1}).make_model(0)
    step, opt, _ = optimizer_step(model, entry.name, "forloop", torch.device("cpu"))
    step()
    measured = state_bytes(opt)
    params = list(model.parameters())
    param_bytes = sum(p.numel() * p.element_size() for p in params)
    said = f"{measured['state_bytes'] / param_bytes:g}x the parameter bytes + {measured['step_bytes']} scalar bytes"
    if entry.state_per_param is None:
        return Check("state size", "SKIP", f"not declared (state_per_param); measured {said}")
    elements, scalars = entry.state_size([p.shape for p in params])
    expected = {"state_bytes": elements * params[0].element_size(), "step_bytes": 4 * scalars}
    if measured != expected:
        return Check("state size", "FAIL", f"declared {expected['state_bytes'] / param_bytes:g}x + "
                     f"{expected['step_bytes']} scalar bytes, measured {said} (tiny_mlp, one step)")
    return Check("state size", "PASS", f"{said}, as declared")


def _parity(entry: OptimizerSpec, hparams: Mapping[str, Any]) -> Check:
    if not entry.stackable:
        return Check("stacking parity", "SKIP", "never stacked (stacking needs lr_affine and elementwise declared, "
                     "a plain step and no eval mode)")
    problem = stacking_parity(entry.name, hparams)
    return Check("stacking parity", "FAIL" if problem else "PASS", problem or "K=2 stacked steps equal separate runs")


def check_optimizer(name: str, hparams: Mapping[str, Any] | None = None) -> list[Check]:
    """Every conformance check of a registered entry, at ``hparams`` (default: its defaults)."""
    entry = get_spec(name)
    hp = resolve_hparams(name, hparams or {})
    checks = [("builds", lambda: _builds(entry, hp)), ("descends", lambda: _descends(name, hp)),
              ("deterministic", lambda: _deterministic(name, hp)), ("bounds", lambda: _bounds(entry)),
              ("state size", lambda: _state(entry, hp)), ("snapshot and replay", lambda: snapshot_check(name, hp)),
              ("state_dict round trip", lambda: round_trip_check(name, hp)),
              ("eval mode", lambda: eval_mode_check(name, hp)), ("closure", lambda: closure_check(name, hp)),
              ("stacking parity", lambda: _parity(entry, hp))]
    return [_guarded(check_name, check) for check_name, check in checks] + _short_runs(name, hp)


def _guarded(name: str, check: Callable[[], Check]) -> Check:
    """A check's outcome; one that raises fails with the exception (what a study would have met)."""
    try:
        return check()
    except Exception as e:  # noqa: BLE001 - whatever the optimizer raises is the finding
        return Check(name, "FAIL", f"raised {type(e).__name__}: {e}")


def verdict(entry: OptimizerSpec, hparams: Mapping[str, Any], checks: list[Check]) -> str:
    """One screen: what was checked, each check's outcome, the verdict."""
    declared = [f for f in ("lr_affine", "elementwise", "fused", "foreach", "closure", "eval_mode",
                            "full_batch_only") if getattr(entry, f)]
    lines = [
        f"optimizer {entry.name} = {entry.cls}" + (f"  (from {entry.source})" if entry.external else "  (built in)"),
        f"  lr_default {entry.lr_default:g}, lr_range [{entry.lr_range[0]:g}, {entry.lr_range[1]:g}]; "
        f"hyperparameters: {', '.join(f'{k}={v:g}' for k, v in hparams.items()) or '(none)'}; "
        f"declared: {', '.join(declared) or '(nothing)'}",
        *(f"  {c.status:4}  {c.name:24} {c.detail}" for c in checks),
    ]
    counts = {s: sum(c.status == s for c in checks) for s in ("PASS", "FAIL", "SKIP")}
    result = "FAIL" if counts["FAIL"] else "PASS"
    lines.append(f"verdict: {result} ({counts['PASS']} passed, {counts['FAIL']} failed, {counts['SKIP']} skipped)")
    return "\n".join(lines)


def check_command(cfg: DictConfig | Mapping[str, Any], echo: Callable[[str], Any] = print) -> int:
    """``suite-check-optimizer optimizer=<name> [optimizer.<hp>=...]``: 0 pass, 1 fail (2: bad input)."""
    c = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    set_threads(checked_threads(c.get("threads")))
    options = dict(c["optimizer"])
    entry = register_optimizer(options)
    given = {k: v for k, v in options.items() if k not in DECLARATIONS}
    hparams = resolve_hparams(entry.name, given)
    checks = check_optimizer(entry.name, hparams)
    echo(verdict(entry, hparams, checks))
    return 1 if any(ch.status == "FAIL" for ch in checks) else 0
