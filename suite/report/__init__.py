"""Reports from stored rows only (never trains, imports no torch), by responsibility:

- ``build``: ``suite-report`` itself; ``readme``: the README writer (``Context``, ``Section``);
  ``sections``: the per-task and cross-task sections; ``tutorials``: the tutorials' own pictures;
  ``benchmarks``: pytest-benchmark JSON to a table and a figure (``python -m suite.report.benchmarks``).
- ``science/``: the batch-size science section, its tables and figures.
- ``figures/``: figure plumbing (``style``), figures over runs and along the batch-size axis.
- ``tables/``: the comparison tables, their renderings, and what tuning says about each cell.
- ``data/``: metrics per run and per cell from rows, steps to target, the study's declared protocol.
- ``stats/``: numbers in, numbers out: statistics over seeds, the batch-size science's math.

Imports run one way: ``stats`` <- ``data`` <- ``tables`` <- ``figures`` <- ``readme`` (and
``benchmarks``) <- ``science`` <- ``sections``, ``tutorials`` <- ``build``. May import
``suite.store``, ``suite.optim.registry``, the task registry and ``suite.types``.
"""
