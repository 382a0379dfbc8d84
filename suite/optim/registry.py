"""The optimizer registry: suite name -> optimizer class, fixed defaults, lr search range, and the
capabilities the rest of the suite relies on, declared per entry (:class:`OptimizerSpec`, never
inferred from the class).

This file is plain data (no torch import): the class is named by its import path and resolved
when an optimizer is built (``suite.optim.build``), so the report can read the registry without
loading torch. Entries come from ``torch.optim`` and from maintained third-party packages
(``schedulefree``, ``lion-pytorch``: the ``optimizers`` extra); a user's own optimizer joins
the registry for the process from its YAML file (``suite.optim.external``).

Every update rule below is written in the code's symbols, with PyTorch's convention: ``θ``
parameters, ``g`` the (mini-batch mean) gradient, ``lr`` the learning rate, ``t`` the step
count starting at 1, ``wd`` weight decay, ``μ`` momentum.

Notes on conventions (they matter when comparing with papers):

* PyTorch momentum is ``v = μ·v + g; θ -= lr·v``. The textbook form of tutorial 001,
  ``v = γ·v + η·g; θ -= v``, is the same sequence of θ for a constant learning rate
  (``v_textbook = lr·v_torch``), but not when lr changes mid-run.
* PyTorch Nesterov stores the look-ahead point: ``v = μ·v + g; θ -= lr·(g + μ·v)``. The
  tutorial's form evaluates the gradient at ``θ - γ·v``; the two are the same iteration with
  the parameters shifted by ``γ·v`` (its reference in ``suite.optim.references`` checks it).
* Coupled weight decay (sgd, adagrad, rmsprop, adam) adds ``wd·θ`` to ``g`` first; AdamW decays
  ``θ *= 1 - lr·wd`` before the Adam step.
* eps enters *outside* the square root: ``g / (sqrt(s) + eps)`` (Adadelta and Adafactor, whose
  eps sits inside, say so).
* ``state``: what an entry keeps per parameter tensor (the state-bytes test measures it).
"""
from __future__ import annotations

import math
from typing import Any, Mapping

from suite.optim import references
from suite.optim.spec import BOUNDS, FAMILIES, Bound, OptimizerSpec
from suite.types import ConfigError

__all__ = ["BOUNDS", "FAMILIES", "IMPLS", "OPTIMIZERS", "Bound", "OptimizerSpec", "check_lr", "choose_impl",
           "get_spec", "resolve_hparams"]

