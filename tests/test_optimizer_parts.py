"""The parts that let the loop drive optimizers unlike SGD, each checked against torch used by hand:
Muon's split and its Muon + AdamW composite, the closure step (L-BFGS) and evaluation in eval
mode (schedule-free). The registry-wide contract tests cover every entry; these check the
mechanisms themselves."""
from __future__ import annotations

import copy

import pytest
import schedulefree
import torch
from torch import nn

from suite.optim.build import build_optimizer
from suite.optim.muon import MuonWithAdamW, muon_split
from suite.optim.registry import OPTIMIZERS, resolve_hparams
from suite.tasks import build_task
from suite.tasks.images import CNN, MLP
from suite.train import train
from suite.train.evaluation import evaluate
from suite.types import EvalSpec, RunSpec

# --- Muon: which parameters, and one optimizer made of two -----------------------------------------

@pytest.mark.parametrize("model, muon_shapes", [
    (nn.Linear(3, 1), []),  # regression: the one layer is input and output
    (nn.Sequential(nn.Linear(1, 10), nn.Tanh(), nn.Linear(10, 1)), []),  # tiny_mlp: no hidden matrix
    (MLP([784, 256, 128, 10]), [(128, 256)]),  # the image MLP: its middle layer
    (MLP([784, 64, 32, 16, 10]), [(32, 64), (16, 32)]),  # deeper: every middle layer
    (CNN(28, [2, 3], 8), [(8, 3 * 7 * 7)]),  # the CNN: convolutions (4-D) and the output to AdamW
])
def test_muon_takes_the_hidden_matrices(model, muon_shapes):
    params = list(model.parameters())
    assert [tuple(p.shape) for p, m in zip(params, muon_split(params)) if m] == muon_shapes


def _mlp():
    torch.manual_seed(0)
    return MLP([5, 8, 6, 2]).double()


def test_the_composite_steps_exactly_like_muon_and_adamw_by_hand():
    ours, theirs = _mlp(), _mlp()
    opt = MuonWithAdamW(ours.parameters(), lr=0.01, momentum=0.9, ns_steps=4, betas=(0.8, 0.95), eps=1e-7,
                        weight_decay=0.05)
    p = list(theirs.parameters())
    muon = torch.optim.Muon([p[2]], lr=0.01, momentum=0.9, ns_steps=4, weight_decay=0.05,
                            adjust_lr_fn="match_rms_adamw")
    adamw = torch.optim.AdamW(p[:2] + p[3:], lr=0.01, betas=(0.8, 0.95), eps=1e-7, weight_decay=0.05)
    x = torch.randn(16, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    for _ in range(5):
        for model, opts in ((ours, [opt]), (theirs, [muon, adamw])):
            for o in opts:
                o.zero_grad()
            model(x).pow(2).mean().backward()
            for o in opts:
                o.step()
    for a, b in zip(ours.parameters(), theirs.parameters(), strict=True):
        assert torch.equal(a, b)
    assert len(opt.state) == len(p)  # one state holds both parts'


def test_the_composite_looks_like_one_optimizer():
    model = _mlp()
    opt = MuonWithAdamW(model.parameters(), lr=0.01)
    assert isinstance(opt, torch.optim.Optimizer) and [g["part"] for g in opt.param_groups] == ["adamw", "muon"]
    opt.param_groups[1]["lr"] = 0.5  # the groups are the parts' own
    assert opt.parts["muon"].param_groups[0]["lr"] == 0.5
    model(torch.ones(2, 5, dtype=torch.float64)).sum().backward()
    opt.step()
    saved = copy.deepcopy(opt.state_dict())
    again = MuonWithAdamW(model.parameters(), lr=0.01)
    again.load_state_dict(saved)
    assert again.parts["muon"].param_groups[0] is again.param_groups[1] and again.parts["adamw"].state is again.state
    assert again.param_groups[1]["lr"] == 0.5 and len(again.state) == len(opt.state)
    opt.zero_grad()
    assert all(q.grad is None for q in model.parameters())
    with pytest.raises(TypeError, match="no parameter groups"):
        MuonWithAdamW([{"params": list(model.parameters())}])


# --- the closure step: L-BFGS through the loop equals torch's LBFGS by hand -------------------------

def test_a_closure_optimizer_trains_like_its_hand_written_loop():
    task = build_task({"name": "tiny_mlp", "n": 64, "n_val": 8, "n_test": 8}).to(torch.device("cpu"), torch.float64)
    spec = RunSpec(task="tiny_mlp", optimizer="lbfgs", hparams=resolve_hparams("lbfgs", {}), lr=0.5,
                   batch_size=64, max_steps=12, epochs=12.0, eval=EvalSpec(every_steps=4), dtype="float64")
    got = train(task, spec)
    model = task.make_model(0).double()
    opt, _ = build_optimizer("lbfgs", model.parameters(), 0.5, {})
    want = []
    for _ in range(12):
        def closure():
            opt.zero_grad()
            loss = task.loss(model(task.train.x), task.train.y)
            loss.backward()
            return loss.detach()
        want.append(opt.step(closure).item())
    assert [r["minibatch_loss"] for r in got.rows[1:]] == pytest.approx([want[3], want[7], want[11]], rel=1e-12)
    assert got.rows[-1]["train_loss"] == pytest.approx(evaluate(model, task, task.train, 8192)[0], rel=1e-12)
    # accumulated (2 micro-batches, mean): the same gradient up to rounding, the same loss reported
    acc = train(task, RunSpec(**{**spec.__dict__, "accumulation_steps": 2}))
    assert acc.rows[-1]["train_loss"] == pytest.approx(got.rows[-1]["train_loss"], rel=1e-9)
    assert acc.rows[-1]["minibatch_loss"] == pytest.approx(got.rows[-1]["minibatch_loss"], rel=1e-9)


# --- eval mode: schedule-free is evaluated at its average x, trained at y --------------------------

def test_schedule_free_is_evaluated_in_eval_mode():
    task = build_task({"name": "regression", "n": 64, "n_val": 16, "n_test": 16}).to(torch.device("cpu"),
                                                                                       torch.float64)
    spec = RunSpec(task="regression", optimizer="schedulefree_sgd", hparams={"momentum": 0.9, "weight_decay": 0.0},
                   lr=0.1, batch_size=64, max_steps=10, epochs=10.0, eval=EvalSpec(every_steps=5), dtype="float64")
    got = train(task, spec)
    model = task.make_model(0).double()
    opt = schedulefree.SGDScheduleFree(model.parameters(), lr=0.1, momentum=0.9, warmup_steps=0)
    opt.train()
    at_x, at_y = [], []
    for step in range(1, 11):
        opt.zero_grad()
        task.loss(model(task.train.x), task.train.y).backward()
        opt.step()
        if step % 5 == 0:
            at_y.append(evaluate(model, task, task.val, 8192)[0])
            opt.eval()
            at_x.append(evaluate(model, task, task.val, 8192)[0])
            opt.train()
    assert [r["val_loss"] for r in got.rows[1:]] == pytest.approx(at_x, rel=1e-12)
    assert at_x != pytest.approx(at_y, rel=1e-6)  # x and y differ: the mode matters
    assert OPTIMIZERS["schedulefree_sgd"].eval_mode and not OPTIMIZERS["schedulefree_sgd"].stackable
