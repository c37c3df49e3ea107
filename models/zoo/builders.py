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
trained network.
"""

from __future__ import annotations

import numpy as np

from ..ir import Dense, Flatten, InputSpec, Model

__all__ = ["ecoc_mlp"]


def _pm1(bits: np.ndarray) -> np.ndarray:
    return np.where(bits, 1, -1).astype(np.int64)


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
    h1 = _pm1(dot1 >= t1).astype(np.float64)

    code = rng.random((hidden[1], n_classes)) < 0.5  # code[j, c]: class c is in S_j
    target = _pm1(code)[:, y].T.astype(np.float64)  # (n, H2)
    fit = np.linalg.solve(h1.T @ h1 + ridge * np.eye(hidden[0]), h1.T @ target)
    w2 = (fit >= 0).T
    dot2 = h1 @ _pm1(w2).T
    t2 = np.zeros(hidden[1], dtype=np.int64)
    for j in range(hidden[1]):
        pos, neg = target[:, j] > 0, target[:, j] < 0
        if pos.any() and neg.any():
            t2[j] = int(np.ceil((dot2[pos, j].mean() + dot2[neg, j].mean()) / 2))
    w3 = code.T.copy()
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
