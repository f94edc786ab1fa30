"""``python scripts/version_matrix.py [--root DIR] [--install-only | --skip-install]``: the framework releases this
project was run against, each in a virtual environment of its own installed as a user installs it
(``pip install -e '.[torch]'`` plus a pinned release), and what ``parity.check`` and part of the test suite
say there. The pyproject lower bounds and ``parity.env.MEASURED_VERSIONS`` come from its results
(docs/hosts.md holds the last run's table).

Not part of CI: each environment downloads and installs 1-3 GB (minutes each; pip's cache makes reruns
faster), and the checks run the tutorial configuration. Run it in the background:

    nohup python scripts/version_matrix.py > matrix.log 2>&1 &

Environments (``ENVS``); ``current`` is the Python running this script (the CI versions):
  torch-only   [torch,test]      a PyTorch host: the oldest torch/torchvision/protobuf we accept, no MindSpore
  ms-only      [mindspore,test]  a MindSpore host: the oldest MindSpore we accept, no PyTorch
  oldest       [all,test]        both oldest releases in one environment: the suite subset and parity.check

What it runs, each step logged under ROOT/logs:
  1. per environment: the installed versions, the install's size and time; a one-framework environment
     must fail to import the other framework.
  2. the tutorial's model saved with ``ms.save_checkpoint`` on the MindSpore host, converted to ``.pt`` by
     ``parity.convert`` on the PyTorch host; the manifest must equal the one ``current`` computes.
  3. ``parity.check record`` (the default, tutorial configuration) once per distinct framework release, and
     ``parity.check compare`` of every golden on every host of the other framework: each (torch, MindSpore)
     pair in both directions, with the golden's framework on its own host.
  4. in each environment with both frameworks: ``python -m parity.check`` in one process, and ``SUITE``.
Results: ROOT/results.json, and a markdown table on stdout.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ddpm_core.runtime.environment import child_env

REPO = Path(__file__).resolve().parents[1]
TORCH_OLDEST = ["torch==2.11.0", "torchvision==0.26.0"]
MS_OLDEST = ["mindspore==2.7.2"]
PROTOBUF_OLDEST = ["protobuf==6.33.6"]


@dataclass(frozen=True)
class Env:
    name: str
    extras: str
    pins: tuple[str, ...]
    frameworks: tuple[str, ...]
    """"torch" and/or "ms": what the environment is for (the other must not import)."""
    role: str = ""


ENVS = (
    Env("torch-only", "torch,test", (*TORCH_OLDEST, *PROTOBUF_OLDEST), ("torch",), "a PyTorch host"),
    Env("ms-only", "mindspore,test", (*MS_OLDEST,), ("ms",), "a MindSpore host"),
    Env("oldest", "all,test", (*TORCH_OLDEST, *MS_OLDEST, *PROTOBUF_OLDEST), ("torch", "ms"), "both, oldest"),
)
CURRENT = Env("current", "", (), ("torch", "ms"), "this Python (CI's versions)")
SUITE = ("tests/ddpm_core/test_ckpt.py", "tests/ddpm_core/test_weights.py", "tests/twins/test_unet.py",
         "tests/twins/test_tutorial_compat.py", "tests/twins/test_cross_framework.py", "tests/twins/test_optim.py",
         "tests/parity/test_one_framework.py", "tests/train/test_data.py")
"""Every framework API the twins and the converter use, in a few minutes (the full suite is CI's job)."""
MODULES = {"torch": "torch", "ms": "mindspore"}
VERSIONS = ("torch", "torchvision", "mindspore", "numpy", "protobuf")


@dataclass
class Matrix:
    root: Path
    results: dict = field(default_factory=lambda: {"envs": {}, "pairs": [], "suite": {}, "check": {}, "convert": {}})

    def python(self, env: Env) -> str:
        return sys.executable if env is CURRENT else str(self.root / "venvs" / env.name / "bin" / "python")

    def run(self, env: Env, args: list, log: str, timeout: float = 1800) -> tuple[int, float, str]:
        """``python args`` in ``env`` from the repository root; (exit code, seconds, output tail)."""
        variables = child_env(threads=1, pythonpath=REPO, python=self.python(env), GLOG_v="3")
        variables.pop("VIRTUAL_ENV", None)
        start = time.perf_counter()
        with open(self.root / "logs" / f"{log}.log", "w") as out:
            proc = subprocess.run([self.python(env), *map(str, args)], cwd=REPO, env=variables, stdout=out,
                                  stderr=subprocess.STDOUT, timeout=timeout)
        seconds = round(time.perf_counter() - start, 1)
        tail = (self.root / "logs" / f"{log}.log").read_text(errors="replace")[-2000:]
        print(f"  {log}: exit {proc.returncode} in {seconds} s", flush=True)
        return proc.returncode, seconds, tail


def install(m: Matrix, env: Env) -> None:
    venv = m.root / "venvs" / env.name
    if venv.exists():
        shutil.rmtree(venv)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    with open(m.root / "logs" / f"install-{env.name}.log", "w") as log:
        subprocess.run([*pip, "-e", f"{REPO}[{env.extras}]", *env.pins], check=True, stdout=log,
                       stderr=subprocess.STDOUT, cwd=m.root)
    m.results["envs"].setdefault(env.name, {})["install_s"] = round(time.perf_counter() - start, 1)
    print(f"installed {env.name} in {time.perf_counter() - start:.0f} s", flush=True)


def describe(m: Matrix, env: Env) -> None:
    """Versions, size, and whether the frameworks it is not for are really absent."""
    code = ("import importlib.metadata as md, json\n"
            f"print(json.dumps({{n: (md.version(n) if n in {{d.metadata['Name'] for d in md.distributions()}} "
            f"else None) for n in {list(VERSIONS)!r}}}))")
    out = subprocess.run([m.python(env), "-c", code], capture_output=True, text=True, check=True)
    info = m.results["envs"].setdefault(env.name, {})
    info.update(versions=json.loads(out.stdout), role=env.role, extras=env.extras)
    if env is not CURRENT:
        venv = m.root / "venvs" / env.name
        info["size_mb"] = round(sum(p.stat().st_size for p in venv.rglob("*") if p.is_file()) / 2**20)
    for fw, module in MODULES.items():
        if fw not in env.frameworks:
            proc = subprocess.run([m.python(env), "-c", f"import {module}"], capture_output=True, text=True)
            info[f"{module}_absent"] = proc.returncode != 0 and "No module named" in proc.stderr
            assert info[f"{module}_absent"], f"{env.name}: {module} imports, but this environment is not for it"


def version(m: Matrix, env: Env, fw: str) -> str:
    return m.results["envs"][env.name]["versions"][MODULES[fw]]


def summary(report: dict) -> dict:
    """The verdict and the figures the docs table shows, from a parity report's JSON."""
    worst, where = 0.0, ""
    for row in report["rows"]:
        for member in row["members"]:
            tol = member["tolerance"]
            if tol["gate"] and tol["atol"] > 0 and member["atol_needed"] is not None:
                used = float(member["atol_needed"]) / tol["atol"]
                if used > worst:
                    worst, where = used, row["label"]
    labels = {r["label"]: r for r in report["rows"]}

    def figure(prefix: str, key: str = "max_abs") -> float | None:
        found = [float(r[key]) for label, r in labels.items() if label.startswith(prefix) and r[key] is not None]
        return max(found) if found else None

    return {"passed": report["passed"], "failed": [r["label"] for r in report["rows"] if r["gate"] and not r["passed"]],
            "worst_atol_used": round(worst, 3), "worst_row": where, "prediction_max_abs": figure("prediction"),
            "trajectory_max_abs": figure("DDPM trajectory"), "gradients_max_abs": figure("gradients")}


def pairs(m: Matrix, envs: list[Env]) -> None:
    goldens: dict[tuple[str, str], Path] = {}
    for env in envs:
        for fw in env.frameworks:
            key = (fw, version(m, env, fw))
            if key in goldens:
                continue
            path = m.root / "goldens" / f"{fw}-{key[1]}.npz"
            code, seconds, tail = m.run(env, ["-m", "parity.check", "record", "--framework", fw, "--out", path,
                                              "--no-progress"], f"record-{fw}-{key[1]}")
            if code == 0:
                goldens[key] = path
            else:
                m.results["pairs"].append({"record_failed": f"{fw} {key[1]} in {env.name}", "tail": tail})
    for env in envs:
        for fw in env.frameworks:
            mine = version(m, env, fw)
            for (gfw, gversion), path in goldens.items():
                if gfw == fw or (fw, mine) in {(p.get("host_framework"), p.get("host_version"))
                                               for p in m.results["pairs"] if p.get("golden") == path.name}:
                    continue
                out = m.root / "reports" / f"compare-{fw}-{mine}-vs-{path.stem}.json"
                code, seconds, tail = m.run(env, ["-m", "parity.check", "compare", path, "--framework", fw,
                                                  "--no-progress", "--json", out], out.stem)
                torch_v, ms_v = (mine, gversion) if fw == "torch" else (gversion, mine)
                row = {"torch": torch_v, "mindspore": ms_v, "how": f"compare on the {fw} host ({env.name}), golden "
                       f"recorded by {gfw}", "host_framework": fw, "host_version": mine, "golden": path.name,
                       "exit_code": code, "seconds": seconds}
                row.update(summary(json.loads(out.read_text())) if out.exists() else {"passed": False, "tail": tail})
                m.results["pairs"].append(row)


def in_process(m: Matrix, env: Env) -> None:
    out = m.root / "reports" / f"check-{env.name}.json"
    code, seconds, tail = m.run(env, ["-m", "parity.check", "--no-progress", "--json", out], f"check-{env.name}")
    row = {"torch": version(m, env, "torch"), "mindspore": version(m, env, "ms"), "exit_code": code,
           "seconds": seconds, "how": f"parity.check in one process ({env.name})"}
    row.update(summary(json.loads(out.read_text())) if out.exists() else {"passed": False, "tail": tail})
    m.results["check"][env.name] = row


def suite(m: Matrix, env: Env) -> None:
    code, seconds, tail = m.run(env, ["-m", "pytest", "-q", "-p", "no:cacheprovider", *SUITE], f"suite-{env.name}")
    last = [ln for ln in tail.splitlines() if " passed" in ln or " failed" in ln or " error" in ln]
    m.results["suite"][env.name] = {"exit_code": code, "seconds": seconds, "summary": last[-1] if last else tail[-300:]}


def convert(m: Matrix, ms_env: Env, torch_env: Env) -> None:
    """The tutorial's own checkpoint, saved on the MindSpore host, converted on the PyTorch host."""
    ckpt, pt = m.root / "tutorial.ckpt", m.root / "tutorial.pt"
    for path in (ckpt, pt):
        if path.exists():
            path.chmod(0o600)
            path.unlink()
    save = ("import mindspore as ms\nfrom parity.tutorial_code import build_tutorial_unet\n"
            f"ms.save_checkpoint(build_tutorial_unet(), {str(ckpt)!r})")
    code_save, _, _ = m.run(ms_env, ["-c", save], "tutorial-ckpt")
    code_conv, seconds, tail = m.run(torch_env, ["-m", "parity.convert", ckpt, pt, "--manifest",
                                                 m.root / "manifest-host.json"], "convert-on-torch-host")
    same = None
    if code_conv == 0:
        reference = m.root / "manifest-current.json"
        m.run(CURRENT, ["-m", "parity.convert", ckpt, "--manifest", reference], "convert-current")
        same = json.loads((m.root / "manifest-host.json").read_text()) == json.loads(reference.read_text())
    m.results["convert"] = {"saved_by": f"MindSpore {version(m, ms_env, 'ms')} ({ms_env.name})",
                            "converted_by": f"torch {version(m, torch_env, 'torch')} ({torch_env.name})",
                            "exit_codes": [code_save, code_conv], "manifest_equals_current": same}


def markdown(results: dict) -> str:
    lines = ["| torch | MindSpore | how | result | worst use of atol (row) | prediction max abs | "
             "DDPM trajectory max abs |", "|---|---|---|---|---|---|---|"]
    rows = [*results["check"].values(), *[p for p in results["pairs"] if "torch" in p]]
    for r in sorted(rows, key=lambda r: (r["torch"], r["mindspore"], r["how"])):
        verdict = "pass" if r.get("passed") else f"FAIL {r.get('failed') or r.get('tail', '')[-200:]}"
        fmt = lambda v: "-" if v is None else f"{v:.1e}"  # noqa: E731
        lines.append(f"| {r['torch']} | {r['mindspore']} | {r['how']} | {verdict} | "
                     f"{r.get('worst_atol_used', 0):.2f} ({r.get('worst_row', '')}) | "
                     f"{fmt(r.get('prediction_max_abs'))} | {fmt(r.get('trajectory_max_abs'))} |")
    lines += ["", "| environment | extras | torch | torchvision | MindSpore | numpy | protobuf | install | size |",
              "|---|---|---|---|---|---|---|---|---|"]
    for name, e in results["envs"].items():
        v = e["versions"]
        lines.append(f"| {name} ({e['role']}) | {e['extras'] or '-'} | {v['torch'] or 'absent'} | "
                     f"{v['torchvision'] or 'absent'} | {v['mindspore'] or 'absent'} | {v['numpy']} | {v['protobuf']} | "
                     f"{e.get('install_s', '-')} s | {e.get('size_mb', '-')} MiB |")
    lines += ["", "| environment | suite subset |", "|---|---|"]
    lines += [f"| {name} | {s['summary']} ({s['seconds']} s) |" for name, s in results["suite"].items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", type=Path, default=REPO / "build" / "version-matrix",
                   help="virtual environments, logs, goldens and results.json (default build/version-matrix)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--skip-install", action="store_true", help="reuse the environments of an earlier run")
    g.add_argument("--install-only", action="store_true", help="only (re)create the environments")
    args = p.parse_args(argv)
    m = Matrix(args.root)
    for sub in ("logs", "goldens", "reports", "venvs"):
        (m.root / sub).mkdir(parents=True, exist_ok=True)
    for env in ENVS:
        if not args.skip_install:
            install(m, env)
    if args.install_only:
        (m.root / "install.json").write_text(json.dumps(m.results["envs"], indent=1))
        return 0
    if args.skip_install and (m.root / "install.json").exists():
        m.results["envs"] = json.loads((m.root / "install.json").read_text())
    for env in (*ENVS, CURRENT):
        describe(m, env)
    convert(m, ENVS[1], ENVS[0])
    pairs(m, [ENVS[0], ENVS[1], CURRENT])
    for env in (ENVS[2], CURRENT):
        in_process(m, env)
    suite(m, ENVS[2])
    (m.root / "results.json").write_text(json.dumps(m.results, indent=1, default=str))
    print(markdown(m.results))
    ok = (all(r.get("passed") for r in [*m.results["pairs"], *m.results["check"].values()])
          and all(s["exit_code"] == 0 for s in m.results["suite"].values()) and m.results["convert"]["manifest_equals_current"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
