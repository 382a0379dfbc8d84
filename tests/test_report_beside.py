"""The report's sections computed beside the rest (suite.report.beside): a forked child's value and
errors come back to the report; a child that dies, or whose value does not pickle, fails it."""
from __future__ import annotations

import os
import threading

import pytest

from suite.report.beside import Beside
from suite.types import usable_cores

FORKS = usable_cores() > 1  # on one core the call runs in this process, when its result is asked for


def test_the_value_comes_back_from_another_process():
    assert Beside(pow, 2, 10).result() == 1024
    pid = Beside(os.getpid).result()
    assert (pid != os.getpid()) == FORKS


def test_an_error_in_the_child_is_raised_here_with_its_type_and_message():
    with pytest.raises(ValueError, match="no such section"):
        Beside(int, "no such section").result()


@pytest.mark.skipif(not FORKS, reason="a child process needs a second core")
def test_a_child_that_dies_fails_with_its_exit_code():
    with pytest.raises(RuntimeError, match="exit code 3"):
        Beside(os._exit, 3).result()


@pytest.mark.skipif(not FORKS, reason="a child process needs a second core")
def test_a_value_that_does_not_pickle_is_an_error_not_a_hang():
    with pytest.raises(RuntimeError, match="lock"):
        Beside(threading.Lock).result()


@pytest.mark.skipif(not FORKS, reason="a child process needs a second core")
def test_cancel_stops_the_child():
    beside = Beside(threading.Event().wait, 60)
    beside.cancel()
    assert not beside.child.is_alive()
