"""A Fashion-MNIST mirror on 127.0.0.1 for the ``--download`` tests, which have no internet: small synthetic
``.gz`` files served by the standard library's HTTP server in a thread, and the ``(name, md5)`` list that
torchvision must then expect (its real MD5s stay in place for users; only the tests swap them).

    python tests/train/mirror.py URL RESOURCES_JSON MODULE ARGS...

runs ``python -m MODULE ARGS`` with ``FashionMNIST.mirrors = [URL]`` and ``FashionMNIST.resources`` from
RESOURCES_JSON, so the command line under test downloads from the local server through torchvision's code.
"""
from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import http.server
import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Iterator

import numpy as np

REPO = Path(__file__).resolve().parents[2]
NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def idx_bytes(array: np.ndarray) -> bytes:
    array = np.asarray(array, dtype=np.uint8)
    return (bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
            + array.tobytes())


def make_files(folder: Path, train: int = 12, test: int = 4, seed: int = 0) -> list[tuple[str, str]]:
    """The four ``.gz`` files in ``folder`` (image ``i`` of the training split has pixel (0, 0) = ``i``);
    returns their ``(name, md5)`` in torchvision's order."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    resources = []
    for name, n in zip(NAMES, (train, train, test, test)):
        if "images" in name:
            array = rng.integers(0, 256, (n, 28, 28))
            array[:, 0, 0] = np.arange(n)
        else:
            array = np.arange(n) % 10
        data = gzip.compress(idx_bytes(array), mtime=0)
        (folder / f"{name}.gz").write_bytes(data)
        resources.append((f"{name}.gz", hashlib.md5(data).hexdigest()))
    return resources


class _Quiet(http.server.SimpleHTTPRequestHandler):
    requests: list[str]

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.requests.append(self.path)
        super().do_GET()


@contextlib.contextmanager
def serve(folder: Path) -> Iterator[tuple[str, list[str]]]:
    """``(base URL ending in /, the GET paths served so far)`` for ``folder`` on 127.0.0.1, for the block."""
    handler = type("Handler", (_Quiet,), {"requests": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                             functools.partial(handler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", handler.requests
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def run(url: str, resources: list, module: str, args: list, env: dict | None = None,
        timeout: float = 240) -> subprocess.CompletedProcess:
    """``python -m module args`` downloading from ``url`` (see the module docstring)."""
    full = {**os.environ, **(env or {}), "no_proxy": "127.0.0.1", "NO_PROXY": "127.0.0.1"}
    full["PYTHONPATH"] = str(REPO) + os.pathsep + full.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, __file__, url, json.dumps(resources), module, *map(str, args)],
                          cwd=REPO, env=full, capture_output=True, text=True, timeout=timeout)


if __name__ == "__main__":
    import runpy

    from torchvision.datasets import FashionMNIST

    FashionMNIST.mirrors = [sys.argv[1]]
    FashionMNIST.resources = [tuple(r) for r in json.loads(sys.argv[2])]
    sys.path.remove(str(Path(__file__).resolve().parent))
    sys.argv = sys.argv[3:]
    runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
