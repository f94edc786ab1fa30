"""The diffusion-math probes: each twin's q_sample, p_sample, p_losses and both sampling loops driven
by a toy noise model (eps = 0.9 x + 0.001 t, no U-Net), plus an oracle (the float64 specification
``ddpm_core.reference`` over the same float32 tables), so a failure in the diffusion math is told apart
from one in the network and the side that deviates is named.

Rule: probes are tiny (PROBE_SHAPE images, the tape's probe arrays) and run op by op; the oracle is the
specification's math, never a second copy of it. ``diagnose`` explains a deviation in
words where it can (a schedule read at t+1, a per-step noise that is not the tape's).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import numpy as np

from ddpm_core.config import DiffusionConfig
from ddpm_core.contract import D, Side
from ddpm_core.reference import ReferenceDiffusion
from parity.engine.tape import PROBE_SHAPE

LOOP_TIMESTEPS = 10
LOOP_DDIM_STEPS = 5
"""The loop probes run a schedule of the same kind over min(T, 10) steps (DDIM: 5): the loops'
structure (step order, noise use, the last step) is what they check; the tables are checked at full T."""


def loop_config(cfg: DiffusionConfig) -> DiffusionConfig:
    return dataclasses.replace(cfg, timesteps=min(cfg.timesteps, LOOP_TIMESTEPS))


def _table_inputs(T: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ones = np.ones((T, 1, 1, 1), np.float32)
    return ones, np.arange(T, dtype=np.int32), np.zeros((T, 1, 1, 1), np.float32)


def run_probes(side: Side[Any, D], diffusion: D, tape: Mapping[str, np.ndarray], cfg: DiffusionConfig,
               loss_types: Sequence[str], ddim_steps: int, etas: Sequence[float]) -> dict[str, np.ndarray]:
    """Every probe output of one side, by name."""
    T, lcfg = cfg.timesteps, loop_config(cfg)
    loop = diffusion if lcfg == cfg else side.diffusion(lcfg)
    steps = min(ddim_steps, LOOP_DDIM_STEPS, lcfg.timesteps)
    noise = tape["probe_step_noise"][: lcfg.timesteps]
    ones, ts, zeros = _table_inputs(T)
    out = {
        "q_sample_table": np.stack([side.probe_q_sample(diffusion, ones, ts, zeros).reshape(T),
                                    side.probe_q_sample(diffusion, zeros, ts, ones).reshape(T)]),
        "q_sample": side.probe_q_sample(diffusion, tape["probe_x0"], tape["probe_t"], tape["probe_noise"]),
        "p_sample_table": side.probe_p_sample(diffusion, ones, ts, ones).reshape(T),
        "p_sample": side.probe_p_sample(diffusion, tape["probe_x"], tape["probe_t"], tape["probe_noise"]),
        "ddpm_loop": side.probe_ddpm_loop(loop, tape["probe_x"], noise),
    }
    for lt in loss_types:
        out[f"loss_{lt}"] = side.probe_loss(diffusion, tape["probe_x0"], tape["probe_t"], tape["probe_noise"], lt)
    for eta in etas:
        out[f"ddim_loop_eta={eta:g}"] = side.probe_ddim_loop(loop, tape["probe_x"], steps, eta, noise[:steps])
    return out


def probe_shapes(cfg: DiffusionConfig, loss_types: Sequence[str], ddim_steps: int,
                 etas: Sequence[float]) -> dict[str, tuple[int, ...]]:
    """``{name: shape}`` of every output ``run_probes`` returns for these settings."""
    T, lcfg = cfg.timesteps, loop_config(cfg)
    image = tuple(PROBE_SHAPE)
    out = {"q_sample_table": (2, T), "q_sample": image, "p_sample_table": (T,), "p_sample": image,
           "ddpm_loop": (lcfg.timesteps, *image)}
    out.update({f"loss_{lt}": () for lt in loss_types})
    steps = min(ddim_steps, LOOP_DDIM_STEPS, lcfg.timesteps)
    out.update({f"ddim_loop_eta={eta:g}": (steps, *image) for eta in etas})
    return out


def _toy(x: np.ndarray, t: np.ndarray) -> np.ndarray:
    return 0.9 * x + 0.001 * t.astype(np.float64).reshape(-1, 1, 1, 1)


class Oracle:
    """The probes' expected values: the specification's DDPM math (``ddpm_core.reference.ReferenceDiffusion``,
    float64 over the twins' float32 tables) driven by the same toy model."""

    def __init__(self, cfg: DiffusionConfig):
        self.cfg = cfg
        self.reference = ReferenceDiffusion(cfg)
        self.tab = self.reference.tables
        self.loop = self if cfg == loop_config(cfg) else Oracle(loop_config(cfg))

    def q_sample(self, x0: np.ndarray, t: np.ndarray, noise: np.ndarray) -> np.ndarray:
        return self.reference.q_sample(x0, t, noise)

    def p_step(self, x: np.ndarray, t: np.ndarray, noise: np.ndarray | None) -> np.ndarray:
        """One ancestral step of the toy model; ``noise=None`` gives the mean alone (the last step)."""
        return self.reference.p_step(_toy, x, t, noise)

    def loss(self, x0: np.ndarray, t: np.ndarray, noise: np.ndarray, loss_type: str) -> np.ndarray:
        return np.asarray(self.reference.p_losses(_toy, x0, t, noise, loss_type))

    def ddpm_loop(self, x: np.ndarray, noise: np.ndarray) -> np.ndarray:
        """Every state of the toy model's ancestral loop; ``noise`` may hold more rows than T (the tape's)."""
        return self.reference.p_sample_loop(_toy, x, noise[: self.cfg.timesteps])

    def ddim_loop(self, x: np.ndarray, steps: int, eta: float, noise: np.ndarray) -> np.ndarray:
        return self.reference.ddim_sample_loop(_toy, x, steps, eta, noise)

    def expected(self, tape: Mapping[str, np.ndarray], loss_types: Sequence[str], ddim_steps: int,
                 etas: Sequence[float]) -> dict[str, np.ndarray]:
        T = self.cfg.timesteps
        ones, ts, _ = _table_inputs(T)
        out = {
            "q_sample_table": np.stack([self.tab["sqrt_alphas_cumprod"], self.tab["sqrt_one_minus_alphas_cumprod"]]),
            "q_sample": self.q_sample(tape["probe_x0"], tape["probe_t"], tape["probe_noise"]),
            "p_sample_table": self.p_step(ones, ts, ones).reshape(T),
            "p_sample": self.p_step(tape["probe_x"], tape["probe_t"], tape["probe_noise"]),
            "ddpm_loop": self.loop.ddpm_loop(tape["probe_x"], tape["probe_step_noise"]),
        }
        for lt in loss_types:
            out[f"loss_{lt}"] = self.loss(tape["probe_x0"], tape["probe_t"], tape["probe_noise"], lt)
        steps = min(ddim_steps, LOOP_DDIM_STEPS, self.loop.cfg.timesteps)
        for eta in etas:
            out[f"ddim_loop_eta={eta:g}"] = self.loop.ddim_loop(tape["probe_x"], steps, eta,
                                                                tape["probe_step_noise"][:steps])
        return out


def _close(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.allclose(a, b, rtol=1e-5, atol=1e-6))


def diagnose(name: str, got: np.ndarray, oracle: Oracle, tape: Mapping[str, np.ndarray]) -> str:
    """Words for how one side's probe ``name`` deviates from the oracle, or ''."""
    T = oracle.cfg.timesteps
    if name in ("q_sample_table", "p_sample_table"):
        ref = oracle.expected(tape, (), 1, ())[name]
        ok = np.isclose(got, ref, rtol=1e-5, atol=1e-6).reshape(-1, T).all(axis=0)
        first = int(np.argmax(~ok))
        for s in (1, -1, 2, -2):
            lo, hi = max(0, -s), min(T, T - s)
            if _close(got[..., lo:hi], ref[..., lo + s:hi + s]):
                fn = "q_sample" if name.startswith("q") else "p_sample"
                return f"{fn} reads the schedule at t{s:+d} (off by {s:+d}), first wrong at t={first}"
        return f"differs from the schedule first at t={first}"
    if name == "ddpm_loop":
        oracle, T = oracle.loop, oracle.loop.cfg.timesteps
        ref_prev = tape["probe_x"].astype(np.float64)
        noise = tape["probe_step_noise"]
        for k, i in enumerate(range(T - 1, -1, -1)):
            t = np.full(len(ref_prev), i)
            want = oracle.p_step(ref_prev, t, None if i == 0 else noise[k])
            if not _close(got[k], want):
                sigma = float(np.sqrt(oracle.tab["posterior_variance"][i]))
                if sigma > 0:
                    r = (got[k] - want) / sigma
                    rms = float(np.sqrt(np.mean(r * r)))
                    if 0.5 < rms < 3.0:
                        return (f"step {k} (t={i}): differs by sigma_t x (noise of RMS {rms:.2f}): the per-step "
                                "noise is not the tape's (drawn from the framework's RNG?)")
                return f"first differs at step {k} (t={i}) by max abs {float(np.max(np.abs(got[k] - want))):.2e}"
            ref_prev = np.asarray(got[k], np.float64)
    return ""
