"""Reports from stored rows only (never trains, imports no torch): metrics per run and per cell
(``metrics``), tables as Markdown/LaTeX/CSV (``tables``), seaborn figures (``figures`` on
``style``), the report README (``readme``), pytest-benchmark JSON (``benchmarks``), and
``suite-report`` itself (``build``). May import ``suite.store``, ``suite.optim.registry``, the
task registry and ``suite.types``.
"""
