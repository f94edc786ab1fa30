"""The PyTorch side in a process of its own, so that the two frameworks' CPU work overlaps on two
cores without sharing one interpreter lock (in threads they slowed each other down more than they
gained).

Rules: the worker rebuilds the PyTorch twin from its ``UnetConfig`` and the PyTorch-named weights it
is sent, replays the same tape (rebuilt from the spec and checked against the parent's hash) and runs
exactly what the parent would run in its place, ``parity.engine.suite.run_follower`` (its outputs, the float64
anchor while MindSpore samples, then the steps from MindSpore's outputs once they arrive). Only numpy arrays
and plain data cross the pipe. Use it for unmodified ``ddpm_torch.Unet`` models (the CLI's case); a model
changed in the parent (a patched module, a planted bug) must run in the parent, which ``check_models`` does.
"""
from __future__ import annotations

import multiprocessing as mp
import traceback
from typing import Any, Mapping

import numpy as np

from parity.engine.suite import RunSpec


def _serve(conn: Any, leads: Any, spec: RunSpec, weights: dict, tape_sha256: str, device: str,
           threads: int, compiled: bool) -> None:
    try:
        from parity.engine.anchor import wants_anchor
        from parity.engine.suite import run_follower
        from parity.engine.tape import make_tape, tape_hash
        from parity.env import setup_torch
        from parity.sides.anchor import float64_anchor
        from parity.sides.torch import TorchSide

        setup_torch(device, threads)
        side = TorchSide(device, compiled=compiled)
        model = side.load_model(weights, spec.unet)
        tape = make_tape(spec.tape)
        if tape_hash(tape) != tape_sha256:
            raise RuntimeError("the worker's tape differs from the parent's")
        timings: dict[str, float] = {}
        anchor = (lambda: float64_anchor(weights, spec, side, model)) if wants_anchor(spec) else None
        result = run_follower(side, model, side.diffusion(spec.diffusion), tape, spec, anchor, leads.get, timings)
        conn.send(("result", result, timings))
    except BaseException as e:  # noqa: BLE001 - reported to the parent, which raises
        conn.send(("error", f"{type(e).__name__}: {e}", traceback.format_exc()))
    finally:
        conn.close()


class TorchWorker:
    """Starts the PyTorch side at once; ``send_lead`` never blocks; ``result()`` waits for (outputs, the
    outputs followed from MindSpore's, the float64 anchor's outputs or {})."""

    def __init__(self, spec: RunSpec, weights: Mapping[str, np.ndarray], tape_sha256: str, device: str = "cpu",
                 threads: int = 1, compiled: bool = True):
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe(duplex=False)
        self._leads = ctx.Queue()
        self._proc = ctx.Process(target=_serve, args=(child, self._leads, spec, dict(weights), tape_sha256,
                                                      device, threads, compiled), name="parity-torch", daemon=True)
        self._proc.start()
        child.close()
        self.timings: dict[str, float] = {}
        self.sent = False
        self._done = False

    def send_lead(self, outputs: Mapping[str, np.ndarray] | None) -> None:
        """MindSpore's outputs the PyTorch side follows (None: there will be none)."""
        self.sent = True
        self._leads.put(outputs)  # a feeder thread writes it: MindSpore goes on meanwhile

    def result(self) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict]:
        try:
            kind, value, extra = self._conn.recv()
        except EOFError:
            raise RuntimeError(f"the PyTorch worker process died (exit code {self._proc.exitcode})") from None
        if kind == "error":
            raise RuntimeError(f"the PyTorch worker process failed: {value}\n{extra}")
        self.timings.update(extra)
        self._done = True
        return value

    def close(self) -> None:
        """Wait briefly for a worker that delivered its result; stop one that did not (the parent failed)."""
        self._conn.close()
        self._proc.join(timeout=10 if self._done else 0)
        if self._proc.is_alive():
            self._proc.terminate()
            self._proc.join(timeout=10)
        self._leads.close()
        self._leads.cancel_join_thread()
