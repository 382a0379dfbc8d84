"""Reports from stored rows only (never trains, imports no torch), by responsibility:

- ``build``: ``suite-report`` itself; ``readme``: the README writer (``Context``, ``Section``);
  ``sections``: the per-task sections, one per protocol part; ``across``: the sections across tasks
  and the tuning noise; ``tutorials``: the tutorials' own pictures;
  ``benchmarks``: pytest-benchmark JSON to a table and a figure (``python -m suite.report.benchmarks``).
- ``science/``: the batch-size science section, its tables and figures.
- ``figures/``: figure plumbing (``style``), figures over runs and along the batch-size axis.
- ``tables/``: the comparison tables (a cell's text, best and tied marks), their renderings, what
  tuning says about each cell, and the tuning noise.
- ``data/``: metrics per run and per cell from rows, steps to target, the study's declared protocol,
  tuning trials, the tuner's exports and which configurations a cell reports.
- ``stats/``: numbers in, numbers out: statistics over seeds, censored counts, a metric's
  resolution, the batch-size science's math.

Imports run one way: ``stats`` <- ``data`` <- ``tables`` <- ``figures`` <- ``readme`` (and
``benchmarks``) <- ``science`` <- ``sections``, ``tutorials`` <- ``across`` <- ``build``. May import
``suite.store``, ``suite.optim.registry``, the task registry and ``suite.types``.
"""
