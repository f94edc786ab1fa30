"""Mixed-precision policies by name, for both twins (framework-neutral: no framework is imported here).

Rule: a policy is named the way its framework names it, and each twin's ``amp`` module
(``ddpm_torch/amp.py``, ``ddpm_ms/amp.py``) is the only code that turns the name into framework calls.
PyTorch: ``torch.autocast`` in float16 or bfloat16 on the model's device (``fp32``: none). MindSpore:
``mindspore.amp.auto_mixed_precision`` at level O1, O2, O3 or "auto" (``O0``: none), in float16 or bfloat16.
``DTYPES`` names a policy's low-precision dtype the same way in both twins. Training's ``--precision``
(``train_policy``) uses the matched pair measured in docs/porting.md: ``torch.autocast`` and MindSpore's
"auto" level, each with float32 weights, float16 with the fixed loss scale ``DEFAULT_LOSS_SCALE``.
"""
from __future__ import annotations

from dataclasses import dataclass

DTYPES = ("float16", "bfloat16")
TORCH_POLICIES = ("fp32", "autocast")
MS_LEVELS = ("O0", "O1", "O2", "O3", "auto")
DEFAULT_LOSS_SCALE = 1024.0
"""The fixed loss scale of the float16 training steps in both twins (docs/harness.md, "Loss scaling")."""
TRAIN_DTYPES = {"bf16": "bfloat16", "fp16": "float16"}
"""``--precision`` -> the low-precision dtype of its policy (fp32: none)."""


@dataclass(frozen=True)
class Policy:
    """One twin's precision policy: ``framework`` "torch" or "ms", ``level`` one of ``TORCH_POLICIES`` /
    ``MS_LEVELS``, ``dtype`` one of ``DTYPES`` (ignored by the full-precision levels)."""

    framework: str
    level: str
    dtype: str = "float16"

    def __post_init__(self) -> None:
        levels = TORCH_POLICIES if self.framework == "torch" else MS_LEVELS
        if self.framework not in ("torch", "ms"):
            raise ValueError(f"framework must be 'torch' or 'ms', got {self.framework!r}")
        if self.level not in levels:
            raise ValueError(f"{self.framework} precision policy must be one of {', '.join(levels)}, got {self.level!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"low-precision dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")

    @property
    def full(self) -> bool:
        """Whether the policy changes nothing (float32 throughout)."""
        return self.level in ("fp32", "O0")

    @property
    def label(self) -> str:
        if self.full:
            return "float32"
        if self.framework == "torch":
            return f"torch.autocast {self.dtype}"
        return f"amp {self.level} {self.dtype}"


@dataclass(frozen=True)
class DtypeRecord:
    """One module call observed under a policy: its structural path, its class, the dtypes of its floating
    inputs and of its output (dtype names as numpy spells them: "float16", "float32", "bfloat16")."""

    path: str
    kind: str
    inputs: tuple[str, ...]
    output: str


def train_policy(framework: str, precision: str) -> Policy:
    """The policy of training's ``--precision`` (``ddpm_core.runtime.devices.PRECISIONS``) in ``framework`` ("torch":
    ``torch.autocast``; "ms": amp level "auto"; fp32: full precision)."""
    if precision == "fp32":
        return Policy(framework, "fp32" if framework == "torch" else "O0")
    if precision not in TRAIN_DTYPES:
        raise ValueError(f"precision must be fp32, bf16 or fp16, got {precision!r}")
    return Policy(framework, "autocast" if framework == "torch" else "auto", TRAIN_DTYPES[precision])


def train_loss_scale(precision: str) -> float:
    """The fixed loss scale of a training step at ``precision``: ``DEFAULT_LOSS_SCALE`` for fp16 (float16's
    range would flush small gradients to zero), 1 for bf16 (float32's range) and fp32."""
    return DEFAULT_LOSS_SCALE if precision == "fp16" else 1.0
