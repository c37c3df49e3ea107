"""The ``.bnn`` model file: one zip archive, a human-readable JSON manifest plus packed arrays.

Format (version 1)
------------------
A ``.bnn`` file is a zip archive. :func:`save_model` writes its members *stored* (uncompressed,
so the manifest can be read straight out of the file), with fixed timestamps and attributes, in a
fixed order — the same model always gives the same bytes. :func:`load_model` also reads archives
whose members are deflated (e.g. re-zipped by hand) and ignores directory entries; every other
member must be one the manifest names.

``manifest.json`` (first member; ASCII JSON, indented, non-ASCII characters escaped)::

    {
      "format": "bnnfab-model",        # always this string
      "version": 1,                    # FORMAT_VERSION; a newer file is refused
      "name": "mnist-mlp",
      "metadata": {"source": "..."},   # str -> str, keys sorted
      "input": {"shape": [28, 28, 1], "bits": 8, "signed": false},
      "layers": [
        {"kind": "conv", "name": "c0", "out_channels": 16, "kernel": [3, 3], "in_channels": 1,
         "stride": [1, 1], "pads": [1, 1, 1, 1], "padding": "zero", "out_shape": [28, 28, 16],
         "weights": {"file": "layers/0/weights.bin", "dtype": "uint64", "shape": [16, 1], "bits": 9},
         "thresholds": {"file": "layers/0/thresholds.bin", "dtype": "int64", "shape": [16]}},
        {"kind": "maxpool", "name": "", "kernel": [2, 2], "stride": [2, 2], "out_shape": [14, 14, 16]},
        {"kind": "flatten", "name": "", "order": "chw", "out_shape": [3136]},
        {"kind": "dense", "name": "fc", "in_features": 3136, "out_features": 10, "out_shape": [10],
         "weights": {...}, "thresholds": null}
      ],
      "epilogue": null,      # or {"classes": 10, "scale": {array ref}, "bias": {array ref}}
      "prologue": null       # or the input quantizer of an imported graph:
                             # {"source_shape": [1, 28, 28], "dtype": "float32",
                             #  "ops": [["mul", 2.0], ["sub", 1.0]], "bits": 8, "scale": 0.0078125,
                             #  "zero_point": 0.0, "signed": true, "narrow": false, "rounding": "half_even"}
    }

Every key shown is required and no other key is allowed (``bits`` belongs to weights refs only),
with one exception: ``prologue`` may be absent, meaning ``null`` (files written before it existed).
``kind`` is the IR layer's ``kind``;
``padding`` and ``order`` are the values of :class:`~bnnfab.models.ir.Padding` and
:class:`~bnnfab.models.ir.FlattenOrder`; ``pads`` is ``(top, left, bottom, right)``;
``out_shape`` is the layer's output shape (informative, and checked against the IR on load).
The prologue holds the fields of :class:`~bnnfab.models.ir.InputPrologue`; its numbers are JSON
numbers written with Python's shortest exact ``repr``, so float32 constants survive bit for bit.

Arrays. Each array ref names its member ``file`` (always ``<array name>.bin``, e.g. array
``layers/0/weights`` lives in ``layers/0/weights.bin``), its ``dtype`` and ``shape``. A member
holds exactly ``prod(shape) * 8`` raw little-endian bytes, C order:

* weights: ``uint64``, shape ``(N, ceil(K / 64))``: the ``(N, K)`` weights (conv kernels
  flattened ``(ky, kx, c)``, K = kh*kw*C) packed along K with :func:`~bnnfab.models.bits.pack_bits`
  (element k is bit k % 64 of word k // 64; bit 1 = +1). ``bits`` is K. Pad bits must be 0.
* thresholds: ``int64``, shape ``(N,)``, on the dot product (see the IR); ``null`` for the last layer.
* epilogue scale and bias: ``float64``, shape ``(classes,)``.

Loading never unpickles and never trusts the archive: it checks the zip structure, the manifest
(JSON, every key and type, the format name and version), that each array is present with its
expected dtype, shape and byte length, the pad bits, and then builds the IR, whose rules it
reports too. Sizes are capped against zip bombs: the manifest member's size is checked before it
is read (:data:`MAX_MANIFEST_BYTES`); the arrays' sizes follow from the manifest's shapes, are
capped in total (:data:`MAX_ARRAY_BYTES`, feature maps by :data:`MAX_ELEMENTS`) and must equal
the members' sizes before any array is read or decompressed.
Every problem raises :class:`ModelFileError` naming the file, the rule and the value.
"""

