"""From stored rows and the study's files to report frames: metrics per run and per cell
(``metrics``: annotate, summarize, aggregate over seeds, pick each cell's best), tuning trials
(``trials``), steps to target and censoring per run (``to_target``), what the study declared and
where it ran (``protocol``: its parts, a run's part), the tuner's exports (``tuned``) and which
configuration each cell reports (``reported``: the others are abandoned), and a comparison's
baseline read beside the store (``baseline``). Imports ``stats``, ``suite.store`` and ``suite.types``.
"""
