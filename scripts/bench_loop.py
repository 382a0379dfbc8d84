#!/usr/bin/env python
"""The suite's loop vs a hand-written PyTorch loop vs the seed's DataLoader loop, side by side
(interleaved, medians), and the fashion_mnist MLP's large-batch step as a fraction of this
machine's measured matmul rate. Logic: suite/loopbench.py. Usage: scripts/bench_loop.py --help"""
import sys

from suite.loopbench import main

sys.exit(main())
