"""Kernels of :mod:`bnnfab.sim.kernels` against a naive reference on ±1 integers.

The reference below is plain numpy on int64 ±1 values (design.md §5): a dot product, an explicit
padded map and a loop over output positions. It shares no code with the kernels; bit packing goes
through :mod:`bnnfab.models.bits` only to build the kernels' inputs and read their outputs.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bnnfab.models.bits import pack_bits, unpack_bits
from bnnfab.sim import kernels

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --------------------------------------------------------------------------------------------
# Naive reference


def pm1(bits: np.ndarray) -> np.ndarray:
    return np.where(bits, 1, -1).astype(np.int64)


def ref_popcount(a_bits: np.ndarray, w_bits: np.ndarray) -> np.ndarray:
    """p = number of agreeing positions = (dot + K) / 2."""
    k = a_bits.shape[1]
    dot = pm1(a_bits) @ pm1(w_bits).T
    return (dot + k) // 2


def ref_conv_popcount(x_bits, w_bits, stride, pads, pad_bit):
    """x_bits (B, H, W, C) bools, w_bits (N, kh, kw, C) bools -> p (B, Ho, Wo, N)."""
    b, h, w, c = x_bits.shape
    n, kh, kw, _ = w_bits.shape
    sh, sw = stride
    top, left, bottom, right = pads
    xp = np.full((b, h + top + bottom, w + left + right, c), 1 if pad_bit else -1, dtype=np.int64)
    xp[:, top : top + h, left : left + w] = pm1(x_bits)
    wt = pm1(w_bits)
    ho = (h + top + bottom - kh) // sh + 1
    wo = (w + left + right - kw) // sw + 1
    k = kh * kw * c
    out = np.zeros((b, ho, wo, n), dtype=np.int64)
    for oy in range(ho):
        for ox in range(wo):
            patch = xp[:, oy * sh : oy * sh + kh, ox * sw : ox * sw + kw]
            dot = np.einsum("byxc,nyxc->bn", patch, wt)
            out[:, oy, ox] = (dot + k) // 2
    return out


def ref_int_conv(x, w_bits, stride, pads, pad_value):
    b, h, w, c = x.shape
    n, kh, kw, _ = w_bits.shape
    sh, sw = stride
    top, left, bottom, right = pads
    xp = np.full((b, h + top + bottom, w + left + right, c), pad_value, dtype=np.int64)
    xp[:, top : top + h, left : left + w] = x
    wt = pm1(w_bits)
    ho = (h + top + bottom - kh) // sh + 1
    wo = (w + left + right - kw) // sw + 1
    out = np.zeros((b, ho, wo, n), dtype=np.int64)
    for oy in range(ho):
        for ox in range(wo):
            patch = xp[:, oy * sh : oy * sh + kh, ox * sw : ox * sw + kw]
            out[:, oy, ox] = np.einsum("byxc,nyxc->bn", patch, wt)
    return out


def ref_maxpool(x_bits, kernel, stride):
    b, h, w, c = x_bits.shape
    kh, kw = kernel
    sh, sw = stride
    ho, wo = (h - kh) // sh + 1, (w - kw) // sw + 1
    v = pm1(x_bits)
    out = np.empty((b, ho, wo, c), dtype=np.int64)
    for oy in range(ho):
        for ox in range(wo):
            out[:, oy, ox] = v[:, oy * sh : oy * sh + kh, ox * sw : ox * sw + kw].max(axis=(1, 2))
    return out > 0


def random_bits(rng, shape):
    return rng.random(shape) < rng.uniform(0.2, 0.8)


def random_thresholds(rng, rows, n, k):
    """Mostly in [0, K], with constant channels (<= 0 and > K) mixed in."""
    t = rng.integers(0, k + 1, size=(rows, n))
    special = rng.random((rows, n))
    t[special < 0.1] = rng.integers(-5, 1, size=int((special < 0.1).sum()))
    t[special > 0.9] = rng.integers(k + 1, k + 6, size=int((special > 0.9).sum()))
    return t


def both(fn, *args):
    """The serial and the parallel result, which must be identical."""
    s = fn(*args, parallel=False)
    p = fn(*args, parallel=True)
    np.testing.assert_array_equal(s, p)
    assert s.dtype == p.dtype
    return s


# --------------------------------------------------------------------------------------------
# Dense


@st.composite
def gemm_cases(draw):
    k = draw(st.sampled_from([1, 2, 63, 64, 65, 127, 128, 129, 200, 1000, 1089]))
    n = draw(st.sampled_from([1, 2, 3, 7, 63, 64, 65, 100, 129, 130]))
    m = draw(st.sampled_from([1, 2, 3, 5, 64, 65, 131]))
    r = draw(st.sampled_from([d for d in (1, 2, 3, 5, 13, m) if m % d == 0]))
    return m, n, k, r, draw(st.integers(0, 2**32 - 1))


@SETTINGS
@given(gemm_cases())
def test_gemm_matches_reference(case):
    m, n, k, r, seed = case
    rng = np.random.default_rng(seed)
    a_bits, w_bits = random_bits(rng, (m, k)), random_bits(rng, (n, k))
    pw = kernels.prepack_weights(pack_bits(w_bits), k)
    a = pack_bits(a_bits)
    p_ref = ref_popcount(a_bits, w_bits)

    p = both(kernels.gemm_popcount, a, pw)
    assert p.dtype == np.int32 and p.shape == (m, n)
    np.testing.assert_array_equal(p, p_ref)

    thr = random_thresholds(rng, r, n, k).astype(rng.choice([np.int32, np.int64]))
    bits = both(kernels.gemm_threshold, a, pw, thr)
    assert bits.dtype == np.uint64 and bits.shape == (m, (n + 63) // 64)
    expect = p_ref >= np.tile(thr, (m // r, 1))
    np.testing.assert_array_equal(bits, pack_bits(expect))  # pad bits 0 included


def test_gemm_extreme_thresholds_and_patterns():
    k, n = 130, 70
    a_bits = np.array([np.zeros(k, bool), np.ones(k, bool), np.arange(k) % 2 == 0])
    w_bits = np.tile(a_bits, (24, 1))[:n]
    pw = kernels.prepack_weights(pack_bits(w_bits), k)
    p = both(kernels.gemm_popcount, pack_bits(a_bits), pw)
    np.testing.assert_array_equal(p, ref_popcount(a_bits, w_bits))
    assert p.max() == k and p.min() == 0
    big = np.iinfo(np.int64)
    for t, fires in ((big.min, True), (-1, True), (0, True), (k + 1, False), (big.max, False)):
        out = both(kernels.gemm_threshold, pack_bits(a_bits), pw, np.full((1, n), t))
        np.testing.assert_array_equal(unpack_bits(out, n), np.full((3, n), fires))
        assert not (out[:, -1] >> np.uint64(n % 64)).any()


def test_gemm_large_rows_and_noncontiguous_input():
    rng = np.random.default_rng(7)
    m, n, k = 300, 129, 4608
    a_bits, w_bits = random_bits(rng, (m, k)), random_bits(rng, (n, k))
    pw = kernels.prepack_weights(pack_bits(w_bits), k)
    a = np.asfortranarray(pack_bits(a_bits))
    np.testing.assert_array_equal(both(kernels.gemm_popcount, a, pw), ref_popcount(a_bits, w_bits))
    strided = pack_bits(np.repeat(a_bits, 2, axis=0))[::2]
    np.testing.assert_array_equal(both(kernels.gemm_popcount, strided, pw), ref_popcount(a_bits, w_bits))


def test_prepacked_weights():
    w_bits = np.random.default_rng(0).random((70, 100)) < 0.5
    pw = kernels.prepack_weights(pack_bits(w_bits), 100)
    assert (pw.n, pw.k, pw.kw, pw.n_panels) == (70, 100, 2, 2)
    assert pw.panels.shape == (2, 2, 64) and not pw.panels.flags.writeable
    np.testing.assert_array_equal(pw.panels[1, :, 5], pack_bits(w_bits)[69])
    assert not pw.panels[1, :, 6:].any()


# --------------------------------------------------------------------------------------------
# Conv


@st.composite
def conv_cases(draw):
    c = draw(st.sampled_from([1, 3, 64, 65, 130]))
    kh, kw = draw(st.sampled_from([(1, 1), (3, 3), (2, 3), (3, 1), (5, 5)]))
    sh, sw = draw(st.sampled_from([(1, 1), (2, 2), (1, 2), (3, 2)]))
    pads = draw(st.tuples(*[st.integers(0, 2)] * 4))
    h = draw(st.integers(max(1, kh - pads[0] - pads[2]), 9))
    w = draw(st.integers(max(1, kw - pads[1] - pads[3]), 9))
    b = draw(st.integers(1, 3))
    n = draw(st.sampled_from([1, 5, 64, 70]))
    return b, h, w, c, n, (kh, kw), (sh, sw), pads, draw(st.integers(0, 1)), draw(st.integers(0, 2**32 - 1))


@SETTINGS
@given(conv_cases())
def test_conv_matches_reference(case):
    b, h, w, c, n, kernel, stride, pads, pad_bit, seed = case
    rng = np.random.default_rng(seed)
    x_bits = random_bits(rng, (b, h, w, c))
    w_bits = random_bits(rng, (n, *kernel, c))
    k = kernel[0] * kernel[1] * c
    pw = kernels.prepack_weights(pack_bits(w_bits.reshape(n, k)), k)
    x = pack_bits(x_bits)
    p_ref = ref_conv_popcount(x_bits, w_bits, stride, pads, pad_bit)

    p = both(kernels.conv_popcount, x, c, kernel, stride, pads, pad_bit, pw)
    assert p.dtype == np.int32
    np.testing.assert_array_equal(p, p_ref)

    ho, wo = p_ref.shape[1:3]
    rows = int(rng.choice([1, ho * wo]))
    thr = random_thresholds(rng, rows, n, k)
    bits = both(kernels.conv_threshold, x, c, kernel, stride, pads, pad_bit, pw, thr)
    assert bits.dtype == np.uint64 and bits.shape == (b, ho, wo, (n + 63) // 64)
    expect = p_ref >= thr.reshape(1, ho, wo, n) if rows > 1 else p_ref >= thr[0]
    np.testing.assert_array_equal(bits, pack_bits(expect))


def test_conv_many_bands_and_images():
    """More output rows than one work item holds, several images, a channel count >= 64."""
    rng = np.random.default_rng(3)
    b, h, w, c, n = 3, 21, 19, 128, 66
    x_bits = random_bits(rng, (b, h, w, c))
    w_bits = random_bits(rng, (n, 3, 3, c))
    pw = kernels.prepack_weights(pack_bits(w_bits.reshape(n, -1)), 9 * c)
    p = both(kernels.conv_popcount, pack_bits(x_bits), c, (3, 3), (1, 1), (1, 1, 1, 1), 0, pw)
    np.testing.assert_array_equal(p, ref_conv_popcount(x_bits, w_bits, (1, 1), (1, 1, 1, 1), 0))


# --------------------------------------------------------------------------------------------
# Integer first layers and max-pool


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.uint32, np.int64])
def test_int_dense(dtype):
    rng = np.random.default_rng(int(np.dtype(dtype).num))
    info = np.iinfo(dtype)
    lo, hi = max(info.min, -(2**31)), min(info.max, 2**31 - 1)
    for m, n, k in ((1, 1, 1), (5, 10, 64), (130, 7, 785)):
        x = rng.integers(lo, hi, size=(m, k), endpoint=True).astype(dtype)
        w_bits = random_bits(rng, (n, k))
        out = kernels.int_dense(x, w_bits)
        assert out.dtype == np.int64
        np.testing.assert_array_equal(out, x.astype(np.int64) @ pm1(w_bits).T)


def test_int_dense_extreme_values_are_exact():
    x = np.array([[2**32 - 1] * 1000, [-(2**31)] * 1000], dtype=np.int64)
    w_bits = np.ones((2, 1000), bool)
    w_bits[1, ::2] = False
    np.testing.assert_array_equal(kernels.int_dense(x, w_bits), x @ pm1(w_bits).T)


@SETTINGS
@given(conv_cases(), st.sampled_from([np.uint8, np.int8, np.int32]), st.sampled_from([0, 1, -1]))
def test_int_conv(case, dtype, pad_value):
    b, h, w, c, n, kernel, stride, pads, _, seed = case
    rng = np.random.default_rng(seed)
    info = np.iinfo(dtype)
    x = rng.integers(max(info.min, -1000), min(info.max, 1000), size=(b, h, w, c), endpoint=True).astype(dtype)
    w_bits = random_bits(rng, (n, *kernel, c))
    out = kernels.int_conv(x, w_bits, stride, pads, pad_value)
    assert out.dtype == np.int64
    np.testing.assert_array_equal(out, ref_int_conv(x.astype(np.int64), w_bits, stride, pads, pad_value))


@SETTINGS
@given(
    st.integers(1, 3),
    st.integers(1, 9),
    st.integers(1, 9),
    st.sampled_from([1, 3, 64, 65, 130]),
    st.sampled_from([(1, 1), (2, 2), (3, 3), (2, 3)]),
    st.sampled_from([(1, 1), (2, 2), (3, 2)]),
    st.integers(0, 2**32 - 1),
)
def test_maxpool_or(b, h, w, c, kernel, stride, seed):
    h, w = max(h, kernel[0]), max(w, kernel[1])
    x_bits = np.random.default_rng(seed).random((b, h, w, c)) < 0.3
    out = kernels.maxpool_or(pack_bits(x_bits), kernel, stride)
    np.testing.assert_array_equal(out, pack_bits(ref_maxpool(x_bits, kernel, stride)))


# --------------------------------------------------------------------------------------------
# Input validation


def _dense_setup(n=5, k=70, m=4):
    w = pack_bits(np.ones((n, k), bool))
    return kernels.prepack_weights(w, k), pack_bits(np.ones((m, k), bool))


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: kernels.prepack_weights(np.zeros((3, 2), np.int64), 70), "dtype uint64, not int64"),
        (lambda: kernels.prepack_weights(np.zeros((3, 2), np.uint64), 200), "ceil(k / 64) = 4 words"),
        (lambda: kernels.prepack_weights(np.zeros((3, 2), np.uint64), 0), "k must be a positive integer, not 0"),
        (lambda: kernels.prepack_weights(np.full((3, 2), 2**63, np.uint64), 70), "nonzero pad bits"),
        (lambda: kernels.prepack_weights(np.zeros(3, np.uint64), 70), "shape (N, KW), got shape (3,)"),
    ],
)
def test_prepack_rejects(call, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        call()


def test_gemm_rejects_bad_inputs():
    pw, a = _dense_setup()
    with pytest.raises(ValueError, match=re.escape("pw.kw = 2 words per row (k = 70), got 3")):
        kernels.gemm_popcount(np.zeros((4, 3), np.uint64), pw)
    with pytest.raises(ValueError, match="dtype uint64, not float64"):
        kernels.gemm_popcount(a.astype(float), pw)
    with pytest.raises(ValueError, match="a has nonzero pad bits"):
        kernels.gemm_popcount(a | np.uint64(2**63), pw)
    with pytest.raises(ValueError, match="PackedWeights from prepack_weights"):
        kernels.gemm_popcount(a, a)
    with pytest.raises(ValueError, match=re.escape("M % R == 0, got M = 4 and R = 3")):
        kernels.gemm_threshold(a, pw, np.zeros((3, 5), np.int32))
    with pytest.raises(ValueError, match=re.escape("shape (R, N) with N = 5")):
        kernels.gemm_threshold(a, pw, np.zeros(5, np.int32))
    with pytest.raises(ValueError, match="thr must be integers, not float64"):
        kernels.gemm_threshold(a, pw, np.zeros((1, 5)))


def test_conv_rejects_bad_inputs():
    c, n = 3, 4
    pw = kernels.prepack_weights(pack_bits(np.ones((n, 27), bool)), 27)
    x = pack_bits(np.ones((1, 4, 4, c), bool))
    args = dict(c=c, kernel=(3, 3), stride=(1, 1), pads=(1, 1, 1, 1), pad_bit=0, pw=pw)

    def call(**kw):
        return kernels.conv_popcount(**{"x": x, **args, **kw})

    with pytest.raises(ValueError, match=re.escape("pw.k must be kh*kw*C = 3*3*2 = 18, got 27")):
        call(c=2)
    with pytest.raises(ValueError, match="pad_bit must be 0"):
        call(pad_bit=-1)
    with pytest.raises(ValueError, match="stride must be a positive integer, not 0"):
        call(stride=(0, 1))
    with pytest.raises(ValueError, match="pads must be four non-negative integers"):
        call(pads=(1, 1, 1))
    with pytest.raises(ValueError, match="must fit in the padded 4x4 map"):
        call(kernel=(5, 1), pads=(0, 0, 0, 0), pw=kernels.prepack_weights(pack_bits(np.ones((n, 15), bool)), 15))
    with pytest.raises(ValueError, match=re.escape("shape (B, H, W, CW), got shape (4, 4, 1)")):
        call(x=x[0])
    with pytest.raises(ValueError, match=re.escape("ceil(c / 64) = 2 words per pixel for c = 65, got 1")):
        call(c=65, pw=kernels.prepack_weights(pack_bits(np.ones((n, 585), bool)), 585))
    with pytest.raises(ValueError, match="x has nonzero pad bits"):
        call(x=x | np.uint64(8))
    with pytest.raises(ValueError, match=re.escape("1 row or Ho*Wo = 16 rows")):
        kernels.conv_threshold(x, thr=np.zeros((4, n), np.int32), **args)


def test_int_and_pool_reject_bad_inputs():
    w_bits = np.ones((2, 3), bool)
    with pytest.raises(ValueError, match="x must be integers, not float64"):
        kernels.int_dense(np.zeros((1, 3)), w_bits)
    with pytest.raises(ValueError, match="w_bits must be booleans"):
        kernels.int_dense(np.zeros((1, 3), np.int8), w_bits.astype(np.int8))
    with pytest.raises(ValueError, match="x has K = 4 columns but w_bits has K = 3"):
        kernels.int_dense(np.zeros((1, 4), np.int8), w_bits)
    with pytest.raises(ValueError, match=re.escape("fit in 32 bits (int32 or uint32), got range [0, 4294967296]")):
        kernels.int_dense(np.array([[0, 0, 2**32]]), w_bits)
    with pytest.raises(ValueError, match="pad_value must be 0, 1 or -1, not 2"):
        kernels.int_conv(np.zeros((1, 3, 3, 1), np.uint8), np.ones((1, 3, 3, 1), bool), (1, 1), (1, 1, 1, 1), 2)
    with pytest.raises(ValueError, match=re.escape("maxpool kernel (3, 3) must fit in the 2x2 map")):
        kernels.maxpool_or(np.zeros((1, 2, 2, 1), np.uint64), (3, 3), (1, 1))


# --------------------------------------------------------------------------------------------
# The GEMM core compiles to 512-bit XNOR-popcount (perf.md: re-check after any change or upgrade)

_ASM_PROBE = textwrap.dedent(
    """
    import re, numpy as np
    from bnnfab.sim import kernels as K
    pw = K.prepack_weights(np.zeros((3, 2), np.uint64), 100)
    a = np.zeros((4, 2), np.uint64)
    for par in (False, True):
        K.gemm_popcount(a, pw, parallel=par)
        K.gemm_threshold(a, pw, np.zeros((1, 3), np.int32), parallel=par)
    for fn in (K._gemm_popcount_ser, K._gemm_popcount_par, K._gemm_threshold_ser, K._gemm_threshold_par):
        asm = fn.inspect_asm(fn.signatures[0])
        print(fn.__name__, len(re.findall(r"vpopcntq\\s+[^\\n]*zmm", asm)))
    """
)


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


@pytest.mark.skipif("avx512_vpopcntdq" not in _cpu_flags(), reason="CPU has no AVX-512 VPOPCNTDQ")
def test_gemm_core_uses_zmm_vpopcntq(tmp_path):
    # A fresh cache dir: numba cannot show the assembly of kernels loaded from its cache.
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))
    res = subprocess.run([sys.executable, "-c", _ASM_PROBE], env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    counts = dict(line.split() for line in res.stdout.split("\n") if line)
    assert len(counts) == 4
    # 2 rows x 8 zmm of 8 channels: 16 vpopcntq zmm in the unrolled K loop of each kernel
    assert all(int(v) >= 16 for v in counts.values()), counts


# --------------------------------------------------------------------------------------------
# Integer first layer with the threshold fused (packed output bits), against tests/naive.py


def _int_values_of(rng, dtype, shape, extreme):
    info = np.iinfo(dtype)
    lo, hi = max(info.min, -(2**31)), min(info.max, 2**32 - 1)
    if not extreme:
        lo, hi = max(lo, -300), min(hi, 300)
    x = rng.integers(lo, hi, size=shape, endpoint=True)
    if extreme and x.size:  # the range's ends, several times
        flat = x.reshape(-1)
        flat[rng.random(flat.size) < 0.3] = lo
        flat[rng.random(flat.size) < 0.3] = hi
    return x.astype(dtype)


def _int_thresholds_near(rng, dots):
    """Per-channel thresholds at, next to and far from the reached dot products."""
    n = dots.shape[-1]
    pick = dots.reshape(-1, n)[rng.integers(0, dots.reshape(-1, n).shape[0], n), np.arange(n)]
    t = pick + rng.integers(-1, 2, n)
    far = rng.random(n) < 0.2
    t[far] = rng.choice([np.iinfo(np.int64).min, np.iinfo(np.int64).max, 0], far.sum())
    return t.astype(np.int64)


@SETTINGS
@given(
    st.sampled_from([1, 2, 3, 64, 65, 130]),
    st.sampled_from([1, 5, 63, 64, 65, 129]),
    st.sampled_from([1, 9, 64, 785]),
    st.sampled_from([np.int8, np.uint8, np.int16, np.int32, np.uint32, np.int64]),
    st.booleans(),
    st.integers(0, 2**32 - 1),
)
def test_int_dense_threshold_matches_naive(m, n, k, dtype, extreme, seed):
    import naive

    rng = np.random.default_rng(seed)
    x = _int_values_of(rng, dtype, (m, k), extreme)
    w_bits = random_bits(rng, (n, k))
    dots = x.astype(np.int64) @ naive.pm1(w_bits).T
    t = _int_thresholds_near(rng, dots)
    out = kernels.int_dense_threshold(x, w_bits, t)
    assert out.dtype == np.uint64 and out.shape == (m, (n + 63) // 64)
    np.testing.assert_array_equal(out, pack_bits(dots >= t))  # pad bits 0 included
    np.testing.assert_array_equal(kernels.int_dense(x, kernels.prepack_int_weights(w_bits)), dots)


@SETTINGS
@given(conv_cases(), st.sampled_from([np.uint8, np.int8, np.int16, np.int32]), st.sampled_from([0, 1, -1]), st.booleans())
def test_int_conv_threshold_matches_reference(case, dtype, pad_value, extreme):
    b, h, w, c, n, kernel, stride, pads, _, seed = case
    rng = np.random.default_rng(seed)
    x = _int_values_of(rng, dtype, (b, h, w, c), extreme)
    w_bits = random_bits(rng, (n, *kernel, c))
    dots = ref_int_conv(x.astype(np.int64), w_bits, stride, pads, pad_value)  # pads may exceed the kernel here
    t = _int_thresholds_near(rng, dots)
    out = kernels.int_conv_threshold(x, w_bits, stride, pads, pad_value, t)
    assert out.dtype == np.uint64 and out.shape == dots.shape[:3] + ((n + 63) // 64,)
    np.testing.assert_array_equal(out, pack_bits(dots >= t))


def test_int_threshold_kernels_reject_bad_thresholds():
    w_bits = np.ones((3, 4), bool)
    with pytest.raises(ValueError, match=r"thresholds must be integers of shape \(3,\)"):
        kernels.int_dense_threshold(np.zeros((1, 4), np.int8), w_bits, np.zeros(4, np.int64))
    with pytest.raises(ValueError, match=r"thresholds must be integers of shape \(3,\)"):
        kernels.int_dense_threshold(np.zeros((1, 4), np.int8), w_bits, np.zeros(3))
