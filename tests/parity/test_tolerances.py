"""The tolerance table is data with reasons, complete for every output the harness compares."""
import pytest

from parity.engine.tolerances import (
    DEVICE_CLASSES,
    HOST_ROUNDING,
    OUTPUTS,
    TOLERANCES,
    device_class,
    host_rounding,
    tolerance,
)


def test_every_output_has_an_entry_per_device_class_with_a_reason():
    for output in OUTPUTS:
        for device in DEVICE_CLASSES:
            t = tolerance(output, "float64" if output == "logic" else "float32", device)
            assert t.reason.strip(), (output, device)
            assert t.atol >= 0 and t.rtol >= 0 and t.max_rel_l2 >= 0 and -1 <= t.min_cosine <= 1


def test_cpu_and_gpu_entries_are_measured_and_ascend_marked_provisional():
    """The GPU entries come from the H200's measurements (not the CPU's x10); Ascend stays provisional, and so do
    a pair's autocast entries on a GPU (no GPU has measured CUDA autocast on a pair)."""
    for (output, dtype, device), t in TOLERANCES.items():
        if device == "gpu" and output.startswith("pair_") and dtype in ("bfloat16", "float16"):
            assert t.provisional and "not measured" in t.measured and "gpu:" in t.reason, (output, dtype)
        elif device in ("cpu", "gpu"):
            assert not t.provisional and t.measured and "not measured" not in t.measured, (output, device)
        elif t.atol:
            assert t.provisional and "not measured" in t.measured and "Ascend" in t.reason
    assert "H200" in tolerance("prediction", "float32", "gpu").measured


def test_host_rounding_entries_say_how_they_were_obtained():
    """The two-host gates scale with these where a host did not measure its own rounding."""
    for (framework, device), h in HOST_ROUNDING.items():
        assert 0 < h.rel_l2 <= h.max_abs < 1e-4 and h.reason and h.measured, (framework, device)
        assert h.provisional == ("not measured" in h.measured), (framework, device)
    assert host_rounding("torch", "cuda:1") is HOST_ROUNDING[("torch", "gpu")] and not HOST_ROUNDING[("torch", "gpu")].provisional
    assert "no float64 Conv2D" in host_rounding("ms", "CPU").reason and host_rounding("ms", "Ascend").provisional


def test_exact_and_information_entries():
    w = tolerance("weights")
    assert (w.atol, w.rtol, w.max_rel_l2, w.min_cosine) == (0.0, 0.0, 0.0, 1.0)
    assert tolerance("adam_torch_rule").gate is False
    assert all(t.gate for (o, _, _), t in TOLERANCES.items() if o != "adam_torch_rule")


def test_unknown_key_names_what_is_known():
    with pytest.raises(KeyError, match="known for 'prediction'"):
        tolerance("prediction", "bfloat16", "cpu")  # no bfloat16 budget: MindSpore CPU cannot run it


@pytest.mark.parametrize("torch_device, ms_device, expected", [
    ("cpu", "CPU", "cpu"), ("cuda", "CPU", "gpu"), ("cuda:1", "GPU", "gpu"), ("cpu", "GPU", "gpu"),
    ("cpu", "Ascend", "ascend"), ("cuda", "Ascend", "ascend"),
])
def test_device_class(torch_device, ms_device, expected):
    assert device_class(torch_device, ms_device) == expected
