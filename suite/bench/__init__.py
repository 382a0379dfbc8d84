"""Benchmark helpers, used only by ``tests/benchmarks/`` and ``scripts/`` (nothing in the suite
imports them; the measurements the conformance check shares live in ``suite.optim.measure``):
the steps (built by the run's own engine), memory and grid that ``tests/benchmarks/`` time with
pytest-benchmark (``steps``), and the loop comparison and matmul fraction of
``scripts/bench_loop.py`` (``loops``). May import everything but ``suite.cli``.
"""
