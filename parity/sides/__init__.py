"""The parity sides (``ddpm_core.contract.Side``): each twin behind numpy in / numpy out (torch, ms,
each importing its framework), the calls both run the same way (shared, framework-neutral), and the
PyTorch side in a process of its own (worker). The float64 specification's side is
``ddpm_core.reference.side.ReferenceSide``.
"""
