"""Tolerances as data: one table keyed by (output, dtype, device class), each entry with its reason.

Rule: every number here was set from errors MEASURED between the twins (``python -m parity.check
--json`` over many seeds and configurations, docs/harness.md "How the tolerances were set"), with a
margin of 10-50x over the worst measured value; a tolerance is never loosened to let a planted bug
through (tests/parity/test_planted_bugs.py proves each planted bug still fails). Entries marked
``provisional`` were not measured on that device class; the report says so.

Orientation: ``torch.testing.assert_close`` uses rtol 1.3e-6 / atol 1e-5 for float32 and
HF's PT/TF cross-framework tests 1e-5 absolute on logits. Our outputs are compared element-wise
(|a - b| <= atol + rtol * |b|, b = MindSpore) AND in aggregate (relative L2, cosine), so atol may
sit at the scale of the largest single-element error while the aggregates stay tight.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Tolerance:
    """Limits for one output. ``gate=False`` entries are reported as information, never failed."""

    atol: float
    rtol: float
    max_rel_l2: float
    min_cosine: float
    reason: str
    measured: str = ""
    gate: bool = True
    provisional: bool = False
    aggregate_over: str = "each"
    """"each": the aggregates hold for every tensor; "all": for all tensors of a row concatenated (each
    tensor still meets the element-wise rule), for outputs whose small tensors are ill-conditioned."""
    nonfinite: str = ""
    """Empty: a NaN or an infinity on either side fails (no entry of the table expects one). Otherwise the
    reason this output is expected to hold non-finite values: they must then sit at the same places, with the
    same sign, on both sides, and the report says the row allowed them."""

    def limits(self) -> dict:
        return {"atol": self.atol, "rtol": self.rtol, "max_rel_l2": self.max_rel_l2,
                "min_cosine": self.min_cosine, "gate": self.gate, "provisional": self.provisional,
                "aggregate_over": self.aggregate_over, "nonfinite": self.nonfinite}

    def elementwise_only(self) -> "Tolerance":
        return replace(self, max_rel_l2=math.inf, min_cosine=-1.0)


OUTPUTS = {
    "weights": "parameters as loaded into each twin, read back (PyTorch names)",
    "prediction": "noise prediction eps(x_t, t) of the U-Net",
    "loss": "training loss (huber / l1 / l2), a scalar",
    "grad": "gradient of the training loss for one parameter",
    "adam": "parameter change after k optimizer steps, MindSpore nn.Adam vs ddpm_torch MindSporeAdam",
    "adam_torch_rule": "the same with torch.optim.Adam (eps after bias correction): expected to differ",
    "ddpm_one_step": "one ancestral step from the same x_t (teacher-forced)",
    "ddpm_trajectory": "free-running ancestral sampling: every state x_{T-1} .. x_0",
    "ddim_trajectory": "free-running DDIM: every state",
    "diffusion_math": "the diffusion math alone, driven by a toy model (no U-Net)",
    "module": "one module's output while localising a failure",
    "optimizer_rule": "weights after a few optimizer steps on given gradients (no network), against a float64 oracle",
    "logic": "the PyTorch twin run in float64 against the float64 specification, on every anchored output",
}

DEVICE_CLASSES = ("cpu", "gpu", "ascend")

_RUNS = ("27 runs, CPU (2 cores), torch 2.14.1 / mindspore 2.10.0: the tutorial U-Net (T=200, seeds 0-2) and "
         "4 small configs (ConvNeXt, ResNet, RGB + cosine schedule; seeds 0-5); worst: ")

TOLERANCES: dict[tuple[str, str, str], Tolerance] = {
    ("weights", "float32", "cpu"): Tolerance(
        0.0, 0.0, 0.0, 1.0,
        "conversion only renames (layout rules are exact copies): any difference is a conversion bug",
        "0 (bit-identical) in every run"),
    ("prediction", "float32", "cpu"): Tolerance(
        1e-4, 1e-4, 5e-5, 1 - 5e-11,
        "same float32 math, different kernels (oneDNN in both, different conv algorithms and reduction "
        "orders): rounding that grows through ~40 layers",
        _RUNS + "max abs 3.7e-6, atol needed 3.4e-6, rel L2 1.9e-6, 1-cos 1.8e-12"),
    ("loss", "float32", "cpu"): Tolerance(
        3e-6, 3e-6, 5e-6, -1.0,
        "a mean over the batch of the prediction's error: its rounding averages out (a scalar: no cosine)",
        _RUNS + "max abs 1.2e-7, relative 2.4e-7"),
    ("grad", "float32", "cpu"): Tolerance(
        2e-6, 1e-3, 2e-4, 1 - 1e-9,
        "backward passes accumulate in different orders; near-zero gradient elements carry large relative "
        "error, so atol sits at the scale of the largest element error and the aggregates check tightly",
        _RUNS + "max abs 6.5e-7, atol needed 5.4e-8, rel L2 7.7e-6 (per tensor), 1-cos 2.7e-11"),
    ("adam", "float32", "cpu"): Tolerance(
        1e-4, 1e-3, 3e-3, 1 - 2e-7,
        "MindSpore's rule divides by sqrt(v) + eps with eps = 1e-8, so a gradient element near 3e-7 moves by a "
        "fraction of lr that rounding in the gradient changes: single elements may differ by up to ~lr (atol = "
        "lr); the update of all parameters together is held to rel L2 and cosine",
        _RUNS + "max abs 2.4e-6 (1.2e-5 seen at seed 9 of a ResNet config), atol needed 2.4e-6; over all "
        "parameters rel L2 1.1e-4, 1-cos 5.8e-9", aggregate_over="all"),
    ("adam_torch_rule", "float32", "cpu"): Tolerance(
        1e-4, 1e-3, 3e-3, 1 - 2e-7,
        "information only: torch.optim.Adam adds eps after the bias correction, MindSpore before it",
        _RUNS + "differs from nn.Adam by max abs 2.0e-4 (~2 lr), rel L2 0.1-2.2", gate=False, aggregate_over="all"),
    ("ddpm_one_step", "float32", "cpu"): Tolerance(
        2e-5, 1e-4, 1e-5, 1 - 2e-12,
        "one step = the prediction's error times beta_t / sqrt(1 - abar_t) / sqrt(alpha_t) plus a few "
        "elementwise ops; atol is in units of the state's RMS (the cosine schedule's first step multiplies "
        "by ~100)",
        _RUNS + "atol needed 6.4e-7 (state RMS units), rel L2 3.4e-7, 1-cos 5.7e-14"),
    ("ddpm_trajectory", "float32", "cpu"): Tolerance(
        2e-5, 1e-4, 1e-5, 1 - 2e-12,
        "one-step errors accumulate over T steps but the sampler contracts them; atol in units of the "
        "state's RMS",
        _RUNS + "atol needed 8.0e-7 (state RMS units), rel L2 3.7e-7, 1-cos 6.9e-14"),
    ("ddim_trajectory", "float32", "cpu"): Tolerance(
        2e-5, 1e-4, 1e-5, 1 - 2e-12,
        "DDIM steps scale the prediction's error by up to sqrt(1 - abar_prev) / sqrt(abar_t); atol in "
        "units of the state's RMS",
        _RUNS + "atol needed 4.7e-7 (state RMS units), rel L2 3.8e-7, 1-cos 7.2e-14"),
    ("diffusion_math", "float32", "cpu"): Tolerance(
        5e-6, 1e-6, 3e-6, 1 - 1e-10,
        "a handful of float32 elementwise ops on identical tables: a few ulps",
        _RUNS + "max abs 2.4e-7, atol needed 0, rel L2 1.2e-7, 1-cos 0"),
    ("module", "float32", "cpu"): Tolerance(
        2e-4, 1e-4, 5e-5, 1 - 5e-11,
        "one module's output while localising: intermediate activations are larger than the prediction",
        _RUNS + "max abs 1.6e-5, atol needed 6.7e-6, rel L2 2.0e-6, 1-cos 2.1e-12"),
    ("optimizer_rule", "float32", "cpu"): Tolerance(
        1e-6, 0.0, 1e-6, 1 - 1e-12,
        "a handful of float32 elementwise ops per step on weights of order 1 (lr up to 0.1): a few ulps, on any "
        "CPU (elementwise ops round identically everywhere); the rules differ by ~1e-2 (eps placement)",
        "max abs 1.5e-7 against the oracle at weights up to 2.1, 0 between the twins (tests/twins/test_optim.py, 3 "
        "steps, eps 1e-8 and 0.1; AMD EPYC)"),
    ("prediction", "float64", "cpu"): Tolerance(
        1e-12, 1e-12, 1e-12, 1 - 1e-13,
        "the float64 logic gate: the same math in float64 on both sides (ddpm_core.reference vs the PyTorch twin "
        "after model.double()), so what remains is float64 rounding, ~1e-15 relative through ~40 layers; "
        "anything larger is a logic difference (an epsilon, a GELU variant, a table value). Holds for every "
        "module's output and for the DDPM math run in float64 on both sides",
        "15 runs, CPU (2 cores, AMD EPYC), torch 2.14.1, numpy 1.26: 5 configs (tutorial 28x28, ResNet, RGB 4 levels, "
        "no time embedding, init/out dims) x seeds 0-2; worst: prediction max abs 5.4e-15 (3.3e-15 of max |eps|), "
        "rel L2 2.9e-15, 1-cos 2.2e-16; any module: max abs 3.6e-14, atol needed 1.2e-14, rel L2 4.0e-15"),
}


TOLERANCES[("logic", "float64", "cpu")] = replace(
    TOLERANCES[("prediction", "float64", "cpu")],
    reason="the float64 logic gate on every output the specification covers (predictions, losses, DDPM/DDIM "
           "steps): float64 rounding only, so any logic difference fails it (the prediction entry's reasoning)")


@dataclass(frozen=True)
class RelativeRule:
    """A machine-relative fp32 gate: ``k`` times this run's float32 rounding, measured as the PyTorch twin's
    float32 output against its own float64 run, but never below the absolute floors. Never derived from a
    twin's error against the specification, so a wrong twin cannot loosen its own gate. The element-wise
    rtol stays the table entry's."""

    k: float
    floor_atol: float
    floor_rel_l2: float
    reason: str
    measured: str = ""


