"""Train the same run as one process and as 2 data-parallel workers (torchrun or msrun), and compare them.

    python examples/data_parallel.py --framework torch                  # no data: tiny synthetic run, ~1 minute
    python examples/data_parallel.py --framework ms --data ~/data/fashion-mnist --max-steps 50
    python examples/data_parallel.py --framework torch --device cuda    # 2 GPUs: NCCL, one GPU per worker

Each training command is printed before it runs; copy them. The two runs use the same global batch, seed
and tape, so their loss curves and final weights agree up to float32 rounding (docs/distributed.md).
Outputs go to --out (default ./example_data_parallel).
"""
import argparse
import json
import shlex
import sys
import tempfile
from pathlib import Path

import numpy as np

from ddpm_core.runtime import launch
from ddpm_core.runtime.environment import child_env
from ddpm_core.training.datasets import write_synthetic_fashion_mnist
from ddpm_core.weights.files import load_weights

TINY = ["--dim", "8", "--dim-mults", "1,2", "--image-size", "8", "--timesteps", "10"]


def run(argv: list[str]) -> None:
    """Print the command (quoted: paste it into a shell as it is), run it here, stop on a failure."""
    print("$", shlex.join(["python" if c == sys.executable else c for c in argv]), flush=True)
    finished = launch.run(argv, child_env(), Path.cwd(), timeout_s=3600)
    if not finished.ok:
        sys.exit(f"error: {argv[2]} {finished.why}")


def losses(run_dir: Path) -> np.ndarray:
    return np.array([json.loads(line)["loss"] for line in (run_dir / "log.jsonl").read_text().splitlines()])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--framework", choices=("torch", "ms"), default="torch")
    p.add_argument("--data", help="Fashion-MNIST folder; default: synthetic, with a tiny model")
    p.add_argument("--max-steps", default="6")
    p.add_argument("--batch-size", default="4", help="the global batch (even: it is split over 2 workers)")
    p.add_argument("--out", default="example_data_parallel")
    p.add_argument("--device", default=None,
                   help="the twin's --device (PyTorch: cpu, cuda; MindSpore: CPU, GPU, Ascend); default: the CPU")
    args = p.parse_args()
    out, module = Path(args.out), f"ddpm_{args.framework}.train"
    data, options = args.data, []
    if data is None:
        data, options = str(write_synthetic_fashion_mnist(tempfile.mkdtemp(prefix="fashion-"), examples=32)), TINY
    train = ["--data", data, "--max-steps", args.max_steps, "--batch-size", args.batch_size, "--no-progress", *options]
    if args.device:
        train += ["--device", args.device]

    # 1. one process
    run(launch.job_command(args.framework, 1, module, [*train, "--out", str(out / "one")]).argv)
    # 2. two workers, with the framework's own launcher (only the launcher in front changes)
    run(launch.job_command(args.framework, 2, module, [*train, "--out", str(out / "two")], out / "msrun_log").argv)

    # 3. compare: the split changes only the order of float32 sums
    a, b = losses(out / "two"), losses(out / "one")
    wa, wb = load_weights(out / "two" / "model.safetensors").state, load_weights(out / "one" / "model.safetensors").state
    print(f"losses, 2 workers:  {np.array2string(a, precision=7)}")
    print(f"losses, 1 process:  {np.array2string(b, precision=7)}")
    print(f"max relative loss difference: {np.max(np.abs(a - b) / np.abs(b)):.2e}")
    print(f"max abs weight difference:    {max(float(np.max(np.abs(wa[k] - wb[k]))) for k in wb):.2e}")


if __name__ == "__main__":
    main()
