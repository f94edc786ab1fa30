"""Framework-neutral core shared by both twins: configuration and schedules at the top, and three rooms:
``weights`` (naming, the weight-mapping engine, conversion, files, integrity, the one digest), ``training`` (the loop, its settings,
tape, run folder and data) and ``runtime`` (environment, devices, memory, launchers, atomic writes).

Rule: nothing here imports torch or mindspore at import time, and nothing imports a twin
or the parity harness.
"""
from ddpm_core.config import (
    TUTORIAL_DIFFUSION,
    TUTORIAL_UNET,
    DiffusionConfig,
    UnetConfig,
)
from ddpm_core.schedules import DiffusionSchedule, make_schedule

__all__ = [
    "DiffusionConfig",
    "DiffusionSchedule",
    "TUTORIAL_DIFFUSION",
    "TUTORIAL_UNET",
    "UnetConfig",
    "make_schedule",
]
