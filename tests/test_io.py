"""The ``.bnn`` model file: exact round trips, deterministic bytes, clear errors, a fuzzed loader."""

from __future__ import annotations

import io
import json
import warnings
import zipfile
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bnnfab.models.io as mio
from bnnfab.models import Conv2d, Dense, Epilogue, Flatten, InputSpec, MaxPool2d, Model, Padding
from bnnfab.models.ir import InputPrologue
from bnnfab.models.io import (
    FORMAT_VERSION,
    SUFFIX,
    ModelFileError,
    dumps_model,
    load_model,
    loads_model,
    save_model,
)
from strategies import valid_models

SRC = "f.bnn"


# ------------------------------------------------------------------------------------- fixtures


# The bnn_pynq input quantizer of an NCHW float32 source: 2 x - 1, then unsigned 8-bit codes
# (Python's shortest repr of the float32 constant 1/255 must survive the manifest).
SMALL_PROLOGUE = InputPrologue(
    (1, 6, 5), (("mul", 2.0), ("sub", 1.0)), bits=8, scale=float(np.float32(1 / 255)), zero_point=0.0, signed=False
)


def small_model() -> Model:
    """A conv net touching every layer kind: K = 9 (pad bits), asymmetric pads, epilogue, prologue."""
    rng = np.random.default_rng(1234)
    conv = Conv2d(
        weights=rng.random((4, 3, 3, 1)) < 0.5,
        thresholds=np.array([-3, 0, 2, 9]),
        stride=(1, 2),
        pads=(1, 0, 2, 1),
        padding=Padding.MINUS_ONE,
        name="c0",
    )
    shape = conv.out_shape((6, 5, 1))
    pool = MaxPool2d(kernel=(2, 1), name="pool")
    shape = pool.out_shape(shape)
    flat = Flatten(order="chw")
    k = flat.out_shape(shape)[0]
    hidden = Dense(rng.random((70, k)) < 0.5, rng.integers(-k, k, 70), name="fc0")
    out = Dense(rng.random((3, 70)) < 0.5, None, name="out")
    epilogue = Epilogue(np.array([0.5, -0.0, 1e-300]), np.array([1.0, -2.5, 3e300]))
    return Model(
        InputSpec((6, 5, 1), bits=8),
        (conv, pool, flat, hidden, out),
        epilogue,
        "small",
        {"source": "test", "b": "2"},
        prologue=SMALL_PROLOGUE,
    )


def mlp_model() -> Model:
    rng = np.random.default_rng(99)
    return Model(
        InputSpec((129,), bits=1),
        (Dense(rng.random((5, 129)) < 0.5, np.array([0, 1, -1, 2**63 - 1, -(2**63)])), Dense(rng.random((2, 5)) < 0.5)),
    )


SMALL = dumps_model(small_model())
MLP = dumps_model(mlp_model())


def members_of(blob: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(blob)) as zf:
        return {info.filename: zf.read(info) for info in zf.infolist()}


def rezip(members: dict[str, bytes], method: int = zipfile.ZIP_STORED) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # duplicate names, on purpose
        with zipfile.ZipFile(buf, "w") as zf:
            for name, data in members.items():
                info = zipfile.ZipInfo(name)
                info.compress_type = method
                zf.writestr(info, data)
    return buf.getvalue()


def edited(
    manifest_edit: Callable[[dict], Any] | None = None,
    members_edit: Callable[[dict], Any] | None = None,
    blob: bytes = SMALL,
) -> bytes:
    """``blob`` with its manifest and/or members changed, re-zipped with correct CRCs."""
    members = members_of(blob)
    if manifest_edit is not None:
        manifest = json.loads(members["manifest.json"])
        manifest_edit(manifest)
        members["manifest.json"] = json.dumps(manifest).encode()
    if members_edit is not None:
        members_edit(members)
    return rezip(members)


def load_error(blob: bytes) -> str:
    with pytest.raises(ModelFileError) as info:
        loads_model(blob, SRC)
    return clean_message(info.value)


def clean_message(err: ModelFileError) -> str:
    """The message of a load error that shows no traceback from numpy, zipfile or json."""
    message = str(err)
    assert message.startswith(SRC + ": "), message
    assert "\n" not in message
    assert err.__cause__ is None and (err.__context__ is None or err.__suppress_context__)
    return message


def load_or_clean_error(blob: bytes) -> None:
    """Fuzz oracle: a load either succeeds or raises a clean ModelFileError, nothing else."""
    try:
        model = loads_model(blob, SRC)
    except ModelFileError as err:
        clean_message(err)
    else:
        assert isinstance(model, Model)


