"""Datasets, all local: nothing downloads at run time.

``digits`` (bundled): scikit-learn's 8x8 handwritten digits (1,797 images, 10 classes). Pixels
(0..16 in the source) are rescaled to 8-bit, ``(v * 255 + 8) // 16``, and shaped NHWC
``(n, 8, 8, 1)`` uint8. The split is fixed: sample ``i`` is a test sample when ``i % 5 == 0``
(360 test, 1,437 train), so every run and every machine sees the same sets.

``mnist``, ``fashion-mnist``: the IDX files as distributed (``train-images-idx3-ubyte``,
``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, each
optionally ``.gz``), read from a folder the user provides: ``(n, 28, 28, 1)`` uint8.

``cifar10``: CIFAR-10's batches, either the binary version (``data_batch_1.bin`` ..
``data_batch_5.bin``, ``test_batch.bin``) or the Python version (``data_batch_1`` .. ``test_batch``,
read with an unpickler that admits numpy arrays and plain containers only): ``(n, 32, 32, 3)``
uint8 NHWC.

The folder is ``root`` when given, else ``$BNNFAB_DATA/<name>``, else
``~/.cache/bnnfab/data/<name>``. A missing or malformed file raises :class:`DatasetError` naming
the files and where to put them.
"""

from __future__ import annotations

import gzip
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["Dataset", "DatasetError", "DATASETS", "SPLITS", "load_dataset", "data_dir"]

DATASETS = ("digits", "mnist", "fashion-mnist", "cifar10")
SPLITS = ("train", "test", "all")

_IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_CIFAR_TRAIN = [f"data_batch_{i}" for i in range(1, 6)]
_CIFAR_TEST = ["test_batch"]


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


def data_dir(name: str, root: str | os.PathLike | None = None) -> Path:
    """The folder a dataset is read from (see the module docstring)."""
    if root is not None:
        return Path(root)
    env = os.environ.get("BNNFAB_DATA")
    base = Path(env) if env else Path.home() / ".cache" / "bnnfab" / "data"
    return base / name


