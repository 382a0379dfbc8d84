"""``threads=auto`` (the default) and explicit counts: the choice, the ceiling, the row, bad input."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from suite.cli import guarded
from suite.run.execute import execute
from suite.run.prepare import prepare
from suite.train.threads import (AUTO_WORK_CUTOVER, auto_threads, available_threads, capped_threads,
                                 check_threads, limit_cores, step_work, use_threads)
from suite.types import ConfigError


@pytest.fixture
def restore_threads(monkeypatch):
    before = torch.get_num_threads()
    yield monkeypatch
    torch.set_num_threads(before)


def test_the_default_is_auto(compose):
    assert compose().threads == "auto"


def test_step_work_is_forward_flops_times_the_micro_batch(compose):
    """tiny_mlp 1-10-1: 2·(1·10 + 10·1) = 40 FLOPs a sample; the micro-batch, not the batch, multiplies."""
    prepared = prepare(compose("task=tiny_mlp", "batch_size=32"))
    assert step_work(prepared.task, prepared.spec) == 40 * 32
    accumulated = dataclasses.replace(prepared.spec, accumulation_steps=4)
    assert step_work(prepared.task, accumulated) == 40 * 8


def test_auto_gives_small_steps_one_thread_and_big_ones_every_available_core(compose, restore_threads):
    prepared = prepare(compose("task=tiny_mlp", "batch_size=full"))
    task, spec = prepared.task, prepared.spec
    assert auto_threads(task, spec) == 1
    restore_threads.setattr("suite.train.threads.AUTO_WORK_CUTOVER", step_work(task, spec))
    assert auto_threads(task, spec) == available_threads()
    restore_threads.setenv("OMP_NUM_THREADS", "1")  # the user's ceiling is respected by auto ...
    assert auto_threads(task, spec) == 1
    assert use_threads(2, task, spec) == 2 == torch.get_num_threads()  # ... and an explicit count overrides it
    assert AUTO_WORK_CUTOVER > 40 * 1000  # the tiny tasks never get a second thread, even at full batch


def test_auto_is_one_thread_off_the_cpu(compose):
    prepared = prepare(compose("task=tiny_mlp"))
    assert auto_threads(prepared.task, dataclasses.replace(prepared.spec, device="cuda")) == 1


def test_a_worker_share_caps_counts_and_sets_the_ceiling_of_auto(restore_threads):
    assert capped_threads(4, 2) == 2 and capped_threads(None, 3) == 3 and capped_threads(1, 8) == 1
    assert capped_threads("auto", 1) == 1 and capped_threads("auto", 2) == "auto"
    restore_threads.setenv("OMP_NUM_THREADS", "6")
    limit_cores(2)
    assert available_threads() <= 2


@pytest.mark.parametrize("value", [0, -1, 2.5, "many", True, "AUTO"])
def test_bad_thread_counts_are_refused_with_the_valid_choices(value):
    with pytest.raises(ConfigError, match="give threads=auto .* or a positive integer"):
        check_threads(value)


def test_a_run_records_the_threads_it_used_and_bad_ones_exit_2_writing_nothing(compose, tmp_path, capsys,
                                                                                 restore_threads):
    common = ("task=tiny_mlp", "task.n=64", "budget.max_steps=4", "eval.points=2", "progress=false")
    torch.set_num_threads(2)
    frame = execute(compose(*common, f"results_dir={tmp_path / 'auto'}"), echo=lambda line: None)
    assert (frame["threads"] == 1).all()  # auto: a tiny step gets one thread, and the row says so
    with pytest.raises(SystemExit) as exit_:
        guarded(execute)(compose(*common, "threads=0", f"results_dir={tmp_path / 'bad'}"))
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1 and "threads=0 is not valid" in err
    assert not (tmp_path / "bad").exists()
