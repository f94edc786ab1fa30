"""The command lines of both twins, defined once so their options and defaults cannot drift:
``train``, ``sample`` and ``noise_strip`` parsers, and the guard that turns a user's mistake into
one line on stderr and exit status 2.

Rule: a twin's ``main`` only adds its framework; every option, default and help text lives here.
"""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from ddpm_core.errors import (
    EXIT_ENVIRONMENT,
    EXIT_INTERRUPTED,
    EXIT_USER_ERROR,
    EnvironmentRefused,
    MissingFramework,
    UserError,
)
from ddpm_core.runtime.devices import DEVICE_HELP, PRECISIONS
from ddpm_core.runtime.distributed import launched_by

COMPILE_CHOICES = ("auto", "on", "off")
DEFAULT_MAX_LOSS = 100.0
"""``train --max-loss``: a step's loss above this stops the run as diverged. Real runs stay far below: the
per-element loss of a noise prediction is about 0.4 (Huber), 0.8 (L1) or 1 (L2) for a model that predicts 0
(docs/training.md has the measured ranges); a loss of 100 means predictions off by about 100 (Huber, L1) or 10
(L2) standard deviations of the noise."""
COMPILE_HELP = ("the compiled path. MindSpore: 'auto' and 'on' run each training step (forward, loss, gradients, "
               "Adam) or sampling step as one ms.jit graph (tens of seconds to compile, then several times faster than "
               "PyNative on CPU); 'off' runs op by op (PyNative), as the tutorial does. PyTorch: 'auto' and 'off' are "
               "eager (fast already); 'on' uses torch.compile, which needs a C++ compiler and minutes to compile")


def run_main(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> int:
    """Call ``main(argv)``; a ``UserError`` (data, run folder and weights errors among them) or a framework
    that is not installed becomes ``error: <message>`` on stderr and ``EXIT_USER_ERROR``, a missing device
    (``EnvironmentRefused``) the same with ``EXIT_ENVIRONMENT``, without a traceback. Anything else is a bug
    and keeps its traceback."""
    try:
        return int(main(argv) or 0)
    except (UserError, MissingFramework) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except EnvironmentRefused as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_ENVIRONMENT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.replace(" ", "").split(",") if v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one integer")
    return values


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value}")
    return value


def _diffusion_options(p: argparse.ArgumentParser | argparse._ArgumentGroup, required_defaults: bool) -> None:
    """T, schedule (and for training, loss). ``required_defaults`` False leaves them None (taken from
    the model's config file when there is one)."""
    from ddpm_core.config import LOSS_TYPES, SCHEDULES

    d = (lambda v: v) if required_defaults else (lambda v: None)
    p.add_argument("--timesteps", type=positive_int, default=d(200), help="diffusion steps T (tutorial: 200)")
    p.add_argument("--schedule", choices=SCHEDULES, default=d("linear"), help="beta schedule (tutorial: linear)")
    if required_defaults:
        p.add_argument("--loss", choices=LOSS_TYPES, default="huber", help="training loss (tutorial: huber)")


def _train_examples(prog: str) -> str:
    return f"""examples:
  # Fashion-MNIST, fetched once (30 MB), and the tutorial's 10 epochs
  {prog} --download --out runs/a
  # continue after an interruption, bit for bit
  {prog} --resume runs/a
  # no data, no network: synthetic garments (bright rectangles), a tiny model, 20 steps (PyTorch: under a minute)
  python -c "from ddpm_core.training.datasets import write_synthetic_fashion_mnist as w; w('runs/synthetic')"
  {prog} --data runs/synthetic --out runs/tiny --max-steps 20 --dim 8 --timesteps 20
(examples/train_torch_sample_ms.py does the last one, then converts and samples in the other framework)"""


