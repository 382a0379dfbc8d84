"""What a tuning study searches and how: the search space, the samplers, the pruners.

Every searched hyperparameter lives on a log scale, the natural scale of its effect (Google's
tuning playbook): ``lr`` in the optimizer registry's ``lr_range``; momentum, β1, β2 and RMSprop's
α as ``1 − value`` (AlgoPerf's ``one_minus_beta1``), so 0.9, 0.99 and 0.999 are evenly spaced;
eps and weight decay as themselves.

Samplers are Optuna's, with every option that shapes their proposals set explicitly here or in
``conf/tune/default.yaml``, so a study does not drift when Optuna changes a default.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np
import optuna
from omegaconf import DictConfig, OmegaConf

from suite.optim.registry import get_spec, resolve_hparams
from suite.run import validate as V
from suite.tune.options import check_options, search_list
from suite.types import ConfigError


@dataclass(frozen=True)
class Searchable:
    param: str  # the Optuna parameter name (the searched scale)
    default_range: tuple[float, float]
    to_value: Callable[[float], float]  # searched value -> optimizer hyperparameter


def _one_minus(x: float) -> float:
    return 1.0 - x


def _same(x: float) -> float:
    return x


SEARCHABLE: dict[str, Searchable] = {
    "momentum": Searchable("one_minus_momentum", (1e-3, 0.5), _one_minus),  # μ in [0.5, 0.999]
    "beta1": Searchable("one_minus_beta1", (1e-2, 0.5), _one_minus),  # β1 in [0.5, 0.99]
    "beta2": Searchable("one_minus_beta2", (1e-4, 0.1), _one_minus),  # β2 in [0.9, 0.9999]
    "alpha": Searchable("one_minus_alpha", (1e-3, 0.5), _one_minus),  # RMSprop's α in [0.5, 0.999]
    "eps": Searchable("eps", (1e-10, 1e-4), _same),
    "weight_decay": Searchable("weight_decay", (1e-6, 1e-1), _same),
}


@dataclass(frozen=True)
class TuneSpec:
    """``cfg.tune``, validated against the cell's optimizer."""

    n_trials: int
    batch: int
    sampler: str
    seed: int
    pruner: str
    prune_after: float  # fraction of the run's steps before a trial may be pruned
    lr_range: tuple[float, float]
    ranges: dict[str, tuple[float, float]]  # searched hyperparameter -> range on its searched scale
    storage: str | None
    stale_after_s: float | None
    options: dict[str, dict[str, Any]] = field(default_factory=dict)  # per sampler/pruner options
    widen: bool = False  # widen the lr range where the optimum sits at its edge (suite.tune.widening)
    seeds: tuple[int, ...] | None = None  # each trial trains once per seed and scores their mean (None: the run's seed)
    refine: int = 0  # trials spread within a quarter decade of the best lr before choosing (suite.tune.refine)
    resolve: int = 0  # at most this many more trials, in bisection rounds, until the optimum is resolved
    retune: int = 0  # which re-tuning of its cell this study is (0: the primary; its name gets ~r<retune>)

    @property
    def searched(self) -> tuple[str, ...]:
        return tuple(self.ranges)

    def sampler_record(self) -> dict[str, Any]:
        """What the study records about its sampler (continuing it with other settings is refused)."""
        record = {"sampler": self.sampler, "seed": self.seed, **self.options.get(self.sampler, {})}
        if self.sampler == "grid":  # the grid itself depends on these
            record.update(lr_range=list(self.lr_range), n_trials=self.n_trials)
        return record


def _count(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(
            f"tune.{name}={value!r} is invalid; it must be an integer >= {low} (e.g. tune.{name}={max(low, 1) * 4}).")
    return value


def _range(name: str, value: Any) -> tuple[float, float]:
    ok = isinstance(value, (list, tuple)) and len(value) == 2 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)
    if not ok or not 0 < value[0] < value[1]:
        raise ConfigError(
            f"tune.{name}={value!r} is invalid; it must be [low, high] with 0 < low < high "
            f"(searched on a log scale), e.g. tune.{name}=[1e-4,1.0]."
        )
    return float(value[0]), float(value[1])