_K_REASON = ("two float32 implementations of the same math differ from float64 by about the same rounding, and "
             "from each other by up to ~3x one of them; k = 10 leaves a margin of >= 3 over the largest ratio "
             "measured; the floors (a few float32 ulps of the output's scale) only matter if that rounding is ~0")
_K_MEASURED = ("20 runs of the default parity.check (tutorial U-Net, seeds 0-19), AMD EPYC, 2 cores, torch 2.14.1 / "
               "mindspore 2.10.0, 2026-11-27: at most 21% of the gate used (trajectory atol), predictions 8% "
               "(atol) / 12% (rel L2), losses 1.5%, one step 0.5%, DDIM 6%")
RELATIVE: dict[str, RelativeRule] = {
    "prediction": RelativeRule(10.0, 1e-6, 1e-6, _K_REASON, _K_MEASURED),
    "loss": RelativeRule(10.0, 1e-7, 1e-7, _K_REASON, _K_MEASURED),
    "ddpm_one_step": RelativeRule(10.0, 1e-6, 1e-6, _K_REASON + "; atol in units of the state's RMS", _K_MEASURED),
    "ddpm_trajectory": RelativeRule(10.0, 1e-6, 1e-6, _K_REASON + "; atol in units of the state's RMS", _K_MEASURED),
    "ddim_trajectory": RelativeRule(10.0, 1e-6, 1e-6, _K_REASON + "; atol in units of the state's RMS", _K_MEASURED),
}
BLAME_RATIO = 2.0
"""A failing row names the twin whose error against the specification exceeds the other's by more than this
(msprobe's rule: a relative error more than 2x the other side's)."""


