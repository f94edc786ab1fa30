"""The Python API for users' own test suites: compare a PyTorch twin and a MindSpore twin that hold the
same weights, get the report, or assert parity.

    report = parity.check_models(torch_model, ms_model, seed=0, batch=2)
    parity.assert_parity(torch_model, ms_model, Options(checks=("predict", "reference")))
    parity.assert_close("eps", a, b, "prediction")   # one output, as the harness compares it

Rules: the models are ``ddpm_torch.Unet`` / ``ddpm_ms.Unet`` (or subclasses; anything with the same
``config``, parameter names and call signature); their weights are compared first and are left as
found (the optimizer check restores them). Everything random comes from the tape (parity.engine.tape).
This is the same run as ``python -m parity.check`` (``parity.runner.run_check``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Any, Sequence

import numpy as np

from ddpm_core.config import TUTORIAL_DIFFUSION, DiffusionConfig
from parity.engine.checks import CHECKS
from parity.engine.report import Report
from parity.engine.rows import Row, outputs_row
from parity.engine.suite import RunSpec
from parity.engine.tape import TapeSpec
from parity.runner import run_check


def default_image_size(size_multiple: int) -> int:
    """The tutorial's 28, rounded up to a multiple the U-Net accepts."""
    return int(math.ceil(28 / size_multiple) * size_multiple)


def make_spec(unet: Any, diffusion: DiffusionConfig = TUTORIAL_DIFFUSION, seed: int = 0, batch: int = 2,
              image_size: int | None = None, train_steps: int = 3, ddim_steps: int = 20,
              ddim_etas: Sequence[float] = (0.0, 0.5), pred_timesteps: Sequence[int] | None = None,
              checks: Sequence[str] = CHECKS) -> RunSpec:
    """A validated ``RunSpec`` (``ValueError`` naming the problem otherwise)."""
    if not checks:
        raise ValueError(f"no checks to run: name at least one of {', '.join(CHECKS)}")
    size = image_size or default_image_size(unet.size_multiple)
    if size % unet.size_multiple:
        raise ValueError(f"image size {size} is not a multiple of {unet.size_multiple} (dim_mults={unet.dim_mults})")
    tape = TapeSpec(seed, batch, unet.channels, size, diffusion.timesteps, train_steps, min(ddim_steps, diffusion.timesteps),
                    None if pred_timesteps is None else tuple(int(t) for t in pred_timesteps))
    return RunSpec(unet, diffusion, tape, tuple(checks), tuple(float(e) for e in ddim_etas))


@dataclass(frozen=True)
class Options:
    """What ``check_models`` runs (the fields of ``make_spec``) and how (``compiled``: the samplers' steps as
    compiled graphs, ``ms.jit`` in MindSpore; ``progress``: progress bars; ``worker``: the PyTorch side in a
    process of its own beside MindSpore, rebuilt from the model's config and weights, so only for an unmodified
    ``ddpm_torch.Unet``)."""

    diffusion: DiffusionConfig = TUTORIAL_DIFFUSION
    seed: int = 0
    batch: int = 2
    image_size: int | None = None
    train_steps: int = 3
    ddim_steps: int = 20
    ddim_etas: Sequence[float] = (0.0, 0.5)
    pred_timesteps: Sequence[int] | None = None
    checks: Sequence[str] = CHECKS
    compiled: bool = True
    progress: bool = False
    worker: bool = False

    def spec(self, unet: Any) -> RunSpec:
        """The validated ``RunSpec`` of these options for the U-Net config ``unet``."""
        run = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("compiled", "progress", "worker")}
        return make_spec(unet, **run)


def check_models(torch_model: Any, ms_model: Any, options: Options = Options(), *,
                 sides: tuple[Any, Any] | None = None, weights: dict[str, np.ndarray] | None = None,
                 **changes: Any) -> Report:
    """Run every chosen check on two models holding the same weights; return the ``Report`` (never raises
    for a numeric mismatch; ``ValueError`` for a bad configuration).

    ``options`` (``Options``), with any of its fields changed by keyword (``check_models(t, m, seed=1)``);
    ``sides`` (a ``TorchSide``, ``MsSide`` pair; default: built for the models, each reading its device from
    its own model) lets repeated calls on the same model objects reuse MindSpore's compiled steps;
    ``weights`` ({PyTorch name: array}) are the weights both models were loaded from, which the float64
    specification runs on and a differing weights row is blamed against (default: the PyTorch model's)."""
    options = replace(options, **changes)
    cfg = torch_model.config
    if getattr(ms_model, "config", None) != cfg:
        raise ValueError(f"the models differ in configuration: PyTorch {cfg}, MindSpore {getattr(ms_model, 'config', None)}")
    spec = options.spec(cfg)
    if sides is None:
        from parity.sides.ms import MsSide
        from parity.sides.torch import TorchSide

        sides = (TorchSide.of(torch_model), MsSide.of(ms_model))
    for side in sides:
        side.compiled, side.progress = options.compiled, options.progress
    from parity.env import fingerprint

    environment = fingerprint({"device": str(sides[0].device)}, {"device": str(sides[1].device)}, options.compiled)
    return run_check(sides, (torch_model, ms_model), spec, weights, environment, worker=options.worker)


def assert_parity(torch_model: Any, ms_model: Any, options: Options = Options(), **changes: Any) -> Report:
    """``check_models`` and raise ``AssertionError(report.text())`` unless everything passes."""
    report = check_models(torch_model, ms_model, options, **changes)
    if not report.passed:
        raise AssertionError(report.text())
    return report


def assert_close(label: str, a: Any, b: Any, output: str, device: str = "cpu") -> Row:
    """``a`` against the reference ``b`` (arrays, or ``{name: array}``) under the tolerance table's entry for
    ``output``, compared as ``python -m parity.check`` compares it; ``AssertionError`` naming the first
    failing tensor, its figures and the limits otherwise. A comparison of nothing fails."""
    row = outputs_row(label, output, a, b, device)
    if not row.summary.members:
        raise AssertionError(f"{label}: nothing was compared")
    if not row.passed:
        bad = [m for m in row.summary.members if not m.passed]
        raise AssertionError(f"{label} ({output} tolerance, {len(bad)} of {len(row.summary.members)} failing): "
                             f"{bad[0].describe()}")
    return row
