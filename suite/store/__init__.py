"""The results store: run and cell identities (``identity``), one atomic parquet file per run
(``runs``), the tuned configuration of each cell (``tuned``), worker ids, locks that die with
their holder and write errors as one message (``locks``), a published study read as a baseline
(``published``). Reads and writes rows and files only; imports no torch (the report reads through
it). May import ``suite.types`` only.
"""
