"""The study's wall time over several invocations (a resume, processes sharing a directory)."""
from __future__ import annotations

import json

from omegaconf import OmegaConf

from suite.study.context import record_wall_time, union_seconds, write_context


def test_wall_time_is_the_union_of_finished_invocations():
    runs = [{"started": "2026-01-01T10:00:00+00:00", "seconds": 600.0},
            {"started": "2026-01-01T10:05:00+00:00", "seconds": 600.0},  # a second process, 5 min later
            {"started": "2026-01-01T12:00:00+00:00", "seconds": 60.0},  # a resume
            {"started": "2026-01-01T11:00:00+00:00", "seconds": None}]  # interrupted: its time is unknown
    assert union_seconds(runs) == 900.0 + 60.0


def test_each_invocation_is_recorded_and_an_interrupted_one_stays_open(tmp_path):
    cfg = OmegaConf.create({"results_dir": str(tmp_path), "device": "cpu", "study": {"workers": 1}})
    write_context(cfg, "2026-01-01T10:00:00+00:00")  # killed: never records its time
    write_context(cfg, "2026-01-01T11:00:00+00:00")
    record_wall_time(tmp_path, "2026-01-01T11:00:00+00:00", 120.0)
    env = json.loads((tmp_path / "environment.json").read_text())
    assert [i["seconds"] for i in env["invocations"]] == [None, 120.0] and env["wall_seconds"] == 120.0
    write_context(cfg, "2026-01-01T12:00:00+00:00")  # a later resume keeps the study's record
    env = json.loads((tmp_path / "environment.json").read_text())
    assert len(env["invocations"]) == 3 and env["wall_seconds"] == 120.0


def test_a_total_recorded_before_invocations_were_kept_is_counted_whole(tmp_path):
    (tmp_path / "environment.json").write_text(json.dumps({"wall_seconds": 1000.0, "git_commit": "abc"}))
    cfg = OmegaConf.create({"results_dir": str(tmp_path), "device": "cpu", "study": {"workers": 1}})
    write_context(cfg, "2026-01-01T11:00:00+00:00")
    record_wall_time(tmp_path, "2026-01-01T11:00:00+00:00", 30.0)
    env = json.loads((tmp_path / "environment.json").read_text())
    assert env["wall_seconds"] == 1030.0 and env["invocations"][0] == {"started": None, "git_commit": "abc",
                                                                      "seconds": 1000.0}


def test_the_report_says_how_the_wall_time_was_assembled():
    from suite.report.readme import _invocations
    env = {"invocations": [{"started": None, "seconds": 10.0, "git_commit": "a"},
                           {"started": "2026-01-01T11:00:00+00:00", "seconds": None, "git_commit": "b"},
                           {"started": "2026-01-01T12:00:00+00:00", "seconds": 5.0, "git_commit": "b"}]}
    assert _invocations(env) == ", over 3 invocations (1 interrupted, not counted) at commits a, b"
    assert _invocations({"invocations": [{"started": "2026-01-01T12:00:00+00:00", "seconds": 5.0}]}) == ""


def test_each_invocation_records_where_its_time_went_and_the_study_sums_them(tmp_path):
    from suite.report.data.protocol import time_split_lines
    from suite.study.time_split import invocation_split, with_report

    cells = [{"tuning_seconds": 10.0, "final_seconds": 2.0, "phases": {"steps": 6.0, "evaluation": 3.0, "storage": 0.5}},
             {"tuning_seconds": 5.0, "final_seconds": 1.0, "phases": {"steps": 3.0, "evaluation": 1.0, "storage": 0.25}}]
    split = invocation_split(cells, 4.0, {"steps": 2.0, "target_replay": 1.0})
    assert split["seconds"] == {"tuning": 15.0, "final_runs": 3.0, "extras": 4.0, "report": None}
    assert split["training_seconds"] == {"steps": 11.0, "evaluation": 4.0, "storage": 0.8, "target_replay": 1.0}
    cfg = OmegaConf.create({"results_dir": str(tmp_path), "device": "cpu", "study": {"workers": 1}})
    for started in ("2026-01-01T10:00:00+00:00", "2026-01-01T11:00:00+00:00", "2026-01-01T12:00:00+00:00"):
        write_context(cfg, started)
        if not started.startswith("2026-01-01T11"):  # the second is interrupted: its split is not counted
            record_wall_time(tmp_path, started, 30.0, with_report(split, 7.0))
    env = json.loads((tmp_path / "environment.json").read_text())
    assert env["invocations"][0]["time_split"]["seconds"]["report"] == 7.0
    assert env["time_split"]["seconds"] == {"tuning": 30.0, "final_runs": 6.0, "extras": 8.0, "report": 14.0}
    assert env["time_split"]["training_seconds"]["steps"] == 22.0
    (parts, label), (phases, text) = time_split_lines(env["time_split"])
    assert label.startswith("tuning 30.0 s, final runs 6.0 s, extras 8.0 s, report") and "storage 1.6 s" in text
