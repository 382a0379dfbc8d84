"""Cells as submitit jobs: SLURM job arrays (``study.workers`` at a time) on a cluster, submitit's
local executor where ``srun`` is absent (or with ``study.submitit.cluster=local``).

What the driver guarantees:

- **Settings refused before anything is written** (:func:`check_submitit`): submitit is installed,
  knows every parameter, and on SLURM the partition exists (``sinfo``) and the controller would
  accept the jobs as asked (``sbatch --test-only``: CPUs, memory, time, QOS, ...). A refusal is one
  line naming the setting to change.
- **A rerun submits only unfinished cells**: a cell whose tuning is exported after all its trials
  and whose final runs are all stored (:func:`suite.study.cell.finished_summary`) gets no job.
- **It takes a result as soon as it shows** (its file is looked for every ``RESULT_CHECK_S``).
- **It never waits forever.** Every ``POLL_S`` it asks ``squeue`` (which needs no accounting); a job
  that is no longer pending or running and left no result within its grace period (a pending
  array task cancelled, a job killed, timed out, out of memory, lost with its node; the period is
  ``RESULT_GRACE_S``, or ``$OPTSUITE_RESULT_GRACE_S`` seconds where that is set) is submitted
  again, up to ``study.submitit.retries`` times (a cell resumes where its job stopped), and then
  counts as failed. A job whose cell raised fails at once (it would raise again). A controller
  that does not answer for ``UNREACHABLE_S`` is fatal.
- **One failed cell does not stop the others**: the rest finish, then each failed cell is listed
  (job id, why, log file) and the study stops with one line (exit 2); the rerun submits those only.
- **A fatal error cancels the jobs**: on Ctrl-C or an error in the driver, the jobs it submitted
  that are still queued or running are cancelled (``scancel``).
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from omegaconf import DictConfig, OmegaConf

from suite.study import slurm
from suite.study.cell import Job, finished_summary, notice, run_cell
from suite.types import ConfigError, SuiteError

POLL_S = 2.0  # how often the queue is asked (one squeue call for all jobs)
RESULT_CHECK_S = 0.2  # how often, between those, the jobs' result files are looked for (a stat per job)
RESULT_GRACE_S = 15.0  # a result written just before its job ended may show late on a shared file system
GRACE_VARIABLE = "OPTSUITE_RESULT_GRACE_S"  # sets it: longer on a slow shared file system, shorter in tests
UNREACHABLE_S = 300.0  # a controller silent this long is not restarting: stop (and cancel what we can)


class CellsFailed(SuiteError):
    """Some cells' jobs failed; the others finished and are stored."""