from __future__ import annotations

import io
import json
import math
import os
import zipfile
import zlib
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np

from .bits import WORD_BITS, n_words, pack_bits, unpack_bits
from .ir import (
    PROLOGUE_OPS,
    ROUNDING_MODES,
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

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "SUFFIX",
    "MANIFEST",
    "MAX_MANIFEST_BYTES",
    "MAX_ARRAY_BYTES",
    "MAX_ELEMENTS",
    "ModelFileError",
    "save_model",
    "load_model",
    "dumps_model",
    "loads_model",
]

FORMAT_NAME = "bnnfab-model"
FORMAT_VERSION = 1
SUFFIX = ".bnn"
MANIFEST = "manifest.json"

#: Largest manifest read, in bytes.
MAX_MANIFEST_BYTES = 1 << 24
#: Largest total of array bytes a file may declare (packed weights are 1/8 of their bool form).
MAX_ARRAY_BYTES = 1 << 28
#: Largest number of elements in the input or any layer's output (per image); also keeps every
#: shape product far from int64 overflow.
MAX_ELEMENTS = 1 << 40
#: Largest single size, kernel, stride or pad.
_MAX_DIM = 2**31 - 1

_ZIP_DATE_TIME = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip can hold: no clock in the bytes
_DTYPES = {"uint64": np.dtype("<u8"), "int64": np.dtype("<i8"), "float64": np.dtype("<f8")}
_READABLE_COMPRESSION = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflated"}
# What zipfile raises on a damaged or hostile archive: it validates headers with BadZipFile, but
# also lets short reads (EOFError), bad seeks (ValueError, OSError), bad deflate streams
# (zlib.error), undecodable names (UnicodeDecodeError, a ValueError) and unknown versions or
# methods (NotImplementedError) through.
_ZIP_ERRORS = (zipfile.BadZipFile, EOFError, OSError, ValueError, zlib.error, NotImplementedError)


class ModelFileError(ValueError):
    """A model file cannot be loaded; the message names the file, the rule and the value."""


# --------------------------------------------------------------------------------------- writing


def dumps_model(model: Model) -> bytes:
    """The bytes of a ``.bnn`` file holding ``model``; the same model always gives the same bytes.

    Raises
    ------
    TypeError
        ``model`` is not a :class:`~bnnfab.models.ir.Model`.
    ModelFileError
        The model is beyond the format's size limits (it could not be loaded back).
    """
    return _dumps(model, "<bytes>")


def save_model(model: Model, path: str | os.PathLike) -> None:
    """Write ``model`` to ``path`` (conventionally ending in :data:`SUFFIX`); see :func:`dumps_model`.

    Raises
    ------
    TypeError, ModelFileError
        As :func:`dumps_model`.
    OSError
        The file cannot be written.
    """
    data = _dumps(model, os.fsdecode(path))
    with open(path, "wb") as f:
        f.write(data)


def _dumps(model: Model, dest: str) -> bytes:
    if not isinstance(model, Model):
        raise TypeError(f"can only save a bnnfab Model, not {type(model).__name__}")
    manifest, arrays = _encode(model)
    blob = (_format_json(manifest) + "\n").encode("ascii")
    if len(blob) > MAX_MANIFEST_BYTES:
        raise ModelFileError(
            f"{dest}: the manifest would take {len(blob)} bytes; the format allows at most "
            f"{MAX_MANIFEST_BYTES} (shorten the metadata or names)"
        )
    total = sum(len(data) for _, data in arrays)
    if total > MAX_ARRAY_BYTES:
        raise ModelFileError(f"{dest}: the arrays would take {total} bytes; the format allows at most {MAX_ARRAY_BYTES}")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, data in [(MANIFEST, blob), *arrays]:
            info = zipfile.ZipInfo(name, date_time=_ZIP_DATE_TIME)
            info.compress_type = zipfile.ZIP_STORED
            info.create_system = 3  # "Unix" everywhere: ZipInfo's default depends on the platform
            info.external_attr = 0o100644 << 16  # regular file, rw-r--r--
            zf.writestr(info, data)
    return buf.getvalue()


