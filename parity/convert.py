"""``python -m parity.convert SRC [DST] [--config JSON_OR_PATH] [--dtype D] [--manifest [PATH]]``:
move U-Net weights between PyTorch (.pt/.pth), MindSpore (.ckpt) and .safetensors files.

A thin layer over ``ddpm_core.weights`` (docs/weights.md): formats come from the extensions, the
checks are strict, the write is atomic. The settings recorded with SRC (its metadata, or a run's config.json
beside it: ``ddpm_core.weights.recorded``) travel into a .safetensors DST. Expected failures (weights that do not fit, a file that
cannot be read or written, a bad config) print one ``error: `` line per problem on stderr and
exit with status 2, without a traceback. Notes (what was skipped, what was written, which existing
file was replaced) go to stderr; the manifest, when printed, is the only thing on stdout. A manifest
written to ``DST.manifest.json`` is DST's sidecar: every later read of DST verifies it, and a conversion
that replaces DST rewrites it. Temporary files of an earlier conversion to DST that was killed are removed.
Before reading SRC, every output (DST, --manifest, DST's sidecar) must be writable and another file than
every input (SRC, its sidecar, --config) and than each other, so a conversion never replaces what it reads
(a training checkpoint converted onto itself would lose its optimizer and progress); before writing, DST's
file system must have room for it.

``--map SPEC.py [--set KEY=VALUE ...]`` converts any pair's weights instead of the U-Net's: a PyTorch file to a
MindSpore .ckpt (or back) with the map ``python -m parity.pair SPEC.py`` computes (``parity.pair.weightfile``);
every tensor that does not map, or maps two ways, is one line under one ``error:`` line, exit 2.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ddpm_core.errors import (EXIT_ENVIRONMENT, EXIT_USER_ERROR, EnvironmentRefused, MissingFramework, UserError,
                              WeightsError, one_line)
from ddpm_core.runtime.atomic import atomic_write_bytes
from ddpm_core.runtime.paths import check_outputs, check_space, same_file
from ddpm_core.weights.converter import DTYPES, cast_weights, convert
from ddpm_core.weights.extras import describe_skipped
from ddpm_core.weights.files import save_weights
from ddpm_core.weights.formats import format_of
from ddpm_core.weights.integrity import manifest, manifest_sidecar
from ddpm_core.weights.recorded import load_recorded


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m parity.convert", description="Move U-Net weights between PyTorch (.pt/.pth), MindSpore (.ckpt) and .safetensors "
                                "files, strictly and exactly (docs/weights.md).")
    p.add_argument("src", help="source file: .pt/.pth (PyTorch), .ckpt (MindSpore) or .safetensors")
    p.add_argument("dst", nargs="?", help="destination file; its extension picks the format")
    p.add_argument("--config", help="UnetConfig fields as JSON, or a JSON file of them or a run's config.json (default: the file's metadata, "
                                    "a run's config.json beside SRC, else the tutorial's dim=28, channels=1, dim_mults=(1, 2, 4)); "
                                    "a .safetensors DST records the diffusion settings and image size found with them")
    p.add_argument("--dtype", choices=DTYPES, help="cast the weights (default: keep the source dtype)")
    p.add_argument("--manifest", nargs="?", const="-", metavar="PATH",
                   help="per-tensor sha256 in torch naming, as JSON: printed, or written to PATH; "
                        "PATH = DST.manifest.json makes it DST's sidecar, verified whenever DST is read")
    p.add_argument("--map", metavar="SPEC.py", help="convert with the weight map parity.pair computes for this SPEC "
                   "(any model pair, docs/pairs.md) instead of the U-Net's names")
    p.add_argument("--set", metavar="KEY=VALUE", action="append", default=[], dest="options",
                   help="with --map: an option for the SPEC's functions, as parity.pair takes it (repeatable)")
    return p


def run_map(args: argparse.Namespace) -> None:
    """``--map``: the SPEC's weight map (parity.pair.weightfile), with the same output guards."""
    from parity.pair.spec import load_spec, parse_option
    from parity.pair.weightfile import convert_with_map

    if args.dst is None or args.manifest is not None or args.config is not None or args.dtype is not None:
        raise UserError("--map takes SRC and DST (and --set); --manifest, --config and --dtype are the U-Net's")
    check_outputs([("DST", args.dst)], [("SRC", args.src), ("--map", args.map)])
    format_of(args.dst)
    spec = load_spec(args.map, dict(parse_option(o) for o in args.options))
    print(convert_with_map(args.src, args.dst, spec), file=sys.stderr)


