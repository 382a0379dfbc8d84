"""Studies: presets expanded into validated cells (``presets``), one cell as one job (``cell``),
where the jobs run (``launchers``: in-process, local processes, submitit), a comparison against a
published study (``baseline``: its protocol, only the new optimizers' cells), and ``suite-study``
itself (``runner``: every cell, then the report). May import ``suite.tune``, ``suite.report``
and everything below them.
"""
