"""Golden files for cross-machine parity: one framework's outputs, the tape and the initial weights in
one ``.npz``, with a JSON manifest (spec, framework, digests, environment, the recording host's float32
rounding) inside it.

Rules:
  * a golden file is self-contained (the comparing machine needs neither the recording framework nor the
    recording numpy's random streams: the tape and the weights travel in the file) and written atomically;
  * the tape, the weights and (from v2 on) the outputs are each covered by a sha256 in the manifest, checked
    on every read; a v1 file (no output digest) is still read, and ``Golden.notes`` says its outputs carry none;
  * the members are exactly what the recorded spec implies (``parity.engine.suite.implied_outputs``, the
    tape's and the model's shapes): a missing one, an unknown one, a wrong shape or dtype is refused;
  * nothing is read before it is known to be small: the manifest at most ``MANIFEST_MAX_BYTES``; every
    other member only after its ``.npy`` header (read alone) declares the shape the spec implies and a size
    equal to the zip entry's, which is bounded by the file's size (an entry stored deflated may hold at most
    ``INFLATE_LIMIT`` times its stored bytes). An unknown member is refused by its name, never inflated;
  * any problem is a ``GoldenError``: one line naming the file and the field or member, exit code 2.

Two kinds share the container and every rule above: ``parity.check``'s (the U-Net, members implied by its
``RunSpec``) and ``parity.pair``'s (manifest ``"kind": "pair"``: any model; its manifest declares every member's
shape and dtype under ``pair.members``, and those are what the file must hold). A reader asks for one kind and
refuses the other by name.
"""
from __future__ import annotations

import json
import math
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from numpy.lib import format as npy

from ddpm_core.config import DiffusionConfig, UnetConfig
from ddpm_core.errors import UserError
from ddpm_core.runtime.atomic import atomic_write, write_npz
from ddpm_core.weights.naming import unet_parameters
from parity.engine.initial import weights_hash
from parity.engine.suite import RunSpec, implied_outputs
from parity.engine.tape import TapeSpec, tape_hash, tape_shapes

FORMAT = "ddpm-parity golden v2"
FORMAT_V1 = "ddpm-parity golden v1"
"""Recorded before the outputs had a digest: read, compared, and reported as such."""
FRAMEWORKS = ("torch", "ms")
MANIFEST_MAX_BYTES = 1 << 20
"""The manifest's declared maximum (a real one is ~2 KB)."""
INFLATE_LIMIT = 4
"""A deflated member may hold at most this many times its stored bytes (float data deflates ~1.1x; ours are
written stored, np.savez), so reading a golden file never holds much more than its size."""
_SECTIONS = ("out/", "tape/", "init/")
_FIELDS = ("format", "framework", "spec", "tape_sha256", "weights_sha256", "outputs_sha256", "environment",
           "timings_s", "rounding")
_PAIR_FIELDS = ("format", "kind", "framework", "pair", "tape_sha256", "weights_sha256", "outputs_sha256",
                "environment")
KINDS = {"ddpm": "python -m parity.check compare", "pair": "python -m parity.pair SPEC.py --compare"}
"""A golden file's kind -> the command that compares it."""
_SPEC_FIELDS = ("unet", "diffusion", "tape", "checks", "ddim_etas", "loss_types", "lrs")
_FLOATS = (np.dtype("<f4"), np.dtype("<f8"))


class GoldenError(UserError, ValueError):
    """A golden file that cannot be used: unreadable, inconsistent, or for another comparison."""


@dataclass
class Golden:
    manifest: dict[str, Any]
    outputs: dict[str, np.ndarray]
    tape: dict[str, np.ndarray]
    weights: dict[str, np.ndarray]
    run_spec: RunSpec | None = None
    notes: list[str] = field(default_factory=list)
    """what a report on this file must say (a v1 file's outputs carry no digest)"""

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
        return self.run_spec if self.run_spec is not None else _spec(Path("golden"), self.manifest["spec"])


