"""The model IR: an immutable, validated description of a deployable binary neural network.

Contracts (``shared/design.md`` §2):

* Bit 1 means +1, bit 0 means -1. Weights are stored unpacked as booleans, already canonical:
  a channel whose batch-norm scale was negative has had its weight bits flipped (see
  :func:`threshold_from_affine`).
* Feature maps are NHWC; conv kernels are ``(N, kh, kw, C)`` so that taps flatten as
  ``(ky, kx, c)``. Dense weights are ``(N, K)``.
* A layer's *accumulator* is its dot product in the ±1 (or integer) domain:
  ``dot = 2 p - K_valid`` for a binary layer (``p = popcount(XNOR)`` over the valid taps) and
  ``dot = sum(x_i w_i)`` for an integer-input layer. Thresholds are stored as integers ``t`` on
  that dot product: ``out = (dot >= t)``. For a layer whose every position sees all ``K`` taps
  this is exactly the popcount test ``p >= T`` with ``T = ceil((t + K) / 2)`` (see
  :meth:`Dense.popcount_thresholds`); storing ``t = ceil(tau)`` rather than ``T`` keeps
  zero-padded convolutions exact, where the number of valid taps varies per position and ``T``
  alone would lose the parity of ``ceil(tau)``.
* An optional :class:`InputPrologue` says how a source graph's own inputs (e.g. NCHW float32
  pixels) become the model's input (integer codes or bits): the host-side input quantizer of an
  imported network. The hardware takes the IR input; the prologue runs before it.
* The last compute layer is a :class:`Dense` layer without thresholds: it emits integer scores
  (its dot products). An optional :class:`Epilogue` maps scores to a framework's float logits.
  Classes are the argmax of the integer scores, ties to the lowest index — what the hardware
  computes. An importer whose epilogue does not preserve order must canonicalise it first
  (:attr:`Epilogue.preserves_order`).
"""

from __future__ import annotations

import enum
import math
import types
from dataclasses import dataclass, field
from typing import Any, Mapping, Union

import numpy as np

__all__ = [
    "ModelError",
    "Padding",
    "FlattenOrder",
    "InputSpec",
    "InputPrologue",
    "PROLOGUE_OPS",
    "ROUNDING_MODES",
    "Dense",
    "Conv2d",
    "MaxPool2d",
    "Flatten",
    "Epilogue",
    "Layer",
    "Model",
    "threshold_from_affine",
]


class ModelError(ValueError):
    """A model breaks one of the IR's rules; the message names the layer, the rule and the value."""


class Padding(enum.Enum):
    """How a convolution fills positions outside the feature map.

    ``ZERO``: padded taps contribute nothing (the dot product runs over the valid taps only).
    ``PLUS_ONE`` / ``MINUS_ONE``: padded taps hold the activation +1 / -1 and count in ``K``.
    """

    ZERO = "zero"
    PLUS_ONE = "+1"
    MINUS_ONE = "-1"

    @property
    def value_pm1(self) -> int:
        """The activation a padded tap holds: 0, +1 or -1."""
        return {"zero": 0, "+1": 1, "-1": -1}[self.value]


class FlattenOrder(enum.Enum):
    """Order in which :class:`Flatten` linearises an ``(H, W, C)`` map."""

    HWC = "hwc"  # the internal NHWC order: no data movement
    CHW = "chw"  # ONNX / PyTorch order: channel-major


def _where(index: int | None, name: str, kind: str) -> str:
    pos = "" if index is None else f"layer {index} "
    return f"{pos}({kind} {name!r})" if name else f"{pos}({kind})"


def _pair(value: Any, what: str, where: str, minimum: int) -> tuple[int, int]:
    pair = value
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        pair = (int(value), int(value))
    try:
        a, b = pair
    except (TypeError, ValueError):
        raise ModelError(f"{where}: {what} must be an integer or a pair of integers, not {value!r}") from None
    for v in (a, b):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or int(v) < minimum:
            raise ModelError(f"{where}: {what} must be integers >= {minimum}, not {value!r}")
    return int(a), int(b)


