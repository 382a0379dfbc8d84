#!/usr/bin/env python
"""The suite's loop vs a hand-written PyTorch loop vs tutorial 003's DataLoader loop, side by side
(interleaved, medians), and the fashion_mnist MLP's large-batch step as a fraction of this
machine's measured matmul rate. Logic: suite/bench/loops.py. Usage: scripts/bench_loop.py --help"""
import sys

from suite.bench.loops import main

sys.exit(main())