def _line(e: BaseException, last: bool = False) -> str:
    """One line of an error's message (the first, or the last), or its type when it has none."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()] or [type(e).__name__]
    return lines[-1] if last else lines[0]


def _submitit():
    try:
        import submitit
    except ImportError:
        raise ConfigError("study.launcher=submitit needs submitit: pip install submitit "
                          "(or pip install -e '.[cluster]').") from None
    return submitit


def parameters(cfg: DictConfig) -> dict[str, Any]:
    """``study.submitit.parameters`` without its unset (null) entries."""
    given = OmegaConf.to_container(cfg.study.submitit.parameters, resolve=True) or {}
    return {k: v for k, v in given.items() if v is not None}


def make_executor(cfg: DictConfig):
    """submitit's executor for the study's settings (it writes nothing until a job is submitted)."""
    submitit = _submitit()
    opts = cfg.study.submitit
    folder = Path(str(opts.folder or Path(cfg.results_dir) / "submitit")) / "%j"
    try:
        executor = submitit.AutoExecutor(folder=folder, cluster=opts.cluster)
    except ValueError:
        raise ConfigError(f"study.submitit.cluster={opts.cluster!r} is invalid; valid: slurm, local, debug, "
                          f"or null (SLURM where srun exists, else local).") from None
    except RuntimeError:
        raise ConfigError("study.submitit.cluster=slurm, but SLURM's srun is not found here: run the study on "
                          "a node of the cluster, or set study.submitit.cluster=local.") from None
    try:
        executor.update_parameters(slurm_array_parallelism=int(cfg.study.workers), **parameters(cfg))
    except (NameError, ValueError, TypeError, AssertionError) as e:
        raise ConfigError(
            f"study.submitit.parameters: {_line(e)} Valid: "
            f"{', '.join(sorted(executor._valid_parameters()))}, and SLURM's own options with the prefix "
            f"slurm_ (slurm_partition, slurm_qos, slurm_account, ...).") from None
    return executor


def check_submitit(cfg: DictConfig) -> None:
    """Refuse settings the jobs cannot run with, before the study writes anything (one line each)."""
    retries = cfg.study.submitit.get("retries")
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ConfigError(f"study.submitit.retries={retries!r} must be an integer >= 0: how many times a job "
                          f"that ended without a result (cancelled, killed, timed out) is submitted again.")
    result_grace()
    executor = make_executor(cfg)
    if executor.cluster != "slurm":
        return
    partition = parameters(cfg).get("slurm_partition")
    try:
        names = slurm.partitions()
    except slurm.SchedulerError as e:
        raise ConfigError(f"study.launcher=submitit runs on SLURM here (srun is installed), but the controller "
                          f"does not answer ({e}): start it (a single-node cluster: scripts/slurm_cluster.sh), "
                          f"or set study.submitit.cluster=local.") from None
    if partition is not None and partition not in names:
        raise ConfigError(f"study.submitit.parameters.slurm_partition={partition!r} is not a partition of this "
                          f"cluster; valid: {', '.join(names)} (sinfo). Set one of them, or null for the default.")
    # submitit's own job script (a private method: submitit is pinned in constraints.txt), run by nobody
    script = executor._executor._make_submission_file_text("true", "check")
    try:
        slurm.check_submission(script)
    except slurm.SchedulerError as e:
        asked = ", ".join(f"{k}={v}" for k, v in parameters(cfg).items())
        raise ConfigError(f"SLURM refuses the cell jobs as study.submitit.parameters ask ({asked}): {e}. Nodes of "
                          f"partition {partition or names[0]}: {slurm.node_sizes(partition or names[0])}; "
                          f"change study.submitit.parameters to fit.") from None


def result_grace() -> float:
    """Seconds an ended job's result has to show up: ``$OPTSUITE_RESULT_GRACE_S``, else ``RESULT_GRACE_S``."""
    text = os.environ.get(GRACE_VARIABLE, "").strip()
    try:
        grace = float(text) if text else RESULT_GRACE_S
    except ValueError:
        grace = math.nan
    if not 0 <= grace < math.inf:
        raise ConfigError(f"{GRACE_VARIABLE}={text!r} is invalid; give the seconds (a number >= 0) a job that "
                          f"left the queue has to show its result, or unset it for {RESULT_GRACE_S:g}.")
    return grace


@dataclass
class InFlight:
    """A cell's job: its submitit job, which attempt it is, and since when the queue no longer lists
    it as pending or running (None while it does)."""

    job: Job
    sub: Any
    attempt: int
    ended_at: float | None = None

    def log(self) -> str:
        path = self.sub.paths.stderr
        return str(path) if path.exists() else f"none (the job never started; its folder: {self.sub.paths.folder})"


