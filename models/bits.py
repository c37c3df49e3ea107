"""Bit packing shared by the model file, the simulator and the hardware generator.

Encoding (design.md §2): bit 1 means +1, bit 0 means -1. Along the reduction axis, element ``k``
is bit ``k % 64`` of uint64 word ``k // 64`` (little-endian bits); pad bits are 0.
"""

from __future__ import annotations

import numpy as np

__all__ = ["WORD_BITS", "n_words", "pack_bits", "unpack_bits", "binarize", "to_pm1"]

WORD_BITS = 64


def n_words(k: int) -> int:
    """Number of uint64 words holding ``k`` bits."""
    return (int(k) + WORD_BITS - 1) // WORD_BITS


def pack_bits(bits: np.ndarray) -> np.ndarray:
    """Pack the last axis of a boolean (or 0/1) array into little-endian uint64 words.

    Parameters
    ----------
    bits : array_like of bool or {0, 1}, shape (..., K)

    Returns
    -------
    numpy.ndarray of uint64, shape (..., ceil(K / 64)), pad bits 0.
    """
    b = np.asarray(bits)
    if b.dtype != np.bool_:
        if b.size and not np.isin(b, (0, 1)).all():
            raise ValueError("pack_bits takes booleans or 0/1 values; use binarize() for signed data")
        b = b.astype(np.bool_)
    k = b.shape[-1]
    nw = n_words(k)
    pad = nw * WORD_BITS - k
    if pad:
        b = np.concatenate([b, np.zeros(b.shape[:-1] + (pad,), dtype=np.bool_)], axis=-1)
    by = np.packbits(b.reshape(b.shape[:-1] + (nw * 8, 8)), axis=-1, bitorder="little")
    by = np.ascontiguousarray(by.reshape(b.shape[:-1] + (nw * 8,)))
    return by.view("<u8").astype(np.uint64, copy=False).reshape(b.shape[:-1] + (nw,))


def unpack_bits(words: np.ndarray, k: int) -> np.ndarray:
    """Inverse of :func:`pack_bits`: the first ``k`` bits of the last axis, as booleans."""
    w = np.ascontiguousarray(np.asarray(words, dtype=np.uint64))
    nw = w.shape[-1]
    if k > nw * WORD_BITS:
        raise ValueError(f"cannot unpack {k} bits from {nw} words ({nw * WORD_BITS} bits)")
    by = w.astype("<u8", copy=False).view(np.uint8).reshape(w.shape[:-1] + (nw * 8,))
    bits = np.unpackbits(by, axis=-1, bitorder="little").astype(np.bool_)
    return bits[..., :k]


def binarize(x: np.ndarray) -> np.ndarray:
    """Sign binarization to bits: ``x >= 0`` gives 1 (+1), else 0 (-1); sign(0) = +1."""
    return np.asarray(x) >= 0


def to_pm1(bits: np.ndarray) -> np.ndarray:
    """Bits to ±1 integers (int8): 1 -> +1, 0 -> -1."""
    return np.where(np.asarray(bits, dtype=np.bool_), 1, -1).astype(np.int8)
