"""Stream utilities (:mod:`bnnfab.hdl.streams`) in Amaranth's simulator, and small engine chains.

Payloads are compared to naive references written here (bit slicing on Python ints, numpy
``argmax``, a numpy layer on integers), cycles to :func:`width_adapter_cycle_reference` and
:func:`argmax_cycle_reference`, transcriptions of the module docstring's cycle rules. Valid and
ready are stalled independently by per-cycle patterns (the driver, monitor and patterns are
:mod:`ampsim`'s, shared by the HDL tests).
"""

from __future__ import annotations

import functools
import zlib

import numpy as np
import pytest
from amaranth.back import verilog
from amaranth.hdl import Module
from amaranth.lib import wiring

import ampsim
from ampsim import ResetTop, assert_hdl_layering, assert_verilog_deterministic, at, drive_stream, fields_of, run_bench
from bnnfab.hdl.folded import FoldedDense
from bnnfab.hdl.intdense import IntDense
from bnnfab.hdl.streams import Argmax, WidthAdapter
from naive import pm1

pytestmark = pytest.mark.filterwarnings("ignore::amaranth._unused.UnusedMustUse")

# Bursts of at most 24 cycles: these blocks hold few beats, so shorter bursts vary them more.
stall_pattern = functools.partial(ampsim.stall_pattern, max_run=25)


# --------------------------------------------------------------------------------------------
# Naive references


