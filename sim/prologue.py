"""Fused input path of the functional simulator: quantize, lay out and pack a batch in one pass.

:meth:`bnnfab.sim.functional.Simulator.check_inputs` is the reference for what a batch becomes:
the model's :class:`~bnnfab.models.ir.InputPrologue` (cast to its dtype, its ``ops``, then the
``BipolarQuant``-style sign or the QONNX ``Quant``), the layout change from the source graph's
NCHW order to the IR input, the range checks, then :func:`~bnnfab.models.bits.pack_bits` for a
binary input. That takes several numpy passes over the batch, each a full-size temporary.
:class:`InputPath` does the same work per sample in one Numba kernel, parallel over blocks of
samples (``prange``), and writes the packed words (binary input) or the integer codes (n-bit
input) directly:

* the arithmetic is the reference's, expression for expression, in the prologue's dtype
  (float32 or float64, no ``fastmath``, so LLVM neither contracts to FMA nor reassociates):
  ``x`` cast to the dtype, each op with the constant as a value of that dtype, then
  ``y / scale + zero_point``, the two clips (a NaN passes both, as with ``np.where``), the
  rounding function of the mode with the reference's own formula (``half_up`` is
  ``sign(y) * floor(|y| + 0.5)`` in the dtype, float rounding of ``|y| + 0.5`` included), and
  ``code = round(y) - zero_point`` in the dtype, then converted to an integer;
* a binary input without prologue is ``x >= 0`` (booleans as they are), packed;
* anything the reference rejects or treats specially — a NaN in the input, a NaN reaching the
  quantizer (e.g. ``inf * 0``), a code outside the input's range (possible for 32-bit
  quantizers computed in float32) — makes the kernel report it and the caller re-runs the
  reference path, which raises the reference's own error. So the fused path either returns
  exactly what the reference returns, or defers to it.

Inputs of a dtype other than float32/float64 (and bool for a prologue-less binary input) are
first cast with numpy to the prologue's dtype (the reference's own first step) or to float64.

Limits: the codes come out as the narrowest of int16/int32/int64 that holds the input range;
the simulator's integer first layer takes any of them.
"""

from __future__ import annotations

import sys

import numpy as np
from numba import prange

from ..models import InputSpec, Model
from ..models.bits import n_words
from ._nb import GATHER8, jit, pjit

__all__ = ["InputPath", "NEEDS_REFERENCE"]

NEEDS_REFERENCE = object()  # returned when the reference path must decide (it raises)

_OPS = {"add": 0, "sub": 1, "mul": 2, "div": 3, "rsub": 4}
_ROUND = {"half_even": 0, "half_up": 1, "half_down": 2, "up": 3, "down": 4, "floor": 5, "ceil": 6}
_BLOCK = 32  # samples per parallel work item

# flag bits a kernel reports per work item
_NAN_INPUT = 1
_NAN_QUANT = 2
_OUT_OF_RANGE = 4


# --------------------------------------------------------------------------------------------
# Kernels


@jit(inline="always")
def _load_and_ops(x, b, y, opc, opv):
    """y[:] = ops(x[b, :] cast to y's dtype); returns True when x[b] holds a NaN."""
    s = y.shape[0]
    nan = False
    for i in range(s):
        v = x[b, i]
        nan |= v != v
        y[i] = v
    for j in range(opc.shape[0]):
        c = opv[j]
        op = opc[j]
        if op == 0:
            for i in range(s):
                y[i] = y[i] + c
        elif op == 1:
            for i in range(s):
                y[i] = y[i] - c
        elif op == 2:
            for i in range(s):
                y[i] = y[i] * c
        elif op == 3:
            for i in range(s):
                y[i] = y[i] / c
        else:
            for i in range(s):
                y[i] = c - y[i]
    return nan


