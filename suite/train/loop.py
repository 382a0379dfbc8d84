"""The one training loop: schedule, warm-up, clock, evaluation points, divergence, pruning, time
limit, progress. It drives an :class:`Engine`: one model (``suite.train.single``) or a stack of K
configurations of one cell trained as one model (``suite.train.stacked``).

Reads top to bottom: train to the next tick (an evaluation step, a progress update or the end
of warm-up) with the clock running, stop the clock, then evaluate where due; a configuration
that diverges, is pruned or runs out of time gets its last row and leaves; the others go on.

Divergence: a mini-batch loss that is NaN, inf or above ``divergence_factor`` × the initial training
loss stops that configuration at that step (and so does such a full training loss at an evaluation).
Reading a loss is a host sync: cheap on the CPU, where every step's losses are read (about a µs a
step for one configuration, 8 for a stack of 64), so a diverging run stops, and is evaluated, at its
first bad step; on other devices it serializes the queue, so the losses stay on the device and are
read together at every multiple of :data:`DEVICE_CHECK_EVERY` steps and before every evaluation
(every tick when a time limit is set): the run still stops at its first bad step (its last row is
that step, with that step's mini-batch loss), but its parameters, NaN or exploded by then, are
evaluated up to ``DEVICE_CHECK_EVERY - 1`` steps later. The checks sit on a fixed grid of steps, so
nothing depends on where the loop pauses (the progress bar's ticks, kept only while a bar is shown);
the configurations that do not diverge are unchanged, row for row.

Steps to target (when ``RunSpec.target`` is set): the engine's state (model, the whole
optimizer, schedule, batch streams) and the global random state are copied at every evaluation;
when a configuration first meets its target at an evaluation, the segment since the previous one
is replayed from that copy (same batches, same arithmetic, same random draws: the same
trajectory, and the run then continues as if no replay had happened) and
evaluated every ``max(1, 5% of its start step)`` steps, so the first step that meets the target is
known to within 5% (one step early on), whatever the evaluation cadence. The replay is not timed.
Every step's mini-batch loss is kept as a compact trace (``suite.train.trace``).

Timing (``time_s``, ``train_seconds``): the clock (warm-up and evaluation excluded) is
apportioned among the configurations live while it ran: each interval's time divided by the
number of live configurations. A single run gets all of it. A stacked configuration's ``time_s``
is thus its share of the compute and the shares add up to the clock; this keeps time a per-run
cost and ``max_seconds`` a per-configuration budget. It is not the time the run would take alone
(that is larger: stacking is the point); compare ``time_s`` only between runs trained alike.
"""
from __future__ import annotations

import math
from array import array
from dataclasses import dataclass, field
from typing import Callable, Protocol, Sequence

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from suite.train.device import Clock, RngState, rng_as, rng_state
from suite.train.evaluation import Stats, eval_row, eval_splits, metric_value, split_of
from suite.train.noise import noise_scale
from suite.train.schedule import schedule
from suite.train.timing import timed_phase
from suite.train.trace import bin_trace
from suite.types import RunResult, RunSpec, Split, Task

OnEval = Callable[[dict], bool]  # called with each evaluation row; True stops the run (pruned)
DEVICE_CHECK_EVERY = 32  # steps between divergence checks (host syncs) off the CPU: losses read in blocks
TARGET_RESOLUTION = 0.05  # a replay evaluates every 5% of its start step: steps-to-target within 5%


