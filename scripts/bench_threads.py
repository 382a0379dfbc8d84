#!/usr/bin/env python
"""One training step at 1 and at 2 torch threads, per task and batch size, interleaved (medians):
where threads=auto's cut-over comes from. Logic: suite/bench/threads.py. Usage: scripts/bench_threads.py --help"""
import sys

from suite.bench.threads import main

sys.exit(main())
