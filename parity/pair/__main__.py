"""``python -m parity.pair SPEC.py [--json OUT] [--markdown OUT] [--junit OUT] [--set KEY=VALUE ...] [--self-test]
[--other compile|autocast] [--record GOLDEN | --compare GOLDEN]``

Compares the SPEC's PyTorch model with its port on every input it gives (docs/pairs.md) and prints the table and
findings. Exit status: 0 the pair matches; 1 it differs (the first divergence named, with its blame); 2 a
structural problem (weights that do not map, one line each; a bad SPEC or option); 3 the environment refuses (a
missing device, an op without a kernel on it, a package the SPEC needs). ``--other compile|autocast`` makes the
other side the SPEC's PyTorch model compiled or under autocast (parity.pair.variants). ``--self-test`` plants bugs in the
MindSpore side and prints which the verdict catches (parity.pair.selftest); its status is the unplanted pair's.
``--record GOLDEN`` (a PyTorch host) and ``--compare GOLDEN`` (a MindSpore host) split one pair over two hosts
(parity.pair.golden).

Rules it keeps: output paths are checked before any work and written atomically after it; an expected problem is
one ``error:`` line without a traceback, and so is an exception raised in the user's code (the SPEC's entries, a
module of either model, the SPEC's step, loss, optimizers, arbiter or shims): ``error: SPEC X: <where>: <type>:
<message>``, exit 2; ``--traceback`` prints that exception's traceback under the line.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any, Sequence

from ddpm_core.cli import exit_after_main
from ddpm_core.errors import (
    EXIT_ENVIRONMENT,
    EXIT_MISMATCH,
    EXIT_OK,
    EXIT_USER_ERROR,
    EnvironmentRefused,
    MissingFramework,
    UserError,
    WeightsError,
    one_line,
)
from ddpm_core.runtime.atomic import atomic_write_bytes, output_problem
from ddpm_core.runtime.paths import check_outputs


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m parity.pair", description=__doc__.split("\n\n")[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("spec", help="the SPEC file: defines torch_model(), ms_model(), inputs() and optionally name_map")
    p.add_argument("--json", metavar="OUT", help="write every figure, the first divergence and the environment")
    p.add_argument("--markdown", metavar="OUT", help="write the table and findings as Markdown")
    p.add_argument("--junit", metavar="OUT", help="write one JUnit test case per row")
    p.add_argument("--plot", metavar="OUT.png", help="write a PNG of each side's error against float64 along the depth, "
                                                     "the first divergence marked (needs matplotlib)")
    p.add_argument("--set", metavar="KEY=VALUE", action="append", default=[], dest="options",
                   help="an option for the SPEC's functions that declare KEY as a parameter (repeatable)")
    p.add_argument("--other", metavar="compile[:BACKEND],autocast[:DTYPE]",
                   help="the other side is the SPEC's PyTorch model compiled (torch.compile, default backend inductor) "
                        "and/or under torch.autocast (bfloat16 or float16), instead of ms_model()")
    two = p.add_mutually_exclusive_group()
    two.add_argument("--record", metavar="GOLDEN", help="run only the PyTorch side (float32, the float64 arbiter, every "
                     "module call) and write it to the golden file GOLDEN, for --compare on a MindSpore host")
    two.add_argument("--compare", metavar="GOLDEN", help="run only the MindSpore side, from the weights and inputs "
                     "recorded in GOLDEN, and judge it against the recorded PyTorch side")
    p.add_argument("--no-train-pass", action="store_true",
                   help="skip the training-mode pass that compares running statistics")
    p.add_argument("--traceback", action="store_true",
                   help="under the one error line for an exception in the SPEC's or the models' code, print its "
                        "traceback")
    p.add_argument("--self-test", action="store_true",
                   help="plant small bugs in the MindSpore side one at a time (each norm's epsilon x1.2, a weight "
                        "x(1+1e-5), each activation's variant) and report which the verdict catches, and where")
    return p


def run(args: argparse.Namespace) -> int:
    from parity.pair.spec import load_spec, parse_option

    outputs = {"json": args.json, "markdown": args.markdown, "junit": args.junit, "plot": args.plot}
    for flag, path in outputs.items():
        problem = path and output_problem(path)
        if problem:
            raise UserError(f"--{flag} {path}: {problem}")
    check_outputs([("--record", args.record), *((f"--{k}", v) for k, v in outputs.items())],
                  [("SPEC", args.spec), ("--compare", args.compare)])  # never over an input, nor one over another
    if (args.record or args.compare) and (args.other or args.self_test):
        raise UserError("--record / --compare put a PyTorch host and a MindSpore host apart; not with "
                        f"{'--other' if args.other else '--self-test'}")
    if args.plot:
        from parity.pair.plot import require_matplotlib

        require_matplotlib()
    options = dict(parse_option(o) for o in args.options)
    if args.record:
        from parity.pair.golden import record

        spec = load_spec(args.spec, options, skip=("ms_model",))
        manifest = record(spec, args.record, train_pass=not args.no_train_pass)
        calls = sum(len(r["t"]["calls"]) for r in manifest["pair"]["runs"])
        print(f"recorded {args.record}: {len(spec.inputs)} input(s), {calls} module call(s), "
              f"{len(manifest['pair']['tensors'])} tensors; compare it where the port runs: python -m parity.pair "
              f"{args.spec} --compare {args.record}")
        return EXIT_OK
    spec = load_spec(args.spec, options, args.other, skip=("torch_model",) if args.compare else ())
    torch_device = spec.devices.get("torch", "cpu")
    devices: dict[str, Any] = {"torch_device": torch_device, "other_device": torch_device if spec.other else spec.devices.get("ms", "")}
    if args.self_test and spec.other:
        raise UserError("--self-test plants bugs in a MindSpore side; the other side here is PyTorch "
                        f"({', '.join(f'{k} {v}' for k, v in spec.other.items())})")
    extra: dict = {}
    extra_md = ""
    if args.self_test:
        from parity.pair.selftest import self_test, table, to_dicts

        report, probes = self_test(spec.torch_model, spec.ms_model, spec.inputs, name_map=spec.name_map,
                                   progress=lambda line: print(f"  {line}", file=sys.stderr, flush=True),
                                   tolerances=spec.tolerances, shims=spec.shims, arbiter=spec.arbiter, **devices)
        report.name = spec.path.stem
        print(report.text())
        found = table(probes) if report.passed else "self-test: not run, the pair already differs (fix that first)"
        print("\n" + found)
        extra, extra_md = {"self_test": to_dicts(probes)}, f"\n## Self-test\n\n```\n{found}\n```\n"
    elif args.compare:
        from parity.pair.golden import compare_golden

        report = compare_golden(spec, args.compare, train_pass=not args.no_train_pass)
        print(report.text())
    else:
        from parity.pair.run import compare

        report = compare(spec.torch_model, spec.ms_model, spec.inputs, name_map=spec.name_map,
                         train_pass=not args.no_train_pass, name=spec.path.stem, loss=spec.loss,
                         optimizers=spec.optimizers, tolerances=spec.tolerances, shims=spec.shims,
                         arbiter=spec.arbiter, step=spec.step, loop=spec.loop, **devices)
        print(report.text())
    texts = {"json": lambda: json.dumps({**report.to_dict(), **extra}, indent=1, default=str) + "\n",
             "markdown": lambda: report.markdown() + extra_md, "junit": report.junit}
    for flag, path in outputs.items():
        if path and flag in texts:
            atomic_write_bytes(path, texts[flag]().encode())
    if args.plot:
        from parity.pair.plot import plot_depth

        plot_depth(report, args.plot)
    return EXIT_OK if report.passed else EXIT_MISMATCH


def _cause(args: argparse.Namespace, e: BaseException) -> None:
    """With ``--traceback``, the traceback of the user's exception behind ``e`` (its cause), on stderr."""
    if args.traceback and e.__cause__ is not None:
        traceback.print_exception(e.__cause__, file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    from parity.pair.calls import UserCodeError

    os.environ.setdefault("GLOG_v", "3")  # MindSpore: errors only, so the table stays readable
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except UserCodeError as e:  # the user's code failed mid-run: which SPEC, where, what
        print(f"error: SPEC {Path(args.spec).name}: {one_line(e)}", file=sys.stderr)
        _cause(args, e)
        return EXIT_USER_ERROR
    except WeightsError as e:  # every problem, one line each, under the one error line
        print(f"error: {e.context}: {len(e.problems)} problem(s)", file=sys.stderr)
        for line in e.problems:
            print(f"  {line}", file=sys.stderr)
        return EXIT_USER_ERROR
    except (EnvironmentRefused, MissingFramework) as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        _cause(args, e)
        return EXIT_ENVIRONMENT
    except (UserError, OSError) as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        _cause(args, e)
        return EXIT_USER_ERROR


if __name__ == "__main__":
    exit_after_main(main())
