"""The report's figures (matplotlib on Agg, seaborn; PNG and PDF): the shared plumbing (``style``:
options, colours by optimizer family, legends, log axes, saving), figures over runs (``curves``:
loss curves, the per-step mini-batch loss, lr sensitivity, the performance profile) and along the
batch-size axis (``scaling``: steps to target, the reported lr, throughput). Imports ``tables``
(orders and flags) and ``stats``.
"""
