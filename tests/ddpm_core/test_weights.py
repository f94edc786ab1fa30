"""ddpm_core.weights (converter, extras, files): exact round trips between .pt, .ckpt and .safetensors,
strictness (one line per bad key), safety (no code runs, unreadable files are one clear error, atomic writes)
and training extras from real MindSpore and PyTorch training checkpoints."""
import dataclasses
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ddpm_core.config import TUTORIAL_UNET, DiffusionConfig, UnetConfig
from ddpm_core.errors import WeightsError
from ddpm_core.weights import formats
from ddpm_core.weights.converter import cast_weights, ms_to_torch, round_to_bfloat16, torch_to_ms, weight_problems
from ddpm_core.weights.files import load_weights, save_weights
from ddpm_core.weights.digest import tensor_digest
from ddpm_core.weights.extras import OPTIMIZER_SLOTS, describe_skipped
from ddpm_core.weights.integrity import manifest
from ddpm_core.weights.naming import unet_parameters
from tests.host import framework, needs

ROOT = Path(__file__).resolve().parents[2]

CONVNEXT = UnetConfig(dim=8, channels=3, dim_mults=(1, 2))
RESNET = UnetConfig(dim=16, channels=1, dim_mults=(1, 2), use_convnext=False, resnet_block_groups=4)
NO_TIME = UnetConfig(dim=8, channels=1, dim_mults=(1, 2, 2), with_time_emb=False)
CONFIGS = {"convnext": CONVNEXT, "resnet": RESNET, "no_time_emb": NO_TIME}
EXTS = (pytest.param(".pt", marks=needs("torch")), ".ckpt", ".safetensors")


def random_weights(cfg: UnetConfig, seed: int = 0, naming: str = "torch") -> dict[str, np.ndarray]:
    """Every parameter of ``Unet(cfg)`` drawn from N(0, 1) (norms included), float32."""
    rng = np.random.default_rng(seed)
    return {(s.torch_name if naming == "torch" else s.ms_name): rng.standard_normal(s.shape).astype(np.float32)
            for s in unet_parameters(cfg)}


