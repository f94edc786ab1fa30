"""ddpm_core.runtime.atomic.write_fault: which failures of a writer are the file system's, and which keep their type."""
import errno

import pytest

from ddpm_core.errors import EnvironmentRefused, MissingFramework, UserError
from ddpm_core.runtime import atomic


def test_an_os_error_in_the_chain_gives_its_reason(tmp_path):
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as inner:
            raise RuntimeError("the writer failed") from inner
    except RuntimeError as e:
        assert atomic.write_fault(e, tmp_path).endswith("(the disk is full)")


@pytest.mark.parametrize("error", [MissingFramework("install the [torch] extra"), UserError("bad"),
                                   EnvironmentRefused("no device")], ids=["missing-framework", "user", "environment"])
def test_our_own_errors_are_never_read_as_a_full_disk(error, tmp_path, monkeypatch):
    """Issue 25: writing a .pt without PyTorch on a nearly full disk said the disk was full."""
    monkeypatch.setattr(atomic, "free_bytes", lambda folder: 0)
    assert atomic.write_fault(error, tmp_path) is None
    assert atomic.write_fault(RuntimeError("torch: unexpected"), tmp_path).startswith("no space left")
