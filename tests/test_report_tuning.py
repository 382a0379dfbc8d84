"""Edge-of-range and fallback flags from the tuner's exports and the trials, on hand-made files."""
from __future__ import annotations

import json

import pandas as pd
from test_metrics import TARGETS, hand_run

from suite.report.data.metrics import TUNED_CELL, annotate, summarize_runs
from suite.report.data.trials import trial_stats
from suite.report.data.tuned import link, read_exports
from suite.report.tables.tuning import attach, edge_reason, flag_cells, tuned_lines, tuning_table


def test_edge_reason_names_the_bound_within_a_quarter_decade():
    assert edge_reason(0.09, 1e-4, 0.1).startswith("optimum lr 0.09 within 0.25 decade of the upper bound 0.1")
    assert "lower bound 0.0001" in edge_reason(1.5e-4, 1e-4, 1.0)
    assert edge_reason(0.01, 1e-4, 1.0) == ""


def _summary(diverged_all: bool) -> pd.DataFrame:
    runs = [hand_run({"val_loss": [2, 1e4 if diverged_all else 0.5]}, steps=(0, 5), lr=lr, trial=i,
                     diverged=diverged_all) for i, lr in enumerate((0.01, 0.1))]
    return summarize_runs(annotate(pd.concat(runs, ignore_index=True)), TARGETS)


def _trials(diverged_all: bool) -> pd.DataFrame:
    return trial_stats(_summary(diverged_all))


def load_tuned(root, notes: list[str], diverged_all: bool = False) -> pd.DataFrame:
    """The exports under ``root``, linked to the hand-made trials' cell (study ``s``)."""
    return tuned_lines(link(read_exports(root, notes), _summary(diverged_all)))


def test_flags_from_exports_with_and_without_the_new_keys(tmp_path):
    (tmp_path / "tuned").mkdir()
    (tmp_path / "tuned" / "s.json").write_text(json.dumps({"cell": "s", "lr": 0.095, "lr_range": [1e-4, 0.1]}))
    notes: list[str] = []
    flagged = attach(_trials(False), load_tuned(tmp_path, notes)).iloc[0]
    assert flagged["edge"].startswith("optimum lr 0.095 within 0.25 decade of the upper bound")  # computed
    assert flagged["lr_source"] == "tuned" and not flagged["lr_fallback"] and not notes
    (tmp_path / "tuned" / "s.json").write_text(json.dumps(
        {"cell": "s", "lr": 0.095, "lr_range": [1e-4, 1.0], "lr_range_initial": [1e-4, 0.1], "edge": None}))
    (tmp_path / "tuned" / "broken.json").write_text("{not json")
    widened = attach(_trials(False), load_tuned(tmp_path, notes)).iloc[0]
    assert widened["edge"] == "" and widened["lr_range"] == "0.0001–1" and widened["lr_range_initial"] == "0.0001–0.1"
    assert len(notes) == 1 and "broken.json" in notes[0]


def test_a_cell_whose_every_trial_diverged_is_a_registry_fallback(tmp_path):
    trials = attach(_trials(True), load_tuned(tmp_path, []))
    assert trials["lr_fallback"].all() and trials["lr_source"].iloc[0].startswith("registry default")
    cells = pd.DataFrame([{**trials.iloc[0][list(TUNED_CELL)].to_dict(), "lr": 0.05}])
    flagged = flag_cells(cells, trials).iloc[0]
    assert flagged["lr_fallback"] and flagged["edge"] == ""
    table = tuning_table(trials, 0.1)
    assert table.text["lr source"].iloc[0].startswith("registry default")
