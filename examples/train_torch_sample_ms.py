"""Train the tutorial's DDPM in PyTorch, convert the weights, sample them in MindSpore.

    python examples/train_torch_sample_ms.py --data ~/data/fashion-mnist   # the real thing (10 epochs: hours)
    python examples/train_torch_sample_ms.py                               # no data: a 1-minute tiny demo
    python examples/train_torch_sample_ms.py --torch-device cuda --ms-device GPU   # on a GPU (each twin's word)

Each step is one command line, printed before it runs; copy them. Outputs go to --out (default ./example_torch_to_ms).
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
    p.add_argument("--out", default="example_torch_to_ms")
    p.add_argument("--torch-device", default="cpu", help="the PyTorch twin's --device: cpu, cuda or cuda:N")
    p.add_argument("--ms-device", default="CPU", help="the MindSpore twin's --device: CPU, GPU or Ascend")
    args = p.parse_args()
    out = Path(args.out)
    data, options = args.data, []
    if data is None:  # no data given: tiny synthetic garments and a tiny model, so this runs in about a minute
        data, options = str(write_synthetic_fashion_mnist(tempfile.mkdtemp(prefix="fashion-"))), TINY

    # 1. train in PyTorch (tutorial defaults: batch 16, Adam, cosine_decay_lr 1e-4 -> 1e-7, T=200, Huber)
    run("-m", "ddpm_torch.train", "--data", data, "--out", str(out / "run"), "--device", args.torch_device, *options)
    # (interrupted? `python -m ddpm_torch.train --resume RUN_DIR` continues from the last checkpoint)

    # 2. convert the PyTorch weights to a MindSpore checkpoint (a .pt carries no config: pass the run's)
    run("-m", "parity.convert", str(out / "run" / "model.pt"), str(out / "model.ckpt"),
        "--config", str(out / "run" / "config.json"))

    # 3. sample in MindSpore: a grid of 16 and the denoising of two of them as a GIF
    run("-m", "ddpm_ms.sample", "--weights", str(out / "model.ckpt"), "--config", str(out / "run" / "config.json"),
        "--n", "16", "--out", str(out / "samples.png"), "--gif", str(out / "denoise.gif"), "--gif-index", "0,5",
        "--device", args.ms_device)
    print(f"done: {out / 'samples.png'}, {out / 'denoise.gif'}, training log {out / 'run' / 'log.jsonl'}")


if __name__ == "__main__":
    main()
