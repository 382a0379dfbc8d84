"""Stacked training: K configurations of one cell (different lrs and/or seeds) trained as one model.

On the tiny tasks a step is a few hundred microseconds of framework overhead and almost no
arithmetic, so K runs one after another cost K times the overhead. Here the K models are one
stacked model (``stack_models``): one forward/backward per step for all K, each configuration's
loss its own batch mean (so its gradient is its unstacked gradient), and ONE real optimizer with
per-configuration learning rates (``stack_optim`` explains why stepping at lr = 1 and scaling
each configuration's update by its lr is exact for entries that declare it).

:class:`StackEngine` is the loop's engine for a stack (``suite.train.loop`` is the same loop a
single run uses): each configuration sees its seed's batches and gets the rows of its single
run (to rounding: see :class:`StackEngine` for what its numbers depend on); one that diverges,
is pruned or runs out of time stops there (its parameters stop changing; the others continue
unchanged). :func:`train_many` stacks when it is exact and pays.
"""
from __future__ import annotations

import copy
import dataclasses
from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from suite.optim.registry import get_spec
from suite.train.batches import StackBatches
from suite.train.device import DTYPES
from suite.train.evaluation import Stats, eval_splits, evaluate_stacked
from suite.train.loop import Loop
from suite.train.parity import stacking_parity
from suite.train.schedule import lr_factor, total_steps
from suite.train.single import accumulate, clear_grads, train
from suite.train.stack_models import stack_models, stacked_loss, unstack
from suite.train.stack_optim import Stack
from suite.types import ConfigError, RunResult, RunSpec, Split, Task
from suite.cell import PER_CONFIG

# How far a run's stored losses move (relative) when it trains in a stack of another composition
# (alone included) or with another torch thread count; the same stack and threads give the same
# bits. Measured (CPU, torch 2.13; the tutorials' 7 optimizers at their default lr and 3x): another
# stack, float32 <= 7e-6 over the quick study's 500-step runs and up to 1.4e-4 after 4,000 steps
# (AdamW, the kappa = 100 regression), float64 <= 1e-14 and 4e-13; 2 threads instead of 1, zero on
# regression and tiny_mlp (ops too small to split) and on float64, float32 <= 1.2e-6 over 100 steps
# of the 2k Fashion-MNIST slice. Rounding differences grow with the steps taken (fastest near the
# edge of stability), so these bounds hold for runs of the presets' length, not for any run.
REPRODUCE_RTOL = {"float32": 1e-3, "float64": 1e-11}


def cell_mismatch(specs: Sequence[RunSpec]) -> str | None:
    """Why ``specs`` are not one cell (everything equal but lr and seed), or None if they are."""
    if not specs:
        return "no configurations given"
    first = dataclasses.asdict(specs[0])
    for spec in specs[1:]:
        other = dataclasses.asdict(spec)
        for key, value in first.items():
            if key not in PER_CONFIG and other[key] != value:
                return f"{key} differs ({value!r} vs {other[key]!r})"
    return None


def check_stackable(specs: Sequence[RunSpec]) -> None:
    problem = cell_mismatch(specs)
    if problem:
        raise ConfigError(
            f"cannot train these configurations stacked: {problem}. A stack is one cell: every setting "
            f"equal except {' and '.join(PER_CONFIG)}. Group them by cell, or use suite.train.train_many."
        )
    entry = get_spec(specs[0].optimizer)
    if not entry.stackable:
        raise ConfigError(
            f"optimizer {entry.name!r} does not declare an lr-affine, elementwise step (lr_affine="
            f"{entry.lr_affine}, elementwise={entry.elementwise} in its registry entry), so per-configuration "
            f"learning rates cannot share one optimizer; train it with suite.train.train_many."
        )
    problem = stacking_parity(entry.name, specs[0].hparams) if entry.external else None
    if problem:  # a user's optimizer is stacked on its YAML's word only once a quick check agrees
        raise ConfigError(
            f"optimizer {entry.name!r} declares lr_affine and elementwise in {entry.source}, but {problem}. "
            f"Remove lr_affine: true from {entry.source} (it then trains unstacked), or fix the optimizer."
        )


