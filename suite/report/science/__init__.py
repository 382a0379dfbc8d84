"""The README's batch-size science: its tables (``tables``: critical-batch fit, lr scaling, noise
scale, tunability, the theory checks on the quadratic), its figures (``figures``) and the section
that puts them together (``section``). The math is ``stats.batch_science``.
"""
