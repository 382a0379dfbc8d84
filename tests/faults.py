"""Fault injection for the crash tests: a real ``kill -9`` at a chosen point of the work.

The work runs in a forked child (cheap: torch and the suite are already imported) that patches a
hook into itself and SIGKILLs itself when the hook is reached, so no cleanup runs, as with
``kill -9``. (Plain helpers, imported by the crash tests of tuning and of studies.)
"""
from __future__ import annotations

import os
import signal
import traceback

from suite.tune import trials


def die(*_):
    os.kill(os.getpid(), signal.SIGKILL)


def killed_in_child(work, install) -> None:
    """Run ``work`` in a forked child with ``install()``'s kill point; it must die by SIGKILL."""
    pid = os.fork()
    if pid == 0:  # the child: never returns to pytest
        code = 0
        try:
            install()
            work()
        except BaseException:
            traceback.print_exc()
            code = 3
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, \
        f"the kill point was never reached (exit status {os.waitstatus_to_exitcode(status)})"


def on_call(obj, name: str, n: int, action=die, patch=setattr):
    """Patch ``obj.name`` so that its ``n``-th call runs ``action`` first."""
    original, calls = getattr(obj, name), [0]

    def patched(*args, **kwargs):
        calls[0] += 1
        if calls[0] == n:
            action(*args)
        return original(*args, **kwargs)

    patch(obj, name, patched)


def during_eval(batch: int, n: int, action=die, patch=setattr):
    """Kill (or ``action``) at the ``n``-th evaluation of the ``batch``-th stacked trial batch."""
    original, batches = trials.train_many, [0]

    def train_many(task, specs, on_eval=None, **kw):
        batches[0] += 1
        calls = [0]

        def hooked(k, row):
            calls[0] += 1
            if batches[0] == batch and calls[0] == n:
                action()
            return on_eval(k, row)
        return original(task, specs, on_eval=hooked, **kw)

    patch(trials, "train_many", train_many)
