"""ddpm_core.weights.ckpt: MindSpore checkpoints read and written without MindSpore, byte for byte as MindSpore's own
``save_checkpoint`` writes them and readable by its ``load_checkpoint``, with and without the CRC footer."""
import numpy as np
import pytest

from ddpm_core.weights import ckpt
from tests.host import framework


def mixed_entries() -> dict:
    """Every kind of value a MindSpore training checkpoint holds: weights of several dtypes, a scalar,
    bfloat16, and append_dict metadata (a string, an int and a float)."""
    ms = framework("mindspore")
    rng = np.random.default_rng(0)
    return {
        "downs.0.weight": rng.standard_normal((3, 4, 2)).astype(np.float32),
        "half": rng.standard_normal(5).astype(np.float16),
        "double": rng.standard_normal(2),
        "global_step": np.array(7, np.int32),
        "mask": np.array([True, False, True]),
        "bf": ms.Tensor(rng.standard_normal(6).astype(np.float32)).astype(ms.bfloat16),
    }


def ms_save(path, entries: dict, crc: bool, append=None) -> bytes:
    ms = framework("mindspore")
    items = [{"name": k, "data": v if isinstance(v, ms.Tensor) else ms.Tensor(v)} for k, v in entries.items()]
    ms.save_checkpoint(items, str(path), crc_check=crc, append_dict=append)
    return path.read_bytes()


APPEND = {"note": "epoch 3 — ünïcode", "epoch_num": 3, "lr": 0.5}


def test_schema_is_mindspores_checkpoint_proto():
    from google.protobuf import descriptor_pb2
    checkpoint_pb2 = framework("mindspore.train.checkpoint_pb2")

    theirs = descriptor_pb2.FileDescriptorProto()
    checkpoint_pb2.DESCRIPTOR.CopyToProto(theirs)
    assert ckpt.file_descriptor() == theirs


@pytest.mark.parametrize("crc", [False, True])
def test_mindspore_file_is_read_exactly_and_rewritten_byte_for_byte(tmp_path, crc):
    ms = framework("mindspore")
    entries = mixed_entries()
    data = ms_save(tmp_path / "ms.ckpt", entries, crc, APPEND)
    assert data.endswith(ckpt.crc_footer(data[:-ckpt.FOOTER_BYTES])) == crc
    found = ckpt.parse(data, crc_check=crc)
    assert [e.name for e in found] == [*entries, *APPEND]
    types = {e.name: e.tensor_type for e in found}
    assert types == {"downs.0.weight": "Float32", "half": "Float16", "double": "Float64", "global_step": "Int32",
                     "mask": "Bool", "bf": "BFloat16", "note": "str", "epoch_num": "Int64", "lr": "Float32"}
    values = {e.name: e.value for e in found}
    for name, want in entries.items():
        want = want.astype(ms.float32).asnumpy() if isinstance(want, ms.Tensor) else want
        assert values[name].dtype == want.dtype and values[name].shape == want.shape, name
        assert values[name].tobytes() == want.tobytes(), name
    assert values["note"] == APPEND["note"] and values["epoch_num"] == 3 and values["lr"] == 0.5
    assert ckpt.serialize([(e.name, e.value) for e in found], crc_check=crc, tensor_types=types) == data


@pytest.mark.parametrize("crc", [False, True])
def test_our_file_is_mindspores_byte_for_byte_and_loads_there(tmp_path, crc):
    ms = framework("mindspore")
    entries = mixed_entries()
    want = ms_save(tmp_path / "ms.ckpt", entries, crc, APPEND)
    bf = entries["bf"].astype(ms.float32).asnumpy()
    ours = {**entries, "bf": bf, **APPEND, "epoch_num": np.array(3, np.int64), "lr": np.array(0.5, np.float32)}
    path = tmp_path / "ours.ckpt"
    ckpt.write(path, ours, crc_check=crc, tensor_types={"bf": ckpt.BFLOAT16})
    assert path.read_bytes() == want
    loaded = ms.load_checkpoint(str(path), crc_check=crc)
    assert list(loaded) == list(ours)
    assert loaded["bf"].dtype == ms.bfloat16 and loaded["bf"].astype(ms.float32).asnumpy().tobytes() == bf.tobytes()
    assert loaded["note"] == APPEND["note"]
    for name in ("downs.0.weight", "half", "double", "global_step", "mask"):
        assert loaded[name].asnumpy().tobytes() == entries[name].tobytes(), name


def test_large_tensors_in_pieces_match_mindspore(tmp_path, monkeypatch):
    """MindSpore cuts a tensor into 512 MiB messages; with its piece size shrunk to 1 KiB both sides agree."""
    serialization = framework("mindspore.train.serialization")

    monkeypatch.setattr(serialization, "SLICE_SIZE", 1)  # KiB: pieces of 1024 bytes
    big = np.arange(700, dtype=np.float32).reshape(7, 100)  # 2800 bytes: 3 pieces
    want = ms_save(tmp_path / "ms.ckpt", {"big": big, "small": big[0, :3]}, crc=True)
    assert ckpt.serialize({"big": big, "small": big[0, :3]}, crc_check=True, chunk_bytes=1024) == want
    found = ckpt.parse(want, crc_check=True)
    assert [e.name for e in found] == ["big", "small"] and np.array_equal(found[0].value, big)


def test_crc_damage_is_caught_as_mindspore_catches_it(tmp_path):
    ms = framework("mindspore")
    data = bytearray(ms_save(tmp_path / "ms.ckpt", mixed_entries(), crc=True))
    i = data.index(np.float32(mixed_entries()["downs.0.weight"][0, 0, 0]).tobytes())
    data[i] ^= 0x01  # one bit of one weight: protobuf still parses it
    damaged = tmp_path / "damaged.ckpt"
    damaged.write_bytes(bytes(data))
    assert ckpt.verify_crc(bytes(data)) is False
    with pytest.raises(ckpt.CheckpointError, match="CRC-32 mismatch"):
        ckpt.read(damaged, crc_check=True)
    with pytest.raises(ValueError) as info:
        ms.load_checkpoint(str(damaged), crc_check=True)
    assert "crc check is failed" in str(info.value.__cause__)
    assert ckpt.read(damaged)[0].value[0, 0, 0] != mixed_entries()["downs.0.weight"][0, 0, 0]  # unchecked: read
    with pytest.raises(ckpt.CheckpointError, match="no CRC footer"):
        ckpt.parse(ckpt.serialize({"a": np.zeros(2, np.float32)}), crc_check=True)


@pytest.mark.parametrize("data, message", [
    (b"", "empty file"),
    (bytes(range(256)) * 4, "^protobuf: "),
])
def test_bad_bytes_are_one_error(data, message):
    with pytest.raises(ckpt.CheckpointError, match=message):
        ckpt.parse(data)


def test_byte_count_that_does_not_fit_the_shape_is_named():
    Checkpoint, _ = ckpt.message_classes()
    message = Checkpoint()
    value = message.value.add(tag="w")
    value.tensor.dims.extend([2, 3])
    value.tensor.tensor_type = "Float32"
    value.tensor.tensor_content = bytes(20)
    with pytest.raises(ckpt.CheckpointError, match=r"tensor 'w': 20 bytes, but shape \[2, 3\] of Float32 needs 24"):
        ckpt.parse(message.SerializeToString())


def test_values_off_the_bfloat16_grid_are_refused():
    with pytest.raises(ckpt.CheckpointError, match="not on the bfloat16 grid"):
        ckpt.serialize({"w": np.array([1.0000001], np.float32)}, tensor_types={"w": ckpt.BFLOAT16})