def machine_relative(table: Tolerance, rounding_abs: float, rounding_rel_l2: float, rule: RelativeRule) -> Tolerance:
    """The gate for an output whose float32 rounding on this run is known: atol and relative L2 are ``rule.k``
    times that rounding (max abs, relative L2), at least the rule's floors; 1 - cosine follows the relative
    L2 limit (1 - cos ~ rel_l2^2 / 2); rtol and everything else are the table entry's."""
    atol = max(rule.floor_atol, rule.k * rounding_abs)
    rel = max(rule.floor_rel_l2, rule.k * rounding_rel_l2)
    return replace(table, atol=atol, max_rel_l2=rel, min_cosine=1.0 - min(1.0, rel) ** 2 / 2,
                   reason=f"{rule.k:g} x this run's float32 rounding (PyTorch float32 vs its float64 run), at least "
                          f"atol {rule.floor_atol:g} / rel L2 {rule.floor_rel_l2:g}: {rule.reason}",
                   measured=rule.measured)


def _provisional(base: Tolerance, device: str, factor: float) -> Tolerance:
    return replace(base, atol=base.atol * factor, rtol=base.rtol * factor, max_rel_l2=base.max_rel_l2 * factor,
                   min_cosine=max(-1.0, 1.0 - (1.0 - base.min_cosine) * factor),
                   reason=f"{base.reason} [{device}: CPU value x{factor:g}, HF32 off; not measured: no Ascend host has "
                          "run the twins]",
                   measured="not measured", provisional=True)