def save_golden(path: str | Path, framework: str, spec: RunSpec, tape: Mapping[str, np.ndarray],
                weights: Mapping[str, np.ndarray], outputs: Mapping[str, np.ndarray], environment: dict,
                extra: dict | None = None) -> dict:
    """Write the golden file atomically; return its manifest. ``extra`` adds manifest fields (``timings_s``,
    ``rounding``)."""
    manifest = {"format": FORMAT, "framework": framework, "spec": spec.to_dict(), "tape_sha256": tape_hash(tape),
                "weights_sha256": weights_hash(weights), "outputs_sha256": weights_hash(outputs),
                "environment": environment, **(extra or {})}
    _write(path, manifest, outputs, tape, weights)
    return manifest


def save_pair_golden(path: str | Path, pair: dict, inputs: Mapping[str, np.ndarray], weights: Mapping[str, np.ndarray],
                     outputs: Mapping[str, np.ndarray], environment: dict) -> dict:
    """Write a ``parity.pair`` golden file atomically (PyTorch's side of a pair: ``inputs`` in the tape section,
    ``weights``, ``outputs``); ``pair`` is what the pair needs to rebuild its records, to which the members'
    declared shapes and dtypes are added. Returns the manifest."""
    sections = {"out/": outputs, "tape/": inputs, "init/": weights}
    members = {f"{p}{k}": [list(np.shape(v)), np.asarray(v).dtype.newbyteorder("<").str] for p, d in sections.items()
               for k, v in d.items()}
    manifest = {"format": FORMAT, "kind": "pair", "framework": "torch", "pair": {**pair, "members": members},
                "tape_sha256": tape_hash(inputs), "weights_sha256": weights_hash(weights),
                "outputs_sha256": weights_hash(outputs), "environment": environment}
    _write(path, manifest, outputs, inputs, weights)
    return manifest


def _write(path: str | Path, manifest: dict, outputs: Mapping[str, np.ndarray], tape: Mapping[str, np.ndarray],
           weights: Mapping[str, np.ndarray]) -> None:
    arrays = {f"out/{k}": np.asarray(v) for k, v in outputs.items()}
    arrays.update({f"tape/{k}": np.asarray(v) for k, v in tape.items()})
    arrays.update({f"init/{k}": np.asarray(v) for k, v in weights.items()})
    arrays["manifest"] = np.frombuffer(json.dumps(manifest, sort_keys=True, default=str).encode(), dtype=np.uint8)
    atomic_write(path, lambda tmp: write_npz(tmp, arrays))


def load_golden(path: str | Path, kind: str = "ddpm") -> Golden:
    """Read and verify a golden file of ``kind`` ("ddpm": parity.check's, "pair": parity.pair's; ``GoldenError``
    naming the file and the problem, or the other kind and its command)."""
    path = Path(path)
    if not path.is_file():
        raise GoldenError(f"cannot read golden file {path}: {'no such file' if not path.exists() else 'not a file'}")
    try:
        with zipfile.ZipFile(path) as zf:
            return _read(path, zf, path.stat().st_size, kind)
    except GoldenError:
        raise
    except (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error, NotImplementedError, RuntimeError) as e:
        text = str(e).splitlines()[0] if str(e) else ""
        raise GoldenError(f"cannot read golden file {path}: {type(e).__name__}: {text}") from None


def _bytes(n: int) -> str:
    for unit, size in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} bytes"


