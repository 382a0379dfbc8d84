"""Learning-rate tuning with Optuna, one study per cell: the search space, samplers and pruners
(``space``; the checks of ``cfg.tune`` in ``options``), storage URLs (``storage``), the journal
file with its lock and torn-tail repair (``journal``), exact trial claims and slots among workers
(``claims``), trials as stored runs (``trials``), the study's counts and report (``summary``), and
the tuning loop that trains trials K at a time, waits for others' trials and exports the best
(``tuner``).
May import ``suite.run``, ``suite.train``, ``suite.store``, ``suite.optim``, ``suite.types``.
"""
