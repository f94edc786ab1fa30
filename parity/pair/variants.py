"""The other side of a pair as the same PyTorch model run another way: compiled (``torch.compile``) and/or under
``torch.autocast``.

``compare(model, TorchVariant(copy_of_model, compile="inductor"), inputs)`` in Python; ``python -m parity.pair
SPEC.py --other compile[:BACKEND]`` / ``--other autocast[:DTYPE]`` (or both, comma-separated) on the command line,
where the SPEC's ``torch_model()`` is built a second time for the other side (its ``ms_model()`` is not built).

Rules it keeps (framework-free: the side that runs it is ``parity.pair.torch_side.TorchPairSide``):
  * a compiled side is judged as a float32 port is (k x the eager model's float32 rounding); an autocast side is
    judged against the float64 arbiter under gates from the measured rounding of that precision on this model:
    the reference model under the same autocast against float64 (``pair_* / bfloat16 | float16`` entries of
    ``parity.engine.tolerances``), never float32's gate and never the other side's own error;
  * only real compile paths: the backend is any ``torch.compile`` backend, default ``inductor``;
  * a spelling it does not know is ``ValueError`` naming what it knows (the CLI says it as one line, exit 2).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

AUTOCAST_DTYPES = ("bfloat16", "float16")
DEFAULT_BACKEND = "inductor"


@dataclass
class TorchVariant:
    """``model`` (an ``nn.Module``) compiled with ``compile`` (a backend name) and/or under ``autocast`` (a dtype
    name); None leaves that part eager / float32."""

    model: Any
    compile: str | None = None
    autocast: str | None = None

    def __post_init__(self) -> None:
        if self.compile is None and self.autocast is None:
            raise ValueError("TorchVariant: give compile=BACKEND and/or autocast=DTYPE")
        if self.autocast is not None and self.autocast not in AUTOCAST_DTYPES:
            raise ValueError(f"autocast dtype {self.autocast!r}: expected one of {', '.join(AUTOCAST_DTYPES)}")

    def describe(self) -> str:
        parts = ([f"compiled ({self.compile})"] if self.compile else []) + \
                ([f"autocast {self.autocast}"] if self.autocast else [])
        return ", ".join(parts)


def parse_other(text: str) -> dict[str, str]:
    """``--other``'s value as TorchVariant's keyword arguments: ``compile``, ``compile:aot_eager``,
    ``autocast``, ``autocast:float16``, or two of them joined by a comma."""
    out: dict[str, str] = {}
    for part in (p.strip() for p in text.split(",")):
        kind, _, value = part.partition(":")
        if kind == "compile" and "compile" not in out:
            out["compile"] = value or DEFAULT_BACKEND
        elif kind == "autocast" and "autocast" not in out and (value or "bfloat16") in AUTOCAST_DTYPES:
            out["autocast"] = value or "bfloat16"
        else:
            raise ValueError(f"--other {text!r}: expected compile[:BACKEND] and/or autocast[:{'|'.join(AUTOCAST_DTYPES)}]"
                             f", comma-separated (e.g. compile:aot_eager,autocast:bfloat16)")
    return out
