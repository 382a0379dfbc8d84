"""What ``@hydra.main`` would refuse in its own words becomes the suite's one line and exit status 2.

``check_command_line`` (what every Hydra console script runs first) is tested in-process on each
bad command line; a few console scripts run in subprocesses, together, to show the wiring: exit
status 2, one line, no Hydra text, and the command the user ran named in what to do next.
"""
from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pytest

from suite.cli import CONF_DIR
from suite.command_line import check_command_line
from suite.types import ConfigError

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def user_dirs(tmp_path_factory):
    """Config directories as users write them: a YAML syntax error, a config.yaml Hydra never reads."""
    root = tmp_path_factory.mktemp("conf")
    (root / "broken" / "optimizer").mkdir(parents=True)
    (root / "broken" / "optimizer" / "mine.yaml").write_text("name: mine\ncls: [myopt.Signum\n")
    (root / "shadow").mkdir()
    (root / "shadow" / "config.yaml").write_text("batch_size: 64\n")
    return root


BAD = {  # id -> (config name, argv, what the one line says)
    "task-case": ("config", ["task=FASHION_MNIST"], "task=FASHION_MNIST: no such task; valid: fashion_mnist, mnist, "
                  "regression, tiny_mlp. Did you mean task=fashion_mnist?"),
    "study-typo": ("study_app", ["study=quik"], "study=quik: no such study; valid: full, modern, quick, standard"),
    "optimizer": ("config", ["optimizer=mine"], "optimizer=mine: no such optimizer; valid: adadelta, "),
    "no-config-dir": ("config", ["--config-dir", "{root}/absent"], "--config-dir {root}/absent: no such directory"),
    "yaml-error": ("config", ["--config-dir", "{root}/broken", "optimizer=mine"], "{root}/broken/optimizer/mine.yaml, "
                   "line 3, column 1: YAML syntax error (expected ',' or ']', but got '<stream end>')"),
    "shadowed": ("config", ["--config-dir", "{root}/shadow"], "{root}/shadow/config.yaml is never read: the suite's "
                 "own conf/config.yaml comes first on Hydra's search path (put its settings on the command line)"),
    "non-ascii": ("config", ["results_dir=/data/résultats"], "cannot parse the override 'results_dir=/data/résultats' "
                  "(Hydra's grammar stops at 'é'); quote a value with spaces or non-ASCII characters"),
    "space-split": ("config", ["results_dir=/data/my", "results"], "cannot parse the override 'results' (missing "
                    "EQUAL at '<EOF>'); it is not key=value; if it is the rest of results_dir's value, quote the "
                    "whole value for Hydra inside the shell's quotes: 'results_dir=\"/data/my results\"'"),
    "grammar": ("config", ["lr=[1,2"], "cannot parse the override 'lr=[1,2'"),
    "no-such-key": ("config", ["optimiser=adam"], "unknown config key optimiser; check the spelling"),
}


@pytest.mark.parametrize("case", BAD)
def test_what_hydra_refuses_is_one_line(case, user_dirs):
    config_name, argv, says = BAD[case]
    with pytest.raises(ConfigError) as err:
        check_command_line(CONF_DIR, config_name, [a.format(root=user_dirs) for a in argv])
    assert says.format(root=user_dirs) in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("argv", [["task=tiny_mlp", 'results_dir="/data/my résultats"'],
                                  ["--config-dir", str(ROOT / "examples" / "conf"), "optimizer=myopt"],
                                  ["--cfg", "job", "task=FASHION_MNIST"]])  # Hydra's own modes: its own text
def test_good_command_lines_pass(argv):
    check_command_line(CONF_DIR, "config", argv)


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory, user_dirs):
    """The console scripts on bad input, two at a time."""
    damaged = tmp_path_factory.mktemp("damaged")
    (damaged / "runs").mkdir()
    for name in ("a", "b"):
        (damaged / "runs" / f"{name}.parquet").write_bytes(b"PAR1 cut off")
    pd.DataFrame({"x": [1]}).to_parquet(damaged / "runs" / "notes.parquet")
    cases = {
        "study": ["suite-study", "study=quik"],
        "train": ["suite-train", "--config-dir", str(user_dirs / "broken"), "optimizer=mine", "seed=0"],
        "seed": ["suite-train", "seed=9223372036854775808", f"results_dir={damaged / 'never'}"],
        "report": ["suite-report", str(damaged)],
    }
    env = {**os.environ, "PYTHONPATH": str(ROOT / "examples")}
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {k: pool.submit(subprocess.run, [str(BIN / argv[0]), *argv[1:]], capture_output=True, text=True,
                                  env=env, timeout=300) for k, argv in cases.items()}
        return damaged, {k: f.result() for k, f in futures.items()}


@pytest.mark.parametrize("case, says", [
    ("study", "error: study=quik: no such study; valid: "),
    ("train", "error: --config-dir {broken}: {broken}/optimizer/mine.yaml, line 3"),
    ("seed", "error: seed=9223372036854775808 is invalid; a seed is an integer from 0 to 4294967295"),
    ("report", "error: 3 files under {runs} are not readable runs of this suite (a.parquet: not a readable parquet "
               "file (ArrowInvalid); b.parquet: not a readable parquet file (ArrowInvalid); notes.parquet: not a run "
               "file of this suite: it lacks the column(s) "),
])
def test_console_scripts_say_it_in_one_line(case, says, outcomes, user_dirs):
    damaged, out = outcomes
    got = out[case]
    assert got.returncode == 2 and len(got.stderr.strip().splitlines()) == 1, got.stderr
    assert got.stderr.startswith(says.format(broken=user_dirs / "broken", runs=damaged / "runs")), got.stderr
    assert "Traceback" not in got.stderr and "HYDRA_FULL_ERROR" not in got.stderr


def test_suite_report_names_its_own_fix(outcomes):
    damaged, out = outcomes
    err = out["report"].stderr
    assert "then run suite-report again: it reports the other runs" in err and "trains" not in err
    assert not (damaged / "never").exists() and not (damaged / "report").exists()
