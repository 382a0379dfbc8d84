"""From a composed config to a validated run: every value checked, the task built, ``lr=tuned`` applied.

Validation happens here, before any work, so bad input stops with one message and nothing is
lost. (A typed ConfigStore schema cannot express ``batch_size: int | "full"`` in OmegaConf, and
range checks need the task's size, so values are checked here with messages that name the fix.)
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from suite.optim.build import check_external
from suite.optim.external import DECLARATIONS, is_external, register_external
from suite.optim.registry import OptimizerSpec, check_lr, choose_impl, get_spec, resolve_hparams
from suite.run import validate as V
from suite.store.identity import cell_name, run_config, run_id
from suite.store.tuned import read_tuned, tuned_path
from suite.tasks import TASKS, build_task, check_task_name
from suite.train.device import DTYPES, resolve_device
from suite.types import ConfigError, RunSpec, Task
from suite.cell import is_full_batch

SAMPLINGS = ("shuffle", "sequential", "replacement")
REDUCTIONS = ("mean", "sum")


@dataclass
class Prepared:
    spec: RunSpec
    task: Task
    config: dict[str, Any]  # the run's identity (hashed into run_id)

    @property
    def run_id(self) -> str:
        return run_id(self.config)


def resolve_batch_size(value: Any, n: int) -> int:
    if value == "full":
        return n
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= n:
        raise ConfigError(
            f"batch_size={value!r} is invalid for this task: it must be an integer from 1 to n={n}, "
            f"or 'full' (gradient descent on all {n} samples)."
        )
    return value


def optimizer_file(name: str) -> str:
    """The YAML file Hydra composed optimizer ``name`` from (for messages), as well as this process
    can tell: the search path's directories, the file of the chosen option or named after it."""
    dirs, stems = [], [name]
    if HydraConfig.initialized():  # a console script: every source of its search path (--config-dir too)
        runtime = HydraConfig.get().runtime
        dirs = [s.path for s in runtime.config_sources if s.schema == "file"]
        stems.insert(0, runtime.choices.get("optimizer") or name)
    elif GlobalHydra.instance().is_initialized():
        dirs = [s.full_path().removeprefix("file://") for s in GlobalHydra.instance().config_loader().get_sources()
                if s.scheme() == "file"]
    for stem in stems:
        for d in dirs:
            path = Path(d) / "optimizer" / f"{stem}.yaml"
            if path.is_file() and (OmegaConf.load(path) or {}).get("name") == name:
                return str(path)
    return f"optimizer/{name}.yaml (in your config directory)"


def register_optimizer(options: Mapping[str, Any]) -> OptimizerSpec:
    """The entry of a composed ``optimizer`` config. A user's YAML (it names ``cls``) is registered
    for this process and its class checked (imports, is an Optimizer, takes the YAML's arguments)."""
    if not is_external(options):
        return get_spec(options.get("name"))
    spec = register_external(options, optimizer_file(str(options.get("name"))))
    check_external(spec)
    return spec


