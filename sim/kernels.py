"""XNOR-popcount kernels of the functional simulator: binary GEMM and conv, integer first layers,
OR max-pooling.

Encoding (design.md §2): bit 1 is +1, bit 0 is -1; element ``k`` of a vector is bit ``k % 64`` of
uint64 word ``k // 64``; pad bits are 0. A binary layer's accumulator is
``p = popcount(XNOR(a, w))`` over the K real bits, computed as ``K - popcount(a ^ w)``: pad bits
are 0 on both sides, so their XOR is 0 and they never count.

How the GEMM core reaches the machine's XNOR-popcount limit (perf.md):

* Weights are pre-packed (:func:`prepack_weights`) as panels of 64 output channels per K-word,
  ``panels[p, q, j] = w[64 p + j, q]``. The core broadcasts one activation word against a panel
  row, so the 64 lanes are 64 channels: no horizontal sums, and a panel's 64 results are exactly
  one packed output word, which makes the fused threshold-to-bits epilogue free.
* The accumulator tile (2 rows x 64 channels of uint64) is a stack ``alloca``
  (:func:`~bnnfab.sim._nb.stack_u64`) that LLVM promotes to 16 zmm registers; with
  :func:`~bnnfab.sim._nb.wide_vectors` the K loop is 16 x (vpxorq, vpopcntq, vpaddq) per K-word
  and nothing else but loads. ``tests/test_kernels.py`` pins this in the assembly.
* Parallel kernels split the work into (row block, panel) items — conv into (image, band of
  output rows) items, each building its patches into its own buffer — so every output word is
  written by exactly one item and results do not depend on the thread count.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numba import carray, prange

from ._nb import GATHER8, jit, pjit, popcount64, stack_i16, stack_i32, stack_i64, stack_u64, wide_vectors

__all__ = [
    "PackedWeights",
    "prepack_weights",
    "gemm_popcount",
    "gemm_threshold",
    "conv_popcount",
    "conv_threshold",
    "IntWeights",
    "prepack_int_weights",
    "int_dense",
    "int_dense_threshold",
    "int_conv",
    "int_conv_threshold",
    "maxpool_or",
]

_LANES = 64  # output channels per weight panel = bits per packed output word
_ROW_BLOCK = 64  # activation rows per GEMM work item: a block and a panel stay in L1/L2
_BAND_ROWS = 64  # target patches per conv work item (whole output rows, at least one)


# --------------------------------------------------------------------------------------------
# Weights


@dataclass(frozen=True, eq=False)
class PackedWeights:
    """Binary weights pre-packed for the GEMM core; made by :func:`prepack_weights`.

    Attributes
    ----------
    n : int
        Output channels.
    k : int
        Real bits per channel (the reduction length K).
    kw : int
        uint64 words per channel, ``ceil(k / 64)``.
    panels : numpy.ndarray of uint64, shape (ceil(n / 64), kw, 64), read-only
        ``panels[p, q, j]`` is word ``q`` of channel ``64 p + j``; channels past ``n`` are 0.
    """

    n: int
    k: int
    kw: int
    panels: np.ndarray

    @property
    def n_panels(self) -> int:
        """Number of 64-channel panels, ``ceil(n / 64)``: the words of a packed output row."""
        return self.panels.shape[0]


def prepack_weights(w_packed: np.ndarray, k: int) -> PackedWeights:
    """Pack a layer's weights into 64-channel panels for :func:`gemm_popcount` and friends.

    Parameters
    ----------
    w_packed : numpy.ndarray of uint64, shape (N, KW)
        Packed weight bits of each output channel (bit 1 = +1), ``KW = ceil(k / 64)``, pad bits 0.
        A conv's weights are packed from the (N, kh, kw, C) booleans reshaped to (N, kh*kw*C).
    k : int
        Real bits per channel, ``k >= 1``.

    Returns
    -------
    PackedWeights

    Raises
    ------
    ValueError
        On a wrong dtype, shape or word count, or nonzero pad bits.
    """
    k = _positive_int(k, "k")
    w = _packed_array(w_packed, "w_packed", 2, "(N, KW)")
    n, kw = w.shape
    if n < 1:
        raise ValueError(f"w_packed must hold at least one channel, got shape {w.shape}")
    if kw != _n_words(k):
        raise ValueError(f"w_packed must have ceil(k / 64) = {_n_words(k)} words per row for k = {k}, got {kw}")
    _check_pad_bits(w, k, "w_packed")
    n_panels = _n_words(n)
    padded = np.zeros((n_panels * _LANES, kw), dtype=np.uint64)
    padded[:n] = w
    panels = np.ascontiguousarray(padded.reshape(n_panels, _LANES, kw).transpose(0, 2, 1))
    panels.flags.writeable = False
    return PackedWeights(n=n, k=k, kw=kw, panels=panels)


# --------------------------------------------------------------------------------------------
# Public binary kernels


def gemm_popcount(a: np.ndarray, pw: PackedWeights, parallel: bool = True) -> np.ndarray:
    """Binary GEMM: ``p[m, n] = popcount(XNOR(a[m], w[n]))`` over the K real bits.

    Parameters
    ----------
    a : numpy.ndarray of uint64, shape (M, KW)
        Packed activations, pad bits 0.
    pw : PackedWeights
    parallel : bool
        Use all Numba threads (results are identical either way).

    Returns
    -------
    numpy.ndarray of int32, shape (M, N), values in [0, K].

    Raises
    ------
    ValueError
        On a wrong dtype, shape or word count, or nonzero pad bits in ``a``.
    """
    _check_pw(pw)
    a = _activations(a, pw)
    out = np.empty((a.shape[0], pw.n), dtype=np.int32)
    (_gemm_popcount_par if parallel else _gemm_popcount_ser)(a, pw.panels, pw.k, out)
    return out


def gemm_threshold(a: np.ndarray, pw: PackedWeights, thr: np.ndarray, parallel: bool = True) -> np.ndarray:
    """Binary GEMM with the threshold fused: output bit ``n`` of row ``m`` is
    ``p[m, n] >= thr[m % R, n]``.

    Parameters
    ----------
    a : numpy.ndarray of uint64, shape (M, KW)
        Packed activations, pad bits 0.
    pw : PackedWeights
    thr : numpy.ndarray of integers, shape (R, N)
        Popcount thresholds, ``M % R == 0``; any integer, ``<= 0`` (always fires) and ``> K``
        (never fires) included.
    parallel : bool
        Use all Numba threads (results are identical either way).

    Returns
    -------
    numpy.ndarray of uint64, shape (M, ceil(N / 64))
        Packed output bits, pad bits 0.

    Raises
    ------
    ValueError
        On a wrong dtype or shape, ``M % R != 0``, or nonzero pad bits in ``a``.
    """
    _check_pw(pw)
    a = _activations(a, pw)
    limits = _mismatch_limits(thr, pw)
    m = a.shape[0]
    if m % limits.shape[0]:
        raise ValueError(f"thr must have R rows with M % R == 0, got M = {m} and R = {limits.shape[0]}")
    out = np.empty((m, pw.n_panels), dtype=np.uint64)
    (_gemm_threshold_par if parallel else _gemm_threshold_ser)(a, pw.panels, limits, out)
    return out


def conv_popcount(x, c, kernel, stride, pads, pad_bit, pw: PackedWeights, parallel: bool = True) -> np.ndarray:
    """Binary convolution: popcounts over all ``K = kh*kw*C`` taps of each output position.

    Parameters
    ----------
    x : numpy.ndarray of uint64, shape (B, H, W, CW)
        Packed feature map: the C channel bits of a pixel in ``CW = ceil(C / 64)`` words, pad 0.
    c : int
        Channels C.
    kernel, stride : (int, int)
        ``(kh, kw)`` and ``(sh, sw)``.
    pads : (int, int, int, int)
        ``(top, left, bottom, right)``; taps outside the map hold ``pad_bit`` in all C channels.
    pad_bit : {0, 1}
        Activation bit of padded taps (0 = -1, 1 = +1).
    pw : PackedWeights
        Made from the (N, kh, kw, C) weight bits reshaped to (N, K): patch bit
        ``(ky*kw + kx)*C + c``.
    parallel : bool
        Use all Numba threads (results are identical either way).

    Returns
    -------
    numpy.ndarray of int32, shape (B, Ho, Wo, N), ``Ho = (H + top + bottom - kh)//sh + 1``,
    ``Wo`` likewise.

    Raises
    ------
    ValueError
        On inconsistent shapes, geometry or dtypes, or nonzero pad bits in ``x``.
    """
    _check_pw(pw)
    g = _conv_geometry(x, c, kernel, stride, pads, pad_bit, pw)
    out = np.empty((g.b * g.ho * g.wo, pw.n), dtype=np.int32)
    fn = _conv_popcount_par if parallel else _conv_popcount_ser
    fn(g.x, g.c, g.kh, g.kw, g.sh, g.sw, g.top, g.left, g.pad_bit, g.ho, g.wo, g.band, pw.panels, pw.k, out)
    return out.reshape(g.b, g.ho, g.wo, pw.n)


def conv_threshold(x, c, kernel, stride, pads, pad_bit, pw: PackedWeights, thr, parallel: bool = True) -> np.ndarray:
    """Binary convolution with the threshold fused: bit ``n`` at ``(b, oy, ox)`` is
    ``p >= thr[r, n]`` with ``r = 0`` when ``R == 1``, else ``r = oy*Wo + ox``.

    Parameters are those of :func:`conv_popcount`, plus ``thr``: integers of shape (R, N) with
    ``R == 1`` or ``R == Ho*Wo`` (per output position, row-major).

    Returns
    -------
    numpy.ndarray of uint64, shape (B, Ho, Wo, ceil(N / 64)), packed output bits, pad bits 0.

    Raises
    ------
    ValueError
        On inconsistent shapes, geometry or dtypes, ``R`` not 1 or ``Ho*Wo``, or nonzero pad bits.
    """
    _check_pw(pw)
    g = _conv_geometry(x, c, kernel, stride, pads, pad_bit, pw)
    limits = _mismatch_limits(thr, pw)
    if limits.shape[0] not in (1, g.ho * g.wo):
        raise ValueError(
            f"thr must have 1 row or Ho*Wo = {g.ho * g.wo} rows (one per output position), "
            f"got {limits.shape[0]}"
        )
    out = np.empty((g.b * g.ho * g.wo, pw.n_panels), dtype=np.uint64)
    fn = _conv_threshold_par if parallel else _conv_threshold_ser
    fn(g.x, g.c, g.kh, g.kw, g.sh, g.sw, g.top, g.left, g.pad_bit, g.ho, g.wo, g.band, pw.panels, limits, out)
    return out.reshape(g.b, g.ho, g.wo, pw.n_panels)


def maxpool_or(x: np.ndarray, kernel, stride) -> np.ndarray:
    """Max-pooling of packed bits: the OR over each window (no padding, floor mode).

    Parameters
    ----------
    x : numpy.ndarray of uint64, shape (B, H, W, CW)
    kernel, stride : (int, int)

    Returns
    -------
    numpy.ndarray of uint64, shape (B, Ho, Wo, CW), ``Ho = (H - kh)//sh + 1``, ``Wo`` likewise.

    Raises
    ------
    ValueError
        On a wrong dtype or rank, or a window larger than the map.
    """
    x = _packed_array(x, "x", 4, "(B, H, W, CW)")
    kh, kw = _pair(kernel, "kernel")
    sh, sw = _pair(stride, "stride")
    _, h, w, _ = x.shape
    if kh > h or kw > w:
        raise ValueError(f"maxpool kernel {(kh, kw)} must fit in the {h}x{w} map")
    ho, wo = (h - kh) // sh + 1, (w - kw) // sw + 1
    out = np.empty((x.shape[0], ho, wo, x.shape[3]), dtype=np.uint64)
    _maxpool_or(x, kh, kw, sh, sw, out)
    return out


# --------------------------------------------------------------------------------------------
# Public integer kernels (first layer)

_INT_MIN, _INT_MAX = -(2**31), 2**32 - 1  # int32 and uint32 values: every sum fits in int64
_NEVER = np.iinfo(np.int64).max  # threshold of the pad channels: no dot product reaches it


@dataclass(frozen=True, eq=False)
class IntWeights:
    """±1 weights of an integer-input layer, pre-packed for :func:`int_dense` and friends.

    ``masks[p, k, j]`` is -1 (all ones) when weight ``k`` of channel ``64 p + j`` is +1, else 0
    (channels past ``n`` are 0). The kernels compute ``s_plus = sum_k x[k] & mask`` on 64
    channels at once and the dot product as ``2 s_plus - sum_k x[k]``: one AND and one add per
    64-bit lane and input value, no multiply. Made by :func:`prepack_int_weights`.
    """

    n: int
    k: int
    masks: np.ndarray  # (ceil(n / 64), k, 64) int64, read-only
    _narrow: dict = field(default_factory=dict, repr=False)

    @property
    def n_panels(self) -> int:
        return self.masks.shape[0]

    def masks_as(self, dtype) -> np.ndarray:
        """:attr:`masks` in another integer dtype (int16/int32: -1 stays all ones), cached."""
        dt = np.dtype(dtype)
        if dt == self.masks.dtype:
            return self.masks
        if dt not in self._narrow:
            m = np.ascontiguousarray(self.masks.astype(dt))
            m.flags.writeable = False
            self._narrow[dt] = m
        return self._narrow[dt]


def prepack_int_weights(w_bits: np.ndarray) -> IntWeights:
    """Pack an integer layer's weights, booleans (N, K) (True = +1), into :class:`IntWeights`."""
    w = _bool_array(w_bits, "w_bits", 2, "(N, K)")
    n, k = w.shape
    n_panels = _n_words(n)
    padded = np.zeros((n_panels * _LANES, k), dtype=np.int64)
    padded[:n] = np.where(w, -1, 0)
    masks = np.ascontiguousarray(padded.reshape(n_panels, _LANES, k).transpose(0, 2, 1))
    masks.flags.writeable = False
    return IntWeights(n=n, k=k, masks=masks)