class Driver:
    """The cells' jobs until each gave a result or failed (see the module's guarantees)."""

    def __init__(self, executor, retries: int, echo: Callable[[str], Any] = notice):
        self.executor, self.retries, self.echo = executor, retries, echo
        self.slurm = executor.cluster == "slurm"
        self.flight: list[InFlight] = []
        self.failed: list[str] = []
        self.silent_since: float | None = None
        self.asked_at = -math.inf  # when squeue was last asked
        self.grace = result_grace()  # checked before anything was written (check_submitit)

    def submit(self, jobs: list[Job], attempts: list[int]) -> list[InFlight]:
        submitit = _submitit()
        try:
            subs = self.executor.map_array(run_cell, jobs)
        except (submitit.core.utils.FailedJobError, OSError) as e:
            raise slurm.SchedulerError(f"the jobs could not be submitted: {_line(e, last=True)}") from None
        new = [InFlight(job, sub, attempt) for job, sub, attempt in zip(jobs, subs, attempts)]
        self.flight += new
        return new

    def poll(self) -> list[tuple[str, dict]]:
        """The cells whose jobs gave a result since the last poll; ended jobs are retried or failed."""
        submitit = _submitit()
        states = self._queue()
        results, lost = [], []
        for f in list(self.flight):
            if self._has_result(f):
                self.flight.remove(f)
                try:
                    results.append((f.job.label, f.sub.result()))
                except submitit.core.utils.FailedJobError:
                    self._fail(f, f"raised {self._error(f)}")
                except submitit.core.utils.UncompletedJobError:
                    lost.append((f, f.sub.state))
            elif states is not None and (why := self._ended(f, states)):
                self.flight.remove(f)
                lost.append((f, why))
        self._retry(lost)
        return results

    def _has_result(self, f: InFlight) -> bool:
        return f.sub.paths.result_pickle.exists() or (not self.slurm and f.sub.done())

    def wait(self) -> None:
        """Until a job shows its result (looked for every ``RESULT_CHECK_S``), at most ``POLL_S``: a short
        cell's result is taken at once, and the queue is still asked only every ``POLL_S``."""
        deadline = time.monotonic() + POLL_S
        while time.monotonic() < deadline and not any(self._has_result(f) for f in self.flight):
            time.sleep(RESULT_CHECK_S)

    def _queue(self) -> dict[str, str] | None:
        """squeue's states (None off SLURM, within ``POLL_S`` of the last question, or when the controller
        did not answer this time)."""
        if not self.slurm or time.monotonic() - self.asked_at < POLL_S:
            return None
        self.asked_at = time.monotonic()
        try:
            states = slurm.queue_states()
        except slurm.SchedulerError as e:
            self.silent_since = self.silent_since or time.monotonic()
            if time.monotonic() - self.silent_since > UNREACHABLE_S:
                raise slurm.SchedulerError(
                    f"SLURM has not answered for {UNREACHABLE_S:.0f} s ({e}); run the same command again once "
                    f"sinfo answers (finished cells are not submitted again).") from None
            return None
        self.silent_since = None
        return states

    def _ended(self, f: InFlight, states: dict[str, str]) -> str | None:
        """Why ``f``'s job ended without a result (its final state), once the grace period is over."""
        state = states.get(f.sub.job_id)
        if state in slurm.IN_FLIGHT:
            f.ended_at = None
            return None
        f.ended_at = f.ended_at or time.monotonic()
        if time.monotonic() - f.ended_at < self.grace:
            return None
        return state or "gone from the queue"

    @staticmethod
    def _error(f: InFlight) -> str:
        """The last line of the cell's traceback, as the job stored it."""
        outcome, trace = _submitit().core.utils.pickle_load(f.sub.paths.result_pickle)
        lines = [line for line in str(trace).splitlines() if line.strip()]
        return lines[-1].strip() if lines else outcome

    def _fail(self, f: InFlight, why: str) -> None:
        self.failed.append(f"{f.job.label}: job {f.sub.job_id} {why} (log: {f.log()})")

    def _retry(self, lost: list[tuple[InFlight, str]]) -> None:
        again = [(f, why) for f, why in lost if f.attempt <= self.retries]
        for f, why in lost:
            if f.attempt > self.retries:
                self._fail(f, f"ended without a result ({why}) at attempt {f.attempt} of {self.retries + 1}")
        if not again:
            return
        new = self.submit([f.job for f, _ in again], [f.attempt + 1 for f, _ in again])
        for (f, why), g in zip(again, new):
            self.echo(f"{f.job.label}: job {f.sub.job_id} ended without a result ({why}); submitted again as "
                      f"job {g.sub.job_id} (attempt {g.attempt} of {self.retries + 1}).")

    def cancel(self) -> None:
        """Cancel the jobs still queued or running (after a fatal error)."""
        ids = [f.sub.job_id for f in self.flight]
        if not ids:
            return
        if self.slurm:
            try:
                slurm.cancel(ids)
            except slurm.SchedulerError as e:
                self.echo(f"could not cancel the {len(ids)} job(s) of this study still queued or running ({e}); "
                          f"cancel them yourself: scancel {' '.join(ids)}")
                return
        else:
            for f in self.flight:
                f.sub.cancel(check=False)
        self.echo(f"cancelled the {len(ids)} job(s) of this study still queued or running: {', '.join(ids)}")


def run_cells(jobs: list[Job], cfg: DictConfig, bar: Any = None) -> Iterable[tuple[str, dict]]:
    """The submitit launcher: yield ``(cell label, summary)`` as cells finish (finished ones first,
    without a job); raise :class:`CellsFailed` at the end if any cell failed."""
    executor = make_executor(cfg)
    limited = [job.with_threads(parameters(cfg).get("cpus_per_task")) for job in jobs]
    todo = []
    for job in limited:
        summary = finished_summary(job)
        if summary is None:
            todo.append(job)
        else:
            yield job.label, summary
    if len(todo) < len(jobs):
        notice(f"{len(jobs) - len(todo)} finished cell(s) are not submitted again; {len(todo)} to submit.")
    driver = Driver(executor, int(cfg.study.submitit.retries))
    try:
        if todo:
            driver.submit(todo, [1] * len(todo))
        while driver.flight:
            results = driver.poll()
            yield from results
            if driver.flight and not results:
                driver.wait()
    except BaseException:  # Ctrl-C, an error here or in the consumer: leave no job behind
        driver.cancel()
        raise
    if driver.failed:
        for line in driver.failed:
            notice(line)
        raise CellsFailed(f"{len(driver.failed)} of {len(jobs)} cell(s) failed (listed above); the others are "
                          f"stored. Fix the cause and run the same command again: it submits the failed cells only.")