def _frozen_array(value: Any, dtype: Any, ndim: int, what: str, where: str) -> np.ndarray:
    arr = np.asarray(value)
    if arr.ndim != ndim:
        raise ModelError(f"{where}: {what} must have {ndim} dimensions, got shape {arr.shape}")
    if dtype is np.bool_:
        if arr.dtype != np.bool_:
            if arr.size and not (np.issubdtype(arr.dtype, np.integer) and np.isin(arr, (0, 1)).all()):
                raise ModelError(
                    f"{where}: {what} must be booleans (bit 1 = +1, bit 0 = -1), got dtype {arr.dtype}"
                )
            arr = arr.astype(np.bool_)
    elif dtype is np.int64:
        if not np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.uint64:
            if np.issubdtype(arr.dtype, np.floating) and arr.size and np.isfinite(arr).all() and (
                arr == np.round(arr)
            ).all() and np.abs(arr).max() < 2**62:
                arr = arr.astype(np.int64)
            elif arr.dtype == np.uint64 and (arr.size == 0 or arr.max() < 2**62):
                arr = arr.astype(np.int64)
            else:
                raise ModelError(f"{where}: {what} must be integers, got dtype {arr.dtype}")
        arr = arr.astype(np.int64)
    elif dtype is np.float64:
        if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
            raise ModelError(f"{where}: {what} must be real numbers, got dtype {arr.dtype}")
        arr = arr.astype(np.float64)
        if arr.size and not np.isfinite(arr).all():
            raise ModelError(f"{where}: {what} must be finite, got {arr[~np.isfinite(arr)][0]!r}")
    arr = np.array(arr, dtype=arr.dtype, copy=True, order="C")
    arr.flags.writeable = False
    return arr