def _searched_ranges(optimizer: str, search: Any, overrides: Mapping[str, Any]) -> dict[str, tuple[float, float]]:
    takes = [k for k in get_spec(optimizer).defaults if k in SEARCHABLE]
    names = list(search or [])
    unknown = [n for n in names if n not in takes]
    if unknown:
        raise ConfigError(
            f"tune.search: optimizer {optimizer!r} has no searchable hyperparameter {', '.join(map(str, unknown))}; "
            f"it can search: {', '.join(takes) or '(only lr)'}. E.g. tune.search=[{takes[0] if takes else ''}]."
        )
    by_param = {SEARCHABLE[n].param: n for n in names}
    overrides = {k: v for k, v in overrides.items() if v is not None}  # null: the default range
    unknown = sorted(set(overrides) - {s.param for s in SEARCHABLE.values()})
    if unknown:
        raise ConfigError(f"tune.ranges: unknown {', '.join(unknown)}; valid: "
                          f"{', '.join(s.param for s in SEARCHABLE.values())}.")
    stray = sorted(set(overrides) - set(by_param))
    if stray:
        raise ConfigError(
            f"tune.ranges has {', '.join(stray)}, which this study does not search; searched: "
            f"{', '.join(by_param) or '(only lr: set tune.lr_range)'}. Add the hyperparameter to tune.search first."
        )
    ranges = {}
    for name in names:
        s = SEARCHABLE[name]
        low, high = _range(f"ranges.{s.param}", overrides[s.param]) if s.param in overrides else s.default_range
        try:  # both ends must be valid optimizer values (e.g. 1 - momentum < 1)
            resolve_hparams(optimizer, {name: s.to_value(low)})
            resolve_hparams(optimizer, {name: s.to_value(high)})
        except ConfigError as e:
            raise ConfigError(f"tune.ranges.{s.param}=[{low}, {high}] gives invalid {name} values: {e}") from None
        ranges[name] = (low, high)
    return ranges


def tune_spec(tune: Mapping[str, Any], optimizer: str) -> TuneSpec:
    """Validate ``cfg.tune`` for a cell whose optimizer is ``optimizer``; one clear error per mistake."""
    t = OmegaConf.to_container(tune, resolve=True) if isinstance(tune, DictConfig) else dict(tune)
    options = check_options(t)
    sampler, pruner = t.get("sampler"), t.get("pruner")
    if not isinstance(sampler, str) or sampler not in SAMPLERS:
        raise ConfigError(f"tune.sampler={sampler!r} is invalid; valid: {', '.join(SAMPLERS)}.")
    if not isinstance(pruner, str) or pruner not in PRUNERS:
        raise ConfigError(f"tune.pruner={pruner!r} is invalid; valid: {', '.join(PRUNERS)}.")
    prune_after = t.get("prune_after", 0.0)
    if isinstance(prune_after, bool) or not isinstance(prune_after, (int, float)) or not 0 <= prune_after < 1:
        raise ConfigError(f"tune.prune_after={prune_after!r} must be a fraction of the run in [0, 1).")
    stale = t.get("stale_after_s")
    if stale is not None and (isinstance(stale, bool) or not isinstance(stale, (int, float)) or stale <= 0):
        raise ConfigError(f"tune.stale_after_s={stale!r} must be null or a number of seconds > 0.")
    seeds = t.get("seeds")
    if seeds is not None:  # null: the run's seed; else each trial trains once per seed
        seeds = V.seeds("tune.seeds", seeds)
    widen = t.get("widen", False)
    if not isinstance(widen, bool):
        raise ConfigError(f"tune.widen={widen!r} must be true or false.")
    storage = t.get("storage")
    if storage is not None and (not isinstance(storage, str) or not storage.strip()):
        raise ConfigError(f"tune.storage={storage!r} must be null (the journal file under results_dir) or a storage "
                          f"URL string.")
    lr_range = get_spec(optimizer).lr_range if t.get("lr_range") is None else _range("lr_range", t["lr_range"])
    ranges = _searched_ranges(optimizer, search_list(t.get("search")), dict(t.get("ranges") or {}))
    if sampler == "grid" and ranges:
        raise ConfigError(
            "tune.sampler=grid searches the learning rate only (a log-spaced lr grid, the DeepOBS protocol); "
            "drop tune.search or pick tune.sampler=tpe|qmc|random."
        )
    return TuneSpec(
        n_trials=_count("n_trials", t.get("n_trials"), 1), batch=_count("batch", t.get("batch", 1), 1),
        sampler=sampler, seed=V.seed("tune.seed", t.get("seed", 0)), pruner=pruner, prune_after=float(prune_after),
        lr_range=(float(lr_range[0]), float(lr_range[1])), ranges=ranges, storage=storage,
        stale_after_s=None if stale is None else float(stale), options=options, widen=widen and sampler != "grid",
        seeds=None if seeds is None else tuple(seeds), refine=_count("refine", t.get("refine", 0), 0),
        resolve=_count("resolve", t.get("resolve", 0), 0),
        retune=_count("retune", t.get("retune", 0), 0),
    )