def assert_identical(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert list(a) == list(b)
    for name in a:
        assert a[name].dtype == b[name].dtype and np.array_equal(a[name], b[name]), name
    assert manifest(a) == manifest(b)


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ---------------------------------------------------------------- exact round trips
@pytest.mark.parametrize("cfg_name", sorted(CONFIGS))
@pytest.mark.parametrize("src_ext", EXTS)
@pytest.mark.parametrize("dst_ext", EXTS)
def test_round_trip_every_format_pair_is_bit_exact(tmp_path, cfg_name, src_ext, dst_ext):
    cfg = CONFIGS[cfg_name]
    state = random_weights(cfg)
    src, dst = tmp_path / f"src{src_ext}", tmp_path / f"dst{dst_ext}"
    save_weights(state, src, "torch", cfg)
    loaded = load_weights(src, "torch", cfg)
    assert loaded.file_naming == ("ms" if src_ext == ".ckpt" else "torch") and loaded.skipped == []
    save_weights(loaded.state, dst, "torch", cfg)
    back = load_weights(dst, "ms", None if dst_ext == ".safetensors" else cfg)
    assert back.config == cfg and back.dtype == "float32"
    assert_identical(back.state, torch_to_ms(state, cfg))
    assert_identical(ms_to_torch(back.state, cfg), state)


def test_in_memory_round_trips_are_bit_exact():
    for cfg in CONFIGS.values():
        t, m = random_weights(cfg, 1), random_weights(cfg, 2, naming="ms")
        assert_identical(ms_to_torch(torch_to_ms(t, cfg), cfg), t)
        assert_identical(torch_to_ms(ms_to_torch(m, cfg), cfg), m)


def test_safetensors_records_naming_and_config(tmp_path):
    state = random_weights(RESNET, naming="ms")
    save_weights(state, tmp_path / "w.safetensors", "ms", RESNET)
    from safetensors import safe_open

    with safe_open(str(tmp_path / "w.safetensors"), framework="np") as f:
        meta = f.metadata()
        assert "downs.0.0.block1.norm.gamma" in f.keys()
    assert meta["naming"] == "ms" and meta["format_version"] == "1"
    assert UnetConfig.from_dict(json.loads(meta["unet_config"])) == RESNET
    loaded = load_weights(tmp_path / "w.safetensors")  # the config comes from the metadata
    assert loaded.config == RESNET and loaded.file_naming == "ms"
    with pytest.raises(WeightsError, match="the file records UnetConfig"):
        load_weights(tmp_path / "w.safetensors", config=CONVNEXT)


def test_torch_named_ckpt_is_detected(tmp_path):
    ms = framework("mindspore")

    state = random_weights(CONVNEXT)
    ms.save_checkpoint([{"name": k, "data": ms.Tensor(v)} for k, v in state.items()], str(tmp_path / "t.ckpt"))
    loaded = load_weights(tmp_path / "t.ckpt", config=CONVNEXT)
    assert loaded.file_naming == "torch"
    assert_identical(loaded.state, state)


# ---------------------------------------------------------------- dtypes and manifests
@pytest.mark.parametrize("ext", EXTS)
@pytest.mark.parametrize("dtype", ["float16", "float64"])
def test_dtype_cast_is_stored_exactly(tmp_path, ext, dtype):
    state = random_weights(CONVNEXT)
    save_weights(state, tmp_path / f"w{ext}", "torch", CONVNEXT, dtype=dtype)
    loaded = load_weights(tmp_path / f"w{ext}", config=CONVNEXT)
    assert loaded.dtype == dtype
    assert_identical(loaded.state, {k: v.astype(dtype) for k, v in state.items()})


@pytest.mark.parametrize("ext", [".pt", ".ckpt"])
def test_bfloat16_matches_torch_rounding_and_widens_exactly(tmp_path, ext):
    torch = framework("torch")

    state = random_weights(CONVNEXT)
    state["init_conv.bias"][:3] = [1.00390625, 1.01171875, -3.0e38]  # ties to even, and a large value
    save_weights(state, tmp_path / f"w{ext}", "torch", CONVNEXT, dtype="bfloat16")
    loaded = load_weights(tmp_path / f"w{ext}", config=CONVNEXT)
    assert loaded.dtype == "bfloat16"
    expected = {k: torch.from_numpy(v).to(torch.bfloat16).float().numpy() for k, v in state.items()}
    assert_identical(loaded.state, expected)
    assert_identical(cast_weights(state, "bfloat16"), expected)


def test_bfloat16_safetensors_and_overflow_are_errors(tmp_path):
    state = random_weights(CONVNEXT)
    with pytest.raises(WeightsError, match="cannot hold bfloat16"):
        save_weights(state, tmp_path / "w.safetensors", "torch", CONVNEXT, dtype="bfloat16")
    state["init_conv.weight"] = state["init_conv.weight"] * 1e5
    with pytest.raises(WeightsError, match=r"overflow: init_conv.weight: \d+ of 588 values .* become inf in float16"):
        save_weights(state, tmp_path / "w.pt", "torch", CONVNEXT, dtype="float16")
    assert files_in(tmp_path) == []
    assert np.isinf(round_to_bfloat16(np.array([3.4e38], np.float32)))[0]


def test_manifest_hashes_dtype_shape_and_values():
    a = np.zeros(4, np.float32)
    digests = {tensor_digest(x) for x in (a, a.astype(np.float16), a.reshape(2, 2), a + 1, a.astype(">f4"))}
    assert len(digests) == 4  # big-endian storage of the same values hashes like little-endian
    m = manifest(random_weights(CONVNEXT))
    assert list(m) == [s.torch_name for s in unet_parameters(CONVNEXT)] and all(len(v) == 64 for v in m.values())


# ---------------------------------------------------------------- strictness
def _problem(state, tmp_path, ext=".pt", cfg=CONVNEXT) -> WeightsError:
    with pytest.raises(WeightsError) as info:
        save_weights(state, tmp_path / f"w{ext}", "torch", cfg)
    return info.value


def test_every_bad_key_is_one_line(tmp_path):
    state = random_weights(CONVNEXT)
    del state["init_conv.bias"]
    state["extra.weight"] = np.zeros(3, np.float32)
    state["time_mlp.1.bias"] = np.zeros(5, np.float32)
    state["time_mlp.3.bias"] = np.arange(32, dtype=np.int64)
    state["final_conv.1.weight"] = state["final_conv.1.weight"].copy()
    state["final_conv.1.weight"].flat[0] = np.nan
    e = _problem(state, tmp_path)
    assert sorted(e.problems) == sorted([
        "missing: init_conv.bias (expected shape (4,))",
        "unexpected: extra.weight (shape (3,))",
        "shape mismatch: time_mlp.1.bias: expected (32,), found (5,)",
        "dtype: time_mlp.3.bias: expected a floating-point tensor, found int64",
        "non-finite values: final_conv.1.weight: 1 of 24 are NaN or inf",
    ])
    assert files_in(tmp_path) == []


def test_file_with_bad_keys_is_refused_on_load(tmp_path):
    torch = framework("torch")

    state = {k: torch.from_numpy(v) for k, v in random_weights(CONVNEXT).items()}
    state["downs.0.0.net.0.weight"] = torch.zeros(7)
    torch.save(state, tmp_path / "w.pt")
    with pytest.raises(WeightsError, match=r"shape mismatch: downs.0.0.net.0.weight: expected \(4,\), found \(7,\)"):
        load_weights(tmp_path / "w.pt", config=CONVNEXT)


@pytest.mark.parametrize("cfg", [CONVNEXT, RESNET, NO_TIME], ids=["convnext", "resnet", "no_time_emb"])
def test_wrong_config_is_named_from_the_shapes_in_one_line(tmp_path, cfg):
    """Issue 17: weights of another config printed one line per key (115-168); the shapes say which config."""
    save_weights(random_weights(cfg), tmp_path / "w.ckpt", "torch", cfg)
    with pytest.raises(WeightsError) as info:
        load_weights(tmp_path / "w.ckpt")  # no config: the tutorial's is assumed and does not fit
    e = info.value
    # resnet_block_groups shows in no shape: the message says so, and names the default that fits
    shown = cfg if cfg.use_convnext else dataclasses.replace(cfg, resnet_block_groups=8)
    assert len(e.problems) == 1 and "\n" not in str(e)
    assert f"these weights are a {shown.short()}, but the tutorial's {TUTORIAL_UNET.short()} was assumed" in str(e)
    assert ("resnet_block_groups does not show in the shapes" in str(e)) == (not cfg.use_convnext)
    given = json.loads(str(e).split("--config '")[1].split("'")[0])  # the option it suggests loads them
    assert load_weights(tmp_path / "w.ckpt", config=UnetConfig.from_dict(given)).config == shown
    other = RESNET if cfg == CONVNEXT else CONVNEXT
    with pytest.raises(WeightsError, match=re.escape(f"are a {shown.short()}, but {other.short()} was given")):
        load_weights(tmp_path / "w.ckpt", config=other)


@needs("torch")  # a .pt file
def test_weights_of_no_config_count_each_kind_of_problem_in_one_line_and_keep_the_hint(tmp_path):
    """Issue 25: one cause, one line; the weights of another U-Net listed 100+ keys, one line each."""
    state = random_weights(CONVNEXT)
    del state["final_conv.1.weight"]  # fits no U-Net at all
    formats.WRITERS["torch"](tmp_path / "w.pt", state, "torch", CONVNEXT, None)
    with pytest.raises(WeightsError) as info:
        load_weights(tmp_path / "w.pt")
    kinds = [p.split(":")[0] for p in info.value.problems]
    assert len(kinds) == len(set(kinds)) and "--config" in info.value.hint
    assert any(re.fullmatch(r"(missing|unexpected|shape mismatch): \d{2,} tensors \(first: .*", p)
               for p in info.value.problems), info.value.problems


def test_one_cause_is_one_line_and_a_few_keys_are_each_named(tmp_path):
    """All-int32 weights were 114 lines for one cause; NaN in several tensors likewise."""
    state = random_weights(CONVNEXT)
    ints = {k: v.astype(np.int32) for k, v in state.items()}
    assert weight_problems(ints, CONVNEXT, "torch") == [
        f"dtype: every tensor is int32 (first: {next(iter(state))}); expected floating-point tensors"]
    nan = {k: (v * np.nan if i % 2 else v) for i, (k, v) in enumerate(state.items())}
    (line,) = weight_problems(nan, CONVNEXT, "torch")
    assert line.startswith(f"non-finite values: {sum(v.size for i, v in enumerate(state.values()) if i % 2)} NaN or inf "
                           f"in {len(state) // 2} tensors")
    few = {k: v for k, v in list(state.items())[2:]}
    assert weight_problems(few, CONVNEXT, "torch") == [f"missing: {k} (expected shape {v.shape})"
                                                       for k, v in list(state.items())[:2]]


# ---------------------------------------------------------------- unreadable files and safety
def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("ext", EXTS)
@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_damaged_files_are_one_clear_error(tmp_path, ext, damage):
    path = tmp_path / f"w{ext}"
    save_weights(random_weights(CONVNEXT), path, "torch", CONVNEXT)
    if damage == "truncated":
        _truncate(path)
    else:
        path.write_bytes(b"" if damage == "empty" else bytes(range(256)) * 8)
    with pytest.raises(WeightsError) as info:
        load_weights(path, config=CONVNEXT)
    assert str(info.value).startswith(f"cannot read {path}: ") and "\n" not in str(info.value)


def test_wrong_extension_and_missing_file(tmp_path):
    with pytest.raises(WeightsError, match=r"w.npz: unknown extension '.npz'; use one of .pt, .pth, .ckpt, .safet"):
        load_weights(tmp_path / "w.npz")
    with pytest.raises(WeightsError, match="unknown extension"):
        save_weights(random_weights(CONVNEXT), tmp_path / "w.h5", "torch", CONVNEXT)
    with pytest.raises(WeightsError, match=r"cannot read .*nothere.pt: no such file"):
        load_weights(tmp_path / "nothere.pt")


class _RunsCode:
    """Unpickling this would create ``marker``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_malicious_pickle_is_refused_without_running(tmp_path):
    torch = framework("torch")

    marker = tmp_path / "PWNED"
    state = {k: torch.from_numpy(v) for k, v in random_weights(CONVNEXT).items()}
    state["init_conv.bias"] = _RunsCode(marker)
    torch.save(state, tmp_path / "evil.pt")
    with pytest.raises(WeightsError) as info:
        load_weights(tmp_path / "evil.pt", config=CONVNEXT)
    assert not marker.exists()
    msg = str(info.value)
    assert msg.startswith(f"cannot read {tmp_path / 'evil.pt'}: refused by torch.load(weights_only=True): ")
    assert "open" in msg and "\n" not in msg


# ---------------------------------------------------------------- atomic writes
@pytest.mark.parametrize("ext", EXTS)
def test_failed_write_leaves_destination_untouched(tmp_path, ext, monkeypatch):
    dst = tmp_path / f"w{ext}"
    dst.write_bytes(b"old content")
    bad = random_weights(CONVNEXT)
    bad.pop("init_conv.weight")
    with pytest.raises(WeightsError, match="missing: init_conv.weight"):
        save_weights(bad, dst, "torch", CONVNEXT)
    fmt = formats.FORMATS[ext]

    def half_written(path, *args):
        Path(path).write_bytes(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setitem(formats.WRITERS, fmt, half_written)
    with pytest.raises(RuntimeError, match="disk full"):
        save_weights(random_weights(CONVNEXT), dst, "torch", CONVNEXT)
    assert dst.read_bytes() == b"old content" and files_in(tmp_path) == [dst.name]


def test_successful_write_replaces_destination_with_usual_mode(tmp_path):
    dst = tmp_path / "w.ckpt"
    dst.write_bytes(b"old content")
    os.chmod(dst, 0o400)
    save_weights(random_weights(CONVNEXT), dst, "torch", CONVNEXT)
    assert files_in(tmp_path) == ["w.ckpt"] and os.stat(dst).st_mode & 0o600 == 0o600
    assert_identical(load_weights(dst, config=CONVNEXT).state, random_weights(CONVNEXT))


# ---------------------------------------------------------------- training extras
@pytest.fixture(scope="module")
def ms_trained(tmp_path_factory):
    """A tutorial-style MindSpore training run (nn.Adam, one step), saved the ways a user would."""
    ms = framework("mindspore")
    nn = framework("mindspore.nn")

    from ddpm_ms import GaussianDiffusion, Unet
    from ddpm_ms.optim import make_optimizer, make_train_step

    folder = tmp_path_factory.mktemp("ms_trained")
    model = Unet.from_config(CONVNEXT)
    optimizer = make_optimizer(model, 1e-3)
    step = make_train_step(model, GaussianDiffusion(DiffusionConfig(timesteps=10)), optimizer)
    rng = np.random.default_rng(0)
    step(rng.standard_normal((2, 3, 8, 8)).astype(np.float32), np.array([1, 7], np.int32),
         rng.standard_normal((2, 3, 8, 8)).astype(np.float32))
    trained = ms_to_torch({name: p.asnumpy() for name, p in model.parameters_and_names()}, CONVNEXT)
    ms.save_checkpoint(optimizer, str(folder / "optimizer.ckpt"))
    ms.save_checkpoint(nn.TrainOneStepCell(nn.WithLossCell(model, nn.MSELoss()), optimizer),
                       str(folder / "train_one_step.ckpt"))  # these wrappers add no prefix (auto_prefix=False)

    class TrainState(nn.Cell):  # a cell holding both, as one would write to save "everything"
        def __init__(self, network, opt):
            super().__init__()
            self.network, self.optimizer = network, opt

    ms.save_checkpoint(TrainState(model, optimizer), str(folder / "train_state.ckpt"))
    return folder, trained


@pytest.mark.parametrize("file, prefix", [("optimizer.ckpt", ""), ("train_one_step.ckpt", ""),
                                          ("train_state.ckpt", "optimizer.")])
def test_mindspore_adam_checkpoint_extras_are_skipped_and_reported(ms_trained, file, prefix):
    folder, trained = ms_trained
    loaded = load_weights(folder / file, config=CONVNEXT)
    assert_identical(loaded.state, trained)
    assert loaded.prefix == prefix  # MindSpore renames the shared parameters after the last owning attribute
    n = len(unet_parameters(CONVNEXT))
    reasons = [s.reason for s in loaded.skipped]
    assert reasons.count(OPTIMIZER_SLOTS["moment1"]) == n and reasons.count(OPTIMIZER_SLOTS["moment2"]) == n
    scalars = sorted(s.name for s in loaded.skipped if "moment" not in s.name)
    assert scalars == sorted(prefix + k for k in ("beta1_power", "beta2_power", "global_step", "learning_rate"))
    first = describe_skipped(loaded.skipped)[0]
    assert first == f"skipped 1 optimizer step counter (every nn.Optimizer): {prefix}global_step"


def test_unrecognised_training_entries_are_still_unexpected(tmp_path, ms_trained):
    ms = framework("mindspore")

    folder, _ = ms_trained
    params = ms.load_checkpoint(str(folder / "optimizer.ckpt"))
    items = [{"name": k, "data": v} for k, v in params.items()]
    items += [{"name": "moment1.not_a_param", "data": ms.Tensor(np.zeros(2, np.float32))},
              {"name": "ema_decay", "data": ms.Tensor(np.zeros(1, np.float32))}]
    ms.save_checkpoint(items, str(tmp_path / "odd.ckpt"))
    with pytest.raises(WeightsError) as info:
        load_weights(tmp_path / "odd.ckpt", config=CONVNEXT)
    assert sorted(info.value.problems) == ["unexpected: ema_decay (shape (1,))",
                                           "unexpected: moment1.not_a_param (shape (2,))"]


def test_two_copies_of_the_model_are_ambiguous(tmp_path):
    state = random_weights(CONVNEXT)
    both = {**{f"ema.{k}": v for k, v in state.items()}, **{f"model.{k}": v for k, v in state.items()}}
    from safetensors.numpy import save_file

    save_file(both, str(tmp_path / "two.safetensors"))
    with pytest.raises(WeightsError, match=r"several prefixes: 'ema.' \(\d+\), 'model.' \(\d+\)"):
        load_weights(tmp_path / "two.safetensors", config=CONVNEXT)


def test_torch_training_checkpoint_dict(tmp_path):
    torch = framework("torch")

    from ddpm_torch import Unet

    model = Unet.from_config(RESNET)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.zeros(1, 1, 8, 8), torch.tensor([3])).square().mean().backward()
    opt.step()
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": 3}, tmp_path / "train.pt")
    loaded = load_weights(tmp_path / "train.pt", config=RESNET)
    assert [s.name for s in loaded.skipped] == ["optimizer", "epoch"]
    assert_identical(loaded.state, {k: v.numpy() for k, v in model.state_dict().items()})
    torch.save({"module." + k: v for k, v in model.state_dict().items()}, tmp_path / "dp.pt")  # DataParallel
    assert load_weights(tmp_path / "dp.pt", config=RESNET).prefix == "module."


# ---------------------------------------------------------------- framework neutrality
def test_importing_the_core_imports_no_framework():
    """Every module of ddpm_core, in every room, found by walking the package (a new room or module is
    covered without being listed here), and the .ckpt reader's protobuf classes."""
    code = ("import importlib, pkgutil, sys, ddpm_core, parity.convert\n"
            "mods = [m.name for m in pkgutil.walk_packages(ddpm_core.__path__, 'ddpm_core.')]\n"
            "for name in mods: importlib.import_module(name)\n"
            "importlib.import_module('ddpm_core.weights.ckpt').message_classes()\n"
            "print(len(mods), sorted(m for m in ('torch', 'mindspore', 'safetensors') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    count, imported = out.stdout.strip().split(" ", 1)
    assert int(count) >= 40 and imported == "[]"  # 40: the rooms' modules and the reference's, as of the rooms


def test_mindspore_checkpoint_with_string_entries_is_read_and_reports_them(tmp_path):
    """ms.save_checkpoint(append_dict=...) stores strings beside tensors (training metadata)."""
    ms = framework("mindspore")

    cfg = CONVNEXT
    state = torch_to_ms(random_weights(cfg), cfg)
    path = tmp_path / "with_meta.ckpt"
    ms.save_checkpoint([{"name": n, "data": ms.Tensor(v)} for n, v in state.items()], str(path),
                       append_dict={"run_note": "epoch 3", "epoch_num": 3})
    loaded = load_weights(path, "ms", cfg)
    assert all(np.array_equal(loaded.state[n], state[n]) for n in state)
    assert "run_note" in {s.name for s in loaded.skipped}
