"""Numbers in, numbers out (numpy, scipy, pandas; nothing of the report or the suite): statistics
over seeds (``seeds``: Student-t intervals, paired tests with Holm correction, tied ranks) and the
math of the batch-size science (``batch_science``: the critical-batch fit, lr-scaling slopes,
expected best-of-k, the divergence boundary, linear rates on the quadratic).
"""
