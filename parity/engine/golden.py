"""Golden files for cross-machine parity: one framework's outputs, the tape and the initial weights in
one ``.npz``, with a JSON manifest (spec, framework, hashes, environment) inside it.

Rules: a golden file is self-contained (the comparing machine needs neither the recording framework
nor the recording numpy's random streams: the tape and the weights travel in the file); it is written
atomically; reading it checks the manifest and recomputes the tape and weight hashes, and any
inconsistency is a ``GoldenError`` (a structural problem, exit code 2).
"""
from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ddpm_core.atomic import atomic_write, write_npz
from ddpm_core.config import DiffusionConfig, UnetConfig
from parity.engine.initial import weights_hash
from parity.engine.suite import RunSpec
from parity.engine.tape import TapeSpec, tape_hash

FORMAT = "ddpm-parity golden v1"
_SECTIONS = ("out/", "tape/", "init/")


class GoldenError(ValueError):
    """A golden file that cannot be used: unreadable, inconsistent, or for another comparison."""


@dataclass
class Golden:
    manifest: dict[str, Any]
    outputs: dict[str, np.ndarray]
    tape: dict[str, np.ndarray]
    weights: dict[str, np.ndarray]

    @property
    def framework(self) -> str:
        return self.manifest["framework"]

    def check_compared_with(self, framework: str) -> None:
        """``GoldenError`` unless ``framework`` is the other one (a file is compared with the framework it was
        not recorded with)."""
        if framework == self.framework:
            raise GoldenError(f"the golden file was recorded with {self.framework}; compare it with the other "
                              f"framework (--framework {'ms' if self.framework == 'torch' else 'torch'})")

    def spec(self) -> RunSpec:
        s = self.manifest["spec"]
        tape = dict(s["tape"])
        if "adam_steps" in tape:  # recorded before adam_steps was renamed train_steps: the same K
            tape["train_steps"] = tape.pop("adam_steps")
        tape["pred_timesteps"] = None if tape.get("pred_timesteps") is None else tuple(tape["pred_timesteps"])
        return RunSpec(UnetConfig.from_dict(s["unet"]), DiffusionConfig(**s["diffusion"]), TapeSpec(**tape),
                       tuple(s["checks"]), tuple(s["ddim_etas"]), tuple(s["loss_types"]))


def save_golden(path: str | Path, framework: str, spec: RunSpec, tape: Mapping[str, np.ndarray],
                weights: Mapping[str, np.ndarray], outputs: Mapping[str, np.ndarray], environment: dict,
                extra: dict | None = None) -> dict:
    """Write the golden file atomically; return its manifest."""
    manifest = {"format": FORMAT, "framework": framework, "spec": spec.to_dict(), "tape_sha256": tape_hash(tape),
                "weights_sha256": weights_hash(weights), "environment": environment, **(extra or {})}
    arrays = {f"out/{k}": np.asarray(v) for k, v in outputs.items()}
    arrays.update({f"tape/{k}": np.asarray(v) for k, v in tape.items()})
    arrays.update({f"init/{k}": np.asarray(v) for k, v in weights.items()})
    arrays["manifest"] = np.frombuffer(json.dumps(manifest, sort_keys=True, default=str).encode(), dtype=np.uint8)

    atomic_write(path, lambda tmp: write_npz(tmp, arrays))
    return manifest


def load_golden(path: str | Path) -> Golden:
    """Read and verify a golden file (``GoldenError`` naming the problem)."""
    path = Path(path)
    if not path.is_file():
        raise GoldenError(f"cannot read golden file {path}: {'no such file' if not path.exists() else 'not a file'}")
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: np.array(z[k]) for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise GoldenError(f"cannot read golden file {path}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
    if "manifest" not in data:
        raise GoldenError(f"{path} is not a parity golden file (no manifest)")
    try:
        manifest = json.loads(bytes(data.pop("manifest")).decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise GoldenError(f"{path}: the manifest is not valid JSON ({e})") from None
    if manifest.get("format") != FORMAT:
        raise GoldenError(f"{path}: format {manifest.get('format')!r}, expected {FORMAT!r}")
    g = Golden(manifest, *({k[len(p):]: v for k, v in data.items() if k.startswith(p)} for p in _SECTIONS))
    if tape_hash(g.tape) != manifest.get("tape_sha256"):
        raise GoldenError(f"{path}: the stored tape does not match its recorded sha256 (file damaged?)")
    if weights_hash(g.weights) != manifest.get("weights_sha256"):
        raise GoldenError(f"{path}: the stored weights do not match their recorded sha256 (file damaged?)")
    try:
        g.spec()
    except (KeyError, TypeError, ValueError) as e:
        raise GoldenError(f"{path}: the recorded spec is not usable ({e})") from None
    return g

