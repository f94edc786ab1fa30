"""parity.convert: the CLI over ddpm_core.weights, and the tutorial's own MindSpore checkpoint moved to a
PyTorch model that predicts the same noise (docs/weights.md)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from parity.api import assert_close
from ddpm_core.config import TUTORIAL_UNET, UnetConfig
from ddpm_core.weights.files import load_weights, save_weights
from ddpm_core.weights.integrity import manifest
from ddpm_core.weights.naming import unet_parameters
from parity.convert import main
from tests import one_framework
from tests.host import framework, needs

ROOT = Path(__file__).resolve().parents[2]
SMALL = UnetConfig(dim=16, channels=3, dim_mults=(1, 2), use_convnext=False, resnet_block_groups=4)
SMALL_JSON = json.dumps(SMALL.to_dict())


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "parity.convert", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def random_weights(cfg: UnetConfig, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {s.torch_name: rng.standard_normal(s.shape).astype(np.float32) for s in unet_parameters(cfg)}


def torch_predictions(pt_path: Path, x: np.ndarray, t: np.ndarray) -> np.ndarray:
    """The tutorial's ``Unet`` in PyTorch, loaded exactly as a user would, strictly."""
    torch = framework("torch")

    import ddpm_torch

    model = ddpm_torch.Unet(dim=28, channels=1, dim_mults=(1, 2, 4))
    model.load_state_dict(torch.load(pt_path, weights_only=True), strict=True)
    with torch.no_grad():
        return model(torch.from_numpy(x), torch.from_numpy(t.astype(np.int64))).numpy()


def assert_same_as_mindspore_conversion(ckpt: Path, pt: Path) -> None:
    """Every tensor of ``pt`` is bit for bit what ``ms.load_checkpoint(ckpt)`` holds under its MindSpore name."""
    ms = framework("mindspore")
    torch = framework("torch")

    from ddpm_core.weights.converter import ms_to_torch

    by_ms = ms_to_torch({k: v.asnumpy() for k, v in ms.load_checkpoint(str(ckpt)).items()}, TUTORIAL_UNET)
    ours = torch.load(pt, weights_only=True)
    assert list(ours) == list(by_ms)
    for name, want in by_ms.items():
        got = ours[name].numpy()
        assert got.dtype == want.dtype and got.shape == want.shape and got.tobytes() == want.tobytes(), name


@needs("torch")  # .pt files
def test_tutorial_ckpt_to_pt_predicts_the_same_noise(tutorial_ckpt, tmp_path):
    """On a PyTorch-only host too: the CLI runs with MindSpore blocked, bit-identical to MindSpore's reading."""
    ckpt, x, t, eps = tutorial_ckpt
    loaded = load_weights(ckpt)  # no config: the tutorial's
    assert loaded.config == TUTORIAL_UNET and loaded.file_naming == "ms" and loaded.skipped == []
    save_weights(loaded.state, tmp_path / "api.pt", "torch", loaded.config)

    run = one_framework.run("torch", "parity.convert", [ckpt, tmp_path / "cli.pt", "--manifest",
                                                      tmp_path / "manifest.json"])  # MindSpore cannot be imported
    assert run.returncode == 0, run.stderr
    assert f"wrote {tmp_path / 'cli.pt'}: 166 tensors, float32" in run.stderr
    assert json.loads((tmp_path / "manifest.json").read_text()) == manifest(loaded.state)
    assert_same_as_mindspore_conversion(ckpt, tmp_path / "cli.pt")

    for pt in ("api.pt", "cli.pt"):
        assert_close(f"{pt} vs the tutorial's MindSpore Unet", torch_predictions(tmp_path / pt, x, t), eps, "prediction")


def test_pt_to_ckpt_loads_strictly_into_mindspore(tmp_path):
    ms = framework("mindspore")
    torch = framework("torch")

    import ddpm_ms
    import ddpm_torch

    torch.manual_seed(0)
    torch.save(ddpm_torch.Unet.from_config(SMALL).state_dict(), tmp_path / "w.pt")
    assert main([str(tmp_path / "w.pt"), str(tmp_path / "w.ckpt"), "--config", SMALL_JSON]) == 0
    net = ddpm_ms.Unet.from_config(SMALL)
    not_loaded, unused = ms.load_param_into_net(net, ms.load_checkpoint(str(tmp_path / "w.ckpt")), strict_load=True)
    assert not_loaded == [] and unused == []
    src = torch.load(tmp_path / "w.pt", weights_only=True)
    live = {p.name: p.asnumpy() for p in net.get_parameters()}
    for s in unet_parameters(SMALL):
        assert np.array_equal(live[s.ms_name], src[s.torch_name].numpy()), s.ms_name