# Sampled values are rounded to this many significant digits where they are drawn: the trial trains
# and is recorded with the rounded value, and run ids hash it, so last-bit noise in a sampler's
# arithmetic (a different BLAS, summation order) never changes which run a trial is.
SIGNIFICANT_DIGITS = 12


def canonical(value: float, low: float, high: float) -> float:
    """``value`` rounded to :data:`SIGNIFICANT_DIGITS` significant digits, kept within [low, high]."""
    return min(max(float(f"{value:.{SIGNIFICANT_DIGITS}g}"), low), high)


def values_of(params: Mapping[str, float], spec: TuneSpec) -> tuple[float, dict[str, float]]:
    """A trial's learning rate and searched hyperparameters (as optimizer values) from its Optuna
    parameters, canonicalized."""
    lr = canonical(params["lr"], *spec.lr_range)
    hparams = {}
    for name, (low, high) in spec.ranges.items():
        s = SEARCHABLE[name]
        hparams[name] = s.to_value(canonical(params[s.param], low, high))
    return lr, hparams


def suggest(trial: optuna.Trial, spec: TuneSpec) -> tuple[float, dict[str, float]]:
    """The trial's learning rate and searched hyperparameters (as optimizer values, canonical)."""
    params = {"lr": trial.suggest_float("lr", *spec.lr_range, log=True)}
    for name, (low, high) in spec.ranges.items():
        s = SEARCHABLE[name]
        params[s.param] = trial.suggest_float(s.param, low, high, log=True)
    return values_of(params, spec)


# --- samplers: name -> builder(spec, seed). ``seed`` is the study seed mixed with the trial number
# (see suite.tune.tuner); QMC's scrambling and the grid's order use the study seed alone, since every
# trial must see the same sequence.

def _tpe(spec: TuneSpec, seed: int) -> optuna.samplers.BaseSampler:
    o = spec.options.get("tpe", {})
    # gamma, weights, consider_prior, prior_weight, consider_magic_clip and consider_endpoints are
    # deprecated since Optuna 4.9 and frozen at their defaults (best 10% up to 25 form the good
    # density; flat weights for the newest 25 trials); passing them would only warn.
    return optuna.samplers.TPESampler(
        n_startup_trials=int(o.get("n_startup_trials", 5)), n_ei_candidates=int(o.get("n_ei_candidates", 24)),
        seed=seed, multivariate=bool(o.get("multivariate", True)),
        group=bool(o.get("group", False)), constant_liar=bool(o.get("constant_liar", True)),
    )


def _qmc(spec: TuneSpec, seed: int) -> optuna.samplers.BaseSampler:
    o = spec.options.get("qmc", {})
    with warnings.catch_warnings():  # "experimental since v3.0": a note for Optuna's users, not ours
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.QMCSampler(
            qmc_type=str(o.get("qmc_type", "sobol")), scramble=bool(o.get("scramble", True)), seed=spec.seed,
            independent_sampler=optuna.samplers.RandomSampler(seed=seed), warn_asynchronous_seeding=False,
            warn_independent_sampling=False,
        )


def _random(spec: TuneSpec, seed: int) -> optuna.samplers.BaseSampler:
    return optuna.samplers.RandomSampler(seed=seed)


def lr_grid(spec: TuneSpec) -> list[float]:
    """``n_trials`` learning rates, log-spaced over the lr range, both ends included."""
    low, high = spec.lr_range
    return [float(v) for v in np.geomspace(low, high, spec.n_trials)]


