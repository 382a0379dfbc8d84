"""One configuration, one ordinary model: the engine of a single run, and :func:`train`.

The step (:func:`make_step`, also what the benchmarks time) reads top to bottom: take the next
batch, zero the gradients, forward and backward each of its ``k`` micro-batches (gradients add
up, each scaled by ``1/k`` for ``mean``), step the optimizer, return the loss without reading it
(the loop decides when to sync). An optimizer whose ``step`` re-evaluates the loss itself
(L-BFGS: declared ``closure`` in its registry entry) gets a step that hands it a closure over the
step's batch instead; which step a run uses is decided once, so the ordinary step is unchanged.
"""
from __future__ import annotations

import contextlib
import copy
from typing import Callable, Iterable, Iterator, Sequence

import torch
from torch import Tensor, nn
from torch.optim.lr_scheduler import LambdaLR

from suite.optim.build import build_optimizer
from suite.optim.registry import get_spec
from suite.optim.restore import restore_optimizer
from suite.train.batches import BatchStream, Selector, batch_rows, micro_batches
from suite.train.device import DTYPES
from suite.train.evaluation import Stats, eval_splits, evaluate
from suite.train.loop import Loop, OnEval
from suite.train.schedule import copy_schedule, lr_factor, start_schedule, total_steps
from suite.types import RunResult, RunSpec, Split, Task


def clear_grads(opt: torch.optim.Optimizer) -> None:
    """``opt.zero_grad(set_to_none=True)``: for an optimizer that keeps torch's ``zero_grad``, done
    here as it does it (every parameter's ``grad`` set to None) without the profiler scope and the
    compiler guard torch wraps it in, 10 µs of a 300 µs batch-1 tiny_mlp step; an optimizer with a
    ``zero_grad`` of its own gets that."""
    if type(opt).zero_grad is not torch.optim.Optimizer.zero_grad:
        opt.zero_grad(set_to_none=True)
        return
    for group in opt.param_groups:
        for p in group["params"]:
            p.grad = None


def accumulate(micro_losses: Iterable[Tensor], k: int, reduction: str) -> Tensor:
    """Backward each micro-batch's mean loss; return their sum (the loop divides by k).

    ``mean`` scales each micro-batch's gradient by ``1/k`` so the update equals the big batch's;
    ``sum`` keeps tutorial 004's un-averaged gradients (k times the big batch's). A stack's loss
    is ``(K,)`` (each configuration's own batch mean): backpropagating its sum gives each
    configuration the gradient of its own loss.
    """
    if k == 1:  # skip the scale and sum ops: they cost ~13% of a batch-1 tiny_mlp step on CPU
        loss = next(iter(micro_losses))
        (loss.sum() if loss.dim() else loss).backward()
        return loss
    scale, total = (1.0 / k if reduction == "mean" else 1.0), 0.0
    for loss in micro_losses:
        ((loss.sum() if loss.dim() else loss) * scale).backward()
        total = total + loss.detach()
    return total


def make_step(model: nn.Module, opt: torch.optim.Optimizer, task: Task, spec: RunSpec,
              batches: Iterator[Selector], scheduler: LambdaLR | None = None) -> Callable[[], Tensor]:
    """One training step as a function: the unit a single run repeats and the benchmarks time.

    Returns the batch's loss (summed over its micro-batches) as a tensor, not read (the loop
    decides when to sync); ``task`` is already on the run's device. A ``scheduler`` (the lr
    schedule) is stepped after the optimizer.
    """
    x, y, n, k, loss_fn = task.train.x, task.train.y, task.n_train, spec.accumulation_steps, task.loss
    reduction = spec.accumulation_reduction
    if get_spec(spec.optimizer).closure:
        return _closure_step(model, opt, task, spec, batches, scheduler)

    def step() -> Tensor:
        clear_grads(opt)
        if k == 1:  # no micro-batches to split or accumulate: a few µs less per step on a tiny model
            sel = next(batches)
            loss = loss_fn(model(batch_rows(x, sel)), batch_rows(y, sel))
            loss.backward()
        else:
            parts = micro_batches(next(batches), n, k)
            loss = accumulate((loss_fn(model(batch_rows(x, p)), batch_rows(y, p)) for p in parts), k, reduction)
        opt.step()
        if scheduler is not None:
            scheduler.step()
        return loss

    return step