def threshold_from_affine(scale: np.ndarray, tau: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Integer thresholds and weight flips for ``out = (scale * (dot - tau) >= 0)``-style channels.

    A channel with ``scale > 0`` fires when ``dot >= tau``: ``t = ceil(tau)``. A channel with
    ``scale < 0`` fires when ``dot <= tau``; flipping its weight bits negates ``dot``, after which
    it fires when ``dot' >= -tau``: ``t = -floor(tau)`` (design.md §2, in the dot domain). A zero
    scale makes a constant channel whose value depends on the bias alone; it is rejected here so
    that the caller states the constant (any ``t`` below ``-K`` or above ``K``).

    Returns
    -------
    t : int64 array
        Thresholds on the (possibly flipped) dot product.
    flip : bool array
        Channels whose weight bits must be inverted.
    """
    scale = np.asarray(scale, dtype=np.float64)
    tau = np.asarray(tau, dtype=np.float64)
    if np.any(scale == 0):
        raise ModelError(f"threshold_from_affine: a zero scale makes a constant channel; got scale {scale}")
    flip = scale < 0
    t = np.where(flip, -np.floor(tau), np.ceil(tau))
    return t.astype(np.int64), flip


@dataclass(frozen=True, eq=False)
class InputSpec:
    """What the model takes: a flat vector ``(K,)`` or an ``(H, W, C)`` map.

    ``bits == 1`` means binary (±1) input: values are binarized with ``x >= 0 -> +1``.
    ``bits > 1`` means n-bit integers, unsigned ``[0, 2**bits)`` or signed two's complement;
    only the first layer may take them.
    """

    shape: tuple[int, ...]
    bits: int = 8
    signed: bool = False

    def __post_init__(self) -> None:
        where = "input"
        shape = tuple(self.shape) if isinstance(self.shape, (tuple, list)) else self.shape
        if not isinstance(shape, tuple) or len(shape) not in (1, 3) or any(
            isinstance(s, bool) or not isinstance(s, (int, np.integer)) or int(s) < 1 for s in shape
        ):
            raise ModelError(f"{where}: shape must be (K,) or (H, W, C) with positive integers, not {self.shape!r}")
        object.__setattr__(self, "shape", tuple(int(s) for s in shape))
        if isinstance(self.bits, bool) or not isinstance(self.bits, (int, np.integer)) or not 1 <= self.bits <= 32:
            raise ModelError(f"{where}: bits must be an integer from 1 (binary) to 32, not {self.bits!r}")
        object.__setattr__(self, "bits", int(self.bits))
        if not isinstance(self.signed, (bool, np.bool_)):
            raise ModelError(f"{where}: signed must be True or False, not {self.signed!r}")
        object.__setattr__(self, "signed", bool(self.signed))
        if self.bits == 1 and self.signed:
            raise ModelError(f"{where}: a binary input (bits=1) is ±1 already; signed must be False")

    @property
    def binary(self) -> bool:
        return self.bits == 1

    @property
    def value_range(self) -> tuple[int, int]:
        """Inclusive range of legal integer inputs (for binary inputs: any real number)."""
        if self.signed:
            return -(2 ** (self.bits - 1)), 2 ** (self.bits - 1) - 1
        return 0, 2**self.bits - 1

    def __eq__(self, other: object) -> bool:
        return isinstance(other, InputSpec) and (self.shape, self.bits, self.signed) == (
            other.shape,
            other.bits,
            other.signed,
        )

    def __hash__(self) -> int:
        return hash((self.shape, self.bits, self.signed))


#: Elementwise steps of an :class:`InputPrologue`: ``x op c`` (``rsub``: ``c - x``).
PROLOGUE_OPS = ("add", "sub", "mul", "div", "rsub")
#: Rounding of an integer :class:`InputPrologue` (QONNX ``Quant`` ``rounding_mode``, lower case;
#: ``half_even`` is QONNX's ``ROUND``).
ROUNDING_MODES = ("half_even", "half_up", "half_down", "up", "down", "floor", "ceil")
_PROLOGUE_DTYPES = ("float32", "float64")


def _round(y: np.ndarray, mode: str) -> np.ndarray:
    """QONNX's rounding functions (``qonnx.custom_op.general.intquant``), in y's dtype."""
    if mode == "half_even":
        return np.round(y)
    if mode == "floor":
        return np.floor(y)
    if mode == "ceil":
        return np.ceil(y)
    if mode == "up":
        return np.sign(y) * np.ceil(np.abs(y))
    if mode == "down":
        return np.fix(y)
    if mode == "half_up":
        return np.sign(y) * np.floor(np.abs(y) + y.dtype.type(0.5))
    return np.sign(y) * np.ceil(np.abs(y) - y.dtype.type(0.5))  # half_down


def _real(value: Any, what: str, where: str) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ModelError(f"{where}: {what} must be a real number, not {value!r}")
    try:
        out = float(value)
    except OverflowError:
        raise ModelError(f"{where}: {what} must be a finite real number, not {value!r}") from None
    if not math.isfinite(out):
        raise ModelError(f"{where}: {what} must be a finite real number, not {value!r}")
    return out


@dataclass(frozen=True, eq=False)
class InputPrologue:
    """How the source graph's own inputs become the model's input: its input quantizer.

    An imported network takes, say, NCHW float32 pixels and quantizes them before its first
    layer; the IR (and the hardware) takes the result, integer codes or bits. :meth:`apply` maps
    a batch ``x`` of shape ``(B, *source_shape)`` exactly as the source graph does:

    1. cast to ``dtype``, the source graph's arithmetic (``float32`` or ``float64``; the
       constants below are values of that dtype);
    2. each step ``(op, c)`` of ``ops`` in order, elementwise in that dtype: ``add`` ``x + c``,
       ``sub`` ``x - c``, ``mul`` ``x * c``, ``div`` ``x / c``, ``rsub`` ``c - x`` (e.g. the
       bnn_pynq ``2 x - 1`` is ``(("mul", 2.0), ("sub", 1.0))``);
    3. quantize. ``bits == 1``: QONNX ``BipolarQuant``, bit = ``x >= 0`` (sign(0) = +1);
       ``scale``, ``zero_point``, ``signed``, ``narrow`` and ``rounding`` stay at their defaults.
       ``bits >= 2``: QONNX ``Quant``, in that dtype and order: ``y = x / scale + zero_point``,
       clipped to the integer range of ``bits``/``signed``/``narrow``, rounded (``rounding``,
       one of :data:`ROUNDING_MODES`); the code is ``y - zero_point`` (an integer: the zero
       point must be one) and the source's value is ``code * scale``;
    4. lay each sample out as the IR input: its values are read in C order as ``(C, H, W)``
       (NCHW) and transposed for an ``(H, W, C)`` input, or flattened in C order for a ``(K,)``
       input. ``prod(source_shape)`` must equal the input's size.
    """

    source_shape: tuple[int, ...]
    ops: tuple[tuple[str, float], ...] = ()
    bits: int = 1
    scale: float = 1.0
    zero_point: float = 0.0
    signed: bool = True
    narrow: bool = False
    rounding: str = "half_even"
    dtype: str = "float32"

    def __post_init__(self) -> None:
        where = "prologue"
        shape = tuple(self.source_shape) if isinstance(self.source_shape, (tuple, list)) else self.source_shape
        if not isinstance(shape, tuple) or not shape or any(
            isinstance(s, bool) or not isinstance(s, (int, np.integer)) or int(s) < 1 for s in shape
        ):
            raise ModelError(f"{where}: source_shape must be a non-empty tuple of positive integers, not {self.source_shape!r}")
        object.__setattr__(self, "source_shape", tuple(int(s) for s in shape))
        try:
            steps = tuple(tuple(step) for step in self.ops)
        except TypeError:
            raise ModelError(f"{where}: ops must be a sequence of (op, constant) pairs, not {self.ops!r}") from None
        ops = []
        for j, step in enumerate(steps):
            if len(step) != 2 or step[0] not in PROLOGUE_OPS:
                raise ModelError(
                    f"{where}: ops[{j}] must be (op, constant) with op one of {', '.join(PROLOGUE_OPS)}, not {step!r}"
                )
            ops.append((str(step[0]), _real(step[1], f"ops[{j}] constant", where)))
        object.__setattr__(self, "ops", tuple(ops))
        if isinstance(self.bits, bool) or not isinstance(self.bits, (int, np.integer)) or not 1 <= self.bits <= 32:
            raise ModelError(f"{where}: bits must be an integer from 1 (bipolar) to 32, not {self.bits!r}")
        object.__setattr__(self, "bits", int(self.bits))
        for name in ("signed", "narrow"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise ModelError(f"{where}: {name} must be True or False, not {getattr(self, name)!r}")
            object.__setattr__(self, name, bool(getattr(self, name)))
        object.__setattr__(self, "scale", _real(self.scale, "scale", where))
        object.__setattr__(self, "zero_point", _real(self.zero_point, "zero_point", where))
        if self.rounding not in ROUNDING_MODES:
            raise ModelError(f"{where}: rounding must be one of {', '.join(ROUNDING_MODES)}, not {self.rounding!r}")
        if self.dtype not in _PROLOGUE_DTYPES:
            raise ModelError(f"{where}: dtype must be one of {', '.join(_PROLOGUE_DTYPES)}, not {self.dtype!r}")
        if self.dtype == "float32":  # the arithmetic runs in float32: its constants are float32s
            named = [(f"ops[{j}] constant", v) for j, (_, v) in enumerate(self.ops)]
            for what, value in named + [("scale", self.scale), ("zero_point", self.zero_point)]:
                with np.errstate(over="ignore"):
                    exact = float(np.float32(value)) == value
                if not exact:
                    raise ModelError(f"{where}: {what} {value!r} is not a float32 value (the prologue's dtype is float32)")
        if self.bits == 1:
            defaults = {"scale": 1.0, "zero_point": 0.0, "signed": True, "narrow": False, "rounding": "half_even"}
            for name, value in defaults.items():
                if getattr(self, name) != value:
                    raise ModelError(
                        f"{where}: a bipolar prologue (bits=1) takes the sign only; {name} must stay {value!r}, "
                        f"not {getattr(self, name)!r} (fold a scale or offset into ops)"
                    )
            return
        if self.scale == 0:
            raise ModelError(f"{where}: scale must be non-zero, not {self.scale!r}")
        if self.zero_point != round(self.zero_point) or abs(self.zero_point) > 2**40:
            raise ModelError(f"{where}: zero_point must be an integer (codes are integers), not {self.zero_point!r}")

    @property
    def binary(self) -> bool:
        return self.bits == 1

    @property
    def quant_range(self) -> tuple[int, int]:
        """Inclusive integer range of the quantizer before the zero point is taken off (QONNX
        ``min_int`` / ``max_int``)."""
        b = self.bits
        if self.signed:
            return (-(2 ** (b - 1)) + (1 if self.narrow else 0), 2 ** (b - 1) - 1)
        return 0, 2**b - (2 if self.narrow else 1)

    @property
    def code_range(self) -> tuple[int, int]:
        """Inclusive range of the codes the model receives (``quant_range - zero_point``)."""
        lo, hi = self.quant_range
        zp = int(self.zero_point)
        return lo - zp, hi - zp

    def fits(self, spec: "InputSpec") -> str | None:
        """Why this prologue cannot feed ``spec``, or None when it can."""
        if math.prod(self.source_shape) != math.prod(spec.shape):
            return (
                f"source_shape {self.source_shape} holds {math.prod(self.source_shape)} values but the input "
                f"{spec.shape} takes {math.prod(spec.shape)}"
            )
        if self.binary != spec.binary:
            got = "bits" if self.binary else "integer codes"
            return f"it yields {got} but the input is {'binary' if spec.binary else 'n-bit integers'}"
        if not self.binary:
            lo, hi = self.code_range
            ilo, ihi = spec.value_range
            if lo < ilo or hi > ihi:
                return f"its codes span [{lo}, {hi}], beyond the input's range [{ilo}, {ihi}]"
        return None

    def apply(self, x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        """The model input for a batch ``x`` of shape ``(B, *source_shape)``: bool bits
        (``bits == 1``) or int64 codes, laid out as ``(B, *shape)`` (``shape`` = the IR input).

        ``x`` must already have the right shape and hold real numbers (not NaN): callers check.
        """
        dt = np.dtype(self.dtype)
        y = np.asarray(x).astype(dt)  # always a copy
        c = dt.type
        for op, value in self.ops:
            if op == "add":
                y = y + c(value)
            elif op == "sub":
                y = y - c(value)
            elif op == "mul":
                y = y * c(value)
            elif op == "div":
                y = y / c(value)
            else:  # rsub
                y = c(value) - y
        if self.binary:
            out = y >= 0
        else:
            lo, hi = self.quant_range
            y = y / c(self.scale)
            y = y + c(self.zero_point)
            y = np.where(y > hi, c(hi), y)
            y = np.where(y < lo, c(lo), y)
            y = _round(y, self.rounding) - c(self.zero_point)
            out = y.astype(np.int64)
        b = out.shape[0]
        if len(shape) == 3:
            h, w, ch = shape
            return np.ascontiguousarray(out.reshape(b, ch, h, w).transpose(0, 2, 3, 1))
        return out.reshape((b,) + tuple(shape))

    def describe(self) -> str:
        """One line for people, e.g. ``(1, 28, 28) float32 -> *2 -1 -> Quant 8-bit signed full
        range, scale 0.0078125, zero point 0, half_even``."""
        sym = {"add": "+", "sub": "-", "mul": "*", "div": "/"}
        steps = " ".join(f"{value:g}-x" if op == "rsub" else f"{sym[op]}{value:g}" for op, value in self.ops)
        head = f"{self.source_shape} {self.dtype}" + (f" -> {steps}" if steps else "")
        if self.binary:
            return f"{head} -> sign (x >= 0)"
        kind = "signed" if self.signed else "unsigned"
        span = "narrow" if self.narrow else "full"
        return (
            f"{head} -> Quant {self.bits}-bit {kind} {span} range, scale {self.scale:.9g}, "
            f"zero point {self.zero_point:g}, {self.rounding}"
        )

    def _key(self) -> tuple:
        return (
            self.source_shape,
            self.ops,
            self.bits,
            self.scale,
            self.zero_point,
            self.signed,
            self.narrow,
            self.rounding,
            self.dtype,
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, InputPrologue) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())


class _LayerBase:
    kind: str = ""
    name: str

    def _fields(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in self.__dataclass_fields__}  # type: ignore[attr-defined]

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return False
        a, b = self._fields(), other._fields()  # type: ignore[attr-defined]
        for key in a:
            x, y = a[key], b[key]
            if isinstance(x, np.ndarray) or isinstance(y, np.ndarray):
                if x is None or y is None or x.dtype != y.dtype or not np.array_equal(x, y):
                    return False
            elif x != y:
                return False
        return True

    __hash__ = None  # type: ignore[assignment]

    def where(self, index: int | None = None) -> str:
        return _where(index, self.name, self.kind)


class _Compute(_LayerBase):
    weights: np.ndarray
    thresholds: np.ndarray | None

    @property
    def n(self) -> int:
        """Output channels."""
        return int(self.weights.shape[0])

    @property
    def k(self) -> int:
        """Reduction length (taps x input channels)."""
        return int(np.prod(self.weights.shape[1:]))

    @property
    def weights_2d(self) -> np.ndarray:
        """Weights as ``(N, K)`` booleans, taps flattened ``(ky, kx, c)``."""
        return self.weights.reshape(self.n, self.k)

    def popcount_thresholds(self) -> np.ndarray:
        """``T = ceil((t + K) / 2)``: the popcount-domain test ``p >= T`` of a binary layer whose
        every position sees all K taps (design.md §2). Constant channels come out as T = 0
        (always fires) or T = K + 1 (never fires), whatever the size of ``t``."""
        if self.thresholds is None:
            raise ModelError(f"{self.where()}: the output layer has no thresholds")
        # dot lies in [-K, K]: clipping t to [-K-1, K+1] keeps every test and cannot overflow
        t = np.clip(self.thresholds, -self.k - 1, self.k + 1)
        return -((-(t + self.k)) // 2)  # ceil division, exact on int64

    def _check_thresholds(self) -> None:
        where = self.where()
        if self.thresholds is not None:
            t = _frozen_array(self.thresholds, np.int64, 1, "thresholds", where)
            if t.shape[0] != self.n:
                raise ModelError(f"{where}: thresholds must have one entry per output channel ({self.n}), got {t.shape[0]}")
            object.__setattr__(self, "thresholds", t)


@dataclass(frozen=True, eq=False)
class Dense(_Compute):
    """Fully connected layer: ``weights`` ``(N, K)`` booleans; ``thresholds`` ``(N,)`` int on the
    dot product, or ``None`` for the output layer (integer scores)."""

    weights: np.ndarray
    thresholds: np.ndarray | None = None
    name: str = ""
    kind = "dense"

    def __post_init__(self) -> None:
        object.__setattr__(self, "weights", _frozen_array(self.weights, np.bool_, 2, "weights", self.where()))
        if self.n < 1 or self.k < 1:
            raise ModelError(f"{self.where()}: weights need at least one output and one input, got shape {self.weights.shape}")
        self._check_thresholds()

    def out_shape(self, in_shape: tuple[int, ...], index: int | None = None) -> tuple[int, ...]:
        if len(in_shape) != 1:
            raise ModelError(f"{self.where(index)}: a dense layer takes a flat vector; got shape {in_shape} (add a Flatten)")
        if in_shape[0] != self.k:
            raise ModelError(f"{self.where(index)}: weights have K={self.k} inputs but the layer receives {in_shape[0]} values")
        return (self.n,)


@dataclass(frozen=True, eq=False)
class Conv2d(_Compute):
    """2-D convolution on an ``(H, W, C)`` map.

    ``weights`` ``(N, kh, kw, C)`` booleans; ``stride`` ``(sh, sw)``; ``pads`` ``(top, left,
    bottom, right)`` (ONNX order); ``padding`` says what padded taps hold (:class:`Padding`).
    """

    weights: np.ndarray
    thresholds: np.ndarray | None = None
    stride: tuple[int, int] = (1, 1)
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)
    padding: Padding = Padding.ZERO
    name: str = ""
    kind = "conv"

    def __post_init__(self) -> None:
        where = self.where()
        object.__setattr__(self, "weights", _frozen_array(self.weights, np.bool_, 4, "weights", where))
        if min(self.weights.shape) < 1:
            raise ModelError(f"{where}: weights (N, kh, kw, C) must be non-empty, got shape {self.weights.shape}")
        object.__setattr__(self, "stride", _pair(self.stride, "stride", where, 1))
        pads = self.pads
        if isinstance(pads, (int, np.integer)) and not isinstance(pads, bool):
            pads = (int(pads),) * 4
        try:
            pads = tuple(pads)
        except TypeError:
            raise ModelError(f"{where}: pads must be (top, left, bottom, right), not {self.pads!r}") from None
        if len(pads) != 4 or any(isinstance(p, bool) or not isinstance(p, (int, np.integer)) or int(p) < 0 for p in pads):
            raise ModelError(f"{where}: pads must be 4 integers >= 0 (top, left, bottom, right), not {self.pads!r}")
        object.__setattr__(self, "pads", tuple(int(p) for p in pads))
        if not isinstance(self.padding, Padding):
            try:
                object.__setattr__(self, "padding", Padding(self.padding))
            except ValueError:
                choices = ", ".join(repr(p.value) for p in Padding)
                raise ModelError(f"{where}: padding must be one of {choices}, not {self.padding!r}") from None
        kh, kw = self.kernel
        t, l, b, r = self.pads
        if t >= kh or b >= kh or l >= kw or r >= kw:
            raise ModelError(f"{where}: each pad must be smaller than the kernel {self.kernel}, got pads {self.pads}")
        self._check_thresholds()

    @property
    def kernel(self) -> tuple[int, int]:
        return int(self.weights.shape[1]), int(self.weights.shape[2])

    @property
    def in_channels(self) -> int:
        return int(self.weights.shape[3])

    @property
    def padded(self) -> bool:
        return any(self.pads)

    def position_thresholds(self, in_shape: tuple[int, int, int]) -> np.ndarray:
        """Popcount-domain thresholds per output position, shape ``(Ho*Wo, N)`` int64, raster order.

        The popcount ``p`` runs over all ``K`` taps with every padded tap holding the padding's
        bit (design.md §2): bit 1 for ``+1`` padding, bit 0 otherwise. For ``+1``/``-1`` padding
        or no pads every row is :meth:`popcount_thresholds`. For ``ZERO`` padding the test
        ``dot_valid >= t`` over the valid taps becomes ``p >= ceil((t + K - S) / 2)``, with ``S``
        the sum of the ±1 weights over the position's padded taps (each holds bit 0, i.e. -1, so
        ``dot = dot_valid - S`` and ``dot = 2p - K``). Clipped to ``[0, K + 1]``, the same test for
        ``0 <= p <= K``.
        """
        if self.thresholds is None:
            raise ModelError(f"{self.where()}: the output layer has no thresholds")
        ho, wo, _ = self.out_shape(in_shape)
        t = np.clip(self.thresholds, -self.k - 1, self.k + 1)[None, :]
        if self.padding is Padding.ZERO and self.padded:
            h, w, _ = in_shape
            kh, kw = self.kernel
            sh, sw = self.stride
            top, left, _, _ = self.pads
            rows = np.arange(ho)[:, None] * sh - top + np.arange(kh)[None, :]  # (Ho, kh) input row of each tap
            cols = np.arange(wo)[:, None] * sw - left + np.arange(kw)[None, :]  # (Wo, kw)
            padded = ((rows < 0) | (rows >= h))[:, None, :, None] | ((cols < 0) | (cols >= w))[None, :, None, :]
            tap_sum = np.where(self.weights, 1, -1).astype(np.int64).sum(axis=3)  # (N, kh, kw)
            s = np.einsum("yxab,nab->yxn", padded.astype(np.int64), tap_sum).reshape(ho * wo, self.n)
        else:
            s = np.zeros((ho * wo, self.n), dtype=np.int64)
        return np.clip(-((-(t + self.k - s)) // 2), 0, self.k + 1)

    def out_shape(self, in_shape: tuple[int, ...], index: int | None = None) -> tuple[int, ...]:
        where = self.where(index)
        if len(in_shape) != 3:
            raise ModelError(f"{where}: a convolution takes an (H, W, C) map; got shape {in_shape}")
        h, w, c = in_shape
        if c != self.in_channels:
            raise ModelError(f"{where}: weights have C={self.in_channels} input channels but the map has {c}")
        t, l, b, r = self.pads
        kh, kw = self.kernel
        sh, sw = self.stride
        if h + t + b < kh or w + l + r < kw:
            raise ModelError(f"{where}: kernel {self.kernel} is larger than the padded map {(h + t + b, w + l + r)}")
        return ((h + t + b - kh) // sh + 1, (w + l + r - kw) // sw + 1, self.n)


@dataclass(frozen=True, eq=False)
class MaxPool2d(_LayerBase):
    """Binary max-pool on bits (OR over the window), no padding, floor mode."""

    kernel: tuple[int, int] = (2, 2)
    stride: tuple[int, int] | None = None
    name: str = ""
    kind = "maxpool"

    def __post_init__(self) -> None:
        where = self.where()
        object.__setattr__(self, "kernel", _pair(self.kernel, "kernel", where, 1))
        stride = self.kernel if self.stride is None else self.stride
        object.__setattr__(self, "stride", _pair(stride, "stride", where, 1))

    def out_shape(self, in_shape: tuple[int, ...], index: int | None = None) -> tuple[int, ...]:
        where = self.where(index)
        if len(in_shape) != 3:
            raise ModelError(f"{where}: max-pool takes an (H, W, C) map; got shape {in_shape}")
        h, w, c = in_shape
        kh, kw = self.kernel
        if h < kh or w < kw:
            raise ModelError(f"{where}: pool window {self.kernel} is larger than the map {(h, w)}")
        sh, sw = self.stride
        return ((h - kh) // sh + 1, (w - kw) // sw + 1, c)


@dataclass(frozen=True, eq=False)
class Flatten(_LayerBase):
    """Linearise an ``(H, W, C)`` map in the given order (``hwc`` is free; ``chw`` is the
    ONNX/PyTorch order)."""

    order: FlattenOrder = FlattenOrder.HWC
    name: str = ""
    kind = "flatten"

    def __post_init__(self) -> None:
        if not isinstance(self.order, FlattenOrder):
            try:
                object.__setattr__(self, "order", FlattenOrder(self.order))
            except ValueError:
                raise ModelError(f"{self.where()}: order must be 'hwc' or 'chw', not {self.order!r}") from None

    def out_shape(self, in_shape: tuple[int, ...], index: int | None = None) -> tuple[int, ...]:
        if len(in_shape) != 3:
            raise ModelError(f"{self.where(index)}: flatten takes an (H, W, C) map; got shape {in_shape}")
        return (math.prod(in_shape),)  # Python ints: no silent int64 wrap-around


@dataclass(frozen=True, eq=False)
class Epilogue:
    """Per-class affine map from integer scores to float logits: ``logits = scale * score + bias``."""

    scale: np.ndarray
    bias: np.ndarray

    def __post_init__(self) -> None:
        object.__setattr__(self, "scale", _frozen_array(self.scale, np.float64, 1, "epilogue scale", "epilogue"))
        object.__setattr__(self, "bias", _frozen_array(self.bias, np.float64, 1, "epilogue bias", "epilogue"))
        if self.scale.shape != self.bias.shape:
            raise ModelError(f"epilogue: scale and bias must have the same length, got {self.scale.shape[0]} and {self.bias.shape[0]}")

    @property
    def preserves_order(self) -> bool:
        """True when argmax of the logits equals argmax of the scores (one positive scale, one bias)."""
        return bool((self.scale > 0).all() and np.ptp(self.scale) == 0 and np.ptp(self.bias) == 0)

    def apply(self, scores: np.ndarray) -> np.ndarray:
        return scores.astype(np.float64) * self.scale + self.bias

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Epilogue)
            and np.array_equal(self.scale, other.scale)
            and np.array_equal(self.bias, other.bias)
        )

    __hash__ = None  # type: ignore[assignment]


Layer = Union[Dense, Conv2d, MaxPool2d, Flatten]
_LAYER_TYPES = (Dense, Conv2d, MaxPool2d, Flatten)


@dataclass(frozen=True, eq=False)
class Model:
    """A deployable BNN: an input spec, layers in order, an optional epilogue, an optional
    prologue (the source graph's input quantizer, :class:`InputPrologue`).

    Construction checks every rule and raises :class:`ModelError` naming the layer, the rule and
    the value. ``shapes[i]`` is the input shape of layer ``i``; ``shapes[-1]`` the scores' shape.
    """

    input: InputSpec
    layers: tuple[Layer, ...]
    epilogue: Epilogue | None = None
    name: str = ""
    metadata: Mapping[str, str] = field(default_factory=dict)  # read-only after construction
    prologue: InputPrologue | None = None
    shapes: tuple[tuple[int, ...], ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.input, InputSpec):
            raise ModelError(f"model: input must be an InputSpec, not {type(self.input).__name__}")
        layers = tuple(self.layers)
        if not layers:
            raise ModelError("model: needs at least one layer (the output dense layer)")
        shapes = [self.input.shape]
        for i, layer in enumerate(layers):
            if not isinstance(layer, _LAYER_TYPES):
                raise ModelError(f"layer {i}: must be Dense, Conv2d, MaxPool2d or Flatten, not {type(layer).__name__}")
            last = i == len(layers) - 1
            if isinstance(layer, _Compute):
                if last and layer.thresholds is not None:
                    raise ModelError(f"{layer.where(i)}: the last layer must emit integer scores (thresholds=None)")
                if not last and layer.thresholds is None:
                    raise ModelError(f"{layer.where(i)}: only the last layer may omit thresholds")
                if last and not isinstance(layer, Dense):
                    raise ModelError(f"{layer.where(i)}: the last layer must be Dense (scores vector), not {layer.kind}")
            elif last:
                raise ModelError(f"{layer.where(i)}: the model must end with a Dense layer without thresholds, not {layer.kind}")
            if isinstance(layer, MaxPool2d) and not self._binary_at(layers, i):
                raise ModelError(f"{layer.where(i)}: max-pool works on bits; it cannot take the integer input")
            shapes.append(layer.out_shape(shapes[-1], i))
        object.__setattr__(self, "layers", layers)
        object.__setattr__(self, "shapes", tuple(shapes))
        if self.epilogue is not None:
            if not isinstance(self.epilogue, Epilogue):
                raise ModelError(f"model: epilogue must be an Epilogue or None, not {type(self.epilogue).__name__}")
            if self.epilogue.scale.shape[0] != shapes[-1][0]:
                raise ModelError(
                    f"epilogue: has {self.epilogue.scale.shape[0]} classes but the last layer emits {shapes[-1][0]} scores"
                )
        if self.prologue is not None:
            if not isinstance(self.prologue, InputPrologue):
                raise ModelError(f"model: prologue must be an InputPrologue or None, not {type(self.prologue).__name__}")
            why = self.prologue.fits(self.input)
            if why is not None:
                raise ModelError(f"prologue: does not fit the model input: {why}")
        if not isinstance(self.metadata, (dict, types.MappingProxyType)) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in self.metadata.items()
        ):
            raise ModelError(f"model: metadata must map strings to strings, not {self.metadata!r}")
        object.__setattr__(self, "metadata", types.MappingProxyType(dict(self.metadata)))
        if not isinstance(self.name, str):
            raise ModelError(f"model: name must be a string, not {self.name!r}")

    def _binary_at(self, layers: tuple[Layer, ...], i: int) -> bool:
        """Whether layer ``i`` receives bits (True) or the model's integer input (False)."""
        if self.input.binary:
            return True
        return any(isinstance(p, _Compute) for p in layers[:i])

    def takes_integers(self, index: int) -> bool:
        """Whether layer ``index`` receives n-bit integers (only a first compute layer can)."""
        return not self._binary_at(self.layers, index)

    @property
    def n_classes(self) -> int:
        return self.shapes[-1][0]

    @property
    def compute_layers(self) -> list[tuple[int, Dense | Conv2d]]:
        """``(index, layer)`` of every Dense/Conv2d layer."""
        return [(i, l) for i, l in enumerate(self.layers) if isinstance(l, _Compute)]

    def positions(self, index: int) -> int:
        """Output positions of a compute layer per image (1 for dense, Ho*Wo for conv)."""
        out = self.shapes[index + 1]
        return 1 if len(out) == 1 else out[0] * out[1]

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Model)
            and self.input == other.input
            and len(self.layers) == len(other.layers)
            and all(a == b for a, b in zip(self.layers, other.layers))
            and self.epilogue == other.epilogue
            and self.prologue == other.prologue
            and self.name == other.name
            and dict(self.metadata) == dict(other.metadata)
        )

    __hash__ = None  # type: ignore[assignment]
