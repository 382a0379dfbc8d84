"""Reports from stored rows only (never trains, imports no torch): metrics per run and per cell
(``metrics``, ``to_target``), statistics over seeds (``stats``), tables and their renderings
(``tables``, ``render``, ``tuning``), figures (``figures``, ``scaling_figures`` on ``style``), the
batch-size science (``science`` math, ``science_tables``, ``science_figures``, ``science_section``),
the study's declared protocol (``protocol``), the README (``readme``, ``sections``),
pytest-benchmark JSON (``benchmarks``), and ``suite-report`` itself (``build``). May import
``suite.store``, ``suite.optim.registry``, the task registry and ``suite.types``.
"""