def run(args: argparse.Namespace) -> None:
    if args.map is not None:
        return run_map(args)
    if args.options:
        raise UserError("--set is an option of --map")
    if args.dst is None and args.manifest is None:
        raise UserError("give DST to convert to, or --manifest to print the manifest")
    manifest_out = args.manifest if args.manifest != "-" else None
    sidecar = manifest_sidecar(args.dst) if args.dst is not None else None
    rewritten = sidecar if sidecar is not None and sidecar.exists() else None  # a conversion to DST rewrites it
    if rewritten is not None and manifest_out is not None and same_file(rewritten, manifest_out):
        rewritten = None  # --manifest writes it
    src_sidecar = manifest_sidecar(args.src)  # read (to verify SRC) when it exists
    check_outputs([("DST", args.dst), ("--manifest", manifest_out), ("DST's sidecar manifest", rewritten)],
                  [("SRC", args.src), ("SRC's sidecar manifest", src_sidecar if src_sidecar.exists() else None),
                   ("--config", args.config)])
    if args.dst is not None:
        format_of(args.dst)  # a wrong extension fails before the (slow) read
    recorded = load_recorded(args.src, args.config)  # with a run's config.json beside SRC, as sample reads it
    loaded = recorded.loaded
    if recorded.config_file is not None:
        print(f"read the settings recorded in {recorded.config_file}", file=sys.stderr)
    if loaded.prefix:
        print(f"removed the wrapper prefix {loaded.prefix!r} from the model's parameter names", file=sys.stderr)
    for line in describe_skipped(loaded.skipped):
        print(line, file=sys.stderr)
    dtype = args.dtype or ("bfloat16" if loaded.dtype == "bfloat16" else None)
    state = cast_weights(loaded.state, dtype)
    text = json.dumps(manifest(state), indent=2) + "\n"
    if args.dst is not None:
        # a .safetensors destination keeps the source's naming (recorded in its metadata)
        naming = loaded.file_naming
        check_space("DST", args.dst, sum(v.nbytes for v in state.values()) + 256 * len(state) + (1 << 16))
        replaced = Path(args.dst).exists()
        save_weights(convert(state, loaded.config, "torch", naming), args.dst, naming, loaded.config, dtype=dtype,
                     diffusion=recorded.diffusion, image_size=recorded.image_size)
        print(f"wrote {args.dst}: {len(state)} tensors, {dtype or loaded.dtype}, from {args.src} "
              f"({loaded.file_naming} naming){'; it replaced the file that was there' if replaced else ''}",
              file=sys.stderr)
        if rewritten is not None:
            atomic_write_bytes(sidecar, text.encode())
            print(f"updated {sidecar}, the sidecar manifest of {args.dst}", file=sys.stderr)
    if args.manifest is not None:
        if args.manifest == "-":
            sys.stdout.write(text)
        else:
            atomic_write_bytes(args.manifest, text.encode())
            print(f"wrote the manifest to {args.manifest}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        run(args)
    except WeightsError as e:
        if args.map is not None:  # parity.pair's form: one error line, then every problem on its own line
            print(f"error: {e.context}: {len(e.problems)} problem(s)", file=sys.stderr)
            for line in e.problems:
                print(f"  {line}", file=sys.stderr)
            return EXIT_USER_ERROR
        problems = e.problems
        if len(problems) == 1:
            print(f"error: {e.context}: {problems[0]}", file=sys.stderr)
        else:
            print(f"error: {e.context}:", file=sys.stderr)
            for problem in problems:
                print(f"error: {problem}", file=sys.stderr)
        if e.hint:
            print(f"hint: {e.hint}", file=sys.stderr)
        return EXIT_USER_ERROR
    except EnvironmentRefused as e:  # --map: a package its SPEC imports is missing
        print(f"error: {one_line(e)}", file=sys.stderr)
        return EXIT_ENVIRONMENT
    except (UserError, MissingFramework) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except OSError as e:
        print(f"error: {e.filename}: {e.strerror}" if e.filename else f"error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    return 0


if __name__ == "__main__":
    sys.exit(main())