def _format_json(value: Any, indent: str = "") -> str:
    """Indented JSON with lists of numbers on one line (shapes read as ``[28, 28, 1]``).

    ASCII only: non-ASCII characters, even lone surrogates, are escaped, so any ``str`` survives.
    """
    if isinstance(value, dict) and value:
        inner = indent + "  "
        items = (f"{inner}{json.dumps(k, ensure_ascii=True)}: {_format_json(v, inner)}" for k, v in value.items())
        return "{\n" + ",\n".join(items) + f"\n{indent}}}"
    if isinstance(value, list) and any(isinstance(v, (dict, list)) for v in value):
        inner = indent + "  "
        return "[\n" + ",\n".join(inner + _format_json(v, inner) for v in value) + f"\n{indent}]"
    return json.dumps(value, ensure_ascii=True, allow_nan=False)


def _encode(model: Model) -> tuple[dict[str, Any], list[tuple[str, bytes]]]:
    """The manifest and the ``(member, bytes)`` arrays, in file order."""
    arrays: list[tuple[str, bytes]] = []

    def ref(name: str, values: np.ndarray, dtype: str, **extra: int) -> dict[str, Any]:
        data = np.ascontiguousarray(values, dtype=_DTYPES[dtype])
        arrays.append((name + ".bin", data.tobytes()))
        return {"file": name + ".bin", "dtype": dtype, "shape": list(data.shape), **extra}

    layers = []
    for i, layer in enumerate(model.layers):
        entry: dict[str, Any] = {"kind": layer.kind, "name": layer.name}
        if isinstance(layer, Dense):
            entry.update(in_features=layer.k, out_features=layer.n)
        elif isinstance(layer, Conv2d):
            entry.update(
                out_channels=layer.n,
                kernel=list(layer.kernel),
                in_channels=layer.in_channels,
                stride=list(layer.stride),
                pads=list(layer.pads),
                padding=layer.padding.value,
            )
        elif isinstance(layer, MaxPool2d):
            entry.update(kernel=list(layer.kernel), stride=list(layer.stride))
        else:
            entry.update(order=layer.order.value)
        entry["out_shape"] = list(model.shapes[i + 1])
        if isinstance(layer, (Dense, Conv2d)):
            entry["weights"] = ref(f"layers/{i}/weights", pack_bits(layer.weights_2d), "uint64", bits=layer.k)
            entry["thresholds"] = (
                None if layer.thresholds is None else ref(f"layers/{i}/thresholds", layer.thresholds, "int64")
            )
        layers.append(entry)
    epilogue = None
    if model.epilogue is not None:
        epilogue = {
            "classes": int(model.epilogue.scale.shape[0]),
            "scale": ref("epilogue/scale", model.epilogue.scale, "float64"),
            "bias": ref("epilogue/bias", model.epilogue.bias, "float64"),
        }
    manifest = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "name": model.name,
        "metadata": {k: model.metadata[k] for k in sorted(model.metadata)},
        "input": {"shape": list(model.input.shape), "bits": model.input.bits, "signed": model.input.signed},
        "layers": layers,
        "epilogue": epilogue,
        "prologue": None if model.prologue is None else _encode_prologue(model.prologue),
    }
    return manifest, arrays


def _encode_prologue(p: InputPrologue) -> dict[str, Any]:
    return {
        "source_shape": list(p.source_shape),
        "dtype": p.dtype,
        "ops": [[op, float(value)] for op, value in p.ops],
        "bits": p.bits,
        "scale": float(p.scale),
        "zero_point": float(p.zero_point),
        "signed": p.signed,
        "narrow": p.narrow,
        "rounding": p.rounding,
    }


# --------------------------------------------------------------------------------------- loading


def load_model(path: str | os.PathLike) -> Model:
    """Read a model written by :func:`save_model`.

    Raises
    ------
    ModelFileError
        The file is missing or unreadable, is not a bnnfab model, was written by a newer bnnfab,
        or is truncated, corrupt or inconsistent; the message says which rule and which value.
    """
    source = os.fsdecode(path)
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise ModelFileError(f"no such model file: {source}") from None
    except IsADirectoryError:
        raise ModelFileError(f"{source}: is a directory, not a model file") from None
    except OSError as exc:
        raise ModelFileError(f"{source}: cannot open the model file ({exc.strerror or exc})") from None
    with f:
        return _load(f, source)