def _entries(path: Path, zf: zipfile.ZipFile, size: int) -> dict[str, zipfile.ZipInfo]:
    """``{member key: zip entry}`` after checking every entry's name and sizes, reading nothing."""
    entries: dict[str, zipfile.ZipInfo] = {}
    for info in zf.infolist():
        key = info.filename[:-4] if info.filename.endswith(".npy") else None
        if key is None or (key != "manifest" and not key.startswith(_SECTIONS)):
            raise GoldenError(f"{path}: unknown member {info.filename!r} (a golden file holds manifest.npy and out/, "
                              "tape/, init/ members); refused unread")
        if key in entries:
            raise GoldenError(f"{path}: member {info.filename!r} appears twice")
        if info.flag_bits & 1:
            raise GoldenError(f"{path}: member {info.filename!r} is encrypted")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise GoldenError(f"{path}: member {info.filename!r} uses zip compression method {info.compress_type}; "
                              "golden files are stored (np.savez) or deflated")
        limit = info.compress_size * (1 if info.compress_type == zipfile.ZIP_STORED else INFLATE_LIMIT) + 1024
        if info.compress_size > size or info.file_size > limit:
            raise GoldenError(f"{path}: member {info.filename!r} declares {_bytes(info.file_size)} from "
                              f"{_bytes(info.compress_size)} stored, in a file of {_bytes(size)}; refused unread")
        entries[key] = info
    return entries


@dataclass(frozen=True)
class _Header:
    shape: tuple[int, ...]
    dtype: np.dtype
    fortran: bool
    offset: int

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


def _header(path: Path, zf: zipfile.ZipFile, key: str, info: zipfile.ZipInfo) -> _Header:
    """The member's ``.npy`` header, read alone, and checked against the entry's size."""
    try:
        with zf.open(info) as f:
            version = npy.read_magic(f)
            read = npy.read_array_header_1_0 if version == (1, 0) else npy.read_array_header_2_0
            shape, fortran, dtype = read(f)
            offset = f.tell()
    except (ValueError, TypeError, SyntaxError, EOFError, OverflowError) as e:
        raise GoldenError(f"{path}: member {key}: not a readable .npy header ({str(e).splitlines()[0][:120]})") from None
    if dtype.hasobject or dtype.fields is not None or dtype.kind not in "fiu" or any(d < 0 for d in shape):
        raise GoldenError(f"{path}: member {key}: header declares dtype {dtype} shape {shape}, not a numeric array")
    h = _Header(tuple(int(d) for d in shape), dtype, bool(fortran), offset)
    if h.offset + h.nbytes != info.file_size:
        raise GoldenError(f"{path}: member {key}: its header declares shape {h.shape} {dtype} ({_bytes(h.nbytes)}), "
                          f"but the member holds {_bytes(max(0, info.file_size - h.offset))}")
    return h


def _data(path: Path, zf: zipfile.ZipFile, key: str, info: zipfile.ZipInfo, h: _Header) -> np.ndarray:
    """The member's array (writable), read in bounded chunks; the zip CRC-32 is checked at its end."""
    buf = bytearray(h.nbytes)
    with zf.open(info) as f:
        f.read(h.offset)
        pos = 0
        while pos < h.nbytes:
            chunk = f.read(min(1 << 20, h.nbytes - pos))
            if not chunk:
                raise GoldenError(f"{path}: member {key} ends early")
            buf[pos:pos + len(chunk)] = chunk
            pos += len(chunk)
        f.read(1)  # reaching the end checks the CRC-32
    a = np.frombuffer(buf, dtype=h.dtype)
    return a.reshape(h.shape[::-1]).T if h.fortran else a.reshape(h.shape)