class AskTellGridSampler(optuna.samplers.GridSampler):
    """Optuna's grid sampler for ask-and-tell studies of one searched ``lr``: without its
    end-of-grid ``study.stop()`` (which only works inside ``study.optimize``; the claim loop stops at
    ``n_trials``, the grid's size), and with grid points assigned by **slot** (see
    ``suite.tune.claims``): the trial in slot s evaluates grid point s, so a trial redone after an
    interrupt (or lost before it drew its lr) keeps its point and a rerun evaluates the same points
    in the same order. Optuna's own rule (grid point = trial number, then a random free point) is
    the fallback where a slot's point is taken."""

    def __init__(self, lrs: list[float], seed: int):
        super().__init__({"lr": lrs}, seed=seed)
        self.space = {"lr": list(lrs)}
        self.size = len(lrs)
        self.slot: int | None = None  # the slot the next ask takes (set by the tuner before asking)

    def after_trial(self, study, trial, state, values) -> None:
        pass

    def before_trial(self, study, trial) -> None:
        slot = trial.user_attrs.get("slot", self.slot)
        drawn = "grid_id" in trial.system_attrs or "lr" in trial.system_attrs.get("fixed_params", {})
        if drawn or slot is None or not 0 <= slot < self.size or self._taken(study, slot):
            return super().before_trial(study, trial)
        study._storage.set_trial_system_attr(trial._trial_id, "search_space", self.space)
        study._storage.set_trial_system_attr(trial._trial_id, "grid_id", slot)

    @staticmethod
    def _taken(study, grid_id: int) -> bool:
        return any(t.system_attrs.get("grid_id") == grid_id and t.state in FINISHED_OR_LIVE
                   for t in study._storage.get_all_trials(study._study_id, deepcopy=False))


FINISHED_OR_LIVE = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED,
                    optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING)


def _grid(spec: TuneSpec, seed: int) -> optuna.samplers.BaseSampler:
    # The seed shuffles the grid (grid id -> lr): one seed for the whole study, as with QMC.
    return AskTellGridSampler(lr_grid(spec), seed=spec.seed)


SAMPLERS: dict[str, Callable[[TuneSpec, int], optuna.samplers.BaseSampler]] = {
    "tpe": _tpe, "qmc": _qmc, "random": _random, "grid": _grid,
}


# --- pruners: name -> builder(spec, total_steps); intermediate values are reported at eval steps.

def _median(spec: TuneSpec, total: int) -> optuna.pruners.BasePruner:
    o = spec.options.get("median", {})
    return optuna.pruners.MedianPruner(
        n_startup_trials=int(o.get("n_startup_trials", 5)), n_warmup_steps=int(spec.prune_after * total),
        interval_steps=int(o.get("interval_steps", 1)), n_min_trials=int(o.get("n_min_trials", 1)),
    )


def _hyperband(spec: TuneSpec, total: int) -> optuna.pruners.BasePruner:
    o = spec.options.get("hyperband", {})
    return optuna.pruners.HyperbandPruner(
        min_resource=max(1, int(spec.prune_after * total)), max_resource=max(total, 2),
        reduction_factor=int(o.get("reduction_factor", 3)),
    )


def _no_pruner(spec: TuneSpec, total: int) -> optuna.pruners.BasePruner:
    return optuna.pruners.NopPruner()


PRUNERS: dict[str, Callable[[TuneSpec, int], optuna.pruners.BasePruner]] = {
    "median": _median, "hyperband": _hyperband, "none": _no_pruner,
}


def first_checked_step(spec: TuneSpec, total: int) -> int | None:
    """The first step whose intermediate value the pruner reads (it reads every evaluation from there
    on), or None when it reads none. The median pruner prunes from its warm-up on and compares other
    trials' values at the same step; Hyperband's first rung is its ``min_resource``. Values before
    it change no decision (the median pruner's interval counts from the warm-up), so they are not
    reported: each report is a write to the study's storage."""
    warmup = int(spec.prune_after * total)
    return {"none": None, "median": warmup, "hyperband": max(1, warmup)}[spec.pruner]
