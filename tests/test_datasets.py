"""Dataset loaders on small generated files: digits' fixed split, IDX (MNIST / Fashion-MNIST),
CIFAR-10 binary and Python batches; clear errors for missing or malformed files."""

from __future__ import annotations

import gzip
import pickle

import numpy as np
import pytest

from bnnfab.models.datasets import DatasetError, load_dataset


def _idx_bytes(arr: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in arr.shape)
    return header + arr.astype(np.uint8).tobytes()


def _write_idx(folder, rng, n_train=7, n_test=3, gz=False):
    data = {}
    for part, n in (("train", n_train), ("t10k", n_test)):
        x = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        y = rng.integers(0, 10, size=n, dtype=np.uint8)
        for stem, arr in ((f"{part}-images-idx3-ubyte", x), (f"{part}-labels-idx1-ubyte", y)):
            raw = _idx_bytes(arr)
            if gz:
                (folder / f"{stem}.gz").write_bytes(gzip.compress(raw))
            else:
                (folder / stem).write_bytes(raw)
        data[part] = (x, y)
    return data


def test_digits_split_is_fixed_and_disjoint():
    train, test, every = (load_dataset("digits", s) for s in ("train", "test", "all"))
    assert (len(train), len(test), len(every)) == (1437, 360, 1797)
    np.testing.assert_array_equal(test.x, every.x[::5])
    assert test.x.dtype == np.uint8 and test.x.shape[1:] == (8, 8, 1) and test.x.max() <= 255


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_idx_loader(tmp_path, gz, name):
    data = _write_idx(tmp_path, np.random.default_rng(1), gz=gz)
    ds = load_dataset(name, "train", root=tmp_path)
    np.testing.assert_array_equal(ds.x[..., 0], data["train"][0])
    np.testing.assert_array_equal(ds.y, data["train"][1])
    assert ds.x.shape == (7, 28, 28, 1)
    both = load_dataset(name, "all", root=tmp_path)
    assert len(both) == 10


def test_idx_env_folder(tmp_path, monkeypatch):
    (tmp_path / "mnist").mkdir()
    _write_idx(tmp_path / "mnist", np.random.default_rng(2))
    monkeypatch.setenv("BNNFAB_DATA", str(tmp_path))
    assert len(load_dataset("mnist", "test")) == 3


def test_idx_errors(tmp_path):
    with pytest.raises(DatasetError, match="IDX files not found in .*; put train-images-idx3-ubyte"):
        load_dataset("mnist", "test", root=tmp_path)
    _write_idx(tmp_path, np.random.default_rng(3))
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03" + (5).to_bytes(4, "big") * 3 + b"xx")
    with pytest.raises(DatasetError, match="header says \\(5, 5, 5\\) = 125 bytes, file holds 2"):
        load_dataset("mnist", "test", root=tmp_path)
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(b"\x00\x00\x0d\x03" + bytes(12))
    with pytest.raises(DatasetError, match="not an unsigned-byte IDX file with 3 dimensions"):
        load_dataset("mnist", "test", root=tmp_path)


def _cifar_rows(rng, n):
    x = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
    y = rng.integers(0, 10, size=n)
    rows = x.transpose(0, 3, 1, 2).reshape(n, 3072)  # R plane, G plane, B plane
    return x, y, rows


def test_cifar_binary_and_python_batches(tmp_path):
    rng = np.random.default_rng(4)
    want_x, want_y = [], []
    for i, stem in enumerate([f"data_batch_{j}" for j in range(1, 6)] + ["test_batch"]):
        x, y, rows = _cifar_rows(rng, 2)
        want_x.append(x)
        want_y.append(y)
        if i % 2:
            record = np.concatenate([y[:, None].astype(np.uint8), rows], axis=1)
            (tmp_path / f"{stem}.bin").write_bytes(record.tobytes())
        else:
            with open(tmp_path / stem, "wb") as f:
                pickle.dump({b"data": rows, b"labels": [int(v) for v in y]}, f)
    ds = load_dataset("cifar10", "all", root=tmp_path)
    np.testing.assert_array_equal(ds.x, np.concatenate(want_x))
    np.testing.assert_array_equal(ds.y, np.concatenate(want_y))
    assert load_dataset("cifar10", "test", root=tmp_path).x.shape == (2, 32, 32, 3)


def test_cifar_refuses_code_in_pickles(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with open(tmp_path / "test_batch", "wb") as f:
        pickle.dump({b"data": Evil(), b"labels": []}, f)
    with pytest.raises(DatasetError, match="refusing to load builtins.print"):
        load_dataset("cifar10", "test", root=tmp_path)


def test_cifar_missing(tmp_path):
    with pytest.raises(DatasetError, match="batch 'test_batch' not found"):
        load_dataset("cifar10", "test", root=tmp_path)


def test_unknown_names():
    with pytest.raises(DatasetError, match="unknown dataset 'svhn'; available: digits, mnist, fashion-mnist, cifar10"):
        load_dataset("svhn")
    with pytest.raises(DatasetError, match="unknown split 'val'"):
        load_dataset("digits", "val")