def loads_model(data: bytes, source: str = "<bytes>") -> Model:
    """Read a model from the bytes of a ``.bnn`` file; ``source`` names it in error messages.

    Raises
    ------
    TypeError
        ``data`` is not bytes-like.
    ModelFileError
        As :func:`load_model`.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"loads_model takes the bytes of a model file, not {type(data).__name__}")
    return _load(io.BytesIO(data), source)


def _why(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def _show(value: Any, limit: int = 60) -> str:
    """``repr`` of a manifest value for a message, cut short if long."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass(frozen=True)
class _ArraySpec:
    """An array the manifest declares, already checked against what its field needs."""

    name: str  # e.g. 'layers/2/weights'
    dtype: str
    shape: tuple[int, ...]
    bits: int | None = None  # real bits per row of a packed array

    @property
    def member(self) -> str:
        return self.name + ".bin"

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * _DTYPES[self.dtype].itemsize


@dataclass(frozen=True)
class _LayerPlan:
    kind: str
    params: dict[str, Any]
    weights: _ArraySpec | None
    thresholds: _ArraySpec | None
    out_shape: tuple[int, ...]
    weight_shape: tuple[int, ...] = ()  # unpacked: (N, K) dense, (N, kh, kw, C) conv


@dataclass(frozen=True)
class _Plan:
    """The manifest, validated field by field: everything but the arrays' contents."""

    name: str
    metadata: dict[str, str]
    input: dict[str, Any]
    layers: list[_LayerPlan]
    epilogue: tuple[_ArraySpec, _ArraySpec] | None
    prologue: dict[str, Any] | None = None

    def arrays(self) -> list[_ArraySpec]:
        specs = [s for layer in self.layers for s in (layer.weights, layer.thresholds) if s is not None]
        return specs + list(self.epilogue or ())


def _load(fileobj: BinaryIO, source: str) -> Model:
    try:
        zf = zipfile.ZipFile(fileobj)
    except _ZIP_ERRORS as exc:
        raise ModelFileError(
            f"{source}: not a bnnfab model file: not a zip archive, or truncated or corrupt ({_why(exc)})"
        ) from None
    with zf:
        members = _members(zf, source)
        if MANIFEST not in members:
            raise ModelFileError(f"{source}: not a bnnfab model file: the archive has no {MANIFEST}")
        manifest = _parse_json(_read_member(zf, members[MANIFEST], MAX_MANIFEST_BYTES, source), source)
        plan = _Parser(source).model(manifest)
        specs = plan.arrays()
        expected = {MANIFEST} | {s.member for s in specs}
        for name in members:
            if name not in expected:
                raise ModelFileError(f"{source}: unexpected member {name!r} in the archive (the manifest does not refer to it)")
        total = sum(s.nbytes for s in specs)
        if total > MAX_ARRAY_BYTES:
            raise ModelFileError(
                f"{source}: the manifest declares {total} bytes of arrays; this bnnfab reads at most "
                f"{MAX_ARRAY_BYTES} (corrupt manifest?)"
            )
        arrays = {s.name: _read_array(zf, members, s, source) for s in specs}
    return _build(plan, arrays, source)


