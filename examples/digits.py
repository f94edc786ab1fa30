"""Real handwritten digits in minutes on a CPU: train each twin on scikit-learn's 8x8 digits (shipped inside
its wheel: nothing is downloaded), then sample a grid from each.

    python -m pip install -e '.[digits]'
    python examples/digits.py                          # both twins, the recipe of docs/quality.md
    python examples/digits.py --twins torch --epochs 20   # PyTorch only, a shorter (blurrier) run
    python examples/digits.py --twins torch --torch-device cuda   # on a GPU

Both twins start from the same initial weights, train on the same per-step tape (batches, t, noise) and
sample from the same noise, so cell i of one grid and cell i of the other are comparable. Each step is one
command line, printed before it runs; copy them. Outputs go to --out (default runs/digits):
RUN folders torch/ and ms/, the grids torch.png and ms.png, and times.json.
"""
import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from ddpm_core.config import UnetConfig
from ddpm_core.runtime.atomic import atomic_write_bytes
from ddpm_core.training.digits import RECIPE
from ddpm_core.weights.files import save_weights
from parity.engine.initial import initial_weights


def run(*cmd: str) -> float:
    """Run ``python CMD`` and return its wall time in seconds."""
    print("$ python", " ".join(cmd), flush=True)
    start = time.perf_counter()
    subprocess.run([sys.executable, *cmd], check=True)
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--twins", default="torch,ms", help="comma-separated: torch, ms")
    p.add_argument("--out", default="runs/digits")
    p.add_argument("--epochs", default=RECIPE["epochs"], help=f"training epochs (recipe: {RECIPE['epochs']})")
    p.add_argument("--n", default="64", help="samples in each grid")
    p.add_argument("--torch-device", default="cpu", help="the PyTorch twin's --device: cpu, cuda or cuda:N")
    p.add_argument("--ms-device", default="CPU", help="the MindSpore twin's --device: CPU, GPU or Ascend")
    args = p.parse_args()
    out = Path(args.out)
    recipe = {**RECIPE, "epochs": args.epochs}
    options = [x for option, value in recipe.items() for x in (f"--{option}", value)]

    # 1. one set of initial weights for both twins (numpy, seeded; any .pt/.ckpt/.safetensors would do)
    cfg = UnetConfig(dim=int(recipe["dim"]), channels=1, dim_mults=tuple(map(int, recipe["dim-mults"].split(","))))
    init = out / "init.safetensors"
    save_weights(initial_weights(cfg, seed=0), init, "torch", cfg)

    times = {}
    for twin in args.twins.split(","):
        device = args.torch_device if twin == "torch" else args.ms_device
        # 2. train on the digits' training split (1,497 images; no horizontal flips for digits)
        train_s = run("-m", f"ddpm_{twin}.train", "--data", "digits", "--out", str(out / twin),
                      "--init-weights", str(init), "--device", device, *options)
        # 3. sample a grid with the tutorial's DDPM sampler (T=200 steps), the same noise in both twins
        sample_s = run("-m", f"ddpm_{twin}.sample", "--weights", str(out / twin / "model.safetensors"),
                       "--n", args.n, "--scale", "4", "--out", str(out / f"{twin}.png"), "--device", device)
        times[twin] = {"train_s": round(train_s, 1), "sample_s": round(sample_s, 1),
                       "steps": len((out / twin / "log.jsonl").read_text().splitlines())}
        print(f"{twin}: trained {times[twin]['steps']} steps in {train_s:.0f} s, sampled {args.n} in {sample_s:.0f} s "
              f"-> {out / f'{twin}.png'}", flush=True)
    atomic_write_bytes(out / "times.json", (json.dumps({"cpu_count": os.cpu_count(), **times}, indent=1) + "\n").encode())


if __name__ == "__main__":
    main()
