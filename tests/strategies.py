"""Hypothesis strategies shared by the tests: random *valid* models, kept small.

``valid_models()`` draws dense-only MLPs and conv nets (convs with every :class:`Padding`,
strides, asymmetric pads; binary max-pools; ``hwc``/``chw`` flattens), with binary or n-bit
(signed or unsigned) inputs, reduction lengths around the 64-bit word boundaries, thresholds over
the whole int64 range, an optional epilogue, an optional input prologue (the quantizer of an
imported graph), names and metadata with awkward characters.
"""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from bnnfab.models import Conv2d, Dense, Epilogue, Flatten, FlattenOrder, InputSpec, MaxPool2d, Model, Padding
from bnnfab.models.ir import PROLOGUE_OPS, ROUNDING_MODES, InputPrologue

__all__ = ["valid_models", "names", "reduction_lengths"]

# Lone surrogates, quotes, NUL and non-ASCII: things a file format must carry through exactly.
_AWKWARD = ["", "fc", "conv 1", 'q"uote\\', "\x00nul", "caf\u00e9", "\ud800lone", "\U0001f600"]


def names() -> st.SearchStrategy[str]:
    """Layer and model names."""
    return st.one_of(st.sampled_from(_AWKWARD), st.text(max_size=8))


def reduction_lengths(max_value: int = 140) -> st.SearchStrategy[int]:
    """Sizes that often sit on or next to a 64-bit word boundary."""
    edges = [k for k in (1, 2, 63, 64, 65, 127, 128, 129) if k <= max_value]
    return st.one_of(st.integers(1, 9), st.sampled_from(edges), st.integers(1, max_value))


def _thresholds(n: int) -> st.SearchStrategy[np.ndarray]:
    small = st.integers(-200, 200)
    full = st.integers(-(2**63), 2**63 - 1)
    return hnp.arrays(np.int64, (n,), elements=st.one_of(small, full))


def _bits(shape: tuple[int, ...]) -> st.SearchStrategy[np.ndarray]:
    # Drawn as bytes rather than element by element: much faster for thousands of bits, and
    # still shrinks (towards all -1).
    size = int(np.prod(shape))
    nbytes = (size + 7) // 8
    return st.binary(min_size=nbytes, max_size=nbytes).map(
        lambda raw: np.unpackbits(np.frombuffer(raw, np.uint8), count=size).astype(np.bool_).reshape(shape)
    )


@st.composite
def _input(draw: st.DrawFn, shape: tuple[int, ...]) -> InputSpec:
    bits = draw(st.sampled_from([1, 1, 2, 8, 16, 32]))
    signed = False if bits == 1 else draw(st.booleans())
    return InputSpec(shape, bits=bits, signed=signed)


@st.composite
def prologues(draw: st.DrawFn, spec: InputSpec) -> InputPrologue:
    """An input prologue that fits ``spec``: the source layout NCHW (for a map) or any shape with
    the same number of values; float constants that must survive a file bit for bit."""
    size = int(np.prod(spec.shape))
    if len(spec.shape) == 3 and draw(st.booleans()):
        h, w, c = spec.shape
        source = (c, h, w)
    else:
        source = draw(st.sampled_from([(size,), (1, size)]))
    dtype = draw(st.sampled_from(["float32", "float64"]))
    width = 32 if dtype == "float32" else 64
    special = [2.0, 1.0, -0.0, 1 / 255, 2.0**-7, 1e-300]
    if dtype == "float32":  # the prologue's constants are values of its dtype
        special = [float(np.float32(v)) for v in special]
    reals = st.one_of(st.floats(allow_nan=False, allow_infinity=False, width=width), st.sampled_from(special))
    ops = tuple(draw(st.lists(st.tuples(st.sampled_from(PROLOGUE_OPS), reals), max_size=3)))
    if spec.binary:
        return InputPrologue(source, ops, bits=1, dtype=dtype)
    bits = draw(st.integers(2, spec.bits))
    narrow = draw(st.booleans())
    if spec.signed and draw(st.booleans()):  # unsigned quantizer shifted by its zero point
        signed, zero_point = False, float(2 ** (bits - 1))
    else:
        signed, zero_point = spec.signed, 0.0
    scale = draw(reals.filter(lambda v: v != 0))
    rounding = draw(st.sampled_from(ROUNDING_MODES))
    return InputPrologue(source, ops, bits, scale, zero_point, signed, narrow, rounding, dtype)


@st.composite
def _conv(draw: st.DrawFn, shape: tuple[int, int, int], thresholds: bool) -> Conv2d | None:
    h, w, c = shape
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    pads = (
        draw(st.integers(0, kh - 1)),
        draw(st.integers(0, kw - 1)),
        draw(st.integers(0, kh - 1)),
        draw(st.integers(0, kw - 1)),
    )
    if h + pads[0] + pads[2] < kh or w + pads[1] + pads[3] < kw:
        return None
    n = draw(st.integers(1, 5))
    return Conv2d(
        weights=draw(_bits((n, kh, kw, c))),
        thresholds=draw(_thresholds(n)) if thresholds else None,
        stride=(draw(st.integers(1, 2)), draw(st.integers(1, 2))),
        pads=pads,
        padding=draw(st.sampled_from(Padding)),
        name=draw(names()),
    )


@st.composite
def valid_models(draw: st.DrawFn, max_hidden: int = 3) -> Model:
    """A random valid :class:`Model`: an MLP on a flat input or a conv net on an (H, W, C) map."""
    layers: list = []
    if draw(st.booleans()):
        spec = draw(_input((draw(reduction_lengths()),)))
        shape: tuple[int, ...] = spec.shape
    else:
        spec = draw(_input((draw(st.integers(1, 6)), draw(st.integers(1, 6)), draw(st.integers(1, 4)))))
        shape = spec.shape
        binary = spec.binary
        for _ in range(draw(st.integers(0, max_hidden))):
            h, w, c = shape
            if binary and draw(st.booleans()):
                kernel = (draw(st.integers(1, min(h, 2))), draw(st.integers(1, min(w, 2))))
                stride = draw(st.one_of(st.none(), st.tuples(st.integers(1, 2), st.integers(1, 2))))
                layer = MaxPool2d(kernel=kernel, stride=stride, name=draw(names()))
            else:
                layer = draw(_conv(shape, thresholds=True))
                if layer is None:
                    continue
                binary = True
            shape = layer.out_shape(shape)
            layers.append(layer)
        flatten = Flatten(order=draw(st.sampled_from(FlattenOrder)), name=draw(names()))
        shape = flatten.out_shape(shape)
        layers.append(flatten)
    for _ in range(draw(st.integers(0, max_hidden))):
        n = draw(reduction_lengths(70))
        layers.append(Dense(draw(_bits((n, shape[0]))), draw(_thresholds(n)), name=draw(names())))
        shape = (n,)
    classes = draw(st.integers(1, 12))
    layers.append(Dense(draw(_bits((classes, shape[0]))), None, name=draw(names())))
    epilogue = None
    if draw(st.booleans()):
        reals = st.floats(allow_nan=False, allow_infinity=False)
        epilogue = Epilogue(
            draw(hnp.arrays(np.float64, (classes,), elements=reals)),
            draw(hnp.arrays(np.float64, (classes,), elements=reals)),
        )
    metadata = draw(st.dictionaries(names(), names(), max_size=3))
    prologue = draw(st.one_of(st.none(), prologues(spec)))
    return Model(spec, tuple(layers), epilogue, name=draw(names()), metadata=metadata, prologue=prologue)