def train_parser(prog: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog, description="Train the tutorial's DDPM on Fashion-MNIST, a folder of images or scikit-learn's "
                               "handwritten digits (docs/training.md).",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=_train_examples(prog))
    g = p.add_argument_group("data")
    g.add_argument("--data", metavar="DIR", help="Fashion-MNIST IDX files (plain or .gz), ROOT/<class>/<image>, or "
                   "'digits': scikit-learn's 8x8 digits, training split (needs the [digits] extra); "
                   "no data at hand? --download, --data digits, or synthetic files (see the examples below)")
    g.add_argument("--download", action="store_true",
                   help="fetch Fashion-MNIST (the tutorial's data, 30 MB) through torchvision's downloader, MD5-checked, "
                        "into --data DIR, or without --data into $DDPM_PARITY_DATA/fashion-mnist (default "
                        "~/.cache/ddpm-parity/fashion-mnist); a complete copy already there is used as it is")
    g.add_argument("--data-format", choices=("auto", "fashion-mnist", "image-folder", "digits"), default="auto",
                   help="default: detected from the folder")
    g.add_argument("--image-size", type=positive_int, default=None,
                   help="train at this size; images are resized and center-cropped, digits padded with black "
                        "(default: 28 as the tutorial; 8 for digits)")
    g.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None,
                   help="random horizontal flips (default: on as the tutorial; off for digits)")
    g.add_argument("--channels", type=positive_int, default=None,
                   help="1 (grayscale) or 3 (RGB); default 1 for Fashion-MNIST, 3 for image folders")
    g.add_argument("--workers", type=non_negative_int, default=0,
                   help="data-loading workers (0: in the main process)")
    g = p.add_argument_group("run")
    g.add_argument("--out", metavar="RUN_DIR", help="new run folder: log, checkpoints, exported weights")
    g.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last complete checkpoint")
    g.add_argument("--from-step", type=non_negative_int, default=None, metavar="N",
                   help="with --resume: continue from the checkpoint after N steps instead of the newest (when the "
                        "newest is damaged, --resume names the newest intact one); 0 starts again from the beginning")
    g.add_argument("--allow-other-files", action="store_true",
                   help="let --out be a folder that already holds other files (they are left alone); without it, "
                        "a new run goes only into a missing or empty folder")
    g.add_argument("--epochs", type=positive_int, default=10, help="epochs; also sets the learning-rate decay (tutorial: 10)")
    g.add_argument("--max-steps", type=positive_int, default=None,
                   help="stop after this many global steps in all (the schedule still spans --epochs)")
    g.add_argument("--save-every", type=positive_int, default=1000, help="checkpoint every N steps (and at the end)")
    g.add_argument("--keep", type=positive_int, default=2, help="checkpoints to keep (the newest)")
    g.add_argument("--seed", type=non_negative_int, default=0,
                   help="seeds the initial weights and the per-step tape (batches, flips, t, noise)")
    g.add_argument("--max-loss", type=float, default=DEFAULT_MAX_LOSS, metavar="L",
                   help=f"stop as diverged when a step's loss exceeds L, keeping the checkpoints written so far "
                        f"(default {DEFAULT_MAX_LOSS:g}, far above any real run's loss)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g.add_argument("--compile", choices=COMPILE_CHOICES, default="auto", help=COMPILE_HELP)
    g = p.add_argument_group("device and numerics")
    g.add_argument("--device", default=None, help=DEVICE_HELP + "; --resume may change it")
    g.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help="fp32 (default), or mixed precision with float32 weights: bf16 (bfloat16 activations) or fp16 "
                        "(float16 activations, a fixed loss scale of 1024); where the device supports it (docs/training.md)")
    g.add_argument("--deterministic", action=argparse.BooleanOptionalAction, default=True,
                   help="deterministic kernels (PyTorch: torch.use_deterministic_algorithms, cuDNN's deterministic "
                        "kernels, CUBLAS_WORKSPACE_CONFIG; MindSpore: set_deterministic), so that --resume continues "
                        "bit for bit on a GPU too; --no-deterministic trades that for speed (1.19x per step on an H200)")
    g = p.add_argument_group("optimizer")
    g.add_argument("--batch-size", type=positive_int, default=16, help="global batch size (tutorial: 16)")
    g.add_argument("--lr", type=float, default=1e-4, help="max_lr of nn.cosine_decay_lr (tutorial: 1e-4)")
    g.add_argument("--min-lr", type=float, default=1e-7, help="min_lr of nn.cosine_decay_lr (tutorial: 1e-7)")
    g = p.add_argument_group("model")
    g.add_argument("--dim", type=positive_int, default=None, help="U-Net base width (tutorial: dim=image_size)")
    g.add_argument("--dim-mults", type=int_list, default=(1, 2, 4), help="comma-separated (tutorial: 1,2,4)")
    g.add_argument("--init-weights", metavar="PATH", default=None,
                   help="start from these weights (.pt/.ckpt/.safetensors) instead of the seeded initialisation")
    _diffusion_options(p.add_argument_group("diffusion"), required_defaults=True)
    return p


