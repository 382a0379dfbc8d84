"""The one training loop: schedule, warm-up, clock, evaluation points, divergence, pruning, time
limit, progress. It drives an :class:`Engine`: one model (``suite.train.single``) or a stack of K
configurations of one cell trained as one model (``suite.train.stacked``).

Reads top to bottom: train to the next tick (an evaluation step, a progress update or the end
of warm-up) with the clock running, stop the clock, then evaluate where due; a configuration
that diverges, is pruned or runs out of time gets its last row and leaves; the others go on.

Divergence: a mini-batch loss that is NaN, inf or above ``divergence_factor`` × the initial
training loss stops that configuration at that step (and so does such a full training loss at an
evaluation). Reading a loss is a host sync, which is cheap on the CPU (exact per-step check) but
serializes a GPU queue; on other devices the losses stay on the device and are read every
:data:`DEVICE_CHECK_EVERY` steps (and at every tick): the run still stops at its first bad step
(its last row is that step, with that step's mini-batch loss), but its parameters, which are
NaN or exploded by then, were evaluated a few steps later.

Timing (``time_s``, ``train_seconds``): the clock (warm-up and evaluation excluded) is
apportioned among the configurations live while it ran: each interval's time divided by the
number of live configurations. A single run gets all of it. A stacked configuration's ``time_s``
is thus its share of the compute and the shares add up to the clock; this keeps time a per-run
cost and ``max_seconds`` a per-configuration budget. It is not the time the run would take alone
(that is larger: stacking is the point); compare ``time_s`` only between runs trained alike.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Protocol, Sequence

import torch
from torch import Tensor
from tqdm.auto import tqdm

from suite.train.device import Clock
from suite.train.evaluation import Stats, eval_row
from suite.train.schedule import schedule
from suite.types import RunResult, RunSpec, Task

OnEval = Callable[[dict], bool]  # called with each evaluation row; True stops the run (pruned)
DEVICE_CHECK_EVERY = 32  # steps between divergence checks (host syncs) off the CPU


class Engine(Protocol):
    """What the loop trains: configurations ``0..K-1`` (one cell), some of them still live."""

    task: Task  # on the engine's device and dtype
    impl: str  # the optimizer implementation that runs

    def live(self) -> list[int]:
        """The ids of the configurations still training, in the order :meth:`step` reports them."""

    def step(self) -> Tensor:
        """One training step of every live configuration: their mini-batch losses, summed over
        micro-batches, on the device (a scalar for one, ``(K,)`` for a stack); not read here."""

    def evaluate(self, positions: Sequence[int]) -> list[tuple[Stats, Stats, Stats]]:
        """(train, val, test) statistics of the live configurations at ``positions``."""

    def drop(self, ids: set[int]) -> None:
        """Take finished configurations out; the others continue unchanged."""


@dataclass
class Configuration:
    """One configuration's bookkeeping while the loop trains it."""

    spec: RunSpec
    on_eval: OnEval | None
    rows: list[dict] = field(default_factory=list)
    clock: float = 0.0  # its share of the training clock
    last_loss: float = math.nan
    limit: float = math.inf
    steps: int = 0
    diverged: bool = False
    pruned: bool = False


