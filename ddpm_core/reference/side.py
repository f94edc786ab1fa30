"""The float64 specification as a parity side (``ddpm_core.contract.InferenceSide``), the third
implementation beside the two twins: the same calls, numpy in, float64 numpy out.

It has no gradients and no optimizer (the specification defines the forward math); its model is a
``ReferenceUnet`` and its diffusion a ``ReferenceDiffusion``.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from ddpm_core.config import DiffusionConfig, UnetConfig
from ddpm_core.contract import Record, State
from ddpm_core.reference.diffusion import ReferenceDiffusion
from ddpm_core.reference.unet import ReferenceUnet
from ddpm_core.schedules import DDIMPlan


class ReferenceSide:
    name = "reference"
    label = "float64 specification"

    @staticmethod
    def load_model(state: Mapping[str, np.ndarray], cfg: UnetConfig) -> ReferenceUnet:
        """The specification's U-Net holding float64 copies of ``state`` (PyTorch names, strict)."""
        return ReferenceUnet(cfg, state)

    @staticmethod
    def state(model: ReferenceUnet) -> State:
        return model.state()

    @staticmethod
    def diffusion(cfg: DiffusionConfig) -> ReferenceDiffusion:
        return ReferenceDiffusion(cfg)

    @staticmethod
    def predict(model: ReferenceUnet, x: np.ndarray, t: np.ndarray) -> np.ndarray:
        return model(x, t)

    @staticmethod
    def loss(model: ReferenceUnet, diffusion: ReferenceDiffusion, x0: np.ndarray, t: np.ndarray, noise: np.ndarray,
             loss_type: str) -> np.ndarray:
        return np.asarray(diffusion.p_losses(model, x0, t, noise, loss_type))

    @staticmethod
    def ddpm_one_step(model: ReferenceUnet, diffusion: ReferenceDiffusion, xs: np.ndarray, ts: np.ndarray,
                      noise: np.ndarray) -> np.ndarray:
        """One ancestral step from each given state: xs (N, B, ...), ts (N,), noise (N, B, ...) -> (N, B, ...)."""
        n, b = xs.shape[:2]
        flat = lambda a: np.asarray(a).reshape(n * b, *xs.shape[2:])  # noqa: E731
        stepped = diffusion.p_step(model, flat(xs), np.repeat(np.asarray(ts), b).astype(np.int32), flat(noise))
        return stepped.reshape(xs.shape)

    @staticmethod
    def ddim_step(model: ReferenceUnet, diffusion: ReferenceDiffusion, x: np.ndarray, plan: DDIMPlan, k: int,
                  noise: np.ndarray | None) -> np.ndarray:
        return diffusion.ddim_step(model, x, int(plan.t[k]), plan, k, noise)

    @staticmethod
    def capture(model: ReferenceUnet, x: np.ndarray, t: np.ndarray) -> list[Record]:
        """Every module call on (x, t) under PyTorch's module paths and call numbers (outputs only)."""
        records: list[Record] = []
        calls: dict[str, int] = {}

        def record(path: str, output: Any) -> None:
            k = calls[path] = calls.get(path, -1) + 1
            records.append(Record(path, k, "", (), (np.array(output),)))

        model(x, t, record=record)
        return records
