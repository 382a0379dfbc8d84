"""The gradient noise scale (McCandlish et al. 2018), measured at evaluation points without touching
the run: its own random batches (a generator seeded by the run's seed and the step), gradients by
``torch.autograd.grad`` or ``torch.func`` (nothing accumulates into ``.grad``), not timed.

G is the full-batch gradient of the training loss, Σ the covariance of the per-example gradients
and H the Hessian of the training loss. Three numbers per evaluation:

* ``b_simple_exact`` = tr(Σ)/|G|² (small models): every per-example gradient (``vmap`` of
  ``grad``), ``G = mean g_i``, ``tr(Σ) = mean |g_i − G|²``;
* ``b_noise_exact`` = tr(HΣ)/(GᵀHG) (models small enough for their Hessian: the quadratic, tiny_mlp):
  the batch size at which the loss decrease of an optimally sized SGD step is half its full-batch
  value; B_simple is this with H ∝ I. On a non-convex model GᵀHG may be ≤ 0 (a negative value);
* ``b_simple_est``, the paper's two-batch-size estimator (every task): with batches of b samples
  drawn i.i.d., ``E|G_b|² = |G|² + tr(Σ)/b``; averaging ``|G_b|²`` over batches of a small and a
  big size and solving the two equations gives unbiased ``|G|²`` and ``tr(Σ)`` (their ratio is
  consistent, not unbiased). When the training set fits one big batch, the big "batch" is all of
  it: its gradient is G itself. Batches are drawn in rounds until the estimate's relative standard
  error (delta method) is below :data:`TOLERANCE` or the rounds are spent (:data:`MAX_ROUNDS` where
  batches are cheap, :data:`AUTOGRAD_ROUNDS` where each costs a backward pass of an image model),
  so the number of batch pairs follows the noise actually met. A negative estimate (the small batches' mean fell
  below |G|²) is kept as measured.

Where the per-example gradients are computed anyway, a batch's |G_b|² comes from them
(:func:`_per_example_sq`; a test checks it equals autograd's on the same batch).
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, hessian, vmap

from suite.types import Task

SMALL = 32  # the small batch (at most a quarter of the training set)
BIG = 2048  # the big batch; a training set this small or smaller is used whole (its gradient is G)
ROUND, BIG_PER_ROUND = 64, 2  # batches drawn per round at the small and (sampled) big size
TOLERANCE = 0.05  # stop once the estimate's relative standard error is below this (median error ≈ 3%)
MAX_ROUNDS = 32  # at most 2,048 small batches per evaluation when |G_b|² comes from per-example gradients
AUTOGRAD_ROUNDS = 2  # ... and 128 (plus 4 big ones) when each costs a backward pass (image models: 0.3 s)
EXACT_WORK_LIMIT = 2_000_000  # per-example gradients when parameters × samples stay below this
HESSIAN_LIMIT = 256  # the Hessian when the model has at most this many parameters

GradSq = Callable[[Tensor], list[float]]  # (batches, batch size) indices -> each batch's |G_batch|²


def _autograd_sq(model: nn.Module, task: Task) -> GradSq:
    params = [p for p in model.parameters() if p.requires_grad]

    def one(idx: Tensor) -> float:
        loss = task.loss(model(task.train.x[idx]), task.train.y[idx])
        return float(sum(g.pow(2).sum() for g in torch.autograd.grad(loss, params)))
    return lambda batches: [one(idx) for idx in batches]


def _per_example_sq(per_example: Tensor) -> GradSq:
    """|G_b|² as the norm of the batch's mean per-example gradient: the number autograd gives for
    that batch, without another backward pass."""
    return lambda batches: per_example[batches].mean(1).pow(2).sum(1).tolist()


def _solve(small: int, s: list[float], big: int | None, b: list[float], g2_full: float) -> tuple[float, float]:
    """(B_simple estimate, its relative standard error) from the small batches' |G_b|² (``s``) and
    the big ones' (``b``), or the full-batch |G|² when ``big`` is None."""
    ms, vs = sum(s) / len(s), _var(s) / len(s)
    if big is None:
        ml, vl, wl = g2_full, 0.0, 0.0
    else:
        ml, vl, wl = sum(b) / len(b), _var(b) / len(b), 1.0 / big
    k = 1.0 / small - wl
    trace = (ms - ml) / k
    g2 = ml - wl * trace
    if g2 == 0:
        return math.nan, math.inf
    if trace <= 0 or g2 < 0:
        return trace / g2, math.inf
    d_small = 1 / (k * trace) + wl / (k * g2)  # ∂ log B / ∂ ms
    d_big = -1 / (k * trace) - (1 + wl / k) / g2  # ∂ log B / ∂ ml
    return trace / g2, math.sqrt(d_small ** 2 * vs + d_big ** 2 * vl)


