#!/usr/bin/env python
"""The store at scale: a synthetic results directory of N runs (default 100,000, rows copied from a
real study, no training), then a study's resume pass, pandas.read_parquet(<dir>/runs) and
suite-report timed, each in a fresh process with its peak memory. Logic: suite/bench/store.py.
Usage: scripts/bench_store.py --help"""
import sys

from suite.bench.store import main

sys.exit(main())