def _manifest(path: Path, zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> Any:
    if info.file_size > MANIFEST_MAX_BYTES:
        raise GoldenError(f"{path}: the manifest declares {_bytes(info.file_size)}, more than the "
                          f"{_bytes(MANIFEST_MAX_BYTES)} a manifest may hold; refused unread")
    h = _header(path, zf, "manifest", info)
    if h.dtype != np.uint8 or len(h.shape) != 1:
        raise GoldenError(f"{path}: the manifest is {h.dtype} {h.shape}, expected uint8 bytes of JSON")
    try:
        return json.loads(bytes(_data(path, zf, "manifest", info, h)).decode())
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise GoldenError(f"{path}: the manifest is not valid JSON ({type(e).__name__}: {str(e)[:120]})") from None


def _fail(path: Path, name: str, problem: str) -> GoldenError:
    return GoldenError(f"{path}: manifest field {name!r} {problem}")


def _is_hex(v: Any) -> bool:
    return isinstance(v, str) and len(v) == 64 and all(c in "0123456789abcdef" for c in v)


def _spec(path: Path, s: Any, size: int | None = None) -> RunSpec:
    """The recorded ``RunSpec``, every field checked (``GoldenError`` naming it); with the file's ``size``, a tape
    whose noise could not fit in it is refused before anything is built from it."""
    if not isinstance(s, dict):
        raise _fail(path, "spec", f"is {type(s).__name__}, expected an object")
    for name in s:
        if name not in _SPEC_FIELDS:
            raise _fail(path, f"spec.{name}", "is not a spec field")
    for name, kind in (("unet", dict), ("diffusion", dict), ("tape", dict), ("checks", list), ("ddim_etas", list),
                       ("loss_types", list)):
        if not isinstance(s.get(name), kind):
            raise _fail(path, f"spec.{name}", "is missing" if name not in s else
                        f"is {type(s[name]).__name__}, expected {'an object' if kind is dict else 'a list'}")
    for name in ("checks", "loss_types"):
        if not all(isinstance(v, str) for v in s[name]):
            raise _fail(path, f"spec.{name}", "must list strings")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in s["ddim_etas"]):
        raise _fail(path, "spec.ddim_etas", "must list finite numbers")
    tape = dict(s["tape"])
    if "adam_steps" in tape:  # recorded before adam_steps was renamed train_steps: the same K
        tape["train_steps"] = tape.pop("adam_steps")
    if isinstance(tape.get("pred_timesteps"), list):
        tape["pred_timesteps"] = tuple(tape["pred_timesteps"])
    dims: list[Any] = [tape.get(k) for k in ("timesteps", "ddim_steps", "batch", "channels", "image_size")]
    if size is not None and all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in dims):
        need = 4 * max(dims[0], dims[1]) * dims[2] * dims[3] * dims[4] ** 2  # the sampling noise, float32
        if need > size:
            raise _fail(path, "spec.tape", f"implies {_bytes(need)} of sampling noise, more than the file's "
                        f"{_bytes(size)}")
    parts: dict[str, Any] = {}
    for name, build in (("unet", lambda: UnetConfig.from_dict(s["unet"])),
                        ("diffusion", lambda: DiffusionConfig.from_dict(s["diffusion"])),
                        ("tape", lambda: TapeSpec(**tape))):
        try:
            parts[name] = build()
        except (TypeError, ValueError, OverflowError) as e:
            raise _fail(path, f"spec.{name}", f"is not usable: {str(e).splitlines()[0]}") from None
    try:
        return RunSpec(parts["unet"], parts["diffusion"], parts["tape"], tuple(s["checks"]),
                       tuple(float(e) for e in s["ddim_etas"]), tuple(s["loss_types"]))
    except (TypeError, ValueError) as e:
        raise _fail(path, "spec", f"is not usable: {str(e).splitlines()[0]}") from None


def _check_manifest(path: Path, m: Any, size: int) -> RunSpec:
    """The manifest's fields checked one by one; the recorded spec."""
    if not isinstance(m, dict):
        raise GoldenError(f"{path}: the manifest is a JSON {type(m).__name__}, expected an object")
    if m.get("format") not in (FORMAT, FORMAT_V1):
        raise _fail(path, "format", f"is {m.get('format')!r}, expected {FORMAT!r} (or {FORMAT_V1!r})")
    for name in m:
        if name not in _FIELDS:
            raise _fail(path, name, "is not a golden manifest field")
    if "framework" not in m:
        raise _fail(path, "framework", "is missing")
    if m["framework"] not in FRAMEWORKS:
        raise _fail(path, "framework", f"is {m['framework']!r}, expected 'torch' or 'ms'")
    digests = ("tape_sha256", "weights_sha256") + (("outputs_sha256",) if m["format"] == FORMAT else ())
    for name in digests:
        if not _is_hex(m.get(name)):
            raise _fail(path, name, "is missing" if name not in m else "is not a sha256 (64 hex digits)")
    if not isinstance(m.get("environment", {}), dict):
        raise _fail(path, "environment", "is not an object")
    r = m.get("rounding")
    if r is not None and not (isinstance(r, dict) and all(
            isinstance(r.get(k), (int, float)) and not isinstance(r.get(k), bool) and math.isfinite(r[k]) and r[k] >= 0
            for k in ("max_abs", "rel_l2"))):
        raise _fail(path, "rounding", "must be null or hold finite, non-negative max_abs and rel_l2")
    return _spec(path, m.get("spec"), size)