def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    raw = d.images.astype(np.int64)  # (1797, 8, 8), 0..16
    x = ((raw * 255 + 8) // 16).astype(np.uint8)[..., None]
    return x, d.target.astype(np.int64)


def _open_maybe_gz(folder: Path, stem: str) -> bytes:
    for path, opener in ((folder / stem, open), (folder / f"{stem}.gz", gzip.open)):
        if path.is_file():
            try:
                with opener(path, "rb") as f:
                    return f.read()
            except (OSError, EOFError) as exc:
                raise DatasetError(f"{path}: cannot read ({exc})") from None
    raise FileNotFoundError(stem)


def _parse_idx(data: bytes, what: str, ndim: int) -> np.ndarray:
    if len(data) < 4 + 4 * ndim:
        raise DatasetError(f"{what}: too short for an IDX header ({len(data)} bytes)")
    zero, dtype_code, dims = data[0:2], data[2], data[3]
    if zero != b"\x00\x00" or dtype_code != 0x08 or dims != ndim:
        raise DatasetError(
            f"{what}: not an unsigned-byte IDX file with {ndim} dimensions "
            f"(magic {data[:4].hex()}, expected 000008{ndim:02x})"
        )
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    body = data[4 + 4 * ndim :]
    if len(body) != int(np.prod(shape)):
        raise DatasetError(f"{what}: header says {shape} = {int(np.prod(shape))} bytes, file holds {len(body)}")
    return np.frombuffer(body, dtype=np.uint8).reshape(shape)


def _idx(name: str, split: str, folder: Path) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for part in ("train", "test") if split == "all" else (split,):
        img_stem, lbl_stem = _IDX_FILES[part]
        try:
            images = _parse_idx(_open_maybe_gz(folder, img_stem), f"{folder / img_stem}", 3)
            labels = _parse_idx(_open_maybe_gz(folder, lbl_stem), f"{folder / lbl_stem}", 1)
        except FileNotFoundError:
            files = ", ".join(s for pair in _IDX_FILES.values() for s in pair)
            raise DatasetError(
                f"{name}: IDX files not found in {folder}; put {files} (or their .gz) there, "
                f"or pass the folder (root=..., or set BNNFAB_DATA to the folder holding '{name}/')"
            ) from None
        if images.shape[0] != labels.shape[0]:
            raise DatasetError(f"{name} {part}: {images.shape[0]} images but {labels.shape[0]} labels")
        if labels.size and labels.max() > 9:
            raise DatasetError(f"{name} {part}: label {int(labels.max())} outside 0..9")
        xs.append(images[..., None])
        ys.append(labels.astype(np.int64))
    return np.concatenate(xs), np.concatenate(ys)


class _ArraysOnly(pickle.Unpickler):
    """Admits numpy arrays, dtypes and plain containers only (CIFAR's Python batches)."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a dataset file")


def _cifar_batch(folder: Path, stem: str) -> tuple[np.ndarray, np.ndarray]:
    binary = folder / f"{stem}.bin"
    if binary.is_file():
        raw = binary.read_bytes()
        record = 1 + 3072
        if len(raw) % record:
            raise DatasetError(f"{binary}: {len(raw)} bytes is not a whole number of {record}-byte records")
        arr = np.frombuffer(raw, dtype=np.uint8).reshape(-1, record)
        labels, data = arr[:, 0].astype(np.int64), arr[:, 1:]
    elif (folder / stem).is_file():
        path = folder / stem
        try:
            with open(path, "rb") as f:
                batch = _ArraysOnly(f, encoding="bytes").load()
            data = np.asarray(batch[b"data"], dtype=np.uint8)
            labels = np.asarray(batch[b"labels"], dtype=np.int64)
        except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError, AttributeError) as exc:
            raise DatasetError(f"{path}: not a CIFAR-10 Python batch ({exc})") from None
        if data.ndim != 2 or data.shape[1] != 3072 or labels.shape != (data.shape[0],):
            raise DatasetError(f"{path}: expected data (n, 3072) and n labels, got {data.shape} and {labels.shape}")
    else:
        raise FileNotFoundError(stem)
    if labels.size and labels.max() > 9:
        raise DatasetError(f"{folder / stem}: label {int(labels.max())} outside 0..9")
    # each row: 1024 red, 1024 green, 1024 blue values, row-major 32x32
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy(), labels


def _cifar(split: str, folder: Path) -> tuple[np.ndarray, np.ndarray]:
    stems = {"train": _CIFAR_TRAIN, "test": _CIFAR_TEST, "all": _CIFAR_TRAIN + _CIFAR_TEST}[split]
    xs, ys = [], []
    for stem in stems:
        try:
            x, y = _cifar_batch(folder, stem)
        except FileNotFoundError:
            raise DatasetError(
                f"cifar10: batch {stem!r} not found in {folder}; put the binary batches (data_batch_1.bin .. "
                "data_batch_5.bin, test_batch.bin) or the Python ones (data_batch_1 .. test_batch) there, "
                "or pass the folder (root=..., or set BNNFAB_DATA to the folder holding 'cifar10/')"
            ) from None
        xs.append(x)
        ys.append(y)
    return np.concatenate(xs), np.concatenate(ys)


def load_dataset(name: str, split: str = "test", root: str | os.PathLike | None = None) -> Dataset:
    """Load a dataset split.

    Parameters
    ----------
    name : str
        One of :data:`DATASETS`.
    split : {"train", "test", "all"}
    root : path, optional
        Folder of the dataset's files (not used by the bundled ``digits``).

    Raises
    ------
    DatasetError
        For an unknown name or split, or files that are missing or malformed.
    """
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; available: {', '.join(DATASETS)}")
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    if name == "digits":
        x, y = _digits()
        idx = np.arange(x.shape[0])
        keep = {"test": idx % 5 == 0, "train": idx % 5 != 0, "all": np.ones_like(idx, dtype=bool)}[split]
        return Dataset(name=name, split=split, x=x[keep], y=y[keep], n_classes=10, bits=8)
    folder = data_dir(name, root)
    x, y = _cifar(split, folder) if name == "cifar10" else _idx(name, split, folder)
    return Dataset(name=name, split=split, x=x, y=y, n_classes=10, bits=8)
