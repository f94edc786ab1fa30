"""``python -m parity.amp_table``: which tutorial operation each AMP policy runs in which dtype, measured.

    python -m parity.amp_table                 print the tables
    python -m parity.amp_table --write         and write them into docs/porting.md between the markers

Rule: nothing here is copied from documentation. The dtypes are observed at run time with forward hooks
(``ddpm_torch.amp.observed_dtypes`` / ``ddpm_ms.amp.observed_dtypes``) on the tutorial's U-Net under each
policy: PyTorch ``torch.autocast`` on CPU (and on CUDA where a GPU is present; otherwise the column says it
was not measured), MindSpore ``amp.auto_mixed_precision`` O1, O2, O3 and "auto". The errors are each policy's
noise prediction against the float64 specification, and the cross difference of each MindSpore level with
PyTorch's float16 autocast; the "matched" pair is the one with the smallest cross difference. A policy that
cannot run says why in its column. The markdown is deterministic for a given machine and versions, and is
written atomically (``ddpm_core.runtime.atomic``) between ``<!-- amp-table:begin -->`` and ``<!-- amp-table:end -->``.
"""
from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ddpm_core.config import TUTORIAL_UNET, UnetConfig
from ddpm_core.runtime.amp import DtypeRecord, Policy

BEGIN, END = "<!-- amp-table:begin -->", "<!-- amp-table:end -->"
PORTING = Path(__file__).resolve().parent.parent / "docs" / "porting.md"
KINDS = {"Linear": "Linear", "Dense": "Linear", "ConvTranspose2d": "ConvTranspose2d",
         "Conv2dTranspose": "ConvTranspose2d"}
"""Framework class -> the table's operation name (as parity.settings names them); others keep their class name."""
ROWS = ("Conv2d", "ConvTranspose2d", "Linear", "GroupNorm", "LayerNorm", "GELU", "SiLU", "SinusoidalPositionEmbeddings",
        "Attention", "LinearAttention", "ConvNextBlock", "ResnetBlock")
"""The tutorial's operations, in the table's order (containers such as Sequential, Residual, PreNorm are left
out: they compute nothing of their own but an addition; so is the Unet's output, whose dtype is the policy's
output cast, listed below the table)."""
SHORT = {"float16": "16", "float32": "32", "bfloat16": "bf16", "float64": "64"}


def summarise(records: Sequence[DtypeRecord]) -> dict[str, str]:
    """{operation: "in→out ×count; ..."} over the calls of each operation (inputs: the first floating input)."""
    seen: dict[str, Counter] = {}
    for r in records:
        kind = KINDS.get(r.kind, r.kind)
        if kind in ROWS:
            pattern = f"{SHORT.get(r.inputs[0], r.inputs[0]) if r.inputs else '-'}→{SHORT.get(r.output, r.output)}"
            seen.setdefault(kind, Counter())[pattern] += 1
    return {k: "; ".join(f"{p} ×{n}" for p, n in sorted(c.items(), key=lambda i: (-i[1], i[0]))) for k, c in seen.items()}


