"""The report's tables: a table and its Markdown, LaTeX and CSV renderings (``render``), the
optimizer × batch-size pivots, rankings, cross-task summary and performance profile
(``comparison``), and what tuning says about each cell: tuner exports, edge and fallback flags,
the tuning table (``tuning``). Imports ``data`` and ``stats``.
"""