def _members(zf: zipfile.ZipFile, source: str) -> dict[str, zipfile.ZipInfo]:
    members: dict[str, zipfile.ZipInfo] = {}
    for info in zf.infolist():
        # (not ZipInfo.is_dir(): it fails on an empty name)
        if info.filename.endswith("/") and info.file_size == 0:
            continue  # made by hand-zipping a folder
        if info.filename in members:
            raise ModelFileError(f"{source}: the archive holds member {info.filename!r} twice")
        members[info.filename] = info
    return members


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int, source: str) -> bytes:
    """A member's bytes, after checking it is small enough and readable without surprises."""
    what = f"member {info.filename!r}"
    if info.file_size > limit:
        raise ModelFileError(f"{source}: {what} is {info.file_size} bytes; at most {limit} expected")
    if info.flag_bits & 0x1:
        raise ModelFileError(f"{source}: {what} is encrypted; model files are not")
    if info.compress_type not in _READABLE_COMPRESSION:
        readable = " or ".join(f"{name} ({method})" for method, name in _READABLE_COMPRESSION.items())
        raise ModelFileError(
            f"{source}: {what} uses zip compression method {info.compress_type}; this bnnfab reads {readable} members"
        )
    try:
        data = zf.read(info)
    except _ZIP_ERRORS as exc:
        raise ModelFileError(f"{source}: {what} is corrupt or truncated ({_why(exc)})") from None
    if len(data) != info.file_size:
        raise ModelFileError(f"{source}: {what} is corrupt or truncated: read {len(data)} of {info.file_size} bytes")
    return data


