"""Data-parallel training through the frameworks' own launchers (``torchrun``, ``msrun``), 2 workers on CPU:
the split changes nothing but rounding (same loss curve and weights as one process), a worker that dies
stops the whole job, and ``--resume`` finishes it exactly as an uninterrupted 2-worker run would."""
from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from parity.api import assert_close
from ddpm_core.runtime.environment import child_env
from ddpm_core.runtime.launch import job_command
from ddpm_core.weights.files import load_weights
from tests.host import PROGRAM_FRAMEWORKS, need
from tests.train.conftest import REPO, TINY, run_cli, train

WORKERS = 2
COMMON = ["--epochs", "2", "--save-every", "2", *TINY]
"""6 steps of a global batch of 4 (2 per worker), a checkpoint every 2 steps."""
LAUNCH_TIMEOUT_S = 300
MS_NODE_TIMEOUT_S = 15
"""msrun's scheduler declares a silent worker dead after MS_NODE_TIMEOUT s: by default the job ended ~33 s
after a worker's SIGKILL here, with 6 s in 8 s."""
# 1 vs 2 workers differ only in the order of float32 sums: measured (6 steps, this tiny model) losses within
# 6e-8 and weights within 5.5e-7 of each other, against weight changes of ~1e-3; a worker on the wrong slice
# moves the weights by the size of the change itself. Bounds: the harness's ``loss`` and ``adam`` entries.


def launch(twin: str, args: list[str], log_dir: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``python -m ddpm_<twin>.train ARGS`` as a 2-worker job of the twin's launcher."""
    need(*PROGRAM_FRAMEWORKS[twin])
    job = job_command(twin, WORKERS, f"ddpm_{twin}.train", args, log_dir)
    full_env = child_env(threads=1, pythonpath=REPO, MS_NODE_TIMEOUT=str(MS_NODE_TIMEOUT_S), **(env or {}))
    return subprocess.run(job.argv, cwd=REPO, env=full_env, capture_output=True, text=True,
                          timeout=LAUNCH_TIMEOUT_S, check=False)


def log_of(run: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in map(json.loads, (run / "log.jsonl").read_text().splitlines())]


def weights_of(run: Path) -> dict[str, np.ndarray]:
    return load_weights(run / "model.safetensors").state


@pytest.fixture(scope="module")
def one_process(tmp_path_factory, fashion_gz_dir):
    """Per twin, made on first use: the 1-process run of ``COMMON``."""
    made: dict[str, Path] = {}

    def get(twin: str) -> Path:
        if twin not in made:
            out = tmp_path_factory.mktemp(f"{twin}_1") / "run"
            done = run_cli(twin, "train", "--data", str(fashion_gz_dir), "--out", str(out), *COMMON)
            assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
            made[twin] = out
        return made[twin]

    return get


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory, fashion_gz_dir):
    """Per twin, made on first use: the uninterrupted 2-worker run of ``COMMON``."""
    made: dict[str, Path] = {}

    def get(twin: str) -> Path:
        if twin not in made:
            root = tmp_path_factory.mktemp(f"{twin}_2_whole")
            done = launch(twin, ["--data", str(fashion_gz_dir), "--out", str(root / "run"), *COMMON], root / "log")
            assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
            made[twin] = root / "run"
        return made[twin]

    return get


@pytest.fixture(scope="module")
def killed_and_resumed(tmp_path_factory, fashion_gz_dir):
    """Per twin, made on first use: a 2-worker run whose rank 1 is SIGKILLed after step 3, then resumed with
    2 workers. Returns (run folder, the killed job's result, its wall time in s). An msrun job costs 30-60 s
    here, so the MindSpore case is marked slow; CI runs MindSpore's uninterrupted 2-worker run."""
    made: dict[str, tuple[Path, subprocess.CompletedProcess, float, dict]] = {}

    def get(twin: str):
        if twin not in made:
            root = tmp_path_factory.mktemp(f"{twin}_2")
            out = root / "run"
            t0 = time.monotonic()
            killed = launch(twin, ["--data", str(fashion_gz_dir), "--out", str(out), *COMMON], root / "log1",
                            env={"DDPM_KILL_AT": "after-step:3", "DDPM_KILL_RANK": "1"})
            elapsed = time.monotonic() - t0
            after_kill = {"latest": json.loads((out / "latest.json").read_text()), "log": log_of(out)}
            resumed = launch(twin, ["--resume", str(out)], root / "log2")
            assert resumed.returncode == 0, (resumed.stdout + resumed.stderr)[-3000:]
            made[twin] = (out, killed, elapsed, after_kill)
        return made[twin]

    return get


