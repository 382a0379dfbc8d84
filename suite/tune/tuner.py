"""Learning-rate tuning with Optuna: one study per cell, trials trained K at a time, best exported.

A trial is an ordinary run of the suite: its lr (and searched hyperparameters) go into the cell's
:class:`RunSpec`, ``train_many`` trains the K trials asked together, and each curve is stored in
the results store tagged ``study`` and ``trial``. The objective is the validation loss at the
final evaluation (every task has a held-out validation split; test is never read). At every
evaluation the validation loss is reported to the pruner. A diverged trial is finished with a
finite penalty (:func:`diverged_penalty`) and ``diverged=True``: NaN would give the sampler no
signal, and "diverged" is a result, not a crash.

Several workers (processes, machines) may run the same cell against one storage: they share its
study and together stop at exactly ``n_trials`` finished trials (see :mod:`suite.tune.claims`).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import zlib
from datetime import datetime, timezone
from typing import Any, Callable, Mapping

import numpy as np
import optuna
from omegaconf import DictConfig, OmegaConf
from optuna.trial import TrialState
from tqdm.auto import tqdm

from suite.optim.registry import check_lr, resolve_hparams
from suite.run.execute import store_run
from suite.run.prepare import Prepared, prepare, set_threads
from suite.store.identity import cell_identity, cell_name, run_config
from suite.store.runs import RunStore
from suite.store.tuned import read_tuned, write_tuned
from suite.train.schedule import total_steps
from suite.train.stacked import train_many
from suite.tune.claims import claim, fail_abandoned, open_slots, release, worker_id
from suite.tune.space import PRUNERS, SAMPLERS, SEARCHABLE, TuneSpec, suggest, tune_spec
from suite.tune.storage import default_journal, mask_url, open_storage
from suite.types import ConfigError, RunResult, RunSpec, StoreError

FALLBACK_PENALTY = 1e12  # when the initial validation loss itself is not a positive finite number
OBJECTIVE = "val_loss at the final evaluation (minimized)"


def _plain(cfg: DictConfig | Mapping[str, Any]) -> dict[str, Any]:
    c = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    return {**c, "lr": None}  # the lr is what a study searches; never resolve lr=tuned here


def _searched_of(cfg: Mapping[str, Any]) -> list[str]:
    return list((cfg.get("tune") or {}).get("search") or [])


def cell_name_of(cell: Prepared | DictConfig | Mapping[str, Any], search=None) -> str:
    """The cell name (its Optuna study's name) of a composed config (its ``tune.search`` counts) or
    a Prepared run."""
    if isinstance(cell, Prepared):
        return cell_name(cell.spec, cell.config["task_options"], cell.task.n_train, search or ())
    c = _plain(cell)
    prepared = prepare(c)
    return cell_name_of(prepared, _searched_of(c) if search is None else search)


def load_tuned(results_dir, cell) -> dict | None:
    """The exported best configuration of ``cell`` (a cell name, config or Prepared), or ``None``."""
    return read_tuned(results_dir, cell if isinstance(cell, str) else cell_name_of(cell))


def diverged_penalty(initial_val_loss: float, divergence_factor: float) -> float:
    """A diverged trial scores as if its loss had reached the divergence limit: factor × initial loss."""
    ok = math.isfinite(initial_val_loss) and initial_val_loss > 0
    return divergence_factor * initial_val_loss if ok else FALLBACK_PENALTY


@dataclasses.dataclass
class CellTuning:
    """The tuning of one cell in this worker: its Optuna study, search settings, base run and store
    (small, so functions take one argument, not ten)."""

    name: str
    study: optuna.Study
    tspec: TuneSpec
    base: Prepared
    store: RunStore
    url: str
    worker: str = dataclasses.field(default_factory=worker_id)
    ran: int = 0  # trials this worker trained

    def sampler_for(self, number: int) -> optuna.samplers.BaseSampler:
        # Seeded per trial number: reproducible for one worker, and concurrent workers (same
        # tune.seed) do not all draw the same startup lrs. The seed is hashed (SeedSequence) from
        # (tune.seed, cell, trial number): MT19937 seeded with consecutive small integers gives
        # correlated first draws (seeds 0..3 put 4 "random" lrs within half a decade), and cells
        # would otherwise all try the same learning rates.
        entropy = [self.tspec.seed, zlib.crc32(self.name.encode()), number]
        return SAMPLERS[self.tspec.sampler](self.tspec, int(np.random.SeedSequence(entropy).generate_state(1)[0]))


def _open_study(name: str, url: str, tspec: TuneSpec, base: Prepared) -> optuna.Study:
    storage = open_storage(url)
    pruner = PRUNERS[tspec.pruner](tspec, total_steps(base.spec, base.task.n_train))
    study = optuna.create_study(storage=storage, study_name=name, direction="minimize", load_if_exists=True,
                                sampler=SAMPLERS[tspec.sampler](tspec, tspec.seed), pruner=pruner)
    record = json.loads(json.dumps(tspec.sampler_record()))
    recorded = study.user_attrs.get("sampler")
    if recorded is None:
        study.set_user_attr("sampler", record)
        study.set_user_attr("cell", json.loads(json.dumps(cell_identity(
            base.spec, base.config["task_options"], tspec.searched), default=str)))
    elif recorded != record:
        raise ConfigError(
            f"study {name} in {mask_url(url)} was started with sampler settings {recorded}; this command asks "
            f"for {record}. Continue it with the same tune.sampler, tune.seed and sampler options, or start "
            f"a separate study with another results_dir or tune.storage."
        )
    return study


def _trial_spec(cell: CellTuning, trial: optuna.Trial) -> RunSpec:
    cell.study.sampler = cell.sampler_for(trial.number)
    lr, searched = suggest(trial, cell.tspec)
    # The task is built once per study (prepare would reload Fashion-MNIST per trial); the
    # trial's values pass the same checks prepare applies.
    hparams = resolve_hparams(cell.base.spec.optimizer, {**cell.base.spec.hparams, **searched})
    return dataclasses.replace(cell.base.spec, lr=check_lr(lr), hparams=hparams)


def _record(cell: CellTuning, trial: optuna.Trial, spec: RunSpec, result: RunResult) -> None:
    """Store the trial's curve, then tell its outcome (a told trial always has its rows)."""
    tags = {"study": cell.name, "trial": trial.number}
    # The trial tags are part of its identity, so a trial never overwrites (or is mistaken for)
    # the plain run of the same configuration, nor another trial that drew the same lr.
    config = {**run_config(spec, cell.base.config["task_options"]), **tags}
    frame, _ = store_run(cell.store, spec, cell.base.task, config, result, tags=tags)
    trial.set_user_attr("run_id", str(frame["run_id"].iloc[0]))
    final = result.rows[-1]["val_loss"]
    if result.pruned:
        told = cell.study.tell(trial, state=TrialState.PRUNED, skip_if_finished=True)
    elif result.diverged or not math.isfinite(final):
        trial.set_user_attr("diverged", True)
        trial.set_user_attr("diverged_step", result.steps)
        penalty = diverged_penalty(result.rows[0]["val_loss"], spec.divergence_factor)
        told = cell.study.tell(trial, penalty, skip_if_finished=True)
    else:
        told = cell.study.tell(trial, final, skip_if_finished=True)
    if told.state == TrialState.FAIL:
        raise StoreError(
            f"trial {trial.number} of {cell.name} was marked FAIL by another worker while this one trained it "
            f"(tune.stale_after_s too small, or two hosts share a hostname); its rows are stored as "
            f"run {frame['run_id'].iloc[0]}. Raise tune.stale_after_s and re-run to continue the study."
        )
    cell.ran += 1


def _run_batch(cell: CellTuning, trials: list[optuna.Trial]) -> None:
    told: set[int] = set()
    try:
        specs = [_trial_spec(cell, t) for t in trials]

        def on_eval(i: int, row: dict) -> bool:
            if not math.isfinite(row["val_loss"]):
                return False
            trials[i].report(row["val_loss"], int(row["step"]))
            return trials[i].should_prune()

        results = train_many(cell.base.task, specs, on_eval=on_eval)
        for trial, spec, result in zip(trials, specs, results):
            _record(cell, trial, spec, result)
            told.add(trial.number)
    except BaseException as e:  # interrupted or crashed: release the claims, keep what is stored
        for t in trials:  # an interrupted trial is redone by the next run; a crashing one is not
            if t.number not in told:
                release(cell.study, t.number, t.params, retry=isinstance(e, KeyboardInterrupt))
        raise


def counts(trials: list[optuna.trial.FrozenTrial]) -> dict[str, int]:
    by = {s: sum(t.state == s for t in trials) for s in TrialState}
    surplus = sum(bool(t.user_attrs.get("surplus")) for t in trials)
    return {
        "n_finished": by[TrialState.COMPLETE] + by[TrialState.PRUNED], "n_complete": by[TrialState.COMPLETE],
        "n_pruned": by[TrialState.PRUNED], "n_diverged": sum(bool(t.user_attrs.get("diverged")) for t in trials),
        "n_running": by[TrialState.RUNNING] + by[TrialState.WAITING], "n_failed": by[TrialState.FAIL] - surplus,
        "n_surplus": surplus,
    }


def best_trial(trials: list[optuna.trial.FrozenTrial]) -> optuna.trial.FrozenTrial | None:
    """The complete, non-diverged trial of least validation loss."""
    ok = [t for t in trials if t.state == TrialState.COMPLETE and not t.user_attrs.get("diverged")]
    return min(ok, key=lambda t: (t.value, t.number)) if ok else None


def _summary(cell: CellTuning) -> dict[str, Any]:
    trials = cell.study.get_trials(deepcopy=False)
    best = best_trial(trials)
    searched = {} if best is None else {
        n: SEARCHABLE[n].to_value(best.params[SEARCHABLE[n].param]) for n in cell.tspec.searched}
    return {
        "cell": cell.name, "lr": None if best is None else best.params["lr"], "hparams": searched,
        "params": None if best is None else best.params, "value": None if best is None else best.value,
        "trial": None if best is None else best.number,
        "run_id": None if best is None else best.user_attrs.get("run_id"), "objective": OBJECTIVE,
        "n_trials": cell.tspec.n_trials, **counts(trials), "n_run_here": cell.ran,
        "sampler": cell.tspec.sampler_record(), "pruner": cell.tspec.pruner, "lr_range": list(cell.tspec.lr_range),
        "ranges": {k: list(v) for k, v in cell.tspec.ranges.items()}, "storage": mask_url(cell.url),
        "cell_config": cell_identity(cell.base.spec, cell.base.config["task_options"], cell.tspec.searched),
        "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _progress(cell: CellTuning, bar) -> None:
    trials = cell.study.get_trials(deepcopy=False)
    c, best = counts(trials), best_trial(trials)
    bar.n = min(c["n_finished"], bar.total)
    bar.set_postfix(best=f"{best.value:.4g}" if best else "-", pruned=c["n_pruned"], diverged=c["n_diverged"],
                    refresh=False)
    bar.refresh()


def _open_cell(c: dict[str, Any]) -> CellTuning:
    """Validate everything (run config, tune config, results dir, storage) before any trial runs."""
    if "test" in (c.get("eval") or {}):  # trials never read the test split: skip measuring it
        c["eval"] = {**c["eval"], "test": False}
    set_threads(c.get("threads"))
    base = prepare(c)
    tspec = tune_spec(c.get("tune") or {}, base.spec.optimizer)
    store = RunStore(c["results_dir"])
    store.ensure_writable()
    name = cell_name(base.spec, base.config["task_options"], base.task.n_train, tspec.searched)
    url = tspec.storage or default_journal(c["results_dir"], name)
    return CellTuning(name, _open_study(name, url, tspec, base), tspec, base, store, url)


def tune_cell(cfg: DictConfig | Mapping[str, Any], echo: Callable[[str], Any] = print) -> dict[str, Any]:
    """Tune one cell until its study holds ``tune.n_trials`` finished trials; export and return the best."""
    optuna.logging.set_verbosity(logging.WARNING)  # per-trial INFO lines would drown the progress bar
    c = _plain(cfg)
    cell = _open_cell(c)
    tspec = cell.tspec
    fail_abandoned(cell.study, tspec.stale_after_s, echo)
    done = counts(cell.study.get_trials(deepcopy=False))["n_finished"]
    echo(f"study {cell.name}: {tspec.n_trials} trials wanted, {done} finished so far (storage {mask_url(cell.url)})")
    bar = tqdm(total=tspec.n_trials, unit="trial", desc=cell.name, disable=not c.get("progress", True),
               dynamic_ncols=True)
    with bar:
        _progress(cell, bar)
        while slots := open_slots(cell.study, tspec.n_trials):
            claims = (claim(cell.study, tspec.n_trials, cell.worker) for _ in range(min(tspec.batch, slots)))
            trials = [t for t in claims if t is not None]
            if not trials:  # other workers hold every open slot
                break
            _run_batch(cell, trials)
            _progress(cell, bar)
            fail_abandoned(cell.study, tspec.stale_after_s, echo)
    result = _summary(cell)
    if result["lr"] is not None:
        result["path"] = str(write_tuned(c["results_dir"], cell.name, result))
    echo(report(result))
    return result


def report(s: Mapping[str, Any]) -> str:
    """One screen: what the study holds and its best configuration."""
    lines = [
        f"study {s['cell']}  sampler={s['sampler']['sampler']} seed={s['sampler']['seed']} pruner={s['pruner']}  "
        f"storage {s['storage']}",
        f"  trials: {s['n_finished']}/{s['n_trials']} finished ({s['n_complete']} complete, {s['n_pruned']} pruned), "
        f"{s['n_diverged']} diverged (penalized), {s['n_failed']} failed, {s['n_running']} running elsewhere; "
        f"{s['n_run_here']} trained by this worker"
        + (f"; {s['n_surplus']} surplus claims released untrained" if s["n_surplus"] else ""),
    ]
    if s["lr"] is None:
        lines.append("  no usable trial yet (none complete without diverging); try a smaller tune.lr_range.")
        return "\n".join(lines)
    extra = "".join(f"  {k}={v:.6g}" for k, v in s["hparams"].items())
    lines += [f"  best: trial {s['trial']}  lr={s['lr']:.6g}{extra}  val loss {s['value']:.6g}  (run {s['run_id']})",
              f"  exported: {s['path']}  (suite-train lr=tuned reads it)"]
    return "\n".join(lines)