H200 = "shared/measurements/h200-2026-12-04"
"""Where the GPU figures come from: an NVIDIA H200, torch 2.11.0+cu130 (cuDNN 9.19), numpy 2.5.2, TF32 off."""
_GPU_SAME = (" [gpu: the CPU entry: the GPU's float32 rounding is the CPU's (predictions against float64: 1.85e-6 "
             "on the H200, 1.24e-6 on an AMD EPYC, batch 16; " + H200 + "/probe_cuda.json)]")
_GPU_MEASURED = ("parity.check compare of the H200's goldens (PyTorch CUDA) with MindSpore 2.10.0 CPU on an AMD EPYC "
                 "(" + H200 + "): predictions 1.6-1.9e-6 max abs (dim-16 config 1.7-2.9e-6), losses 6e-8, gradients "
                 "1.2e-7, one Adam step 8.6e-7, 200-step trajectory 5.2e-6, DDIM 5.7-6.7e-6; the CPU margins hold")
_GPU_FLOAT64 = "NVIDIA H200: PyTorch float64 against the specification, max abs 3.4e-15, rel L2 2.6e-15 (batch 16)"

for (_out, _dtype, _dev), _tol in list(TOLERANCES.items()):
    if _dev == "cpu":
        _measured = {"float32": _GPU_MEASURED if _tol.atol else _tol.measured, "float64": _GPU_FLOAT64}[_dtype]
        TOLERANCES.setdefault((_out, _dtype, "gpu"), replace(_tol, reason=_tol.reason + _GPU_SAME, measured=_measured))
        TOLERANCES.setdefault((_out, _dtype, "ascend"), _provisional(_tol, "ascend", 10.0) if _tol.atol else _tol)


@dataclass(frozen=True)
class HostRounding:
    """One host's float32 rounding of the noise predictions, as ``parity.engine.threeway.Rounding`` measures it
    (max abs in units of the prediction's RMS, at least 1; relative L2), for a host that did not measure its
    own: a golden file recorded before goldens carried it, or a MindSpore host, which has no float64
    convolution to measure against. ``compare`` gates on k x the larger of the two hosts' rounding
    (``RELATIVE``), whichever way each was obtained."""

    max_abs: float
    rel_l2: float
    reason: str
    measured: str
    provisional: bool = False


_TORCH_CPU = HostRounding(
    1.33e-6, 9.1e-7, "PyTorch float32 against its own float64 run on the CPU (oneDNN)",
    "tutorial U-Net, seeds 0-19, batch 2, the 5 prediction timesteps of the tape, 1 thread, AMD EPYC, torch 2.14.1: "
    "max abs 0.96-1.32e-6, rel L2 4.2e-7-9.0e-7")