def split_vector(vector: int, v: int, c: int) -> list[int]:
    """Chunks of a ``v``-bit vector: chunk ``j`` = bits ``[j*c, (j+1)*c)``, zero above ``v``."""
    vector &= (1 << v) - 1
    return [(vector >> (j * c)) & ((1 << c) - 1) for j in range(-(-v // c))]


def join_chunks(chunks: list[int], v: int, c: int) -> int:
    return sum(ch << (j * c) for j, ch in enumerate(chunks)) & ((1 << v) - 1)


# --------------------------------------------------------------------------------------------
# Cycle references (the module docstring, at transaction level)


def width_adapter_cycle_reference(params, in_valid_pattern, out_ready_pattern, n_in):
    """Accept and emit cycles of a :class:`WidthAdapter`.

    ``params``: ``in_width``, ``out_width``. Patterns as for the engines' references (the source
    offers its next beat when ``in_valid_pattern[c]`` and holds it until it transfers; the sink's
    ready is ``out_ready_pattern[c]``; True past the end). ``n_in`` input beats are sent (a
    multiple of ``R`` when gathering). Returns ``(accept_cycles, emit_cycles)``.
    """
    wi, wo = params["in_width"], params["out_width"]
    r = -(-max(wi, wo) // min(wi, wo))
    splits = wi >= wo
    n_out = n_in * r if splits else n_in // r
    assert splits or n_in % r == 0
    j, valid = 0, False  # chunk counter; full (split) / ov (gather)
    offered, sent = False, 0
    accepts, emits = [], []
    c = 0
    while len(emits) < n_out:
        assert c < len(in_valid_pattern) + len(out_ready_pattern) + 10 * (n_in + n_out + 10), "no progress"
        if not offered and sent < n_in and at(in_valid_pattern, c):
            offered = True
        ready = at(out_ready_pattern, c)
        in_ready = (not valid or (ready and j == r - 1)) if splits else (not valid or ready)
        take = offered and in_ready
        give = valid and ready
        if take:
            accepts.append(c)
            offered, sent = False, sent + 1
        if give:
            emits.append(c)
        if splits:
            if take:
                j, valid = 0, True
            elif give:
                j, valid = (0, False) if j == r - 1 else (j + 1, True)
        else:
            if take:
                if j == r - 1:
                    j, valid = 0, True
                else:
                    j, valid = j + 1, valid and not give
            elif give:
                valid = False
        c += 1
    return accepts, emits


def argmax_cycle_reference(params, in_valid_pattern, out_ready_pattern, n_beats):
    """Accept and emit cycles of an :class:`Argmax` with ``params["latency"]`` stages (or ``n``
    and ``stage_levels``, from which ``L = max(1, ceil(ceil(log2 n) / stage_levels))``)."""
    if "latency" in params:
        lat = params["latency"]
    else:
        lat = max(1, -(-(params["n"] - 1).bit_length() // params.get("stage_levels", 1)))
    v = [False] * lat
    offered, sent = False, 0
    accepts, emits = [], []
    c = 0
    while len(emits) < n_beats:
        assert c < len(in_valid_pattern) + len(out_ready_pattern) + 10 * (n_beats + lat + 10), "no progress"
        if not offered and sent < n_beats and at(in_valid_pattern, c):
            offered = True
        ready = at(out_ready_pattern, c)
        en = not v[-1] or ready
        if v[-1] and ready:
            emits.append(c)
        if en:
            if offered:
                accepts.append(c)
                offered, sent = False, sent + 1
                v = [True] + v[:-1]
            else:
                v = [False] + v[:-1]
        c += 1
    return accepts, emits


# --------------------------------------------------------------------------------------------
# Driver / monitor


def run(top, src, sink, beats, n_out, in_pat, out_pat, payload_value=lambda p: p):
    """Simulate ``top`` under :func:`ampsim.drive_stream` from ``src`` to ``sink``; returns
    (accept cycles, emit cycles, payloads) once ``n_out`` beats arrived."""
    return run_bench(top, lambda ctx: drive_stream(ctx, src, sink, beats, n_out, in_pat, out_pat,
                                                   payload_value=payload_value))


# --------------------------------------------------------------------------------------------
# WidthAdapter

ADAPTER_WIDTHS = [(33, 8), (65, 1), (7, 3), (9, 3), (64, 8), (8, 8), (1, 1), (3, 7), (8, 33), (1, 65), (8, 64), (4, 12)]


def run_adapter(wi, wo, n_vectors, kinds, seed):
    rng = np.random.default_rng(seed)
    dut = WidthAdapter(wi, wo)
    v, c, r = dut.vector_width, dut.chunk_width, dut.ratio
    vectors = [int.from_bytes(rng.bytes(-(-v // 8) + 1), "little") & ((1 << v) - 1) for _ in range(n_vectors)]
    if dut.splits:
        beats = vectors
        want = [ch for vec in vectors for ch in split_vector(vec, v, c)]
    else:
        beats = []
        for vec in vectors:
            chunks = split_vector(vec, v, c)
            if r * c > v:  # junk above bit V in the last chunk: must be dropped
                chunks[-1] |= int(rng.integers(0, 1 << (r * c - v))) << (c - (r * c - v))
            beats += chunks
        want = vectors
    horizon = 3 * (len(beats) + len(want)) + 20
    in_pat = stall_pattern(rng, kinds[0], horizon)
    out_pat = stall_pattern(rng, kinds[1], horizon)
    accepts, emits, payloads = run(dut, dut.i_stream, dut.o_stream, beats, len(want), in_pat, out_pat)
    assert payloads == want
    params = dict(in_width=wi, out_width=wo)
    assert (accepts, emits) == width_adapter_cycle_reference(params, in_pat, out_pat, len(beats))
    return dut, accepts, emits


@pytest.mark.parametrize("kinds", [("none", "none"), ("random", "random"), ("bursty", "random"), ("random", "bursty")])
@pytest.mark.parametrize("widths", ADAPTER_WIDTHS, ids=lambda w: f"{w[0]}to{w[1]}")
def test_width_adapter_payloads_and_cycles(widths, kinds):
    run_adapter(*widths, n_vectors=7, kinds=kinds, seed=zlib.crc32(repr((widths, kinds)).encode()))


@pytest.mark.parametrize("widths", [(33, 8), (65, 1), (8, 8), (8, 33), (3, 7)], ids=lambda w: f"{w[0]}to{w[1]}")
def test_width_adapter_full_throughput(widths):
    """Never stalled: a chunk every cycle on the chunk side, latency 1."""
    dut, accepts, emits = run_adapter(*widths, n_vectors=5, kinds=("none", "none"), seed=1)
    r = dut.ratio
    if dut.splits:
        assert emits == list(range(1, 1 + 5 * r))
        assert accepts == [r * i for i in range(5)]
    else:
        assert accepts == list(range(5 * r))
        assert emits == [r * (i + 1) for i in range(5)]


def test_width_adapter_split_then_gather_is_identity():
    """Two adapters back to back (N bits -> 3-bit chunks -> N bits) under stalls."""
    rng = np.random.default_rng(5)
    m = Module()
    m.submodules.a = a = WidthAdapter(20, 3)
    m.submodules.b = b = WidthAdapter(3, 20)
    wiring.connect(m, a.o_stream, b.i_stream)
    vectors = [int(v) for v in rng.integers(0, 1 << 20, size=12)]
    _, _, payloads = run(m, a.i_stream, b.o_stream, vectors, 12, stall_pattern(rng, "random", 300), stall_pattern(rng, "random", 300))
    assert payloads == vectors


def test_width_adapter_reset_mid_stream():
    dut = WidthAdapter(10, 3)

    top = ResetTop(dut)

    async def bench(ctx):
        ctx.set(dut.i_stream.payload, 0x3FF)
        ctx.set(dut.i_stream.valid, 1)
        ctx.set(dut.o_stream.ready, 1)
        await ctx.tick()
        await ctx.tick()  # one chunk out, three left
        ctx.set(dut.i_stream.valid, 0)
        ctx.set(top.rst, 1)
        await ctx.tick()
        ctx.set(top.rst, 0)
        assert not ctx.get(dut.o_stream.valid) and ctx.get(dut.i_stream.ready)
        return await drive_stream(ctx, dut.i_stream, dut.o_stream, [0x2A5], 4, [], [])

    accepts, emits, payloads = run_bench(top, bench)
    assert (accepts, emits) == ([0], [1, 2, 3, 4])
    assert payloads == split_vector(0x2A5, 10, 3)


def test_width_adapter_geometry_and_errors():
    a = WidthAdapter(33, 8)
    assert (a.splits, a.vector_width, a.chunk_width, a.ratio) == (True, 33, 8, 5)
    assert len(a.i_stream.payload) == 33 and len(a.o_stream.payload) == 8
    b = WidthAdapter(8, 33)
    assert (b.splits, b.ratio) == (False, 5)
    assert WidthAdapter(4, 4).ratio == 1
    with pytest.raises(ValueError, match="in_width must be a positive integer, not 0"):
        WidthAdapter(0, 3)
    with pytest.raises(ValueError, match="out_width must be a positive integer, not 2.0"):
        WidthAdapter(3, 2.0)


def test_width_adapter_cycle_reference_known_values():
    # split 10 -> 3 (R = 4), sink ready from cycle 2
    acc, emit = width_adapter_cycle_reference(dict(in_width=10, out_width=3), [], [False, False], 2)
    assert acc == [0, 5] and emit == [2, 3, 4, 5, 6, 7, 8, 9]
    # gather 3 -> 10, sink not ready until cycle 6: chunk 0 of vector 1 waits for the output
    acc, emit = width_adapter_cycle_reference(dict(in_width=3, out_width=10), [], [False] * 6, 8)
    assert acc == [0, 1, 2, 3, 6, 7, 8, 9] and emit == [6, 10]


# --------------------------------------------------------------------------------------------
# Argmax

ARGMAX_CASES = [
    # (n, width, signed, with_scores, stage_levels)
    (1, 3, False, False, 1),
    (1, 1, True, True, 1),
    (2, 1, False, False, 1),
    (3, 4, True, True, 1),
    (5, 3, False, True, 2),
    (10, 8, True, False, 1),
    (10, 5, False, False, 3),
    (33, 7, True, True, 2),
    (33, 2, False, False, 1),
    (16, 4, True, False, 4),
]


def run_argmax(n, width, is_signed, with_scores, stage_levels, n_beats, kinds, seed):
    rng = np.random.default_rng(seed)
    dut = Argmax(n, width, signed=is_signed, with_scores=with_scores, stage_levels=stage_levels)
    lo, hi = (-(1 << (width - 1)), (1 << (width - 1)) - 1) if is_signed else (0, (1 << width) - 1)
    rows = []
    for b in range(n_beats):
        if b % 3 == 0:  # few distinct values: many ties, often on the maximum
            choices = rng.integers(lo, hi + 1, size=2)
            row = rng.choice(choices, size=n)
        elif b % 3 == 1:  # the extremes of the range
            row = rng.choice([lo, hi, lo + (hi - lo) // 2], size=n)
        else:
            row = rng.integers(lo, hi + 1, size=n)
        rows.append([int(v) for v in row])
    beats = [sum((v % (1 << width)) << (i * width) for i, v in enumerate(row)) for row in rows]
    horizon = 3 * (n_beats + dut.latency) + 20
    in_pat = stall_pattern(rng, kinds[0], horizon)
    out_pat = stall_pattern(rng, kinds[1], horizon)
    iw = dut.index_width

    accepts, emits, payloads = run(dut, dut.i_stream, dut.o_stream, beats, n_beats, in_pat, out_pat, lambda p: p.as_bits())
    for row, beat, flat in zip(rows, beats, payloads):
        assert flat & ((1 << iw) - 1) == int(np.argmax(row))  # numpy: first occurrence of the max
        if with_scores:
            assert flat >> iw == beat
            assert fields_of(flat >> iw, n, width, is_signed) == row
        else:
            assert flat >> iw == 0
    ref = argmax_cycle_reference(dict(n=n, stage_levels=stage_levels), in_pat, out_pat, n_beats)
    assert (accepts, emits) == ref
    return dut, accepts, emits


@pytest.mark.parametrize("kinds", [("none", "none"), ("random", "random"), ("bursty", "random"), ("random", "bursty")])
@pytest.mark.parametrize("case", ARGMAX_CASES, ids=lambda c: "n{}-w{}-{}{}-sl{}".format(c[0], c[1], "s" if c[2] else "u", "-scores" if c[3] else "", c[4]))
def test_argmax_payloads_and_cycles(case, kinds):
    run_argmax(*case, n_beats=30, kinds=kinds, seed=zlib.crc32(repr((case, kinds)).encode()))


@pytest.mark.parametrize("n, stage_levels, latency", [(1, 1, 1), (2, 1, 1), (3, 1, 2), (10, 1, 4), (10, 2, 2), (10, 3, 2), (33, 1, 6), (33, 6, 1)])
def test_argmax_latency_and_throughput(n, stage_levels, latency):
    dut, accepts, emits = run_argmax(n, 4, False, False, stage_levels, 6, ("none", "none"), seed=3)
    assert dut.latency == latency
    assert accepts == list(range(6))
    assert emits == [c + latency for c in accepts]


def test_argmax_payload_layout_and_errors():
    a = Argmax(10, 5, signed=True, with_scores=True)
    assert a.index_width == 4 and a.levels == 4 and a.latency == 4
    assert len(a.i_stream.payload) == 50 and len(a.o_stream.payload.as_value()) == 54
    assert Argmax(1, 3, signed=False).index_width == 1
    assert len(Argmax(2, 3, signed=False).o_stream.payload.as_value()) == 1
    with pytest.raises(ValueError, match="n must be a positive integer, not 0"):
        Argmax(0, 3, signed=False)
    with pytest.raises(ValueError, match="width must be a positive integer, not -1"):
        Argmax(3, -1, signed=False)
    with pytest.raises(ValueError, match="signed must be True or False, not 1"):
        Argmax(3, 3, signed=1)
    with pytest.raises(ValueError, match="with_scores must be True or False, not None"):
        Argmax(3, 3, signed=False, with_scores=None)
    with pytest.raises(ValueError, match="stage_levels must be a positive integer, not 0"):
        Argmax(3, 3, signed=False, stage_levels=0)


def test_argmax_cycle_reference_known_values():
    # L = 4 (n = 10); the sink refuses cycles 0..6: the first beat waits at the output, the
    # pipeline fills behind it and freezes.
    acc, emit = argmax_cycle_reference(dict(n=10), [], [False] * 7, 6)
    assert acc == [0, 1, 2, 3, 7, 8] and emit == [7, 8, 9, 10, 11, 12]


# --------------------------------------------------------------------------------------------
# Engine chains (the adapters between real engines)


@pytest.mark.parametrize("kinds", [("none", "none"), ("random", "random"), ("bursty", "bursty")])
def test_tiny_network_chain(kinds):
    """Integer vectors (K0*bits bits per beat) -> WidthAdapter -> IntDense (hidden, N1 bits) ->
    WidthAdapter -> FoldedDense (output layer, unsigned popcounts) -> Argmax; the class equals a
    numpy network on integers, every vector, under stalls at both ends."""
    rng = np.random.default_rng(zlib.crc32(repr(kinds).encode()))
    k0, n1, n2, bits = 10, 13, 4, 4
    w1 = rng.random((n1, k0)) < 0.5
    w2 = rng.random((n2, n1)) < 0.5
    xs = rng.integers(-8, 8, size=(10, k0))
    acc1 = xs @ pm1(w1).T
    t1 = np.median(acc1, axis=0).astype(np.int64)
    m = Module()
    m.submodules.split_in = a0 = WidthAdapter(k0 * bits, 3 * bits)
    m.submodules.layer1 = l1 = IntDense(w1, t1, bits=bits, signed=True, pe=3, simd=3)
    m.submodules.split_h = a1 = WidthAdapter(n1, 5)
    m.submodules.layer2 = l2 = FoldedDense(w2, None, pe=2, simd=5)
    m.submodules.argmax = am = Argmax(n2, l2.out_lane_width, signed=False, with_scores=True)
    wiring.connect(m, a0.o_stream, l1.i_stream)
    wiring.connect(m, l1.o_stream, a1.i_stream)
    wiring.connect(m, a1.o_stream, l2.i_stream)
    wiring.connect(m, l2.o_stream, am.i_stream)
    beats = [sum((int(v) % 16) << (4 * i) for i, v in enumerate(x)) for x in xs]
    in_pat = stall_pattern(rng, kinds[0], 600)
    out_pat = stall_pattern(rng, kinds[1], 600)
    _, _, payloads = run(m, a0.i_stream, am.o_stream, beats, len(xs), in_pat, out_pat, lambda p: p.as_bits())
    h = pm1(acc1 >= t1[None, :])
    scores = h @ pm1(w2).T  # dot products 2p - K
    iw = am.index_width
    for v, flat in enumerate(payloads):
        p = fields_of(flat >> iw, n2, l2.out_lane_width, False)
        assert [2 * q - n1 for q in p] == scores[v].tolist()
        assert flat & ((1 << iw) - 1) == int(np.argmax(scores[v]))


def test_int_output_layer_into_argmax():
    """IntDense output layer (signed accumulators) -> Argmax(signed=True)."""
    rng = np.random.default_rng(8)
    k, n, bits = 6, 7, 3
    w = rng.random((n, k)) < 0.5
    m = Module()
    m.submodules.eng = eng = IntDense(w, None, bits=bits, signed=True, pe=3, simd=4)
    m.submodules.argmax = am = Argmax(n, eng.out_lane_width, signed=True)
    wiring.connect(m, eng.o_stream, am.i_stream)
    xs = rng.integers(-4, 4, size=(12, k))
    beats = [b for x in xs for b in eng.encode_input(x)]
    _, _, classes = run(m, eng.i_stream, am.o_stream, beats, len(xs), stall_pattern(rng, "random", 400),
                        stall_pattern(rng, "random", 400), lambda p: int(p.index))
    assert classes == [int(np.argmax(row)) for row in xs @ pm1(w).T]


# --------------------------------------------------------------------------------------------
# Verilog and layering


def _verilog() -> str:
    return (
        verilog.convert(WidthAdapter(33, 8), name="split")
        + verilog.convert(WidthAdapter(8, 33), name="gather")
        + verilog.convert(Argmax(10, 7, signed=True, with_scores=True, stage_levels=2), name="argmax")
    )


def test_verilog_is_deterministic():
    first = assert_verilog_deterministic(_verilog, hash_seed="777")
    for name in ("split", "gather", "argmax"):
        assert f"module {name}" in first


def test_hdl_imports_neither_sim_nor_codegen():
    assert_hdl_layering("bnnfab.hdl.streams")
