"""The launcher: the command for each launcher, a timeout that kills the whole process group, and a failure
message that names what ran, why it stopped and the first error line."""
import os
import sys
import time

import pytest

from ddpm_core.runtime import launch
from ddpm_core.runtime.environment import child_env


def test_job_commands():
    plain = launch.job_command("torch", 1, "pkg.mod", ["--x", "1"], python="py")
    assert plain.argv == ["py", "-m", "pkg.mod", "--x", "1"] and plain.what == "a single process"
    torchrun = launch.job_command("torch", 2, "pkg.mod", ["--x"], python="py")
    assert torchrun.argv[:3] == ["py", "-m", "torch.distributed.run"] and torchrun.argv[-3:] == ["-m", "pkg.mod", "--x"]
    assert "2" == torchrun.argv[torchrun.argv.index("--nproc_per_node") + 1] and torchrun.what == "torchrun (2 workers)"
    msrun = launch.job_command("ms", 2, "pkg.mod", [], "/tmp/logs", python="py")
    assert msrun.argv[-3:] == ["python", "-m", "pkg.mod"] and msrun.launcher == "msrun"
    with pytest.raises(ValueError, match="msrun needs a log folder"):
        launch.job_command("ms", 2, "pkg.mod", [])
    with pytest.raises(ValueError, match="workers"):
        launch.job_command("torch", 0, "pkg.mod", [])


def test_a_timeout_kills_the_whole_group(tmp_path):
    """A job whose child starts a grandchild and hangs: after the timeout neither is left."""
    pid_file = tmp_path / "grandchild.pid"
    code = ("import subprocess, sys, time; p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']);"
            f"open({str(pid_file)!r}, 'w').write(str(p.pid)); time.sleep(60)")
    start = time.perf_counter()
    finished = launch.run([sys.executable, "-c", code], child_env(), tmp_path, tmp_path / "job.log", timeout_s=2)
    assert finished.code is None and not finished.ok and time.perf_counter() - start < 20
    assert finished.why == "ran past its 2 s timeout and was stopped"
    grandchild = int(pid_file.read_text())
    for _ in range(50):  # the kill is delivered at once; reaping by init may take a moment
        try:
            os.kill(grandchild, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"process {grandchild} outlived its job's timeout")


def test_a_failure_is_described_with_its_first_error_and_log_tail(tmp_path):
    code = "import sys; print('warming up'); print('error: rank 0: no such file'); print('bye'); sys.exit(2)"
    job = launch.job_command("torch", 1, "unused", [])
    finished = launch.run([sys.executable, "-c", code], child_env(), tmp_path, tmp_path / "job.log", timeout_s=60)
    assert finished.code == 2 and finished.why == "exited with code 2"
    message = launch.describe("PyTorch training", job, finished, tmp_path / "job.log")
    first, *rest = message.splitlines()
    assert first == "PyTorch training, a single process, exited with code 2; error: rank 0: no such file"
    assert rest == ["--- job.log (last 3 lines)", "warming up", "error: rank 0: no such file", "bye"]


def test_a_crash_is_named_though_the_launcher_prints_pages_after_it(tmp_path):
    """A rank killed by ``std::terminate`` (CI saw one): its one line of cause, not the launcher's footer of
    signal numbers, reaches the message; an ``error:`` line of ours still comes first."""
    footer = "; ".join(f"print('rank 1 exitcode -6 (SIGABRT) line {i}')" for i in range(20))
    code = ("import os, sys; print('warming up', flush=True); "
            "sys.stderr.write('terminate called without an active exception\\n'); sys.stderr.flush(); "
            f"{footer}; sys.stdout.flush(); os.abort()")
    job = launch.job_command("torch", 1, "unused", [])
    finished = launch.run([sys.executable, "-c", code], child_env(), tmp_path, tmp_path / "job.log", timeout_s=60)
    assert finished.code == -6
    first = launch.describe("PyTorch training", job, finished, tmp_path / "job.log").splitlines()[0]
    assert first == "PyTorch training, a single process, exited with code -6; terminate called without an active exception"
    (tmp_path / "rank0.log").write_text("error: rank 0: disk full\n")
    assert launch.first_error([tmp_path / "job.log", tmp_path / "rank0.log"]) == "error: rank 0: disk full"
