"""scripts/gpu_speed.sh, issue 24's GPU run in one call: its plan (``--plan``) names only commands whose options
parse, fits the 8-minute budget and writes at most 8 files; bad usage is one line and exit 2. The whole
CPU dry run (``--cpu``, 2-7 minutes on two cores) is the ``slow`` test."""
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from parity.bench import fastcheck
from parity.bench.cli import parse
from parity.check import build_parser
from tests.host import needs

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "gpu_speed.sh"
TOTAL_S = 465
MAX_FILES = 8


def plan(*mode: str) -> list[tuple[str, int, list[str]]]:
    proc = subprocess.run(["bash", str(SCRIPT), "/tmp/out", *mode, "--plan"], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    steps = []
    for line in proc.stdout.splitlines():
        _, name, budget, *command = shlex.split(line)
        steps.append((name, int(budget), command))
    return steps


def test_the_script_is_valid_bash():
    assert subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True).returncode == 0


@pytest.mark.parametrize("mode", [(), ("--cpu",)])
def test_every_step_parses_fits_the_budget_and_the_file_limit(mode):
    steps = plan(*mode)
    assert [s[0] for s in steps] == ["fastcheck", "record", "sweep", "profile", "compile"]
    outputs = {"/tmp/out/log.txt"}
    for name, budget, command in steps:
        command = command[command.index("-m"):]  # past `env VAR=1` and the interpreter
        module, argv = command[1], command[2:]
        if module == "parity.bench":
            args = parse(argv)
            assert args.device == "cuda" and args.torch_device == ("cpu" if mode else "cuda")
            if args.budget_s is not None:
                assert args.budget_s < budget - 20, "the sweep must stop starting points well before its timeout"
        elif module == "parity.bench.fastcheck":
            fastcheck.build_parser().parse_args(argv)
        else:
            assert module == "parity.check" and argv[0] == "record"
            build_parser("record").parse_args(argv[1:])
        outputs |= {a for a in argv if a.startswith("/tmp/out/")}
    assert len(outputs) <= MAX_FILES, sorted(outputs)
    assert sum(b for _, b, _ in steps[:-1]) <= TOTAL_S - 60, "torch.compile must keep a minute at least"


def test_bad_usage_is_one_line_and_exit_2():
    for argv in ([], ["--cpu"], ["/tmp/out", "--gpu"]):
        proc = subprocess.run(["bash", str(SCRIPT), *argv], cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and proc.stderr.startswith("usage:"), argv


@pytest.mark.slow
@needs("torch")  # the script's steps are PyTorch's (fastcheck, record --framework torch, the CUDA bench on the CPU)
def test_the_cpu_dry_run_runs_every_step(tmp_path):
    proc = subprocess.run(["bash", str(SCRIPT), str(tmp_path), "--cpu"], cwd=ROOT, capture_output=True, text=True,
                          timeout=900, env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stdout[-3000:]
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["compile.json", "compile.md", "fastcheck.json", "golden_torch_cpu.npz", "log.txt", "profile.txt",
                     "sweep.json", "sweep.md"]
    assert "fast paths keep parity" in proc.stdout and "| goal (issue 24) |" in proc.stdout
