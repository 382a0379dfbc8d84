"""Evaluation (never timed): each split's mean loss and accuracy, for one model or a stack of K,
and the evaluation row a run stores."""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from suite.tasks.parts import predicted_labels
from suite.types import METRICS, NOISE_COLUMNS, EvalSpec, RunSpec, Split, Task

Stats = tuple[float, float]  # (mean loss, accuracy or NaN) of one split
SPLITS = ("train", "val", "test")  # an evaluation's splits, in the order of its stats


@torch.no_grad()
def evaluate(model: nn.Module, task: Task, split: Split, chunk: int) -> Stats:
    """Mean loss (and accuracy for classifiers, else NaN) over a whole split, in chunks."""
    if len(split) == 0:
        return math.nan, math.nan
    model.eval()
    loss_sum, correct = 0.0, 0
    for i in range(0, len(split), chunk):
        x, y = split.x[i:i + chunk], split.y[i:i + chunk]
        out = model(x)
        loss_sum += task.loss(out, y).item() * len(x)  # .item() syncs; eval is not timed
        if task.classifier:
            correct += (predicted_labels(out) == y).sum().item()
    model.train()
    n = len(split)
    return loss_sum / n, (correct / n if task.classifier else math.nan)


@torch.no_grad()
def evaluate_stacked(model: nn.Module, loss: Callable, task: Task, split: Split, chunk: int, k: int) -> list[Stats]:
    """Each configuration's mean loss (and accuracy, else NaN) over a split; mirrors :func:`evaluate`."""
    n = len(split)
    if n == 0:
        return [(math.nan, math.nan)] * k
    model.eval()
    loss_sum, correct = [0.0] * k, [0] * k
    for i in range(0, n, chunk):
        x, y = split.x[i:i + chunk], split.y[i:i + chunk]
        out = model(x, True)
        # .tolist() syncs; eval is not timed. Summed in Python floats like evaluate's .item().
        loss_sum = [s + v * len(x) for s, v in zip(loss_sum, loss(out, y, True).tolist())]
        if task.classifier:
            correct = [c + v for c, v in zip(correct, (predicted_labels(out) == y).sum(1).tolist())]
    model.train()
    return [(s / n, c / n if task.classifier else math.nan) for s, c in zip(loss_sum, correct)]


def eval_splits(task: Task, ev: EvalSpec) -> tuple[Split, Split, Split]:
    """The (train, val, test) splits an evaluation measures: the training loss on the first
    ``train_subset`` samples if set, and an empty test split (NaN) when ``test`` is off."""
    train = task.train if ev.train_subset is None else Split(task.train.x[:ev.train_subset],
                                                               task.train.y[:ev.train_subset])
    test = task.test if ev.test else Split(task.test.x[:0], task.test.y[:0])
    return train, task.val, test


def split_of(metric: str) -> int:
    """Where in :data:`SPLITS` (and in :func:`eval_splits`) ``metric`` is measured: its prefix's
    split (the excess loss is the training loss's)."""
    prefix = metric.partition("_")[0]
    return SPLITS.index(prefix) if prefix in SPLITS else SPLITS.index("train")


def metric_value(task: Task, metric: str, stat: Stats) -> float:
    """One of :data:`suite.types.METRICS` from the (loss, accuracy) of its split."""
    loss, accuracy = stat
    if metric == "excess_loss":
        return loss - task.optimal_loss if task.optimal_loss is not None else math.nan
    return accuracy if metric.endswith("accuracy") else loss


def eval_row(task: Task, spec: RunSpec, step: int, time_s: float, last_loss: float,
             train: Stats, val: Stats, test: Stats) -> dict:
    """One evaluation row (the evaluation point's columns of ``ROW_SCHEMA``: every metric, the
    last mini-batch's loss, NaN noise scales) from the (loss, accuracy) of each split."""
    samples, stats = step * spec.batch_size, (train, val, test)
    return {"step": step, "epoch": samples / task.n_train, "samples": samples, "time_s": time_s,
            "minibatch_loss": last_loss, **{m: metric_value(task, m, stats[split_of(m)]) for m in METRICS},
            **{c: math.nan for c in NOISE_COLUMNS}}
