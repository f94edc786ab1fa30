"""scripts/gpu_run.sh on a PyTorch-only host (MindSpore blocked from import, tests/one_framework.py), in its
CPU smoke mode (``GPU_RUN_SMOKE=1``: the same steps, tiny sizes, the bench's options parsed but not run): the
summary names every step, a step cut for time fails the run, everything comes back as three files, and each
golden it records passes ``compare`` on a MindSpore host."""
import subprocess
import tarfile

import pytest

from tests.one_framework import ROOT, blocked_env, run
from tests.host import needs

SCRIPT = ROOT / "scripts" / "gpu_run.sh"
STEPS = ("record", "record_adam", "record_small", "cuda_tests", "train", "bench_cuda", "bench_compile")


def gpu_run(out, total_s: int | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    extra = {"GPU_RUN_SMOKE": "1", "PYTHON": "python"}
    if total_s is not None:
        extra["GPU_RUN_TOTAL_S"] = str(total_s)
    return subprocess.run(["bash", str(SCRIPT), str(out)], env=blocked_env(("mindspore",), **extra),
                          capture_output=True, text=True, timeout=timeout)


def summary(out) -> dict[str, str]:
    lines = (out / "summary.txt").read_text().splitlines()
    return {line.split(":", 1)[0]: line.split(":", 1)[1].strip() for line in lines}


def unpack(out, to):
    with tarfile.open(out / "gpu_run.tar.gz") as tar:
        tar.extractall(to, filter="data")
    return to / "gpu_run"


def test_script_parses_and_refuses_bad_use(tmp_path):
    assert subprocess.run(["bash", "-n", str(SCRIPT)]).returncode == 0
    assert subprocess.run(["bash", str(SCRIPT)], capture_output=True).returncode == 2
    (tmp_path / "gpu_run").mkdir()
    (tmp_path / "gpu_run" / "mine.txt").write_text("kept")
    proc = subprocess.run(["bash", str(SCRIPT), str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and "empty OUT_DIR" in proc.stderr
    assert [p.name for p in tmp_path.rglob("*")] == ["gpu_run", "mine.txt"]


@needs("torch")
def test_steps_cut_for_time_fail_the_run_and_everything_comes_back(tmp_path):
    """20 s in all, less than any step's minimum once the machine is described: every step is skipped for
    time, the run fails (exit 1), and the summary and the machine description come back, in the archive too."""
    proc = gpu_run(tmp_path, total_s=20)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gpu_run.tar.gz", "machine.txt", "summary.txt"]
    steps = summary(tmp_path)
    assert set(STEPS) - {"cuda_tests", "train"} <= {s for s in steps if steps[s].startswith("skipped (only ")}
    assert steps["train"].startswith("skipped (") and "next, on a MindSpore host" in steps
    work = unpack(tmp_path, tmp_path / "x")
    assert (work / "summary.txt").read_text() == (tmp_path / "summary.txt").read_text()
    assert "mindspore cannot be imported: No module named 'mindspore'" in (work / "machine.txt").read_text()
    assert sorted(p.name for p in work.iterdir()) == ["machine.txt", "summary.txt"]


@pytest.mark.slow  # every step, then three compares: about 2 minutes on 2 cores
@needs("torch", "mindspore")
def test_smoke_run_records_goldens_that_pass_on_a_mindspore_host(tmp_path):
    proc = gpu_run(tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    steps = summary(tmp_path)
    for step in STEPS:
        assert steps[step].startswith(("exit 0 ", "skipped (")), (step, steps[step])
    assert not steps["cuda_tests"].startswith("skipped")
    work = unpack(tmp_path, tmp_path / "x")
    goldens = sorted(work.glob("golden_torch_cpu*.npz"))
    assert [g.name for g in goldens] == ["golden_torch_cpu.npz", "golden_torch_cpu_adam.npz",
                                         "golden_torch_cpu_small.npz"]
    for golden in goldens:
        compared = run("ms", "parity.check", ["compare", golden, "--framework", "ms", "--no-progress"])
        assert compared.returncode == 0 and "PASS" in compared.stdout, compared.stdout[-2000:] + compared.stderr[-2000:]
