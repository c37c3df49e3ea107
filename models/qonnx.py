"""Import QONNX graphs (Brevitas ``export_qonnx``) into the bnnfab IR, exactly.

:func:`import_qonnx` walks the graph once, in order, following the values it computes:

* the source input (e.g. NCHW float32 pixels) through scalar ``Mul``/``Div``/``Add``/``Sub``
  steps, reshapes, and its quantizer (``Quant``, any bit width, or ``BipolarQuant``) becomes
  the model's :class:`~bnnfab.models.ir.InputPrologue`: the model takes the integer codes (or
  bits) and ``bnnfab simulate`` takes the source's own inputs and quantizes them as the graph
  does (its ``Mul 2, Sub 1``, ``x / scale + zero_point``, clipping, half-to-even rounding);
* ``MatMul`` (TorchScript exports: after a ``Transpose`` of the weights), ``Gemm`` (dynamo
  exports: ``transB=1``) and ``Conv`` whose weights are constants behind ``BipolarQuant`` (or any
  constants that are ``±c_n`` per output channel) start a layer. Its value is tracked as
  ``a_n * dot_n + b_n`` per output channel: the input's and weights' scales, ``BatchNormalization``,
  Gemm/Conv biases and ``Add``/``Sub``/``Mul``/``Div`` by per-channel constants (TensorNorm's
  scalar chain included) are folded into it, step by step in the graph's order;
* a ``BipolarQuant`` on that value ends a hidden layer. Its integer threshold on the dot product
  is the exact switch point of the graph's arithmetic, evaluated in float64 step by step (a
  vectorised binary search over the reachable dot products, so a threshold that lands exactly
  on an integer keeps the ``sign(0) = +1`` of the graph); channels whose scale is negative
  have their weight bits flipped (design.md §2);
* ``MaxPool`` on binary activations with a positive scale is an OR of bits; a ``MaxPool`` before
  the sign is accepted where it commutes exactly (every channel's scale non-negative before and
  after it) and is an error otherwise, as is one on integer codes;
* ``Reshape``/``Flatten`` of an NCHW map to ``(batch, C*H*W)`` is a ``Flatten(order="chw")``
  (before the first layer it is part of the prologue); conv weights are permuted
  ``(N, C, kh, kw) -> (N, kh, kw, C)``; ONNX's zero padding is :attr:`Padding.ZERO`;
* the graph output must be the last Gemm/MatMul's value: its weights give integer scores and
  its per-class ``a, b`` the :class:`~bnnfab.models.ir.Epilogue` that reproduces the graph's
  logits. A negative common scale is canonicalised (weights flipped, scale negated) so that the
  argmax of the integer scores is the graph's argmax; per-class scales or biases that could
  reorder the classes are an error unless ``strict_argmax=False``.

Standard ONNX ops whose inputs are all constants (``Pow`` of TensorNorm's variance, ``Shape``
arithmetic of ``x.view(x.shape[0], -1)``, weight ``Transpose``) are folded with onnx's reference
evaluator; ``Shape`` of a data tensor is its static shape. Anything else raises
:class:`QonnxImportError` naming the node, its op and what is supported.

Exactness: every threshold is the switch point of the graph's affine chain computed in float64,
and the epilogue is that chain's ``a, b`` in float64. The runtime that executes the graph
(``qonnx.core.onnx_exec.execute_onnx``, onnxruntime) works in float32, so

* a hidden bit can differ only where an integer dot product lies within float32 rounding (about
  1e-7 relative) of a channel's real threshold (none seen in 42 trained models x 1,797 images);
* logits agree to float32 rounding (about 1e-6 on bnn_pynq-sized logits);
* classes are the argmax of the integer scores, ties to the lowest index. Where scales are 1 or
  powers of two (bnn_pynq) the graph's float32 logits of tied scores are equal too and the
  classes agree exactly; with other scales (e.g. 0.1) float32 sums give tied scores slightly
  different logits and the graph's rounding noise, not the lowest index, picks among them.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from .ir import (
    _round,
    Conv2d,
    Dense,
    Epilogue,
    Flatten,
    FlattenOrder,
    InputPrologue,
    InputSpec,
    MaxPool2d,
    Model,
    ModelError,
    Padding,
)

__all__ = ["QonnxImportError", "import_qonnx", "SUPPORTED_OPS", "QONNX_DOMAINS"]

#: Domains of the QONNX custom ops (current, FINN's older one, Brevitas' oldest).
QONNX_DOMAINS = ("qonnx.custom_op.general", "finn.custom_op.general", "onnx.brevitas")

#: What each supported op may do; quoted in every "unsupported" error.
SUPPORTED_OPS: dict[str, str] = {
    "BipolarQuant": "on the input (the prologue), on a layer's value (its sign) or on constant weights",
    "Quant": "on the input (the prologue; 1-bit signed acts as a sign) or on constants",
    "Gemm": "binary constant weights (transB 0 or 1), transA=0, any alpha, beta and bias",
    "MatMul": "data times binary constant weights",
    "Conv": "2-D, binary constant weights, group=1, dilations 1, explicit pads (zero padding)",
    "BatchNormalization": "inference mode (training_mode=0), on a layer's value",
    "MaxPool": "2-D, no pads, dilations 1, on bits with a positive scale (or before the sign where it commutes)",
    "Reshape": "keeping the batch: an NCHW map to (batch, C*H*W), or a no-op",
    "Flatten": "axis=1",
    "Add": "a constant: scalar before the quantizer, per channel on a layer's value",
    "Sub": "a constant (either side): scalar before the quantizer, per channel on a layer's value",
    "Mul": "a constant: scalar on inputs and activations, per channel on a layer's value",
    "Div": "by a constant: scalar on inputs and activations, per channel on a layer's value",
    "Identity": "anywhere",
    "Shape": "of any tensor (static shapes)",
}
_SUPPORTED_TEXT = ", ".join(SUPPORTED_OPS) + "; and any standard op whose inputs are all constants (folded)"


class QonnxImportError(ValueError):
    """A graph bnnfab cannot import exactly; the message names the node, the op and what is supported."""


# ------------------------------------------------------------------------------ tracked values


@dataclass
class _Const:
    value: np.ndarray


@dataclass
class _Raw:
    """The source input before its quantizer: scalar steps in order (the prologue's ``ops``)."""

    shape: tuple[int, ...]  # batch first
    ops: list[tuple[str, float]]


@dataclass
class _Act:
    """Quantized values: real value = ``code * scale`` (integer codes of the model input) or
    ``±scale`` (bits: binary input or a hidden layer's output)."""

    shape: tuple[int, ...]
    scale: float
    binary: bool


@dataclass
class _Acc:
    """A layer's value before its sign: per output channel a monotone chain of affine steps
    applied to the dot product (first step: ``mul`` by input scale x weight magnitude)."""

    shape: tuple[int, ...]
    node: str
    kind: str  # "dense" or "conv"
    weights: np.ndarray  # bool, (N, K) or (N, kh, kw, C); bit 1 = +1
    conv: dict[str, Any]
    lo: int  # reachable dot products
    hi: int
    steps: list[tuple[str, Any]] = field(default_factory=list)
    pool: tuple[str, tuple[int, int], tuple[int, int], np.ndarray] | None = None

    @property
    def n(self) -> int:
        return int(self.weights.shape[0])

    def then(self, *steps: tuple[str, Any], **changes: Any) -> "_Acc":
        """A new value: these steps appended (tracked values are never changed in place)."""
        return replace(self, steps=self.steps + list(steps), **changes)


def _compose(steps: list[tuple[str, Any]], n: int) -> tuple[np.ndarray, np.ndarray]:
    """``(a, b)`` with ``value = a * dot + b``, composed in float64."""
    a = np.ones(n)
    b = np.zeros(n)
    for kind, p in steps:
        if kind == "mul":
            a, b = a * p, b * p
        elif kind == "div":
            a, b = a / p, b / p
        elif kind == "add":
            b = b + p
        elif kind == "sub":
            b = b - p
        elif kind == "rsub":
            a, b = -a, p - b
        else:  # bn
            mean, std, gamma, beta = p
            a, b = a / std * gamma, (b - mean) / std * gamma + beta
    return a, b


def _evaluate(steps: list[tuple[str, Any]], dot: np.ndarray) -> np.ndarray:
    """The chain at integer dot products ``dot`` (one per channel), step by step in float64."""
    x = dot.astype(np.float64)
    for kind, p in steps:
        if kind == "mul":
            x = x * p
        elif kind == "div":
            x = x / p
        elif kind == "add":
            x = x + p
        elif kind == "sub":
            x = x - p
        elif kind == "rsub":
            x = p - x
        else:
            mean, std, gamma, beta = p
            x = (x - mean) / std * gamma + beta
    return x


def _switch_points(steps: list[tuple[str, Any]], n: int, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
    """Integer thresholds ``t`` and weight flips such that ``chain(dot) >= 0`` iff
    ``(flip ? -dot : dot) >= t`` for every reachable ``dot`` in ``[lo, hi]``.

    The chain is monotone in ``dot`` (every step is, rounding included), increasing where the
    composed scale is positive: a binary search finds its exact switch point.
    """
    a, _ = _compose(steps, n)
    up = a > 0
    down = a < 0
    # increasing: smallest t in [lo, hi + 1] with f(t) >= 0 (hi + 1: never)
    left = np.full(n, lo, dtype=np.int64)
    right = np.full(n, hi + 1, dtype=np.int64)
    while True:
        active = up & (left < right)
        if not active.any():
            break
        mid = (left + right) // 2
        ok = _evaluate(steps, mid) >= 0
        right = np.where(active & ok, mid, right)
        left = np.where(active & ~ok, mid + 1, left)
    t = left.copy()
    # decreasing: largest u in [lo - 1, hi] with f(u) >= 0 (lo - 1: never); then -dot >= -u
    left = np.full(n, lo - 1, dtype=np.int64)
    right = np.full(n, hi, dtype=np.int64)
    while True:
        active = down & (left < right)
        if not active.any():
            break
        mid = (left + right + 1) // 2
        ok = _evaluate(steps, mid) >= 0
        left = np.where(active & ok, mid, left)
        right = np.where(active & ~ok, mid - 1, right)
    t = np.where(down, -left, t)
    # constant channels (a == 0): always or never
    const = ~(up | down)
    if const.any():
        fires = _evaluate(steps, np.zeros(n, dtype=np.int64)) >= 0
        t = np.where(const, np.where(fires, lo, hi + 1), t)
    return t.astype(np.int64), down


# ------------------------------------------------------------------------------------ importer


# QONNX Quant rounding_mode -> InputPrologue.rounding
_ROUNDING = {
    "ROUND": "half_even",
    "HALF_EVEN": "half_even",
    "HALF_UP": "half_up",
    "HALF_DOWN": "half_down",
    "UP": "up",
    "DOWN": "down",
    "FLOOR": "floor",
    "CEIL": "ceil",
}


def _quant_range(bits: int, signed: bool, narrow: bool) -> tuple[int, int]:
    """QONNX ``min_int`` / ``max_int``."""
    if signed:
        return -(2 ** (bits - 1)) + (1 if narrow else 0), 2 ** (bits - 1) - 1
    return 0, 2**bits - (2 if narrow else 1)


def _attrs(node: Any) -> dict[str, Any]:
    from onnx import helper

    out = {}
    for attr in node.attribute:
        value = helper.get_attribute_value(attr)
        out[attr.name] = value.decode() if isinstance(value, bytes) else value
    return out


class _Importer:
    def __init__(self, model: Any, strict_argmax: bool):
        from onnx import numpy_helper

        self.proto = model
        self.graph = model.graph
        self.strict_argmax = strict_argmax
        self.opsets = {(o.domain or ""): o.version for o in model.opset_import}
        self.opsets.setdefault("", 13)
        self.values: dict[str, Any] = {}
        for init in self.graph.initializer:
            self.values[init.name] = _Const(numpy_helper.to_array(init))
        self.layers: list[Any] = []
        self.source_shape: tuple[int, ...] = ()
        self.source_dtype = "float32"
        self.prologue: dict[str, Any] | None = None  # InputPrologue fields once quantized
        self.prologue_obj: InputPrologue | None = None  # ... and the prologue, once the input is fixed
        self.input_spec: InputSpec | None = None
        self.live: str | None = None
        self.label = ""
        self.op = ""

    # ---- messages

    def fail(self, message: str) -> QonnxImportError:
        return QonnxImportError(f"node {self.label!r} ({self.op}): {message}")

    def unsupported(self, what: str) -> QonnxImportError:
        hint = SUPPORTED_OPS.get(self.op)
        if hint is None:
            return self.fail(f"{what}; bnnfab imports {_SUPPORTED_TEXT}")
        return self.fail(f"{what}; supported: {self.op} {hint}")

    # ---- the walk

    def run(self) -> Model:
        graph = self.graph
        inputs = [i for i in graph.input if i.name not in self.values]
        if len(inputs) != 1:
            names = ", ".join(repr(i.name) for i in inputs) or "none"
            raise QonnxImportError(f"the graph must have exactly one data input (not an initializer); it has {names}")
        if len(graph.output) != 1:
            raise QonnxImportError(f"the graph must have exactly one output (the logits); it has {len(graph.output)}")
        inp = inputs[0]
        shape, dtype = self._input_type(inp)
        self.source_shape = shape[1:]
        self.source_dtype = dtype
        self.values[inp.name] = _Raw(shape, [])
        self.live = inp.name
        for index, node in enumerate(graph.node):
            self.label = node.name or f"#{index} -> {node.output[0] if node.output else '?'}"
            self.op = node.op_type
            self.visit(node)
        out_name = graph.output[0].name
        value = self.values.get(out_name)
        self.label, self.op = out_name, "graph output"
        if not isinstance(value, _Acc):
            what = {_Raw: "the unquantized input", _Act: "quantized values (bits or input codes)", _Const: "a constant"}
            what = what.get(type(value), "nothing")
            raise QonnxImportError(
                f"the graph output {out_name!r} must be the value of the last Gemm/MatMul (logits, possibly "
                f"through an affine chain), not {what}"
            )
        return self.finish(value)

    def _input_type(self, inp: Any) -> tuple[tuple[int, ...], str]:
        from onnx import TensorProto

        ttype = inp.type.tensor_type
        dtypes = {TensorProto.FLOAT: "float32", TensorProto.DOUBLE: "float64"}
        if ttype.elem_type not in dtypes:
            raise QonnxImportError(f"the graph input {inp.name!r} must be float32 or float64, not ONNX type {ttype.elem_type}")
        dims = list(ttype.shape.dim)
        if len(dims) < 2:
            raise QonnxImportError(f"the graph input {inp.name!r} must be (batch, ...) with at least 2 dimensions")
        shape = [d.dim_value if d.HasField("dim_value") else None for d in dims]
        if any(s is None or s < 1 for s in shape[1:]):
            raise QonnxImportError(f"the graph input {inp.name!r} needs static sizes after the batch, got {shape}")
        return (shape[0] or 1,) + tuple(shape[1:]), dtypes[ttype.elem_type]

    def visit(self, node: Any) -> None:
        ins = []
        for name in node.input:
            if not name:
                ins.append(None)
                continue
            if name not in self.values:
                raise self.fail(f"input {name!r} is not produced by any earlier node (the graph is not sorted?)")
            ins.append(self.values[name])
        live = [(j, v) for j, v in enumerate(ins) if v is not None and not isinstance(v, _Const)]
        if node.op_type == "Shape" and live:
            self.set(node, 0, _Const(self._shape_of(node, live[0][1].shape)))
            return
        if not live:
            outs = self.fold(node, [None if v is None else v.value for v in ins])
            for j, value in enumerate(outs):
                self.set(node, j, _Const(np.asarray(value)))
            return
        if len(live) > 1:
            raise self.fail("joins two data paths; bnnfab imports a single chain of layers")
        pos, value = live[0]
        if node.input[pos] != self.live:
            raise self.fail(
                f"reads {node.input[pos]!r}, which another node already consumed; bnnfab imports a single chain "
                "of layers (no branches)"
            )
        if len([o for o in node.output if o]) != 1:
            raise self.unsupported(f"has {len(node.output)} outputs")
        domain = node.domain or ""
        if domain not in ("", "ai.onnx") and not (domain in QONNX_DOMAINS and node.op_type in ("BipolarQuant", "Quant")):
            raise self.unsupported(f"op {node.op_type!r} of domain {domain!r} is not supported")
        handler = getattr(self, "op_" + node.op_type, None)
        if handler is None or (domain in ("", "ai.onnx")) == (node.op_type in ("BipolarQuant", "Quant")):
            raise self.unsupported(f"op {node.op_type!r} on data is not supported")
        result = handler(node, pos, value, ins)
        self.set(node, 0, result)
        self.live = node.output[0]

    def set(self, node: Any, j: int, value: Any) -> None:
        if j < len(node.output) and node.output[j]:
            self.values[node.output[j]] = value

    def _shape_of(self, node: Any, shape: tuple[int, ...]) -> np.ndarray:
        a = _attrs(node)
        start, end = a.get("start", 0), a.get("end", len(shape))
        return np.array(shape[slice(start, end)], dtype=np.int64)

    # ---- constants

    def fold(self, node: Any, values: list[np.ndarray | None]) -> list[np.ndarray]:
        domain = node.domain or ""
        if domain in QONNX_DOMAINS and node.op_type == "BipolarQuant":
            x, scale = values[0], values[1]
            return [np.where(x >= 0, np.ones_like(x), -np.ones_like(x)) * scale]
        if domain in QONNX_DOMAINS and node.op_type == "Quant":
            return [self._quant_const(node, values)]
        if domain not in ("", "ai.onnx"):
            raise self.unsupported(f"op {node.op_type!r} of domain {domain!r} is not supported, even on constants")
        from onnx.reference import ReferenceEvaluator

        try:
            session = ReferenceEvaluator(node, opsets={"": self.opsets.get("", 13)})
            feeds = {name: v for name, v in zip(node.input, values) if name}
            return list(session.run(None, feeds))
        except Exception as exc:  # the reference evaluator raises anything
            raise self.fail(f"cannot fold this op on constants ({type(exc).__name__}: {exc})") from None

    def _quant_const(self, node: Any, values: list[np.ndarray | None]) -> np.ndarray:
        """QONNX ``Quant`` on a constant (``qonnx.custom_op.general.intquant.int_quant``)."""
        x, scale, zp, bw = values[:4]
        a = _attrs(node)
        signed, narrow = bool(a.get("signed", 1)), bool(a.get("narrow", 0))
        bits = int(np.asarray(bw).item())
        y = x / scale + zp
        if bits == 1 and signed:
            y = np.where(y >= 0, np.ones_like(y), -np.ones_like(y))
        else:
            lo, hi = _quant_range(bits, signed, narrow)
            y = np.where(y > hi, np.asarray(hi, dtype=y.dtype), y)
            y = np.where(y < lo, np.asarray(lo, dtype=y.dtype), y)
            y = _round(y, self._rounding(node))
        return (y - zp) * scale

    def scalar(self, ins: list[Any], j: int, what: str) -> float:
        v = ins[j] if j < len(ins) else None
        if not isinstance(v, _Const):
            raise self.fail(f"{what} must be a constant")
        arr = np.asarray(v.value)
        if arr.size != 1:
            raise self.unsupported(f"{what} must be a scalar constant, got shape {arr.shape}")
        out = float(arr.reshape(()))
        if not math.isfinite(out):
            raise self.fail(f"{what} must be finite, got {out}")
        return out

    def channel_vector(self, c: np.ndarray, shape: tuple[int, ...], what: str) -> np.ndarray:
        """A constant broadcast against a ``(batch, C, ...)`` value, as one float64 per channel."""
        c = np.asarray(c, dtype=np.float64)
        rank = len(shape)
        if c.ndim > rank:
            raise self.unsupported(f"{what} of shape {c.shape} has more dimensions than the data {shape}")
        cs = (1,) * (rank - c.ndim) + c.shape
        for ax, (dc, ds) in enumerate(zip(cs, shape)):
            if dc != 1 and (ax != 1 or dc != ds):
                raise self.unsupported(
                    f"{what} of shape {c.shape} is not a per-channel constant of the (batch, channels, ...) data {shape}"
                )
        index = tuple(slice(None) if ax == 1 else 0 for ax in range(rank))
        vec = np.broadcast_to(c.reshape(cs)[index], (shape[1],)).astype(np.float64)
        if not np.isfinite(vec).all():
            raise self.fail(f"{what} must be finite")
        return vec

    # ---- elementwise

    def _arith(self, node: Any, pos: int, value: Any, ins: list[Any]) -> Any:
        op = node.op_type
        other = ins[1 - pos] if len(ins) == 2 else None
        if not isinstance(other, _Const):
            raise self.fail(f"{op} takes the data and one constant")
        c = np.asarray(other.value)
        try:
            grows = np.broadcast_shapes(value.shape, c.shape) != tuple(value.shape)
        except ValueError:
            grows = True
        if grows:
            raise self.unsupported(f"the constant of shape {c.shape} would change the data's shape {value.shape}")
        kind = {"Add": "add", "Sub": "sub" if pos == 0 else "rsub", "Mul": "mul", "Div": "div" if pos == 0 else "rdiv"}[op]
        if kind == "rdiv":
            raise self.unsupported("dividing a constant by the data is not affine")
        if isinstance(value, _Acc):
            vec = self.channel_vector(c, value.shape, "the constant")
            if kind == "div" and (vec == 0).any():
                raise self.fail("divides by zero")
            return value.then((kind, vec))
        if c.size != 1:
            where = "before the quantizer" if isinstance(value, _Raw) else "on quantized values"
            raise self.unsupported(f"{where} only scalar constants are supported, got shape {c.shape}")
        k = self.scalar([other], 0, "the constant")
        if isinstance(value, _Raw):
            return _Raw(tuple(value.shape), value.ops + [(kind, k)])
        # quantized values: only a scale change keeps them integer / binary
        if kind in ("mul", "div") and k != 0:
            return _Act(value.shape, value.scale * k if kind == "mul" else value.scale / k, value.binary)
        if kind == "rsub" and k == 0:
            return _Act(value.shape, -value.scale, value.binary)
        if kind in ("add", "sub") and k == 0:
            return value
        raise self.unsupported(
            f"{op} by {k!r} on quantized values would leave the integer/binary domain (only a non-zero scale is possible)"
        )

    op_Add = op_Sub = op_Mul = op_Div = _arith

    def op_Identity(self, node: Any, pos: int, value: Any, ins: list[Any]) -> Any:
        return value

    # ---- shapes

    def _reshape_to(self, node: Any, value: Any, target: tuple[int, ...]) -> Any:
        shape = tuple(value.shape)
        if math.prod(target) != math.prod(shape) or target[0] != shape[0]:
            raise self.unsupported(f"reshapes {shape} to {target}, which does not keep the batch dimension")
        if target == shape:
            return value
        if isinstance(value, _Raw):
            return _Raw(target, value.ops)
        if isinstance(value, _Act) and self.input_spec is None:
            return _Act(target, value.scale, value.binary)  # still the input: the prologue lays it out
        if isinstance(value, _Act) and len(shape) == 4 and len(target) == 2:
            self.layers.append(Flatten(order=FlattenOrder.CHW, name=node.name))
            return _Act(target, value.scale, value.binary)
        if isinstance(value, _Acc):
            raise self.unsupported(f"reshapes a layer's value {shape} to {target} before its sign")
        raise self.unsupported(f"reshapes {shape} to {target}; only an NCHW map to (batch, C*H*W) is supported")

    def op_Reshape(self, node: Any, pos: int, value: Any, ins: list[Any]) -> Any:
        if pos != 0 or len(ins) < 2 or not isinstance(ins[1], _Const):
            raise self.fail("the target shape must be a constant")
        want = [int(v) for v in np.asarray(ins[1].value).reshape(-1)]
        allowzero = _attrs(node).get("allowzero", 0)
        shape = tuple(value.shape)
        out = []
        for j, v in enumerate(want):
            if v == 0 and not allowzero:
                if j >= len(shape):
                    raise self.fail(f"target shape {want} copies a dimension the data {shape} does not have")
                v = shape[j]
            out.append(v)
        if out.count(-1) > 1 or any(v < -1 for v in out):
            raise self.fail(f"invalid target shape {want}")
        if -1 in out:
            known = math.prod(v for v in out if v != -1)
            if known == 0 or math.prod(shape) % known:
                raise self.fail(f"cannot reshape {shape} to {want}")
            out[out.index(-1)] = math.prod(shape) // known
        return self._reshape_to(node, value, tuple(out))

    def op_Flatten(self, node: Any, pos: int, value: Any, ins: list[Any]) -> Any:
        axis = _attrs(node).get("axis", 1)
        shape = tuple(value.shape)
        if axis < 0:
            axis += len(shape)
        if axis != 1:
            raise self.unsupported(f"axis={_attrs(node).get('axis')} is not supported")
        return self._reshape_to(node, value, (shape[0], math.prod(shape[1:])))

    # ---- quantizers

    def _rounding(self, node: Any) -> str:
        mode = str(_attrs(node).get("rounding_mode", "ROUND")).upper()
        if mode not in _ROUNDING:
            raise self.unsupported(f"rounding_mode {mode!r} is not supported (one of {', '.join(_ROUNDING)})")
        return _ROUNDING[mode]

    def _sign(self, node: Any, value: Any, pre: list[tuple[str, float]], scale: float) -> _Act:
        """A sign (BipolarQuant, 1-bit Quant) of ``value`` after the scalar steps ``pre``,
        giving ``±scale``."""
        if scale == 0:
            raise self.fail("a zero scale makes every activation 0")
        if isinstance(value, _Raw):
            self._start_prologue(node, value.ops + pre, {})
            return _Act(value.shape, scale, True)
        if isinstance(value, _Acc):
            value = value.then(*((kind, np.full(value.n, k)) for kind, k in pre))
            self._end_layer(node, value)
            return _Act(value.shape, scale, True)
        # a sign of bits: the same bits (or their negation, folded into the scale)
        k = value.scale
        for kind, c in pre:
            if kind in ("mul", "div") and c != 0:
                k = k * c if kind == "mul" else k / c
            elif not (kind == "add" and c == 0):
                raise self.unsupported("a sign of shifted quantized values is not supported")
        if not value.binary:
            raise self.unsupported("a sign of the integer input is not supported (quantize the input once)")
        return _Act(value.shape, scale if k > 0 else -scale, True)

    def op_BipolarQuant(self, node: Any, pos: int, value: Any, ins: list[Any]) -> Any:
        if pos != 0:
            raise self.fail("the scale must be a constant")
        return self._sign(node, value, [], self.scalar(ins, 1, "the scale"))

    def op_Quant(self, node: Any, pos: int, value: Any, ins: list[Any]) -> Any:
        if pos != 0:
            raise self.fail("scale, zero point and bit width must be constants")
        scale = self.scalar(ins, 1, "the scale")
        zp = self.scalar(ins, 2, "the zero point")
        bw = self.scalar(ins, 3, "the bit width")
        a = _attrs(node)
        signed, narrow = bool(a.get("signed", 1)), bool(a.get("narrow", 0))
        if bw != round(bw) or not 1 <= bw <= 32:
            raise self.unsupported(f"bit width {bw} is not supported (integers 1 to 32)")
        bits = int(bw)
        if scale == 0:
            raise self.fail("a zero scale")
        if bits == 1 and signed:
            if zp != 0:
                raise self.unsupported(f"a 1-bit Quant with zero point {zp} is not ±scale; use zero point 0")
            return self._sign(node, value, [("div", scale), ("add", zp)], scale)
        if not isinstance(value, _Raw):
            raise self.unsupported(
                f"a Quant of {bits} bits on a layer's value: bnnfab's hidden activations are binary (BipolarQuant); "
                "only the input may be an n-bit Quant"
            )
        if bits == 1:
            raise self.unsupported("a 1-bit unsigned Quant on the input is not supported (use BipolarQuant)")
        fields = {"bits": bits, "scale": scale, "zero_point": zp, "signed": signed, "narrow": narrow}
        fields["rounding"] = self._rounding(node)
        if zp != round(zp):
            raise self.unsupported(f"zero point {zp} is not an integer, so the codes would not be integers")
        self._start_prologue(node, value.ops, fields)
        return _Act(value.shape, scale, False)

    def _start_prologue(self, node: Any, ops: list[tuple[str, float]], fields: dict[str, Any]) -> None:
        if self.prologue is not None:  # pragma: no cover - a second quantizer of raw data needs a branch
            raise self.fail("the input is quantized twice")
        self.prologue = {"ops": tuple(ops), **fields}

    # ---- layers

    def _fix_input(self, value: _Act) -> None:
        """The model input, once the first layer needs it."""
        if self.input_spec is not None:
            return
        shape = tuple(value.shape[1:])
        if len(shape) == 3:
            c, h, w = shape
            shape = (h, w, c)
        elif len(shape) != 1:
            raise self.fail(f"the quantized input must be (batch, features) or (batch, C, H, W), got {value.shape}")
        assert self.prologue is not None
        try:
            prologue = InputPrologue(self.source_shape, dtype=self.source_dtype, **self.prologue)
            if prologue.binary:
                spec = InputSpec(shape, bits=1)
            else:
                lo, hi = prologue.code_range
                signed = lo < 0
                bits = 2
                while bits <= 32 and not (
                    (signed and -(2 ** (bits - 1)) <= lo and hi <= 2 ** (bits - 1) - 1) or (not signed and hi < 2**bits)
                ):
                    bits += 1
                if bits > 32:
                    raise self.unsupported(f"input codes [{lo}, {hi}] need more than 32 bits")
                spec = InputSpec(shape, bits=bits, signed=signed)
        except ModelError as exc:
            raise self.fail(f"the input quantizer cannot be a prologue: {exc}") from None
        self.prologue_obj = prologue
        self.input_spec = spec

    def _layer_input(self, value: Any, rank: int) -> _Act:
        if isinstance(value, _Raw):
            raise self.fail(
                "takes the unquantized input: quantize it first (Quant or BipolarQuant); bnnfab layers take "
                "integers or bits"
            )
        if isinstance(value, _Acc):
            raise self.unsupported("takes a layer's value before its sign: put a BipolarQuant between layers")
        if len(value.shape) != rank:
            raise self.unsupported(f"takes data of shape {value.shape}; expected {rank} dimensions")
        self._fix_input(value)
        return value

    def _bounds(self, value: _Act, k: int) -> tuple[int, int]:
        if self.layers or value.binary:
            return -k, k
        lo, hi = self.prologue_obj.code_range
        m = max(abs(lo), abs(hi))
        return -k * m, k * m

    def _binary_weights(self, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Bits (bit 1 = +1) and per-output-channel magnitude of constant weights ``(N, ...)``."""
        w = np.asarray(w)
        if not np.issubdtype(w.dtype, np.floating) and not np.issubdtype(w.dtype, np.integer):
            raise self.fail(f"weights must be real numbers, got dtype {w.dtype}")
        w = w.astype(np.float64)
        flat = np.abs(w.reshape(w.shape[0], -1))
        mag = flat[:, 0]
        bad = np.flatnonzero(~(flat == mag[:, None]).all(axis=1) | ~np.isfinite(mag))
        if bad.size:
            n = int(bad[0])
            found = np.unique(flat[n])
            raise self.unsupported(
                f"weights are not binary: output channel {n} has magnitudes {found[:4].tolist()}"
                f"{'...' if found.size > 4 else ''} (binary weights are ±c per channel: BipolarQuant, "
                "Brevitas weight_bit_width=1)"
            )
        return ~np.signbit(w), mag

    def _start_layer(self, node: Any, value: _Act, kind: str, w: np.ndarray, out_shape: tuple[int, ...], conv: dict) -> _Acc:
        bits, mag = self._binary_weights(w)
        if kind == "conv":
            bits = bits.transpose(0, 2, 3, 1)  # (N, C, kh, kw) -> (N, kh, kw, C)
        k = int(np.prod(bits.shape[1:]))
        lo, hi = self._bounds(value, k)
        return _Acc(out_shape, node.name or self.label, kind, bits, conv, lo, hi, [("mul", value.scale * mag)])

    def op_MatMul(self, node: Any, pos: int, value: Any, ins: list[Any]) -> Any:
        if pos != 0 or not isinstance(ins[1], _Const):
            raise self.unsupported("the weights (second input) must be constant")
        value = self._layer_input(value, 2)
        b = np.asarray(ins[1].value)
        if b.ndim != 2 or b.shape[0] != value.shape[1]:
            raise self.fail(f"weights of shape {b.shape} do not fit data of shape {value.shape}")
        return self._start_layer(node, value, "dense", b.T, (value.shape[0], b.shape[1]), {})

    def op_Gemm(self, node: Any, pos: int, value: Any, ins: list[Any]) -> Any:
        a = _attrs(node)
        if pos != 0 or not isinstance(ins[1], _Const):
            raise self.unsupported("the weights (input B) must be constant")
        if a.get("transA", 0):
            raise self.unsupported("transA=1 is not supported")
        value = self._layer_input(value, 2)
        b = np.asarray(ins[1].value)
        w = b if a.get("transB", 0) else b.T
        if w.ndim != 2 or w.shape[1] != value.shape[1]:
            raise self.fail(f"weights of shape {b.shape} (transB={a.get('transB', 0)}) do not fit data of shape {value.shape}")
        acc = self._start_layer(node, value, "dense", w, (value.shape[0], w.shape[0]), {})
        alpha, beta = float(a.get("alpha", 1.0)), float(a.get("beta", 1.0))
        if alpha != 1.0:
            acc = acc.then(("mul", np.full(acc.n, alpha)))
        if len(ins) > 2 and ins[2] is not None:
            if not isinstance(ins[2], _Const):
                raise self.fail("the bias (input C) must be constant")
            acc = acc.then(("add", beta * self.channel_vector(ins[2].value, acc.shape, "the bias")))
        return acc

    def op_Conv(self, node: Any, pos: int, value: Any, ins: list[Any]) -> Any:
        a = _attrs(node)
        if pos != 0 or not isinstance(ins[1], _Const):
            raise self.unsupported("the weights must be constant")
        value = self._layer_input(value, 4)
        w = np.asarray(ins[1].value)
        if w.ndim != 4 or w.shape[1] != value.shape[1]:
            raise self.unsupported(f"weights of shape {w.shape} for data {value.shape}: only 2-D convolutions, group=1")
        kh, kw = w.shape[2:]
        if a.get("group", 1) != 1:
            raise self.unsupported(f"group={a['group']} is not supported")
        if list(a.get("dilations", [1, 1])) != [1, 1]:
            raise self.unsupported(f"dilations={list(a['dilations'])} are not supported")
        if list(a.get("kernel_shape", [kh, kw])) != [kh, kw]:
            raise self.fail(f"kernel_shape {list(a['kernel_shape'])} does not match the weights {w.shape}")
        auto_pad = a.get("auto_pad", "NOTSET")
        if auto_pad not in ("NOTSET", "VALID"):
            raise self.unsupported(f"auto_pad={auto_pad!r} is not supported (give explicit pads)")
        sh, sw = (list(a.get("strides", [1, 1])) + [1, 1])[:2]
        top, left, bottom, right = a.get("pads", [0, 0, 0, 0]) if auto_pad == "NOTSET" else [0, 0, 0, 0]
        _, _, h, wd = value.shape
        if h + top + bottom < kh or wd + left + right < kw:
            raise self.fail(f"kernel {(kh, kw)} is larger than the padded map")
        out = (value.shape[0], w.shape[0], (h + top + bottom - kh) // sh + 1, (wd + left + right - kw) // sw + 1)
        conv = {"stride": (sh, sw), "pads": (top, left, bottom, right)}
        if top >= kh or bottom >= kh or left >= kw or right >= kw:
            raise self.unsupported(f"pads {[top, left, bottom, right]} must be smaller than the kernel {(kh, kw)}")
        acc = self._start_layer(node, value, "conv", w, out, conv)
        if len(ins) > 2 and ins[2] is not None:
            if not isinstance(ins[2], _Const):
                raise self.fail("the bias must be constant")
            acc = acc.then(("add", self.channel_vector(np.asarray(ins[2].value).reshape(-1), (1, acc.n), "the bias")))
        return acc

    def op_BatchNormalization(self, node: Any, pos: int, value: Any, ins: list[Any]) -> Any:
        a = _attrs(node)
        if a.get("training_mode", 0):
            raise self.unsupported("training_mode=1 is not supported (export the model in eval mode)")
        if len(node.output) > 1 and any(node.output[1:]):
            raise self.unsupported("running-statistics outputs (training mode) are not supported")
        if not isinstance(value, _Acc):
            raise self.unsupported("BatchNormalization must follow a layer (Gemm, MatMul, Conv)")
        if pos != 0 or len(ins) != 5 or not all(isinstance(v, _Const) for v in ins[1:]):
            raise self.fail("scale, bias, mean and variance must be constants")
        gamma, beta, mean, var = (
            self.channel_vector(np.asarray(v.value).reshape(-1), (1, value.n), "a parameter") for v in ins[1:]
        )
        eps = float(a.get("epsilon", 1e-5))
        std = np.sqrt(var + eps)
        if not (std > 0).all():
            raise self.fail("variance + epsilon must be positive")
        return value.then(("bn", (mean, std, gamma, beta)))

    def op_MaxPool(self, node: Any, pos: int, value: Any, ins: list[Any]) -> Any:
        a = _attrs(node)
        if len(value.shape) != 4:
            raise self.unsupported(f"takes data of shape {value.shape}; only 2-D pooling of (batch, C, H, W) maps")
        kernel = tuple(a.get("kernel_shape", []))
        if len(kernel) != 2:
            raise self.unsupported(f"kernel_shape {list(kernel)} is not 2-D")
        stride = tuple((list(a.get("strides", [1, 1])) + [1, 1])[:2])
        if any(a.get("pads", [0, 0, 0, 0])):
            raise self.unsupported(f"pads={list(a['pads'])} are not supported (bnnfab pools have no padding)")
        if list(a.get("dilations", [1, 1])) != [1, 1]:
            raise self.unsupported(f"dilations={list(a['dilations'])} are not supported")
        if a.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
            raise self.unsupported(f"auto_pad={a['auto_pad']!r} is not supported")
        b, c, h, w = value.shape
        if h < kernel[0] or w < kernel[1]:
            raise self.fail(f"window {kernel} is larger than the map {(h, w)}")
        ho, wo = (h - kernel[0]) // stride[0] + 1, (w - kernel[1]) // stride[1] + 1
        if a.get("ceil_mode", 0) and (-(-(h - kernel[0]) // stride[0]) + 1, -(-(w - kernel[1]) // stride[1]) + 1) != (ho, wo):
            raise self.unsupported("ceil_mode=1 with a partial last window is not supported")
        out = (b, c, ho, wo)
        if isinstance(value, _Raw):
            raise self.unsupported("max-pooling the unquantized input is not supported")
        if isinstance(value, _Act):
            if not value.binary:
                raise self.unsupported("max-pooling the integer input is not supported (bnnfab pools bits)")
            if value.scale < 0:
                raise self.unsupported(
                    f"the bits here have a negative scale ({value.scale}): the max is an AND of bits, not an OR"
                )
            self._fix_input(value)
            self.layers.append(MaxPool2d(kernel=kernel, stride=stride, name=node.name))
            return _Act(out, value.scale, True)
        if value.pool is not None:
            raise self.unsupported("two max-pools before one sign are not supported")
        a_pre, _ = _compose(value.steps, value.n)
        return value.then(pool=(node.name or self.label, kernel, stride, a_pre), shape=out)

    def _end_layer(self, node: Any, acc: _Acc) -> None:
        """A sign ends ``acc``: thresholds (and flips) from its chain; the layer joins the model."""
        t, flip = _switch_points(acc.steps, acc.n, acc.lo, acc.hi)
        if acc.pool is not None:
            pool_node, kernel, stride, a_pre = acc.pool
            a, _ = _compose(acc.steps, acc.n)
            bad = np.flatnonzero((a_pre < 0) | (a < 0))
            if bad.size:
                c = int(bad[0])
                raise QonnxImportError(
                    f"node {pool_node!r} (MaxPool): does not commute with the sign at node {self.label!r}: channel {c} "
                    f"has scale {a_pre[c]:.6g} before the pool and {a[c]:.6g} at the sign, so the pool would be an AND "
                    "of bits; bnnfab pools bits with OR: the value must not decrease with the dot product "
                    "(pool after the activation, or keep BatchNorm gammas positive)"
                )
        weights = acc.weights ^ flip.reshape((-1,) + (1,) * (acc.weights.ndim - 1))
        if acc.kind == "dense":
            layer = Dense(weights, t, name=acc.node)
        else:
            layer = Conv2d(weights, t, padding=Padding.ZERO, name=acc.node, **acc.conv)
        self.layers.append(layer)
        if acc.pool is not None:
            self.layers.append(MaxPool2d(kernel=acc.pool[1], stride=acc.pool[2], name=acc.pool[0]))

    def finish(self, acc: _Acc) -> Model:
        if acc.kind != "dense" or acc.pool is not None:
            raise QonnxImportError(
                f"node {acc.node!r}: the last layer must be a Gemm/MatMul giving the class scores, not a "
                f"{'max-pooled ' if acc.pool is not None else ''}{acc.kind}"
            )
        a, b = _compose(acc.steps, acc.n)
        weights = acc.weights
        if (a < 0).all():  # canonical: argmax of the scores = argmax of the logits
            weights, a = ~weights, -a
        epilogue = Epilogue(a, b)
        if not epilogue.preserves_order and self.strict_argmax:
            raise QonnxImportError(
                f"node {acc.node!r}: the output's per-class affine map (scale {_short(a)}, bias {_short(b)}) can "
                "reorder the classes, so the argmax of the integer scores (what bnnfab computes) could differ from "
                "the graph's; pass strict_argmax=False to import anyway"
            )
        self.layers.append(Dense(weights, None, name=acc.node))
        metadata = {"source": "qonnx"}
        if self.proto.producer_name:
            metadata["producer"] = f"{self.proto.producer_name} {self.proto.producer_version}".strip()
        if not epilogue.preserves_order:
            metadata["argmax"] = "classes are the argmax of the integer scores; the epilogue can reorder them"
        try:
            return Model(self.input_spec, tuple(self.layers), epilogue, self.graph.name or "", metadata, self.prologue_obj)
        except ModelError as exc:  # pragma: no cover - the walk builds valid models
            raise QonnxImportError(f"the imported model breaks a rule of the IR: {exc}") from None


def _short(v: np.ndarray) -> str:
    items = ", ".join(f"{x:.6g}" for x in v[:4])
    return f"[{items}{', ...' if v.size > 4 else ''}]"


def import_qonnx(source: Any, *, name: str | None = None, strict_argmax: bool = True) -> Model:
    """Import a QONNX graph (Brevitas ``export_qonnx``, raw or after ``qonnx`` cleanup) exactly.

    Parameters
    ----------
    source : path, ``onnx.ModelProto`` or ``qonnx`` ``ModelWrapper``
        The graph. One data input (its float dtype and layout become the model's prologue),
        one output (the logits).
    name : str, optional
        The model's name; default: the file's stem, else the graph's name.
    strict_argmax : bool
        Refuse an output whose per-class scales or biases could make the argmax of the integer
        scores differ from the graph's argmax (default). With False such a model is imported
        with its epilogue; its classes are then the argmax of the integer scores.

    Returns
    -------
    Model
        With an :class:`~bnnfab.models.ir.InputPrologue` (the graph's input quantizer) and an
        :class:`~bnnfab.models.ir.Epilogue` reproducing the graph's logits.

    Raises
    ------
    QonnxImportError
        The file cannot be read as ONNX, or the graph holds an op, attribute or structure outside
        what bnnfab imports exactly; the message names the node, the op and what is supported.
    """
    try:
        import onnx
    except ImportError:  # pragma: no cover - depends on the environment
        raise QonnxImportError("importing QONNX needs the onnx package (pip install onnx)") from None
    proto = getattr(source, "model", source)  # a qonnx ModelWrapper holds its ModelProto in .model
    stem = ""
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        stem = os.path.splitext(os.path.basename(path))[0]
        if not os.path.isfile(path):
            raise QonnxImportError(f"no such ONNX file: {path}")
        try:
            proto = onnx.load(path)
        except Exception as exc:  # protobuf's DecodeError and friends
            raise QonnxImportError(f"{path}: not an ONNX model ({type(exc).__name__}: {exc})") from None
    if not isinstance(proto, onnx.ModelProto):
        raise TypeError(f"import_qonnx takes a path, an onnx.ModelProto or a qonnx ModelWrapper, not {type(source).__name__}")
    model = _Importer(proto, strict_argmax).run()
    final = name if name is not None else (stem or model.name)
    return Model(model.input, model.layers, model.epilogue, final, dict(model.metadata), model.prologue)