HOST_ROUNDING: dict[tuple[str, str], HostRounding] = {
    ("torch", "cpu"): _TORCH_CPU,
    ("torch", "gpu"): HostRounding(
        1.85e-6, 1.21e-6, "PyTorch float32 (TF32 off, as the harness sets it) against its own float64 run on the GPU",
        "NVIDIA H200, torch 2.11.0+cu130, tutorial U-Net, batch 16: max abs 1.85e-6, rel L2 1.21e-6 (" + H200 +
        "/probe_cuda.json, mode fp32; cudnn.benchmark 2.13e-6, TF32 1.1e-3)"),
    ("ms", "cpu"): replace(
        _TORCH_CPU, reason="MindSpore's CPU build has no float64 Conv2D (it takes float16/float32/bfloat16), so a "
        "MindSpore host cannot measure its rounding the way PyTorch does, and a twin's error against the "
        "specification must never set its own gate (a wrong twin would loosen it); both frameworks run oneDNN's "
        "float32 kernels on a CPU, so PyTorch's measured CPU rounding stands in",
        measured=_TORCH_CPU.measured + "; MindSpore 2.10.0 against the float64 specification on the same 20 inputs: "
        "max abs 1.08-1.67e-6, rel L2 up to 9.9e-7, at most 1.25x this stand-in, inside the k = 10 gate"),
    ("ms", "gpu"): HostRounding(
        1.85e-6, 1.21e-6, "MindSpore GPU: PyTorch's measured H200 rounding stands in", "not measured: no MindSpore "
        "GPU host has run the twins", provisional=True),
    ("ms", "ascend"): HostRounding(
        1.33e-5, 9.1e-6, "Ascend has no float64 convolution to measure against; 10x PyTorch's CPU rounding stands "
        "in (precision mode must_keep_origin_dtype keeps float32)", "not measured: no Ascend host has run the twins",
        provisional=True),
}


def host_class(framework: str, device: str) -> str:
    """The device class ("cpu", "gpu", "ascend") of one host: ``framework`` "torch" or "ms" on ``device``."""
    if framework == "torch":
        return "gpu" if device.startswith("cuda") else "cpu"
    return {"ascend": "ascend", "gpu": "gpu"}.get(device.lower(), "cpu")


def host_rounding(framework: str, device: str) -> HostRounding:
    """The table's rounding of ``framework`` on ``device`` (``HOST_ROUNDING``)."""
    return HOST_ROUNDING[(framework, host_class(framework, device))]


def device_class(torch_device: str, ms_device: str) -> str:
    """The tolerance table's device key for a (torch device, MindSpore device target) pair."""
    if ms_device.lower() == "ascend":
        return "ascend"
    if torch_device.startswith("cuda") or ms_device.upper() == "GPU":
        return "gpu"
    return "cpu"


def tolerance(output: str, dtype: str = "float32", device: str = "cpu") -> Tolerance:
    """The entry for (output, dtype, device); ``KeyError`` naming what is known if there is none."""
    try:
        return TOLERANCES[(output, dtype, device)]
    except KeyError:
        known = sorted({k for k in TOLERANCES if k[0] == output})
        raise KeyError(f"no tolerance for {(output, dtype, device)}; known for {output!r}: {known}") from None


# ---------------------------------------------------------------- mixed precision (parity.precision)
_FP16_RUNS = ("AMD EPYC, 2 cores, torch 2.14.1 / mindspore 2.10.0, CPU: torch.autocast float16 and amp O2/O3/auto "
              "float16, loss scale 1024; ")
_FP16 = ("each twin against float64 (the specification; the PyTorch twin in float64 for gradients and Adam steps), "
         "relative L2 over the row; ")