def _expect(path: Path, key: str, h: _Header, shape: tuple[int, ...], dtypes: tuple[np.dtype, ...],
            spec: RunSpec) -> None:
    if h.shape != tuple(shape):
        raise GoldenError(f"{path}: member {key} has shape {h.shape}; the recorded spec ({spec.unet.short()}, "
                          f"batch {spec.tape.batch}, {spec.tape.image_size}x{spec.tape.image_size}) implies "
                          f"{tuple(shape)}")
    if h.dtype not in dtypes:
        raise GoldenError(f"{path}: member {key} is {h.dtype}, expected {' or '.join(str(d) for d in dtypes)}")


def _check_pair_manifest(path: Path, m: dict, size: int) -> dict[str, tuple[tuple[int, ...], tuple[np.dtype, ...]]]:
    """A parity.pair manifest's fields checked one by one; the members it declares (shape, dtype), whose total
    size must fit in the file."""
    if not isinstance(m, dict):
        raise GoldenError(f"{path}: the manifest is a JSON {type(m).__name__}, expected an object")
    if m.get("format") != FORMAT:
        raise _fail(path, "format", f"is {m.get('format')!r}, expected {FORMAT!r}")
    for name in m:
        if name not in _PAIR_FIELDS:
            raise _fail(path, name, "is not a field of a parity.pair golden manifest")
    if m.get("framework") != "torch":
        raise _fail(path, "framework", f"is {m.get('framework')!r}; a pair's golden file holds its PyTorch side")
    for name in ("tape_sha256", "weights_sha256", "outputs_sha256"):
        if not _is_hex(m.get(name)):
            raise _fail(path, name, "is missing" if name not in m else "is not a sha256 (64 hex digits)")
    if not isinstance(m.get("environment", {}), dict):
        raise _fail(path, "environment", "is not an object")
    members = m.get("pair", {}).get("members") if isinstance(m.get("pair"), dict) else None
    if not isinstance(members, dict):
        raise _fail(path, "pair.members", "is missing or not an object")
    expected: dict[str, tuple[tuple[int, ...], tuple[np.dtype, ...]]] = {}
    total = 0
    for key, declared in members.items():
        try:
            shape, dtype = tuple(int(d) for d in declared[0]), np.dtype(declared[1])
            ok = key.startswith(_SECTIONS) and len(declared) == 2 and all(d >= 0 for d in shape) and \
                dtype.kind in "fiu" and not dtype.hasobject and all(isinstance(d, int) for d in declared[0])
        except (TypeError, ValueError, IndexError, KeyError):
            ok = False
        if not ok:
            raise _fail(path, f"pair.members[{key!r}]", f"is {declared!r}, expected [shape, numeric dtype] of an "
                        "out/, tape/ or init/ member")
        expected[key] = (shape, (dtype,))
        total += math.prod(shape) * dtype.itemsize
    if total > size:
        raise _fail(path, "pair.members", f"declare {_bytes(total)}, more than the file's {_bytes(size)}")
    return expected


