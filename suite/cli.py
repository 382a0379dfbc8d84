"""Entry points. Each Hydra one is a thin ``@hydra.main`` wrapper around a plain function of ``cfg``
(tests compose configs and call the plain function; ``@hydra.main`` would parse pytest's argv).
Each entry point imports what its command needs when it runs, so ``suite-report`` starts without
torch and ``suite-train`` without the report's plotting stack.
"""
from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from suite.store.locks import REASONS, io_error
from suite.types import SuiteError

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


@hydra.main(config_path=CONF_DIR, config_name="config", version_base="1.3")
def train_main(cfg: DictConfig) -> None:
    from suite.run.execute import execute

    guarded(execute)(cfg)


@hydra.main(config_path=CONF_DIR, config_name="config", version_base="1.3")
def tune_main(cfg: DictConfig) -> None:
    from suite.tune.tuner import tune_cell

    guarded(tune_cell)(cfg)


@hydra.main(config_path=CONF_DIR, config_name="study_app", version_base="1.3")
def study_main(cfg: DictConfig) -> None:
    from suite.study.runner import study_and_report

    guarded(study_and_report)(cfg)


@hydra.main(config_path=CONF_DIR, config_name="config", version_base="1.3")
def _check(cfg: DictConfig) -> None:
    from suite.run.conformance import check_command

    _check.ran = True
    sys.exit(guarded(check_command)(cfg))


def check_main() -> None:
    """``suite-check-optimizer optimizer=<name>``: the conformance checks and a one-screen verdict;
    exit 0 pass, 1 fail, 2 bad input (e.g. a user's optimizer YAML that names no importable class).
    A command line Hydra refuses (an unknown optimizer name) is bad input too: its exit 1 becomes 2,
    so 1 always means a check failed."""
    _check.ran = False
    try:
        _check()
    except SystemExit as e:
        if not _check.ran and e.code == 1:
            sys.exit(2)
        raise


def report_main(argv: list[str] | None = None) -> None:
    """``suite-report <results_dir> [key=value ...]``. argparse rather than Hydra: users type the
    results dir as a positional argument, and a report composes no run config (its options come
    from conf/report.yaml, merged with OmegaConf; overrides are key=value as in Hydra)."""
    from suite.report.build import main

    guarded(lambda _: main(argv))(None)
