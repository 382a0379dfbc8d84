"""Where a second torch thread starts to pay: one training step's time at 1 and at N threads.

For each (task, batch size) the step of :func:`suite.train.single.make_step` is timed at each
thread count, interleaved (the machine is shared: neighbours in time share its load), and the
median per-step time and the ratio ``t(N) / t(1)`` are reported beside the step's work
(parameters × micro-batch, :func:`suite.train.threads.step_work`). Run it quiet and again with
another process busy on one core (``python -c "while True: pass" &``): ``threads=auto``'s
cut-over (:data:`suite.train.threads.AUTO_WORK_CUTOVER`) is where two threads win in both.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from suite.bench.loops import cell_spec
from suite.tasks import build_task
from suite.train.single import SingleEngine
from suite.train.threads import step_work

CELLS = (("tiny_mlp", 1), ("tiny_mlp", 32), ("tiny_mlp", 1024), ("fashion_mnist", 1), ("fashion_mnist", 4),
         ("fashion_mnist", 16), ("fashion_mnist", 64), ("fashion_mnist", 256), ("fashion_mnist", 1024))


def step_seconds(engine: SingleEngine, steps: int, threads: int) -> float:
    """Median seconds per step of ``engine`` at ``threads`` over ``steps`` steps (after 5 warm-up)."""
    torch.set_num_threads(threads)
    for _ in range(5):
        engine.step()
    t0 = time.perf_counter()
    for _ in range(steps):
        engine.step()
    return (time.perf_counter() - t0) / steps


def compare_threads(cells=CELLS, counts=(1, 2), repeats: int = 6, seconds: float = 0.2, optimizer: str = "adam"):
    """One row per cell: the step's work, median µs per step at each thread count, and the ratios to 1."""
    tasks, rows = {}, []
    for name, batch in cells:
        task = tasks.setdefault(name, build_task({"name": name}))
        batch = min(batch, task.n_train)
        engine = SingleEngine(task, cell_spec(task, optimizer, batch, 10**9))
        steps = max(5, int(seconds / step_seconds(engine, 5, 1)))
        times = {n: [] for n in counts}
        for r in range(repeats):
            for n in (counts if r % 2 == 0 else counts[::-1]):
                times[n].append(step_seconds(engine, steps, n))
        row = {"task": name, "batch_size": batch, "work": step_work(task, engine.spec)}
        row.update({f"t{n}_us": 1e6 * statistics.median(t) for n, t in times.items()})
        row.update({f"t{n}/t1": statistics.median(a / b for a, b in zip(times[n], times[1])) for n in counts[1:]})
        rows.append(row)
        print("  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()), flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=6, help="interleaved repetitions per cell (medians)")
    p.add_argument("--seconds", type=float, default=0.2, help="seconds per measurement")
    p.add_argument("--threads", type=int, default=2, help="the thread count compared with 1")
    p.add_argument("--optimizer", default="adam")
    args = p.parse_args(argv)
    compare_threads(counts=(1, args.threads), repeats=args.repeats, seconds=args.seconds, optimizer=args.optimizer)
    return 0


if __name__ == "__main__":
    sys.exit(main())
