"""The Numba functional simulator against the naive ±1 reference (tests/naive.py)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import naive
from bnnfab.models import (
    Conv2d,
    Dense,
    Epilogue,
    Flatten,
    FlattenOrder,
    InputSpec,
    MaxPool2d,
    Model,
    Padding,
)
from bnnfab.sim.functional import InputError, Simulator, simulate
from bnnfab.sim.report import plan_model_mst

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _thresholds(rng, n, k):
    """Dot-domain thresholds spread over and beyond the reachable range [-K, K] (constant channels too)."""
    return rng.integers(-k - 3, k + 4, size=n)


def _inputs(rng, spec: InputSpec, batch: int) -> np.ndarray:
    if spec.binary:
        x = rng.normal(size=(batch,) + spec.shape)
        x[rng.random(x.shape) < 0.05] = 0.0  # sign(0) = +1 must hold
        return x
    lo, hi = spec.value_range
    return rng.integers(lo, hi + 1, size=(batch,) + spec.shape)


def _check(model: Model, x: np.ndarray, **kw) -> None:
    want = naive.infer(model, x)
    got = simulate(model, x, return_activations=True, **kw)
    np.testing.assert_array_equal(got.scores, want["scores"])
    np.testing.assert_array_equal(got.classes, want["classes"])
    for i, (a, b) in enumerate(zip(got.activations[:-1], want["outputs"][:-1])):
        if a.dtype == np.bool_:
            np.testing.assert_array_equal(a, b > 0, err_msg=f"layer {i} activations")
        else:  # a Flatten of the integer input passes the integers on
            assert model.takes_integers(i + 1)
            np.testing.assert_array_equal(a, b, err_msg=f"layer {i} activations")
    if model.epilogue is not None:
        np.testing.assert_array_equal(got.logits, want["logits"])


@st.composite
def dense_models(draw):
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    binary = draw(st.booleans())
    k0 = draw(st.sampled_from([1, 2, 63, 64, 65, 127, 128, 200, 1000, 1100]))
    widths = draw(st.lists(st.sampled_from([1, 3, 7, 63, 64, 65, 129, 200]), min_size=0, max_size=2))
    classes = draw(st.integers(1, 12))
    if binary:
        spec = InputSpec((k0,), bits=1)
    else:
        bits = draw(st.sampled_from([2, 4, 8, 12]))
        spec = InputSpec((k0,), bits=bits, signed=draw(st.booleans()))
    layers, k = [], k0
    if draw(st.booleans()):  # a map input flattened first (integer or binary)
        spec = InputSpec((1, k0, 1), bits=spec.bits, signed=spec.signed)
        layers.append(Flatten(order=draw(st.sampled_from(list(FlattenOrder)))))
    for n in widths:
        layers.append(Dense(rng.random((n, k)) < draw(st.sampled_from([0.1, 0.5, 0.9])), _thresholds(rng, n, k)))
        k = n
    layers.append(Dense(rng.random((classes, k)) < 0.5))
    epi = None
    if draw(st.booleans()):
        epi = Epilogue(rng.normal(size=classes), rng.normal(size=classes))
    batch = draw(st.sampled_from([1, 2, 17, 300]))
    return Model(spec, tuple(layers), epilogue=epi), _inputs(rng, spec, batch)


@st.composite
def conv_models(draw):
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    h = draw(st.integers(3, 12))
    w = draw(st.integers(3, 12))
    c = draw(st.sampled_from([1, 2, 3, 5, 63, 64, 65, 130]))
    binary = draw(st.booleans())
    spec = InputSpec((h, w, c), bits=1) if binary else InputSpec((h, w, c), bits=draw(st.sampled_from([4, 8])), signed=draw(st.booleans()))
    layers = []
    shape = spec.shape
    for _ in range(draw(st.integers(1, 2))):
        kh = draw(st.integers(1, min(3, shape[0])))
        kw = draw(st.integers(1, min(3, shape[1])))
        pads = tuple(draw(st.integers(0, kk - 1)) for kk in (kh, kw, kh, kw))
        pads = (pads[0], pads[1], pads[2], pads[3])
        stride = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
        n = draw(st.sampled_from([1, 3, 16, 64, 65, 100]))
        padding = draw(st.sampled_from(list(Padding)))
        cin = shape[2]
        conv = Conv2d(
            rng.random((n, kh, kw, cin)) < 0.5,
            _thresholds(rng, n, kh * kw * cin),
            stride=stride,
            pads=pads,
            padding=padding,
        )
        shape = conv.out_shape(shape)
        layers.append(conv)
        if shape[0] >= 2 and shape[1] >= 2 and draw(st.booleans()):
            pool = MaxPool2d(kernel=(2, 2), stride=draw(st.sampled_from([None, (1, 1), (2, 1)])))
            shape = pool.out_shape(shape)
            layers.append(pool)
    layers.append(Flatten(order=draw(st.sampled_from(list(FlattenOrder)))))
    k = int(np.prod(shape))
    classes = draw(st.integers(2, 10))
    layers.append(Dense(rng.random((classes, k)) < 0.5))
    batch = draw(st.sampled_from([1, 3, 20]))
    return Model(spec, tuple(layers)), _inputs(rng, spec, batch)


@SETTINGS
@given(dense_models())
def test_dense_models_match_reference(case):
    model, x = case
    _check(model, x)


@SETTINGS
@given(conv_models())
def test_conv_models_match_reference(case):
    model, x = case
    _check(model, x)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(dense_models(), conv_models()), st.sampled_from([0, 1, 2, 3, 8, None]))
def test_mst_path_matches_reference(case, depth):
    model, x = case
    schedules = plan_model_mst(model, max_depth=depth)
    _check(model, x, mst=schedules)


def test_zero_padding_parity_is_exact():
    # K - K_valid odd (C = 1, one padded tap) and a threshold whose parity matters: t = -1 vs t = 0
    w = np.ones((2, 1, 3, 1), dtype=bool)
    conv = Conv2d(w, np.array([1, 2]), pads=(0, 1, 0, 1), padding=Padding.ZERO)
    model = Model(InputSpec((1, 3, 1), bits=1), (conv, Flatten(), Dense(np.ones((1, 6), bool))))
    x = np.array([[[[1.0], [-1.0], [1.0]]]])
    _check(model, x)


def test_large_layer_and_chunked_batches_agree():
    rng = np.random.default_rng(7)
    k, n = 1500, 300
    model = Model(
        InputSpec((k,), bits=1),
        (Dense(rng.random((n, k)) < 0.5, _thresholds(rng, n, k)), Dense(rng.random((10, n)) < 0.5)),
    )
    x = rng.normal(size=(700, k))
    whole = Simulator(model).run(x)
    chunked = Simulator(model).run(x, batch_size=64)
    np.testing.assert_array_equal(whole.scores, chunked.scores)
    np.testing.assert_array_equal(whole.scores, naive.infer(model, x)["scores"])


def test_argmax_ties_go_to_lowest_index():
    # identical class weights -> identical scores -> class 0
    w = np.zeros((4, 8), dtype=bool)
    model = Model(InputSpec((8,), bits=1), (Dense(w),))
    res = simulate(model, np.ones((3, 8)))
    assert (res.classes == 0).all()


@pytest.fixture(scope="module")
def int_model():
    rng = np.random.default_rng(0)
    return Model(InputSpec((4,), bits=8), (Dense(rng.random((3, 4)) < 0.5, [0, 1, 2]), Dense(rng.random((2, 3)) < 0.5)))


@pytest.mark.parametrize(
    "x, message",
    [
        (np.zeros((2, 5), np.int64), "inputs must have shape (batch, 4) for this model, got (2, 5)"),
        (np.zeros((4,), np.int64), "got (4,)"),
        (np.full((1, 4), 256), "unsigned 8-bit integers in [0, 255]; value 256 at index (0, 0)"),
        (np.full((1, 4), -1), "value -1 at index (0, 0) is outside"),
        (np.array([[0.5, 0, 0, 0]]), "value 0.5 at index (0, 0) is not an integer"),
        (np.zeros((0, 4), np.int64), "batch size 0"),
        (np.array([["a", "b", "c", "d"]]), "got dtype <U1"),
    ],
)
def test_bad_inputs_name_rule_and_value(int_model, x, message):
    with pytest.raises(InputError) as exc:
        simulate(int_model, x)
    assert message in str(exc.value)


def test_binary_input_rejects_nan():
    model = Model(InputSpec((3,), bits=1), (Dense(np.ones((2, 3), bool)),))
    with pytest.raises(InputError, match="NaN"):
        simulate(model, np.array([[0.0, np.nan, 1.0]]))


def test_schedule_for_wrong_layer_is_rejected(int_model):
    from bnnfab.sim.mst import plan_mst

    with pytest.raises(ValueError, match="not a binary Dense/Conv2d layer"):
        Simulator(int_model, mst={0: plan_mst(np.ones((3, 4), bool))})
    with pytest.raises(ValueError, match="schedule is for N=3, K=4"):
        Simulator(int_model, mst={1: plan_mst(np.ones((3, 4), bool))})
