"""What the driver asks SLURM itself (submitit submits, but cannot tell a job that is gone from one
that waits): the partitions (``sinfo``), the states of the queued jobs (``squeue``), whether a
submission script would be accepted (``sbatch --test-only``), and cancelling jobs (``scancel``).

``squeue`` answers from the controller's memory, so it works without accounting (``slurmdbd``): a
pending array task that was cancelled vanishes from it, a finished job stays listed in its final
state for ``MinJobAge`` seconds and then vanishes too. Either way, a job that is not listed as
pending or running has ended, and a job that ended without a result file produced none.
"""
from __future__ import annotations

import subprocess
import tempfile
from typing import Iterable

from suite.types import SuiteError

TIMEOUT_S = 60  # a controller that does not answer a query in this long counts as unreachable
# The states of a job that still holds (or waits for) a node; any other state, or none, has ended.
IN_FLIGHT = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED", "REQUEUE_HOLD",
             "REQUEUE_FED", "RESIZING", "SIGNALING", "STAGE_OUT", "STOPPED", "RESV_DEL_HOLD"}


class SchedulerError(SuiteError):
    """A SLURM command failed or did not answer."""


def _run(*command: str) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S)
    except FileNotFoundError:
        raise SchedulerError(f"{command[0]} is not installed here") from None
    except subprocess.TimeoutExpired:
        raise SchedulerError(f"{command[0]} did not answer in {TIMEOUT_S} s") from None
    if done.returncode:
        lines = (done.stderr or done.stdout).strip().splitlines() or [f"exit status {done.returncode}"]
        raise SchedulerError(f"{command[0]}: {lines[-1].strip()}")
    return done.stdout


def partitions() -> list[str]:
    """The cluster's partitions (the default one first, as ``sinfo`` lists it)."""
    return list(dict.fromkeys(_run("sinfo", "--noheader", "--format=%R").split()))


def node_sizes(partition: str | None) -> str:
    """The CPUs and memory of a partition's nodes, for messages ("2 CPUs, 24105 MB")."""
    args = ["--partition", partition] if partition else []
    sizes = sorted(set(_run("sinfo", "--noheader", "--format=%c %m", *args).split("\n")) - {""})
    return "; ".join(f"{cpus} CPUs, {mem} MB" for cpus, mem in (s.split() for s in sizes))


def check_submission(script: str) -> None:
    """Ask the controller whether it would accept ``script`` (``sbatch --test-only``: nothing is
    queued); raises :class:`SchedulerError` with SLURM's reason if not."""
    with tempfile.NamedTemporaryFile("w", suffix=".sh", prefix="optsuite-check-") as f:
        f.write(script)
        f.flush()
        _run("sbatch", "--test-only", f.name)


def queue_states() -> dict[str, str]:
    """This user's jobs as the controller lists them: ``{job id: state}``, array tasks one by one
    (``12_3``), finished ones while the controller still remembers them."""
    out = _run("squeue", "--me", "--noheader", "--array", "--states=all", "--format=%i %T")
    return dict(line.split(maxsplit=1) for line in out.splitlines() if line.strip())


def cancel(job_ids: Iterable[str]) -> None:
    """``scancel`` the jobs (array tasks by their ``12_3`` ids); raises :class:`SchedulerError` if the
    controller could not be told (a job already gone is no error)."""
    ids = list(job_ids)
    if ids:
        _run("scancel", *ids)
