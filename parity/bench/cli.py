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

from ddpm_core.config import TUTORIAL_UNET, read_unet_config
from ddpm_core.errors import UserError
from ddpm_core.runtime.atomic import atomic_write_bytes
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
    g = p.add_argument_group("--device cuda only")
    g.add_argument("--torch-device", default="cuda",
                   help="cuda (default) or cuda:N; cpu runs the same code on the CPU without capturing CUDA graphs (a dry run)")
    g.add_argument("--batches", default=None,
                   help="comma-separated batch sizes to sweep, e.g. 16,32,64,128,256,512,1024,2048: the batch that fills "
                        "the GPU per configuration (instead of --batch)")
    g.add_argument("--sweep-images", type=float, default=4096,
                   help="sweep: images per training measurement (2 to --train-steps steps; default 4096)")
    g.add_argument("--sweep-sample-images", type=float, default=16 * T,
                   help=f"sweep: batch x sampling steps per loop (a T=k schedule, scaled by {T}/k; default {16 * T}: "
                        f"batch 16 runs the full loop)")
    g.add_argument("--sweep-gain", type=float, default=1.05,
                   help="sweep: a configuration stops at the first batch that improves neither training nor sampling "
                        "images/s by this factor (default 1.05)")
    g.add_argument("--budget-s", type=float, default=None,
                   help="sweep: start no measurement after this many seconds; the outputs say what was left out")
    g.add_argument("--profile", default=None,
                   help="write the top kernels (torch.profiler) of each configuration at --batch here, instead of timing")
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
    cuda_only = {"--torch-device": args.torch_device != "cuda", "--batches": args.batches is not None,
                 "--budget-s": args.budget_s is not None, "--profile": args.profile is not None}
    if args.device != "cuda" and any(cuda_only.values()):
        p.error(f"{', '.join(k for k, v in cuda_only.items() if v)}: options of --device cuda")
    if not (args.torch_device == "cpu" or args.torch_device == "cuda" or args.torch_device.startswith("cuda:")):
        p.error(f"--torch-device must be cuda, cuda:N or cpu, not {args.torch_device!r}")
    if args.batches is not None:
        try:
            args.batches = sorted({int(v) for v in args.batches.split(",") if v.strip()})
        except ValueError:
            p.error(f"--batches: comma-separated integers, e.g. 16,32,64, not {args.batches!r}")
        if not args.batches or args.batches[0] < 1 or args.profile is not None:
            p.error("--batches: positive batch sizes, and not with --profile (which profiles --batch)")
    if min(args.sweep_images, args.sweep_sample_images) <= 0 or args.sweep_gain < 1 or (args.budget_s or 0) < 0:
        p.error("--sweep-images and --sweep-sample-images must be > 0, --sweep-gain >= 1, --budget-s >= 0")
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


def _save(args: argparse.Namespace, report: dict[str, Any], text: str) -> None:
    if args.json:
        atomic_write_bytes(args.json, (json.dumps(report, indent=2) + "\n").encode())
    if args.markdown:
        atomic_write_bytes(args.markdown, text.encode())


def _write(args: argparse.Namespace, report: dict[str, Any], text: str) -> None:
    print(text, end="")
    _save(args, report, text)


def cuda_main(args: argparse.Namespace) -> int:
    """``--device cuda``: the profile (``--profile``), the batch sweep (``--batches``: the outputs are rewritten
    after every measurement, so a run stopped from outside keeps what it had) or the table at one batch."""
    from ddpm_core.errors import EXIT_ENVIRONMENT, EnvironmentRefused
    from ddpm_core.runtime.frameworks import MissingFramework
    from parity.bench.cuda_run import cuda_markdown, prepare, run_cuda
    from parity.bench.profile import profile_configs
    from parity.bench.sweep import run_sweep, sweep_markdown

    try:
        if args.profile:
            text = profile_configs(args, prepare(args))
            atomic_write_bytes(args.profile, text.encode())
            print(text)
            return 0
        if args.batches:
            report = run_sweep(args, on_point=lambda r: _save(args, r, sweep_markdown(r)))
            text = sweep_markdown(report)
        else:
            report = run_cuda(args)
            text = cuda_markdown(report)
    except (EnvironmentRefused, MissingFramework) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_ENVIRONMENT
    _write(args, report, text)
    return 0


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
        return cuda_main(args)
    report = cpu_bench(args)
    _write(args, report, markdown(report))
    return 0
