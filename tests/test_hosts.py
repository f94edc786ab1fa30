"""The suite on a host with one framework (tests/host.py): collected whole with either framework blocked from
import (tests/one_framework.py), each twin's tests run while the other's skip naming what is missing, a
framework CI requires stops the run instead, and only an absent framework skips: a broken one fails."""
import re
import subprocess
import sys
from types import SimpleNamespace

import pytest

from tests import host
from tests.host import needs
from tests.one_framework import HOST, ROOT, blocked_env

SUBSET = ["tests/twins/test_unet.py::test_output_shape", "tests/parity/test_contract.py",
          "tests/ddpm_core/test_ckpt.py"]
"""A test over both twins, the contract of each twin's classes, MindSpore's checkpoint format."""


def pytest_on(host_name: str | None, *args: str, **env: str) -> subprocess.CompletedProcess:
    """``python -m pytest -p no:cacheprovider ARGS`` with the other framework blocked (``host_name`` "torch"
    or "ms"; None: nothing blocked)."""
    blocked = HOST[host_name] if host_name else ()
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args], cwd=ROOT,
                          env=blocked_env(blocked, **env), capture_output=True, text=True, timeout=600)


def test_the_whole_suite_is_collected_on_either_host():
    ids = {}
    for name in HOST:
        proc = pytest_on(name, "-q", "--collect-only", "tests")
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
        ids[name] = [line for line in proc.stdout.splitlines() if "::" in line]
    assert ids["torch"] == ids["ms"] and len(ids["torch"]) > 600


@pytest.mark.parametrize("host_name", [pytest.param(h, marks=needs(host.TWIN_FRAMEWORK[h]), id=h) for h in HOST])
def test_each_twin_runs_and_the_other_skips_saying_why(host_name):
    proc = pytest_on(host_name, "-q", "-rs", *SUBSET)
    out = proc.stdout
    assert proc.returncode == 0, out[-3000:] + proc.stderr[-2000:]
    gone = "MindSpore" if host_name == "torch" else "PyTorch"
    skips = [line for line in out.splitlines() if line.startswith("SKIPPED")]
    assert all(": needs " in line and ", which this Python cannot import (No module named " in line for line in skips)
    assert any(f"needs {gone}, which" in line for line in skips), skips  # (torchvision may be missing too)
    assert all(line.split("] ")[1].startswith(("tests/twins/", "tests/parity/", "tests/ddpm_core/")) for line in skips)
    counts = {word: int(n) for n, word in re.findall(r"(\d+) (passed|skipped|failed|error)", out.splitlines()[-1])}
    assert counts.get("passed", 0) >= 10 and counts.get("skipped", 0) >= 10 and set(counts) == {"passed", "skipped"}


def test_a_required_framework_that_is_missing_stops_the_run():
    proc = pytest_on("torch", "-q", "--collect-only", "tests/test_hosts.py", DDPM_PARITY_REQUIRE="torch,ms")
    assert proc.returncode == 4, proc.stderr  # (PyTorch too is named where the host running this lacks it)
    assert re.search(r"requires (torch, )?mindspore, which this Python cannot import \(", proc.stderr), proc.stderr
    proc = pytest_on(None, "-q", "--collect-only", "--require-frameworks", "tensorflow", "tests/test_hosts.py")
    assert proc.returncode == 4 and "unknown framework 'tensorflow'" in proc.stderr, proc.stderr


@pytest.fixture
def fresh_cache():
    host.missing.cache_clear()
    yield
    host.missing.cache_clear()


def test_only_an_absent_framework_skips(monkeypatch, fresh_cache):
    """A framework that is installed but broken keeps its error; so does a module missing inside it."""
    def broken(name):
        raise ImportError("libtorch_cpu.so: cannot open shared object file")

    def missing_inside(name):
        raise ModuleNotFoundError("No module named 'sympy'", name="sympy")

    def absent(name):
        raise ModuleNotFoundError(f"No module named {name!r}", name=name)

    for fake in (broken, missing_inside):
        monkeypatch.setattr(host, "importlib", SimpleNamespace(import_module=fake))
        with pytest.raises(ImportError, match="libtorch_cpu|sympy"):
            host.missing("torch")
    monkeypatch.setattr(host, "importlib", SimpleNamespace(import_module=absent))
    assert host.skip_reason(("ms", "torch")) == (
        "needs MindSpore and PyTorch, which this Python cannot import (No module named 'mindspore'; No module named "
        "'torch'): a one-framework host (docs/hosts.md)")
    with pytest.raises(pytest.skip.Exception, match="needs PyTorch"):
        host.need("torch")


def test_a_golden_is_recorded_by_the_twin_this_host_has(monkeypatch, fresh_cache):
    """``recording_twin``: PyTorch where it imports, MindSpore where only it does, a skip naming both where
    neither does (the golden-reader and writer tests run on either host)."""
    def without(*gone):
        def import_module(name):
            if name in gone:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return SimpleNamespace(import_module=import_module)

    for gone, twin in (((), "torch"), (("torch",), "ms"), (("mindspore",), "torch")):
        host.missing.cache_clear()
        monkeypatch.setattr(host, "importlib", without(*gone))
        assert host.recording_twin() == twin, gone
    host.missing.cache_clear()
    monkeypatch.setattr(host, "importlib", without("torch", "mindspore"))
    with pytest.raises(pytest.skip.Exception, match="needs PyTorch and MindSpore"):
        host.recording_twin()