class Loop:
    """Trains ``engine``'s configurations to the end of their schedule; :meth:`run` returns their results."""

    def __init__(self, engine: Engine, specs: Sequence[RunSpec], on_eval: Callable[[int, dict], bool] | None = None,
                 check_every: int | None = None):
        """``check_every``: steps between divergence checks (default: 1 on the CPU, else
        :data:`DEVICE_CHECK_EVERY`); the tests use it to run the device path on the CPU."""
        self.engine, self.task, self.spec = engine, engine.task, specs[0]
        self.configs = [Configuration(s, None if on_eval is None else _bind(on_eval, i)) for i, s in enumerate(specs)]
        device = self.task.train.x.device
        self.clock = Clock(device)
        self.check_every = check_every or (1 if device.type == "cpu" else DEVICE_CHECK_EVERY)

    def record(self, positions: Sequence[int], steps: Sequence[int]) -> None:
        """Evaluate (not timed) the live configurations at ``positions``; append their rows at ``steps``."""
        live = self.engine.live()
        for pos, step, stats in zip(positions, steps, self.engine.evaluate(positions)):
            c = self.configs[live[pos]]
            c.rows.append(eval_row(self.task, c.spec, step, c.clock, c.last_loss, *stats))
            c.steps = step

    def advance(self, step: int, stop: int) -> tuple[int, dict[int, int]]:
        """Train until ``stop`` or until a check finds a bad loss; return the step reached and, by
        position, the first bad step of each configuration that went bad."""
        configs = [self.configs[i] for i in self.engine.live()]
        k, bad, pending = self.spec.accumulation_steps, {}, []
        while step < stop and not bad:
            step += 1
            loss = self.engine.step()
            if self.check_every == 1:  # the CPU: reading the loss is cheap, check every step
                self.note(configs, loss.tolist(), step, k, bad)
                continue
            pending.append(loss.detach())  # elsewhere: no host sync until the next check
            if len(pending) == self.check_every or step == stop:
                for offset, losses in enumerate(torch.stack(pending).tolist()):
                    self.note(configs, losses, step - len(pending) + 1 + offset, k, bad)
                pending = []
        return step, bad

    @staticmethod
    def note(configs: list[Configuration], losses, step: int, k: int, bad: dict[int, int]) -> None:
        """Each configuration's mini-batch loss at ``step`` (``losses``: a float for one, a list for
        a stack); a NaN, inf or exploded one marks its position bad at that step."""
        for pos, (c, loss) in enumerate(zip(configs, losses if isinstance(losses, list) else (losses,))):
            if pos not in bad:
                c.last_loss = loss if k == 1 else loss / k  # the batch's mean over its k micro-batches
                if not c.last_loss <= c.limit:  # NaN, inf or exploded
                    bad[pos] = step

    def segment(self, step: int, stop: int) -> int:
        """Train to ``stop`` (a tick); a configuration that diverges gets its row and leaves at once."""
        while self.engine.live() and step < stop:
            if step >= self.spec.warmup_steps:
                self.clock.start()  # warm-up steps (the first ones) are run but not timed
            before = self.clock.elapsed
            step, bad = self.advance(step, stop)
            self.clock.stop()
            live = self.engine.live()
            share = (self.clock.elapsed - before) / len(live)
            for i in live:
                self.configs[i].clock += share
            if bad:
                positions = sorted(bad)
                self.record(positions, [bad[pos] for pos in positions])
                for pos in positions:
                    self.configs[live[pos]].diverged = True
                self.engine.drop({live[pos] for pos in positions})
        return step

    def checkpoint(self, step: int, total: int, is_eval: bool) -> None:
        """After a tick: rows where due, then divergence, pruning and time-outs leave."""
        live, cap = self.engine.live(), self.spec.max_seconds
        late = {pos for pos, i in enumerate(live) if cap is not None and self.configs[i].clock >= cap}
        due = range(len(live)) if is_eval else sorted(late)
        if not due:
            return
        self.record(due, [step] * len(due))
        done = set()
        for pos in due:
            c = self.configs[live[pos]]
            row = c.rows[-1]
            c.diverged = not row["train_loss"] <= c.limit
            c.pruned = not c.diverged and c.on_eval is not None and step < total and bool(c.on_eval(row))
            if c.diverged or c.pruned or pos in late:
                done.add(live[pos])
        self.engine.drop(done)

    def start(self) -> None:
        """Step 0: every configuration's first row; its divergence limit comes from it."""
        self.record(range(len(self.configs)), [0] * len(self.configs))
        for c in self.configs:
            c.limit = self.spec.divergence_factor * max(c.rows[0]["train_loss"], 1e-12)
            c.diverged = not c.rows[0]["train_loss"] <= c.limit
        self.engine.drop({i for i, c in enumerate(self.configs) if c.diverged})

    def run(self, progress: bool = False) -> list[RunResult]:
        total, evals, ticks = schedule(self.spec, self.task.n_train)
        self.start()
        step, single = 0, len(self.configs) == 1
        bar = tqdm(total=total, disable=not progress, unit="step", dynamic_ncols=True, leave=False)
        for stop in ticks[1:]:
            if not self.engine.live():
                break
            step = self.segment(step, stop)
            bar.update(step - bar.n)
            if self.engine.live():
                self.checkpoint(step, total, step in evals)
            if single:
                bar.set_postfix(train_loss=f"{self.configs[0].rows[-1]['train_loss']:.4g}", refresh=False)
            else:
                bar.set_postfix(live=len(self.engine.live()), refresh=False)
        bar.close()
        self.engine.drop(set(self.engine.live()))
        return [RunResult(rows=c.rows, diverged=c.diverged, steps=c.steps, train_seconds=c.clock,
                          impl=self.engine.impl, pruned=c.pruned, stack_size=len(self.configs))
                for c in self.configs]


def _bind(on_eval: Callable[[int, dict], bool], i: int) -> OnEval:
    return lambda row: on_eval(i, row)
