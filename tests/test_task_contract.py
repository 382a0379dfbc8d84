"""The task contract, for every registry entry and every small instance it lists: a new task is
checked here with no test edit.

Model initialization depends on the seed only; the loss is a batch mean (so k equal
micro-batches average to the big batch's loss: what accumulation relies on); a classifier's
accuracy is computed for its output shape; ``conf/task/<name>.yaml`` holds exactly the entry's
defaults (defaults are written once, in the registry, and the YAML is checked against them).
"""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

from task_cases import CASES, small_task

from suite.cli import CONF_DIR
from suite.tasks import TASKS
from suite.tasks.parts import predicted_labels, seeded_model
from suite.train.evaluation import evaluate
from suite.types import Split, Task


@pytest.mark.parametrize("name", list(TASKS))
def test_task_yaml_equals_the_registry_defaults(name):
    yaml = OmegaConf.to_container(OmegaConf.load(Path(CONF_DIR) / "task" / f"{name}.yaml"))
    assert yaml.pop("name") == name
    assert yaml == dict(TASKS[name].defaults), "conf/task/<name>.yaml must repeat the entry's defaults exactly"


@pytest.mark.parametrize("name,i", CASES)
def test_initialization_depends_on_the_seed_only(name, i, fake_mnist_dir):
    task = small_task(name, i, fake_mnist_dir)
    a = task.make_model(0)
    torch.manual_seed(12345)  # the global generator's state must not matter
    torch.randn(7)
    b, c = task.make_model(0), task.make_model(1)
    for pa, pb, pc in zip(a.parameters(), b.parameters(), c.parameters(), strict=True):
        assert torch.equal(pa, pb)
    assert any(not torch.equal(pa, pc) for pa, pc in zip(a.parameters(), c.parameters()))


@pytest.mark.parametrize("name,i", CASES)
def test_loss_is_a_batch_mean(name, i, fake_mnist_dir):
    task = small_task(name, i, fake_mnist_dir).to(torch.device("cpu"), torch.float64)
    model = task.make_model(0).double()
    x, y = task.train.x[:8], task.train.y[:8]
    with torch.no_grad():
        whole = task.loss(model(x), y).item()
        halves = [task.loss(model(x[j:j + 4]), y[j:j + 4]).item() for j in (0, 4)]
        singles = [task.loss(model(x[j:j + 1]), y[j:j + 1]).item() for j in range(8)]
    assert whole == pytest.approx(sum(halves) / 2, rel=1e-12)
    assert whole == pytest.approx(sum(singles) / 8, rel=1e-12)


@pytest.mark.parametrize("name,i", CASES)
def test_accuracy_is_computed_for_the_output_shape(name, i, fake_mnist_dir):
    task = small_task(name, i, fake_mnist_dir)
    model = task.make_model(0)
    loss, accuracy = evaluate(model, task, task.val, chunk=7)  # chunks that do not divide the split
    with torch.no_grad():
        out = model(task.val.x)
        assert loss == pytest.approx(task.loss(out, task.val.y).item(), rel=1e-5)
        if task.classifier:
            labels = predicted_labels(out)
            assert labels.shape == task.val.y.shape
            assert accuracy == pytest.approx((labels == task.val.y).double().mean().item())
        else:
            assert math.isnan(accuracy)


def test_predicted_labels_of_one_logit_and_of_several():
    assert predicted_labels(torch.tensor([[2.0, -1.0, 3.0], [0.1, 0.0, -5.0]])).tolist() == [2, 0]
    assert predicted_labels(torch.tensor([[0.3], [-0.2], [0.0]])).tolist() == [1, 0, 0]  # logit > 0 is label 1
    stacked = torch.tensor([[[0.3], [-0.2]], [[-1.0], [4.0]]])  # (K=2, b=2, 1)
    assert predicted_labels(stacked).tolist() == [[1, 0], [0, 1]]


def test_a_one_logit_classifier_is_scored_by_the_sign_of_its_logit():
    """A binary classifier with one output: argmax over one column would call every sample class 0."""
    x = torch.linspace(-1, 1, 10).unsqueeze(1)
    y = (x[:, 0] > 0.25).long()  # a threshold the model below does not match exactly

    def make(seed):
        layer = seeded_model(lambda: nn.Linear(1, 1))(seed)
        with torch.no_grad():
            layer.weight.fill_(1.0), layer.bias.fill_(0.0)
        return layer

    def bce(out, labels):
        return F.binary_cross_entropy_with_logits(out[:, 0], labels.float())

    split = Split(x, y)
    task = Task("binary", "linear1", split, split, split, make, bce, classifier=True)
    _, accuracy = evaluate(make(0), task, split, chunk=4)
    expected = ((x[:, 0] > 0).long() == y).double().mean().item()
    assert accuracy == pytest.approx(expected) and 0 < accuracy < 1
