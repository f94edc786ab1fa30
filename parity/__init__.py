"""The tools that compare the twins: weight conversion (convert), and the parity checks.

Kept empty so that ``python -m parity.<tool>`` imports only what that tool needs.
"""
