"""optsuite: benchmarks and hyperparameter studies for first-order optimizers.

The layers, from the top floor down (imports run only downward; see each package's docstring):
``cli`` -> ``study`` -> ``tune`` -> ``run`` -> ``train`` -> ``tasks``, ``optim``, ``store`` -> ``types``,
with ``report`` (rows to tables and figures; no torch) beside ``tune``, and ``bench`` (benchmark
helpers) on the side. ``suite.types`` is the contract: read it first.

What users call: ``suite.train.train`` / ``train_many``, ``suite.tasks.build_task``,
``suite.optim.build.build_optimizer``, ``suite.store.runs.RunStore``; importing ``suite`` itself
loads nothing else.
"""
