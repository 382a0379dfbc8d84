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