_M = "seed 0, tiny U-Net (dim 8, 8x8, T=10) and the tutorial U-Net (28x28, T=200), MindSpore auto and O3; worst: "
TOLERANCES.update({
    ("prediction", "float16", "cpu"): Tolerance(
        1e-1, 0.0, 6e-3, -1.0,
        _FP16 + "float16 keeps 11 significant bits (2^-11 = 4.9e-4 per rounding) and ~40 layers round in it; "
        "bfloat16 (8 bits) lands ~8x higher and fails", _FP16_RUNS + _M + "2.0e-3 (tutorial, O3; PyTorch 1.9e-3); "
        "torch bfloat16 autocast 1.4e-2"),
    ("loss", "float16", "cpu"): Tolerance(
        1e-2, 0.0, 1e-3, -1.0,
        _FP16 + "a mean of the prediction's error: its rounding partly averages out (a scalar: relative error)",
        _FP16_RUNS + _M + "2.2e-4 (tiny, O3)"),
    ("grad", "float16", "cpu"): Tolerance(
        1.0, 0.0, 1e-2, -1.0,
        _FP16 + "all gradients concatenated: the backward pass rounds float16 activations again",
        _FP16_RUNS + _M + "2.7e-3 (tutorial, O3; PyTorch 2.2e-3)"),
    ("adam", "float16", "cpu"): Tolerance(
        1.0, 0.0, 1e-1, -1.0,
        _FP16 + "all parameter changes concatenated: MindSpore's rule divides by sqrt(v) + 1e-8, so elements with a "
        "gradient near zero move by a fraction of lr that rounding decides",
        _FP16_RUNS + _M + "3.6e-2 (tutorial, O3, 3 steps; PyTorch 2.9e-2)"),
    ("module", "float16", "cpu"): Tolerance(
        1e-3, 1e-3, math.inf, -1.0,
        "one module's output against the specification while localising a float16 failure: more than float16 "
        "rounding of the activations (|a - s| > 1e-3 + 1e-3 |s|), searched only where one twin is also "
        "BLAME_RATIO x farther than the other", _FP16_RUNS + "a MindSpore GroupNorm rounded to bfloat16 is found "
        "(tests/parity/test_precision.py); the matched pair has no module 2x apart"),
})


@dataclass(frozen=True)
class RatioRule:
    """Two twins in the same precision must be about equally far from float64: the larger error over the smaller
    at most ``bound``, each error counted at least at ``floor`` x the row's relative-L2 budget (errors far below
    the budget, e.g. a loss whose rounding cancels by chance, say nothing about which twin is worse)."""

    bound: float
    floor: float
    reason: str
    measured: str = ""


_R = "seed 0, tiny and tutorial U-Nets, MindSpore auto and O3 against torch autocast: worst ratio "
_MSPROBE = "msprobe's rule: a relative error more than 2x the other side's fails"
AMP_RATIO: dict[tuple[str, str], RatioRule] = {
    ("prediction", "float16"): RatioRule(2.0, 0.1, _MSPROBE, _R + "1.17; torch bfloat16 vs MindSpore float16 ~8"),
    ("loss", "float16"): RatioRule(2.0, 0.1, _MSPROBE + "; a loss's float16 error partly cancels by chance, hence the "
                                   "floor", _R + "1.0 (errors 2e-6 to 2e-4, all under the floor of 1e-4 but one)"),
    ("grad", "float16"): RatioRule(2.0, 0.1, _MSPROBE, _R + "1.20"),
    ("adam", "float16"): RatioRule(2.0, 0.5, _MSPROBE + "; an Adam step's error is the few elements whose tiny gradient "
                                   "flips sign in float16 (m / sqrt(v) is +-1 at step 1), a count that varies by chance "
                                   "between two equally precise twins, hence the higher floor",
                                   _R + "2.5 at floor 0.1 (tutorial, step 3: a false failure), 1.74 (tiny, O3) at 0.5"),
}


# ---------------------------------------------------------------- any pair (parity.pair)
_PAIR_K = ("the pair's gate is k x this model's float32 rounding on this machine (the PyTorch model in float32 against "
           "itself in float64, per output and per module call), never a side's error against float64; rtol 0, so the "
           "element-wise rule is k x the largest rounding error; the floors (a few float32 ulps at unit scale) only "
           "matter where that rounding is ~0 (data movement: pooling, indexing)")
