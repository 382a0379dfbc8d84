"""Pieces the task builders share: seeded initialization, the MSE loss, predicted labels."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def seeded_model(build: Callable[[], nn.Module]) -> Callable[[int], nn.Module]:
    """``make_model(seed)``: the initialization depends on ``seed`` only (torch's default init)."""

    def make(seed: int) -> nn.Module:
        torch.manual_seed(seed)
        return build()

    return make


def mse(output: Tensor, y: Tensor) -> Tensor:
    return F.mse_loss(output, y)


def predicted_labels(output: Tensor) -> Tensor:
    """A classifier's predicted labels from its outputs ``(..., C)``: the argmax of C > 1 logits, or
    ``logit > 0`` (label 1) for a single logit. Leading dimensions (a stack of K models) are kept."""
    if output.shape[-1] == 1:
        return (output[..., 0] > 0).long()
    return output.argmax(-1)
