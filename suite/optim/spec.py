"""What one optimizer entry declares (:class:`OptimizerSpec`), and the valid ranges of the
hyperparameters entries share (:data:`BOUNDS`). Plain data, no torch: the class is named by its
import path and resolved where the optimizer is built (``suite.optim.build``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

# Valid range of the hyperparameters entries share: (low, high, low_inclusive, high_inclusive).
# An entry with a hyperparameter of its own declares its range in ``OptimizerSpec.bounds``.
Bound = tuple[float, float, bool, bool]
BOUNDS: dict[str, Bound] = {
    "momentum": (0.0, 1.0, False, False),
    "beta1": (0.0, 1.0, True, False),
    "beta2": (0.0, 1.0, True, False),
    "alpha": (0.0, 1.0, True, False),
    "eps": (0.0, math.inf, False, False),
    "weight_decay": (0.0, math.inf, True, False),
}

# Colour families of the report (``suite.report.figures.style``): one hue per family, a shade per member.
FAMILIES = ("sgd", "adaptive", "adam_variant", "modern", "quasi_newton", "external")


@dataclass(frozen=True)
class OptimizerSpec:
    """One registry entry.

    Declared capabilities (never inferred from the class; the contract tests check each claim):

    * ``lr_affine``: the step is ``θ' = θ + lr·Δ(θ, g, s)`` and the new state ``s'`` does not
      depend on lr (the argument is in ``suite.train.stack_optim``).
    * ``elementwise``: each coordinate's update reads only that coordinate's gradient and state
      (no norms or factorizations across a tensor), and every state tensor is shaped like its
      parameter or is a scalar.
    * Both together, with a plain ``step()`` and one parameter point (no ``closure``, no
      ``eval_mode``), make stacked training exact (:attr:`stackable`): K configurations share one
      optimizer stepped at lr = 1. Any other entry is trained unstacked.
    * ``fused`` / ``foreach``: the class accepts ``fused=True`` / ``foreach=...``, or
      ``impl_cls`` names the class of that implementation (lion-pytorch ships its foreach Lion
      as a class of its own). Like every capability, false unless declared, for a registry
      entry and a user's YAML alike.
    * ``closure``: ``step(closure)`` re-evaluates the loss itself (L-BFGS); the training step
      passes it a closure over the step's batch.
    * ``eval_mode``: the optimizer has ``train()``/``eval()`` modes (schedule-free: the
      parameters hold the gradient point y while training and the average x in eval mode); the
      loop evaluates in eval mode and trains in train mode.
    * ``full_batch_only``: only ``batch_size=full`` is meaningful (L-BFGS: its curvature pairs
      need the same function at every step); any other batch size is refused.
    * State, per parameter tensor: ``state_per_param`` tensors of the parameter's size (for
      ``factored`` entries, a tensor of ≥ 2 dims keeps a row and a column vector instead:
      Adafactor), a scalar ``step`` if ``step_counter``, and ``extra_scalars`` other scalars
      (NAdam's μ product). :meth:`state_size` turns this into numbers the tests measure.
    * ``reference``: the update rule in plain float64 Python (``suite.optim.references``); the
      contract tests check every implementation against it.
    * ``integers``: hyperparameters that must be whole numbers (Newton-Schulz steps, history size).
    * ``family``: the report's colour family (:data:`FAMILIES`).
    * ``package``: the pip package that provides ``cls`` when it is not torch; a missing one is
      a clear error naming the ``optimizers`` extra.
    * ``source``: the YAML file an external entry came from (None for the suite's own entries).
    """

    name: str
    cls: str  # import path of a torch.optim.Optimizer subclass
    defaults: Mapping[str, Any]  # suite hyperparameter name -> default (besides lr)
    lr_default: float
    lr_range: tuple[float, float]  # log-uniform search range for tuning
    fixed: Mapping[str, Any] = field(default_factory=dict)  # constructor kwargs that define the entry
    lr_affine: bool = False
    elementwise: bool = False
    fused: bool = False
    foreach: bool = False
    state_per_param: int | None = 0  # None: not declared (an external entry may leave it out)
    step_counter: bool = False
    reference: Callable[..., list[float]] | None = None
    bounds: Mapping[str, Bound] = field(default_factory=dict)
    tutorial: bool = False  # one of the tutorials' family (the quick study covers these)
    doc: str = ""
    closure: bool = False
    eval_mode: bool = False
    full_batch_only: bool = False
    extra_scalars: int = 0
    factored: bool = False
    integers: tuple[str, ...] = ()
    impl_cls: Mapping[str, str] = field(default_factory=dict)  # impl -> class path, where it is a class
    family: str = "external"
    package: str | None = None  # the pip package behind ``cls`` when it is not torch (the optimizers extra)
    source: str | None = None

    @property
    def stackable(self) -> bool:
        return self.lr_affine and self.elementwise and not self.closure and not self.eval_mode

    @property
    def external(self) -> bool:
        return self.source is not None

    def bound(self, key: str) -> Bound:
        return self.bounds.get(key) or BOUNDS[key]

    def class_path(self, impl: str = "forloop") -> str:
        """The class that runs ``impl``: ``impl_cls[impl]`` where the entry names one, else ``cls``."""
        return self.impl_cls.get(impl, self.cls)

    def constructor_kwargs(self, hparams: Mapping[str, Any]) -> dict[str, Any]:
        kw = {**self.fixed, **{k: v for k, v in hparams.items() if k not in ("beta1", "beta2")}}
        if "beta1" in hparams:
            kw["betas"] = (hparams["beta1"], hparams["beta2"])
        return kw

    def state_size(self, shapes: Iterable[Sequence[int]]) -> tuple[int, int]:
        """(state elements, scalar state tensors) after a step over parameters of ``shapes``."""
        elements = scalars = 0
        for shape in shapes:
            numel = math.prod(shape)
            if self.factored and len(shape) >= 2:  # row (…, r, 1) and column (…, 1, c) factors
                elements += math.prod(shape[:-1]) + math.prod(shape[:-2]) * shape[-1]
            else:
                elements += (self.state_per_param or 0) * numel
            scalars += int(self.step_counter) + self.extra_scalars
        return elements, scalars
