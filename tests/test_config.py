"""Hydra configs: every YAML under conf/ composes and ``suite.run.prepare`` accepts it; bad values
are refused before any work with a :class:`ConfigError` that names the fix.

The task and optimizer files are found on disk, so a new YAML file is tested with no test edits.
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from suite.cli import CONF_DIR
from suite.optim.registry import OPTIMIZERS
from suite.run import validate as V
from suite.run.prepare import prepare
from suite.tasks import TASKS
from suite.tune.space import tune_spec
from suite.types import ConfigError, DataError, EvalSpec, LRSchedule, RunSpec

CONF = Path(CONF_DIR)
TASK_FILES = sorted(p.stem for p in (CONF / "task").glob("*.yaml"))
OPTIMIZER_FILES = sorted(p.stem for p in (CONF / "optimizer").glob("*.yaml"))
IMAGE_TASKS = ("fashion_mnist", "mnist")


def data_overrides(task: str, fake_dir: Path, real_dir: Path | None) -> list[str]:
    """Image tasks read the fake files, except fashion_mnist where the real files are installed."""
    if task not in IMAGE_TASKS or (task == "fashion_mnist" and real_dir):
        return []
    return [f"task.data_dir={fake_dir}", "task.val_size=20"]


GROUP_FILES = sorted((p.parent.name, p.stem) for p in CONF.glob("*/*.yaml"))
PRIMARY_FILES = sorted(p.stem for p in CONF.glob("*.yaml"))
# groups config.yaml selects by default (others, e.g. study, are added with +group=option)
DEFAULT_GROUPS = {key for entry in OmegaConf.load(CONF / "config.yaml")["defaults"]
                  if not isinstance(entry, str) for key in entry}


@pytest.mark.parametrize("group,name", GROUP_FILES)
def test_every_group_option_composes(group, name, compose):
    """Every option of every group (task, optimizer and the groups other commands add) composes."""
    cfg = compose(f"{'' if group in DEFAULT_GROUPS else '+'}{group}={name}")
    assert cfg[group] is not None and len(cfg[group]) > 0


@pytest.mark.parametrize("name", PRIMARY_FILES)
def test_every_primary_config_composes(name, compose):
    cfg = compose(config_name=name) if "defaults" in OmegaConf.load(CONF / f"{name}.yaml") else \
        OmegaConf.load(CONF / f"{name}.yaml")  # a plain options file (no defaults list) is loaded as is
    assert len(cfg) > 0


def test_every_registry_entry_has_a_yaml_and_back():
    assert set(TASK_FILES) == set(TASKS)
    assert set(OPTIMIZER_FILES) == set(OPTIMIZERS)


@pytest.mark.parametrize("name", TASK_FILES)
def test_task_yaml_composes_and_prepares(name, compose, fake_mnist_dir, fashion_mnist_dir):
    cfg = compose(f"task={name}", *data_overrides(name, fake_mnist_dir, fashion_mnist_dir))
    assert cfg.task.name == name
    prepared = prepare(cfg)
    assert prepared.task.name == name and prepared.spec.task == name
    assert prepared.spec.batch_size == 32 and prepared.spec.optimizer == "sgd"
    assert prepared.config["task_options"]["name"] == name
    if name == "fashion_mnist" and fashion_mnist_dir:
        assert prepared.task.n_train == 50000  # the YAML's defaults: last 10k held out for validation


@pytest.mark.parametrize("name", OPTIMIZER_FILES)
def test_optimizer_yaml_composes_and_prepares(name, compose):
    spec = OPTIMIZERS[name]
    cfg = compose(f"optimizer={name}", *(["batch_size=full"] if spec.full_batch_only else []))
    assert cfg.optimizer.name == name
    values = {k: v for k, v in OmegaConf.to_container(cfg.optimizer).items() if k not in ("name", "impl")}
    assert values == dict(spec.defaults), "the YAML repeats the registry's defaults exactly"
    prepared = prepare(cfg)
    assert prepared.spec.optimizer == name and prepared.spec.lr == spec.lr_default
    assert prepared.spec.hparams == dict(spec.defaults) and prepared.spec.impl == "auto"
    if spec.full_batch_only:  # any other batch size is refused before any work
        with pytest.raises(ConfigError, match="runs at batch_size=full only.*Use batch_size=full"):
            prepare(compose(f"optimizer={name}", "batch_size=32"))


def test_overrides_reach_the_run_spec(compose):
    cfg = compose("task=regression", "task.n=300", "optimizer=adam", "optimizer.beta1=0.8", "optimizer.impl=foreach",
                  "batch_size=full", "accumulation_steps=4", "accumulation_reduction=sum", "sampling=sequential",
                  "lr=0.003", "seed=5", "budget.epochs=2.5", "budget.max_steps=9", "budget.max_seconds=3",
                  "eval.every_steps=2", "warmup_steps=0", "dtype=float64", "device=cpu")
    spec = prepare(cfg).spec
    assert (spec.batch_size, spec.micro_batch, spec.accumulation_steps) == (300, 75, 4)
    assert spec.accumulation_reduction == "sum" and spec.sampling == "sequential" and spec.seed == 5
    assert spec.lr == 0.003 and spec.hparams["beta1"] == 0.8 and spec.impl == "foreach"
    assert (spec.epochs, spec.max_steps, spec.max_seconds) == (2.5, 9, 3)
    assert spec.eval.every_steps == 2 and spec.warmup_steps == 0 and spec.dtype == "float64"
    assert spec.device == "cpu"


def test_same_config_same_run_id_and_any_change_differs(compose):
    a, b = prepare(compose()), prepare(compose())
    assert a.run_id == b.run_id
    for override in ("lr=0.07", "seed=1", "task.n=999", "optimizer.weight_decay=0.1", "sampling=replacement",
                     "budget.epochs=2", "eval.points=10", "warmup_steps=4"):
        assert prepare(compose(override)).run_id != a.run_id, override
    # results_dir, force, progress and threads do not change what is computed
    assert prepare(compose("results_dir=/elsewhere", "force=true", "progress=false")).run_id == a.run_id


BAD = {  # override -> what the message says
    "batch_size=0": "batch_size=0 is invalid for this task: it must be an integer from 1 to n=1000, or 'full'",
    "batch_size=-3": "batch_size=-3 is invalid",
    "batch_size=1001": "batch_size=1001 is invalid for this task",
    "batch_size=half": "batch_size='half' is invalid",
    "batch_size=2.5": "batch_size=2.5 is invalid",
    "accumulation_steps=5": "accumulation_steps=5 must be a positive integer that divides batch_size=32",
    "accumulation_steps=0": "accumulation_steps=0 must be a positive integer",
    "lr=0": "lr=0 is invalid; the learning rate must be a finite number > 0",
    "lr=-0.1": "lr=-0.1 is invalid",
    "lr=nan": "lr=nan is invalid",
    "lr=inf": "lr=inf is invalid",
    "budget.epochs=-1": "budget.epochs=-1 is invalid; it must be a finite number >= 0",
    "budget.epochs=inf": "budget.epochs=inf is invalid",
    "budget.max_steps=-1": "budget.max_steps=-1 must be null or an integer >= 0",
    "budget.max_seconds=0": "budget.max_seconds=0 must be null or a number > 0",
    "sampling=random": "sampling='random' is invalid; valid: shuffle, sequential, replacement",
    "accumulation_reduction=max": "accumulation_reduction='max' is invalid; valid: mean, sum",
    "dtype=float16": "dtype='float16' is invalid; valid: float32, float64",
    "eval.points=1": "eval: points must be >= 2",
    "eval.schedule=cubic": "eval.schedule='cubic' is invalid; valid: log, linear",
    "eval.every_steps=0": "every_steps >= 1",
    "seed=-1": "seed=-1 must be an integer >= 0",
    "warmup_steps=-2": "warmup_steps=-2 must be an integer >= 0",
    "seed=-1": "seed=-1 is invalid; a seed is an integer from 0 to 4294967295 (2^32 - 1)",
    "divergence_factor=1": "divergence_factor=1 must be a number > 1",
    "device=tpu": "device='tpu' is invalid; use auto, cpu, cuda",
    "optimizer.weight_decay=-1": "weight_decay=-1 is out of range",
    "optimizer.impl=fused_plus": "optimizer.impl='fused_plus' is invalid",
    "+optimizer.momentum=0.9": "optimizer 'sgd' has no hyperparameter momentum",
    "task.n=0": "n=0 must be an integer >= 1",
    "+task.width=3": "task 'regression' has no option width",
    "lr_schedule.name=exponential": "lr_schedule.name='exponential' is invalid; valid: constant, cosine, linear, step",
    "lr_schedule.warmup=-1": "lr_schedule=",
    "lr_schedule.step_gamma=2": "0 < step_gamma <= 1",
    "+lr_schedule.decay=3": "unknown config key lr_schedule.decay",
    "target={metric: val_accuracy}": "give exactly one of value (absolute) or relative",
    "target={metric: test_accuracy, value: 0.9}": "runs and tuning never look at test",
    "target={metric: val_acc, value: 0.9}": "unknown metric; valid: train_loss",
    "target={metric: val_accuracy, value: 2}": "an accuracy can only reach values in (0, 1]",
    "target={metric: val_loss, value: -1}": "a loss is never below 0",
    "target={metric: excess_loss, relative: 1.5}": "relative targets are for losses and lie in (0, 1)",
    "seed=9223372036854775808": "seed=9223372036854775808 is invalid; a seed is an integer from 0 to 4294967295",
    "task.data_seed=4294967296": "task.data_seed=4294967296 is invalid; a seed is an integer from 0 to 4294967295",
    "eval.points=abc": "eval.points='abc' is invalid: eval: points must be >= 2",
    "eval.points=2.5": "eval.points=2.5 is invalid",
    "eval.every_steps=abc": "eval.every_steps='abc' must be null or an integer >= 1",
    "eval.every_epochs=abc": "eval.every_epochs='abc' must be null or a number > 0",
    "eval.train_subset=2.5": "eval.train_subset=2.5 must be null or an integer >= 1",
    "eval.test=abc": "eval.test='abc' must be true or false",
    "+eval.pionts=3": "unknown config key eval.pionts; valid eval keys: points, schedule",
    "budget.max_steps=true": "budget.max_steps=True must be null or an integer >= 0",
    "+budget.max_epochs=3": "unknown config key budget.max_epochs",
    "+optimiser=adam": "unknown config key optimiser; valid top-level keys: task, optimizer,",
    "+learning_rate=0.1": "unknown config key learning_rate",
    "results_dir=": "results_dir='' is invalid; give the directory",
    "results_dir=2.5": "results_dir=2.5 is invalid",
    "force=abc": "force='abc' must be true or false",
    "progress=2": "progress=2 must be true or false",
    "task.sigma=abc": "task 'regression': sigma='abc' must be a finite number (its default is 0.1)",
    "task.data_seed=2.5": "task 'regression': data_seed=2.5 must be an integer",
    "task.name=[1]": "task.name=[1] must be a name",
    "optimizer.name=[1]": "optimizer.name=[1] must be a name",
    "sampling=[1]": "sampling=[1] is invalid; valid: shuffle",
}


@pytest.mark.parametrize("override", BAD)
def test_bad_values_are_refused(override, compose):
    with pytest.raises(ConfigError) as err:
        prepare(compose(override))
    assert BAD[override] in str(err.value)


@pytest.mark.parametrize("task, target, message", [
    ("tiny_mlp", "{metric: val_accuracy, value: 0.9}", "task tiny_mlp has no val_accuracy (it is not a classifier); "
                                                       "its metrics: train_loss, val_loss."),
    ("tiny_mlp", "{metric: excess_loss, relative: 0.1}", "task tiny_mlp has no excess_loss (its optimum is not known)"),
    ("regression", "{metric: val_accuracy, value: 0.9}", "task regression has no val_accuracy"),
    ("regression", "{metric: train_loss, value: 0.001}", "training loss is never below its optimum 0.00966"),
])
def test_a_target_must_be_one_the_task_can_reach(task, target, message, compose):
    with pytest.raises(ConfigError) as err:
        prepare(compose(f"task={task}", f"target={target}"))
    assert message in str(err.value)
    assert prepare(compose("task=regression", "target={metric: excess_loss, relative: 0.01}")).spec.target


def test_run_keys_are_the_top_level_keys_of_config_yaml(compose):
    assert set(V.RUN_KEYS) == set(compose())


@pytest.mark.parametrize("override", ["tune.tpe.multivariate=abc", "tune.tpe.n_startup_trials=2.5",
                                      "tune.median.n_min_trials=abc", "tune.hyperband.reduction_factor=1",
                                      "tune.qmc.qmc_type=lattice", "+tune.tpe.gama=0.1", "+tune.n_trails=3",
                                      "tune.search=true", "tune.storage=", "tune.sampler=[tpe]"])
def test_bad_tune_values_are_refused(override, compose):
    key = override.lstrip("+").split("=")[0].rsplit(".", 1)[-1]
    with pytest.raises(ConfigError, match=key):
        tune_spec(compose(override).tune, "sgd")


def test_cuda_without_a_gpu(compose):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(ConfigError, match="torch sees no CUDA device here; use device=cpu"):
        prepare(compose("device=cuda"))


@pytest.mark.parametrize("name", [name for name, spec in OPTIMIZERS.items() if not spec.fused])
def test_impl_fused_where_torch_has_none(name, compose):
    with pytest.raises(ConfigError, match="torch has no fused .*use optimizer.impl=foreach or auto"):
        prepare(compose(f"optimizer={name}", "optimizer.impl=fused"))


def test_missing_dataset_is_a_data_error(compose, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("OPTSUITE_DATA_DIR", raising=False)
    for task in ("mnist", "fashion_mnist"):  # a given directory is used or refused, never replaced
        with pytest.raises(DataError, match="task.data_dir=.*nothing-here: the directory does not exist"):
            prepare(compose(f"task={task}", f"task.data_dir={tmp_path / 'nothing-here'}"))
    if Path("/usr/share/datasets/mnist").is_dir():
        pytest.skip("MNIST is installed system-wide")
    with pytest.raises(DataError, match="dataset 'mnist' not found"):
        prepare(compose("task=mnist"))


def test_lr_null_takes_the_registry_default(compose):
    assert math.isclose(prepare(compose("optimizer=rmsprop")).spec.lr, OPTIMIZERS["rmsprop"].lr_default)


# The run's defaults are written in conf/config.yaml (what a user composes) and in the RunSpec the
# code builds (suite.types); they must agree. The one intended difference: a RunSpec holds a
# resolved device (``cpu`` unless given), the config asks for ``auto`` (prepare resolves it).
RESOLVED_IN_PREPARE = {"device": ("auto", "cpu")}
GROUPS = ("task", "optimizer", "tune")  # composed from conf/<group>/ (their defaults are the registries')


def test_config_yaml_defaults_equal_the_runspec_defaults():
    config = OmegaConf.to_container(OmegaConf.load(CONF / "config.yaml"))
    spec = {f.name: f.default for f in dataclasses.fields(RunSpec) if f.default is not dataclasses.MISSING}
    nested = {"budget": {k: spec[k] for k in V.BUDGET_KEYS}, "eval": dataclasses.asdict(EvalSpec()),
              "lr_schedule": dataclasses.asdict(LRSchedule())}
    for key, value in config.items():
        if key in nested:
            assert value == nested[key], key
        elif key in RESOLVED_IN_PREPARE:
            assert (value, spec[key]) == RESOLVED_IN_PREPARE[key], key
        elif key in spec:
            assert value == spec[key], f"conf/config.yaml {key}: {value!r}, RunSpec: {spec[key]!r}"
    assert set(V.RUN_KEYS) == set(config) - {"defaults", "hydra"} | set(GROUPS)