class _ManifestSyntax(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _ManifestSyntax(f"key {_show(key)} appears twice in one object")
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise _ManifestSyntax(f"{name} is not a JSON number")


def _parse_json(blob: bytes, source: str) -> Any:
    try:
        text = blob.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ModelFileError(f"{source}: {MANIFEST} is not UTF-8 text ({exc})") from None
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except RecursionError:
        raise ModelFileError(f"{source}: {MANIFEST} is not valid JSON: nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, _ManifestSyntax, int too long to convert
        raise ModelFileError(f"{source}: {MANIFEST} is not valid JSON: {exc}") from None


class _Parser:
    """Checks the manifest field by field; messages give the JSON path, the rule and the value."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, message: str) -> ModelFileError:
        return ModelFileError(f"{self.source}: {message}")

    def model(self, manifest: Any) -> _Plan:
        if not isinstance(manifest, dict):
            raise self.fail(f"{MANIFEST} must hold a JSON object, not {type(manifest).__name__} {_show(manifest)}")
        fmt = manifest.get("format")
        if fmt != FORMAT_NAME:
            raise self.fail(f"not a bnnfab model file: manifest format is {_show(fmt)}, expected {FORMAT_NAME!r}")
        version = manifest.get("version")
        if isinstance(version, bool) or not isinstance(version, int):
            raise self.fail(f"manifest version must be an integer, not {_show(version)}")
        if version > FORMAT_VERSION:
            raise self.fail(
                f"written by a newer bnnfab (version {_show(version)}); this one reads version {FORMAT_VERSION}; upgrade bnnfab"
            )
        if version < 1:
            raise self.fail(f"unknown format version {_show(version)}; this bnnfab reads version {FORMAT_VERSION}")
        self.keys(manifest, "", ("format", "version", "name", "metadata", "input", "layers", "epilogue"), optional=("prologue",))
        name = self.string(manifest["name"], "name")
        metadata = manifest["metadata"]
        if not isinstance(metadata, dict):
            raise self.fail(f"manifest metadata must be an object of strings, not {_show(metadata)}")
        for key, value in metadata.items():
            self.string(value, f"metadata[{_show(key)}]")
        inp = self.keys(manifest["input"], "input", ("shape", "bits", "signed"))
        input_spec = {
            "shape": self.shape(inp["shape"], "input.shape"),
            "bits": self.integer(inp["bits"], "input.bits", 1, _MAX_DIM),
            "signed": self.boolean(inp["signed"], "input.signed"),
        }
        layers = manifest["layers"]
        if not isinstance(layers, list):
            raise self.fail(f"manifest layers must be a list, not {_show(layers)}")
        plans = [self.layer(entry, i) for i, entry in enumerate(layers)]
        epilogue = self.epilogue(manifest["epilogue"])
        return _Plan(name, dict(metadata), input_spec, plans, epilogue, self.prologue(manifest.get("prologue")))

    # ---- one value each

    def keys(self, value: Any, where: str, names: tuple[str, ...], optional: tuple[str, ...] = ()) -> dict[str, Any]:
        """``value`` as an object with exactly the keys ``names`` (plus any of ``optional``);
        ``where == ""`` is the top level."""
        where = f"manifest {where}" if where else "manifest"
        if not isinstance(value, dict):
            raise self.fail(f"{where} must be an object, not {_show(value)}")
        for key in names:
            if key not in value:
                raise self.fail(f"{where} is missing key {key!r}")
        for key in value:
            if key not in names and key not in optional:
                raise self.fail(f"{where} has unknown key {_show(key)} (expected: {', '.join(names + optional)})")
        return value

    def string(self, value: Any, where: str) -> str:
        if not isinstance(value, str):
            raise self.fail(f"manifest {where} must be a string, not {_show(value)}")
        return value

    def boolean(self, value: Any, where: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(f"manifest {where} must be true or false, not {_show(value)}")
        return value

    def integer(self, value: Any, where: str, lo: int, hi: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise self.fail(f"manifest {where} must be an integer from {lo} to {hi}, not {_show(value)}")
        return value

    def ints(self, value: Any, where: str, length: int, lo: int, hi: int) -> tuple[int, ...]:
        if not isinstance(value, list) or len(value) != length:
            raise self.fail(f"manifest {where} must be a list of {length} integers, not {_show(value)}")
        return tuple(self.integer(v, f"{where}[{j}]", lo, hi) for j, v in enumerate(value))

    def shape(self, value: Any, where: str) -> tuple[int, ...]:
        """A feature-map shape: ``[K]`` or ``[H, W, C]``, at most MAX_ELEMENTS elements."""
        if not isinstance(value, list) or len(value) not in (1, 3):
            raise self.fail(f"manifest {where} must be [K] or [H, W, C], not {_show(value)}")
        shape = tuple(self.integer(v, f"{where}[{j}]", 1, MAX_ELEMENTS) for j, v in enumerate(value))
        if math.prod(shape) > MAX_ELEMENTS:
            raise self.fail(f"manifest {where} {list(shape)} has more than {MAX_ELEMENTS} elements")
        return shape

    def real(self, value: Any, where: str) -> float:
        """A finite JSON number (an integer is taken as the real number it denotes)."""
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(f"manifest {where} must be a number, not {_show(value)}")
        try:
            out = float(value)
        except OverflowError:
            raise self.fail(f"manifest {where} must be a finite number, not {_show(value)}") from None
        if not math.isfinite(out):  # pragma: no cover - the JSON parser refuses NaN and Infinity
            raise self.fail(f"manifest {where} must be a finite number, not {_show(value)}")
        return out

    def choice(self, value: Any, where: str, choices: list[str]) -> str:
        if not isinstance(value, str) or value not in choices:
            raise self.fail(f"manifest {where} must be one of {', '.join(map(repr, choices))}, not {_show(value)}")
        return value

    # ---- structures

    def layer(self, entry: Any, i: int) -> _LayerPlan:
        where = f"layers[{i}]"
        if not isinstance(entry, dict):
            raise self.fail(f"manifest {where} must be an object, not {_show(entry)}")
        kind = self.choice(entry.get("kind"), f"{where}.kind", ["dense", "conv", "maxpool", "flatten"])
        common = ("kind", "name", "out_shape")
        dim = (1, _MAX_DIM)
        weights = thresholds = None
        if kind == "dense":
            self.keys(entry, where, common + ("in_features", "out_features", "weights", "thresholds"))
            k = self.integer(entry["in_features"], f"{where}.in_features", *dim)
            n = self.integer(entry["out_features"], f"{where}.out_features", *dim)
            weight_shape: tuple[int, ...] = (n, k)
            params: dict[str, Any] = {}
        elif kind == "conv":
            self.keys(
                entry,
                where,
                common + ("out_channels", "kernel", "in_channels", "stride", "pads", "padding", "weights", "thresholds"),
            )
            n = self.integer(entry["out_channels"], f"{where}.out_channels", *dim)
            kernel = self.ints(entry["kernel"], f"{where}.kernel", 2, *dim)
            c = self.integer(entry["in_channels"], f"{where}.in_channels", *dim)
            k = kernel[0] * kernel[1] * c
            weight_shape = (n, kernel[0], kernel[1], c)
            params = {
                "stride": self.ints(entry["stride"], f"{where}.stride", 2, *dim),
                "pads": self.ints(entry["pads"], f"{where}.pads", 4, 0, _MAX_DIM),
                "padding": Padding(self.choice(entry["padding"], f"{where}.padding", [p.value for p in Padding])),
            }
        elif kind == "maxpool":
            self.keys(entry, where, common + ("kernel", "stride"))
            params = {
                "kernel": self.ints(entry["kernel"], f"{where}.kernel", 2, *dim),
                "stride": self.ints(entry["stride"], f"{where}.stride", 2, *dim),
            }
        else:
            self.keys(entry, where, common + ("order",))
            order = self.choice(entry["order"], f"{where}.order", [o.value for o in FlattenOrder])
            params = {"order": FlattenOrder(order)}
        params["name"] = self.string(entry["name"], f"{where}.name")
        if kind in ("dense", "conv"):
            if k > MAX_ELEMENTS:
                raise self.fail(f"manifest {where}: K = {k} inputs per output is more than {MAX_ELEMENTS}")
            weights = self.array(entry["weights"], f"{where}.weights", f"layers/{i}/weights", "uint64", (n, n_words(k)), bits=k)
            if entry["thresholds"] is not None:
                thresholds = self.array(entry["thresholds"], f"{where}.thresholds", f"layers/{i}/thresholds", "int64", (n,))
        out_shape = self.shape(entry["out_shape"], f"{where}.out_shape")
        if kind in ("dense", "conv"):
            return _LayerPlan(kind, params, weights, thresholds, out_shape, weight_shape)
        return _LayerPlan(kind, params, None, None, out_shape)

    def epilogue(self, value: Any) -> tuple[_ArraySpec, _ArraySpec] | None:
        if value is None:
            return None
        self.keys(value, "epilogue", ("classes", "scale", "bias"))
        classes = self.integer(value["classes"], "epilogue.classes", 1, _MAX_DIM)
        return (
            self.array(value["scale"], "epilogue.scale", "epilogue/scale", "float64", (classes,)),
            self.array(value["bias"], "epilogue.bias", "epilogue/bias", "float64", (classes,)),
        )

    def prologue(self, value: Any) -> dict[str, Any] | None:
        """The prologue's fields, each checked for type; the IR checks their rules."""
        if value is None:
            return None
        names = ("source_shape", "dtype", "ops", "bits", "scale", "zero_point", "signed", "narrow", "rounding")
        self.keys(value, "prologue", names)
        shape = value["source_shape"]
        if not isinstance(shape, list) or not 1 <= len(shape) <= 8:
            raise self.fail(f"manifest prologue.source_shape must be a list of 1 to 8 integers, not {_show(shape)}")
        source_shape = tuple(self.integer(v, f"prologue.source_shape[{j}]", 1, MAX_ELEMENTS) for j, v in enumerate(shape))
        ops = value["ops"]
        if not isinstance(ops, list) or len(ops) > 64:
            raise self.fail(f"manifest prologue.ops must be a list of at most 64 [op, number] pairs, not {_show(ops)}")
        steps = []
        for j, step in enumerate(ops):
            if not isinstance(step, list) or len(step) != 2:
                raise self.fail(f"manifest prologue.ops[{j}] must be an [op, number] pair, not {_show(step)}")
            op = self.choice(step[0], f"prologue.ops[{j}][0]", list(PROLOGUE_OPS))
            steps.append((op, self.real(step[1], f"prologue.ops[{j}][1]")))
        return {
            "source_shape": source_shape,
            "dtype": self.choice(value["dtype"], "prologue.dtype", ["float32", "float64"]),
            "ops": tuple(steps),
            "bits": self.integer(value["bits"], "prologue.bits", 1, 32),
            "scale": self.real(value["scale"], "prologue.scale"),
            "zero_point": self.real(value["zero_point"], "prologue.zero_point"),
            "signed": self.boolean(value["signed"], "prologue.signed"),
            "narrow": self.boolean(value["narrow"], "prologue.narrow"),
            "rounding": self.choice(value["rounding"], "prologue.rounding", list(ROUNDING_MODES)),
        }

    def array(
        self, ref: Any, where: str, name: str, dtype: str, shape: tuple[int, ...], bits: int | None = None
    ) -> _ArraySpec:
        """Check an array ref against what its field needs: member name, dtype, shape, bits."""
        self.keys(ref, where, ("file", "dtype", "shape") + (("bits",) if bits is not None else ()))
        spec = _ArraySpec(name, dtype, shape, bits)
        if ref["file"] != spec.member:
            raise self.fail(f"manifest {where}.file must be {spec.member!r}, not {_show(ref['file'])}")
        if ref["dtype"] != dtype:
            shown = ref["dtype"] if isinstance(ref["dtype"], str) and len(ref["dtype"]) <= 40 else _show(ref["dtype"])
            raise self.fail(f"array {name!r} has dtype {shown}; expected {dtype}")
        declared = ref["shape"]
        if not (
            isinstance(declared, list)
            and all(isinstance(v, int) and not isinstance(v, bool) for v in declared)
            and declared == list(shape)
        ):
            why = f" ({shape[0]} rows of {bits} bits packed in {WORD_BITS}-bit words)" if bits is not None else ""
            raise self.fail(f"array {name!r} has shape {_show(declared)}; expected {list(shape)}{why}")
        if bits is not None and (type(ref["bits"]) is not int or ref["bits"] != bits):
            raise self.fail(f"array {name!r} has bits {_show(ref['bits'])}; expected {bits}, the layer's K")
        return spec


def _read_array(zf: zipfile.ZipFile, members: dict[str, zipfile.ZipInfo], spec: _ArraySpec, source: str) -> np.ndarray:
    info = members.get(spec.member)
    if info is None:
        raise ModelFileError(f"{source}: array {spec.name!r} is missing: no member {spec.member!r} in the archive")
    if info.file_size != spec.nbytes:
        raise ModelFileError(
            f"{source}: array {spec.name!r} has {info.file_size} bytes; expected {spec.nbytes} "
            f"({spec.dtype}, shape {list(spec.shape)}): truncated or wrong size"
        )
    data = _read_member(zf, info, spec.nbytes, source)
    arr = np.frombuffer(data, dtype=_DTYPES[spec.dtype]).reshape(spec.shape)
    arr = arr.astype(_DTYPES[spec.dtype].newbyteorder("="))
    if spec.bits is not None and spec.bits % WORD_BITS:
        used = spec.bits % WORD_BITS
        bad = np.flatnonzero(arr[:, -1] >> np.uint64(used))
        if bad.size:
            raise ModelFileError(
                f"{source}: array {spec.name!r} has non-zero pad bits in row {int(bad[0])} "
                f"(bits {used}..{WORD_BITS - 1} of the last word must be 0; K = {spec.bits})"
            )
    return arr


def _build(plan: _Plan, arrays: dict[str, np.ndarray], source: str) -> Model:
    """The IR from a checked plan and its arrays; IR rule violations name the file."""

    def ir_error(exc: ModelError, prefix: str = "") -> ModelFileError:
        text = str(exc)
        sep = " " if text.startswith("(") else ": "
        return ModelFileError(f"{source}: {prefix}{sep if prefix else ''}{text}")

    layers = []
    for i, lp in enumerate(plan.layers):
        try:
            if lp.weights is not None:
                k = math.prod(lp.weight_shape[1:])
                weights = unpack_bits(arrays[lp.weights.name], k).reshape(lp.weight_shape)
                thresholds = None if lp.thresholds is None else arrays[lp.thresholds.name]
                cls = Dense if lp.kind == "dense" else Conv2d
                layers.append(cls(weights=weights, thresholds=thresholds, **lp.params))
            elif lp.kind == "maxpool":
                layers.append(MaxPool2d(**lp.params))
            else:
                layers.append(Flatten(**lp.params))
        except ModelError as exc:
            raise ir_error(exc, f"layer {i}") from None
    try:
        epilogue = None
        if plan.epilogue is not None:
            scale, bias = plan.epilogue
            epilogue = Epilogue(arrays[scale.name], arrays[bias.name])
        prologue = None if plan.prologue is None else InputPrologue(**plan.prologue)
        model = Model(InputSpec(**plan.input), tuple(layers), epilogue, plan.name, plan.metadata, prologue)
    except ModelError as exc:
        raise ir_error(exc) from None
    for i, lp in enumerate(plan.layers):
        if lp.out_shape != model.shapes[i + 1]:
            raise ModelFileError(
                f"{source}: manifest layers[{i}].out_shape is {list(lp.out_shape)} but the layers give "
                f"{list(model.shapes[i + 1])}"
            )
    return model
