"""Benchmark helpers (not used by training, tuning or reports): the steps, memory and grid that
``tests/benchmarks/`` time with pytest-benchmark (``steps``), and the loop comparison and matmul
fraction of ``scripts/bench_loop.py`` (``loops``). May import everything but ``suite.cli``.
"""
