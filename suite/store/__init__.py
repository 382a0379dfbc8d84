"""The results store: run and cell identities (``identity``); the runs of each batch in one atomic
commit (``runs``; layout and guarantees in its docstring), which file holds which run (``index``),
files written and checked one at a time (``files``), the periodic merge of batch files into parts
(``compact``); the tuned configuration of each cell (``tuned``), worker ids, locks that die with
their holder and write errors as one message (``locks``), a published study read as a baseline
(``published``). Reads and writes rows and files only; imports no torch (the report reads through
it). May import ``suite.types`` only.
"""
