"""Bit-exact functional inference of a :class:`~bnnfab.models.Model` on packed bits.

Activations travel between layers packed per pixel: ``(B, H, W, CW)`` uint64 for maps (the C
channel bits of a pixel in ``CW = ceil(C / 64)`` words) and ``(B, KW)`` for vectors, pad bits 0
(design.md §2). Every binary layer runs on the XNOR-popcount kernels of
:mod:`bnnfab.sim.kernels` with the threshold fused into the output bits; the last layer returns
popcounts that become integer scores ``2 p - K``.

Zero padding is exact: the kernel fills padded taps with -1, which adds ``-sum(w)`` over those
taps to the dot product; the per-position threshold ``T[pos, n] = ceil((t + K - S[pos, n]) / 2)``
with ``S`` the sum of the ±1 weights on the padded taps compares exactly ``dot_valid >= t``.

With ``mst`` schedules the binary layers compute every popcount through the schedule
(design.md §3) instead of directly; results must be, and are tested to be, identical.

:meth:`Simulator.run` turns a batch into the first layer's input with the fused kernel of
:mod:`bnnfab.sim.prologue` (prologue, layout and packing in one pass; tested equal to
:meth:`Simulator.check_inputs` + ``pack_bits``, which it defers to for anything that raises). An
integer first layer runs :func:`~bnnfab.sim.kernels.int_dense_threshold` /
:func:`~bnnfab.sim.kernels.int_conv_threshold`, the threshold and packing fused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

from ..models import (
    Conv2d,
    Dense,
    Flatten,
    FlattenOrder,
    MaxPool2d,
    Model,
    Padding,
    pack_bits,
    unpack_bits,
)
from . import kernels
from .mst import MstSchedule, mst_popcounts, plan_mst
from .prologue import NEEDS_REFERENCE, InputPath

__all__ = ["SimResult", "Simulator", "simulate", "InputError"]

class InputError(ValueError):
    """Inputs that do not fit the model: the message names the rule and the value."""


@dataclass(frozen=True)
class SimResult:
    """Outputs of a batch.

    ``scores``: int64 (B, classes), the last layer's dot products. ``classes``: int64 (B,), argmax
    of the scores with ties to the lowest index. ``logits``: float64 (B, classes) when the model
    has an epilogue, else None. ``activations``: when requested, one array per layer — booleans
    (bit 1 = +1) in NHWC or flat order for binary layers, the int64 scores for the last (and the
    int64 integers for a Flatten of an integer input).
    """

    scores: np.ndarray
    classes: np.ndarray
    logits: np.ndarray | None
    activations: list[np.ndarray] | None = None

    @property
    def outputs(self) -> np.ndarray:
        """The model's final outputs: float logits when it has an epilogue, else integer scores."""
        return self.logits if self.logits is not None else self.scores


def _clip_thresholds(t: np.ndarray, k: int) -> np.ndarray:
    """Popcount thresholds clipped to [0, K+1] (same test for 0 <= p <= K) and made int32."""
    return np.clip(t, 0, k + 1).astype(np.int32)


class _Prepared:
    """Per-layer constants computed once per model: packed weights, popcount thresholds."""

    def __init__(self, model: Model, index: int, schedule: MstSchedule | None):
        layer = model.layers[index]
        self.layer = layer
        self.index = index
        self.in_shape = model.shapes[index]
        self.out_shape = model.shapes[index + 1]
        self.integer = model.takes_integers(index)
        self.schedule = schedule
        self.last = index == len(model.layers) - 1
        if not isinstance(layer, (Dense, Conv2d)):
            return
        self.k = layer.k
        if self.integer:
            self.iw = kernels.prepack_int_weights(layer.weights_2d)
            return
        self.w_packed = pack_bits(layer.weights_2d)
        self.pw = kernels.prepack_weights(self.w_packed, self.k)
        if layer.thresholds is None:
            self.thr = None
        elif isinstance(layer, Conv2d) and layer.padding is Padding.ZERO and layer.padded:
            self.thr = _clip_thresholds(layer.position_thresholds(self.in_shape), self.k)
        else:
            self.thr = _clip_thresholds(layer.popcount_thresholds()[None, :], self.k)
        if isinstance(layer, Conv2d):
            self.pad_bit = 1 if layer.padding is Padding.PLUS_ONE else 0


