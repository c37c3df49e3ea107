"""The model IR: construction rules, error messages, immutability, threshold arithmetic."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bnnfab import models
from bnnfab.models import (
    Conv2d,
    Dense,
    Epilogue,
    Flatten,
    InputSpec,
    MaxPool2d,
    Model,
    ModelError,
    Padding,
    pack_bits,
    threshold_from_affine,
    unpack_bits,
)


def _out(n, k):
    return Dense(np.zeros((n, k), bool))


def test_all_names_are_separate_and_exported():
    # a missing comma in __all__ joins two names silently
    for name in models.__all__:
        assert hasattr(models, name), name


def test_shapes_walk_through_a_conv_net():
    m = Model(
        InputSpec((8, 8, 3), bits=8),
        (
            Conv2d(np.zeros((16, 3, 3, 3), bool), np.zeros(16, int), pads=1),
            MaxPool2d(2),
            Conv2d(np.zeros((8, 3, 3, 16), bool), np.zeros(8, int), stride=2, padding="+1", pads=(1, 1, 0, 0)),
            Flatten("chw"),
            _out(10, 8 * 2 * 2),
        ),
    )
    assert m.shapes == ((8, 8, 3), (8, 8, 16), (4, 4, 16), (2, 2, 8), (32,), (10,))
    assert m.takes_integers(0) and not m.takes_integers(2)
    assert m.positions(0) == 64 and m.positions(4) == 1


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: Model(InputSpec((5,), bits=1), (_out(2, 4),)), "layer 0 (dense): weights have K=4 inputs but the layer receives 5 values"),
        (lambda: Model(InputSpec((4,), bits=1), (Dense(np.zeros((2, 4), bool), [0, 0], name="fc"),)), "layer 0 (dense 'fc'): the last layer must emit integer scores"),
        (lambda: Model(InputSpec((4,), bits=1), (_out(3, 4), _out(2, 3))), "layer 0 (dense): only the last layer may omit thresholds"),
        (lambda: Model(InputSpec((4, 4, 1), bits=1), (_out(2, 16),)), "a dense layer takes a flat vector; got shape (4, 4, 1) (add a Flatten)"),
        (lambda: Model(InputSpec((4, 4, 1), bits=8), (MaxPool2d(2), Flatten(), _out(2, 4))), "max-pool works on bits"),
        (lambda: Model(InputSpec((4,), bits=1), ()), "needs at least one layer"),
        (lambda: Model(InputSpec((4, 4, 1), bits=1), (Flatten(),)), "must end with a Dense layer"),
        (lambda: Dense(np.zeros((2, 3), bool), [1, 2, 3]), "thresholds must have one entry per output channel (2), got 3"),
        (lambda: Dense(np.zeros((2, 3)) + 0.5), "weights must be booleans (bit 1 = +1, bit 0 = -1), got dtype float64"),
        (lambda: Dense(np.zeros((2, 3), bool), [0.5, 1]), "thresholds must be integers, got dtype float64"),
        (lambda: Conv2d(np.zeros((2, 3, 3, 1), bool), stride=0), "stride must be integers >= 1, not 0"),
        (lambda: Conv2d(np.zeros((2, 3, 3, 1), bool), pads=3), "each pad must be smaller than the kernel (3, 3)"),
        (lambda: Conv2d(np.zeros((2, 3, 3, 1), bool), padding="reflect"), "padding must be one of 'zero', '+1', '-1', not 'reflect'"),
        (lambda: Flatten("nchw"), "order must be 'hwc' or 'chw', not 'nchw'"),
        (lambda: InputSpec((4,), bits=0), "bits must be an integer from 1 (binary) to 32, not 0"),
        (lambda: InputSpec((4, 4)), "shape must be (K,) or (H, W, C)"),
        (lambda: InputSpec((4,), bits=1, signed=True), "signed must be False"),
        (lambda: Epilogue([1.0, 2.0], [0.0]), "scale and bias must have the same length"),
        (lambda: Epilogue([np.inf], [0.0]), "must be finite"),
        (
            lambda: Model(InputSpec((4,), bits=1), (_out(2, 4),), epilogue=Epilogue([1.0] * 3, [0.0] * 3)),
            "epilogue: has 3 classes but the last layer emits 2 scores",
        ),
        (
            lambda: Model(InputSpec((3, 3, 2), bits=1), (Conv2d(np.zeros((2, 2, 2, 3), bool), [0, 0]), Flatten(), _out(2, 8))),
            "weights have C=3 input channels but the map has 2",
        ),
    ],
)
def test_rules_are_named_with_the_value(build, message):
    with pytest.raises(ModelError) as exc:
        build()
    assert message in str(exc.value)


def test_layers_are_immutable_and_copied():
    w = np.zeros((2, 3), bool)
    layer = Dense(w, [0, 1])
    w[0, 0] = True
    assert not layer.weights[0, 0]
    with pytest.raises(ValueError):
        layer.weights[0, 0] = True
    with pytest.raises(AttributeError):
        layer.name = "x"  # type: ignore[misc]


def test_equality_compares_arrays():
    a = Dense(np.zeros((2, 3), bool), [0, 1])
    assert a == Dense(np.zeros((2, 3), bool), [0, 1])
    assert a != Dense(np.zeros((2, 3), bool), [0, 2])
    assert a != Dense(np.ones((2, 3), bool), [0, 1])


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 300), st.floats(-400, 400, allow_nan=False))
def test_popcount_threshold_matches_real_threshold(k, tau):
    # T = ceil((tau + K) / 2) decides dot >= tau for every reachable popcount (design.md §2)
    t, flip = threshold_from_affine(np.array([1.0]), np.array([tau]))
    layer = Dense(np.zeros((1, k), bool), t)
    big_t = int(layer.popcount_thresholds()[0])
    # exact rational arithmetic, no float rounding; constant channels come out clipped to [0, K+1]
    assert big_t == min(max(math.ceil((Fraction(tau) + k) / 2), 0), k + 1)
    for p in range(k + 1):
        assert (p >= big_t) == (2 * p - k >= tau)


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 300), st.floats(-400, 400, allow_nan=False))
def test_negative_scale_flip(k, tau):
    # a channel with negative scale fires when dot <= tau; after flipping weights dot' = -dot
    t, flip = threshold_from_affine(np.array([-2.0]), np.array([tau]))
    assert flip[0]
    big_t = int(Dense(np.zeros((1, k), bool), t).popcount_thresholds()[0])
    assert big_t == min(max(k - math.floor((Fraction(tau) + k) / 2), 0), k + 1)  # the contract's form
    for p in range(k + 1):  # p: popcount of the ORIGINAL weights; flipped popcount is K - p
        assert ((k - p) >= big_t) == (2 * p - k <= tau)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 200), st.integers(1, 5), st.data())
def test_pack_unpack_round_trip(k, rows, data):
    seed = data.draw(st.integers(0, 2**31))
    bits = np.random.default_rng(seed).random((rows, k)) < 0.5
    words = pack_bits(bits)
    assert words.dtype == np.uint64 and words.shape == (rows, (k + 63) // 64)
    np.testing.assert_array_equal(unpack_bits(words, k), bits)
    # element j is bit j % 64 of word j // 64; pad bits are 0
    for j in range(k):
        assert bool((int(words[0, j // 64]) >> (j % 64)) & 1) == bits[0, j]
    assert int(words[0, -1]) >> (k - 64 * (words.shape[1] - 1)) == 0 if k % 64 else True


def test_padding_values():
    assert [p.value_pm1 for p in Padding] == [0, 1, -1]


def test_extreme_thresholds_do_not_overflow():
    t = np.array([np.iinfo(np.int64).max, np.iinfo(np.int64).min, 5, -5, 0])
    big_t = Dense(np.zeros((5, 4), bool), t).popcount_thresholds()
    np.testing.assert_array_equal(big_t, [5, 0, 5, 0, 2])


def test_metadata_is_read_only_and_flatten_does_not_wrap():
    m = Model(InputSpec((4,), bits=1), (_out(2, 4),), metadata={"a": "b"})
    with pytest.raises(TypeError):
        m.metadata["a"] = "c"  # type: ignore[index]
    with pytest.raises(ModelError, match="receives 18446744073709551620 values"):
        Model(InputSpec((2**62 + 1, 1, 4), bits=1), (Flatten(), _out(2, 4)))