# Stack when a configuration's step is this small: parameters × micro-batch per configuration.
# Measured on CPU (K = 64, torch 2.13, 2 shared cores; stacked vs sequential training time):
# tiny_mlp 1-H-1, Adam: 301 params × b1 60x, × b32 6.9x; 3001 × b1 10x, × b32 1.5x; 9001 × b32
# 0.5x; the fashion_mnist MLP (235k params) 0.65-0.9x at b1 and b32. Small steps are framework
# overhead, which stacking shares; big ones are arithmetic and memory traffic, which it does not
# (and K copies of a big model fall out of cache). Not measured on GPUs, so the same rule holds there.
STACK_WORK_LIMIT = 100_000


def stacking_pays(task: Task, specs: Sequence[RunSpec]) -> bool:
    """Whether ``train_many`` should stack: several configurations of one cell, an optimizer that
    declares stacking exact, and a step small enough that framework overhead dominates it."""
    if len(specs) < 2 or cell_mismatch(specs) or not get_spec(specs[0].optimizer).stackable:
        return False
    params = sum(p.numel() for p in task.make_model(specs[0].seed).parameters())
    return params * specs[0].micro_batch <= STACK_WORK_LIMIT


def to_train(task: Task, specs: Sequence[RunSpec], needed: Sequence[bool]) -> list[int]:
    """Which of ``specs`` (one stack's configurations, in order) to train so that the ``needed``
    ones get the values their stack gives them: all of them when they train stacked (a stacked
    configuration's numbers depend on the stack's composition, see :class:`StackEngine`), else
    the needed ones alone (a single run is exact whatever trains beside it)."""
    if not any(needed):
        return []
    return list(range(len(specs))) if stacking_pays(task, specs) else [k for k, n in enumerate(needed) if n]


