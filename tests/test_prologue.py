"""The fused input kernel (bnnfab.sim.prologue) against the reference path.

The reference is :meth:`Simulator.check_inputs` (numpy: ``InputPrologue.apply``, which
tests/test_qonnx.py checks against qonnx's own ``Quant``) followed by ``pack_bits`` for a binary
input. The fused path must give the same words / codes, or the same error, for every prologue,
rounding mode, layout, batch size and input dtype, on values at and around rounding ties and
clipping edges, signed zeros, huge values, infinities and NaN.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bnnfab.models import Dense, Flatten, InputSpec, Model
from bnnfab.models.bits import pack_bits
from bnnfab.models.ir import ROUNDING_MODES, InputPrologue
from bnnfab.sim.functional import InputError, Simulator
from strategies import prologues

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _model(spec: InputSpec, prologue: InputPrologue | None) -> Model:
    layers = [] if len(spec.shape) == 1 else [Flatten()]
    k = int(np.prod(spec.shape))
    return Model(spec, tuple(layers) + (Dense(np.ones((2, k), bool)),), prologue=prologue)


def _reference(sim: Simulator, x: np.ndarray):
    try:
        v = sim.check_inputs(x)
    except InputError as exc:
        return ("error", str(exc))
    return ("ok", pack_bits(v) if sim.model.input.binary else v)


def _fused(sim: Simulator, x: np.ndarray):
    try:
        v = sim._model_input(x)
    except InputError as exc:
        return ("error", str(exc))
    return ("ok", v)


def _same(sim: Simulator, x: np.ndarray) -> None:
    with np.errstate(all="ignore"):
        want = _reference(sim, x)
        got = _fused(sim, x)
    assert got[0] == want[0], (got, want)
    if want[0] == "error":
        assert got[1] == want[1]
        return
    assert got[1].shape == want[1].shape
    if sim.model.input.binary:
        assert got[1].dtype == np.uint64
    np.testing.assert_array_equal(got[1].astype(np.int64) if got[1].dtype.kind == "i" else got[1], want[1])


def _edge_values(p: InputPrologue | None) -> list[float]:
    """Values around the quantizer's ties and clip points when read straight (no ops), plus
    specials; with ops they still land on awkward spots."""
    vals = [0.0, -0.0, 0.5, -0.5, 1.5, -1.5, 2.5, -2.5, 1e-45, -1e-45, 3e38, -3e38, 1e300, -1e300,
            np.inf, -np.inf, 0.49999997, -0.49999997, 0.5000001, 127.5, 128.5, -128.5, 255.5, 65535.5]
    if p is not None and not p.binary:
        lo, hi = p.quant_range
        for n in (lo, hi, 0, 1, -1, 2, 3, (lo + hi) // 2):
            for frac in (-0.5, 0.0, 0.5, 0.25):
                vals.append((n + frac - p.zero_point) * p.scale)
    out = []
    for v in vals:
        out.append(v)
        with np.errstate(all="ignore"):
            for dt in (np.float32, np.float64):
                f = dt(v)
                out += [float(np.nextafter(f, dt(np.inf))), float(np.nextafter(f, dt(-np.inf)))]
    return out


@st.composite
def _cases(draw, allow_nan: bool):
    if draw(st.booleans()):
        shape = (draw(st.sampled_from([1, 2, 63, 64, 65, 130, draw(st.integers(1, 200))])),)
    else:
        shape = (draw(st.integers(1, 5)), draw(st.integers(1, 5)), draw(st.sampled_from([1, 2, 3, 64, 65])))
    bits = draw(st.sampled_from([1, 1, 2, 8, 16, 32]))
    spec = InputSpec(shape, bits=bits, signed=False if bits == 1 else draw(st.booleans()))
    prologue = draw(prologues(spec)) if (not spec.binary or draw(st.integers(0, 3))) else None
    if prologue is not None and draw(st.booleans()):  # the plain quantizer: edge values hit ties exactly
        kw = {} if prologue.binary else dict(scale=prologue.scale, zero_point=prologue.zero_point)
        if not prologue.binary:
            kw.update(bits=prologue.bits, signed=prologue.signed, narrow=prologue.narrow, rounding=prologue.rounding)
        prologue = InputPrologue(prologue.source_shape, (), dtype=prologue.dtype, **kw)
    batch = draw(st.sampled_from([1, 2, 31, 32, 33, 70]))
    source = prologue.source_shape if prologue is not None else shape
    size = int(np.prod(source))
    pool = _edge_values(prologue)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x = np.where(rng.random(batch * size) < 0.5, rng.choice(pool, batch * size), rng.normal(0, 3, batch * size))
    if prologue is not None and not prologue.binary:
        x = np.where(rng.random(x.size) < 0.3, x * prologue.scale, x)  # near the codes' own scale
    if allow_nan and draw(st.booleans()):
        x[rng.integers(0, x.size)] = np.nan
    x = x.reshape((batch,) + source)
    dtype = draw(st.sampled_from(["float32", "float64", "float16", "int8", "uint8", "int64", "bool"]))
    with np.errstate(all="ignore"):
        if dtype == "bool":
            x = x > 0.3
        elif dtype.startswith(("int", "uint")):
            x = np.nan_to_num(x, posinf=0, neginf=0)
            info = np.iinfo(dtype)
            x = np.clip(x, info.min, info.max).astype(dtype)
        else:
            x = x.astype(dtype)
    if draw(st.booleans()) and batch > 1:
        x = x[::-1]  # negative strides
    return _model(spec, prologue), x


@SETTINGS
@given(_cases(allow_nan=False))
def test_fused_inputs_equal_reference(case):
    model, x = case
    _same(Simulator(model), x)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_cases(allow_nan=True))
def test_fused_inputs_with_nan_give_the_reference_error(case):
    model, x = case
    _same(Simulator(model), x)


@pytest.mark.parametrize("rounding", ROUNDING_MODES)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_every_rounding_mode_on_exact_ties(rounding, dtype):
    # codes of x / 0.25 for x on every quarter from -40 to 40: ties, clipping at [-16, 15]
    p = InputPrologue((161,), (), bits=5, scale=0.25, rounding=rounding, dtype=dtype)
    sim = Simulator(_model(InputSpec((161,), bits=5, signed=True), p))
    x = (np.arange(-80, 81) / 8.0).reshape(1, -1)
    x = np.concatenate([x, -x, np.nextafter(x, np.inf), np.nextafter(x, -np.inf)])
    got = sim._model_input(x.astype(dtype)).astype(np.int64)
    np.testing.assert_array_equal(got, sim.check_inputs(x.astype(dtype)))
    # an independent spot check of the tie rules at 0.375 / 0.25 = 1.5 and -0.625 / 0.25 = -2.5
    want = {"half_even": (2, -2), "half_up": (2, -3), "half_down": (1, -2), "up": (2, -3),
            "down": (1, -2), "floor": (1, -3), "ceil": (2, -2)}[rounding]
    col = {v: i for i, v in enumerate(x[0])}
    assert (got[0, col[0.375]], got[0, col[-0.625]]) == want


def test_half_up_keeps_float32_rounding_of_the_reference():
    # |y| + 0.5 rounds to 1.0 in float32 for y = 0.49999997: the graph's Quant gives 1, so must we
    p = InputPrologue((1,), (), bits=8, scale=1.0, rounding="half_up")
    sim = Simulator(_model(InputSpec((1,), bits=8, signed=True), p))
    x = np.array([[0.49999997], [-0.49999997]], np.float32)
    np.testing.assert_array_equal(sim._model_input(x).ravel(), [1, -1])


def test_nan_made_by_the_ops_gives_the_reference_error():
    # inf * 0 is NaN: the reference's int64 cast and range check reject it; the fused path defers
    p = InputPrologue((2,), (("mul", 0.0),), bits=8, scale=1.0)
    sim = Simulator(_model(InputSpec((2,), bits=8, signed=True), p))
    _same(sim, np.array([[1.0, np.inf]], np.float32))
    with pytest.raises(InputError, match="is outside"):
        sim.run(np.array([[1.0, np.inf]], np.float32))


def test_binary_nchw_layout_and_signed_zero():
    # (C, H, W) source -> (H, W, C) bits, packed per pixel; -0.0 >= 0 is +1
    p = InputPrologue((2, 2, 3), (), bits=1)
    sim = Simulator(_model(InputSpec((2, 3, 2), bits=1), p))
    x = np.full((1, 2, 2, 3), -1.0, np.float32)
    x[0, 1, 0, 2] = -0.0  # channel 1, row 0, column 2
    words = sim._model_input(x)
    assert words.shape == (1, 2, 3, 1)
    expect = np.zeros((1, 2, 3, 1), np.uint64)
    expect[0, 0, 2, 0] = 2  # bit 1 = channel 1
    np.testing.assert_array_equal(words, expect)


def test_no_prologue_binary_inputs():
    sim = Simulator(_model(InputSpec((3,), bits=1), None))
    np.testing.assert_array_equal(sim._model_input(np.array([[True, False, True]])), [[5]])
    np.testing.assert_array_equal(sim._model_input(np.array([[-0.0, -1e-300, 7]])), [[5]])
    np.testing.assert_array_equal(sim._model_input(np.array([[np.iinfo(np.int64).min, 0, -1]])), [[2]])
    with pytest.raises(InputError, match="binary inputs must not be NaN \\(sample 1\\)"):
        sim.run(np.array([[0.0, 1.0, 2.0], [0.0, np.nan, 1.0]]))
