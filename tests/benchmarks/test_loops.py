"""The loop-ratio harness (``suite.loopbench``, run for real by ``scripts/bench_loop.py``).

These are ordinary tests, in the default run, so the harness cannot rot: they run it at a tiny
scale and check what it reports, never how fast anything is. The FLOP count the matmul fraction
rests on is checked against torch's own FLOP counter.
"""
from __future__ import annotations

import math

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from suite.bench.loops import (
    CELLS,
    LOOPS,
    cell_spec,
    compare_loops,
    gemm_flops,
    main,
    matmul_fraction,
    matmul_rate,
    mlp_gemms,
)
from suite.tasks import build_task
from suite.tasks.images import MLP
from suite.train.evaluation import evaluate
from suite.types import DataError


@pytest.mark.slow  # FlopCounterMode's first use costs seconds; CI runs it with the fast benchmarks
@pytest.mark.parametrize("widths", [[784, 256, 128, 10], [20, 7, 3]])
def test_gemm_flops_match_torch_flop_counter(widths):
    model, batch = MLP(widths), 48
    x, y = torch.rand(batch, widths[0]), torch.randint(widths[-1], (batch,))
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(x), y).backward()
    assert gemm_flops(mlp_gemms(widths, batch)) == counter.get_total_flops()


def test_compare_loops_reports_every_cell_and_loop():
    task = build_task({"name": "tiny_mlp"})
    cells = (("tiny_mlp", 1, 30), ("tiny_mlp", 32, 30))
    table = compare_loops(("sgd", "adam"), cells=cells, repeats=2, tasks={"tiny_mlp": task})
    assert list(table[["batch_size", "optimizer"]].itertuples(index=False, name=None)) == \
        [(1, "sgd"), (1, "adam"), (32, "sgd"), (32, "adam")]
    assert (table["impl"] == "fused").all()  # the registry's fastest: the same object in every loop
    for name in LOOPS:
        assert ((table[f"{name}_us"] > 0) & table[f"{name}_us"].map(math.isfinite)).all()
    assert table["suite/hand"].tolist() == pytest.approx((table["suite_us"] / table["hand_us"]).tolist())
    assert table["suite/dataloader"].tolist() == pytest.approx((table["suite_us"] / table["dataloader_us"]).tolist())
    assert ((table["suite/hand paired"] > 0) & (table["suite/dataloader paired"] > 0)).all()


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_the_three_loops_train_the_same_model(optimizer):
    """At the full batch every loop takes the same gradient-descent steps (a mean does not depend
    on the batch order), so the same model, data and optimizer end at the same training loss."""
    task = build_task({"name": "tiny_mlp", "n": 200})
    spec = cell_spec(task, optimizer, task.n_train, steps=60)
    losses = {name: loop(task, spec)[1] for name, loop in LOOPS.items()}
    assert losses["hand"] == pytest.approx(losses["suite"], rel=1e-4)
    assert losses["dataloader"] == pytest.approx(losses["suite"], rel=1e-4)
    assert losses["suite"] < 0.9 * evaluate(task.make_model(spec.seed), task, task.train, 8192)[0]


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_the_hand_loop_takes_the_suites_steps_exactly(optimizer):
    """At a mini-batch that straddles epochs (200 = 28 x 7 + 4), the hand-written loop draws the
    suite's batches: the same trajectory bit for bit, so a ratio compares the loops alone."""
    task = build_task({"name": "tiny_mlp", "n": 200})
    spec = cell_spec(task, optimizer, 7, steps=90)
    assert LOOPS["hand"](task, spec)[1] == LOOPS["suite"](task, spec)[1]


def test_matmul_fraction_reports_consistent_numbers():
    try:
        task = build_task({"name": "fashion_mnist", "train_size": 2048, "val_size": 1000})
    except DataError as e:
        pytest.skip(str(e))
    out = matmul_fraction(batch=256, steps=25, repeats=1, task=task, square=128)
    assert out["step_gflop"] == pytest.approx(gemm_flops(mlp_gemms([784, 256, 128, 10], 256)) / 1e9)
    assert out["achieved_gflops"] == pytest.approx(out["step_gflop"] / (out["step_ms"] / 1e3))
    assert out["fraction_of_same_shapes"] == pytest.approx(out["achieved_gflops"] / out["mm_same_shapes_gflops"])
    assert 0 < out["fraction_of_best_mm"] <= out["fraction_of_same_shapes"]


def test_matmul_rate_counts_flops_of_every_shape():
    rate = matmul_rate([(64, 32, 16), (8, 8, 8)], repeats=2)
    assert rate > 0 and math.isfinite(rate)


def test_bench_loop_script_writes_its_tables(tmp_path, capsys):
    try:
        build_task({"name": "fashion_mnist", "train_size": 100, "val_size": 10})
    except DataError as e:
        pytest.skip(str(e))
    args = ["--out", str(tmp_path), "--repeats", "1", "--step-scale", "0.001", "--optimizers", "sgd", "--skip-matmul"]
    assert main(args) == 0
    table = pd.read_csv(tmp_path / "loop_ratios.csv")
    assert [(t, b) for t, b, _ in CELLS] == list(table[["task", "batch_size"]].itertuples(index=False, name=None))
    assert (tmp_path / "loop_ratios.md").read_text().startswith("| task | batch_size |")
    assert main(["--out", str(tmp_path), "--optimizers", "no_such_optimizer"]) == 2
    assert "unknown optimizer 'no_such_optimizer'" in capsys.readouterr().err