def prepare(cfg: DictConfig | Mapping[str, Any]) -> Prepared:
    """Validate everything and build the task; raises :class:`ConfigError`/`DataError` with a fix."""
    c = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    V.check_keys(c, V.RUN_KEYS, "")
    V.results_dir(c.get("results_dir"))
    V.flags(c)
    task_options, opt_options = dict(c["task"]), dict(c["optimizer"])
    entry = TASKS[check_task_name(V.check_name("task", task_options.get("name")))]
    V.task_option_types(entry.name, task_options, entry.defaults)
    if "data_seed" in task_options:
        V.seed("task.data_seed", task_options["data_seed"])
    V.check_name("optimizer", opt_options.get("name"))
    opt = register_optimizer(opt_options)
    opt_name, impl = opt_options.pop("name"), opt_options.pop("impl", "auto")
    choose_impl(opt, impl)  # refuse a bad impl before any work; the spec keeps the name asked for
    if opt.external:  # the YAML's declarations are the entry, not hyperparameters
        opt_options = {k: v for k, v in opt_options.items() if k not in DECLARATIONS}
    hparams = resolve_hparams(opt_name, opt_options)
    tuned = c.get("lr") == "tuned"  # lr=tuned: the cell's best from suite-tune, applied below
    lr = check_lr(opt.lr_default if c.get("lr") is None or tuned else c["lr"])
    epochs, max_steps, max_seconds = V.budget(c["budget"])
    eval_spec = V.eval_spec(c["eval"])
    sampling = V.choice("sampling", c["sampling"], SAMPLINGS)
    reduction = V.choice("accumulation_reduction", c["accumulation_reduction"], REDUCTIONS)
    dtype = V.choice("dtype", c["dtype"], tuple(DTYPES))
    device = resolve_device(str(c["device"]))
    target = V.target(c.get("target"))
    task = build_task(task_options)
    batch_size = resolve_batch_size(c["batch_size"], task.n_train)
    if opt.full_batch_only and not is_full_batch(batch_size, task.n_train):
        raise ConfigError(
            f"optimizer {opt_name!r} runs at batch_size=full only (its curvature estimates need the same "
            f"function at every step), not batch_size={c['batch_size']}. Use batch_size=full (n={task.n_train})."
        )
    k = c["accumulation_steps"]
    if not V.is_int(k) or k < 1 or batch_size % k:
        raise ConfigError(
            f"accumulation_steps={k!r} must be a positive integer that divides batch_size={batch_size} "
            f"(micro_batch = batch_size / accumulation_steps)."
        )
    if not V.is_int(c["warmup_steps"]) or c["warmup_steps"] < 0:
        raise ConfigError(f"warmup_steps={c['warmup_steps']!r} must be an integer >= 0.")
    V.seed("seed", c["seed"])
    if not (V.is_number(c["divergence_factor"]) and c["divergence_factor"] > 1):
        raise ConfigError(f"divergence_factor={c['divergence_factor']!r} must be a number > 1.")
    spec = RunSpec(
        task=task.name, optimizer=opt_name, hparams=hparams, lr=lr, batch_size=batch_size, seed=c["seed"],
        accumulation_steps=k, accumulation_reduction=reduction, sampling=sampling, epochs=epochs,
        max_steps=max_steps, max_seconds=max_seconds, eval=eval_spec, warmup_steps=c["warmup_steps"],
        divergence_factor=float(c["divergence_factor"]), impl=impl, device=device, dtype=dtype,
        lr_schedule=V.lr_schedule(c.get("lr_schedule")), target=target.check_task(task) if target else None,
        stop_at_target=c.get("stop_at_target", False),
    )
    if tuned:
        search = (c.get("tune") or {}).get("search") or ()
        spec = apply_tuned(spec, task_options, task.n_train, search, c["results_dir"])
    return Prepared(spec, task, run_config(spec, task_options))


def apply_tuned(spec: RunSpec, task_options: Mapping[str, Any], n_train: int, searched: Iterable[str],
                results_dir: str | Path) -> RunSpec:
    """``lr=tuned``: the spec with the cell's tuned lr and searched hyperparameters."""
    name = cell_name(spec, task_options, n_train, searched)
    tuned = read_tuned(results_dir, name)
    if tuned is None:
        batch = "full" if is_full_batch(spec.batch_size, n_train) else spec.batch_size
        raise ConfigError(
            f"lr=tuned: cell {name} has no tuned result under {tuned_path(results_dir, name).parent}. Tune it first "
            f"with the same overrides, e.g.: suite-tune task={spec.task} optimizer={spec.optimizer} "
            f"batch_size={batch} results_dir={results_dir} (plus any other overrides of this command)."
        )
    if tuned.get("lr") is None:
        raise ConfigError(
            f"lr=tuned: cell {name} has no tuned lr: no tuning trial finished without diverging "
            f"({tuned.get('edge') or tuned.get('lr_source')}). Tune it over lower lrs (tune.lr_range=[lo,hi] "
            f"or tune.widen=true) or pass an lr=<value>.")
    hparams = resolve_hparams(spec.optimizer, {**spec.hparams, **tuned["hparams"]})
    return dataclasses.replace(spec, lr=float(tuned["lr"]), hparams=hparams)
