"""The figures' conventions on constructed frames: lines join only exact values; a cell's median
steps to target is exact, censored (drawn at its bound) or failed (most seeds diverged, never at the
cap); a log axis spans what finished; the training loss says which examples it was computed on;
throughput whiskers only where seeds had their own clocks; one performance-profile problem per
update."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from suite.report.data.metrics import protocol_parts
from suite.report.figures import curves as curves_module
from suite.report.figures import marks
from suite.report.figures.curves import FigureOptions, curves, label
from suite.report.figures.scaling import cell_medians, throughput, throughput_spread
from suite.report.figures.style import plt
from suite.report.readme import scaling_cells


def test_lines_join_only_consecutive_exact_values():
    fig, ax = plt.subplots()
    marks.segments(ax, [1, 2, 4, 8, 16, 32], [10, 5, 3, 2, 1, 0.5], [True, True, False, True, True, False], "k")
    assert [list(line.get_xdata()) for line in ax.lines] == [[1, 2], [8, 16]]
    plt.close(fig)


def _runs(cell: str, steps, reached, diverged, cap=100.0) -> pd.DataFrame:
    n = len(steps)
    return pd.DataFrame({"run_id": [f"{cell}{i}" for i in range(n)], "steps_to_target": np.where(reached, steps, np.nan),
                         "reached": reached, "diverged": diverged,
                         "cap_steps": np.where(reached, np.nan, np.where(diverged, 7.0, cap))})


def test_a_cell_is_exact_censored_or_failed_and_a_failure_is_never_at_the_cap():
    exact = _runs("a", [10, 12, 14, 16, 0], [True] * 4 + [False], [False] * 5)
    censored = _runs("b", [10, 12, 0, 0, 0], [True, True, False, False, False], [False] * 5)
    failed = _runs("c", [10, 12, 0, 0, 0], [True, True, False, False, False], [False, False, True, True, True])
    runs = pd.concat([exact, censored, failed], ignore_index=True)
    cells = pd.DataFrame({"run_ids": [",".join(r["run_id"]) for r in (exact, censored, failed)]}, index=[5, 6, 7])
    med = cell_medians(cells, runs, FigureOptions())
    assert list(med["status"]) == ["exact", "censored", "failed"]
    assert med.loc[5, "median"] == 14 and med.loc[6, "median"] == 100.0  # the censored median at its bound, the cap
    assert math.isinf(med.loc[7, "median"])  # diverged seeds would never reach it: not drawn at a cap
    assert (med.loc[5, "lo"], med.loc[6, "hi"]) == (10, math.inf)  # order statistics: [min, max] for 5 seeds


def test_a_log_axis_spans_the_runs_that_finished(tmp_path, monkeypatch):
    config = json.dumps({"eval": {"train_subset": 10000}})
    rows = pd.DataFrame({"run_id": ["ok"] * 3 + ["bad"] * 3, "step": [1, 2, 3] * 2, "epoch": [1.0, 2.0, 3.0] * 2,
                         "train_loss": [1.0, 0.5, 0.2, 1.0, 50.0, 1e9], "diverged": [False] * 3 + [True] * 3,
                         "batch_label": "8", "batch_size": 8, "accumulation_steps": 1, "sampling": "shuffle",
                         "accumulation_reduction": "mean", "optimizer": "sgd", "seed": [0] * 3 + [1] * 3,
                         "config": config})
    notes: list[str] = []
    drawn = {}
    monkeypatch.setattr(curves_module, "save", lambda fig, stem, opts: drawn.setdefault("ylim", fig.axes[0].get_ylim()))
    curves(rows, "train_loss", "epoch", tmp_path / "c", FigureOptions(formats=("png",), dpi=40), notes)
    assert any("1 diverged run(s)" in n for n in notes)
    assert drawn["ylim"] == pytest.approx((0.2 / 1.25, 1.0 * 1.25))  # not stretched to 1e9 by the diverged run
    assert label("train_loss", rows) == "training loss (first 10,000 training examples)"
    assert label("train_loss", rows.assign(config="{}")) == "training loss (full training set)"
    plt.close("all")


def test_throughput_whiskers_only_where_seeds_had_their_own_clocks():
    runs = pd.DataFrame({"batch_label": ["8"] * 4 + ["64"] * 4, "optimizer": "adam",
                         "stack_size": [10] * 4 + [1] * 4, "throughput": [5.0] * 4 + [5.0, 5.5, 4.8, 5.1]})
    spread = throughput_spread(runs)
    assert not spread[("8", "adam")] and spread[("64", "adam")]


def test_an_accumulation_cell_is_the_same_problem_as_its_batch():
    cells = pd.DataFrame({"optimizer": ["adam"] * 3, "batch_size": [1024, 1024, 64], "accumulation_steps": [1, 16, 1],
                          "sampling": "shuffle", "accumulation_reduction": "mean"})
    assert sorted(scaling_cells(cells)["accumulation_steps"].tolist()) == [1, 1]
    assert len(scaling_cells(cells)) == 2


def test_each_part_is_drawn_on_its_own_protocol():
    """A run's protocol comes from its config: trained with a target, the target part, else budget."""
    frame = pd.DataFrame({"config_key": [json.dumps({"target": {"metric": "val_loss", "value": 0.1}}),
                                         json.dumps({"target": None}), json.dumps({})]})
    parts = protocol_parts(frame)
    assert list(parts) == ["target", "budget"] and list(parts["budget"].index) == [1, 2]
    assert list(protocol_parts(frame.iloc[1:])) == ["budget"]


def test_the_throughput_figure_is_the_same_each_time_and_leaves_numpy_alone(tmp_path):
    runs = pd.DataFrame({"batch_label": ["1 (SGD)"] * 6 + ["32"] * 6, "optimizer": (["sgd"] * 3 + ["adam"] * 3) * 2,
                         "batch_size": [1] * 6 + [32] * 6, "accumulation_steps": 1, "sampling": "random",
                         "accumulation_reduction": "mean", "throughput": np.linspace(100.0, 900.0, 12),
                         "stack_size": 1})
    np.random.seed(7)
    expected_next = np.random.get_state()[1][:4].copy()
    written = [throughput(runs, tmp_path / f"t{k}", FigureOptions())[0] for k in range(2)]
    assert written[0].read_bytes() == written[1].read_bytes()
    assert (np.random.get_state()[1][:4] == expected_next).all()
