"""Shared fixtures. ``twin`` runs a behaviour test once per framework."""
import os

# MindSpore's oneDNN must see this before its first CPU kernel (docs/performance.md).
os.environ.setdefault("ONEDNN_MAX_CPU_ISA", "AVX2")
