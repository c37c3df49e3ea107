"""Naive, obviously-correct reference inference on ±1 integers (design.md §5).

Slow on purpose: plain numpy on int64, loops over output positions, no packing, no Numba, no
code shared with :mod:`bnnfab.sim`. Kernels, the cycle model and RTL are compared to this.
"""

from __future__ import annotations

import numpy as np

from bnnfab.models import Conv2d, Dense, Flatten, FlattenOrder, MaxPool2d, Model, Padding


def pm1(bits: np.ndarray) -> np.ndarray:
    return np.where(np.asarray(bits, dtype=bool), 1, -1).astype(np.int64)


def input_values(model: Model, x: np.ndarray) -> np.ndarray:
    """The first layer's input as int64: ±1 for binary inputs (x >= 0 -> +1), else the integers."""
    x = np.asarray(x)
    if model.input.binary:
        return np.where(x >= 0, 1, -1).astype(np.int64)
    return x.astype(np.int64)


def conv_dot(x: np.ndarray, layer: Conv2d) -> np.ndarray:
    """Dot products (B, Ho, Wo, N) of a conv on ±1/integer values; zero-padded taps contribute
    nothing, ±1-padded taps hold that value."""
    b, h, w, c = x.shape
    kh, kw = layer.kernel
    sh, sw = layer.stride
    top, left, bottom, right = layer.pads
    fill = layer.padding.value_pm1 if layer.padding is not Padding.ZERO else 0
    xp = np.full((b, h + top + bottom, w + left + right, c), fill, dtype=np.int64)
    xp[:, top : top + h, left : left + w, :] = x
    wt = pm1(layer.weights)  # (N, kh, kw, C)
    ho = (h + top + bottom - kh) // sh + 1
    wo = (w + left + right - kw) // sw + 1
    out = np.zeros((b, ho, wo, layer.n), dtype=np.int64)
    for oy in range(ho):
        for ox in range(wo):
            patch = xp[:, oy * sh : oy * sh + kh, ox * sw : ox * sw + kw, :]  # (B, kh, kw, C)
            out[:, oy, ox, :] = np.einsum("byxc,nyxc->bn", patch, wt)
    return out


def infer(model: Model, x: np.ndarray) -> dict:
    """Run ``model`` on a batch; returns scores, classes, logits and every layer's output.

    Binary layer outputs are ±1 int64 arrays in NHWC / flat order; the last entry is the scores.
    """
    v = input_values(model, x)
    outputs = []
    for layer in model.layers:
        if isinstance(layer, Dense):
            dot = v.reshape(v.shape[0], -1) @ pm1(layer.weights).T
        elif isinstance(layer, Conv2d):
            dot = conv_dot(v, layer)
        elif isinstance(layer, MaxPool2d):
            b, h, w, c = v.shape
            kh, kw = layer.kernel
            sh, sw = layer.stride
            ho, wo = (h - kh) // sh + 1, (w - kw) // sw + 1
            pooled = np.empty((b, ho, wo, c), dtype=np.int64)
            for oy in range(ho):
                for ox in range(wo):
                    pooled[:, oy, ox] = v[:, oy * sh : oy * sh + kh, ox * sw : ox * sw + kw].max(axis=(1, 2))
            v = pooled
            outputs.append(v)
            continue
        elif isinstance(layer, Flatten):
            if layer.order is FlattenOrder.CHW:
                v = v.transpose(0, 3, 1, 2)
            v = v.reshape(v.shape[0], -1)
            outputs.append(v)
            continue
        else:  # pragma: no cover
            raise TypeError(layer)
        if layer.thresholds is None:
            v = dot
        else:
            v = np.where(dot >= layer.thresholds, 1, -1).astype(np.int64)
        outputs.append(v)
    scores = v
    # argmax ties go to the lowest index: np.argmax returns the first maximum
    classes = np.argmax(scores, axis=1)
    logits = None if model.epilogue is None else model.epilogue.apply(scores)
    return {"scores": scores, "classes": classes, "logits": logits, "outputs": outputs}