# ------------------------------------------------------------------------------ round trip / API


def test_api() -> None:
    assert FORMAT_VERSION == 1 and SUFFIX == ".bnn"
    assert issubclass(ModelFileError, ValueError)
    assert len(set(mio.__all__)) == len(mio.__all__)
    for name in mio.__all__:  # also catches a missing comma joining two names
        assert hasattr(mio, name), name


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_models())
def test_round_trip_exact_and_deterministic(model: Model) -> None:
    blob = dumps_model(model)
    back = loads_model(blob)
    assert back == model
    assert back.shapes == model.shapes
    for a, b in zip(back.layers, model.layers):
        if isinstance(a, (Dense, Conv2d)):
            assert a.weights.dtype == np.bool_ and a.weights.shape == b.weights.shape
            assert a.thresholds is None or a.thresholds.dtype == np.int64
    if model.epilogue is not None:  # bit-exact floats, -0.0 included
        assert back.epilogue.scale.tobytes() == model.epilogue.scale.tobytes()
        assert back.epilogue.bias.tobytes() == model.epilogue.bias.tobytes()
    assert dumps_model(model) == blob
    assert dumps_model(back) == blob


def test_save_load_file(tmp_path) -> None:
    model = small_model()
    path = tmp_path / ("m" + SUFFIX)
    save_model(model, path)
    assert path.read_bytes() == SMALL
    assert load_model(path) == model
    assert load_model(str(path)) == model


def test_equal_models_give_equal_bytes() -> None:
    a = small_model()
    b = Model(a.input, a.layers, a.epilogue, a.name, dict(reversed(a.metadata.items())), a.prologue)
    assert list(a.metadata) != list(b.metadata) and dumps_model(a) == dumps_model(b)


def test_layout_is_inspectable() -> None:
    model = small_model()
    with zipfile.ZipFile(io.BytesIO(SMALL)) as zf:
        infos = zf.infolist()
        manifest = json.loads(zf.read("manifest.json"))
        conv_words = zf.read("layers/0/weights.bin")
        scale = zf.read("epilogue/scale.bin")
    assert infos[0].filename == "manifest.json"
    assert all(i.compress_type == zipfile.ZIP_STORED and i.date_time == (1980, 1, 1, 0, 0, 0) for i in infos)
    assert b'"format": "bnnfab-model"' in SMALL  # stored: readable in the raw file
    assert b'"shape": [6, 5, 1]' in SMALL
    assert manifest["version"] == 1 and manifest["name"] == "small"
    assert list(manifest["metadata"]) == ["b", "source"]
    conv = manifest["layers"][0]
    assert conv["kind"] == "conv" and conv["padding"] == "-1" and conv["pads"] == [1, 0, 2, 1]
    assert conv["weights"] == {"file": "layers/0/weights.bin", "dtype": "uint64", "shape": [4, 1], "bits": 9}
    assert manifest["layers"][2] == {"kind": "flatten", "name": "", "order": "chw", "out_shape": [24]}
    assert manifest["layers"][4]["thresholds"] is None
    assert manifest["prologue"] == {
        "source_shape": [1, 6, 5],
        "dtype": "float32",
        "ops": [["mul", 2.0], ["sub", 1.0]],
        "bits": 8,
        "scale": float(np.float32(1 / 255)),
        "zero_point": 0.0,
        "signed": False,
        "narrow": False,
        "rounding": "half_even",
    }
    assert json.loads(members_of(MLP)["manifest.json"])["prologue"] is None
    # Weights: (ky, kx, c) flattened, element k is bit k of a little-endian uint64 (independent oracle).
    flat = model.layers[0].weights.reshape(4, 9)
    expected = b"".join(sum(int(bit) << k for k, bit in enumerate(row)).to_bytes(8, "little") for row in flat)
    assert conv_words == expected
    assert scale == np.array([0.5, -0.0, 1e-300], dtype="<f8").tobytes()


def test_hand_zipped_deflated_archive_loads() -> None:
    members = {"layers/": b"", **members_of(SMALL)}
    assert loads_model(rezip(members, zipfile.ZIP_DEFLATED)) == small_model()


def test_awkward_strings_survive() -> None:
    base = mlp_model()
    name = 'lone \ud800 surrogate, "quotes", \x00, caf\u00e9, \U0001f600'
    model = Model(base.input, base.layers, name=name, metadata={name: name, "": ""})
    blob = dumps_model(model)
    assert members_of(blob)["manifest.json"].isascii()
    assert loads_model(blob) == model


