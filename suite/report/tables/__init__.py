"""The report's tables: a table and its Markdown, LaTeX and CSV renderings (``render``), what one
cell shows and whether it may be compared (``cells``), which cells are best or tied (``marks``),
the optimizer × batch-size pivots, rankings, cross-task summary and performance profile
(``comparison``), what tuning says about each cell: edge, fallback and resolution flags, the tuning
table and the README's Flags (``tuning``), the tuning noise under re-tuning (``stability``), and the
README's statement of the statistics (``legend``). Imports ``data`` and ``stats``.
"""
