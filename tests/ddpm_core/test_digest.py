"""ddpm_core.weights.digest: the one digest, pinned. Every value below is stored in files earlier versions wrote
(manifests, a .safetensors checksum, a run's checkpoint records, a golden file's tape and weights digests), so
a change to any framing, to the byte order or to the order of names fails here before it orphans those files.
The values were computed by the code each framing came from, before it was merged into this module."""
from __future__ import annotations

import numpy as np
import pytest

from ddpm_core.weights.digest import (
    SAFETENSORS_FRAME,
    TAPE_FRAME,
    array_bytes,
    digest,
    file_digest,
    manifest_digest,
    state_digest,
    tensor_digest,
)

A = np.arange(6, dtype=np.float32).reshape(2, 3)
B = np.arange(4, dtype=">i4")  # big-endian on purpose: digested as its little-endian bytes
C = np.full((), 1.5, np.float64)
STATE = {"b.w": B, "a.w": A, "c": C}  # not in name order on purpose

PINNED_TENSORS = {
    "A": "105dad27b7bb238e17947fcd291b4c11a424a8c08b852ae401504f6f7d11ce32",
    "B": "e34e31f727c1d11cec9167e44a877a29a08a487f951234659e8ef1d5ecbf18c7",
    "C": "7ffb1fe194f001ef4ce9c33ea74aa42fd664d8abf76d6fad242a6afc015634f7",
    "A.T": "3dfa20e976745555136c03cc1208382aeaf95296896625e923e80361bee9dd98",
}
PINNED_SAFETENSORS = "fbced0fc0207249584c5ddf349f64db0ff73cb8ad18cd94f4286b142cc406b17"
PINNED_MANIFEST = "29ea844dc277fcf30c21342a288e48b258e5b7d9530582b6a0d3c7391ca306d6"
PINNED_TAPE = "22c7c4db4bf5bc4301103a8097d49014c23066bd73f97421a514325cb190b604"
PINNED_FILE = "7d471e4af16db5a30ce10aebbc29f5178b2edbad6c7dc2e8ff8ee6e4848a726f"  # bytes(range(256)) * 5000


def test_tensor_digests_are_pinned():
    found = {"A": tensor_digest(A), "B": tensor_digest(B), "C": tensor_digest(C), "A.T": tensor_digest(A.T)}
    assert found == PINNED_TENSORS


def test_state_digests_are_pinned_in_each_stored_framing():
    assert state_digest(STATE, SAFETENSORS_FRAME) == PINNED_SAFETENSORS
    assert state_digest(STATE, TAPE_FRAME) == PINNED_TAPE
    assert manifest_digest(STATE) == PINNED_MANIFEST


def test_the_harness_hashes_are_the_pinned_framings():
    """parity's tape and weights hashes (a golden file's tape_sha256, weights_sha256 and outputs_sha256)."""
    from parity.engine.initial import weights_hash
    from parity.engine.tape import tape_hash

    assert tape_hash(STATE) == PINNED_TAPE and weights_hash(STATE) == PINNED_MANIFEST


def test_file_digest_is_pinned_and_is_the_plain_sha256_of_the_bytes(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(bytes(range(256)) * 5000)  # 1.28 MB: read as two FILE_CHUNKs
    assert file_digest(path) == PINNED_FILE == digest([path.read_bytes()])


def test_byte_order_and_memory_layout_do_not_change_a_digest():
    assert tensor_digest(B) == tensor_digest(B.astype("<i4"))
    assert tensor_digest(np.asfortranarray(A)) == tensor_digest(A) == tensor_digest(A[:, ::-1][:, ::-1])
    assert array_bytes(B) == np.arange(4, dtype="<i4").tobytes()


def test_the_order_names_were_added_in_does_not_change_a_state_digest():
    reordered = dict(reversed(list(STATE.items())))
    assert state_digest(reordered, SAFETENSORS_FRAME) == PINNED_SAFETENSORS and manifest_digest(reordered) == PINNED_MANIFEST


@pytest.mark.parametrize("change", ["dtype", "shape", "one bit", "name"])
def test_every_part_of_a_state_moves_its_digest(change):
    state = dict(STATE)
    if change == "dtype":
        state["a.w"] = A.astype(np.float64)
    elif change == "shape":
        state["a.w"] = A.reshape(3, 2)
    elif change == "one bit":
        flipped = A.copy()
        flipped.view(np.uint32)[0, 0] ^= 1
        state["a.w"] = flipped
    else:
        state["a.x"] = state.pop("a.w")
    assert state_digest(state, SAFETENSORS_FRAME) != PINNED_SAFETENSORS
    assert state_digest(state, TAPE_FRAME) != PINNED_TAPE
    assert manifest_digest(state) != PINNED_MANIFEST


def test_the_parts_of_a_digest_are_str_bytes_or_arrays_alike():
    assert digest(["float32", b"\x00", A]) == digest([b"float32\x00", A.tobytes()])
