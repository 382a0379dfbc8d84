"""Batches as index slices of a stream of samples, for one run or for a stack of K.

``shuffle`` concatenates a fresh permutation per epoch, ``sequential`` repeats 0..n-1 (tutorial
000's ``ix = (t*batch_size) % n``, wrapping instead of truncating), and ``replacement`` draws
i.i.d. indices. Every step sees exactly ``batch_size`` samples, so a batch may straddle an epoch
boundary; an epoch is ``n`` samples seen. The order depends on the seed only.
"""
from __future__ import annotations

from typing import Iterator, Sequence

import torch
from torch import Tensor

from suite.types import RunSpec, Task

Selector = slice | Tensor  # a batch: a slice (a view, no copy) or an index tensor


def batch_rows(t: Tensor, sel: Selector) -> Tensor:
    """The rows of ``t`` that ``sel`` selects: a view for a slice, a copy for an index tensor.

    An index tensor goes through ``index_select`` (a plain row copy) rather than ``t[sel]``
    (advanced indexing): the same values, 1.3-4x faster on the CPU (128 fashion_mnist rows: 30
    vs 120 µs). A ``(K, b)`` index gives ``(K, b, ...)``.
    """
    if isinstance(sel, slice):
        return t[sel]
    if sel.dim() == 1:
        return t.index_select(0, sel)
    return t.index_select(0, sel.reshape(-1)).view(*sel.shape, *t.shape[1:])


def stream_seed(seed: int) -> int:
    """The seed of a run's batch-order generator (its own stream: not the model's initialization)."""
    return 1_000_003 * seed + 7


class BatchStream:
    """An iterator of batch selectors, one per step; the order depends on the seed only.

    Its state (generator, buffered permutation, position) can be copied with :meth:`clone`, so a
    segment of a run can be replayed from a snapshot exactly.
    """

    def __init__(self, n: int, batch_size: int, sampling: str, seed: int, device: torch.device):
        self.n, self.b, self.sampling, self.device = n, batch_size, sampling, device
        self.gen = torch.Generator(device=device).manual_seed(stream_seed(seed))
        self.buf = torch.empty(0, dtype=torch.long, device=device)
        self.pos = 0  # position in the stream (sequential) or in ``buf`` (shuffle)
        # Full batch: every step sees all n samples and the mean loss does not depend on their
        # order, so skip the permutation and its copy of the whole dataset.
        self.full = batch_size == n and sampling != "replacement"

    def __iter__(self) -> Iterator[Selector]:
        return self

    def __next__(self) -> Selector:
        n, b = self.n, self.b
        if self.full:
            return slice(None)
        if self.sampling == "replacement":
            return torch.randint(n, (b,), generator=self.gen, device=self.device)
        if self.sampling == "sequential":
            start = self.pos % n
            self.pos += b
            return slice(start, start + b) if start + b <= n else torch.arange(start, start + b, device=self.device) % n
        if self.pos + b > len(self.buf):  # shuffle
            fresh = torch.randperm(n, generator=self.gen, device=self.device)
            self.buf, self.pos = torch.cat([self.buf[self.pos:], fresh]), 0
        sel = self.buf[self.pos:self.pos + b]
        self.pos += b
        return sel

    def clone(self) -> BatchStream:
        """A copy in the same state: it yields the same batches from here on."""
        copy = BatchStream.__new__(BatchStream)
        copy.__dict__.update(self.__dict__)
        copy.gen = torch.Generator(device=self.device)
        copy.gen.set_state(self.gen.get_state())
        return copy


def micro_batches(sel: Selector, n: int, k: int) -> list[Selector]:
    """Split one batch into ``k`` equal micro-batches."""
    if k == 1:
        return [sel]
    if isinstance(sel, slice):
        start, stop, _ = sel.indices(n)
        m = (stop - start) // k
        return [slice(start + i * m, start + (i + 1) * m) for i in range(k)]
    return list(sel.chunk(k))


class StackBatches:
    """Each live configuration of a stack gets its batches: one :class:`BatchStream` per seed.

    Configurations with the same seed see the same batch sequence as their single runs (common
    random numbers). When every live configuration gets the same selector (one seed, or the
    full batch, or equal sequential slices), the batch is passed once as ``shared``; otherwise
    it is gathered per configuration into ``(K, b, ...)``.
    """

    def __init__(self, task: Task, spec: RunSpec, seeds: Sequence[int]):
        self.x, self.y, self.n = task.train.x, task.train.y, task.n_train
        self.k, self.device = spec.accumulation_steps, self.x.device
        self.streams = {s: BatchStream(self.n, spec.batch_size, spec.sampling, s, self.device)
                        for s in dict.fromkeys(seeds)}
        self.keep(seeds)

    def clone(self) -> StackBatches:
        copy = StackBatches.__new__(StackBatches)
        copy.__dict__.update(self.__dict__)
        copy.streams = {s: stream.clone() for s, stream in self.streams.items()}
        return copy

    def keep(self, seeds: Sequence[int]) -> None:
        """Follow the live configurations' seeds (in stack order); streams no one uses are dropped."""
        self.streams = {s: it for s, it in self.streams.items() if s in set(seeds)}
        order = {s: i for i, s in enumerate(self.streams)}
        self.group = torch.tensor([order[s] for s in seeds], device=self.device)

    def _index(self, sel: Selector) -> Tensor:
        return torch.arange(*sel.indices(self.n), device=self.device) if isinstance(sel, slice) else sel

    def next(self) -> list[tuple[Tensor, Tensor, bool]]:
        """The next step's micro-batches as ``(x, y, shared)``."""
        sels = [next(it) for it in self.streams.values()]
        first = sels[0]
        if len(sels) == 1 or all(isinstance(s, slice) and s == first for s in sels):
            parts = micro_batches(first, self.n, self.k)
            return [(batch_rows(self.x, p), batch_rows(self.y, p), True) for p in parts]
        idx = torch.stack([self._index(s) for s in sels])[self.group]  # (K, b): one gather per step
        return [(batch_rows(self.x, p), batch_rows(self.y, p), False) for p in idx.chunk(self.k, dim=1)]
