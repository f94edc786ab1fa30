"""The environment policy: the thread default on a shared machine, the ISA pin, a child's environment."""
import os
import sys

import pytest

from ddpm_core.runtime.environment import ISA, ISA_VARIABLE, THREADS_VARIABLE, child_env, default_threads, pin_isa


@pytest.mark.parametrize("n_cores, load, expected", [
    (2, 0.3, 2),    # quiet: every core
    (2, 0.6, 1),    # more than half a core taken: 1.4 free rounds down to 1
    (2, 11.8, 1),   # the busy CI machine: never below 1
    (16, 3.2, 13),
    (4, -1.0, 4),   # never above the cores
])
def test_default_threads_are_the_free_cores(n_cores, load, expected):
    assert default_threads({}, n_cores, load) == expected


def test_omp_num_threads_wins_and_is_checked():
    assert default_threads({THREADS_VARIABLE: "3"}, 16, 15.0) == 3
    for bad in ("0", "-2", "two"):
        with pytest.raises(ValueError, match=f"{THREADS_VARIABLE}='{bad}'"):
            default_threads({THREADS_VARIABLE: bad}, 2, 0.0)


def test_isa_pin_keeps_a_users_value():
    env = {}
    pin_isa(env)
    assert env == {ISA_VARIABLE: ISA}
    env = {ISA_VARIABLE: "AVX512_CORE"}
    pin_isa(env)
    assert env[ISA_VARIABLE] == "AVX512_CORE"


def test_child_env():
    base = {"PATH": "/usr/bin", "PYTHONPATH": "/elsewhere", "GLOG_v": "1"}
    env = child_env(threads=2, timeout_s=12.5, pythonpath="/repo", base=base, EXTRA="x")
    assert env[ISA_VARIABLE] == ISA and env[THREADS_VARIABLE] == "2" and env["DDPM_DIST_TIMEOUT"] == "13"
    assert env["PYTHONPATH"] == os.pathsep.join(["/repo", "/elsewhere"]) and env["GLOG_v"] == "1"
    assert env["PATH"].split(os.pathsep) == [os.path.dirname(sys.executable), "/usr/bin"] and env["EXTRA"] == "x"
    assert base == {"PATH": "/usr/bin", "PYTHONPATH": "/elsewhere", "GLOG_v": "1"}  # not changed
    assert ISA_VARIABLE not in child_env(isa=False, base={ISA_VARIABLE: ISA})
    assert child_env(isa="AVX512_CORE", base={ISA_VARIABLE: ISA})[ISA_VARIABLE] == "AVX512_CORE"
    assert child_env(python=None, base={"PATH": "/usr/bin"})["PATH"] == "/usr/bin"
    assert THREADS_VARIABLE not in child_env(base={})