def _int_weights(w, shape_rank: int, layout: str) -> tuple[IntWeights, tuple[int, ...]]:
    """IntWeights of ``w`` (booleans of rank ``shape_rank`` flattened to (N, K), or IntWeights
    already) and the booleans' shape."""
    if isinstance(w, IntWeights):
        return w, (w.n, w.k)
    wb = _bool_array(w, "w_bits", shape_rank, layout)
    return prepack_int_weights(wb.reshape(wb.shape[0], -1)), wb.shape


def _int_thresholds(thresholds, iw: IntWeights) -> np.ndarray:
    t = np.asarray(thresholds)
    if t.dtype.kind not in "iu" or t.shape != (iw.n,):
        raise ValueError(f"thresholds must be integers of shape ({iw.n},), got {t.dtype} {t.shape}")
    if t.dtype == np.uint64 and t.size and int(t.max()) > _NEVER:
        t = np.minimum(t, np.uint64(_NEVER))  # the same test: no dot product reaches either
    out = np.full(iw.n_panels * _LANES, _NEVER, dtype=np.int64)
    out[: iw.n] = t
    return out


def int_dense(x: np.ndarray, w_bits) -> np.ndarray:
    """Integer-input dense layer: ``acc[m, n] = sum_k x[m, k] * (+1 if w_bits[n, k] else -1)``.

    Parameters
    ----------
    x : numpy.ndarray of integers, shape (M, K)
        Values in the int32 or uint32 range (e.g. 8-bit pixels, signed or not).
    w_bits : numpy.ndarray of bool, shape (N, K), or IntWeights
        True = +1, False = -1.

    Returns
    -------
    numpy.ndarray of int64, shape (M, N), exact.

    Raises
    ------
    ValueError
        On a wrong dtype, shape or value range.
    """
    x = _int_values(x, "x", 2, "(M, K)")
    iw, wshape = _int_weights(w_bits, 2, "(N, K)")
    if x.shape[1] != iw.k:
        raise ValueError(f"x has K = {x.shape[1]} columns but w_bits has K = {wshape[1]}")
    out = np.empty((x.shape[0], iw.n), dtype=np.int64)
    _int_dense_acc(x, iw.masks, out)
    return out


