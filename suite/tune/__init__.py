"""Learning-rate tuning with Optuna, one study per cell: the search space, samplers and pruners
(``space``), storage URLs and the journal file (``storage``), exact trial claims among workers
(``claims``), and the tuning loop that trains trials K at a time and exports the best (``tuner``).
May import ``suite.run``, ``suite.train``, ``suite.store``, ``suite.optim``, ``suite.types``.
"""
