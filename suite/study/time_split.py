"""Where a study's time goes, recorded in ``environment.json`` (each invocation's ``time_split``, and
the study's, summed over its finished invocations) and stated by the report.

* ``seconds``: tuning (every cell's trials), final runs, extras and the report. Cells run one after
  another in one process, so there these add up to the invocation's wall time (less set-up);
  with ``study.workers`` > 1 or a cluster, cells run side by side and the cells' parts are
  worker-seconds, which exceed the wall time.
* ``training_seconds``: the time of the cells' and extras' training by phase (``suite.train.timing``):
  steps, evaluation, target replay, storage.

The report is written before its own time is known: an invocation's ``report`` seconds are filled
in when it is recorded, and the report states the split without them.
"""
from __future__ import annotations

from typing import Any

PARTS = ("tuning", "final_runs", "extras", "report")


def invocation_split(summaries: list[dict[str, Any]], extras_seconds: float,
                     extras_phases: dict[str, float]) -> dict[str, Any]:
    """This invocation's split from its cells' summaries (``suite.study.cell.run_cell``) and its extras."""
    cells = [s for s in summaries if s]
    phases: dict[str, float] = dict(extras_phases)
    for s in cells:
        for name, value in (s.get("phases") or {}).items():
            phases[name] = phases.get(name, 0.0) + value
    seconds = {"tuning": sum(s.get("tuning_seconds", 0.0) for s in cells),
               "final_runs": sum(s.get("final_seconds", 0.0) for s in cells), "extras": extras_seconds,
               "report": None}
    return {"seconds": {k: None if v is None else round(v, 1) for k, v in seconds.items()},
            "training_seconds": {k: round(v, 1) for k, v in phases.items()}}


def with_report(split: dict[str, Any] | None, report_seconds: float) -> dict[str, Any] | None:
    if split is None:
        return None
    return {**split, "seconds": {**split["seconds"], "report": round(report_seconds, 1)}}


def study_split(invocations: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The split summed over the finished invocations that recorded one (None: none did)."""
    splits = [i["time_split"] for i in invocations if i.get("seconds") is not None and i.get("time_split")]
    if not splits:
        return None
    out: dict[str, dict[str, float | None]] = {"seconds": {}, "training_seconds": {}}
    for split in splits:
        for group in out:
            for name, value in (split.get(group) or {}).items():
                if value is not None:
                    out[group][name] = round((out[group].get(name) or 0.0) + value, 1)
    return out
