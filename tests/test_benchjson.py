"""Benchmark results and measurements: pytest-benchmark JSON -> tables and figure (``suite.benchjson``),
optimizer state bytes and peak step memory (``suite.bench``), and the benchmark grid's settings.

``tests/data/bench_fast.json`` is a real pytest-benchmark file, saved by one run of the fast grid:
``OPTSUITE_BENCH=fast pytest tests/benchmarks/test_steps.py --benchmark-only -o addopts=""
-k "tiny_mlp or accumulation" --benchmark-json=tests/data/bench_fast.json``.
"""
from __future__ import annotations

import dataclasses
import json
import math
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch

from suite.bench.steps import GRIDS, grid_from_env, peak_step_bytes, training_step
from suite.optim.measure import optimizer_step, state_bytes
from suite.optim.registry import OPTIMIZERS, get_spec
from suite.report.benchmarks import (
    load_benchmarks,
    table_markdown,
    throughput_figure,
    throughput_table,
    write_throughput,
)
from suite.report.benchmarks import main as benchjson_main
from suite.tasks import build_task
from suite.types import ConfigError, EvalSpec, RunSpec, StoreError

FAST_JSON = Path(__file__).parent / "data" / "bench_fast.json"
RAW = json.loads(FAST_JSON.read_text())


# --- JSON -> tidy table -> throughput table and figure ------------------------------------------

def test_load_benchmarks_has_one_row_per_benchmark_with_its_stats_and_extra_info():
    df = load_benchmarks(FAST_JSON)
    assert len(df) == len(RAW["benchmarks"])
    for (_, row), bench in zip(df.iterrows(), RAW["benchmarks"]):
        assert row["fullname"] == bench["fullname"] and row["group"] == bench["group"]
        assert row["median_s"] == bench["stats"]["median"] and row["rounds"] == bench["stats"]["rounds"]
        for key, value in bench["extra_info"].items():
            assert row[key] == value if value is not None else pd.isna(row[key])  # None: n/a, e.g. opt-step batch
    assert {"train-step", "accumulation", "opt-step"} <= set(df["kind"])
    assert df["cpu"].iloc[0] == RAW["machine_info"]["cpu"]["brand_raw"]


def test_throughput_table_derives_time_throughput_speedup_and_memory():
    df = load_benchmarks(FAST_JSON)
    table = throughput_table(df)
    assert len(table) == len(df)  # every benchmark in the file is a step benchmark
    by_name = df.set_index(["kind", "task", "optimizer", "impl", "batch_size", "accumulation_steps"], drop=False)
    steps = table[table["kind"] != "opt-step"]
    for _, row in steps.iterrows():
        raw = by_name.loc[(row["kind"], row["task"], row["optimizer"], row["impl"], row["batch_size"],
                           row["accumulation_steps"])]
        assert row["median_ms"] == pytest.approx(1e3 * raw["median_s"])
        assert row["samples_per_s"] == pytest.approx(row["batch_size"] / raw["median_s"])
        assert row["peak_mib"] == pytest.approx(raw["peak_bytes"] / 2**20)
        assert row["micro_batch"] * row["accumulation_steps"] == row["batch_size"]
    opt = table[table["kind"] == "opt-step"].set_index(["model", "optimizer", "impl"])
    for (model, optimizer, impl), row in opt.iterrows():
        assert row["speedup_vs_forloop"] == pytest.approx(opt.loc[(model, optimizer, "forloop"), "median_ms"] /
                                                          row["median_ms"])
    assert opt.xs("forloop", level="impl")["speedup_vs_forloop"].eq(1.0).all()
    assert table["batch_size"].dtype == "Int64" and table.loc[table["kind"] == "opt-step", "batch_size"].isna().all()