OUTPUTS.update({
    "pair_output": "parity.pair: a user pair's model outputs (or loss) on one input",
    "pair_module": "parity.pair: one module call's outputs, a gradient or a stepped weight of a user pair",
    "pair_function": "parity.pair: a module's own error against float64 beyond which it computes a different function",
    "pair_loop": "parity.pair: the state after one step of a user pair's stochastic loop (free-running or teacher-forced)",
})
_PAIR_MEASURED = ("correct pairs, AMD EPYC (2 cores), torch 2.14.1 / mindspore 2.10.0, 2026-11-28: the hand-written pair of "
                  "tests/pair (seeds 0-2) and torchvision/mindcv resnet18 with the stem pooling fixed (64, 65 and 96 "
                  "pixels, seeds 0-2) use at most 14% of the output gate, 20% of a module call's and 30% of a single "
                  "step's (max abs or relative L2, whichever is nearer its limit)")
_PAIR_LOOP_K = ("each step's gate is k x PyTorch float32's error against its float64 run on that step, at that "
                "timestep (free-running: the drift so far included; teacher-forced: that step alone), so a timestep "
                "where float32 rounds worse gets a wider gate and no other does; " + _PAIR_K)
_PAIR_LOOP_MEASURED = ("diffusers 0.39 UNet2DModel + DDPMScheduler against mindone 0.5.0 (examples/pairs/unet2d_mindone.py, "
                       "16x16, exp in float64), 10 steps t=900..0, seeds 0-2, AMD EPYC (2 cores), torch 2.14.1 / "
                       "mindspore 2.10.0, 2026-12-04: at most 26% of a step's gate used (free-running or "
                       "teacher-forced; gates 6e-6 to 7e-5 max abs as the drift grows), the outputs at t=10, 500, "
                       "999 at most 19%")
TOLERANCES.update({
    ("pair_output", "float32", "cpu"): Tolerance(
        1e-4, 0.0, 5e-5, 1 - 5e-11, "a user pair's outputs: replaced by the machine-relative gate (RELATIVE)",
        _PAIR_MEASURED),
    ("pair_module", "float32", "cpu"): Tolerance(
        1e-4, 0.0, 5e-5, 1 - 5e-11, "one module call's outputs in a user pair: replaced by the machine-relative gate",
        _PAIR_MEASURED),
    ("pair_function", "float32", "cpu"): Tolerance(
        math.inf, 0.0, 1e-4, -1.0,
        "one module's own error against float64, fed identical inputs, beyond which it cannot be float32 rounding "
        "(~840 ulps of float32 in relative L2; a reduction over 10^4 terms rounds to ~100): a different function (an "
        "epsilon, a padding, an activation variant), not a less precise one",
        "planted slips in the tests/pair pair: own errors 7e-5 (LayerNorm eps 1e-7 vs 1e-5), 2.4e-4 (tanh GELU), 0.9 "
        "(transposed weight); correct modules' own errors stay below 1e-6 (8.1e-7 worst: resnet18, seed 0)"),
    ("pair_loop", "float32", "cpu"): Tolerance(
        1e-4, 0.0, 5e-5, 1 - 5e-11, "one step of a user pair's loop: replaced by the machine-relative gate (RELATIVE)",
        _PAIR_LOOP_MEASURED),
})
for _out in ("pair_output", "pair_module", "pair_function", "pair_loop"):
    _cpu = TOLERANCES[(_out, "float32", "cpu")]
    # A GPU's float32 (TF32 off) rounds as a CPU's does (the H200 probe: the tutorial U-Net 1.85e-6 from float64 on
    # the GPU, 1.24e-6 on an AMD EPYC), and the machine-relative gate measures it on the machine anyway.
    TOLERANCES.setdefault((_out, "float32", "gpu"), replace(
        _cpu, measured=_cpu.measured + "; on a GPU the CPU entry applies: ../shared/measurements/h200-2026-12-04 "
                                       "(probe_cuda.json) measured the same float32 rounding on an H200"))
    TOLERANCES.setdefault((_out, "float32", "ascend"), _provisional(_cpu, "ascend", 10.0))
