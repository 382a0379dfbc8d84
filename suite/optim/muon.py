"""Muon as it is meant to be used: ``torch.optim.Muon`` on the hidden weight matrices,
``torch.optim.AdamW`` on every other parameter, as ONE optimizer object for the training loop.

Nothing here updates a parameter: both parts are torch's own classes. :class:`MuonWithAdamW`
only routes parameters to them and presents them as one :class:`torch.optim.Optimizer`: its
``param_groups`` ARE the parts' groups (the same dicts: setting ``lr`` on one reaches the part
that uses it), its ``state`` is the one dict both parts write, so ``zero_grad``, ``step``,
``state_dict`` and ``load_state_dict`` behave as for any optimizer.

Which parameters are "hidden matrices" (:func:`muon_split`) is read from the model's structure:
the parameters in registration order (``model.parameters()``, which for the suite's models is
the order of the forward pass), the first and the last tensor with ≥ 2 dimensions are the input
and output layers (AdamW, as Muon's authors do); the 2-D weights strictly between them go to
Muon. Biases and other vectors go to AdamW; so do convolution kernels (4-D: torch's Muon takes
matrices only). On the suite's tasks: regression's one Linear and tiny_mlp's two Linears have
no hidden matrix (all AdamW); the image MLP (784-256-128-10) gives Muon its 256->128 weight
(and every middle layer of a deeper MLP); the CNN gives Muon its first dense layer.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import torch
from torch.optim import AdamW, Muon, Optimizer

MUON_EPS = 1e-7  # Muon's own eps (the Newton-Schulz normalization guard), not AdamW's


def muon_split(params: Sequence[torch.Tensor]) -> list[bool]:
    """For each parameter (in the model's registration order): True where Muon takes it."""
    weights = [i for i, p in enumerate(params) if p.ndim >= 2]
    hidden = set(weights[1:-1])
    return [i in hidden and p.ndim == 2 for i, p in enumerate(params)]


class MuonWithAdamW(Optimizer):
    """Muon (hidden matrices) + AdamW (the rest) with one lr and one weight decay.

    ``momentum``, ``ns_steps``, ``nesterov`` and ``adjust_lr_fn`` are Muon's; ``betas`` and
    ``eps`` AdamW's; ``foreach``/``fused`` choose AdamW's implementation (Muon has one).
    ``params`` must be tensors in the model's order (the split reads the order).
    """

    def __init__(self, params: Iterable[torch.Tensor], lr: float = 1e-3, momentum: float = 0.95, ns_steps: int = 5,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.01,
                 nesterov: bool = True, adjust_lr_fn: str = "match_rms_adamw", foreach: bool | None = None,
                 fused: bool | None = None):
        params = list(params)
        if any(not isinstance(p, torch.Tensor) for p in params):
            raise TypeError("MuonWithAdamW takes the model's parameters as tensors, in order (no parameter groups): "
                            "the Muon/AdamW split is read from them")
        to_muon = muon_split(params)
        groups = [{"params": [p for p, m in zip(params, to_muon) if not m], "part": "adamw"},
                  {"params": [p for p, m in zip(params, to_muon) if m], "part": "muon", "eps": MUON_EPS}]
        super().__init__([g for g in groups if g["params"]],
                         dict(lr=lr, momentum=momentum, ns_steps=ns_steps, betas=betas, eps=eps,
                              weight_decay=weight_decay))
        # The parts are built over the very group dicts above: each adds its own keys to its group.
        self.parts: dict[str, Optimizer] = {}
        for group in self.param_groups:
            if group["part"] == "adamw":
                self.parts["adamw"] = AdamW([group], lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                            foreach=foreach, fused=fused)
            else:
                self.parts["muon"] = Muon([group], lr=lr, weight_decay=weight_decay, momentum=momentum,
                                          nesterov=nesterov, eps=MUON_EPS, ns_steps=ns_steps,
                                          adjust_lr_fn=adjust_lr_fn)
        self._share()

    def _share(self) -> None:
        """Point each part at its group in ``self.param_groups`` and at the one shared state."""
        for group in self.param_groups:
            part = self.parts[group["part"]]
            part.param_groups = [group]
            part.state = self.state

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for part in self.parts.values():
            part.step()
        return loss

    def load_state_dict(self, state_dict) -> None:
        super().load_state_dict(state_dict)  # new group dicts and a new state: re-point the parts
        self._share()