def _inputs(cfg: UnetConfig, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((2, cfg.channels, size, size)).astype(np.float32), np.array([3, 150], np.int32)


def measure(cfg: UnetConfig = TUTORIAL_UNET, size: int = 28, errors: bool = True) -> list[dict[str, Any]]:
    """One entry per policy: {"name", "dtypes" (summarise) or "error" (why it cannot run), and with ``errors``
    "rel_l2" (prediction against the float64 specification) and "prediction"}."""
    import mindspore as ms
    import torch

    import ddpm_ms
    import ddpm_ms.amp as ms_amp
    import ddpm_torch
    import ddpm_torch.amp as torch_amp
    from parity.engine.initial import initial_weights
    from parity.sides.ms import MsSide
    from parity.sides.torch import TorchSide

    weights = initial_weights(cfg, 0)
    x, t = _inputs(cfg, size)
    spec = None
    if errors:
        from ddpm_core.reference import ReferenceUnet

        spec = ReferenceUnet(cfg, weights)(x.astype(np.float64), t)
    entries = []

    def entry(name: str, build: Callable[[], Any], observe: Callable, predict: Callable) -> None:
        e: dict[str, Any] = {"name": name}
        try:
            net = build()
            e["dtypes"] = summarise(observe(net, x, t))
            if spec is not None:
                raw = np.asarray(predict(net))
                y = raw.astype(np.float64)
                e["prediction"], e["output"] = y, str(raw.dtype)
                e["rel_l2"] = float(np.linalg.norm(y - spec) / np.linalg.norm(spec))
        except (RuntimeError, TypeError, ValueError) as err:  # a policy the framework refuses on this model
            first = next((ln.strip() for ln in str(err).splitlines() if ln.strip().strip("-")), "")
            e["error"] = f"{type(err).__name__}{': ' + first[:160] if first else ''}"
        entries.append(e)

    def torch_net(device: str, dtype: str) -> Any:
        side = TorchSide(device)
        model = side.load_model(weights, cfg)
        return torch_amp.apply_policy(model, Policy("torch", "autocast", dtype))

    def torch_predict(net: Any) -> np.ndarray:
        device = next(net.parameters()).device
        with torch.no_grad():
            return net(torch.from_numpy(x).to(device), torch.from_numpy(t).to(device)).cpu().numpy()

    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        for dtype in ("float16", "bfloat16"):
            entry(f"torch autocast {device} {dtype}", lambda: torch_net(device, dtype), torch_amp.observed_dtypes,
                  torch_predict)
    ms_side = MsSide()

    def ms_net(level: str, dtype: str) -> Any:
        model = ms_side.load_model(weights, cfg)
        return ms_amp.apply_policy(model, Policy("ms", level, dtype))

    for level in ("O1", "O2", "O3", "auto"):
        entry(f"MindSpore {level} float16", lambda: ms_net(level, "float16"), ms_amp.observed_dtypes,
              lambda net: net(ms.Tensor(x), ms.Tensor(t)).asnumpy())
    entry("MindSpore O3 bfloat16", lambda: ms_net("O3", "bfloat16"), ms_amp.observed_dtypes,
          lambda net: net(ms.Tensor(x), ms.Tensor(t)).asnumpy())
    del ddpm_ms, ddpm_torch
    return entries


def render(entries: Sequence[dict[str, Any]], cuda_measured: bool, environment: str) -> str:
    """The markdown between the markers: the dtype table, then the errors and the matched pair."""
    names = [e["name"] for e in entries]
    head = "| operation | " + " | ".join(names) + (" | torch autocast cuda |" if not cuda_measured else " |")
    lines = [f"Measured by `python -m parity.amp_table --write` ({environment}); the tutorial's U-Net "
             "(`Unet(dim=28, channels=1, dim_mults=(1, 2, 4))`), batch 2, 28x28, t = 3 and 150. Each cell: the "
             "dtype of the operation's first floating input → its output, × the number of calls (16 = float16, "
             "32 = float32, bf16 = bfloat16).", "",
             head, "|---" * (len(names) + 1 + (0 if cuda_measured else 1)) + "|"]
    for op in ROWS:
        cells = [e["dtypes"].get(op, "") if "dtypes" in e else "" for e in entries]
        if not any(cells):
            continue
        lines.append(f"| {op} | " + " | ".join(c or "-" for c in cells) + (" | not measured (no GPU) |"
                                                                          if not cuda_measured else " |"))
    outs = [f"{e['name']} {e['output']}" for e in entries if "output" in e]
    if outs:
        lines += ["", "The network's output as each policy returns it: " + "; ".join(outs) + " (PyTorch: "
                  "`ddpm_torch.amp.apply_policy` casts it to float32, as MindSpore's O2/O3 `_OutputTo32` does)."]
    failing = [e for e in entries if "error" in e]
    if failing:
        lines.append("")
        lines += [f"- **{e['name']}** cannot run here: `{e['error']}`" for e in failing]
    base = next((e for e in entries if e["name"] == "torch autocast cpu float16" and "prediction" in e), None)
    measured = [e for e in entries if "rel_l2" in e]
    if measured:
        lines += ["", "| policy | prediction vs float64 spec (rel L2) | vs torch autocast cpu float16 (rel L2) |",
                  "|---|---|---|"]
        for e in measured:
            cross = "-" if base is None or e is base else \
                f"{np.linalg.norm(e['prediction'] - base['prediction']) / np.linalg.norm(base['prediction']):.2e}"
            e["cross"] = cross
            lines.append(f"| {e['name']} | {e['rel_l2']:.2e} | {cross} |")
        ms16 = [e for e in measured if e["name"].startswith("MindSpore") and "float16" in e["name"]]
        if base is not None and ms16:
            best = min(ms16, key=lambda e: float(e["cross"]))
            level = best["name"].split()[1]
            lines += ["", f"**Matched configuration (by measurement):** PyTorch `torch.autocast(\"cpu\", "
                          f"dtype=torch.float16)` with MindSpore `amp.auto_mixed_precision(net, \"{level}\", "
                          f"ms.float16)`: the smallest cross difference ({best['cross']}) of the MindSpore levels that "
                          "run here."]
    return "\n".join(lines)


def splice(text: str, table: str) -> str:
    """``text`` with everything between the markers replaced by ``table`` (ValueError if a marker is missing)."""
    if text.count(BEGIN) != 1 or text.count(END) != 1 or text.index(BEGIN) > text.index(END):
        raise ValueError(f"{PORTING.name} needs exactly one {BEGIN} ... {END} pair")
    head, rest = text.split(BEGIN)
    return f"{head}{BEGIN}\n{table}\n{END}{rest.split(END, 1)[1]}"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m parity.amp_table", description=__doc__.split("\n\n")[0])
    p.add_argument("--write", action="store_true", help=f"write the tables into {PORTING} between the markers")
    args = p.parse_args(argv)
    from ddpm_core.runtime.atomic import atomic_write_bytes
    from parity.env import fingerprint, setup_mindspore, setup_torch

    env = fingerprint(setup_torch("cpu", 1), setup_mindspore("CPU", 1), "pynative")
    import torch

    cuda = torch.cuda.is_available()
    where = (f"{env.get('cpu_model', 'CPU')}, torch {env.get('torch')}, mindspore {env.get('mindspore')}"
             + (f", {torch.cuda.get_device_name()}" if cuda else ""))
    table = render(measure(), cuda, where)
    print(table)
    if args.write:
        try:
            text = splice(PORTING.read_text(encoding="utf-8"), table)
        except (OSError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        atomic_write_bytes(PORTING, text.encode("utf-8"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