def int_dense_threshold(x: np.ndarray, w_bits, thresholds) -> np.ndarray:
    """:func:`int_dense` with the threshold fused: bit ``n`` of row ``m`` is
    ``acc[m, n] >= thresholds[n]``, packed (uint64 (M, ceil(N / 64)), pad bits 0)."""
    x = _int_values(x, "x", 2, "(M, K)")
    iw, wshape = _int_weights(w_bits, 2, "(N, K)")
    if x.shape[1] != iw.k:
        raise ValueError(f"x has K = {x.shape[1]} columns but w_bits has K = {wshape[1]}")
    thr = _int_thresholds(thresholds, iw)
    out = np.empty((x.shape[0], iw.n_panels), dtype=np.uint64)
    _int_dense_thr(x, iw.masks, thr, out)
    return out


def _int_conv_args(x, w_bits, stride, pads, pad_value):
    x = _int_values(x, "x", 4, "(B, H, W, C)")
    if isinstance(w_bits, tuple):  # (IntWeights, (kh, kw)) from the simulator
        iw, (kh, kw) = w_bits
        c = iw.k // (kh * kw)
    else:
        w = _bool_array(w_bits, "w_bits", 4, "(N, kh, kw, C)")
        _, kh, kw, c = w.shape
        iw = prepack_int_weights(w.reshape(w.shape[0], -1))
    if x.shape[3] != c:
        raise ValueError(f"x has C = {x.shape[3]} channels but w_bits has C = {c}")
    sh, sw = _pair(stride, "stride")
    top, left, bottom, right = _pads(pads)
    if pad_value not in (0, 1, -1) or isinstance(pad_value, bool):
        raise ValueError(f"pad_value must be 0, 1 or -1, not {pad_value!r}")
    _, h, wd, _ = x.shape
    ho, wo = _out_size(h, wd, kh, kw, sh, sw, top, left, bottom, right)
    band = max(1, min(ho, _BAND_ROWS // wo))
    return x, iw, (kh, kw, sh, sw, top, left, int(pad_value), ho, wo, band)


def int_conv(x: np.ndarray, w_bits, stride, pads, pad_value: int) -> np.ndarray:
    """Integer-input convolution with ±1 weights; padded positions hold ``pad_value``.

    Parameters
    ----------
    x : numpy.ndarray of integers, shape (B, H, W, C)
        Values in the int32 or uint32 range.
    w_bits : numpy.ndarray of bool, shape (N, kh, kw, C)
        True = +1, False = -1. (Or ``(IntWeights, (kh, kw))`` of the (N, kh*kw*C) weights.)
    stride : (int, int)
    pads : (int, int, int, int)
        ``(top, left, bottom, right)``.
    pad_value : {0, 1, -1}
        Integer value of padded positions (0 = zero padding).

    Returns
    -------
    numpy.ndarray of int64, shape (B, Ho, Wo, N), exact.

    Raises
    ------
    ValueError
        On a wrong dtype, shape, value range or geometry.
    """
    x, iw, g = _int_conv_args(x, w_bits, stride, pads, pad_value)
    kh, kw, sh, sw, top, left, pad_value, ho, wo, band = g
    out = np.empty((x.shape[0] * ho * wo, iw.n), dtype=np.int64)
    _int_conv_acc(x, kh, kw, sh, sw, top, left, pad_value, ho, wo, band, iw.masks, out)
    return out.reshape(x.shape[0], ho, wo, iw.n)


def int_conv_threshold(x: np.ndarray, w_bits, stride, pads, pad_value: int, thresholds) -> np.ndarray:
    """:func:`int_conv` with the threshold fused: bit ``n`` at ``(b, oy, ox)`` is
    ``acc >= thresholds[n]``, packed (uint64 (B, Ho, Wo, ceil(N / 64)), pad bits 0)."""
    x, iw, g = _int_conv_args(x, w_bits, stride, pads, pad_value)
    kh, kw, sh, sw, top, left, pad_value, ho, wo, band = g
    thr = _int_thresholds(thresholds, iw)
    out = np.empty((x.shape[0] * ho * wo, iw.n_panels), dtype=np.uint64)
    # the narrowest lane in which every dot product is exact (|dot| <= K * max|x|, pads included)
    big = max(abs(pad_value), -int(x.min()), int(x.max())) if x.size else abs(pad_value)
    for lane, (kernel, limit) in _INT_CONV_THR.items():
        if limit is None or iw.k * big <= limit:
            break
    if lane != np.int64:
        info = np.iinfo(lane)
        thr = np.clip(thr, info.min, info.max).astype(lane)  # out-of-range thresholds: same answers
    kernel(x, kh, kw, sh, sw, top, left, pad_value, ho, wo, band, iw.masks_as(lane), thr, out)
    return out.reshape(x.shape[0], ho, wo, iw.n_panels)


# --------------------------------------------------------------------------------------------
# Validation


def _n_words(bits: int) -> int:
    return (bits + _LANES - 1) // _LANES


def _positive_int(v, name: str) -> int:
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)) or v < 1:
        raise ValueError(f"{name} must be a positive integer, not {v!r}")
    return int(v)


