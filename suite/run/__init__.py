"""One run from a composed Hydra config: validation into a :class:`~suite.types.RunSpec` and the
task (``prepare``, including ``lr=tuned`` and registering a user's optimizer from its YAML; the
checks that need no task in ``validate``), training it against the store (``execute``), and the
optimizer conformance checks behind ``suite-check-optimizer`` (``conformance``). May import
``suite.train``, ``suite.bench``, ``suite.store``, ``suite.tasks``, ``suite.optim``, ``suite.types``.
"""
