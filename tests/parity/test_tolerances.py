"""The tolerance table is data with reasons, complete for every output the harness compares."""
import pytest

from parity.engine.tolerances import DEVICE_CLASSES, OUTPUTS, TOLERANCES, device_class, tolerance


def test_every_output_has_an_entry_per_device_class_with_a_reason():
    for output in OUTPUTS:
        for device in DEVICE_CLASSES:
            t = tolerance(output, "float64" if output == "logic" else "float32", device)
            assert t.reason.strip(), (output, device)
            assert t.atol >= 0 and t.rtol >= 0 and t.max_rel_l2 >= 0 and -1 <= t.min_cosine <= 1


def test_cpu_entries_are_measured_and_accelerators_marked_provisional():
    for (output, _, device), t in TOLERANCES.items():
        if device == "cpu":
            assert not t.provisional and t.measured, output
        elif t.atol:
            assert t.provisional and "not measured" in t.measured


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