def test_write_throughput_writes_markdown_csv_and_figure(tmp_path):
    paths = write_throughput(load_benchmarks(FAST_JSON), tmp_path / "out")
    table = throughput_table(load_benchmarks(FAST_JSON))
    md = paths["md"].read_text().splitlines()
    assert md[0].startswith("| kind | task |") and len(md) == 2 + len(table)
    back = pd.read_csv(paths["csv"])
    assert list(back.columns) == list(table.columns) and len(back) == len(table)
    assert back["median_ms"].tolist() == pytest.approx(table["median_ms"].astype(float).tolist())
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_command_line_writes_the_files_or_one_error_line(tmp_path, capsys):
    assert benchjson_main([str(FAST_JSON), str(tmp_path / "out")]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["throughput.csv", "throughput.md", "throughput.png"]
    assert benchjson_main([str(tmp_path / "missing"), str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.startswith("error: no pytest-benchmark JSON at")


def test_table_markdown_formats_numbers_and_drops_empty_columns():
    md = table_markdown(pd.DataFrame({"a": [1234.5, 0.012345], "b": [math.nan, math.nan], "c": ["x|y", "z"]}))
    assert md.splitlines() == ["| a | c |", "|---|---|", "| 1,234 | x\\|y |", "| 0.0123 | z |"]


def test_a_directory_loads_every_file_and_the_table_keeps_the_newest_run(tmp_path):
    newer = json.loads(FAST_JSON.read_text())
    newer["datetime"] = "2999-01-01T00:00:00+00:00"
    for bench in newer["benchmarks"]:
        bench["stats"]["median"] *= 2
    shutil.copy(FAST_JSON, tmp_path / "a.json")
    (tmp_path / "b.json").write_text(json.dumps(newer))
    df = load_benchmarks(tmp_path)
    assert len(df) == 2 * len(RAW["benchmarks"]) and set(df["file"]) == {"a.json", "b.json"}
    table = throughput_table(df)
    assert len(table) == len(RAW["benchmarks"])
    assert sorted(table["median_ms"]) == pytest.approx(sorted(2e3 * b["stats"]["median"] for b in RAW["benchmarks"]))


@pytest.mark.parametrize("content, message", [
    (None, "no pytest-benchmark JSON"),
    ("{not json", "not a readable JSON file"),
    ('{"machine_info": {}}', "not pytest-benchmark output"),
    ("[1, 2]", "not pytest-benchmark output"),
])
def test_bad_benchmark_files_raise_one_clear_error(tmp_path, content, message):
    target = tmp_path / "bench"
    if content is not None:
        target.mkdir()
        (target / "x.json").write_text(content)
    with pytest.raises(StoreError, match=message):
        load_benchmarks(target)


def test_results_without_step_benchmarks_are_refused_by_table_and_figure(tmp_path):
    df = load_benchmarks(FAST_JSON).drop(columns=["kind"])
    with pytest.raises(StoreError, match="no 'kind'"):
        throughput_table(df)
    with pytest.raises(StoreError, match="no train-step benchmarks"):
        throughput_figure(df, tmp_path / "f.png")


# --- optimizer state bytes (exact) and peak step memory ------------------------------------------

# Each registry entry declares its state: ``state_per_param`` tensors the size of each parameter
# (row and column factors for a factored entry's matrices), a scalar ``step`` counter and other
# scalars per parameter tensor (``OptimizerSpec.state_size`` turns that into numbers).

@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("impl", ["forloop", "foreach", "fused"])
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_optimizer_state_bytes_are_exact_multiples_of_the_parameter_bytes(name, impl, dtype):
    spec = get_spec(name)
    if (impl == "fused" and not spec.fused) or (impl == "foreach" and not spec.foreach):
        pytest.skip(f"{name} has no {impl} implementation")
    model = build_task({"name": "tiny_mlp", "n": 10, "n_val": 1, "n_test": 1}).make_model(0).to(dtype)
    step, opt, _ = optimizer_step(model, name, impl, torch.device("cpu"))
    step()
    tensors = list(model.parameters())
    elements, scalars = spec.state_size([p.shape for p in tensors])
    # the scalars (step counters, NAdam's μ product) are float32 whatever the parameters' dtype
    assert state_bytes(opt) == {"state_bytes": elements * tensors[0].element_size(), "step_bytes": 4 * scalars}


def _spec(task, batch_size: int, k: int) -> RunSpec:
    return RunSpec(task=task.name, optimizer="sgd", hparams={}, lr=0.01, batch_size=batch_size,
                   accumulation_steps=k, eval=EvalSpec(points=2))


def test_accumulation_lowers_the_peak_memory_of_a_step():
    """A shuffled batch of 2048 rows × 256 features copies 2 MiB of inputs; 8 micro-batches copy
    and keep activations for 256 rows at a time, so their step peaks far lower."""
    task = build_task({"name": "regression", "n": 4096, "dim": 256, "n_val": 1, "n_test": 1})
    full, micro = (peak_step_bytes(training_step(task, _spec(task, 2048, k))) for k in (1, 8))
    batch_bytes = 2048 * 256 * 4
    assert batch_bytes <= full < 2 * batch_bytes
    assert micro < full / 4


def test_peak_of_a_step_does_not_count_what_lives_between_steps():
    """Full batch without accumulation: a slice, no copy of the data, so the peak is the step's
    small temporaries and gradients, far below the 4 MiB dataset that is live throughout."""
    task = build_task({"name": "regression", "n": 4096, "dim": 256, "n_val": 1, "n_test": 1})
    setup = training_step(task, _spec(task, 4096, 1))
    assert 257 * 4 <= peak_step_bytes(setup) < 4096 * 256 * 4 / 8


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_peak_agrees_with_the_cpu_measure():
    """max_memory_allocated on CUDA and the allocator events on CPU count the same tensors, up to
    CUDA's 512-byte block rounding and kernels that allocate differently: same magnitude."""
    task = build_task({"name": "regression", "n": 4096, "dim": 256, "n_val": 1, "n_test": 1})
    cpu = peak_step_bytes(training_step(task, _spec(task, 2048, 1)))
    cuda = peak_step_bytes(training_step(task, dataclasses.replace(_spec(task, 2048, 1), device="cuda")))
    assert cpu / 2 <= cuda <= 2 * cpu + 64 * 512


# --- the grid and its environment variables -------------------------------------------------------

def test_grid_defaults_to_full_and_fast_is_small():
    full, fast = grid_from_env({}), grid_from_env({"OPTSUITE_BENCH": "fast"})
    assert full.name == "full" and set(full.optimizers) == set(OPTIMIZERS)
    assert len(fast.train_cells()) < len(full.train_cells()) and fast.threads == 1
    ids = [c.id for c in fast.accumulation_cells()]
    assert ids == ["fashion_mnist-sgd-b512", "fashion_mnist-sgd-b512x8", "fashion_mnist-sgd-b64"]
    assert all(c.impl != "fused" for c in full.opt_cells() if c.optimizer == "rmsprop")  # torch has none


def test_grid_is_narrowed_by_environment_variables():
    g = grid_from_env({"OPTSUITE_BENCH": "fast", "OPTSUITE_BENCH_TASKS": "tiny_mlp", "OPTSUITE_BENCH_OPTIMIZERS":
                       "adamw", "OPTSUITE_BENCH_BATCHES": "4,full", "OPTSUITE_BENCH_THREADS": "2",
                       "OPTSUITE_BENCH_DEVICE": "cpu"})
    assert [c.id for c in g.train_cells()] == ["tiny_mlp-adamw-b4", "tiny_mlp-adamw-bfull"]
    assert g.accumulation == () and g.opt_models == ("tiny_mlp",) and g.threads == 2 and g.device == "cpu"


@pytest.mark.parametrize("env, message", [
    ({"OPTSUITE_BENCH": "huge"}, "OPTSUITE_BENCH='huge' is invalid; valid: fast, full"),
    ({"OPTSUITE_BENCH_TASKS": "cifar"}, "valid: regression, tiny_mlp"),
    ({"OPTSUITE_BENCH_OPTIMIZERS": "adam,no_such_optimizer"}, "valid: sgd, momentum"),
    ({"OPTSUITE_BENCH_BATCHES": "0,8"}, "OPTSUITE_BENCH_BATCHES='0,8' is invalid"),
    ({"OPTSUITE_BENCH_THREADS": "two"}, "OPTSUITE_BENCH_THREADS='two' is invalid"),
    ({"OPTSUITE_BENCH_DEVICE": "tpu"}, "OPTSUITE_BENCH_DEVICE: device='tpu' is invalid"),
])
def test_bad_grid_settings_raise_one_clear_error(env, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        grid_from_env(env)


def test_presets_name_only_known_tasks_and_optimizers():
    from suite.tasks import TASKS

    for grid in GRIDS.values():
        assert set(grid.train) <= set(TASKS) and set(grid.optimizers) <= set(OPTIMIZERS)
        assert {m.split(":")[0] for m in grid.opt_models} <= set(TASKS)