def explicit_options(parser: argparse.ArgumentParser, argv: Sequence[str]) -> set[str]:
    """The destinations of the options actually written in ``argv``."""
    probe = argparse.ArgumentParser(add_help=False)
    for action in parser._actions:
        if action.option_strings and not isinstance(action, argparse._HelpAction):
            kwargs = {"dest": action.dest, "default": argparse.SUPPRESS}
            if action.nargs == 0:
                kwargs["action"] = "store_const"
                kwargs["const"] = True
            probe.add_argument(*action.option_strings, **kwargs)
    known, _ = probe.parse_known_args(list(argv))
    return set(vars(known))


def sample_parser(prog: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="Sample images from trained weights and save a grid and a GIF.")
    p.add_argument("--weights", required=True, metavar="PATH", help=".pt, .ckpt or .safetensors (a run's model.*)")
    p.add_argument("--config", metavar="PATH", default=None,
                   help="config.json of the run (Unet and diffusion), or UnetConfig fields as JSON text; default: the "
                        "safetensors metadata, config.json beside the weights, else the tutorial's")
    p.add_argument("--n", type=positive_int, default=64, help="number of samples (tutorial: 64)")
    p.add_argument("--out", default="samples.png", help="grid of the final samples (PNG)")
    p.add_argument("--npy", default=None, metavar="PATH",
                   help="also save the final samples, float32 (N, C, H, W) in the model range (about [-1, 1], unclipped), as .npy")
    p.add_argument("--gif", default=None, help="animated GIF of the denoising of --gif-index samples")
    p.add_argument("--gif-index", type=int_list, default=(0,), help="samples shown in the GIF, side by side")
    p.add_argument("--gif-frames", type=positive_int, default=40, help="frames in the GIF (the states are subsampled)")
    p.add_argument("--sampler", choices=("ddpm", "ddim"), default="ddpm")
    p.add_argument("--steps", type=positive_int, default=None, help="DDIM steps (default 50; DDPM always uses T)")
    p.add_argument("--eta", type=float, default=0.0, help="DDIM stochasticity (0: deterministic)")
    p.add_argument("--seed", type=non_negative_int, default=0, help="sample i's noise depends on (seed, i) only")
    p.add_argument("--batch-size", type=positive_int, default=64, help="samples denoised at once")
    p.add_argument("--image-size", type=positive_int, default=None,
                   help="default: the run's (config.json), else the model's dim (the tutorial's dim=image_size)")
    p.add_argument("--scale", type=positive_int, default=2, help="pixel scale of the pictures")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--compile", choices=COMPILE_CHOICES, default="auto", help=COMPILE_HELP)
    p.add_argument("--device", default=None, help=DEVICE_HELP)
    _diffusion_options(p, required_defaults=False)
    return p


def noise_strip_parser(prog: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="The tutorial's forward-diffusion figure: one image at several t.")
    p.add_argument("image", help="any image file")
    p.add_argument("--out", default="strip.png", help="output PNG")
    p.add_argument("--image-size", type=positive_int, default=128, help="resize + center crop (tutorial: 128)")
    p.add_argument("--t", type=int_list, default=(0, 50, 100, 150, 199), help="timesteps shown (tutorial: 0,50,100,150,199)")
    p.add_argument("--seed", type=non_negative_int, default=0)
    p.add_argument("--scale", type=positive_int, default=1)
    p.add_argument("--device", default=None, help=DEVICE_HELP)
    _diffusion_options(p, required_defaults=True)
    return p


def exit_after_main(code: int) -> None:
    """End a command's process with ``code`` once stdout and stderr are flushed, skipping the interpreter's
    teardown: every output is written and closed (atomically) by then, and the frameworks' teardown (measured
    1.2 s with both loaded) does nothing a command needs. For ``if __name__ == "__main__"`` blocks only.

    Under torchrun the teardown is also a crash: a gloo worker thread that frees a finished collective needs
    the GIL, and one that asks for it while the interpreter finalizes is ended by ``pthread_exit`` inside a
    noexcept destructor, so the rank dies of ``std::terminate`` (SIGABRT, "terminate called without an active
    exception") after its work is done. Measured with torch 2.14.1 on 2 cores, rank 0 one second later than
    rank 1: 7 of 30 two-rank jobs aborted ending through teardown, 2 of 30 with a barrier first, 0 of 30 here.

    An msrun worker is the exception and exits through the teardown: that is where MindSpore tells msrun's
    scheduler the worker has finished (without it the scheduler reports the worker as timed out)."""
    sys.stdout.flush()
    sys.stderr.flush()
    if launched_by() == "msrun":
        sys.exit(code)
    os._exit(code)
