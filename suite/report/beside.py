"""Part of a report computed beside the rest, in a forked child process.

Once a report's context is built its sections are independent: each reads the context and writes
its own tables and figures. Where this process may use more than one core, :func:`beside` forks a
child that computes some of them (writing their figures itself, the context's renderer left to this
process) while this process computes the others; the child's result (the sections' Markdown) comes
back through a pipe, and an error in it is raised here. The child dies with this process (it holds
copies of its file locks, as the renderer's workers do: :func:`suite.report.figures.render.die_with`).
On one core, or where the platform cannot fork, the work is done here when its result is asked for.
"""
from __future__ import annotations

import multiprocessing
import os
import sys
from typing import Any, Callable

from suite.report.figures.render import die_with
from suite.types import usable_cores


class Beside:
    """``fn(*args)`` running in a forked child (or, without one, when :meth:`result` is asked for)."""

    def __init__(self, fn: Callable[..., Any], *args: Any):
        self.fn, self.args, self.child = fn, args, None
        if usable_cores() > 1 and "fork" in multiprocessing.get_all_start_methods():
            context = multiprocessing.get_context("fork")
            self.receive, send = context.Pipe(duplex=False)
            self.child = context.Process(target=_child, args=(os.getpid(), send, fn, args), daemon=True)
            self.child.start()
            send.close()

    def result(self) -> Any:
        """The call's value (waiting for the child); its error raised here."""
        if self.child is None:
            return self.fn(*self.args)
        try:
            ok, value = self.receive.recv()
        except EOFError:
            self.child.join()
            raise RuntimeError(f"a report section's process ended without a result (exit code "
                               f"{self.child.exitcode})") from None
        self.child.join()
        if not ok:
            raise value
        return value

    def cancel(self) -> None:
        """Stop the child (this process failed: nothing it writes is wanted)."""
        if self.child is not None and self.child.is_alive():
            self.child.kill()
            self.child.join()


def _child(parent: int, send, fn: Callable[..., Any], args: tuple) -> None:
    die_with(parent)
    try:
        outcome = (True, fn(*args))
    except BaseException as error:  # raised again in the parent
        outcome = (False, error)
    try:
        send.send(outcome)
    except Exception:  # an error (or value) that does not pickle: its text
        send.send((False, RuntimeError(repr(outcome[1]))))
    send.close()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # no exit handlers: those of this process's copy of the parent (its renderer's) are not its own
