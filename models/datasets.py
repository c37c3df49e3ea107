"""Datasets, all local: nothing downloads at run time.

``digits``: scikit-learn's bundled 8x8 handwritten digits (1,797 images, 10 classes). Pixels
(0..16 in the source) are rescaled to 8-bit, ``(v * 255 + 8) // 16``, and shaped NHWC
``(n, 8, 8, 1)`` uint8. The split is fixed: sample ``i`` is a test sample when ``i % 5 == 0``
(360 test, 1,437 train), so every run and every machine sees the same sets.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Dataset", "DatasetError", "DATASETS", "SPLITS", "load_dataset"]

DATASETS = ("digits",)
SPLITS = ("train", "test", "all")


class DatasetError(ValueError):
    """A dataset that is unknown or cannot be read; the message says which and why."""


@dataclass(frozen=True)
class Dataset:
    """Images ``x`` (NHWC, integer pixels), labels ``y`` (int64), and what they are."""

    name: str
    split: str
    x: np.ndarray
    y: np.ndarray
    n_classes: int
    bits: int

    def __len__(self) -> int:
        return int(self.x.shape[0])


def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    raw = d.images.astype(np.int64)  # (1797, 8, 8), 0..16
    x = ((raw * 255 + 8) // 16).astype(np.uint8)[..., None]
    return x, d.target.astype(np.int64)


def load_dataset(name: str, split: str = "test") -> Dataset:
    """Load a bundled dataset split.

    Parameters
    ----------
    name : str
        One of :data:`DATASETS`.
    split : {"train", "test", "all"}

    Raises
    ------
    DatasetError
        For an unknown name or split.
    """
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; available: {', '.join(DATASETS)}")
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    x, y = _digits()
    idx = np.arange(x.shape[0])
    if split == "test":
        keep = idx % 5 == 0
    elif split == "train":
        keep = idx % 5 != 0
    else:
        keep = np.ones_like(idx, dtype=bool)
    return Dataset(name=name, split=split, x=x[keep], y=y[keep], n_classes=10, bits=8)