def _closure_step(model: nn.Module, opt: torch.optim.Optimizer, task: Task, spec: RunSpec,
                  batches: Iterator[Selector], scheduler: LambdaLR | None) -> Callable[[], Tensor]:
    """The step for an optimizer that calls ``closure()`` (zero the gradients, forward and backward
    the step's batch, return its loss) as often as it needs. The step's loss is the first call's:
    the loss at the parameters the step started from, as in the ordinary step."""
    x, y, n, k, loss_fn = task.train.x, task.train.y, task.n_train, spec.accumulation_steps, task.loss

    def step() -> Tensor:
        parts = micro_batches(next(batches), n, k)  # one batch per step, however often it is evaluated
        first: list[Tensor] = []

        def closure() -> Tensor:
            clear_grads(opt)
            losses = (loss_fn(model(batch_rows(x, p)), batch_rows(y, p)) for p in parts)
            loss = accumulate(losses, k, spec.accumulation_reduction)
            first.append(loss.detach())
            # the objective whose gradient was just taken: the batch mean (a sum of k means for "sum")
            return loss / k if k > 1 and spec.accumulation_reduction == "mean" else loss

        opt.step(closure)
        if scheduler is not None:
            scheduler.step()
        return first[0]

    return step


class SingleEngine:
    """The loop's engine for one configuration: its model, its optimizer, its batch stream."""

    def __init__(self, task: Task, spec: RunSpec):
        device, dtype = torch.device(spec.device), DTYPES[spec.dtype]
        self.task, self.spec = task.to(device, dtype), spec
        self.model = self.task.make_model(spec.seed).to(device, dtype)
        self.impl = spec.impl
        self.opt = self._build(self.model)
        self.factor = lr_factor(spec.lr_schedule, total_steps(spec, self.task.n_train))
        self.scheduler = start_schedule(self.opt, self.factor)
        self.batches = BatchStream(self.task.n_train, spec.batch_size, spec.sampling, spec.seed, device)
        self.splits = eval_splits(self.task, spec.eval)
        self.eval_mode = get_spec(spec.optimizer).eval_mode
        self._live = [0]
        self._bind()

    def _build(self, model: nn.Module) -> torch.optim.Optimizer:
        """The run's optimizer over ``model``'s parameters (the implementation that runs is kept)."""
        spec = self.spec
        opt, self.impl = build_optimizer(spec.optimizer, model.parameters(), spec.lr, spec.hparams, self.impl)
        return opt

    def _bind(self) -> None:
        self.step = make_step(self.model, self.opt, self.task, self.spec, self.batches, self.scheduler)

    def live(self) -> list[int]:
        return self._live

    def evaluate(self, positions: Sequence[int], splits: Sequence[Split] | None = None) -> list[tuple[Stats, ...]]:
        chunk = self.spec.eval.batch
        with self._eval_point():
            stats = tuple(evaluate(self.model, self.task, split, chunk) for split in (splits or self.splits))
        return [stats]

    @contextlib.contextmanager
    def _eval_point(self) -> Iterator[None]:
        """Schedule-free: evaluate the averaged point x (eval mode), then train at y again. ``train()``
        recomputes y from x in floating point (not bit for bit), so y itself is put back: the
        trajectory does not depend on when a run is evaluated (a target's replay evaluates more often)."""
        if not self.eval_mode:
            yield
            return
        params = list(self.model.parameters())
        y = [p.detach().clone() for p in params]
        self.opt.eval()
        try:
            yield
        finally:
            self.opt.train()
            with torch.no_grad():
                for p, kept in zip(params, y):
                    p.copy_(kept)

    def drop(self, ids: set[int]) -> None:
        if 0 in ids:
            self._live = []

    def model_at(self, position: int) -> nn.Module:
        return self.model

    def snapshot(self) -> SingleEngine:
        """A copy in the current state (model, optimizer, schedule, batch stream) to replay from: a
        fresh optimizer from the entry over the copied model, given this one's whole state
        (:func:`suite.optim.restore.restore_optimizer`; a deep copy would lose its attributes)."""
        twin = SingleEngine.__new__(SingleEngine)
        twin.__dict__.update(self.__dict__)
        twin.model = copy.deepcopy(self.model)
        twin.opt = restore_optimizer(self.opt, twin._build(twin.model))
        twin.scheduler = copy_schedule(self.scheduler, twin.opt, self.factor)
        twin.batches, twin._live = self.batches.clone(), list(self._live)
        twin._bind()
        return twin


def train(task: Task, spec: RunSpec, progress: bool = False, on_eval: OnEval | None = None) -> RunResult:
    """Train one configuration; return its curve (one row per evaluation point).

    ``on_eval(row)`` sees every evaluation row after step 0; returning True stops the run there
    (a tuner's pruning decision), recorded as ``pruned``.
    """
    callback = None if on_eval is None else (lambda i, row: on_eval(row))
    return Loop(SingleEngine(task, spec), [spec], callback).run(progress)[0]
