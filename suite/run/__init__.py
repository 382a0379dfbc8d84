"""One run from a composed Hydra config: validation into a :class:`~suite.types.RunSpec` and the
task (``prepare``, including ``lr=tuned``; the checks that need no task in ``validate``), and
training it against the store (``execute``).
May import ``suite.train``, ``suite.store``, ``suite.tasks``, ``suite.optim``, ``suite.types``.
"""