def _pixels_to_flat(x: np.ndarray, c: int, order: FlattenOrder) -> np.ndarray:
    """(B, H, W, CW) per-pixel packed -> (B, KW) packed over the flattened map."""
    b, h, w, cw = x.shape
    if order is FlattenOrder.HWC and c % 64 == 0:
        return np.ascontiguousarray(x.reshape(b, h * w * cw))
    bits = unpack_bits(x, c)  # (B, H, W, C)
    if order is FlattenOrder.CHW:
        bits = bits.transpose(0, 3, 1, 2)
    return pack_bits(bits.reshape(b, -1))


def _im2col_bits(x_bits: np.ndarray, layer: Conv2d) -> np.ndarray:
    """(B, Ho*Wo, K) patch bits of a chunk (MST path only), padded taps holding the -1/+1 bit."""
    b, h, w, c = x_bits.shape
    kh, kw = layer.kernel
    sh, sw = layer.stride
    top, left, bottom, right = layer.pads
    fill = layer.padding is Padding.PLUS_ONE
    xp = np.full((b, h + top + bottom, w + left + right, c), fill, dtype=bool)
    xp[:, top : top + h, left : left + w] = x_bits
    ho = (h + top + bottom - kh) // sh + 1
    wo = (w + left + right - kw) // sw + 1
    win = np.lib.stride_tricks.sliding_window_view(xp, (kh, kw), axis=(1, 2))  # (B, H', W', C, kh, kw)
    win = win[:, : (ho - 1) * sh + 1 : sh, : (wo - 1) * sw + 1 : sw]
    return np.ascontiguousarray(win.transpose(0, 1, 2, 4, 5, 3)).reshape(b, ho * wo, kh * kw * c)


