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
    """A deployable BNN: an input spec, layers in order, an optional epilogue.

    Construction checks every rule and raises :class:`ModelError` naming the layer, the rule and
    the value. ``shapes[i]`` is the input shape of layer ``i``; ``shapes[-1]`` the scores' shape.
    """

    input: InputSpec
    layers: tuple[Layer, ...]
    epilogue: Epilogue | None = None
    name: str = ""
    metadata: Mapping[str, str] = field(default_factory=dict)  # read-only after construction
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
            and self.name == other.name
            and dict(self.metadata) == dict(other.metadata)
        )

    __hash__ = None  # type: ignore[assignment]