def test_save_rejects_non_models_and_oversized() -> None:
    with pytest.raises(TypeError, match="can only save a bnnfab Model, not dict"):
        dumps_model({})
    with pytest.raises(TypeError, match="not str"):
        loads_model("abc")
    base = mlp_model()
    huge = Model(base.input, base.layers, metadata={"log": "x" * mio.MAX_MANIFEST_BYTES})
    with pytest.raises(ModelFileError, match="the manifest would take .* bytes; the format allows at most"):
        dumps_model(huge)


def _features(model: Model) -> set[str]:
    seen = {"signed input" if model.input.signed else "binary input" if model.input.binary else "unsigned input"}
    seen.add("epilogue" if model.epilogue is not None else "no epilogue")
    if model.prologue is None:
        seen.add("no prologue")
    else:
        seen.add("binary prologue" if model.prologue.binary else "integer prologue")
    for layer in model.layers:
        seen.add(layer.kind)
        if isinstance(layer, Conv2d):
            seen.add(f"padding {layer.padding.value}")
            seen |= {"asymmetric pads"} if layer.pads[:2] != layer.pads[2:] else set()
            seen |= {"conv stride"} if layer.stride != (1, 1) else set()
        if isinstance(layer, Flatten):
            seen.add(f"flatten {layer.order.value}")
        if isinstance(layer, Dense) and layer.k > 64 and layer.k % 64:
            seen.add("K > 64 with pad bits")
    return seen


def test_strategy_covers_the_features() -> None:
    seen: set[str] = set()

    @settings(max_examples=150, derandomize=True, deadline=None, database=None)
    @given(valid_models())
    def collect(model: Model) -> None:
        seen.update(_features(model))

    collect()
    wanted = {"signed input", "binary input", "unsigned input", "epilogue", "no epilogue", "dense", "conv", "maxpool"}
    wanted |= {"flatten hwc", "flatten chw", "padding zero", "padding +1", "padding -1", "asymmetric pads"}
    wanted |= {"conv stride", "K > 64 with pad bits", "no prologue", "binary prologue", "integer prologue"}
    assert wanted <= seen, wanted - seen


# ------------------------------------------------------------------------------------ errors


def _set(path: str, value: Any) -> Callable[[dict], None]:
    """Manifest edit: set the value at a dotted path (integers index lists); ``...`` deletes it."""

    def edit(manifest: dict) -> None:
        *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
        node = manifest
        for p in parents:
            node = node[p]
        if value is ...:
            del node[last]
        else:
            node[last] = value

    return edit


def _drop(name: str) -> Callable[[dict], None]:
    return lambda members: members.pop(name)


def _put(name: str, data: bytes) -> Callable[[dict], None]:
    return lambda members: members.__setitem__(name, data)


def _set_pad_bit(members: dict) -> None:
    words = np.frombuffer(members["layers/0/weights.bin"], dtype="<u8").copy()
    words[1] |= np.uint64(1) << np.uint64(63)  # row 1, beyond K = 9
    members["layers/0/weights.bin"] = words.tobytes()


