"""One run from a composed Hydra config: validation into a :class:`~suite.types.RunSpec` and the
task (``prepare``, including ``lr=tuned`` and registering a user's optimizer from its YAML; the
checks that need no task in ``validate``), training it against the store (``execute``), and the
optimizer conformance checks behind ``suite-check-optimizer`` (``conformance``; those of the
mechanisms the suite applies to an optimizer, such as the copy a target's replay starts from,
in ``mechanisms``). May import ``suite.train``, ``suite.store``,
``suite.tasks``, ``suite.optim``, ``suite.types``.
"""
