"""The parity sides (``ddpm_core.contract.Side``): each twin behind numpy in / numpy out (torch, ms),
and the PyTorch side in a process of its own (worker). The float64 specification's side is
``ddpm_core.reference.side.ReferenceSide``. Each module imports its framework.
"""
