"""The comparison engine, model-agnostic and framework-free: the checks (checks/: one module per check, registered
once) and the loops over them (suite: one side's run, the follow steps, the rows), the shared random tape (tape),
the tolerance table (tolerances), the comparison of two outputs (compare) and the rows built from it (rows), the
float64 anchor and the three-way verdict (anchor, threeway), localisation (localise, settings, probes), golden
files and initial weights (golden, initial), and the report (report). Imports no framework, no twin and no side
(tests/parity/test_engine_imports.py): sides are given to it.
"""