class StackEngine:
    """The loop's engine for K configurations of one cell as one stacked model.

    The stack keeps its K configurations from the first step to the last: one that diverges, is
    pruned or runs out of time leaves the *live* set (no more rows, and its parameters are kept
    as they were then) but stays in the arithmetic until the whole stack ends. So each
    configuration's numbers depend only on which configurations it was stacked with, in which
    order (floating point rounds a stacked step differently from a single one, and a stack of
    another size or order differently again), never on when the others stopped: retraining a
    stack's configurations together reproduces every one of them bit for bit, whatever happened
    to the others. Computing the finished ones costs little where stacking pays (a step is
    framework overhead, shared by all K). Evaluations are stacked for the same reason.

    After the loop, ``final_state(i)`` is configuration i's parameters when it left the live set
    (named as in the ordinary model's ``state_dict``), for checks and for saving models.
    """

    def __init__(self, task: Task, specs: Sequence[RunSpec], method: str = "auto"):
        check_stackable(specs)
        self.spec = spec = specs[0]
        device, dtype = torch.device(spec.device), DTYPES[spec.dtype]
        self.task = task = task.to(device, dtype)
        # Each slice starts exactly like its single run: the same make_model(seed), cast the same way.
        # One model per distinct seed (an lr sweep needs one): stacking copies the weights anyway.
        made = {seed: task.make_model(seed).to(device, dtype) for seed in dict.fromkeys(s.seed for s in specs)}
        factor = lr_factor(spec.lr_schedule, total_steps(spec, task.n_train))
        self.stack = Stack(stack_models([made[s.seed] for s in specs], method), [s.lr for s in specs], spec, factor)
        self.template = next(iter(made.values()))  # an ordinary model to load one configuration into
        self.impl = self.stack.impl
        self.batches = StackBatches(task, spec, [s.seed for s in specs])
        self.loss = stacked_loss(task.loss)
        self.splits = eval_splits(task, spec.eval)
        self.final: dict[int, dict[str, Tensor]] = {}
        self._live = list(range(len(specs)))  # configuration i is slice i of the stack
        self._index = None  # the live slices as an index tensor, once some have left

    def live(self) -> list[int]:
        return self._live

    def step(self) -> Tensor:
        stack, spec = self.stack, self.spec
        clear_grads(stack.opt)
        micro = ((self.loss(stack.model(x, shared), y, shared)  # (K,): each configuration's batch mean
                  for x, y, shared in self.batches.next()))
        loss = accumulate(micro, spec.accumulation_steps, spec.accumulation_reduction)
        stack.step()
        return loss if self._index is None else loss[self._index]

    def evaluate(self, positions: Sequence[int], splits: Sequence[Split] | None = None) -> list[tuple[Stats, ...]]:
        """The live configurations at ``positions``, from one stacked evaluation of all K."""
        stack, splits = self.stack, splits or self.splits
        chunk = max(1, self.spec.eval.batch // len(stack))  # the single run's eval memory, split K ways
        stacked = [evaluate_stacked(stack.model, self.loss, self.task, split, chunk, len(stack)) for split in splits]
        return [tuple(s[self._live[pos]] for s in stacked) for pos in positions]

    def snapshot(self) -> StackEngine:
        """A copy in the current state (the stack, its optimizer and schedule, the batch streams)."""
        twin = StackEngine.__new__(StackEngine)
        twin.__dict__.update(self.__dict__)
        twin.stack, twin.batches = self.stack.clone(), self.batches.clone()
        twin.final, twin._live = {}, list(self._live)
        twin.template = copy.deepcopy(self.template)
        return twin

    def drop(self, ids: set[int]) -> None:
        """Configurations ``ids`` leave the live set (their parameters are kept as they are now)."""
        for i in ids & set(self._live):
            self.final[i] = {n: t.detach().clone() for n, t in self.stack.model.config_state(i).items()}
        self._live = [i for i in self._live if i not in ids]
        if len(self._live) < len(self.stack):
            self._index = torch.tensor(self._live, dtype=torch.long, device=self.task.train.x.device)

    def model_at(self, position: int) -> nn.Module:
        """Configuration ``position`` as an ordinary model (the template, loaded with its weights)."""
        return unstack(self.stack.model, self._live[position], self.template)

    def final_state(self, i: int) -> dict[str, Tensor]:
        if i not in self.final:
            raise RuntimeError("final_state() is known once the configuration has left the stack")
        return self.final[i]


class StackedRun:
    """A stack and the loop that trains it: ``run()`` returns one :class:`RunResult` per spec."""

    def __init__(self, task: Task, specs: Sequence[RunSpec], on_eval: Callable[[int, dict], bool] | None = None,
                 method: str = "auto"):
        self.engine = StackEngine(task, specs, method)
        self.loop = Loop(self.engine, specs, on_eval)

    @property
    def stack(self) -> Stack:
        return self.engine.stack

    @property
    def clock(self):
        return self.loop.clock

    def run(self, progress: bool = False) -> list[RunResult]:
        return self.loop.run(progress)

    def final_state(self, i: int) -> dict[str, Tensor]:
        return self.engine.final_state(i)


def train_stacked(task: Task, specs: Sequence[RunSpec], progress: bool = False,
                  on_eval: Callable[[int, dict], bool] | None = None, method: str = "auto") -> list[RunResult]:
    """Train the configurations of one cell as one stacked model; one result per spec, in order.

    Same contract as :func:`train_many`; ``method`` picks the stacked model (``auto``, ``layers``,
    ``vmap``; see :func:`suite.train.stack_models.stack_models`).
    """
    check_stackable(specs)
    if len(specs) == 1:  # K = 1 is the ordinary run
        return [train(task, specs[0], progress=progress,
                      on_eval=None if on_eval is None else (lambda row: on_eval(0, row)))]
    return StackedRun(task, specs, on_eval, method).run(progress)


def train_many(task: Task, specs: list[RunSpec], progress: bool = False,
               on_eval: Callable[[int, dict], bool] | None = None) -> list[RunResult]:
    """Train several configurations of one cell (same task, optimizer, batch size); one result each.

    ``on_eval(i, row)`` is configuration i's pruning callback (see :func:`suite.train.train`).
    Stacked when it is exact and pays (:func:`stacking_pays`), with results equal to separate
    runs to float tolerance (the stacked-training tests check it); else one run after another.
    """
    if stacking_pays(task, specs):
        return train_stacked(task, specs, progress=progress, on_eval=on_eval)
    return [train(task, spec, progress=progress, on_eval=None if on_eval is None else
                  (lambda row, i=i: on_eval(i, row))) for i, spec in enumerate(specs)]