def _pair(v, name: str) -> tuple[int, int]:
    try:
        a, b = v
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a pair of positive integers, not {v!r}") from None
    return _positive_int(a, name), _positive_int(b, name)


def _pads(v) -> tuple[int, int, int, int]:
    try:
        vals = tuple(v)
    except TypeError:
        raise ValueError(f"pads must be (top, left, bottom, right), not {v!r}") from None
    if len(vals) != 4 or any(
        isinstance(p, (bool, np.bool_)) or not isinstance(p, (int, np.integer)) or p < 0 for p in vals
    ):
        raise ValueError(f"pads must be four non-negative integers (top, left, bottom, right), not {v!r}")
    return tuple(int(p) for p in vals)


def _packed_array(arr, name: str, ndim: int, layout: str) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.dtype != np.uint64:
        raise ValueError(f"{name} must be packed bits of dtype uint64, not {arr.dtype}")
    if arr.ndim != ndim:
        raise ValueError(f"{name} must have shape {layout}, got shape {arr.shape}")
    return np.ascontiguousarray(arr)


def _check_pad_bits(words: np.ndarray, bits: int, name: str) -> None:
    """Pad bits above ``bits`` in the last word must be 0 (design.md §2)."""
    r = bits % _LANES
    if r and words.size and np.any(words[..., -1] >> np.uint64(r)):
        raise ValueError(f"{name} has nonzero pad bits: only the low {r} bits of its last word may be set")


def _check_pw(pw) -> None:
    if not isinstance(pw, PackedWeights):
        raise ValueError(f"pw must be PackedWeights from prepack_weights(), not {type(pw).__name__}")


def _activations(a, pw: PackedWeights) -> np.ndarray:
    a = _packed_array(a, "a", 2, "(M, KW)")
    if a.shape[1] != pw.kw:
        raise ValueError(f"a must have pw.kw = {pw.kw} words per row (k = {pw.k}), got {a.shape[1]}")
    _check_pad_bits(a, pw.k, "a")
    return a


def _mismatch_limits(thr, pw: PackedWeights) -> np.ndarray:
    """Thresholds as limits on the mismatch count: ``p >= T  <=>  popcount(a ^ w) <= K - T``.

    T is clipped to [0, K+1] first (the same test for 0 <= p <= K, and no overflow), so a
    channel that always fires gets limit K and one that never fires -1; channels past N get -1,
    which keeps the output's pad bits 0. Shape (R, 64 * n_panels), int64.
    """
    t = np.asarray(thr)
    if t.dtype.kind not in "iu":
        raise ValueError(f"thr must be integers, not {t.dtype}")
    if t.ndim != 2 or t.shape[1] != pw.n or t.shape[0] < 1:
        raise ValueError(f"thr must have shape (R, N) with N = {pw.n} and R >= 1, got shape {t.shape}")
    limits = np.full((t.shape[0], pw.n_panels * _LANES), -1, dtype=np.int64)
    limits[:, : pw.n] = pw.k - np.clip(t, 0, pw.k + 1).astype(np.int64)
    return limits


