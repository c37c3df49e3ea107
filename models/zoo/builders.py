"""Deterministic closed-form builders for bundled models (no training framework needed).

:func:`ecoc_mlp` makes the default digits model until trained models land in the zoo. It is a
random-feature network with an error-correcting output code (ECOC):

1. an 8-bit first layer of seeded random ±1 projections; each threshold is the ceiling of the
   median dot product on the training split, so every feature fires on about half the images;
2. a binary layer of code bits: neuron ``j`` is assigned a seeded random subset ``S_j`` of the
   classes, its ±1 weights are the signs of the ridge least-squares fit of the features to the
   target ``+1 if class in S_j else -1``, and its threshold is the ceiling of the midpoint of
   the mean dot products of the two sides;
3. an output layer whose class-``c`` weights are the code column (bit ``j`` is ``c in S_j``):
   its score ``2 p - K`` is ``K - 2 * Hamming distance`` to the class's code word, so the argmax
   is ECOC's nearest-code decoding, done by an ordinary binary dense layer.

It is a valid, reproducible BNN of honest accuracy (about 92% on the digits test split), not a
trained network. :func:`ecoc_cnn` puts the same head on an 8-bit convolution and a max-pool.
"""

from __future__ import annotations

import numpy as np

from ..ir import Conv2d, Dense, Flatten, InputSpec, MaxPool2d, Model

__all__ = ["ecoc_mlp", "ecoc_cnn"]


def _pm1(bits: np.ndarray) -> np.ndarray:
    return np.where(bits, 1, -1).astype(np.int64)


def _ecoc_head(features: np.ndarray, y: np.ndarray, n_classes: int, width: int, rng, ridge: float):
    """Code layer (weights, thresholds) and decode weights from ±1 training features (module docstring)."""
    f = features.astype(np.float64)
    code = rng.random((width, n_classes)) < 0.5  # code[j, c]: class c is in S_j
    target = _pm1(code)[:, y].T.astype(np.float64)  # (n, width)
    fit = np.linalg.solve(f.T @ f + ridge * np.eye(f.shape[1]), f.T @ target)
    w = (fit >= 0).T
    dot = f @ _pm1(w).T
    t = np.zeros(width, dtype=np.int64)
    for j in range(width):
        pos, neg = target[:, j] > 0, target[:, j] < 0
        if pos.any() and neg.any():
            t[j] = int(np.ceil((dot[pos, j].mean() + dot[neg, j].mean()) / 2))
    return w, t, code.T.copy()


def ecoc_mlp(
    x: np.ndarray,
    y: np.ndarray,
    n_classes: int,
    hidden: tuple[int, int] = (256, 128),
    seed: int = 1,
    bits: int = 8,
    ridge: float = 10.0,
) -> Model:
    """Build the closed-form ECOC network described in the module docstring.

    Parameters
    ----------
    x : int array (n, H, W, C) of unsigned ``bits``-bit pixels (the training split)
    y : int array (n,) of labels in ``[0, n_classes)``
    hidden : widths of the feature layer and of the code layer
    seed : seeds the projections and the code
    ridge : ridge penalty of the least-squares fit of the code bits
    """
    rng = np.random.default_rng(seed)
    n = x.shape[0]
    flat = x.reshape(n, -1).astype(np.int64)
    w1 = rng.random((hidden[0], flat.shape[1])) < 0.5
    dot1 = flat @ _pm1(w1).T
    t1 = np.ceil(np.median(dot1, axis=0)).astype(np.int64)
    h1 = _pm1(dot1 >= t1)
    w2, t2, w3 = _ecoc_head(h1, y, n_classes, hidden[1], rng, ridge)
    return Model(
        input=InputSpec(x.shape[1:], bits=bits),
        layers=(
            Flatten(name="flatten"),
            Dense(w1, t1, name="features"),
            Dense(w2, t2, name="code"),
            Dense(w3, None, name="decode"),
        ),
        name="digits-ecoc-mlp",
        metadata={
            "builder": "bnnfab.models.zoo.builders.ecoc_mlp",
            "hidden": f"{hidden[0]},{hidden[1]}",
            "seed": str(seed),
            "dataset": "digits (train split)",
            "note": "closed-form random features + error-correcting output code; not trained",
        },
    )


def _conv3x3_same(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Integer 3x3 convolution with zero padding 1: x (n, H, W, C) ints, w (N, 3, 3, C) ±1."""
    n, h, wd, c = x.shape
    xp = np.zeros((n, h + 2, wd + 2, c), dtype=np.int64)
    xp[:, 1:-1, 1:-1] = x
    out = np.zeros((n, h, wd, w.shape[0]), dtype=np.int64)
    for ky in range(3):
        for kx in range(3):
            out += xp[:, ky : ky + h, kx : kx + wd, :] @ w[:, ky, kx, :].T
    return out


def ecoc_cnn(
    x: np.ndarray, y: np.ndarray, n_classes: int, filters: int = 16, code: int = 128, seed: int = 1, bits: int = 8, ridge: float = 10.0
) -> Model:
    """A closed-form conv net: an 8-bit 3x3 convolution of seeded random ±1 filters with zero
    padding (median thresholds), a 2x2 binary max-pool, then the ECOC head of :func:`ecoc_mlp` on
    the flattened (HWC) map."""
    rng = np.random.default_rng(seed)
    w1 = rng.random((filters, 3, 3, x.shape[3])) < 0.5
    dot1 = _conv3x3_same(x.astype(np.int64), _pm1(w1))
    t1 = np.ceil(np.median(dot1.reshape(-1, filters), axis=0)).astype(np.int64)
    bits1 = dot1 >= t1
    n, h, w, _ = bits1.shape
    pooled = bits1[:, : h // 2 * 2, : w // 2 * 2].reshape(n, h // 2, 2, w // 2, 2, filters).any(axis=(2, 4))
    w2, t2, w3 = _ecoc_head(_pm1(pooled.reshape(n, -1)), y, n_classes, code, rng, ridge)
    return Model(
        input=InputSpec(x.shape[1:], bits=bits),
        layers=(
            Conv2d(w1, t1, pads=1, padding="zero", name="conv1"),
            MaxPool2d(2, name="pool1"),
            Flatten(name="flatten"),
            Dense(w2, t2, name="code"),
            Dense(w3, None, name="decode"),
        ),
        name="digits-ecoc-cnn",
        metadata={
            "builder": "bnnfab.models.zoo.builders.ecoc_cnn",
            "filters": str(filters),
            "code": str(code),
            "seed": str(seed),
            "dataset": "digits (train split)",
            "note": "closed-form random 8-bit conv features + max-pool + error-correcting output code; not trained",
        },
    )