@pytest.mark.parametrize("twin", ["torch", pytest.param("ms", marks=pytest.mark.slow)])  # msrun: 2 launches, ~70 s
def test_a_dead_worker_stops_the_job(killed_and_resumed, twin):
    """Rank 1 dies after step 3: the launcher stops rank 0 too and exits non-zero well before any timeout,
    and the run keeps its last complete checkpoint (step 2) for ``--resume``."""
    _, killed, elapsed, after_kill = killed_and_resumed(twin)
    assert killed.returncode != 0, (killed.stdout + killed.stderr)[-3000:]
    assert elapsed < LAUNCH_TIMEOUT_S / 2
    assert after_kill["latest"]["step"] == 2
    assert [s for s, _ in after_kill["log"]][:3] == [0, 1, 2]


# msrun: ~25 s of launches; the default suite trains MindSpore over 2 workers against 1 process through
# parity.check --workers 2 (tests/parity/test_distributed.py), the same launcher and training steps
@pytest.mark.parametrize("twin", ["torch", pytest.param("ms", marks=pytest.mark.slow)])
def test_two_workers_train_like_one_process(one_process, two_workers, twin):
    """Same global batch, seed and tape: the 2-worker loss curve and final weights are the 1-process ones, up
    to the order of float32 sums."""
    one, two = one_process(twin), two_workers(twin)
    a, b = log_of(two), log_of(one)
    assert [s for s, _ in a] == [s for s, _ in b] == list(range(6))
    assert_close(f"{twin}: losses, 2 workers vs 1", np.array([x for _, x in a], np.float32),
                 np.array([x for _, x in b], np.float32), "loss")
    w1, w2 = weights_of(one), weights_of(two)
    assert sorted(w1) == sorted(w2)
    assert_close(f"{twin}: weights after 6 steps, 2 workers vs 1", w2, w1, "adam")
    assert json.loads((two / "run.json").read_text())["batch_size"] == 4  # global, split over the workers
    assert sorted(p.name for p in (two / "checkpoints").iterdir()) == sorted(
        p.name for p in (one / "checkpoints").iterdir())  # rank 0 alone wrote them, under the same names


def test_resume_after_a_dead_worker_is_exact(killed_and_resumed, two_workers):
    """The resumed 2-worker run equals the uninterrupted 2-worker run bit for bit (PyTorch: cheap to launch;
    the resume logic is shared by both twins)."""
    resumed, whole = killed_and_resumed("torch")[0], two_workers("torch")
    assert log_of(resumed) == log_of(whole)
    a, b = weights_of(resumed), weights_of(whole)
    assert all(np.array_equal(a[k], b[k]) for k in b)


@pytest.mark.parametrize("twin, env", [("torch", {"WORLD_SIZE": "2", "RANK": "0"}),
                                       ("ms", {"MS_ROLE": "MS_WORKER", "MS_WORKER_NUM": "2"})])
def test_a_batch_that_does_not_split_is_one_line_and_exit_2(tmp_path, fashion_dir, monkeypatch, capsys, twin, env):
    """Checked from the launcher's environment before joining the job (no rendezvous is needed to fail)."""
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    args = ["--data", str(fashion_dir), "--out", str(tmp_path / "run"), *COMMON, "--batch-size", "3", "--max-steps", "1"]
    assert train(twin, *args) == 2
    err = capsys.readouterr().err
    assert err == ("error: --batch-size: the global batch size 3 does not split evenly over 2 workers; "
                   "pick a multiple of 2\n")
    assert not (tmp_path / "run").exists()