def _int_values(x, name: str, ndim: int, layout: str) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype.kind not in "iu":
        raise ValueError(f"{name} must be integers, not {x.dtype}")
    if x.ndim != ndim:
        raise ValueError(f"{name} must have shape {layout}, got shape {x.shape}")
    if x.itemsize == 8 and x.size:
        lo, hi = int(x.min()), int(x.max())
        if lo < _INT_MIN or hi > _INT_MAX:
            raise ValueError(f"{name} values must fit in 32 bits (int32 or uint32), got range [{lo}, {hi}]")
    # narrower integers go to the kernels as they are (read as int64 there); 8-byte ones as int64
    return np.ascontiguousarray(x, dtype=np.int64 if x.itemsize == 8 else x.dtype)


def _bool_array(w, name: str, ndim: int, layout: str) -> np.ndarray:
    w = np.asarray(w)
    if w.dtype != np.bool_:
        raise ValueError(f"{name} must be booleans (True = +1, False = -1), not {w.dtype}")
    if w.ndim != ndim or w.size == 0:
        raise ValueError(f"{name} must have a non-empty shape {layout}, got shape {w.shape}")
    return w


def _out_size(h, w, kh, kw, sh, sw, top, left, bottom, right) -> tuple[int, int]:
    if h + top + bottom < kh or w + left + right < kw:
        raise ValueError(
            f"kernel {(kh, kw)} must fit in the padded {h + top + bottom}x{w + left + right} map"
        )
    return (h + top + bottom - kh) // sh + 1, (w + left + right - kw) // sw + 1


@dataclass(frozen=True)
class _ConvGeometry:
    x: np.ndarray
    b: int
    c: int
    kh: int
    kw: int
    sh: int
    sw: int
    top: int
    left: int
    pad_bit: int
    ho: int
    wo: int
    band: int  # output rows per work item