def test_cli_errors_are_one_line_without_traceback(tmp_path):
    torch = framework("torch")

    marker = tmp_path / "PWNED"

    class RunsCode:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save({"init_conv.weight": RunsCode()}, tmp_path / "evil.pt")
    run = cli(tmp_path / "evil.pt", tmp_path / "out.ckpt")
    assert run.returncode == 2 and not marker.exists() and not (tmp_path / "out.ckpt").exists()
    assert run.stderr.splitlines()[0].startswith(f"error: cannot read {tmp_path / 'evil.pt'}: refused by torch.load")
    assert "Traceback" not in run.stderr

    run = cli(tmp_path / "evil.pt", tmp_path / "out.pt", "--config", '{"dim": 16, "dim_mults": [2]}')
    assert run.returncode == 2 and run.stderr.splitlines() == [
        "error: --config: dim_mults[0] must be 1: the final block takes dim=16 channels but the up path ends "
        "with dim * dim_mults[0] = 32"]


def test_cli_manifest_only_prints_json(tmp_path):
    state = random_weights(SMALL)
    save_weights(state, tmp_path / "w.safetensors", "torch", SMALL)
    run = cli(tmp_path / "w.safetensors", "--manifest")
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout) == manifest(state)


# ---------------------------------------------------------------- in process (no interpreter start-up)
@needs("torch")  # .pt files
def test_ckpt_to_safetensors_to_pt_keeps_values_and_naming(tmp_path, capsys):
    state = random_weights(SMALL)
    save_weights(state, tmp_path / "w.ckpt", "torch", SMALL)
    assert main([str(tmp_path / "w.ckpt"), str(tmp_path / "w.safetensors"), "--config", SMALL_JSON]) == 0
    assert load_weights(tmp_path / "w.safetensors").file_naming == "ms"  # keeps the source's naming
    assert main([str(tmp_path / "w.safetensors"), str(tmp_path / "w.pt"), "--manifest"]) == 0  # config from metadata
    out = capsys.readouterr()
    assert json.loads(out.out) == manifest(state)
    assert "wrote" in out.err and "(ms naming)" in out.err
    assert manifest(load_weights(tmp_path / "w.pt", config=SMALL).state) == manifest(state)


@needs("torch")  # .pt files
def test_config_from_a_file_and_dtype(tmp_path, capsys):
    (tmp_path / "cfg.json").write_text(SMALL_JSON)
    save_weights(random_weights(SMALL), tmp_path / "w.pt", "torch", SMALL)
    assert main([str(tmp_path / "w.pt"), str(tmp_path / "h.pt"), "--config", str(tmp_path / "cfg.json"),
                 "--dtype", "float16"]) == 0
    assert load_weights(tmp_path / "h.pt", config=SMALL).dtype == "float16"
    assert main([str(tmp_path / "h.pt"), str(tmp_path / "b.ckpt"), "--config", SMALL_JSON, "--dtype", "bfloat16"]) == 0
    assert main([str(tmp_path / "b.ckpt"), str(tmp_path / "b.pt"), "--config", SMALL_JSON]) == 0  # bfloat16 kept
    assert load_weights(tmp_path / "b.pt", config=SMALL).dtype == "bfloat16"
    capsys.readouterr()


