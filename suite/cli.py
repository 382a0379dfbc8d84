"""Entry points. Each Hydra one is a thin ``@hydra.main`` wrapper around a plain function of ``cfg``
(tests compose configs and call the plain function; ``@hydra.main`` would parse pytest's argv).
Each entry point imports what its command needs when it runs, so ``suite-report`` starts without
torch and ``suite-train`` without the report's plotting stack.
"""
from __future__ import annotations

import contextlib
import os
import shlex
import sys
from pathlib import Path
from typing import Callable

import hydra
from omegaconf import DictConfig

from suite.command_line import check_command_line
from suite.store.locks import REASONS, io_error
from suite.types import COMMAND_VARIABLE, SuiteError

CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")


def guarded(fn):
    """Run ``fn``; a :class:`SuiteError` (or a write the disk refused) becomes one line on stderr and
    exit status 2."""

    def wrapper(cfg: DictConfig):
        try:
            return fn(cfg)
        except SuiteError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
        except OSError as e:
            if e.errno not in REASONS:  # not a full, read-only or forbidden disk: a bug, keep its traceback
                raise
            print(f"error: {io_error(e, 'writing the results')}", file=sys.stderr)
            sys.exit(2)
        except KeyboardInterrupt:
            print("interrupted; stored runs are kept, and the next run of the same command redoes the work in "
                  "flight with the same parameters.", file=sys.stderr)
            sys.exit(130)

    return wrapper


def console_script(name: str, config_name: str, run: Callable[[DictConfig], object]) -> Callable[[], None]:
    """The console script ``name``: its command line recorded (messages name what the user ran, in
    every process it starts), checked as Hydra will compose it (one line and exit status 2 for what
    Hydra would refuse in its own words, see :mod:`suite.command_line`), then run by ``@hydra.main``."""

    @hydra.main(config_path=CONF_DIR, config_name=config_name, version_base="1.3")
    def hydra_main(cfg: DictConfig) -> None:
        run(cfg)

    def main() -> None:
        with command_recorded(name, sys.argv[1:]):
            guarded(lambda _: check_command_line(CONF_DIR, config_name, sys.argv[1:]))(None)
            hydra_main()

    return main


@contextlib.contextmanager
def command_recorded(name: str, args: list[str]):
    """The command line in the environment while the command runs (its worker processes inherit it)."""
    before = os.environ.get(COMMAND_VARIABLE)
    os.environ[COMMAND_VARIABLE] = shlex.join([name, *args])
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(COMMAND_VARIABLE, None)
        else:
            os.environ[COMMAND_VARIABLE] = before


def _train(cfg: DictConfig) -> None:
    from suite.run.execute import execute

    guarded(execute)(cfg)


def _tune(cfg: DictConfig) -> None:
    from suite.tune.tuner import tune_cell

    guarded(lambda c: tune_cell(c, survey=True))(cfg)


def _study(cfg: DictConfig) -> None:
    """``suite-study``: the study and its report; with ``study.estimate=true`` only its predicted
    wall time (``suite.study.cost``: nothing is trained for the study, nothing written)."""
    from suite.study.cost import estimate
    from suite.study.runner import study_and_report

    guarded(estimate if cfg.study.get("estimate") else study_and_report)(cfg)


def _check(cfg: DictConfig) -> None:
    """``suite-check-optimizer optimizer=<name>``: the conformance checks and a one-screen verdict;
    exit 0 pass, 1 fail, 2 bad input (e.g. a user's optimizer YAML that names no importable class)."""
    from suite.run.conformance import check_command

    sys.exit(guarded(check_command)(cfg))


train_main = console_script("suite-train", "config", _train)
tune_main = console_script("suite-tune", "config", _tune)
study_main = console_script("suite-study", "study_app", _study)
check_main = console_script("suite-check-optimizer", "config", _check)


def report_main(argv: list[str] | None = None) -> None:
    """``suite-report <results_dir> [key=value ...]``. argparse rather than Hydra: users type the
    results dir as a positional argument, and a report composes no run config (its options come
    from conf/report.yaml, merged with OmegaConf; overrides are key=value as in Hydra)."""
    from suite.report.build import main

    args = sys.argv[1:] if argv is None else list(argv)
    with command_recorded("suite-report", args):
        guarded(lambda _: main(args))(None)
