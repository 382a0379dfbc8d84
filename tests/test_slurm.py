"""``study.launcher=submitit`` against a real SLURM cluster (slurmctld + slurmd + munged on this host).

``scripts/slurm_cluster.sh`` starts a single-node cluster from Debian's slurm-wlm and munge, without
accounting (``.ci/run`` runs it, then sets ``OPTSUITE_REQUIRE_SLURM=1``, which turns a missing
cluster into a failure). Elsewhere the tests skip, saying how to start one.

One small study (two tuned regression cells, two trials each) runs through the scheduler and must
equal the local launcher's study in everything but the clocks: after a clean run, after a pending
array task was cancelled (the driver submits it again), and after a running job was killed (its
cell is reported, the other finishes, and the rerun submits the killed cell alone). A wrong
partition or an impossible request stops with one line before anything is written; Ctrl-C
cancels the jobs the study submitted.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

from suite.cli import CONF_DIR
from suite.study import slurm
from suite.study.cell import final_lock
from suite.study.launchers import check_launcher
from suite.study.presets import cell_config, expand, validate
from suite.study.runner import study_and_report
from suite.tune.tuner import cell_name_of
from suite.types import ConfigError

SUITE_STUDY = str(Path(sys.executable).with_name("suite-study"))
REQUIRED = os.environ.get("OPTSUITE_REQUIRE_SLURM") == "1"
TWO_CELLS = [
    "study.tasks=[regression]", "study.optimizers=[sgd,adam]", "study.batch_sizes=[full]", "study.seeds=[0]",
    "study.n_trials=2", "study.tune_batch=2", "study.widen=false", "study.budgets.regression.max_steps=40",
    "study.eval_points=4", "progress=false", "+study.report.figures.formats=[png]",
]
ON_SLURM = ["study.launcher=submitit", "study.submitit.cluster=slurm", "study.submitit.parameters.cpus_per_task=1",
            "study.submitit.parameters.mem_gb=1", "study.submitit.parameters.timeout_min=10"]
CLOCKS = ("time_s", "created_at")


def cluster_missing() -> str | None:
    if shutil.which("sbatch") is None or shutil.which("squeue") is None:
        return "SLURM is not installed: scripts/slurm_cluster.sh (as root) installs and starts a single-node cluster"
    try:
        states = subprocess.run(["sinfo", "--noheader", "--format=%t"], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return "sinfo does not answer: start the cluster with scripts/slurm_cluster.sh"
    if not {"idle", "mix", "alloc"} & set(states.stdout.split()):
        return f"no SLURM node is up ({(states.stderr or states.stdout).strip()}): run scripts/slurm_cluster.sh"
    return None


@pytest.fixture(scope="module")
def cluster():
    reason = cluster_missing()
    if reason:
        (pytest.fail if REQUIRED else pytest.skip)(reason)


def study_cfg(results_dir: Path, *overrides: str):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name="study_app", overrides=[f"results_dir={results_dir}", *TWO_CELLS, *overrides])


def stored(root: Path) -> dict:
    """Everything a study stores but the clocks (and the export's storage path, which names the
    results directory): every row (trials tagged with study and trial), every trace, the tuned exports."""
    rows = pd.read_parquet(root / "runs").drop(columns=list(CLOCKS))
    traces = pd.read_parquet(root / "traces") if (root / "traces").is_dir() else None
    tuned = {p.stem: {k: v for k, v in json.loads(p.read_text()).items() if k not in ("exported_at", "storage")}
             for p in (root / "tuned").glob("*.json")}
    return {"rows": rows.sort_values(["run_id", "step"]).reset_index(drop=True),
            "traces": None if traces is None else traces.sort_values(["run_id", "step_lo"]).reset_index(drop=True),
            "tuned": tuned}


def assert_same_study(root: Path, reference: dict) -> None:
    got = stored(root)
    assert got["tuned"] == reference["tuned"]
    pd.testing.assert_frame_equal(got["rows"], reference["rows"])
    if reference["traces"] is not None:
        pd.testing.assert_frame_equal(got["traces"], reference["traces"])


@pytest.fixture(scope="module")
def local_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("local")
    study_and_report(study_cfg(root), echo=lambda *_: None)
    return root


@pytest.fixture(scope="module")
def local_study(local_root) -> dict:
    return stored(local_root)


def start_study(root: Path, *overrides: str) -> subprocess.Popen:
    """The study in the background; a job that left the queue without a result fails after 2 s, not 15
    (the cluster's file system is this machine's)."""
    with sigint_at_default():
        return subprocess.Popen([SUITE_STUDY, f"results_dir={root}", *TWO_CELLS, *ON_SLURM, *overrides],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "OPTSUITE_RESULT_GRACE_S": "2"})


@contextmanager
def sigint_at_default():
    """SIGINT at its default while a child starts, as a terminal's command gets it. A child inherits
    an ignored SIGINT across exec, and Python then installs no Ctrl-C handler: the tests run as a
    background job of a non-interactive shell (``make test &``) or under nohup have SIGINT ignored,
    and their study would not hear the test's Ctrl-C (/proc showed it without a SIGINT handler)."""
    ignored = signal.getsignal(signal.SIGINT) is signal.SIG_IGN  # only an ignored signal passes exec
    if ignored:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
    try:
        yield
    finally:
        if ignored:
            signal.signal(signal.SIGINT, signal.SIG_IGN)