@needs("torch")  # w.pt
@pytest.mark.parametrize("args, first_line", [
    (["{dir}/nothere.ckpt", "{dir}/x.pt"], "error: cannot read {dir}/nothere.ckpt: no such file"),
    (["{dir}/w.pt", "{dir}/x.npy"], "error: {dir}/x.npy: unknown extension '.npy'; use one of .pt"),
    (["{dir}/w.pt"], "error: give DST to convert to, or --manifest to print the manifest"),
    (["{dir}/w.pt", "{dir}/x.pt", "--config", "{{dim: 8"], "error: --config: not valid JSON"),
    (["{dir}/w.pt", "{dir}/x.pt", "--config", "{dir}/none.json"], "error: --config: cannot read {dir}/none.json"),
    (["{dir}/w.pt", "{dir}/x.pt", "--config", '{{"dims": 8}}'], "error: --config: unknown Unet config keys: dims"),
    (["{dir}/w.pt", "{dir}/x.pt"], "error: cannot load {dir}/w.pt: these weights are a Unet(dim=16, channels=3, "),
    (["{dir}/w.pt", "{dir}/x.safetensors", "--config", SMALL_JSON.replace("{", "{{").replace("}", "}}"),
      "--dtype", "bfloat16"], "error: cannot write {dir}/x.safetensors: a safetensors file cannot hold bfloat16"),
])
def test_cli_error_messages(tmp_path, capsys, args, first_line):
    save_weights(random_weights(SMALL), tmp_path / "w.pt", "torch", SMALL)
    assert main([a.format(dir=tmp_path) for a in args]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith(first_line.format(dir=tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.pt"]


@needs("torch")  # .pt files
def test_cli_reports_wrong_config_in_one_line(tmp_path, capsys):
    """Issue 17: was one line per key (220 here); the shapes name the config, and the line says how to pass it."""
    save_weights(random_weights(SMALL), tmp_path / "w.pt", "torch", SMALL)
    assert main([str(tmp_path / "w.pt"), str(tmp_path / "x.ckpt")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: cannot load {tmp_path / 'w.pt'}: these weights are a "
                                               "Unet(dim=16, channels=3, dim_mults=(1, 2), use_convnext=False), but "
                                               "the tutorial's Unet(dim=28, channels=1, dim_mults=(1, 2, 4)) was assumed")
    given = err[0].split("--config '")[1].split("'")[0]
    assert main([str(tmp_path / "w.pt"), str(tmp_path / "x.ckpt"), "--config", given]) == 0


# ---------------------------------------------------------------- integrity (issue 17)
def largest(state: dict[str, np.ndarray]) -> str:
    return max(state, key=lambda k: state[k].size)


@pytest.mark.parametrize("ext", [pytest.param(".pt", marks=needs("torch")), ".ckpt", ".safetensors"])
def test_eight_damaged_bytes_in_tensor_data_are_refused_in_one_line(tmp_path, capsys, ext):
    """Each format we write carries its checksum (zip CRC-32, MindSpore's crc_check, sha256 in the metadata):
    8 bytes flipped inside a tensor were converted with exit 0 before; now one line and exit 2, no DST."""
    state = random_weights(SMALL)
    src = tmp_path / f"w{ext}"
    written = save_weights(state, src, "torch", SMALL)
    assert load_weights(src, config=SMALL).verified
    name = largest(written)
    from tests.conftest import damage_tensor_bytes

    damage_tensor_bytes(src, written[name])
    assert main([str(src), str(tmp_path / "out.safetensors"), "--config", SMALL_JSON]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [err[0]] and err[0].startswith(f"error: cannot read {src}: damaged: ")
    assert not (tmp_path / "out.safetensors").exists()


@pytest.mark.parametrize("ext", [".pt", ".ckpt", ".safetensors"])
def test_files_without_a_checksum_load_if_plausible(tmp_path, capsys, ext):
    """Files from elsewhere carry no checksum: they load, unless a value is NaN, inf or absurdly large."""
    torch = framework("torch")  # the damaged files are converted to .pt
    from safetensors.numpy import save_file

    def write(state, path):  # as other tools write them: no checksum anywhere
        if ext == ".pt":
            torch.save({k: torch.from_numpy(v) for k, v in state.items()}, path, _use_new_zipfile_serialization=False)
        elif ext == ".ckpt":
            ms = framework("mindspore")
            ms.save_checkpoint([{"name": k, "data": ms.Tensor(v)} for k, v in state.items()], str(path))
        else:
            save_file(state, str(path))

    state = random_weights(SMALL)
    write(state, tmp_path / f"plain{ext}")
    loaded = load_weights(tmp_path / f"plain{ext}", config=SMALL)
    assert not loaded.verified and manifest(loaded.state) == manifest(state)
    for bad, value in (("huge", 3e20), ("nan", np.nan)):
        damaged = dict(state, **{"downs.0.0.block1.proj.weight": state["downs.0.0.block1.proj.weight"].copy()})
        damaged["downs.0.0.block1.proj.weight"].flat[7] = value
        write(damaged, tmp_path / f"{bad}{ext}")
        assert main([str(tmp_path / f"{bad}{ext}"), str(tmp_path / "out.pt"), "--config", SMALL_JSON]) == 2
        err = capsys.readouterr().err.splitlines()
        assert err == [err[0]] and "the file carries no checksum" in err[0]
        assert ("3e+20 in downs.0.0.block1.proj.weight" if bad == "huge" else "1 NaN or inf value(s)") in err[0]


@needs("torch")  # .pt files
def test_manifest_sidecar_is_verified_and_kept_up_to_date(tmp_path, capsys):
    state = random_weights(SMALL)
    save_weights(state, tmp_path / "a.pt", "torch", SMALL)
    dst, sidecar = tmp_path / "w.safetensors", tmp_path / "w.safetensors.manifest.json"
    assert main([str(tmp_path / "a.pt"), str(dst), "--config", SMALL_JSON, "--manifest", str(sidecar)]) == 0
    assert load_weights(dst).state and json.loads(sidecar.read_text()) == manifest(state)
    other = random_weights(SMALL, seed=1)
    save_weights(other, dst, "torch", SMALL)  # replaced by something that does not update the sidecar
    with pytest.raises(Exception, match=r"does not match its manifest .*w.safetensors.manifest.json: 105 of 105 "
                                        r"tensors differ \(first: init_conv.weight\)"):
        load_weights(dst)
    capsys.readouterr()
    assert main([str(dst), str(tmp_path / "x.pt")]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    # the converter, replacing DST, says so and rewrites DST's sidecar
    assert main([str(tmp_path / "a.pt"), str(dst), "--config", SMALL_JSON]) == 0
    err = capsys.readouterr().err
    assert "it replaced the file that was there" in err and f"updated {sidecar}" in err
    assert manifest(load_weights(dst).state) == manifest(state)


@needs("torch")  # .pt files
def test_converter_removes_only_its_own_stale_temporaries(tmp_path):
    """A converter killed mid-write (SIGKILL) leaves .DST.<host>-<pid>.<random>.tmp; the next conversion to
    DST removes those whose process is gone, and nothing else."""
    from ddpm_core.runtime.atomic import host_tag

    save_weights(random_weights(SMALL), tmp_path / "w.pt", "torch", SMALL)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = host_tag()
    stale = [tmp_path / f".x.ckpt.{host}-{dead.pid}.abcd1234.tmp", tmp_path / f".x.ckpt.{host}-{dead.pid}.abcd1234.tmp.ckpt"]
    kept = [tmp_path / f".x.ckpt.{host}-{os.getpid()}.abcd1234.tmp",   # a live process's
            tmp_path / f".x.ckpt.otherhost-{dead.pid}.abcd1234.tmp",   # another machine's (shared folder)
            tmp_path / f".y.ckpt.{host}-{dead.pid}.abcd1234.tmp",      # another destination's
            tmp_path / ".notes.tmp", tmp_path / "x.ckpt.tmp"]           # the user's
    for f in stale + kept:
        f.write_bytes(b"partial")
    assert main([str(tmp_path / "w.pt"), str(tmp_path / "x.ckpt"), "--config", SMALL_JSON]) == 0
    assert not any(f.exists() for f in stale) and all(f.exists() for f in kept)


def test_diffusion_settings_travel_through_conversion(tmp_path):
    from ddpm_core.config import DiffusionConfig

    diffusion = DiffusionConfig(timesteps=37, schedule="cosine", loss_type="l2")
    save_weights(random_weights(SMALL), tmp_path / "a.safetensors", "torch", SMALL, diffusion=diffusion)
    assert main([str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors")]) == 0
    assert load_weights(tmp_path / "b.safetensors").diffusion == diffusion


def test_bad_destination_fails_before_reading(tmp_path, capsys):
    (tmp_path / "dir.pt").mkdir()
    assert main([str(tmp_path / "missing.pt"), str(tmp_path / "dir.pt")]) == 2  # the source is not even read
    assert capsys.readouterr().err == f"error: DST {tmp_path / 'dir.pt'}: is a folder, not a file\n"
