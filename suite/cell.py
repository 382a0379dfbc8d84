"""One cell of a study (:class:`Cell`): its identity fields, its label and its stored name, and
whether a batch is the full training set. The study's cells, run identity, the report's grouping
and the stacked engine's per-configuration check all derive from it."""
from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

from suite.types import RunSpec


PER_CONFIG = ("lr", "seed")


def is_full_batch(batch_size: int | str, n_train: int | None) -> bool:
    """Whether a batch is the whole training set (gradient descent, "GD"): ``"full"``, or at least
    the task's ``n_train`` samples (unknown ``n_train``: only ``"full"`` is)."""
    return batch_size == "full" or (n_train is not None and batch_size >= n_train)


SAMPLING_MARK = {"shuffle": "", "sequential": " seq", "replacement": " repl"}


@dataclass(frozen=True)
class Cell:
    """One cell of a study: what a tuning study covers and its final runs share, i.e. everything
    in a :class:`RunSpec` that shapes a run's curve except lr, the searched hyperparameters and the
    seed (the rest of that, task options, evaluation and fixed hyperparameters, is hashed into its
    stored name by :mod:`suite.store.identity`). A study's expansion fills in the axes (task,
    optimizer, batch, accumulation); a prepared run's cell (:meth:`of`) every field.

    ``batch_size`` is an int, or ``"full"`` before the task's size is known; ``n_train`` (not part
    of the identity) says whether an int batch is the full one. One label format everywhere a
    batch is shown (:attr:`label`); :attr:`name` is the readable start of the stored file stem.
    """

    task: str
    optimizer: str
    batch_size: int | str
    accumulation_steps: int = 1
    sampling: str = "shuffle"
    accumulation_reduction: str = "mean"  # of accumulated micro-batch gradients (sum: tutorial 004's variant)
    epochs: float = 1.0
    max_steps: int | None = None
    max_seconds: float | None = None
    divergence_factor: float = 1e3
    dtype: str = "float32"
    n_train: int | None = field(default=None, compare=False)

    @classmethod
    def of(cls, spec: RunSpec, n_train: int | None = None) -> Cell:
        return cls(**{k: getattr(spec, k) for k in CELL_FIELDS}, n_train=n_train)

    @property
    def full(self) -> bool:
        return is_full_batch(self.batch_size, self.n_train)

    @property
    def batch(self) -> int | str:
        """The batch size as a number where known (``"full"`` is ``n_train``)."""
        return self.n_train if self.batch_size == "full" and self.n_train is not None else self.batch_size

    @property
    def regime(self) -> str:
        """GD for the full batch, SGD for one sample, mini-batch in between."""
        return "GD" if self.full else "SGD" if self.batch == 1 else "mini-batch"

    @property
    def label(self) -> str:
        """``1 (SGD)``, ``32``, ``64×16`` (micro-batch × accumulation), ``1000 (GD)``; + variants."""
        k = self.accumulation_steps
        text = f"{self.batch // k}×{k}" if k > 1 and self.batch != "full" else str(self.batch)
        text += f" ({self.regime})" if self.regime != "mini-batch" else ""
        reduction = "" if self.accumulation_reduction == "mean" else f" {self.accumulation_reduction}"
        return text + SAMPLING_MARK.get(self.sampling, f" {self.sampling}") + reduction

    @property
    def name(self) -> str:
        """``<task>-<optimizer>-b<batch|full>[-acc<k>]``: the readable start of its stored name."""
        acc = f"-acc{self.accumulation_steps}" if self.accumulation_steps > 1 else ""
        return f"{self.task}-{self.optimizer}-b{'full' if self.full else self.batch_size}{acc}"

    @property
    def emulated(self) -> Cell:
        """The plain cell whose update an accumulation cell equals (itself for a plain or a sum cell)."""
        if self.accumulation_steps == 1 or self.accumulation_reduction != "mean":
            return self
        return replace(self, accumulation_steps=1)


CELL_FIELDS = tuple(f.name for f in fields(Cell) if f.name != "n_train")  # a cell's identity
CELL_AXES = CELL_FIELDS[:CELL_FIELDS.index("epochs")]  # what a study varies (the rest is its budget)