@contextmanager
def cells_held(root: Path):
    """Every cell's final runs held by this process (as by another worker training them): no job can
    finish while the test acts on it, however fast the cells are or slowly the queue answers."""
    cfg = study_cfg(root)
    locks = [final_lock(root, cell_name_of(cell_config(cfg, cell))) for cell in expand(cfg.study, validate(cfg.study))]
    for lock in locks:
        lock.acquire()
    try:
        yield
    finally:
        for lock in locks:
            lock.release()


def interrupted(study: subprocess.Popen) -> tuple[str, str]:
    """Ctrl-C; a study that does not stop within a minute fails the test with its signal state."""
    study.send_signal(signal.SIGINT)
    try:
        return study.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        state = [line for line in Path(f"/proc/{study.pid}/status").read_text().splitlines()
                 if line.startswith(("SigIgn", "SigCgt"))]
        study.kill()
        raise AssertionError(f"the study did not stop on SIGINT; its signal state: {state}") from None


def submitted(root: Path) -> list[str]:
    """The ids of the jobs a study submitted (submitit gives each its folder at submission)."""
    return sorted(p.parent.name for p in (root / "submitit").glob("*/*_submitted.pkl"))


def wait_for(what: str, predicate, timeout: float = 90.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def job_in_state(root: Path, state: str) -> str | None:
    """A job of this study that the queue lists in ``state``."""
    states = slurm.queue_states()
    return next((job for job in submitted(root) if states.get(job) == state), None)


def test_a_study_on_slurm_equals_the_local_study_and_a_rerun_submits_nothing(cluster, local_study, tmp_path, capsys):
    cfg = study_cfg(tmp_path, *ON_SLURM, "study.workers=2")
    study_and_report(cfg, echo=lambda *_: None)
    jobs = submitted(tmp_path)
    assert len(jobs) == 2 and all("_" in job for job in jobs), jobs  # one array, a task per cell
    assert_same_study(tmp_path, local_study)
    study_and_report(cfg, echo=lambda *_: None)
    assert submitted(tmp_path) == jobs
    assert "2 finished cell(s) are not submitted again; 0 to submit." in capsys.readouterr().err


def test_a_cancelled_pending_job_is_submitted_again_and_the_study_completes(cluster, local_study, tmp_path):
    with cells_held(tmp_path):
        study = start_study(tmp_path, "study.workers=1")  # an array of 2 run one at a time: the second waits
        pending = wait_for("a pending array task", lambda: job_in_state(tmp_path, "PENDING"))
        subprocess.run(["scancel", pending], check=True)
    out, err = study.communicate(timeout=180)
    assert study.returncode == 0, err
    # the queue forgets a cancelled pending task at once, or lists it CANCELLED for a while
    assert re.search(rf"job {pending} ended without a result \((gone from the queue|CANCELLED)\); submitted again "
                     rf"as job \d+ \(attempt 2 of 2\)", err), err
    assert_same_study(tmp_path, local_study)


def test_a_killed_job_fails_its_cell_only_and_the_rerun_submits_that_cell_alone(cluster, local_study, tmp_path):
    with cells_held(tmp_path):
        study = start_study(tmp_path, "study.workers=2", "study.submitit.retries=0")
        running = wait_for("a running job", lambda: job_in_state(tmp_path, "RUNNING"))
        subprocess.run(["scancel", running], check=True)
    out, err = study.communicate(timeout=180)
    lines = err.strip().splitlines()
    assert study.returncode == 2 and "Traceback" not in err, err
    assert lines[-1] == ("error: 1 of 2 cell(s) failed (listed above); the others are stored. Fix the cause and run "
                         "the same command again: it submits the failed cells only.")
    failed = next(line for line in lines if f"job {running} ended without a result" in line)
    assert f"(CANCELLED) at attempt 1 of 1 (log: {tmp_path / 'submitit' / running}" in failed
    before = submitted(tmp_path)
    rerun = subprocess.run([SUITE_STUDY, f"results_dir={tmp_path}", *TWO_CELLS, *ON_SLURM],
                           capture_output=True, text=True, timeout=180)
    assert rerun.returncode == 0, rerun.stderr
    assert "1 finished cell(s) are not submitted again; 1 to submit." in rerun.stderr
    assert len(set(submitted(tmp_path)) - set(before)) == 1
    assert_same_study(tmp_path, local_study)


def test_a_cell_that_raises_in_its_job_is_reported_with_its_error(cluster, local_root, tmp_path):
    """An unfinished cell (no tuning export) whose Optuna journal is damaged inside (the driver's checks
    before submitting read run files, not journals): its job raises, the other cell is finished and
    gets no job."""
    shutil.copytree(local_root, tmp_path, dirs_exist_ok=True)
    (export,) = (tmp_path / "tuned").glob("regression-sgd-*.json")
    export.unlink()
    journal = tmp_path / "optuna" / f"{export.stem}.log"
    lines = journal.read_bytes().splitlines(keepends=True)
    journal.write_bytes(b"".join([*lines[:2], b"{not a record\n", *lines[2:]]))
    out = subprocess.run([SUITE_STUDY, f"results_dir={tmp_path}", *TWO_CELLS, *ON_SLURM],
                         capture_output=True, text=True, timeout=180)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    (job,) = submitted(tmp_path)
    assert f"regression/sgd/1000 (GD): job {job} raised suite.types.StoreError: " in out.stderr
    assert f"{journal}" in out.stderr
    assert f"(log: {tmp_path / 'submitit' / job / f'{job}_0_log.err'})" in out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith("error: 1 of 2 cell(s) failed (listed above)")


def test_ctrl_c_cancels_the_jobs_the_study_submitted(cluster, tmp_path):
    with cells_held(tmp_path):
        study = start_study(tmp_path, "study.workers=1")
        wait_for("a running job", lambda: job_in_state(tmp_path, "RUNNING"))
        jobs = submitted(tmp_path)
        assert study.poll() is None, study.communicate()
        out, err = interrupted(study)
    assert study.returncode == 130, err
    assert "job(s) of this study still queued or running" in err
    wait_for("the jobs to leave the queue", lambda: not set(jobs) & {
        job for job, state in slurm.queue_states().items() if state in slurm.IN_FLIGHT}, timeout=30)


@pytest.mark.parametrize("override, message", [
    ("study.submitit.parameters.slurm_partition=nope",
     "study.submitit.parameters.slurm_partition='nope' is not a partition of this cluster; valid: "),
    ("study.submitit.parameters.cpus_per_task=100000",
     "SLURM refuses the cell jobs as study.submitit.parameters ask (timeout_min=10, cpus_per_task=100000, "
     "mem_gb=1): sbatch: "),
])
def test_a_submission_the_cluster_refuses_is_one_line_before_anything_is_written(cluster, tmp_path, override, message):
    root = tmp_path / "study"
    out = subprocess.run([SUITE_STUDY, f"results_dir={root}", *TWO_CELLS, *ON_SLURM, override],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and out.stderr.startswith(f"error: {message}"), out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert not root.exists()


@pytest.mark.parametrize("override, message", [
    ("study.submitit.retries=-1", "study.submitit.retries=-1 must be an integer >= 0"),
    ("study.submitit.cluster=slrum", "study.submitit.cluster='slrum' is invalid; valid: slurm, local, debug"),
    ("+study.submitit.parameters.cpus=2", "study.submitit.parameters: Parameter 'cpus' need to be prefixed"),
])
def test_launcher_settings_submitit_refuses_are_one_line(tmp_path, override, message):
    pytest.importorskip("submitit")
    cfg = study_cfg(tmp_path, "study.launcher=submitit", "study.submitit.cluster=local", override)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_launcher(cfg)


@pytest.mark.parametrize("value", ["soon", "-1"])
def test_a_bad_result_grace_is_one_line_before_anything_is_written(tmp_path, value):
    pytest.importorskip("submitit")
    root = tmp_path / "study"
    out = subprocess.run([SUITE_STUDY, f"results_dir={root}", *TWO_CELLS, "study.launcher=submitit",
                          "study.submitit.cluster=local"], env={**os.environ, "OPTSUITE_RESULT_GRACE_S": value},
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and out.stderr == (
        f"error: OPTSUITE_RESULT_GRACE_S={value!r} is invalid; give the seconds (a number >= 0) a job that left "
        f"the queue has to show its result, or unset it for 15.\n"), out.stderr
    assert not root.exists()
