"""The comparison engine: what a run computes on each side (suite), the shared random tape (tape), the
tolerance table (tolerances), the comparison of two outputs (compare), the float64 anchor and the
three-way verdict (anchor, threeway), localisation (localise, settings, probes), golden files and
initial weights (golden, initial), and the report (report). Imports neither framework.
"""
