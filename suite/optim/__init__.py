"""Optimizers: the registry (``registry``, plain data: names, defaults, search ranges, declared
capabilities; what an entry declares is ``spec.OptimizerSpec``), a user's entry from its YAML
file (``external``), the update rules as plain float64 references (``references``), building
the real optimizer and checking a user's class (``build``), Muon + AdamW as one optimizer
(``muon``), giving a fresh optimizer another's whole state (``restore``, what a run's copy
uses) and what a step and its state cost (``measure``, for the conformance check and the
benchmarks); only ``build``, ``muon``, ``restore`` and ``measure`` import torch.

Adding an optimizer is one entry in ``registry.OPTIMIZERS``, its reference where it has a
textbook rule, and ``conf/optimizer/<name>.yaml`` repeating the entry's defaults (a contract
test checks it); the contract tests iterate over the registry. May import ``suite.types`` only.
"""
