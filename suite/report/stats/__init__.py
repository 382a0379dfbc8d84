"""Numbers in, numbers out (numpy, scipy, pandas; nothing of the report or the suite): statistics
over seeds (``seeds``: Student-t intervals, paired tests with Holm correction, tied ranks), counts
to a target with censored seeds (``censored``: medians and their order-statistic intervals), a
metric's floor (``resolution``) and the math of the batch-size science (``batch_science``: the
critical-batch fit, lr-scaling slopes, expected best-of-k, the divergence boundary, linear rates on
the quadratic).
"""