MANIFEST_ERRORS = [
    (
        _set("version", 2),
        "f.bnn: written by a newer bnnfab (version 2); this one reads version 1; upgrade bnnfab",
    ),
    (_set("version", 0), "unknown format version 0; this bnnfab reads version 1"),
    (_set("version", "1"), "manifest version must be an integer, not '1'"),
    (_set("format", "onnx"), "not a bnnfab model file: manifest format is 'onnx', expected 'bnnfab-model'"),
    (_set("layers.0.weights.dtype", "float32"), "f.bnn: array 'layers/0/weights' has dtype float32; expected uint64"),
    (_set("layers.3.thresholds.dtype", "int32"), "array 'layers/3/thresholds' has dtype int32; expected int64"),
    (_set("epilogue.bias.dtype", "float32"), "array 'epilogue/bias' has dtype float32; expected float64"),
    (_set("layers.0.weights.shape", [4, 2]), "array 'layers/0/weights' has shape [4, 2]; expected [4, 1]"),
    (_set("layers.0.weights.shape", [4.0, 1]), "array 'layers/0/weights' has shape [4.0, 1]; expected [4, 1]"),
    (_set("layers.0.weights.bits", 10), "array 'layers/0/weights' has bits 10; expected 9"),
    (_set("layers.0.weights.file", "../etc/passwd"), "layers[0].weights.file must be 'layers/0/weights.bin'"),
    (_set("layers.0.strides", [1, 1]), "manifest layers[0] has unknown key 'strides'"),
    (_set("input.bits", ...), "manifest input is missing key 'bits'"),
    (_set("name", ...), "manifest is missing key 'name'"),
    (_set("layers.0.stride", [1, "2"]), "manifest layers[0].stride[1] must be an integer from 1 to 2147483647, not '2'"),
    (_set("layers.0.in_channels", True), "manifest layers[0].in_channels must be an integer from 1 to 2147483647, not True"),
    (_set("layers.0.padding", "same"), "manifest layers[0].padding must be one of 'zero', '+1', '-1', not 'same'"),
    (_set("layers.1.kind", "avgpool"), "manifest layers[1].kind must be one of 'dense', 'conv', 'maxpool', 'flatten'"),
    (_set("input.signed", 0), "manifest input.signed must be true or false, not 0"),
    (_set("metadata.b", 2), "manifest metadata['b'] must be a string, not 2"),
    (_set("layers", {}), "manifest layers must be a list, not {}"),
    (_set("layers.0.out_shape", [5, 2, 4]), "manifest layers[0].out_shape is [5, 2, 4] but the layers give [7, 2, 4]"),
    (_set("input.shape", [2**20, 2**20, 2]), "manifest input.shape [1048576, 1048576, 2] has more than 1099511627776 elements"),
    # rules of the IR, reported with the file name
    (_set("layers.0.pads", [3, 0, 0, 0]), "f.bnn: layer 0 (conv 'c0'): each pad must be smaller than the kernel (3, 3)"),
    (_set("input.bits", 40), "f.bnn: input: bits must be an integer from 1 (binary) to 32, not 40"),
    (_set("epilogue.classes", 2), "array 'epilogue/scale' has shape [3]; expected [2]"),
    # the prologue
    (_set("prologue.ops.0.0", "pow"), "manifest prologue.ops[0][0] must be one of 'add', 'sub', 'mul', 'div', 'rsub'"),
    (_set("prologue.ops.1", ["sub"]), "manifest prologue.ops[1] must be an [op, number] pair, not ['sub']"),
    (_set("prologue.ops.0.1", "2"), "manifest prologue.ops[0][1] must be a number, not '2'"),
    (_set("prologue.ops.0.1", 10**400), "manifest prologue.ops[0][1] must be a finite number"),
    (_set("prologue.scale", True), "manifest prologue.scale must be a number, not True"),
    (_set("prologue.rounding", "ROUND"), "manifest prologue.rounding must be one of 'half_even', 'half_up'"),
    (_set("prologue.dtype", "float16"), "manifest prologue.dtype must be one of 'float32', 'float64', not 'float16'"),
    (_set("prologue.bits", 0), "manifest prologue.bits must be an integer from 1 to 32, not 0"),
    (_set("prologue.source_shape", []), "manifest prologue.source_shape must be a list of 1 to 8 integers, not []"),
    (_set("prologue.narrow", ...), "manifest prologue is missing key 'narrow'"),
    (_set("prologue.axis", 1), "manifest prologue has unknown key 'axis'"),
    (_set("prologue", []), "manifest prologue must be an object, not []"),
    # ... and the IR's rules on it
    (_set("prologue.source_shape", [1, 6, 6]), "f.bnn: prologue: does not fit the model input: source_shape (1, 6, 6) holds 36"),
    (
        _set("prologue.signed", True),
        "prologue: does not fit the model input: its codes span [-128, 127], beyond the input's range [0, 255]",
    ),
    (_set("prologue.zero_point", 0.5), "f.bnn: prologue: zero_point must be an integer (codes are integers), not 0.5"),
    (_set("prologue.scale", 0), "f.bnn: prologue: scale must be non-zero, not 0.0"),
    (_set("prologue.bits", 1), "f.bnn: prologue: a bipolar prologue (bits=1) takes the sign only; scale must stay 1.0"),
]


@pytest.mark.parametrize("edit, fragment", MANIFEST_ERRORS)
def test_manifest_errors(edit: Callable[[dict], None], fragment: str) -> None:
    message = load_error(edited(edit))
    assert fragment in message


def test_files_without_a_prologue_key_still_load() -> None:
    """Files written before the prologue existed have no "prologue" key: it means null."""
    base = small_model()
    no_prologue = Model(base.input, base.layers, base.epilogue, base.name, dict(base.metadata))
    assert loads_model(edited(_set("prologue", ...))) == no_prologue
    assert loads_model(edited(_set("prologue", None))) == no_prologue