def _conv_geometry(x, c, kernel, stride, pads, pad_bit, pw: PackedWeights) -> _ConvGeometry:
    x = _packed_array(x, "x", 4, "(B, H, W, CW)")
    c = _positive_int(c, "c")
    kh, kw = _pair(kernel, "kernel")
    sh, sw = _pair(stride, "stride")
    top, left, bottom, right = _pads(pads)
    if pad_bit not in (0, 1) or isinstance(pad_bit, float):
        raise ValueError(f"pad_bit must be 0 (-1) or 1 (+1), not {pad_bit!r}")
    b, h, w, cw = x.shape
    if cw != _n_words(c):
        raise ValueError(f"x must have ceil(c / 64) = {_n_words(c)} words per pixel for c = {c}, got {cw}")
    if pw.k != kh * kw * c:
        raise ValueError(f"pw.k must be kh*kw*C = {kh}*{kw}*{c} = {kh * kw * c}, got {pw.k}")
    _check_pad_bits(x, c, "x")
    ho, wo = _out_size(h, w, kh, kw, sh, sw, top, left, bottom, right)
    band = max(1, min(ho, _BAND_ROWS // wo))
    return _ConvGeometry(x, b, c, kh, kw, sh, sw, top, left, int(pad_bit), ho, wo, band)


# --------------------------------------------------------------------------------------------
# GEMM core (serial; conv's prange body calls it on its patch buffer)


@jit(inline="always")
def _ceil_div(num, den):
    return (num + den - 1) // den


@jit(inline="always")
def _mismatch_tile(a, r0, r1, panel, acc):
    """acc[i, j] = popcount(a[r_i] ^ channel j of the panel) for the row pair (r0, r1).

    ``panel`` is (KW, 64); ``acc`` a (2, 64) uint64 stack tile that stays in 16 zmm registers.
    """
    for j in range(_LANES):
        acc[0, j] = 0
        acc[1, j] = 0
    for q in range(panel.shape[0]):
        x0 = a[r0, q]
        x1 = a[r1, q]
        for j in range(_LANES):
            w = panel[q, j]
            acc[0, j] += popcount64(x0 ^ w)
            acc[1, j] += popcount64(x1 ^ w)


@jit
def _block_popcount(a, m_lo, m_hi, panels, p, k, out, out_row0):
    """Popcounts of rows [m_lo, m_hi) of ``a`` against panel ``p`` into ``out[out_row0 + m]``."""
    wide_vectors()
    acc = carray(stack_u64(128), (2, _LANES))  # 2 x 64 tile
    n0 = p * _LANES
    nj = min(_LANES, out.shape[1] - n0)
    for m0 in range(m_lo, m_hi, 2):
        m1 = min(m0 + 1, m_hi - 1)
        _mismatch_tile(a, m0, m1, panels[p], acc)
        # slices, not out[row, n0 + j]: a possibly negative index would make LLVM scatter
        row0 = out[out_row0 + m0, n0 : n0 + nj]
        row1 = out[out_row0 + m1, n0 : n0 + nj]
        for j in range(nj):
            row0[j] = np.int32(k - np.int64(acc[0, j]))
            row1[j] = np.int32(k - np.int64(acc[1, j]))  # row1 is row0 again for an odd last row


@jit
def _block_threshold(a, m_lo, m_hi, panels, p, limits, out, out_row0):
    """Packed output word ``p`` of rows [m_lo, m_hi): bit j = mismatches <= limits[row % R, j]."""
    wide_vectors()
    acc = carray(stack_u64(128), (2, _LANES))  # 2 x 64 tile
    n0 = p * _LANES
    r = limits.shape[0]
    r0 = (out_row0 + m_lo) % r  # limits row of m0, stepped without a division per row
    for m0 in range(m_lo, m_hi, 2):
        m1 = min(m0 + 1, m_hi - 1)
        r1 = r0 + (m1 - m0)
        if r1 == r:
            r1 = 0
        _mismatch_tile(a, m0, m1, panels[p], acc)
        lim0 = limits[r0, n0 : n0 + _LANES]
        lim1 = limits[r1, n0 : n0 + _LANES]
        word0 = np.uint64(0)
        word1 = np.uint64(0)
        for j in range(_LANES):
            word0 |= np.uint64(np.int64(acc[0, j]) <= lim0[j]) << np.uint64(j)
            word1 |= np.uint64(np.int64(acc[1, j]) <= lim1[j]) << np.uint64(j)
        out[out_row0 + m0, p] = word0
        out[out_row0 + m1, p] = word1
        r0 = r1 + 1
        if r0 == r:
            r0 = 0


# Dense drivers. Work item i covers row block i // n_panels and panel i % n_panels; the serial and
# parallel drivers are distinct functions (they would share a cache entry otherwise, perf.md).
# wide_vectors() sits in every function the tile loop may be inlined into, prange bodies included.


@jit
def _gemm_popcount_ser(a, panels, k, out):
    wide_vectors()
    m = a.shape[0]
    n_panels = panels.shape[0]
    for i in range(_ceil_div(m, _ROW_BLOCK) * n_panels):
        rb, p = divmod(np.int64(i), n_panels)
        _block_popcount(a, rb * _ROW_BLOCK, min(m, (rb + 1) * _ROW_BLOCK), panels, p, k, out, 0)


@pjit
def _gemm_popcount_par(a, panels, k, out):
    m = a.shape[0]
    n_panels = panels.shape[0]
    for i in prange(_ceil_div(m, _ROW_BLOCK) * n_panels):
        wide_vectors()
        rb, p = divmod(np.int64(i), n_panels)
        _block_popcount(a, rb * _ROW_BLOCK, min(m, (rb + 1) * _ROW_BLOCK), panels, p, k, out, 0)


@jit
def _gemm_threshold_ser(a, panels, limits, out):
    wide_vectors()
    m = a.shape[0]
    n_panels = panels.shape[0]
    for i in range(_ceil_div(m, _ROW_BLOCK) * n_panels):
        rb, p = divmod(np.int64(i), n_panels)
        _block_threshold(a, rb * _ROW_BLOCK, min(m, (rb + 1) * _ROW_BLOCK), panels, p, limits, out, 0)


@pjit
def _gemm_threshold_par(a, panels, limits, out):
    m = a.shape[0]
    n_panels = panels.shape[0]
    for i in prange(_ceil_div(m, _ROW_BLOCK) * n_panels):
        wide_vectors()
        rb, p = divmod(np.int64(i), n_panels)
        _block_threshold(a, rb * _ROW_BLOCK, min(m, (rb + 1) * _ROW_BLOCK), panels, p, limits, out, 0)


# --------------------------------------------------------------------------------------------
# Conv: patches of a band of output rows into a buffer, then the GEMM core on it


@jit
def _build_patches(x, img, oy0, oy1, c, kh, kw, sh, sw, top, left, pad_bit, wo, buf):
    """im2col of output rows [oy0, oy1) of image ``img`` into ``buf`` rows, patch bit
    ``(ky*kw + kx)*c + ch`` little-endian; padded taps hold ``pad_bit`` in every channel."""
    h, w, cw = x.shape[1], x.shape[2], x.shape[3]
    kwords = buf.shape[1]
    fill = ~np.uint64(0) if pad_bit else np.uint64(0)
    rem = c % 64
    tail = (np.uint64(1) << np.uint64(rem)) - np.uint64(1) if rem else ~np.uint64(0)
    row = 0
    for oy in range(oy0, oy1):
        for ox in range(wo):
            dst = buf[row]
            if rem == 0:
                # word copies: tap t occupies words [t*cw, (t+1)*cw)
                for ky in range(kh):
                    iy = oy * sh - top + ky
                    for kx in range(kw):
                        ix = ox * sw - left + kx
                        q0 = (ky * kw + kx) * cw
                        if 0 <= iy < h and 0 <= ix < w:
                            src = x[img, iy, ix]
                            for q in range(cw):
                                dst[q0 + q] = src[q]
                        else:
                            for q in range(cw):
                                dst[q0 + q] = fill
            else:
                # bit append: tap t starts at bit t*c, in general mid-word
                for q in range(kwords):
                    dst[q] = 0
                for ky in range(kh):
                    iy = oy * sh - top + ky
                    for kx in range(kw):
                        ix = ox * sw - left + kx
                        inside = 0 <= iy < h and 0 <= ix < w
                        bit = (ky * kw + kx) * c
                        for q in range(cw):
                            v = x[img, iy, ix, q] if inside else fill
                            if q == cw - 1:
                                v &= tail
                            d = bit >> 6
                            s = np.uint64(bit & 63)
                            dst[d] |= v << s
                            if s != 0 and d + 1 < kwords:
                                dst[d + 1] |= v >> (np.uint64(64) - s)
                            bit += 64
            row += 1


@jit(inline="always")
def _conv_item(i, ho, band):
    """Image, first and end output row of conv work item ``i``; bands of ``band`` rows."""
    img, bi = divmod(np.int64(i), _ceil_div(ho, band))
    oy0 = bi * band
    return img, oy0, min(ho, oy0 + band)


@jit
def _conv_popcount_ser(x, c, kh, kw, sh, sw, top, left, pad_bit, ho, wo, band, panels, k, out):
    wide_vectors()
    kwords = panels.shape[1]
    buf = np.empty((band * wo, kwords), dtype=np.uint64)
    for i in range(x.shape[0] * _ceil_div(ho, band)):
        img, oy0, oy1 = _conv_item(i, ho, band)
        _build_patches(x, img, oy0, oy1, c, kh, kw, sh, sw, top, left, pad_bit, wo, buf)
        rows = (oy1 - oy0) * wo
        for p in range(panels.shape[0]):
            _block_popcount(buf, 0, rows, panels, p, k, out, (img * ho + oy0) * wo)


@pjit
def _conv_popcount_par(x, c, kh, kw, sh, sw, top, left, pad_bit, ho, wo, band, panels, k, out):
    kwords = panels.shape[1]
    for i in prange(x.shape[0] * _ceil_div(ho, band)):
        wide_vectors()
        buf = np.empty((band * wo, kwords), dtype=np.uint64)  # this item's own patch buffer
        img, oy0, oy1 = _conv_item(i, ho, band)
        _build_patches(x, img, oy0, oy1, c, kh, kw, sh, sw, top, left, pad_bit, wo, buf)
        rows = (oy1 - oy0) * wo
        for p in range(panels.shape[0]):
            _block_popcount(buf, 0, rows, panels, p, k, out, (img * ho + oy0) * wo)


@jit
def _conv_threshold_ser(x, c, kh, kw, sh, sw, top, left, pad_bit, ho, wo, band, panels, limits, out):
    wide_vectors()
    kwords = panels.shape[1]
    buf = np.empty((band * wo, kwords), dtype=np.uint64)
    for i in range(x.shape[0] * _ceil_div(ho, band)):
        img, oy0, oy1 = _conv_item(i, ho, band)
        _build_patches(x, img, oy0, oy1, c, kh, kw, sh, sw, top, left, pad_bit, wo, buf)
        rows = (oy1 - oy0) * wo
        for p in range(panels.shape[0]):
            _block_threshold(buf, 0, rows, panels, p, limits, out, (img * ho + oy0) * wo)


@pjit
def _conv_threshold_par(x, c, kh, kw, sh, sw, top, left, pad_bit, ho, wo, band, panels, limits, out):
    kwords = panels.shape[1]
    for i in prange(x.shape[0] * _ceil_div(ho, band)):
        wide_vectors()
        buf = np.empty((band * wo, kwords), dtype=np.uint64)  # this item's own patch buffer
        img, oy0, oy1 = _conv_item(i, ho, band)
        _build_patches(x, img, oy0, oy1, c, kh, kw, sh, sw, top, left, pad_bit, wo, buf)
        rows = (oy1 - oy0) * wo
        for p in range(panels.shape[0]):
            _block_threshold(buf, 0, rows, panels, p, limits, out, (img * ho + oy0) * wo)


# --------------------------------------------------------------------------------------------
# Max-pool and integer kernels


@pjit
def _maxpool_or(x, kh, kw, sh, sw, out):
    b, ho, wo, cw = out.shape
    for i in prange(b * ho):
        img, oy = divmod(np.int64(i), ho)
        for ox in range(wo):
            for q in range(cw):
                v = np.uint64(0)
                for ky in range(kh):
                    for kx in range(kw):
                        v |= x[img, oy * sh + ky, ox * sw + kx, q]
                out[img, oy, ox, q] = v


@jit(inline="always")
def _int_tile(x, r0, r1, panel, acc):
    """acc[i, j] = sum_q x[r_i, q] & panel[q, j] for the row pair (r0, r1); returns the two row
    sums. ``panel`` is (K, 64) int64 masks; ``acc`` a (2, 64) int64 stack tile."""
    for j in range(_LANES):
        acc[0, j] = 0
        acc[1, j] = 0
    s0 = np.int64(0)
    s1 = np.int64(0)
    for q in range(panel.shape[0]):
        x0 = np.int64(x[r0, q])
        x1 = np.int64(x[r1, q])
        s0 += x0
        s1 += x1
        for j in range(_LANES):
            m = panel[q, j]
            acc[0, j] += x0 & m
            acc[1, j] += x1 & m
    return s0, s1


@jit
def _int_block_acc(x, m_lo, m_hi, masks, p, out, out_row0):
    """Dot products of rows [m_lo, m_hi) of ``x`` with panel ``p`` into ``out[out_row0 + m]``."""
    wide_vectors()
    acc = carray(stack_i64(128), (2, _LANES))
    n0 = p * _LANES
    nj = min(_LANES, out.shape[1] - n0)
    for m0 in range(m_lo, m_hi, 2):
        m1 = min(m0 + 1, m_hi - 1)
        s0, s1 = _int_tile(x, m0, m1, masks[p], acc)
        row0 = out[out_row0 + m0, n0 : n0 + nj]
        row1 = out[out_row0 + m1, n0 : n0 + nj]
        for j in range(nj):
            row0[j] = 2 * acc[0, j] - s0
            row1[j] = 2 * acc[1, j] - s1


@jit
def _int_block_thr(x, m_lo, m_hi, masks, p, thr, out, out_row0):
    """Packed output word ``p`` of rows [m_lo, m_hi): bit j = dot >= thr[64 p + j]."""
    wide_vectors()
    acc = carray(stack_i64(128), (2, _LANES))
    n0 = p * _LANES
    t = thr[n0 : n0 + _LANES]
    for m0 in range(m_lo, m_hi, 2):
        m1 = min(m0 + 1, m_hi - 1)
        s0, s1 = _int_tile(x, m0, m1, masks[p], acc)
        word0 = np.uint64(0)
        word1 = np.uint64(0)
        for j in range(_LANES):
            word0 |= np.uint64(2 * acc[0, j] - s0 >= t[j]) << np.uint64(j)
            word1 |= np.uint64(2 * acc[1, j] - s1 >= t[j]) << np.uint64(j)
        out[out_row0 + m0, p] = word0
        out[out_row0 + m1, p] = word1


@pjit
def _int_dense_acc(x, masks, out):
    m = x.shape[0]
    n_panels = masks.shape[0]
    for i in prange(_ceil_div(m, _ROW_BLOCK) * n_panels):
        wide_vectors()
        rb, p = divmod(np.int64(i), n_panels)
        _int_block_acc(x, rb * _ROW_BLOCK, min(m, (rb + 1) * _ROW_BLOCK), masks, p, out, 0)


@pjit
def _int_dense_thr(x, masks, thr, out):
    m = x.shape[0]
    n_panels = masks.shape[0]
    for i in prange(_ceil_div(m, _ROW_BLOCK) * n_panels):
        wide_vectors()
        rb, p = divmod(np.int64(i), n_panels)
        _int_block_thr(x, rb * _ROW_BLOCK, min(m, (rb + 1) * _ROW_BLOCK), masks, p, thr, out, 0)


@jit
def _int_patches(x, img, oy0, oy1, kh, kw, sh, sw, top, left, pad_value, wo, buf):
    """Integer im2col of output rows [oy0, oy1) of image ``img``: patch column
    ``(ky*kw + kx)*C + ch``; padded taps hold ``pad_value``."""
    h, w, c = x.shape[1], x.shape[2], x.shape[3]
    row = 0
    for oy in range(oy0, oy1):
        for ox in range(wo):
            dst = buf[row]
            col = 0
            for ky in range(kh):
                iy = oy * sh - top + ky
                for kx in range(kw):
                    ix = ox * sw - left + kx
                    if 0 <= iy < h and 0 <= ix < w:
                        for ch in range(c):
                            dst[col + ch] = x[img, iy, ix, ch]
                    else:
                        for ch in range(c):
                            dst[col + ch] = pad_value
                    col += c
            row += 1


@pjit
def _int_conv_acc(x, kh, kw, sh, sw, top, left, pad_value, ho, wo, band, masks, out):
    k = masks.shape[1]
    for i in prange(x.shape[0] * _ceil_div(ho, band)):
        wide_vectors()
        buf = np.empty((band * wo, k), dtype=np.int64)  # this item's own patch buffer
        img, oy0, oy1 = _conv_item(i, ho, band)
        _int_patches(x, img, oy0, oy1, kh, kw, sh, sw, top, left, pad_value, wo, buf)
        rows = (oy1 - oy0) * wo
        for p in range(masks.shape[0]):
            _int_block_acc(buf, 0, rows, masks, p, out, (img * ho + oy0) * wo)


def _direct_int_conv_thr(stack, rows: int, lane):
    """A thresholded integer convolution kernel on ``lane`` integers (np.int16/int32/int64):
    ``rows`` output positions per register tile of ``rows x 64`` lanes from ``stack`` (16 zmm).

    No im2col: each work item copies its band's input rows, padded, into a small buffer of the
    lane type, and tap ``q`` of the position based at ``b`` is ``buf[b + off[q]]``. The dot
    products are computed modulo ``2**bits`` of the lane (the caller picks a lane in which
    ``K * max|x|`` fits, so they are exact); each output word is 64 comparison bytes gathered 8 at
    a time (:data:`~bnnfab.sim._nb.GATHER8`)."""

    tile_size = rows * _LANES  # closure constants: literals for the stack allocations

    @jit(inline="always")
    def tile(xp, bases, off, panel, acc, sums):
        for i in range(rows):
            sums[i] = 0
            for j in range(_LANES):
                acc[i, j] = 0
        for q in range(off.shape[0]):
            o = off[q]
            for i in range(rows):
                xv = xp[bases[i] + o]
                sums[i] += xv
                for j in range(_LANES):
                    acc[i, j] += xv & panel[q, j]

    @pjit
    def kernel(x, kh, kw, sh, sw, top, left, pad_value, ho, wo, band, masks, thr, out):
        h, w, c = x.shape[1], x.shape[2], x.shape[3]
        wp = (wo - 1) * sw + kw  # padded input columns read
        rows_in = (band - 1) * sh + kh  # padded input rows read by a band
        off = np.empty(kh * kw * c, dtype=np.int64)
        for ky in range(kh):
            for kx in range(kw):
                for ch in range(c):
                    off[(ky * kw + kx) * c + ch] = (ky * wp + kx) * c + ch
        for i in prange(x.shape[0] * _ceil_div(ho, band)):
            wide_vectors()
            img, oy0, oy1 = _conv_item(i, ho, band)
            xp = np.empty(rows_in * wp * c, dtype=masks.dtype)
            for ry in range(rows_in):
                iy = oy0 * sh - top + ry
                for px in range(wp):
                    ix = px - left
                    inside = 0 <= iy < h and 0 <= ix < w
                    for ch in range(c):
                        xp[(ry * wp + px) * c + ch] = x[img, iy, ix, ch] if inside else pad_value
            acc = carray(stack(tile_size), (rows, _LANES))
            sums = carray(stack(rows), (rows,))
            bits = np.zeros(rows * _LANES, dtype=np.uint8)
            bits8 = bits.view(np.uint64)
            bases = np.empty(rows, dtype=np.int64)
            dst = np.empty(rows, dtype=np.int64)
            n_pos = (oy1 - oy0) * wo
            row0 = (img * ho + oy0) * wo
            for p in range(masks.shape[0]):
                t = thr[p * _LANES : (p + 1) * _LANES]
                for m0 in range(0, n_pos, rows):
                    for r in range(rows):
                        m = min(m0 + r, n_pos - 1)
                        dst[r] = row0 + m
                        oy, ox = divmod(m, wo)
                        bases[r] = (oy * sh * wp + ox * sw) * c
                    tile(xp, bases, off, masks[p], acc, sums)
                    for r in range(rows):
                        for j in range(_LANES):
                            bits[r * _LANES + j] = lane(2 * acc[r, j] - sums[r]) >= t[j]
                    for r in range(rows):
                        word = np.uint64(0)
                        for k in range(8):
                            word |= ((bits8[r * 8 + k] * GATHER8) >> np.uint64(56)) << np.uint64(8 * k)
                        out[dst[r], p] = word

    return kernel


# lane dtype -> (kernel, largest K * max|x| for which the lane's dot products are exact)
_INT_CONV_THR = {
    np.dtype(np.int16): (_direct_int_conv_thr(stack_i16, 8, np.int16), 2**15 - 1),
    np.dtype(np.int32): (_direct_int_conv_thr(stack_i32, 4, np.int32), 2**31 - 1),
    np.dtype(np.int64): (_direct_int_conv_thr(stack_i64, 2, np.int64), None),
}