def _var(v: list[float]) -> float:
    if len(v) < 2:
        return math.inf
    m = sum(v) / len(v)
    return sum((x - m) ** 2 for x in v) / (len(v) - 1)


def estimate(sq: GradSq, n: int, gen: torch.Generator, device: torch.device, rounds: int = MAX_ROUNDS
             ) -> tuple[float, float]:
    """The two-batch-size estimate of B_simple (NaN when |G|² is estimated exactly 0) and its
    relative standard error, from at most ``rounds`` rounds of batches."""
    small = min(SMALL, max(n // 4, 1))
    big = None if n <= BIG else BIG
    draw = lambda k, size: torch.randint(n, (k, size), generator=gen, device=device)  # noqa: E731 (i.i.d.)
    g2_full = sq(torch.arange(n, device=device)[None])[0] if big is None else math.nan
    s: list[float] = []
    b: list[float] = []
    value, rel_se = math.nan, math.inf
    for _ in range(rounds):
        s += sq(draw(ROUND, small))
        b += sq(draw(BIG_PER_ROUND, big)) if big is not None else []
        value, rel_se = _solve(small, s, big, b, g2_full)
        if rel_se <= TOLERANCE:
            break
    return value, rel_se


def per_example_gradients(model: nn.Module, task: Task, chunk: int = 1024) -> Tensor | None:
    """Every training example's gradient as the rows of an (n, parameters) float64 matrix; None
    for models too big for it."""
    params = {k: v.detach() for k, v in model.named_parameters()}
    n = task.n_train
    if n * sum(v.numel() for v in params.values()) > EXACT_WORK_LIMIT:
        return None

    def loss(p, x, y):
        return task.loss(functional_call(model, p, (x.unsqueeze(0),)), y.unsqueeze(0))

    per_example = vmap(grad(loss), in_dims=(None, 0, 0))
    flat = []
    for i in range(0, n, chunk):
        g = per_example(params, task.train.x[i:i + chunk], task.train.y[i:i + chunk])
        flat.append(torch.cat([t.reshape(t.shape[0], -1) for t in g.values()], dim=1).double())
    return torch.cat(flat)


def loss_hessian(model: nn.Module, task: Task) -> Tensor | None:
    """The Hessian of the full training loss in the parameters (float64, flattened in
    ``named_parameters`` order); None for models with more than :data:`HESSIAN_LIMIT` parameters."""
    named = {k: v.detach().double() for k, v in model.named_parameters()}
    sizes = [v.numel() for v in named.values()]
    if sum(sizes) > HESSIAN_LIMIT:
        return None
    x, y = task.train.x.double(), task.train.y
    y = y.double() if y.is_floating_point() else y
    shapes = {k: v.shape for k, v in named.items()}

    def loss(flat: Tensor) -> Tensor:
        parts = dict(zip(named, torch.split(flat, sizes)))
        return task.loss(functional_call(model, {k: parts[k].view(shapes[k]) for k in named}, (x,)), y)

    return hessian(loss)(torch.cat([v.reshape(-1) for v in named.values()]))


def exact(per_example: Tensor | None, h: Tensor | None) -> dict[str, float]:
    """B_simple = tr(Σ)/|G|² from the per-example gradients, and B_noise = tr(HΣ)/(GᵀHG) where the
    Hessian ``h`` is known too (NaN where they are not)."""
    if per_example is None:
        return {"b_simple_exact": math.nan, "b_noise_exact": math.nan}
    g = per_example.mean(0)
    dev = per_example - g
    out = {"b_simple_exact": float(dev.pow(2).sum(1).mean() / g.pow(2).sum()), "b_noise_exact": math.nan}
    if h is not None:
        h = h.to(per_example)
        out["b_noise_exact"] = float(((dev @ h) * dev).sum(1).mean() / (g @ h @ g))
    return out


def noise_scale(model: nn.Module, task: Task, seed: int, step: int) -> dict[str, float]:
    """``b_simple_est``, ``b_simple_exact`` and ``b_noise_exact`` for ``model`` at ``step`` (NaN
    where a model is too big for one); none of them changes the run."""
    device = task.train.x.device
    gen = torch.Generator(device=device).manual_seed(1_000_003 * seed + 7_919 * step + 13)
    was_training = model.training
    model.train()
    try:
        per_example = per_example_gradients(model, task)
        cheap = per_example is not None
        sq = _per_example_sq(per_example) if cheap else _autograd_sq(model, task)
        est, _ = estimate(sq, task.n_train, gen, device, MAX_ROUNDS if cheap else AUTOGRAD_ROUNDS)
        return {"b_simple_est": est,
                **exact(per_example, loss_hessian(model, task) if per_example is not None else None)}
    finally:
        model.train(was_training)
