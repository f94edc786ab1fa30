"""``python -m parity.bench``'s options, their checks, and the run: the CPU bench (every configuration in
its own worker process, the data-parallel scaling, the parity check's wall time) or, with ``--device cuda``,
the CUDA bench. Also the entries the workers run (``--worker``, ``--dp-worker``: hidden options).

Bad options: one line from argparse and exit 2; no CUDA device: one line and exit 3. The JSON and the
Markdown are written atomically, after every figure is in.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
from pathlib import Path
from typing import Any, Sequence

from ddpm_core.atomic import atomic_write_bytes
from ddpm_core.config import TUTORIAL_UNET, read_unet_config
from ddpm_core.errors import UserError
from parity.bench.cuda import CUDA_CONFIGS, DEFAULT_CUDA_CONFIGS
from parity.bench.load import cpu_info, wait_quiet
from parity.bench.markdown import markdown
from parity.bench.orchestrate import Worker, measure, run_check, summarise, targets
from parity.bench.scaling import DP_CONFIGS, data_parallel_scaling, dp_worker
from parity.bench.workloads import CONFIGS, DEFAULT_CONFIGS, T, worker

DEFAULTS = {"cpu": {"configs": DEFAULT_CONFIGS, "train_steps": 3, "sample_steps": 10},
            "cuda": {"configs": DEFAULT_CUDA_CONFIGS, "train_steps": 20, "sample_steps": T}}
"""Per ``--device``: the configurations, training steps per measurement and sampling steps per loop."""


def build_parser() -> argparse.ArgumentParser:
    from parity import bench

    p = argparse.ArgumentParser(prog="python -m parity.bench", description=bench.__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="cpu (default): both frameworks side by side; cuda: PyTorch on the GPU (its own configurations)")
    p.add_argument("--batch", type=int, default=16, help="images per batch (default 16)")
    p.add_argument("--train-steps", type=int, default=None, help="training steps per measurement (default 3; cuda 20)")
    p.add_argument("--sample-steps", type=int, default=None,
                   help=f"sampling steps per measurement, scaled to T={T} (default 10; cuda {T}: the full loop)")
    p.add_argument("--repeats", type=int, default=3, help="measurements per configuration (default 3)")
    p.add_argument("--configs", default=None, help=f"comma-separated subset of {','.join(CONFIGS)} "
                                                   f"(cuda: {','.join(CUDA_CONFIGS)})")
    p.add_argument("--isa", choices=("avx2", "both"), default="avx2",
                   help="both: also the tutorial under oneDNN's default instruction set (slow: 10-20 s per step)")
    p.add_argument("--quiet-wait", type=float, default=60.0,
                   help="seconds to wait, before each measurement, for other processes to go quiet (default 60; 0: never)")
    p.add_argument("--workers", default="1",
                   help="data-parallel worker counts to time, e.g. 1,2 (weak scaling of torch_channels_last and "
                        "ms_compiled; default 1: none)")
    p.add_argument("--image-size", type=int, default=28)
    p.add_argument("--model-config", default=TUTORIAL_UNET.to_json(), help="UnetConfig fields as JSON text or a JSON file (default: the tutorial's)")
    p.add_argument("--no-check", action="store_true", help="do not time python -m parity.check")
    p.add_argument("--json", default=None, help="write every figure here (atomically)")
    p.add_argument("--markdown", default=None, help="write the Markdown table here (atomically)")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--dp-worker", choices=tuple(DP_CONFIGS), default=None, help=argparse.SUPPRESS)
    p.add_argument("--dp-out", default=None, help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    return p


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = build_parser()
    args = p.parse_args(argv)
    defaults = DEFAULTS[args.device]
    args.train_steps = defaults["train_steps"] if args.train_steps is None else args.train_steps
    args.sample_steps = defaults["sample_steps"] if args.sample_steps is None else args.sample_steps
    known = CUDA_CONFIGS if args.device == "cuda" else CONFIGS
    try:
        args.model_config = read_unet_config(args.model_config, "--model-config")
        args.workers = sorted({int(v) for v in args.workers.split(",")})
    except (UserError, ValueError, TypeError) as e:
        p.error(str(e))
    if args.workers[0] < 1 or 1 not in args.workers:
        p.error("--workers: positive counts including 1 (the baseline of the scaling efficiency), e.g. 1,2")
    if args.device == "cuda" and (args.workers != [1] or args.isa != "avx2"):
        p.error("--workers and --isa are CPU-bench options; --device cuda times one process on the GPU")
    args.configs = [c for c in (args.configs or ",".join(defaults["configs"])).split(",") if c]
    if args.isa == "both" and "tutorial_default_isa" not in args.configs:
        args.configs.append("tutorial_default_isa")
    unknown = sorted(set(args.configs) - set(known))
    if unknown or not args.configs:
        p.error(f"--configs: unknown {', '.join(unknown)}; choose from {', '.join(known)}" if unknown else "--configs is empty")
    if min(args.batch, args.train_steps, args.repeats) < 1 or not 2 <= args.sample_steps <= T:
        p.error(f"--batch, --train-steps and --repeats must be >= 1 and --sample-steps in [2, {T}]")
    if args.image_size % args.model_config.size_multiple:
        p.error(f"--image-size must be a multiple of {args.model_config.size_multiple} for this U-Net")
    return args


def _write(args: argparse.Namespace, report: dict[str, Any], text: str) -> None:
    print(text, end="")
    if args.json:
        atomic_write_bytes(args.json, (json.dumps(report, indent=2) + "\n").encode())
    if args.markdown:
        atomic_write_bytes(args.markdown, text.encode())


def cpu_bench(args: argparse.Namespace) -> dict[str, Any]:
    """Every CPU configuration, the data-parallel scaling and the parity check's wall time: the report."""
    from importlib.metadata import version

    with tempfile.TemporaryDirectory(prefix="parity-bench-") as tmp:
        machine = {**cpu_info(), "torch": version("torch"), "mindspore": version("mindspore")}
        wait_quiet([], args.quiet_wait)
        probe = Worker("machine", args, Path(tmp))
        machine.update(probe.read())
        probe.proc.wait()
        results = summarise(measure(args, Path(tmp)), args, machine)
        scaling = data_parallel_scaling(args, Path(tmp))
    check = run_check(not args.no_check, args.quiet_wait)
    settings = {k: v for k, v in vars(args).items() if k not in ("worker", "dp_worker", "dp_out", "threads", "json",
                                                                 "markdown", "device")}
    settings["model_config"] = args.model_config.to_dict()
    return {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"), "settings": settings,
            "machine": machine, "environment": {"python": sys.version.split()[0], "platform": platform.platform(),
                                                "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")},
            "results": results, "parity_check": check, "targets": targets(results, check), "data_parallel": scaling}


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    if args.dp_worker:
        return dp_worker(args.dp_worker, args.model_config, args.batch, args.train_steps, args.repeats,
                         args.image_size, args.threads, args.quiet_wait, args.dp_out)
    if args.worker:
        return worker(args.worker, args.model_config, args.batch, args.image_size)
    if args.device == "cuda":
        from ddpm_core.frameworks import MissingFramework
        from parity.bench.cuda_run import cuda_markdown, run_cuda
        from parity.env import EnvironmentRefused
        from ddpm_core.errors import EXIT_ENVIRONMENT

        try:
            report = run_cuda(args)
        except (EnvironmentRefused, MissingFramework) as e:
            print(f"error: {e}", file=sys.stderr)
            return EXIT_ENVIRONMENT
        _write(args, report, cuda_markdown(report))
        return 0
    report = cpu_bench(args)
    _write(args, report, markdown(report))
    return 0