def test_newer_version_wins_over_unknown_keys() -> None:
    def future(manifest: dict) -> None:
        manifest["version"] = 7
        manifest["quantizers"] = []

    assert "written by a newer bnnfab (version 7)" in load_error(edited(future))


def test_ir_rule_needs_consistent_members() -> None:
    def drop_thresholds(manifest: dict) -> None:
        manifest["layers"][3]["thresholds"] = None

    # The member the manifest no longer names is reported first ...
    assert "unexpected member 'layers/3/thresholds.bin'" in load_error(edited(drop_thresholds))
    # ... and without it the IR's rule speaks.
    message = load_error(edited(drop_thresholds, _drop("layers/3/thresholds.bin")))
    assert "f.bnn: layer 3 (dense 'fc0'): only the last layer may omit thresholds" in message


def test_zip_bomb_declarations_are_refused_before_reading() -> None:
    n = 2**31 - 1

    def huge(manifest: dict) -> None:
        layer = manifest["layers"][4]
        layer.update(in_features=n, out_features=n, out_shape=[n])
        layer["weights"].update(shape=[n, 2**25], bits=n)

    message = load_error(edited(huge))
    assert f"bytes of arrays; this bnnfab reads at most {mio.MAX_ARRAY_BYTES}" in message


MEMBER_ERRORS = [
    (_drop("layers/0/weights.bin"), "f.bnn: array 'layers/0/weights' is missing: no member 'layers/0/weights.bin'"),
    (_drop("manifest.json"), "f.bnn: not a bnnfab model file: the archive has no manifest.json"),
    (
        _put("layers/0/thresholds.bin", np.arange(5, dtype="<i8").tobytes()),
        "array 'layers/0/thresholds' has 40 bytes; expected 32 (int64, shape [4]): truncated or wrong size",
    ),
    (_put("layers/3/weights.bin", b"\0" * 100), "array 'layers/3/weights' has 100 bytes; expected 560 (uint64"),
    (_put("extra.txt", b"hi"), "unexpected member 'extra.txt' in the archive"),
    (_set_pad_bit, "f.bnn: array 'layers/0/weights' has non-zero pad bits in row 1 (bits 9..63 of the last word"),
    (_put("epilogue/scale.bin", np.array([1.0, np.nan, 2.0]).tobytes()), "f.bnn: epilogue: epilogue scale must be finite"),
    (_put("manifest.json", b'{"format": "bnnfab-model",'), "f.bnn: manifest.json is not valid JSON: Expecting"),
    (_put("manifest.json", b"[1, 2]"), "f.bnn: manifest.json must hold a JSON object, not list"),
    (_put("manifest.json", b'{"version": NaN}'), "manifest.json is not valid JSON: NaN is not a JSON number"),
    (_put("manifest.json", b'{"version": 1, "version": 2}'), "not valid JSON: key 'version' appears twice"),
    (_put("manifest.json", b"\xff\xfe{}"), "f.bnn: manifest.json is not UTF-8 text"),
    (_put("manifest.json", b"[" * 100_000), "f.bnn: manifest.json is not valid JSON: nested too deeply"),
]


@pytest.mark.parametrize("edit, fragment", MEMBER_ERRORS)
def test_member_errors(edit: Callable[[dict], None], fragment: str) -> None:
    assert fragment in load_error(edited(members_edit=edit))


def test_zip_level_errors() -> None:
    members = members_of(SMALL)
    twice = _with_duplicate(members, "layers/0/weights.bin")
    assert "the archive holds member 'layers/0/weights.bin' twice" in load_error(twice)
    assert "member 'manifest.json' is encrypted; model files are not" in load_error(_encrypted_flag(SMALL))
    assert "uses zip compression method 12; this bnnfab reads stored (0) or deflated (8)" in load_error(
        rezip(members, zipfile.ZIP_BZIP2)
    )
    # A flipped byte inside the stored manifest: the CRC catches it.
    corrupt = bytearray(SMALL)
    corrupt[SMALL.index(b'"version"') + 2] ^= 0x20
    assert "f.bnn: member 'manifest.json' is corrupt or truncated (Bad CRC-32" in load_error(bytes(corrupt))


def _encrypted_flag(blob: bytes) -> bytes:
    """Set the 'encrypted' flag of the first member (zipfile's writer clears it)."""
    data = bytearray(blob)
    data[6] |= 0x1  # local header: general purpose flags at offset 6
    central = data.index(b"PK\x01\x02")
    data[central + 8] |= 0x1  # central directory header: flags at offset 8
    return bytes(data)


