"""``python -m parity.check``: prove the twins match, or name the first layer where they part.

    python -m parity.check [options]                                  both twins in this process
    python -m parity.check --train-steps K --workers N                and K training steps, 1 process vs N workers
    python -m parity.check record --framework ms|torch --out G.npz    one twin, outputs to a golden file
    python -m parity.check compare G.npz --framework torch|ms         the other twin against it

With no arguments it needs no data and no files: the tutorial's U-Net (dim 28, 1 channel,
dim_mults (1, 2, 4)), T=200 linear, Huber loss, seeded initial weights computed in numpy
(parity.engine.initial) and moved through ddpm_core.weights.converter.torch_to_ms, one random tape (parity.engine.tape).

Exit codes: 0 every check passes; 1 a numeric or settings mismatch; 2 a structural problem (weights
that do not map, a bad input file, a bad config or option, a run whose estimated memory exceeds what the
machine has available: one line "error: ..."); 3 the environment refuses a
fair comparison (a requested device is missing, or a framework is not installed: the line names the
pip extra). ``record`` and ``compare`` import only the framework they run.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any, Sequence

from ddpm_core.cli import exit_after_main
from ddpm_core.config import (
    LOSS_TYPES,
    SCHEDULES,
    TUTORIAL_UNET,
    DiffusionConfig,
    UnetConfig,
    read_unet_config,
    resolve_diffusion,
)
from ddpm_core.errors import (
    EXIT_ENVIRONMENT,
    EXIT_USER_ERROR,
    EnvironmentRefused,
    MissingFramework,
    UserError,
    one_line,
)
from ddpm_core.runtime.amp import MS_LEVELS
from ddpm_core.runtime.devices import MS_DEVICES
from ddpm_core.runtime.distributed import World
from ddpm_core.runtime.paths import check_outputs
from ddpm_core.weights.integrity import manifest_sidecar
from parity.distributed import DEFAULT_TIMEOUT_S
from parity.engine.report import Report
from parity.engine.checks import CHECKS
from parity.env import fingerprint, unmeasured_note

FRAMEWORKS = ("torch", "ms")


def _csv(kind: type) -> Any:
    def parse(text: str) -> tuple:
        try:
            values = tuple(kind(v.strip()) for v in text.split(",") if v.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated {kind.__name__}s, got {text!r}") from None
        if not values:  # an empty list would check nothing and pass
            raise argparse.ArgumentTypeError(f"expected at least one {kind.__name__}, got {text!r}")
        return values
    return parse


def _run_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("what to run")
    g.add_argument("--seed", type=int, default=0, help="seed of the tape and the initial weights (default 0)")
    g.add_argument("--batch", type=int, default=2, help="images per batch (default 2)")
    g.add_argument("--image-size", type=int, default=None, help="height = width (default 28, rounded up to fit)")
    g.add_argument("--timesteps", type=int, default=None,
                   help="diffusion steps T (default: recorded with --weights, else 200)")
    g.add_argument("--schedule", choices=SCHEDULES, default=None, help="default: recorded with --weights, else linear")
    g.add_argument("--loss-type", choices=LOSS_TYPES, default=None,
                   help="loss for gradients and Adam (default: recorded with --weights, else huber)")
    g.add_argument("--config", default=None, help="UnetConfig fields as JSON text or a JSON file "
                   "(default: the tutorial's {\"dim\": 28, \"channels\": 1, \"dim_mults\": [1, 2, 4]})")
    g.add_argument("--weights", default=None, help="a .pt/.pth/.ckpt/.safetensors file to check instead of seeded "
                   "initial weights")
    g.add_argument("--ddim-steps", type=int, default=20)
    g.add_argument("--ddim-eta", type=_csv(float), default=(0.0, 0.5), help="comma-separated (default 0,0.5)")
    g.add_argument("--train-steps", "--adam-steps", dest="train_steps", type=int, default=3,
                   help="training steps K of the Adam check and of --workers (default 3; --adam-steps is the old name)")
    g.add_argument("--pred-timesteps", type=_csv(int), default=None,
                   help="comma-separated prediction timesteps (default 0, T//2, T-1 and two from the tape)")
    g.add_argument("--checks", type=_csv(str), default=CHECKS, help=f"subset of {','.join(CHECKS)}")


def _device_options(p: argparse.ArgumentParser, frameworks: Sequence[str] = FRAMEWORKS, both: bool = False) -> None:
    g = p.add_argument_group("devices and output")
    if "torch" in frameworks:
        g.add_argument("--torch-device", default="cpu", help="cpu, cuda or cuda:N (TF32 is switched off)")
    if "ms" in frameworks:
        g.add_argument("--ms-device", default="CPU", choices=MS_DEVICES,
                       help="MindSpore device target (Ascend: precision mode must_keep_origin_dtype)")
    g.add_argument("--compile", choices=("on", "off"), default="on",
                   help="on: the samplers' steps as compiled graphs (MindSpore: ms.jit; default); off: op by op")
    if "ms" in frameworks:
        g.add_argument("--ms-composed-ops", action="store_true",
                       help="check ddpm_ms.Unet(composed_ops=True): GELU and GroupNorm from primitive ops (faster on "
                            "CPU, not bit-identical to the tutorial's kernels)")
    g.add_argument("--threads", type=int, default=None,
                   help="CPU threads of MindSpore (default 1), and of PyTorch with --in-process or in record/compare (default: "
                        "PyTorch's; its worker process uses 1)")
    g.add_argument("--json", default=None, help="write every figure, the environment and the hashes here")
    if both:
        g.add_argument("--in-process", action="store_true",
                       help="run the PyTorch side in this process after MindSpore (default: in a worker process "
                            "alongside it)")
    g.add_argument("--no-progress", action="store_true", help="no progress bars")


def _weights(args: argparse.Namespace) -> tuple[UnetConfig, dict, str, Any]:
    """(config, PyTorch-named weights, where they came from, the run's spec). With --weights, the settings
    recorded with them (``ddpm_core.weights.recorded``: the safetensors metadata, a run's config.json beside them) give
    the config, the diffusion settings and the image size unless an option does; an option contradicting the
    recorded diffusion settings is a ValueError. The memory the run needs is checked (``ddpm_core.runtime.memory``)
    before the seeded weights are made."""
    flags = {"--timesteps": ("timesteps", args.timesteps), "--schedule": ("schedule", args.schedule),
             "--loss-type": ("loss_type", args.loss_type)}
    if args.weights:
        from ddpm_core.weights.recorded import load_recorded

        found = load_recorded(args.weights, args.config)
        cfg, state = found.loaded.config, found.loaded.state
        source = f"{args.weights} ({found.loaded.file_naming} naming)"
        spec = _spec(args, cfg, resolve_diffusion(found.diffusion, found.source, flags),
                     args.image_size or found.image_size)
        _require_memory(spec)
        return cfg, state, source, spec
    from parity.engine.initial import initial_weights

    cfg = read_unet_config(args.config) if args.config is not None else TUTORIAL_UNET
    spec = _spec(args, cfg, resolve_diffusion(None, "", flags), args.image_size)
    _require_memory(spec)
    return cfg, initial_weights(cfg, args.seed), f"seeded numpy init (seed {args.seed})", spec


def _spec(args: argparse.Namespace, cfg: UnetConfig, diffusion: DiffusionConfig, image_size: int | None):
    from parity.api import make_spec

    return make_spec(cfg, diffusion, args.seed, args.batch, image_size, args.train_steps, args.ddim_steps,
                     args.ddim_eta, args.pred_timesteps, args.checks)


def _check_outputs(args: argparse.Namespace, *outputs: tuple[str, str | None]) -> None:
    """Before the run, not after it: each output (--json, record's --out) writable and another file than
    every input (--weights and its manifest, --config, compare's golden file) and than each other."""
    weights = getattr(args, "weights", None)
    inputs = [("--weights", weights), ("the manifest of --weights", manifest_sidecar(weights) if weights else None),
              ("--config", getattr(args, "config", None)), ("GOLDEN", getattr(args, "golden", None))]
    check_outputs([*outputs, ("--json", args.json)], inputs)


def _require_memory(spec: Any) -> None:
    """``TooLarge`` (exit 2) when a lower bound of the run's memory exceeds what the machine has available: the
    weights in numpy and in both twins, the tape, and one training batch's feature maps."""
    from ddpm_core.runtime.memory import (
        FLOAT32,
        Need,
        activation_bytes,
        parameter_count,
        require,
    )

    t = spec.tape
    per_batch = t.batch * t.channels * t.image_size * t.image_size * FLOAT32
    steps = t.timesteps + t.ddim_steps + 2 * t.train_steps + 1 + len(t.pred_timesteps or (0, 0, 0, 0, 0))
    require(Need({"the weights in numpy and in both twins": 3 * FLOAT32 * parameter_count(spec.unet),
                  "the tape": steps * per_batch,
                  "the feature maps of one training batch": activation_bytes(spec.unet, t.batch, t.image_size, True)}),
            f"checking {spec.unet.short()} on a batch of {t.batch} at {t.image_size}x{t.image_size}",
            "choose a smaller model (--config), --batch or --image-size")


def _finish(report: Report, args: argparse.Namespace) -> int:
    note = report.environment["version_note"] = unmeasured_note(report.environment)
    print(report.text() + (f"\n{note}" if note else ""), flush=True)
    if args.json:
        report.write_json(args.json)
    return report.exit_code


def cmd_check(args: argparse.Namespace) -> int:
    from parity.env import setup_mindspore, setup_torch

    t0 = time.perf_counter()
    _check_outputs(args)
    cfg, state, source, spec = _weights(args)  # structural problems first: they need no framework
    if args.workers < 1:
        raise ValueError(f"--workers must be a positive integer, got {args.workers}")
    try:
        World(0, args.workers).check_batch(spec.tape.batch)
    except ValueError as e:
        raise ValueError(f"--batch {spec.tape.batch} with --workers {args.workers}: {e}") from None
    if args.precision != "fp32":
        from parity.precision import cmd_precision

        report = cmd_precision(args, cfg, state, source, spec)
        report.timings["wall_including_setup"] = round(time.perf_counter() - t0, 3)
        return _finish(report, args)
    torch_info = setup_torch(args.torch_device, args.threads if args.in_process else 1)
    ms_info = setup_mindspore(args.ms_device, args.threads or 1)
    from parity.runner import describe_run, run_check
    from parity.sides.ms import MsSide
    from parity.sides.torch import TorchSide

    compiled, progress = args.compile == "on", not args.no_progress
    side_t = TorchSide(args.torch_device, compiled=compiled, progress=progress)
    side_m = MsSide(args.ms_device, compiled=compiled, progress=progress, composed_ops=args.ms_composed_ops)
    model_t, model_m = side_t.load_model(state, cfg), side_m.load_model(state, cfg)  # the twins' one load path
    env = fingerprint(torch_info, ms_info, compiled)
    env["weights_source"] = source
    env["torch_side"] = "this process" if args.in_process else "a worker process (1 thread), alongside MindSpore"
    env["ms_composed_ops"] = args.ms_composed_ops
    report = run_check((side_t, side_m), (model_t, model_m), spec, state, env, describe_run(spec),
                       worker=not args.in_process)
    if args.workers > 1:
        _training_parity(report, spec, state, args)
    report.timings["wall_including_setup"] = round(time.perf_counter() - t0, 3)
    return _finish(report, args)


def _training_parity(report: Report, spec: Any, state: dict, args: argparse.Namespace) -> None:
    """Rows of K training steps of each twin, one process against ``--workers`` under torchrun / msrun."""
    from parity.distributed import run_training, training_rows
    from parity.engine.tape import make_tape
    from parity.engine.tolerances import device_class

    def progress(line: str) -> None:
        if not args.no_progress:
            print(line, file=sys.stderr, flush=True)

    runs = run_training(spec, state, make_tape(spec.tape), args.workers,
                        {"torch": args.torch_device, "ms": args.ms_device}, report.timings, args.launch_timeout,
                        progress=progress)
    report.rows += training_rows(runs, state, spec.tape.train_steps, args.workers,
                                 device_class(args.torch_device, args.ms_device))
    report.spec["workers"] = args.workers
    report.title += f"; training parity over {args.workers} workers"


def _setup_one(framework: str, args: argparse.Namespace) -> tuple[Any, dict]:
    from parity import env

    if framework == "torch":
        info = env.setup_torch(args.torch_device, args.threads)
        from parity.sides.torch import TorchSide

        return TorchSide(args.torch_device, compiled=args.compile == "on", progress=not args.no_progress), info
    info = env.setup_mindspore(args.ms_device, args.threads or 1)
    from parity.sides.ms import MsSide

    return MsSide(args.ms_device, compiled=args.compile == "on", progress=not args.no_progress,
                  composed_ops=args.ms_composed_ops), info


def cmd_record(args: argparse.Namespace) -> int:
    from parity.two_hosts import record_golden

    _check_outputs(args, ("--out", args.out))
    cfg, state, source, spec = _weights(args)
    side, info = _setup_one(args.framework, args)
    env = fingerprint(info if args.framework == "torch" else None, info if args.framework == "ms" else None,
                      args.compile == "on")
    env["weights_source"] = source
    manifest, count, nonfinite = record_golden(side, state, spec, args.out, env)
    print(f"recorded {count} outputs of {side.label} to {args.out}\n"
          f"tape {manifest['tape_sha256'][:16]}  weights {manifest['weights_sha256'][:16]}", flush=True)
    if nonfinite:  # recorded as they are: the comparison fails on them, naming this side
        print(f"note: {side.label} produced NaN or inf in {len(nonfinite)} output(s), first {nonfinite[0]}", flush=True)
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from parity.engine.golden import load_golden
    from parity.two_hosts import compare_golden

    _check_outputs(args)
    golden = load_golden(args.golden)
    golden.check_compared_with(args.framework)  # before the framework's slow import
    side, info = _setup_one(args.framework, args)
    env = fingerprint(info if args.framework == "torch" else None, info if args.framework == "ms" else None,
                      args.compile == "on")
    env["golden"] = {"path": str(args.golden), "framework": golden.framework,
                     "environment": golden.manifest.get("environment", {})}
    return _finish(compare_golden(golden, side, env), args)


def build_parser(command: str) -> argparse.ArgumentParser:
    if command == "record":
        p = argparse.ArgumentParser(prog="python -m parity.check record",
                                    description="Run one twin and save its outputs, tape and weights to a golden file.")
        p.add_argument("--framework", choices=FRAMEWORKS, required=True)
        p.add_argument("--out", required=True, help="golden file to write (.npz)")
        _run_options(p)
        _device_options(p)
        return p
    if command == "compare":
        p = argparse.ArgumentParser(prog="python -m parity.check compare",
                                    description="Run the other twin against a golden file and report.")
        p.add_argument("golden", help="a golden file written by `record`")
        p.add_argument("--framework", choices=FRAMEWORKS, required=True)
        _device_options(p)
        return p
    p = argparse.ArgumentParser(prog="python -m parity.check", description=__doc__.split("\n\n")[0].replace("``", ""),
                                epilog="subcommands: record, compare (python -m parity.check record --help)")
    _run_options(p)
    g = p.add_argument_group("mixed precision")
    g.add_argument("--precision", choices=("fp32", "fp16"), default="fp32",
                   help="fp16: both twins under mixed precision, each judged against float64 (docs/harness.md)")
    g.add_argument("--ms-amp", choices=MS_LEVELS[1:], default="auto",
                   help="MindSpore amp level of --precision fp16 (default auto, the measured match of torch.autocast)")
    g = p.add_argument_group("data-parallel training")
    g.add_argument("--workers", type=int, default=1,
                   help="N > 1: also train --train-steps steps of each twin as 1 process and as N workers (torchrun, "
                        "msrun) and compare; the batch must split evenly (default 1: off)")
    g.add_argument("--launch-timeout", type=float, default=DEFAULT_TIMEOUT_S,
                   help=f"seconds a training run may take before it is stopped and fails (default {DEFAULT_TIMEOUT_S:g})")
    _device_options(p, both=True)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("GLOG_v", "3")  # MindSpore: errors only, so the table stays readable
    command = argv[0] if argv and argv[0] in ("record", "compare") else "check"
    args = build_parser(command).parse_args(argv[1:] if command != "check" else argv)
    try:
        return {"check": cmd_check, "record": cmd_record, "compare": cmd_compare}[command](args)
    except EnvironmentRefused as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_ENVIRONMENT
    except MissingFramework as e:
        hint = " (with one framework per host, use `record` on one and `compare` on the other)" if command == "check" else ""
        print(f"error: {e}{hint}", file=sys.stderr)
        return EXIT_ENVIRONMENT
    except (UserError, ValueError, OSError, KeyError) as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        return EXIT_USER_ERROR


if __name__ == "__main__":
    exit_after_main(main())  # the PyTorch worker has exited by then too