RELATIVE.update({
    "pair_loop": RelativeRule(10.0, 1e-6, 1e-6, _PAIR_LOOP_K, _PAIR_LOOP_MEASURED),
    "pair_output": RelativeRule(10.0, 1e-6, 1e-6, _PAIR_K, _PAIR_MEASURED),
    "pair_module": RelativeRule(10.0, 1e-6, 1e-6, _PAIR_K, _PAIR_MEASURED),
})


# ---------------------------------------------------------------- a pair's autocast side (parity.pair --other autocast)
_AMP_K = ("an autocast side is compared with the float64 arbiter; its gate is k x this model's rounding in that "
          "precision on this machine (the reference PyTorch model under the same autocast against float64, per output "
          "and per module call), never float32's gate and never the autocast side's own error; the same code in the "
          "same precision rounds alike (ratio ~1), so k = 4 leaves a margin of ~4 and still sees a change a few times "
          "larger than the precision's own rounding")
_AMP_MEASURED = ("AMD EPYC (2 cores), torch 2.14.1, CPU autocast, 2026-12-04: the tests/pair model (seeds 0-2) and "
                 "torchvision resnet18 (64 and 65 pixels): an honest side's error against float64 over the reference's, "
                 "worst 1.00 eager and compiled with aot_eager, 1.01 at the output compiled with inductor (modules "
                 "1.00); 25-28% of the gate used; reference rounding (rel L2 at the output) bfloat16 2.2-3.6e-3 "
                 "(tests/pair) and 5.4e-3 (resnet18), float16 4.5-5.3e-4 and 7.8e-4")
RELATIVE_AMP: dict[tuple[str, str], RelativeRule] = {}
"""(output, autocast dtype) -> the machine-relative rule of an autocast side (parity.pair.judge.with_overrides)."""
_AMP_FUNCTION = {
    "bfloat16": (5e-2, "bfloat16 keeps 8 significant bits (2^-8 = 3.9e-3 per rounding): ~13 of them",
                 "honest modules' own errors (one module, identical inputs, against float64) at most 3.1e-3 for a "
                 "layer and 5.3e-3 for a block of them (resnet18 layer2); a GELU patched to SiLU 1.8e-1"),
    "float16": (5e-3, "float16 keeps 11 significant bits (2^-11 = 4.9e-4 per rounding): ~10 of them",
                "honest modules' own errors at most 4.2e-4 for a layer and 6.7e-4 for a block (resnet18 layer2); a "
                "GELU patched to x * sigmoid(1.702 x) 1.2e-2"),
}
for _dt, (_limit, _why, _seen) in _AMP_FUNCTION.items():
    for _out in ("pair_output", "pair_module"):
        RELATIVE_AMP[(_out, _dt)] = RelativeRule(4.0, 1e-6, 1e-6, _AMP_K, _AMP_MEASURED)
        TOLERANCES[(_out, _dt, "cpu")] = Tolerance(
            math.inf, 0.0, math.inf, -1.0, f"a pair's {_dt} autocast side: replaced by the machine-relative gate "
            "(RELATIVE_AMP)", _AMP_MEASURED)
    TOLERANCES[("pair_function", _dt, "cpu")] = Tolerance(
        math.inf, 0.0, _limit, -1.0, f"one module's own error against float64 under {_dt} autocast, fed identical "
        f"inputs, beyond which it cannot be {_dt} rounding ({_why}): a different function, not a less precise one",
        _AMP_MEASURED.split(":")[0] + ": " + _seen)
    for _out in ("pair_output", "pair_module", "pair_function"):
        _cpu = TOLERANCES[(_out, _dt, "cpu")]
        TOLERANCES[(_out, _dt, "gpu")] = replace(
            _cpu, reason=_cpu.reason + f" [gpu: the CPU entry; CUDA's {_dt} autocast was not measured: the gates still "
            "scale with the rounding measured on the machine]", measured="not measured on a GPU", provisional=True)