class Engine(Protocol):
    """What the loop trains: configurations ``0..K-1`` (one cell), some of them still live."""

    task: Task  # on the engine's device and dtype
    impl: str  # the optimizer implementation that runs

    def live(self) -> list[int]:
        """The ids of the configurations still training, in the order :meth:`step` reports them."""

    def step(self) -> Tensor:
        """One training step of every live configuration: their mini-batch losses, summed over
        micro-batches, on the device (a scalar for one, ``(K,)`` for a stack); not read here."""

    def evaluate(self, positions: Sequence[int], splits: Sequence[Split] | None = None) -> list[tuple[Stats, ...]]:
        """Statistics of the live configurations at ``positions`` on ``splits`` (default: the
        run's train, val and test splits)."""

    def drop(self, ids: set[int]) -> None:
        """Take finished configurations out; the others continue unchanged."""

    def snapshot(self) -> Engine:
        """An independent copy in the current state, to replay a segment from."""

    def model_at(self, position: int) -> nn.Module:
        """The live configuration at ``position`` as an ordinary model (read only)."""


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
    trace: array = field(default_factory=lambda: array("d"))  # every step's mini-batch loss
    threshold: float = math.nan  # of spec.target, fixed by the step-0 row
    steps_to_target: float = math.nan
    bracket: float = math.nan

    @property
    def seeking(self) -> bool:
        """Still looking for the first step that meets its target."""
        return self.spec.target is not None and math.isnan(self.steps_to_target) and not self.diverged

    def result(self, impl: str, stack_size: int) -> RunResult:
        return RunResult(rows=self.rows, diverged=self.diverged, steps=self.steps, train_seconds=self.clock,
                         impl=impl, pruned=self.pruned, stack_size=stack_size, steps_to_target=self.steps_to_target,
                         to_target_bracket=self.bracket, trace=bin_trace(self.trace))


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
        self.snap: tuple[int, Engine, RngState] | None = None  # (step, engine copy, random state) at the last eval
        self.pending: list[Tensor] = []  # the live configurations' losses of the steps since the last check

    @timed_phase("evaluation")
    def record(self, positions: Sequence[int], steps: Sequence[int]) -> None:
        """Evaluate (not timed) the live configurations at ``positions``; append their rows at ``steps``."""
        live = self.engine.live()
        for pos, step, stats in zip(positions, steps, self.engine.evaluate(positions)):
            c = self.configs[live[pos]]
            c.rows.append(eval_row(self.task, c.spec, step, c.clock, c.last_loss, *stats))
            c.steps = step
            if self.spec.eval.noise_scale and math.isfinite(c.rows[-1]["train_loss"]):
                c.rows[-1].update(noise_scale(self.engine.model_at(pos), self.task, c.spec.seed, step))

    def advance(self, step: int, stop: int, flush: bool) -> tuple[int, dict[int, int]]:
        """Train until ``stop`` or until a check finds a bad loss; return the step reached and, by
        position, the first bad step of each configuration that went bad. The losses are read at
        every multiple of ``check_every`` (a fixed grid: where a divergence is noticed does not
        depend on where the loop pauses) and at ``stop`` if ``flush`` (before rows are written)."""
        configs, bad, keep = [self.configs[i] for i in self.engine.live()], {}, self.check_every > 1
        while step < stop and not bad:
            step += 1
            loss = self.engine.step()
            self.pending.append(loss.detach() if keep else loss)  # kept: no graph held until the check
            if step % self.check_every == 0 or (flush and step == stop):
                bad = self.note(configs, step)
        return step, bad

    def note(self, configs: list[Configuration], step: int) -> dict[int, int]:
        """Read the pending losses (steps up to ``step``, one tensor each: a scalar for one
        configuration, one per live position for a stack) in one host copy and append them to the
        traces, each up to its configuration's first NaN, inf or exploded loss. Returns the
        positions that went bad, with that step. (Plain Python: a step's few floats cost less so
        than a round trip through numpy.)"""
        n = len(self.pending)
        values = [self.pending[0].tolist()] if n == 1 else torch.stack(self.pending).tolist()
        first, self.pending = step - n + 1, []
        k, bad = self.spec.accumulation_steps, {}
        for offset, losses in enumerate(values):
            for pos, (c, loss) in enumerate(zip(configs, losses if isinstance(losses, list) else (losses,))):
                if pos not in bad:
                    c.last_loss = loss if k == 1 else loss / k  # the batch's mean over its k micro-batches
                    c.trace.append(c.last_loss)
                    if not c.last_loss <= c.limit:  # NaN, inf or exploded
                        bad[pos] = first + offset
        return bad

    @timed_phase("steps")
    def segment(self, step: int, stop: int, flush: bool) -> int:
        """Train to ``stop`` (a tick; ``flush``: read every loss by then); a configuration that
        diverges gets its row and leaves at once."""
        while self.engine.live() and step < stop:
            if step >= self.spec.warmup_steps:
                self.clock.start()  # warm-up steps (the first ones) are run but not timed
            before = self.clock.elapsed
            step, bad = self.advance(step, stop, flush)
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
        """After a tick: rows where due, targets, then divergence, pruning and time-outs leave."""
        live, cap = self.engine.live(), self.spec.max_seconds
        late = {pos for pos, i in enumerate(live) if cap is not None and self.configs[i].clock >= cap}
        due = range(len(live)) if is_eval else sorted(late)
        if not due:
            return
        self.record(due, [step] * len(due))
        self.find_targets([live[pos] for pos in due], step)
        done = set()
        for pos in due:
            c = self.configs[live[pos]]
            row = c.rows[-1]
            c.diverged = not row["train_loss"] <= c.limit
            c.pruned = not c.diverged and c.on_eval is not None and step < total and bool(c.on_eval(row))
            stopped = c.spec.stop_at_target and not math.isnan(c.steps_to_target)
            if c.diverged or c.pruned or pos in late or stopped:
                done.add(live[pos])
        self.engine.drop(done)
        if is_eval:
            self.keep_snapshot(step)

    def keep_snapshot(self, step: int) -> None:
        """Copy the engine's state while a live configuration still seeks its target."""
        seeking = any(self.configs[i].seeking for i in self.engine.live())
        device = self.task.train.x.device
        self.snap = (step, self.engine.snapshot(), rng_state(device)) if seeking else None

    def find_targets(self, ids: Sequence[int], step: int) -> None:
        """Configurations whose newest row (at ``step``) first meets their target: locate the step."""
        crossed = [i for i in ids if self.configs[i].seeking
                   and self.configs[i].spec.target.met(self.configs[i].rows[-1][self.configs[i].spec.target.metric],
                                                       self.configs[i].threshold)]
        if not crossed:
            return
        if step == 0 or self.snap is None:  # met at the start: exact
            for i in crossed:
                self.configs[i].steps_to_target, self.configs[i].bracket = float(step), 0.0
            return
        self.replay(crossed, step)

    @timed_phase("target_replay")
    def replay(self, ids: list[int], stop: int) -> None:
        """Replay the segment since the last snapshot, evaluating the target's split every
        ``TARGET_RESOLUTION`` × its start step, to find each configuration's first step meeting it."""
        start, engine, rng = self.snap
        self.snap = None  # consumed: it is advanced below
        with rng_as(rng, self.task.train.x.device):
            self.locate(engine, ids, start, stop)

    def locate(self, engine: Engine, ids: list[int], start: int, stop: int) -> None:
        """Step ``engine`` (at ``start``) towards ``stop``, evaluating as it goes; set ``ids``' steps to target."""
        target = self.spec.target
        split = eval_splits(self.task, self.spec.eval)[split_of(target.metric)]
        every, last, step, pending = max(1, int(TARGET_RESOLUTION * start)), start, start, list(ids)
        while pending and step < stop:
            for _ in range(min(every, stop - step)):
                engine.step()
                step += 1
            live = engine.live()
            stats = engine.evaluate([live.index(i) for i in pending], [split])
            for i, (stat,) in zip(list(pending), stats):
                c = self.configs[i]
                if target.met(metric_value(self.task, target.metric, stat), c.threshold):
                    c.steps_to_target, c.bracket = float(step), float(step - last)
                    pending.remove(i)
            last = step
        for i in pending:  # the replay's last evaluation disagrees with the loop's by rounding only
            self.configs[i].steps_to_target, self.configs[i].bracket = float(stop), float(stop - start)

    def start(self) -> None:
        """Step 0: every configuration's first row; its divergence limit and target threshold come from it."""
        self.record(range(len(self.configs)), [0] * len(self.configs))
        for c in self.configs:
            c.limit = self.spec.divergence_factor * max(c.rows[0]["train_loss"], 1e-12)
            c.diverged = not c.rows[0]["train_loss"] <= c.limit
            if c.spec.target is not None:
                c.threshold = c.spec.target.thresholds(c.rows[0][c.spec.target.metric])
        self.find_targets(range(len(self.configs)), 0)
        self.engine.drop({i for i, c in enumerate(self.configs)
                          if c.diverged or (c.spec.stop_at_target and not math.isnan(c.steps_to_target))})
        self.keep_snapshot(0)

    def run(self, progress: bool = False) -> list[RunResult]:
        total, evals, ticks = schedule(self.spec, self.task.n_train)
        evals, timed = set(evals), self.spec.max_seconds is not None
        if not progress and not timed:  # the 1% ticks serve the bar and the time limit only
            ticks = sorted(evals | {min(self.spec.warmup_steps, total)})
        self.start()
        step, single = 0, len(self.configs) == 1
        bar = tqdm(total=total, disable=not progress, unit="step", dynamic_ncols=True, leave=False)
        for stop in ticks[1:]:
            if not self.engine.live():
                break
            step = self.segment(step, stop, flush=stop in evals or timed)
            bar.update(step - bar.n)
            if self.engine.live():
                self.checkpoint(step, total, step in evals)
            if not progress:
                continue
            if single:
                bar.set_postfix(train_loss=f"{self.configs[0].rows[-1]['train_loss']:.4g}", refresh=False)
            else:
                bar.set_postfix(live=len(self.engine.live()), refresh=False)
        bar.close()
        self.engine.drop(set(self.engine.live()))
        return [c.result(self.engine.impl, len(self.configs)) for c in self.configs]


def _bind(on_eval: Callable[[int, dict], bool], i: int) -> OnEval:
    return lambda row: on_eval(i, row)
