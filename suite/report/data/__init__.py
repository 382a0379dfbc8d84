"""From stored rows and the study's files to report frames: metrics per run and per cell
(``metrics``: annotate, summarize, aggregate over seeds, pick each cell's best, tuning trials),
steps to target and censoring per run (``to_target``), and what the study declared and where it ran
(``protocol``). Imports ``stats`` and ``suite.types``.
"""
