"""Optimizers: the registry (``registry``, plain data: names, defaults, search ranges, declared
capabilities), the update rules as plain float64 references (``references``), and building the
real optimizer (``build``, the only module here that imports torch).

Adding an optimizer is one entry in ``registry.OPTIMIZERS``, its reference where it has a
textbook rule, and ``conf/optimizer/<name>.yaml`` repeating the entry's defaults (a contract
test checks it); the contract tests iterate over the registry. May import ``suite.types`` only.
"""