def _read(path: Path, zf: zipfile.ZipFile, size: int, kind: str = "ddpm") -> Golden:
    entries = _entries(path, zf, size)
    if "manifest" not in entries:
        raise GoldenError(f"{path} is not a parity golden file (no manifest)")
    manifest = _manifest(path, zf, entries["manifest"])
    found = manifest.get("kind", "ddpm") if isinstance(manifest, dict) else kind
    if found != kind:
        raise GoldenError(f"{path} is a {'parity.pair' if found == 'pair' else 'parity.check'} golden file"
                          + (f"; compare it with {KINDS[found]}" if found in KINDS else f" of unknown kind {found!r}"))
    if kind == "pair":
        declared = _check_pair_manifest(path, manifest, size)
        return _members(path, zf, entries, manifest, declared, None, "the recorded pair (manifest pair.members)")
    spec = _check_manifest(path, manifest, size)
    expected: dict[str, tuple[tuple[int, ...], tuple[np.dtype, ...]]] = {
        f"tape/{k}": (s, (np.dtype(d).newbyteorder("<"),)) for k, (s, d) in tape_shapes(spec.tape).items()}
    expected.update({f"init/{p.torch_name}": (tuple(p.shape), _FLOATS) for p in unet_parameters(spec.unet)})
    if "tape/pred_t" not in entries:
        raise GoldenError(f"{path}: member tape/pred_t.npy is missing")
    h = _header(path, zf, "tape/pred_t", entries["tape/pred_t"])
    _expect(path, "tape/pred_t", h, *expected["tape/pred_t"], spec)
    pred_t = _data(path, zf, "tape/pred_t", entries["tape/pred_t"], h)  # the prediction outputs' names
    outputs = implied_outputs(spec, manifest["framework"], [int(t) for t in pred_t])
    expected.update({f"out/{k}": (s, _FLOATS) for k, s in outputs.items()})
    return _members(path, zf, entries, manifest, expected, spec, f"the recorded spec (checks {', '.join(spec.checks)})")


def _members(path: Path, zf: zipfile.ZipFile, entries: dict[str, zipfile.ZipInfo], manifest: dict,
             expected: dict[str, tuple[tuple[int, ...], tuple[np.dtype, ...]]], spec: RunSpec | None,
             source: str) -> Golden:
    """Exactly the ``expected`` members (``source`` says what implies them), each header checked before its data
    is read, then every section against its digest."""
    unknown = sorted(set(entries) - set(expected) - {"manifest"})
    if unknown:  # refused by name: nothing of it is read
        raise GoldenError(f"{path}: unknown member {unknown[0]}.npy" + (f" (and {len(unknown) - 1} more)" if len(unknown) > 1
                          else "") + f": {source} does not imply it")
    missing = [k for k in expected if k not in entries]
    if missing:
        raise GoldenError(f"{path}: member {missing[0]}.npy is missing" + (f" (and {len(missing) - 1} more)" if
                          len(missing) > 1 else "") + f"; {source} implies it")
    headers = {key: _header(path, zf, key, entries[key]) for key in expected}
    for key, h in headers.items():
        if spec is not None:
            _expect(path, key, h, *expected[key], spec)
        elif h.shape != expected[key][0] or h.dtype not in expected[key][1]:
            raise GoldenError(f"{path}: member {key} is {h.dtype} {h.shape}; {source} declares "
                              f"{expected[key][1][0]} {expected[key][0]}")
    data = {key: _data(path, zf, key, entries[key], h) for key, h in headers.items()}
    out, tape, init = ({k[len(p):]: v for k, v in data.items() if k.startswith(p)} for p in _SECTIONS)
    g = Golden(manifest, out, tape, init, run_spec=spec)
    for name, what, section, digest in (("tape_sha256", "tape", g.tape, tape_hash),
                                        ("weights_sha256", "weights", g.weights, weights_hash),
                                        ("outputs_sha256", "outputs", g.outputs, weights_hash)):
        if name in manifest and digest(section) != manifest[name]:
            raise GoldenError(f"{path}: the stored {what} {'does' if what == 'tape' else 'do'} not match manifest field "
                              f"{name!r} (file damaged or edited?)")
    if manifest["format"] == FORMAT_V1:
        g.notes.append(f"{path.name} is a golden v1 file: its outputs carry no digest (only the zip's CRC-32 "
                       "guards them)")
    return g