IMPLS = ("auto", "forloop", "foreach", "fused")
EXTRA = "optimizers"  # the pyproject extra that installs the third-party optimizer packages
_ADAM = {"beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.0}
_SCHEDULE_FREE = {"warmup_steps": 0, "r": 0.0, "weight_lr_power": 2.0}  # no warm-up, uniform average


def _tutorial(*, name, cls, defaults, lr_default, lr_range, fixed=None, fused=True, state=0, step=False, family="",
              doc=""):
    """An entry of the tutorials' seven: real torch.optim classes, lr-affine and elementwise."""
    return OptimizerSpec(name, cls, defaults, lr_default, lr_range, fixed or {}, lr_affine=True, elementwise=True,
                         fused=fused, foreach=True, state_per_param=state, step_counter=step,
                         reference=getattr(references, name), tutorial=True, family=family, doc=doc.strip())


def _entry(*, name, cls, defaults, lr_default, lr_range, doc, **declared):
    """Any other entry: everything it can do is declared by name."""
    return OptimizerSpec(name, cls, defaults, lr_default, lr_range, doc=doc.strip(), **declared)


OPTIMIZERS: dict[str, OptimizerSpec] = {s.name: s for s in [
    _tutorial(name="sgd", cls="torch.optim.SGD", defaults={"weight_decay": 0.0}, lr_default=0.05,
              lr_range=(1e-4, 3.0), fixed={"momentum": 0.0}, family="sgd",
              doc="""
        Plain (stochastic) gradient descent: ``g += wd·θ; θ -= lr·g``.
        With ``batch_size=full`` this is gradient descent (GD), with 1 it is SGD."""),
    _tutorial(name="momentum", cls="torch.optim.SGD", defaults={"momentum": 0.9, "weight_decay": 0.0},
              lr_default=0.01, lr_range=(1e-4, 1.0), state=1,
              family="sgd", doc="""
        Heavy ball (Polyak): ``g += wd·θ; v = μ·v + g; θ -= lr·v`` (v starts at g).
        The textbook form ``v = γ·v + η·g; θ -= v`` is identical for constant lr."""),
    _tutorial(name="nesterov", cls="torch.optim.SGD", defaults={"momentum": 0.9, "weight_decay": 0.0},
              lr_default=0.01, lr_range=(1e-4, 1.0),
              fixed={"nesterov": True}, state=1, family="sgd", doc="""
        Nesterov accelerated gradient, PyTorch form: ``g += wd·θ; v = μ·v + g; θ -= lr·(g + μ·v)``.
        Equals the look-ahead form ``v = γ·v + η·∇f(θ' - γ·v); θ' -= v`` with ``θ = θ' - γ·v``."""),
    _tutorial(name="adagrad", cls="torch.optim.Adagrad", defaults={"eps": 1e-10, "weight_decay": 0.0},
              lr_default=0.05, lr_range=(1e-3, 3.0), state=1,
              step=True, family="adaptive", doc="""
        Adagrad: ``g += wd·θ; s += g²; θ -= lr·g / (sqrt(s) + eps)`` (s starts at 0, no lr decay)."""),
    _tutorial(name="rmsprop", cls="torch.optim.RMSprop", defaults={"alpha": 0.99, "eps": 1e-8, "weight_decay": 0.0},
              lr_default=1e-3,
              lr_range=(1e-5, 1e-1), fused=False, state=1, step=True, family="adaptive", doc="""
        RMSprop (uncentered, no momentum): ``g += wd·θ; s = α·s + (1-α)·g²;
        θ -= lr·g / (sqrt(s) + eps)`` (s starts at 0; torch has no fused RMSprop)."""),
    _tutorial(name="adam", cls="torch.optim.Adam", defaults=dict(_ADAM), lr_default=1e-3, lr_range=(1e-5, 1e-1),
              state=2, step=True, family="adaptive",
              doc="""
        Adam: ``g += wd·θ; m = β1·m + (1-β1)·g; s = β2·s + (1-β2)·g²;
        m̂ = m/(1-β1^t); ŝ = s/(1-β2^t); θ -= lr·m̂ / (sqrt(ŝ) + eps)``."""),
    _tutorial(name="adamw", cls="torch.optim.AdamW", defaults={**_ADAM, "weight_decay": 0.01}, lr_default=1e-3,
              lr_range=(1e-5, 1e-1), state=2, step=True,
              family="adaptive", doc="""
        AdamW (decoupled weight decay): ``θ *= 1 - lr·wd``, then the Adam step without wd in g."""),
    # --- Adam's relatives in torch.optim: lr-affine and elementwise (stacked exactly), except Adafactor.
    _entry(name="nadam", cls="torch.optim.NAdam", defaults={**_ADAM, "momentum_decay": 0.004}, lr_default=2e-3,
           lr_range=(1e-5, 1e-1), doc="""
        NAdam (Dozat 2016; Adam with Nesterov momentum), PyTorch form, ψ = momentum_decay:
        ``g += wd·θ; μ_t = β1·(1 - ½·0.96^(t·ψ)); P_t = μ_1···μ_t; m = β1·m + (1-β1)·g;
        s = β2·s + (1-β2)·g²; d = sqrt(s/(1-β2^t)) + eps;
        θ -= lr·(1-μ_t)/(1-P_t)·g/d + lr·μ_{t+1}/(1-P_t·μ_{t+1})·m/d``.
        State: m, s, the step t and the running product P_t (a scalar per tensor).""",
           bounds={"momentum_decay": (0.0, math.inf, True, False)}, foreach=True, lr_affine=True, elementwise=True,
           state_per_param=2, step_counter=True, extra_scalars=1, reference=references.nadam, family="adam_variant"),
    _entry(name="radam", cls="torch.optim.RAdam", defaults=dict(_ADAM), lr_default=3e-3, lr_range=(1e-5, 1e-1), doc="""
        RAdam (Liu et al. 2020), rectified Adam: ``g += wd·θ; m = β1·m + (1-β1)·g; s = β2·s + (1-β2)·g²;
        m̂ = m/(1-β1^t); ρ∞ = 2/(1-β2) - 1; ρ_t = ρ∞ - 2t·β2^t/(1-β2^t)``; while ``ρ_t ≤ 5`` (the
        first steps) ``θ -= lr·m̂`` (momentum SGD), then with ``r_t = sqrt((ρ_t-4)(ρ_t-2)ρ∞ /
        ((ρ∞-4)(ρ∞-2)ρ_t))``: ``θ -= lr·r_t·m̂·sqrt(1-β2^t) / (sqrt(s) + eps)``. The rectification
        keeps the first steps small, hence a default lr 3x Adam's.""",
           foreach=True, lr_affine=True, elementwise=True, state_per_param=2, step_counter=True,
           reference=references.radam,
           family="adam_variant"),
    _entry(name="adamax", cls="torch.optim.Adamax", defaults=dict(_ADAM), lr_default=2e-3, lr_range=(1e-5, 1e-1),
           doc="""
        Adamax (Kingma & Ba 2015, the ∞-norm Adam): ``g += wd·θ; m = β1·m + (1-β1)·g;
        u = max(β2·u, |g| + eps); θ -= lr/(1-β1^t)·m/u`` (u starts at 0; eps inside the max).""",
           foreach=True, lr_affine=True, elementwise=True, state_per_param=2, step_counter=True,
           reference=references.adamax,
           family="adam_variant"),
    _entry(name="adadelta", cls="torch.optim.Adadelta", defaults={"rho": 0.9, "eps": 1e-6, "weight_decay": 0.0},
           lr_default=1.0, lr_range=(1e-2, 1e2), doc="""
        Adadelta (Zeiler 2012), ρ = rho: ``g += wd·θ; v = ρ·v + (1-ρ)·g²;
        Δ = sqrt(u + eps)/sqrt(v + eps)·g; u = ρ·u + (1-ρ)·Δ²; θ -= lr·Δ`` (v, u start at 0; eps
        inside the square roots; lr = 1 is the paper's method, torch scales Δ by lr).""",
           bounds={"rho": (0.0, 1.0, True, True)}, foreach=True, lr_affine=True, elementwise=True, state_per_param=2,
           step_counter=True, reference=references.adadelta, family="adam_variant"),
    _entry(name="adafactor", cls="torch.optim.Adafactor",
           defaults={"beta2_decay": -0.8, "d": 1.0, "weight_decay": 0.0}, lr_default=1e-2,
           lr_range=(1e-4, 1.0), doc="""
        Adafactor (Shazeer & Stern 2018), PyTorch form, c = beta2_decay: ``β̂2 = 1 - t^c;
        ρ_t = min(lr, 1/sqrt(t)); α = max(ε2, RMS(θ))·ρ_t; θ *= 1 - lr·wd``; a matrix keeps row and
        column means of g², ``R = β̂2·R + (1-β̂2)·mean_cols(g²)``, ``C = β̂2·C + (1-β̂2)·mean_rows(g²)``,
        ``v̂ = R·C / mean(R)``; a vector keeps ``v̂ = β̂2·v̂ + (1-β̂2)·g²``; then
        ``u = g / sqrt(max(v̂, ε1²)); θ -= α·u / max(1, RMS(u)/d)``. ε1 = the dtype's machine
        epsilon, ε2 = 1e-3 (fixed). Relative steps (α ∝ RMS(θ)) and the norms make it neither
        lr-affine nor elementwise: never stacked. The reference covers vectors (the factored
        matrix path is torch's alone).""",
           fixed={"eps": (None, 1e-3)}, bounds={"beta2_decay": (-math.inf, 0.0, False, True),
                                                "d": (1.0, math.inf, True, False)},
           foreach=True, state_per_param=1, factored=True, step_counter=True, reference=references.adafactor,
           family="adam_variant"),
    # --- newer methods: Lion (lion-pytorch), Muon (torch.optim, with AdamW), schedule-free (schedulefree).
    _entry(name="lion", cls="lion_pytorch.Lion", defaults={"beta1": 0.9, "beta2": 0.99, "weight_decay": 0.0},
           lr_default=1e-3, lr_range=(1e-5, 1e-1), doc="""
        Lion (Chen et al. 2023, lion-pytorch): ``θ *= 1 - lr·wd; c = β1·m + (1-β1)·g;
        θ -= lr·sign(c); m = β2·m + (1-β2)·g`` (m starts at 0). Every coordinate moves by exactly
        lr (plus decay): its authors run it at 3-10x below AdamW's lr on large models; on the
        suite's small tasks Adam's default works (tuning decides). The foreach implementation is
        lion-pytorch's own class.""",
           impl_cls={"foreach": "lion_pytorch.foreach.Lion"}, foreach=True, lr_affine=True, elementwise=True,
           state_per_param=1,
           reference=references.lion, package="lion-pytorch", family="modern"),
    _entry(name="muon", cls="suite.optim.muon.MuonWithAdamW",
           defaults={"momentum": 0.95, "ns_steps": 5, **_ADAM, "weight_decay": 0.01}, lr_default=1e-3,
           lr_range=(1e-5, 1e-1), doc="""
        Muon (Jordan et al. 2024; torch.optim.Muon) on the hidden 2-D weight matrices, AdamW
        (torch.optim.AdamW) on every other parameter, one lr for both. Muon on a matrix θ of shape
        A×B with gradient g: ``B = μ·B + (1-μ)·g; B̃ = (1-μ)·g + μ·B`` (Nesterov); ``O = NS_k(B̃)``
        (k = ns_steps Newton-Schulz iterations towards the orthogonal factor U·Vᵀ of B̃, in
        bfloat16); ``θ *= 1 - lr·wd; θ -= lr·0.2·sqrt(max(A, B))·O`` (Moonshot's
        ``match_rms_adamw`` scale, so the AdamW lr and wd carry over). The rest: AdamW with β1,
        β2, eps, wd. Hidden matrices (:func:`suite.optim.muon.muon_split`): the 2-D weights
        strictly between the model's first and last weight tensor in registration order; the task
        models have them only on the image tasks (the MLP's middle layers, the CNN's first dense
        layer), so on regression and tiny_mlp this entry is AdamW. lr-affine (the state does not
        see lr) but not elementwise (NS mixes a whole matrix): never stacked. No float64
        reference: NS runs in bfloat16. fused/foreach apply to the AdamW part. State: the AdamW
        part's m, s and step; Muon's matrices keep one buffer B (1x, no step).""",
           bounds={"ns_steps": (1, 99, True, True)}, integers=("ns_steps",), foreach=True, lr_affine=True, fused=True,
           state_per_param=2, step_counter=True, family="modern"),
    _entry(name="schedulefree_sgd", cls="schedulefree.SGDScheduleFree",
           defaults={"momentum": 0.9, "weight_decay": 0.0}, lr_default=0.1,
           lr_range=(1e-3, 1e1), doc="""
        Schedule-free SGD (Defazio et al. 2024, schedulefree), β = momentum: the gradient is taken
        at ``y = (1-β)·z + β·x``: ``g = ∇f(y) + wd·y; z -= lr·g; x = (1-c_t)·x + c_t·z`` with
        ``c_t = 1/t`` (uniform averaging: no warm-up, r = 0). The parameters θ hold y while
        training and x in eval mode: the loop evaluates at θ = x (``optimizer.eval()``) and
        trains at θ = y (``optimizer.train()``). z depends on lr: not lr-affine, never stacked.""",
           fixed=dict(_SCHEDULE_FREE), eval_mode=True, foreach=True, state_per_param=1,
           reference=references.schedulefree_sgd,
           package="schedulefree", family="modern"),
    _entry(name="schedulefree_adamw", cls="schedulefree.AdamWScheduleFree", defaults=dict(_ADAM), lr_default=2.5e-3,
           lr_range=(1e-5, 1.0), doc="""
        Schedule-free AdamW (Defazio et al. 2024, schedulefree), at ``y = (1-β1)·z + β1·x``:
        ``g = ∇f(y); s = β2·s + (1-β2)·g²; u = g/(sqrt(s/(1-β2^t)) + eps) + wd·y; z -= lr·u;
        x = (1-c_t)·x + c_t·z``, ``c_t = 1/t``. As schedulefree_sgd: evaluated at θ = x, trained
        at θ = y, never stacked. State: z and s (its step count lives in the parameter group).""",
           fixed=dict(_SCHEDULE_FREE), eval_mode=True, foreach=True, state_per_param=2,
           reference=references.schedulefree_adamw, package="schedulefree", family="modern"),
    # --- quasi-Newton, for the GD regime.
    _entry(name="lbfgs", cls="torch.optim.LBFGS", defaults={"history_size": 10}, lr_default=1.0, lr_range=(1e-3, 1e1),
           doc="""
        L-BFGS (torch.optim.LBFGS), one iteration per training step (max_iter = 1) and no line
        search, so a step costs one gradient like every other entry: ``d = -H·g`` by the
        two-loop recursion over the last m = history_size pairs ``(s, y) = (θ_t - θ_{t-1},
        g_t - g_{t-1})`` (kept when ``sᵀy > 1e-10``), ``H₀ = sᵀy/yᵀy``; ``θ += t·d`` with
        ``t = lr·min(1, 1/‖g‖₁)`` on the first step and ``t = lr`` after. Full batch only (the
        pairs need one function); its step re-evaluates the loss through a closure. State (flat
        over all parameters): d and the previous gradient, plus up to m pairs.""",
           fixed={"max_iter": 1, "line_search_fn": None}, bounds={"history_size": (1, math.inf, True, False)},
           integers=("history_size",), closure=True, full_batch_only=True, state_per_param=2,
           reference=references.lbfgs, family="quasi_newton"),
]}


def get_spec(name: str) -> OptimizerSpec:
    if name not in OPTIMIZERS:
        raise ConfigError(
            f"unknown optimizer {name!r}; valid names: {', '.join(OPTIMIZERS)}. "
            f"Pick one with optimizer=<name>, or bring your own: conf/optimizer/<name>.yaml with cls: "
            f"<its import path> in a config directory given with --config-dir (README: bring your own optimizer)."
        )
    return OPTIMIZERS[name]


def resolve_hparams(name: str, given: Mapping[str, Any]) -> dict[str, Any]:
    """Registry defaults overridden by ``given``; unknown keys and out-of-range values raise."""
    spec = get_spec(name)
    unknown = sorted(set(given) - set(spec.defaults))
    if unknown:
        raise ConfigError(
            f"optimizer {name!r} has no hyperparameter {', '.join(unknown)}; "
            f"it takes: {', '.join(spec.defaults) or '(none besides lr)'}."
        )
    hp = {**spec.defaults, **{k: v for k, v in given.items() if v is not None}}
    for key, value in hp.items():
        lo, hi, lo_in, hi_in = spec.bound(key)
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        ok = ok and (value >= lo if lo_in else value > lo) and (value <= hi if hi_in else value < hi)
        if not ok:
            interval = f"{'[' if lo_in else '('}{lo}, {hi}{']' if hi_in else ')'}"
            raise ConfigError(
                f"optimizer {name!r}: {key}={value!r} is out of range; it must lie in {interval}. "
                f"Fix it with optimizer.{key}=<value>."
            )
        if key in spec.integers:
            if value != int(value):
                raise ConfigError(f"optimizer {name!r}: {key}={value!r} must be a whole number "
                                  f"(e.g. optimizer.{key}={int(spec.defaults[key])}).")
            hp[key] = int(value)
    return hp


def check_lr(lr: Any) -> float:
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
        raise ConfigError(f"lr={lr!r} is invalid; the learning rate must be a finite number > 0 (e.g. lr=0.01).")
    return float(lr)


def choose_impl(spec: OptimizerSpec, impl: str) -> str:
    """Resolve ``auto`` to the fastest implementation the class offers: fused where it exists.

    Measured on CPU (torch 2.13, optimizer step alone, 31 to 3.3M parameters): fused is
    2.0-3.4x faster than for-loop for Adam, AdamW and Adagrad, 1.3-3.6x for momentum and
    Nesterov, and ~1x for plain SGD (never slower); foreach is about the for-loop's speed.
    """
    if impl not in IMPLS:
        raise ConfigError(f"optimizer.impl={impl!r} is invalid; valid: {', '.join(IMPLS)}.")
    if impl == "auto":
        return "fused" if spec.fused else "foreach" if spec.foreach else "forloop"
    cls = spec.cls.rpartition(".")[2]
    if impl == "fused" and not spec.fused:
        raise ConfigError(f"torch has no fused {cls} (optimizer {spec.name!r}); use optimizer.impl=foreach or auto.")
    if impl == "foreach" and not spec.foreach:
        raise ConfigError(f"{cls} has no foreach implementation (optimizer {spec.name!r}); "
                          f"use optimizer.impl=forloop or auto.")
    return impl