@pjit
def _binary_kernel(x, opc, opv, thr, perm, last, last_words, out, flags):
    """Packed bits of ``ops(x) >= thr`` in the IR layout.

    ``x`` (B, S); ``perm`` the source index of each IR position (empty: identity); ``last`` the
    IR input's last axis (bits packed per group of ``last`` into ``last_words`` words); ``out``
    (B, S // last * last_words) uint64; ``flags`` one byte per work item.
    """
    bsz, s = x.shape
    groups = s // last
    for blk in prange((bsz + _BLOCK - 1) // _BLOCK):
        y = np.empty(s, dtype=opv.dtype)
        # one byte per bit (the tail past ``last`` stays 0), read back 8 bytes at a time
        bits = np.zeros(last_words * 64, dtype=np.uint8)
        bits8 = bits.view(np.uint64)
        f = 0
        for b in range(blk * _BLOCK, min(bsz, (blk + 1) * _BLOCK)):
            if _load_and_ops(x, b, y, opc, opv):
                f |= _NAN_INPUT
            ob = out[b].view(np.uint8)  # little-endian words: bit i of the group is byte i // 8, bit i % 8
            for g in range(groups):
                base = g * last
                if perm.shape[0] == 0:
                    for i in range(last):
                        bits[i] = y[base + i] >= thr
                else:
                    for i in range(last):
                        bits[i] = y[perm[base + i]] >= thr
                for k in range(last_words * 8):
                    ob[g * last_words * 8 + k] = np.uint8((bits8[k] * GATHER8) >> np.uint64(56))
        flags[blk] = f


@jit(inline="always")
def _round(v, mode, half):
    """The reference rounding of ``v`` (finite), formula for formula, in v's dtype."""
    if mode == 0:
        return np.rint(v)
    if mode == 1:
        return np.sign(v) * np.floor(np.abs(v) + half)
    if mode == 2:
        return np.sign(v) * np.ceil(np.abs(v) - half)
    if mode == 3:
        return np.sign(v) * np.ceil(np.abs(v))
    if mode == 4:
        return np.trunc(v)
    if mode == 5:
        return np.floor(v)
    return np.ceil(v)


@pjit
def _int_kernel(x, opc, opv, q, mode, perm, code_lo, code_hi, out, flags):
    """Integer codes of the QONNX Quant of ``ops(x)`` in the IR layout.

    ``q`` = (scale, zero_point, quant lo, quant hi, 0.5) in the dtype; ``code_lo``/``code_hi``
    the IR input's range; ``out`` (B, S) integers.
    """
    bsz, s = x.shape
    scale, zp, lo, hi, half = q[0], q[1], q[2], q[3], q[4]
    for blk in prange((bsz + _BLOCK - 1) // _BLOCK):
        y = np.empty(s, dtype=opv.dtype)
        f = 0
        for b in range(blk * _BLOCK, min(bsz, (blk + 1) * _BLOCK)):
            if _load_and_ops(x, b, y, opc, opv):
                f |= _NAN_INPUT
            for i in range(s):
                v = y[i] / scale + zp
                if v > hi:
                    v = hi
                if v < lo:
                    v = lo
                if v != v:
                    f |= _NAN_QUANT
                    continue
                y[i] = _round(v, mode, half) - zp
            for j in range(s):
                v = y[j] if perm.shape[0] == 0 else y[perm[j]]
                if v != v:
                    continue
                code = np.int64(v)
                if code < code_lo or code > code_hi:
                    f |= _OUT_OF_RANGE
                out[b, j] = code
        flags[blk] = f


# --------------------------------------------------------------------------------------------
# Per-model plan


def _code_dtype(lo: int, hi: int) -> np.dtype:
    for dt in (np.int16, np.int32):
        info = np.iinfo(dt)
        if info.min <= lo and hi <= info.max:
            return np.dtype(dt)
    return np.dtype(np.int64)


class InputPath:
    """The fused input path of one model (see the module docstring).

    ``run(x)`` returns, for a batch ``x`` that already passed the shape and dtype checks:
    ``(B, ..., words)`` uint64 packed bits in the IR layout (binary input, as ``pack_bits`` of
    the reference's booleans), or ``(B, *input shape)`` integer codes (n-bit input, equal to the
    reference's int64 codes, in :attr:`code_dtype`), or :data:`NEEDS_REFERENCE` when the
    reference path must decide (it raises the reference's error).
    """

    def __init__(self, model: Model):
        spec: InputSpec = model.input
        self.spec = spec
        self.prologue = p = model.prologue
        self.shape = spec.shape
        size = int(np.prod(spec.shape))
        perm = np.zeros(0, dtype=np.int64)
        if p is not None and len(spec.shape) == 3:
            h, w, c = spec.shape
            # IR position (y, x, ch) reads source value ch*H*W + y*W + x (NCHW order)
            perm = np.ascontiguousarray(np.arange(size, dtype=np.int64).reshape(c, h, w).transpose(1, 2, 0).reshape(-1))
        self.perm = perm
        self.last = spec.shape[-1]
        if p is None:
            self.dtype = np.dtype(np.float64)
            self.opc = np.zeros(0, dtype=np.int64)
            self.opv = np.zeros(0, dtype=np.float64)
        else:
            self.dtype = np.dtype(p.dtype)
            self.opc = np.array([_OPS[op] for op, _ in p.ops], dtype=np.int64)
            self.opv = np.array([v for _, v in p.ops], dtype=self.dtype)
        if spec.binary:
            self.last_words = n_words(self.last)
            self.code_dtype = None
        else:
            lo, hi = spec.value_range
            self.code_lo, self.code_hi = lo, hi
            self.code_dtype = _code_dtype(lo, hi)
            if p is not None:
                qlo, qhi = p.quant_range
                c = self.dtype.type
                self.q = np.array([c(p.scale), c(p.zero_point), c(qlo), c(qhi), c(0.5)], dtype=self.dtype)
                self.mode = _ROUND[p.rounding]

    @property
    def fused(self) -> bool:
        """Whether :meth:`run` handles this model's inputs (binary input, or a prologue; binary
        packing assumes little-endian words, as on every target Numba supports here)."""
        if self.spec.binary:
            return sys.byteorder == "little"
        return self.prologue is not None

    def run(self, x: np.ndarray):
        b = x.shape[0]
        flat = x.reshape(b, -1)
        if self.spec.binary:
            if self.prologue is None and x.dtype == np.bool_:
                flat, opv, thr = flat.view(np.uint8), np.zeros(0, np.float32), np.float32(1)
            else:
                want = self.dtype if self.prologue is not None else np.dtype(np.float64)
                if flat.dtype not in (np.float32, np.float64):
                    flat = flat.astype(want)
                opv, thr = self.opv, self.dtype.type(0)
            flat = np.ascontiguousarray(flat)
            groups = flat.shape[1] // self.last
            out = np.empty((b, groups * self.last_words), dtype=np.uint64)
            flags = np.zeros((b + _BLOCK - 1) // _BLOCK, dtype=np.uint8)
            _binary_kernel(flat, self.opc, opv, thr, self.perm, self.last, self.last_words, out, flags)
            if flags.any():
                return NEEDS_REFERENCE
            return out.reshape((b,) + tuple(self.shape[:-1]) + (self.last_words,))
        if self.prologue is None:  # pragma: no cover - callers only use fused paths
            raise AssertionError("integer input without prologue")
        if flat.dtype not in (np.float32, np.float64):
            flat = flat.astype(self.dtype)
        flat = np.ascontiguousarray(flat)
        out = np.empty(flat.shape, dtype=self.code_dtype)
        flags = np.zeros((b + _BLOCK - 1) // _BLOCK, dtype=np.uint8)
        _int_kernel(flat, self.opc, self.opv, self.q, self.mode, self.perm, self.code_lo, self.code_hi, out, flags)
        if flags.any():
            return NEEDS_REFERENCE
        return out.reshape((b,) + tuple(self.shape))
