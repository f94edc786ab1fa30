"""The PyTorch side in a process of its own, so that the two frameworks' CPU work overlaps on two
cores without sharing one interpreter lock (in threads they slowed each other down more than they
gained).

Rules: the worker rebuilds the PyTorch twin from its ``UnetConfig`` and the PyTorch-named weights it
is sent, replays the same tape (rebuilt from the spec and checked against the parent's hash) and runs
exactly ``parity.engine.suite.run_side``, then the float64 anchor (``parity.engine.anchor``) while MindSpore samples; then
it takes MindSpore's trajectory and returns the teacher-forced steps and the anchor's outputs. Only numpy arrays and plain data cross the pipe. Use it for unmodified ``ddpm_torch.Unet``
models (the CLI's case); a model changed in the parent (a patched module, a planted bug) must run in
the parent, which ``check_models`` does unless asked for a worker.
"""
from __future__ import annotations

import multiprocessing as mp
import traceback
from typing import Any

import numpy as np

from parity.engine.suite import RunSpec


def _serve(conn: Any, trajectories: Any, spec: RunSpec, weights: dict, tape_sha256: str, device: str,
           threads: int, compiled: bool) -> None:
    try:
        import time

        from parity.engine.anchor import Anchor, wants_anchor
        from parity.env import setup_torch
        from parity.sides.torch import TorchSide
        from parity.engine.suite import run_side, teacher_forced
        from parity.engine.tape import make_tape, tape_hash

        setup_torch(device, threads)
        side = TorchSide(device, compiled=compiled)
        model = side.load_model(weights, spec.unet)
        tape = make_tape(spec.tape)
        if tape_hash(tape) != tape_sha256:
            raise RuntimeError("the worker's tape differs from the parent's")
        diffusion = side.diffusion(spec.diffusion)
        timings: dict[str, float] = {}
        outputs = run_side(side, model, diffusion, tape, spec, timings)
        anchor = Anchor(model, weights, spec) if wants_anchor(spec) else None
        if anchor is not None:  # while MindSpore is still sampling
            anchor.before(tape)
        stepped = trajectory = None
        if "ddpm" in spec.checks:
            trajectory = trajectories.get()  # MindSpore's, as soon as it exists
            if trajectory is not None:
                t0 = time.perf_counter()
                stepped = teacher_forced(side, model, diffusion, tape, trajectory)
                timings["torch/teacher_forced"] = round(time.perf_counter() - t0, 3)
        if anchor is not None:
            anchor.after(tape, trajectory)
            timings.update(anchor.timings)
        conn.send(("result", (outputs, stepped, {} if anchor is None else anchor.outputs), timings))
    except BaseException as e:  # noqa: BLE001 - reported to the parent, which raises
        conn.send(("error", f"{type(e).__name__}: {e}", traceback.format_exc()))
    finally:
        conn.close()


class TorchWorker:
    """Starts the PyTorch side at once; ``send_trajectory`` never blocks; ``result()`` waits for
    (outputs, teacher-forced steps or None, the float64 anchor's outputs or {})."""

    def __init__(self, spec: RunSpec, weights: dict[str, np.ndarray], tape_sha256: str, device: str = "cpu",
                 threads: int = 1, compiled: bool = True):
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe(duplex=False)
        self._trajectories = ctx.Queue()
        self._proc = ctx.Process(target=_serve, args=(child, self._trajectories, spec, dict(weights), tape_sha256,
                                                      device, threads, compiled), name="parity-torch", daemon=True)
        self._proc.start()
        child.close()
        self.timings: dict[str, float] = {}
        self._done = False

    def send_trajectory(self, trajectory: np.ndarray | None) -> None:
        self._trajectories.put(trajectory)  # a feeder thread writes it: MindSpore goes on meanwhile

    def result(self) -> tuple[dict[str, np.ndarray], np.ndarray | None, dict]:
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
        self._trajectories.close()
        self._trajectories.cancel_join_thread()
