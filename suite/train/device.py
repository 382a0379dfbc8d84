"""Devices, dtypes, the training clock, and the global random state a replay runs under."""
from __future__ import annotations

import contextlib
import time
from typing import Iterator

import torch

from suite.types import ConfigError

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def resolve_device(device: str) -> str:
    """``auto`` -> cuda where torch sees one, else cpu; anything else is checked."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"device={device!r} is invalid; use auto, cpu, cuda or cuda:N.") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={device!r} but torch sees no CUDA device here; use device=cpu or device=auto.")
    return str(dev)


def set_threads(threads: int | str | None) -> None:
    """torch's intra-op threads for this process where no run's task is known (``None``: torch's
    own choice, left as it is; ``auto``: one, as the optimizer checks train tiny problems; a run
    decides per task with ``suite.train.threads.use_threads``). The value is checked where it is
    read (``suite.run.validate.threads``)."""
    if threads is not None:
        torch.set_num_threads(1 if threads == "auto" else threads)


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on the CPU, whose ops run when called)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Clock:
    """Training-time clock: the device is synchronized before every reading."""

    def __init__(self, device: torch.device):
        self.device = device
        self.elapsed, self.t0 = 0.0, None

    def start(self) -> None:
        synchronize(self.device)
        self.t0 = time.perf_counter()

    def stop(self) -> None:
        if self.t0 is not None:
            synchronize(self.device)
            self.elapsed += time.perf_counter() - self.t0
            self.t0 = None


RngState = tuple[torch.Tensor, torch.Tensor | None]  # torch's global CPU generator, and the device's


def rng_state(device: torch.device) -> RngState:
    """The global random state a run's step may draw from (an optimizer that adds noise, dropout)."""
    return torch.get_rng_state(), torch.cuda.get_rng_state(device) if device.type == "cuda" else None


@contextlib.contextmanager
def rng_as(state: RngState, device: torch.device) -> Iterator[None]:
    """Run under ``state`` (from :func:`rng_state`), then put the global random state back as it
    was: a replay draws what the run drew, and the run continues as if it had not happened."""
    before = rng_state(device)
    cpu, dev = state
    torch.set_rng_state(cpu)
    if dev is not None:
        torch.cuda.set_rng_state(dev, device)
    try:
        yield
    finally:
        torch.set_rng_state(before[0])
        if before[1] is not None:
            torch.cuda.set_rng_state(before[1], device)