class Simulator:
    """A model prepared for repeated bit-exact inference.

    Parameters
    ----------
    model : Model
    mst : mapping of layer index -> MstSchedule, or an int / None, optional
        Execute binary Dense/Conv layers through MST schedules (design.md §3). An int or None
        given with ``use_mst=True`` plans every binary layer with that depth limit.
    use_mst : bool
        Plan and use MST schedules for all binary compute layers (depth limit ``mst``).
    """

    def __init__(self, model: Model, mst: Mapping[int, MstSchedule] | int | None = None, use_mst: bool = False):
        if not isinstance(model, Model):
            raise TypeError(f"Simulator takes a bnnfab Model, not {type(model).__name__}")
        self.model = model
        schedules: dict[int, MstSchedule] = {}
        if isinstance(mst, Mapping):
            schedules = dict(mst)
        elif use_mst:
            for i, layer in model.compute_layers:
                if not model.takes_integers(i):
                    schedules[i] = plan_mst(layer.weights_2d, max_depth=mst)
        for i, sch in schedules.items():
            layer = model.layers[i] if 0 <= i < len(model.layers) else None
            if not isinstance(layer, (Dense, Conv2d)) or model.takes_integers(i):
                raise ValueError(f"MST schedule given for layer {i}, which is not a binary Dense/Conv2d layer")
            if (sch.n, sch.k) != (layer.n, layer.k):
                raise ValueError(
                    f"{layer.where(i)}: MST schedule is for N={sch.n}, K={sch.k} but the layer has N={layer.n}, K={layer.k}"
                )
        self.schedules = schedules
        self._prep = [_Prepared(model, i, schedules.get(i)) for i in range(len(model.layers))]
        self._input_path = InputPath(model)

    # -- input checking -------------------------------------------------------------------------
    def check_inputs(self, x: np.ndarray) -> np.ndarray:
        """Validate a batch against the input spec; returns it as int64 (integer inputs) or bool
        bits (binary inputs, ``x >= 0`` -> +1).

        A model with a prologue (an imported graph's input quantizer) takes its inputs in the
        source graph's layout and as real numbers, e.g. ``(batch, 1, 28, 28)`` float32 pixels:
        they are quantized and laid out as the model input first
        (:meth:`~bnnfab.models.ir.InputPrologue.apply`).
        """
        spec = self.model.input
        x = np.asarray(x)
        prologue = self.model.prologue
        if prologue is not None:
            src = prologue.source_shape
            if x.ndim != len(src) + 1 or x.shape[1:] != src:
                shape = "(batch, " + ", ".join(map(str, src)) + ")"
                raise InputError(
                    f"inputs must have shape {shape}, the source graph's own layout, for this model; got {x.shape}"
                )
            if x.shape[0] == 0:
                raise InputError("inputs hold no samples (batch size 0)")
            if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
                raise InputError(f"inputs must be real numbers (the source graph takes {prologue.dtype}), got dtype {x.dtype}")
            if np.issubdtype(x.dtype, np.floating) and np.isnan(x).any():
                raise InputError(f"inputs must not be NaN (sample {int(np.argwhere(np.isnan(x))[0][0])})")
            x = prologue.apply(x, spec.shape)
        want = spec.shape
        if x.ndim != len(want) + 1 or x.shape[1:] != want:
            shape = "(batch, " + ", ".join(map(str, want)) + ")"
            raise InputError(f"inputs must have shape {shape} for this model, got {x.shape}")
        if x.shape[0] == 0:
            raise InputError("inputs hold no samples (batch size 0)")
        if spec.binary:
            if x.dtype == np.bool_:
                return x
            if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
                raise InputError(f"binary inputs must be real numbers, got dtype {x.dtype}")
            if np.issubdtype(x.dtype, np.floating) and np.isnan(x).any():
                raise InputError(f"binary inputs must not be NaN (sample {int(np.argwhere(np.isnan(x))[0][0])})")
            return x >= 0
        lo, hi = spec.value_range
        if np.issubdtype(x.dtype, np.floating):
            bad = ~np.isfinite(x) | (x != np.round(x))
            if bad.any():
                idx = tuple(int(i) for i in np.argwhere(bad)[0])
                raise InputError(
                    f"inputs must be {spec.bits}-bit integers; value {x[idx].item()!r} at index {idx} is not an integer"
                )
        elif not np.issubdtype(x.dtype, np.integer):
            raise InputError(f"inputs must be {spec.bits}-bit integers, got dtype {x.dtype}")
        if x.size:
            out = (x < lo) | (x > hi)
            if out.any():
                idx = tuple(int(i) for i in np.argwhere(out)[0])
                kind = "signed" if spec.signed else "unsigned"
                raise InputError(
                    f"inputs must be {kind} {spec.bits}-bit integers in [{lo}, {hi}]; value {x[idx].item()} at index {idx} is outside"
                )
        return x.astype(np.int64)

    def _model_input(self, x) -> np.ndarray:
        """The first layer's input: packed bits (binary input) or integer codes.

        The same values as :meth:`check_inputs` (then ``pack_bits`` for bits), through the fused
        kernel of :mod:`bnnfab.sim.prologue` when the batch passes the cheap shape and dtype
        checks; anything else (and whatever the kernel flags: NaN, codes out of range) goes
        through :meth:`check_inputs`, which raises its own errors.
        """
        x = np.asarray(x)
        path = self._input_path
        if path.fused and self._fast_ok(x):
            out = path.run(x)
            if out is not NEEDS_REFERENCE:
                return out
        xv = self.check_inputs(x)
        return pack_bits(xv) if self.model.input.binary else xv

    def _fast_ok(self, x: np.ndarray) -> bool:
        """Whether ``x`` passes :meth:`check_inputs`' shape and dtype rules (no value checks)."""
        prologue = self.model.prologue
        shape = prologue.source_shape if prologue is not None else self.model.input.shape
        if x.ndim != len(shape) + 1 or x.shape[1:] != shape or x.shape[0] == 0:
            return False
        if prologue is not None:
            return x.dtype.kind in "iuf"
        # prologue-less binary input: x >= 0 keeps its sign through a cast to float64 for these
        return x.dtype == np.bool_ or x.dtype.kind in "iu" or x.dtype in (np.float16, np.float32, np.float64)

    # -- inference ------------------------------------------------------------------------------
    def run(
        self,
        x: np.ndarray,
        return_activations: bool = False,
        batch_size: int = 8192,
        progress: bool = False,
    ) -> SimResult:
        """Infer a batch. Large batches are split into chunks of ``batch_size`` (a progress bar
        when ``progress``); results are identical to one big batch."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, not {batch_size!r}")
        xv = self._model_input(x)
        starts = range(0, xv.shape[0], int(batch_size))
        if progress and len(starts) > 1:
            from tqdm import tqdm

            starts = tqdm(starts, desc="simulate", unit="chunk")
        parts = [self._run_chunk(xv[s : s + batch_size], return_activations) for s in starts]
        scores = np.concatenate([p[0] for p in parts])
        acts = None
        if return_activations:
            acts = [np.concatenate([p[1][j] for p in parts]) for j in range(len(self.model.layers))]
        classes = np.argmax(scores, axis=1).astype(np.int64)  # first maximum: ties to lowest index
        logits = None if self.model.epilogue is None else self.model.epilogue.apply(scores)
        return SimResult(scores=scores, classes=classes, logits=logits, activations=acts)

    def _run_chunk(self, x: np.ndarray, keep: bool) -> tuple[np.ndarray, list[np.ndarray]]:
        acts: list[np.ndarray] = []
        if self.model.input.binary:
            v = x  # packed: (B, H, W, CW) or (B, KW)
            v_int = None
        else:
            v, v_int = None, x
        for prep in self._prep:
            layer = prep.layer
            if isinstance(layer, MaxPool2d):
                v = kernels.maxpool_or(v, layer.kernel, layer.stride)
            elif isinstance(layer, Flatten) and v is None:  # still the integer input
                if layer.order is FlattenOrder.CHW:
                    v_int = v_int.transpose(0, 3, 1, 2)
                v_int = np.ascontiguousarray(v_int.reshape(v_int.shape[0], -1))
                if keep:
                    acts.append(v_int.astype(np.int64))
                continue
            elif isinstance(layer, Flatten):
                v = _pixels_to_flat(v, prep.in_shape[2], layer.order)
            elif prep.integer:
                v = self._integer_layer(prep, v_int)
            else:
                v = self._binary_layer(prep, v)
            if keep:
                acts.append(v if prep.last else unpack_bits(v, prep.out_shape[-1]).reshape((-1,) + prep.out_shape))
        return v, acts

    def _integer_layer(self, prep: _Prepared, x: np.ndarray) -> np.ndarray:
        layer = prep.layer
        if isinstance(layer, Dense):
            x2 = x.reshape(x.shape[0], -1)
            if prep.last:
                return kernels.int_dense(x2, prep.iw)
            return kernels.int_dense_threshold(x2, prep.iw, layer.thresholds)
        w = (prep.iw, layer.kernel)
        pad = layer.padding.value_pm1
        if prep.last:  # pragma: no cover - the IR requires a Dense output layer
            return kernels.int_conv(x, w, layer.stride, layer.pads, pad)
        return kernels.int_conv_threshold(x, w, layer.stride, layer.pads, pad, layer.thresholds)

    def _binary_layer(self, prep: _Prepared, v: np.ndarray) -> np.ndarray:
        layer = prep.layer
        if prep.schedule is not None:
            return self._binary_layer_mst(prep, v)
        if isinstance(layer, Dense):
            if prep.last:
                p = kernels.gemm_popcount(v, prep.pw)
                return 2 * p.astype(np.int64) - prep.k
            return kernels.gemm_threshold(v, prep.pw, prep.thr)
        c = prep.in_shape[2]
        if prep.last:  # pragma: no cover - the IR requires a Dense output layer
            raise AssertionError("conv output layer")
        return kernels.conv_threshold(v, c, layer.kernel, layer.stride, layer.pads, prep.pad_bit, prep.pw, prep.thr)

    def _binary_layer_mst(self, prep: _Prepared, v: np.ndarray) -> np.ndarray:
        layer = prep.layer
        if isinstance(layer, Dense):
            p = mst_popcounts(v, prep.w_packed, prep.k, prep.schedule)  # (B, N)
            if prep.last:
                return 2 * p.astype(np.int64) - prep.k
            return pack_bits(p >= prep.thr[0])
        b = v.shape[0]
        ho, wo, n = prep.out_shape
        patches = _im2col_bits(unpack_bits(v, prep.in_shape[2]), layer)  # (B, P, K)
        p = mst_popcounts(pack_bits(patches.reshape(b * ho * wo, prep.k)), prep.w_packed, prep.k, prep.schedule)
        p = p.reshape(b, ho * wo, n)
        bits = p >= prep.thr[None, :, :] if prep.thr.shape[0] > 1 else p >= prep.thr[0]
        return pack_bits(bits.reshape(b, ho, wo, n))


def simulate(
    model: Model,
    x: np.ndarray,
    return_activations: bool = False,
    mst: Mapping[int, MstSchedule] | int | None = None,
    use_mst: bool = False,
    progress: bool = False,
) -> SimResult:
    """Bit-exact inference of ``model`` on the batch ``x`` (see :class:`Simulator`)."""
    return Simulator(model, mst=mst, use_mst=use_mst).run(x, return_activations=return_activations, progress=progress)

