"""The pair's settings check (parity.pair.settings): padding a layer computes from its input is compared at the
input's size, so a difference that exists at some sizes and not others is reported only where it exists."""
from __future__ import annotations

from parity.pair.settings import compare_settings, same_padding

TORCH_POOL = ("MaxPool2d", {"kernel_size": (3, 3), "stride": (2, 2), "padding": (1, 1, 1, 1)})
MS_SAME_POOL = ("MaxPool2d", {"kernel_size": (3, 3), "stride": (2, 2), "padding": "same", "dilation": (1, 1)})


def test_same_padding_puts_the_odd_pixel_at_the_end() -> None:
    assert same_padding((32, 32), (3, 3), (2, 2), (1, 1)) == (0, 1, 0, 1)
    assert same_padding((33, 33), (3, 3), (2, 2), (1, 1)) == (1, 1, 1, 1)
    assert same_padding((16, 16), (1, 1), (2, 2), (1, 1)) == (0, 0, 0, 0)  # a 1x1 stride-2 'same' conv pads nothing


def test_a_same_padded_pool_differs_from_a_padded_one_at_even_sizes_only() -> None:
    (diff,) = compare_settings("maxpool", "max_pool", TORCH_POOL, MS_SAME_POOL, (1, 64, 32, 32))
    assert (diff.key, diff.torch_value, diff.other_value) == ("padding", (1, 1, 1, 1), (0, 1, 0, 1))
    assert "'same' at 32x32" in diff.describe() and "`maxpool` / `max_pool`" in diff.describe()
    assert compare_settings("maxpool", "max_pool", TORCH_POOL, MS_SAME_POOL, (1, 64, 33, 33)) == []


def test_only_layers_both_readers_know_are_compared_and_activation_variants_differ() -> None:
    assert compare_settings("a", "a", None, ("GELU", {"approximate": "tanh"}), None) == []
    assert compare_settings("a", "a", ("Block", {}), ("Other", {}), None) == []  # a user's own classes
    (diff,) = compare_settings("act", "act", ("ReLU", {}), ("ReLU6", {}), None)
    assert diff.key == "(kind)" and "ReLU6 in MindSpore, ReLU in PyTorch" in diff.describe()
