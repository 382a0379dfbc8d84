"""Studies: presets expanded into validated cells (``presets``), one cell as one job (``cell``),
where the jobs run (``launchers``: in-process, local processes, submitit), and ``suite-study``
itself (``runner``: every cell, then the report). May import ``suite.tune``, ``suite.report``
and everything below them.
"""
