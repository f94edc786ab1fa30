"""Train the tutorial's DDPM in MindSpore, convert the weights, sample them in PyTorch.

    python examples/train_ms_sample_torch.py --data ~/data/fashion-mnist   # the real thing (10 epochs: hours)
    python examples/train_ms_sample_torch.py                               # no data: a few-minute tiny demo
    python examples/train_ms_sample_torch.py --ms-device Ascend --torch-device cuda   # on accelerators

Each step is one command line, printed before it runs; copy them. Outputs go to --out (default ./example_ms_to_torch).
"""
import argparse
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

from ddpm_core.training.datasets import write_synthetic_fashion_mnist

TINY = ["--max-steps", "20", "--dim", "8", "--timesteps", "20", "--batch-size", "8", "--save-every", "10"]


def run(*cmd: str) -> None:
    print("$", shlex.join(["python", *cmd]), flush=True)  # quoted: paste it into a shell as it is
    subprocess.run([sys.executable, *cmd], check=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help="Fashion-MNIST folder (train-images-idx3-ubyte[.gz], ...); default: synthetic")
    p.add_argument("--out", default="example_ms_to_torch")
    p.add_argument("--torch-device", default="cpu", help="the PyTorch twin's --device: cpu, cuda or cuda:N")
    p.add_argument("--ms-device", default="CPU", help="the MindSpore twin's --device: CPU, GPU or Ascend")
    args = p.parse_args()
    out = Path(args.out)
    data, options = args.data, []
    if data is None:  # no data given: tiny synthetic garments and a tiny model
        data, options = str(write_synthetic_fashion_mnist(tempfile.mkdtemp(prefix="fashion-"))), TINY

    # 1. train in MindSpore (the whole training step runs as one ms.jit graph: --compile auto)
    run("-m", "ddpm_ms.train", "--data", data, "--out", str(out / "run"), "--device", args.ms_device, *options)
    # (interrupted? `python -m ddpm_ms.train --resume RUN_DIR` continues from the last checkpoint)

    # 2. convert: model.safetensors records its config, so no --config is needed
    run("-m", "parity.convert", str(out / "run" / "model.safetensors"), str(out / "model.pt"))

    # 3. sample in PyTorch, with DDIM in 50 steps this time
    run("-m", "ddpm_torch.sample", "--weights", str(out / "model.pt"), "--config", str(out / "run" / "config.json"),
        "--n", "16", "--sampler", "ddim", "--steps", "10" if options else "50",
        "--out", str(out / "samples.png"), "--gif", str(out / "denoise.gif"), "--gif-index", "0,5",
        "--device", args.torch_device)
    # 4. and the tutorial's forward-diffusion figure, of the first sample
    run("-m", "ddpm_torch.noise_strip", str(out / "samples.png"), "--out", str(out / "strip.png"),
        "--device", args.torch_device)
    print(f"done: {out / 'samples.png'}, {out / 'denoise.gif'}, {out / 'strip.png'}")


if __name__ == "__main__":
    main()
