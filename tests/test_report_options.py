"""Report options: every bad option is one clear ConfigError naming the valid choices, and the
layers (conf/report.yaml, the study's report section, its declared targets, the command line)
stack in that order."""
from __future__ import annotations

import pytest

from suite.report.build import load_config, main
from suite.types import ConfigError


@pytest.mark.parametrize("overrides, message", [
    (["colour=red"], "unknown report option"),
    (["targets.regression.metric=loss"], "unknown metric"),
    (["final_metrics.regression=[accuracy]"], "unknown metric"),
    (["figures.formats"], "key=value"),
    (["figures.formats=[jpeg]"], "figures.formats"),
    (["bootstrap.resamples=100"], "bootstrap was replaced by statistics"),
    (["statistics.alpha=1.5"], "statistics.alpha"),
    (["statistics.confidence=0"], "statistics.confidence"),
    (["statistics.level=0.9"], "valid: statistics.confidence, statistics.alpha"),
    (["science.resamples=-1"], "science.resamples"),
    (["sensitivity_metric.regression=loss"], "unknown metric"),
])
def test_bad_report_options_are_config_errors(tmp_path, overrides, message):
    (tmp_path / "runs").mkdir()
    with pytest.raises(ConfigError, match=message):
        main([str(tmp_path), *overrides])


def test_study_config_report_section_and_command_line_layer(tmp_path):
    (tmp_path / "config.yaml").write_text("report:\n  targets:\n    tiny_mlp: {metric: val_loss, value: 0.5}\n"
                                          "  sensitivity_tolerance: 0.2\n")
    cfg = load_config(tmp_path, ["sensitivity_tolerance=0.3"])
    assert cfg.targets.tiny_mlp.value == 0.5 and cfg.targets.regression.relative == 1e-3
    assert cfg.sensitivity_tolerance == 0.3


def test_declared_study_targets_win_over_report_options_and_lose_to_the_command_line(tmp_path):
    (tmp_path / "config.yaml").write_text(
        "study:\n  protocol: target\n  targets:\n    tiny_mlp: {metric: val_loss, value: 0.2}\n"
        "report:\n  targets:\n    tiny_mlp: {metric: val_loss, value: 0.5}\n")
    assert load_config(tmp_path).targets.tiny_mlp.value == 0.2
    assert load_config(tmp_path, ["targets.tiny_mlp.value=0.3"]).targets.tiny_mlp.value == 0.3