def _with_duplicate(members: dict[str, bytes], name: str) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        with zipfile.ZipFile(buf, "w") as zf:
            for n, data in [*members.items(), (name, members[name])]:
                zf.writestr(n, data)
    return buf.getvalue()


@pytest.mark.parametrize("blob", [b"", b"hello world", b"PK\x03\x04" + b"\0" * 40, b"\x89HDF\r\n\x1a\n" + b"\0" * 100])
def test_not_a_zip(blob: bytes) -> None:
    assert "f.bnn: not a bnnfab model file: not a zip archive, or truncated or corrupt" in load_error(blob)


@pytest.mark.parametrize("blob", [SMALL, MLP], ids=["conv", "mlp"])
def test_every_truncation_is_a_clear_error(blob: bytes) -> None:
    for n in range(len(blob)):
        message = load_error(blob[:n])
        assert "truncated" in message, (n, message)


def test_missing_file_and_directory(tmp_path) -> None:
    with pytest.raises(ModelFileError, match="^no such model file: .*nope.bnn$"):
        load_model(tmp_path / "nope.bnn")
    with pytest.raises(ModelFileError, match="is a directory, not a model file"):
        load_model(tmp_path)


# --------------------------------------------------------------------------------------- fuzz

FUZZ = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
blobs = st.sampled_from([SMALL, MLP])


@FUZZ
@given(blobs, st.lists(st.tuples(st.integers(0, 10**6), st.integers(1, 255)), min_size=1, max_size=6))
def test_fuzz_byte_flips(blob: bytes, flips: list[tuple[int, int]]) -> None:
    data = bytearray(blob)
    for pos, xor in flips:
        data[pos % len(data)] ^= xor
    load_or_clean_error(bytes(data))


@FUZZ
@given(blobs, st.integers(0, 10**6), st.binary(max_size=64), st.integers(0, 400))
def test_fuzz_tail_damage(blob: bytes, cut: int, garbage: bytes, tail: int) -> None:
    """Truncation plus garbage, and overwriting within the central directory (the last bytes)."""
    load_or_clean_error(blob[: cut % len(blob)] + garbage)
    data = bytearray(blob)
    start = max(0, len(data) - 1 - tail)
    data[start : start + len(garbage)] = garbage
    load_or_clean_error(bytes(data))


@FUZZ
@given(st.one_of(st.binary(), st.binary().map(lambda b: b"PK\x03\x04" + b), st.binary().map(lambda b: b + b"PK\x05\x06")))
def test_fuzz_random_bytes(data: bytes) -> None:
    load_or_clean_error(data)


json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-3, 200),
        st.sampled_from([0, -1, 2**31, 2**62, 2**64, 10**30]),
        st.floats(allow_nan=False, allow_infinity=False),
        st.sampled_from(["zero", "uint64", "float32", "dense", "conv", "maxpool", "flatten", "chw", "layers/0/weights.bin"]),
        st.text(max_size=5),
    ),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=5), inner, max_size=3)),
    max_leaves=8,
)


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            out += _paths(value, prefix + (key,))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out += _paths(value, prefix + (i,))
    return out


@st.composite
def mutated_manifests(draw: st.DrawFn) -> bytes:
    blob = draw(blobs)
    members = members_of(blob)
    manifest = json.loads(members["manifest.json"])
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(manifest)
        path = draw(st.sampled_from(paths[1:]))
        node = manifest
        for p in path[:-1]:
            node = node[p]
        op = draw(st.sampled_from(["replace", "delete", "nudge", "add"]))
        if op == "delete":
            del node[path[-1]]
        elif op == "nudge" and type(node[path[-1]]) is int:
            node[path[-1]] += draw(st.sampled_from([-1, 1, 63, 64, -(2**40), 2**40]))
        elif op == "add" and isinstance(node, dict):
            node[draw(st.text(max_size=5))] = draw(json_values)
        else:
            node[path[-1]] = draw(json_values)
    members["manifest.json"] = json.dumps(manifest).encode()
    if draw(st.booleans()):
        name = draw(st.sampled_from(sorted(members)))
        members[name] = draw(st.one_of(st.binary(max_size=80), st.just(members[name][:-8])))
    return rezip(members, draw(st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])))


@FUZZ
@given(mutated_manifests())
def test_fuzz_mutated_manifests(blob: bytes) -> None:
    load_or_clean_error(blob)
