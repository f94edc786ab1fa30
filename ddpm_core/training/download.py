"""``train --download``: Fashion-MNIST fetched and verified by torchvision's own ``FashionMNIST(download=True)``
(its mirrors, its MD5s, its gzip extraction) into a folder both twins then read.

Rules it keeps:
  * The folder gets torchvision's layout, ``ROOT/FashionMNIST/raw/`` with the four ``.gz`` files and their
    extracted IDX files, which ``ddpm_core.training.datasets`` reads for either twin.
  * An existing complete copy (every IDX file valid, every ``.gz`` present matching torchvision's MD5) is used
    as it is, without the network.
  * A download goes to a private temporary folder beside the destination first; only files that are complete,
    MD5-verified and valid IDX are moved into place (``os.replace``), and only where no file exists yet. A
    failed or corrupt download is one ``DataError`` line, leaves no partial file and never touches an earlier
    copy. A file already there that is damaged is named, not removed.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from ddpm_core.training.datasets import DataError, read_idx_header

CACHE_ENV = "DDPM_PARITY_DATA"


def default_root() -> Path:
    """Where ``--download`` puts Fashion-MNIST without ``--data``: ``$DDPM_PARITY_DATA``, else
    ``~/.cache/ddpm-parity``, each with ``/fashion-mnist`` appended."""
    base = os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "ddpm-parity"
    return Path(base) / "fashion-mnist"


def _torchvision_dataset() -> type:
    from ddpm_core.runtime.frameworks import MissingFramework, require

    try:
        return require("torchvision.datasets").FashionMNIST
    except MissingFramework:
        raise DataError("--download uses torchvision's Fashion-MNIST downloader (its mirrors and MD5s), and "
                        "torchvision is not installed in this Python: pip install 'ddpm-parity[torch]' (or torchvision), "
                        "or download on another machine and pass --data DIR") from None


def _check_files(raw: Path, resources: list[tuple[str, str]]) -> list[str]:
    """Names of the files missing from ``raw``; ``DataError`` naming a file that is there but damaged."""
    from torchvision.datasets.utils import check_integrity

    missing = []
    for gz_name, md5 in resources:
        gz, plain = raw / gz_name, raw / gz_name.removesuffix(".gz")
        if gz.exists() and not check_integrity(str(gz), md5):
            raise DataError(f"{gz}: does not match torchvision's MD5 {md5} (left as it is: move it away and "
                            "download again)")
        if plain.exists():
            read_idx_header(plain, 3 if "images" in plain.name else 1)
        missing += [p.name for p in (gz, plain) if not p.exists()]
    return missing


def _flattened(e: BaseException) -> str:
    """The whole message of ``e`` on one line (its lines joined), at most 400 characters."""
    text = " ".join(line.strip() for line in str(e).splitlines() if line.strip())
    return (text or type(e).__name__)[:400]


def download_fashion_mnist(root: str | os.PathLike) -> Path:
    """Make ``root`` hold Fashion-MNIST in torchvision's layout, downloading what is missing through
    ``torchvision.datasets.FashionMNIST(download=True)``; return ``root``. ``DataError`` (one line) on failure."""
    FashionMNIST = _torchvision_dataset()
    root = Path(root)
    raw = root / "FashionMNIST" / "raw"
    resources = list(FashionMNIST.resources)
    missing = _check_files(raw, resources) if raw.is_dir() else ["all"]
    if not missing:
        return root
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".download-", dir=root))
    except OSError as e:
        raise DataError(f"{root}: cannot create the download folder ({e.strerror or e})") from None
    try:
        try:
            FashionMNIST(str(tmp), train=True, download=True)
        except Exception as e:  # noqa: BLE001 - urllib, gzip and torchvision raise many types for a bad download
            raise DataError(f"cannot download Fashion-MNIST into {root}: {_flattened(e)}; nothing was written there") from None
        fetched = tmp / "FashionMNIST" / "raw"
        try:
            _check_files(fetched, resources)
        except DataError as e:
            raise DataError(f"cannot download Fashion-MNIST into {root}: the download is not valid ({e}); "
                            "nothing was written there") from None
        raw.mkdir(parents=True, exist_ok=True)
        for gz_name, _ in resources:  # each .gz before its IDX file: a copy is complete once the IDX is there
            for name in (gz_name, gz_name.removesuffix(".gz")):
                if not (raw / name).exists():
                    os.replace(fetched / name, raw / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root
