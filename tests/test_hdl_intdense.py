"""The folded integer-input engine (:mod:`bnnfab.hdl.intdense`) in Amaranth's simulator.

Every output beat is compared to a naive numpy reference on integers written here (never to the
engine itself), and every accepted-input and emitted-output cycle to
:func:`intdense_cycle_reference`, a transaction-level transcription of the module docstring's
cycle rules. The engine claims the exact timing of :class:`bnnfab.hdl.folded.FoldedDense`; one
test runs both engines side by side under the same stalls and compares their cycles. The driver,
monitor and stall patterns are :mod:`ampsim`'s, shared by the HDL tests.
"""

from __future__ import annotations

import zlib

import numpy as np
import pytest
from amaranth.back import verilog
from amaranth.hdl import Module

from ampsim import ResetTop, assert_hdl_layering, assert_verilog_deterministic, at, beats_of, drive_streams, fields_of, run_bench, stall_pattern
from bnnfab.hdl.folded import FoldedDense
from bnnfab.hdl.intdense import IntDense
from bnnfab.models import Conv2d, Dense, Padding
from naive import conv_dot, pm1

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

pytestmark = pytest.mark.filterwarnings("ignore::amaranth._unused.UnusedMustUse")


# --------------------------------------------------------------------------------------------
# Naive reference


def naive_int_dense(weights, thresholds, xs) -> list[list[int]]:
    """Per vector: the accumulators ``sum x_k w_k`` (output layer) or ``acc >= t`` as 0/1, all in
    Python integers (``t`` may be anywhere in int64)."""
    acc = np.asarray(xs, dtype=np.int64) @ pm1(weights).T  # (B, N); |acc| < 2**40 here
    if thresholds is None:
        return [[int(a) for a in row] for row in acc]
    return [[int(int(a) >= int(t)) for a, t in zip(row, thresholds)] for row in acc]


def value_range(bits: int, is_signed: bool) -> tuple[int, int]:
    return (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if is_signed else (0, 2**bits - 1)


# --------------------------------------------------------------------------------------------
# Cycle reference (the module docstring, executed at transaction level)


def intdense_cycle_reference(params, in_valid_pattern, out_ready_pattern, n_vectors):
    """Cycles of every accepted input beat and every emitted output beat of an ``IntDense``.

    Parameters
    ----------
    params : mapping with ``n``, ``k``, ``pe``, ``simd`` (other keys, e.g. ``bits``, are ignored:
        they do not change the timing)
    in_valid_pattern, out_ready_pattern : sequences of bool indexed by cycle; True past the end.
        The source offers its next beat at cycle ``c`` when ``in_valid_pattern[c]`` (and beats
        remain) and holds it until it transfers; the sink drives ``ready = out_ready_pattern[c]``.
    n_vectors : number of input vectors (``SF`` beats each).

    Returns
    -------
    (accept_cycles, emit_cycles) : lists of ints, ``n_vectors * SF`` and ``n_vectors`` long.
    """
    nf = -(-params["n"] // params["pe"])
    sf = -(-params["k"] // params["simd"])
    total_beats = n_vectors * sf

    # Registers (values before the current edge).
    full = [False, False]
    wb = wi = rb = 0
    fold = 0  # issue position nf * SF + sf, 0 .. NF*SF - 1
    stage_a = stage_b = None  # None: bubble; else True when the entry is its vector's final fold
    ov = False
    offered, sent = False, 0
    accepts, emits = [], []
    c = 0
    budget = len(in_valid_pattern) + len(out_ready_pattern) + 4 * (n_vectors + 1) * (nf * sf + sf + 4)
    while len(emits) < n_vectors:
        assert c <= budget, "cycle reference did not finish"
        if not offered and sent < total_beats and at(in_valid_pattern, c):
            offered = True
        ready = at(out_ready_pattern, c)
        # Combinational values of cycle c.
        in_ready = not full[wb]
        stall = stage_b is True and ov and not ready
        nxt_full = list(full)
        # Loader.
        if offered and in_ready:
            accepts.append(c)
            offered, sent = False, sent + 1
            wi += 1
            if wi == sf:
                nxt_full[wb] = True
                wi, wb = 0, wb ^ 1
        if ov and ready:
            emits.append(c)
        # Core.
        if not stall:
            nxt_ov = True if stage_b is True else (ov and not ready)
            stage_b = stage_a
            if full[rb]:
                stage_a = fold == nf * sf - 1
                fold += 1
                if stage_a:
                    fold = 0
                    nxt_full[rb] = False
                    rb ^= 1
            else:
                stage_a = None
            ov = nxt_ov
        full = nxt_full
        c += 1
    return accepts, emits


# --------------------------------------------------------------------------------------------
# Driver / monitor


async def drive(ctx, duts, beats, n_vectors, in_pat, out_pat, stop_at=None):
    """:func:`ampsim.drive_streams` on every engine in ``duts`` (each its own source of
    ``beats[id(dut)]`` and sink, following the same patterns); returns per engine (accept cycles,
    emit cycles, payloads)."""
    max_cycles = len(in_pat) + len(out_pat) + 20 * (n_vectors + 1) * (max(d.cycles_per_vector + d.sf for d in duts) + 4)
    links = [(dut.i_stream, dut.o_stream, beats[id(dut)]) for dut in duts]
    return await drive_streams(ctx, links, n_vectors, in_pat, out_pat, max_cycles=max_cycles, stop_at=stop_at)


def make_inputs(rng, n_vectors, k, bits, is_signed):
    """Random vectors with the extremes mixed in: all-lo and all-hi vectors drive the all-(+1) and
    all-(-1) channels of :func:`make_layer` to ``acc = ±M``."""
    lo, hi = value_range(bits, is_signed)
    xs = rng.integers(lo, hi + 1, size=(n_vectors, k))
    extremes = [np.full(k, lo), np.full(k, hi)]
    for v in range(min(n_vectors // 2, len(extremes))):
        xs[int(rng.integers(n_vectors))] = extremes[v]
    return xs.astype(np.int64)


def make_layer(rng, n, k, bits, is_signed, output_layer, xs):
    """A random Dense layer. Channel 0 all +1 and channel N-1 all -1 (so |acc| reaches its bound
    ``M`` on the extreme inputs); hidden thresholds sit mostly on accumulators the inputs really
    produce (so ``acc == t`` happens), the rest are constant-channel and int64-edge values."""
    w = rng.random((n, k)) < 0.5
    w[0] = True
    if n > 1:
        w[-1] = False
    if output_layer:
        return Dense(w, None)
    lo, hi = value_range(bits, is_signed)
    big = k * max(-lo, hi)
    acc = xs @ pm1(w).T
    t = acc[rng.integers(len(xs), size=n), np.arange(n)] + rng.integers(-1, 2, size=n)
    specials = [-big, big, -big - 1, big + 1, -3 * big - 5, 3 * big + 5, INT64_MIN, INT64_MAX, 0, 1, -1]
    for i in range(n):
        if rng.random() < 0.25:
            t[i] = specials[rng.integers(len(specials))]
    return Dense(w, t.astype(np.int64))


def simulate(duts, beats, n_vectors, in_pat, out_pat):
    """:func:`drive` in a simulation of ``duts`` side by side."""
    if len(duts) == 1:
        top = duts[0]
    else:
        top = Module()
        for i, d in enumerate(duts):
            top.submodules[f"dut{i}"] = d
    return run_bench(top, lambda ctx: drive(ctx, duts, beats, n_vectors, in_pat, out_pat))


def run_case(n, k, pe, simd, bits, is_signed, output_layer, n_vectors, in_kind, out_kind, seed):
    rng = np.random.default_rng(seed)
    xs = make_inputs(rng, n_vectors, k, bits, is_signed)
    layer = make_layer(rng, n, k, bits, is_signed, output_layer, xs)
    dut = IntDense.from_layer(layer, bits=bits, signed=is_signed, pe=pe, simd=simd)
    beats = [b for x in xs for b in beats_of(x, bits, simd, rng)]
    horizon = 3 * n_vectors * (dut.cycles_per_vector + dut.sf + 4)
    in_pat = stall_pattern(rng, in_kind, horizon)
    out_pat = stall_pattern(rng, out_kind, horizon)
    [(accepts, emits, payloads)] = simulate([dut], {id(dut): beats}, n_vectors, in_pat, out_pat)

    lo, hi = value_range(bits, is_signed)
    big = k * max(-lo, hi)
    width = big.bit_length() + 1 if output_layer else 1
    assert dut.out_lane_width == width
    want = naive_int_dense(layer.weights, None if output_layer else layer.thresholds.tolist(), xs)
    assert len(payloads) == n_vectors
    for v, payload in enumerate(payloads):
        assert fields_of(payload, n, width, output_layer) == want[v], f"vector {v}"
        assert payload >> (n * width) == 0

    params = dict(n=n, k=k, pe=pe, simd=simd, bits=bits)
    ref_accepts, ref_emits = intdense_cycle_reference(params, in_pat, out_pat, n_vectors)
    assert accepts == ref_accepts
    assert emits == ref_emits
    return dut, xs, accepts, emits


# --------------------------------------------------------------------------------------------
# Tests

# (N, K, PE, SIMD, bits, signed, output layer, vectors)
CASES = [
    (1, 1, 1, 1, 2, False, False, 10),
    (5, 7, 2, 3, 4, True, False, 6),
    (5, 7, 3, 2, 8, False, True, 6),
    (33, 64, 8, 8, 8, False, False, 3),
    (33, 65, 8, 8, 8, True, True, 3),
    (5, 65, 3, 8, 2, True, False, 4),
    (1, 64, 1, 3, 4, False, True, 4),
    (33, 7, 8, 1, 2, False, True, 3),
    (5, 1, 2, 8, 8, True, False, 8),
    (1, 7, 1, 8, 2, True, True, 8),
]


@pytest.mark.parametrize("stalls", [("none", "none"), ("random", "random"), ("bursty", "random")])
@pytest.mark.parametrize(
    "case", CASES, ids=lambda c: "N{}-K{}-PE{}-SIMD{}-b{}{}-{}".format(*c[:5], "s" if c[5] else "u", "out" if c[6] else "hid")
)
def test_outputs_and_cycles(case, stalls):
    n, k, pe, simd, bits, is_signed, output_layer, n_vectors = case
    seed = zlib.crc32(repr((case, stalls)).encode())
    run_case(n, k, pe, simd, bits, is_signed, output_layer, n_vectors, *stalls, seed=seed)


def test_random_configurations():
    """A seeded sweep over the grid: K, N, PE, SIMD, bits, signedness, layer kind, stall kinds."""
    rng = np.random.default_rng(2027)
    done = 0
    while done < 60:
        k = int(rng.choice([1, 7, 64, 65]))
        n = int(rng.choice([1, 5, 33]))
        pe, simd = (int(v) for v in rng.choice([1, 2, 3, 8], size=2))
        cycles = -(-n // pe) * -(-k // simd)
        if cycles > 400:
            continue
        bits = int(rng.choice([2, 4, 8]))
        n_vectors = int(max(2, min(6, 900 // (cycles + 10))))
        kinds = [str(v) for v in rng.choice(["none", "random", "bursty"], size=2)]
        run_case(n, k, pe, simd, bits, bool(rng.random() < 0.5), bool(rng.random() < 0.4), n_vectors,
                 *kinds, seed=int(rng.integers(2**32)))
        done += 1


@pytest.mark.parametrize("n, k, pe, simd", [(5, 7, 2, 3), (1, 1, 1, 1), (33, 65, 8, 8)])
def test_steady_state_is_nf_times_sf(n, k, pe, simd):
    dut, _, accepts, emits = run_case(n, k, pe, simd, 8, False, False, 5, "none", "none", seed=9)
    nf, sf = dut.nf, dut.sf
    assert emits[0] == nf * sf + sf + 2
    assert np.diff(emits).tolist() == [nf * sf] * 4
    assert emits[0] - accepts[sf - 1] == nf * sf + 3


@pytest.mark.parametrize("n, k, pe, simd, kinds", [
    (5, 7, 2, 3, ("random", "random")),
    (33, 65, 8, 8, ("bursty", "random")),
    (1, 7, 1, 2, ("random", "bursty")),
])
def test_timing_is_identical_to_folded_dense(n, k, pe, simd, kinds):
    """Same N, K, PE, SIMD and the same stalls: IntDense and FoldedDense accept and emit on the
    same cycles (RTL against RTL, beside each one's reference)."""
    rng = np.random.default_rng(zlib.crc32(repr((n, k, pe, simd, kinds)).encode()))
    n_vectors = 5
    w = rng.random((n, k)) < 0.5
    int_dut = IntDense(w, rng.integers(-20, 20, size=n), bits=4, signed=True, pe=pe, simd=simd)
    bin_dut = FoldedDense(w, rng.integers(0, k + 1, size=n), pe=pe, simd=simd)
    beats = {
        id(int_dut): [b for _ in range(n_vectors) for b in beats_of(rng.integers(-8, 8, size=k), 4, simd, rng)],
        id(bin_dut): [int(v) for v in rng.integers(0, 1 << simd, size=n_vectors * bin_dut.sf)],
    }
    horizon = 3 * n_vectors * (int_dut.cycles_per_vector + int_dut.sf + 4)
    in_pat = stall_pattern(rng, kinds[0], horizon)
    out_pat = stall_pattern(rng, kinds[1], horizon)
    (acc_i, emit_i, _), (acc_b, emit_b, _) = simulate([int_dut, bin_dut], beats, n_vectors, in_pat, out_pat)
    assert (acc_i, emit_i) == (acc_b, emit_b)
    assert (acc_i, emit_i) == intdense_cycle_reference(dict(n=n, k=k, pe=pe, simd=simd), in_pat, out_pat, n_vectors)


def test_reset_mid_stream():
    """Synchronous active-high reset drops every beat in flight; the engine then behaves as fresh."""
    n, k, pe, simd, bits = 5, 7, 2, 3, 4
    rng = np.random.default_rng(4)
    xs1 = rng.integers(0, 16, size=(4, k))
    xs2 = rng.integers(0, 16, size=(4, k))
    layer = make_layer(rng, n, k, bits, False, False, xs2)
    dut = IntDense.from_layer(layer, bits=bits, signed=False, pe=pe, simd=simd)

    top = ResetTop(dut)
    beats1 = [b for x in xs1 for b in beats_of(x, bits, simd, rng)]
    beats2 = [b for x in xs2 for b in beats_of(x, bits, simd, rng)]
    pat2_in = stall_pattern(rng, "random", 200)
    pat2_out = stall_pattern(rng, "random", 200)

    async def bench(ctx):
        [before] = await drive(ctx, [dut], {id(dut): beats1}, 4, [True] * 200, [False] * 200, stop_at=25)
        assert ctx.get(dut.o_stream.valid) and not ctx.get(dut.i_stream.ready)
        ctx.set(top.rst, 1)
        await ctx.tick()
        ctx.set(top.rst, 0)
        assert not ctx.get(dut.o_stream.valid) and ctx.get(dut.i_stream.ready)
        [after] = await drive(ctx, [dut], {id(dut): beats2}, 4, pat2_in, pat2_out)
        return before, after

    before, after = run_bench(top, bench)

    params = dict(n=n, k=k, pe=pe, simd=simd)
    acc1, emit1, _ = before
    ref_acc1, _ = intdense_cycle_reference(params, [True] * 200, [False] * 25, 4)
    assert acc1 == [c for c in ref_acc1 if c < 25] and emit1 == []
    acc2, emit2, payloads2 = after
    assert (acc2, emit2) == intdense_cycle_reference(params, pat2_in, pat2_out, 4)
    want = naive_int_dense(layer.weights, layer.thresholds.tolist(), xs2)
    assert [fields_of(p, n, 1, False) for p in payloads2] == want


@pytest.mark.parametrize("padding", list(Padding))
def test_conv2d_as_matrix_vector_over_patches(padding):
    """A padded integer conv: the test builds each output position's (ky, kx, c) patch with the
    padding's value in padded taps; the engine's outputs equal a naive sliding-window conv."""
    rng = np.random.default_rng(zlib.crc32(padding.value.encode()))
    h, w_, c, nout, kh, kw = 4, 3, 2, 3, 3, 2
    pads = (1, 1, 0, 1)
    bits = 4
    x = rng.integers(-8, 8, size=(h, w_, c))
    weights = rng.random((nout, kh, kw, c)) < 0.5
    probe = Conv2d(weights, None, pads=pads, padding=padding)
    ho, wo, _ = probe.out_shape((h, w_, c))
    # patches (ky, kx, c)-flattened from the map padded with 0 / +1 / -1
    fill = {Padding.ZERO: 0, Padding.PLUS_ONE: 1, Padding.MINUS_ONE: -1}[padding]
    xp = np.full((h + pads[0] + pads[2], w_ + pads[1] + pads[3], c), fill, dtype=np.int64)
    xp[pads[0] : pads[0] + h, pads[1] : pads[1] + w_] = x
    patches = np.array([xp[oy : oy + kh, ox : ox + kw].reshape(-1) for oy in range(ho) for ox in range(wo)])
    dots = conv_dot(x[None], probe).reshape(ho * wo, nout)  # the naive sliding-window conv
    t = dots[rng.integers(len(dots), size=nout), np.arange(nout)]
    layer = Conv2d(weights, t, pads=pads, padding=padding)
    dut = IntDense.from_layer(layer, bits=bits, signed=True, pe=2, simd=5)
    assert dut.k == kh * kw * c
    beats = [b for p in patches for b in beats_of(p, bits, 5, rng)]
    [(_, _, payloads)] = simulate([dut], {id(dut): beats}, len(patches), [], [])
    got = np.array([fields_of(p, nout, 1, False) for p in payloads])
    assert got.tolist() == (dots >= t[None, :]).astype(int).tolist()


def test_conv2d_padding_value_must_be_representable():
    w = np.ones((2, 3, 3, 1), bool)
    minus = Conv2d(w, np.zeros(2, np.int64), pads=1, padding=Padding.MINUS_ONE, name="c0")
    with pytest.raises(ValueError, match=r"padding '-1' feeds the value -1 .* unsigned 8-bit input range \[0, 255\]"):
        IntDense.from_layer(minus, bits=8, signed=False, pe=1, simd=1)
    plus = Conv2d(w, np.zeros(2, np.int64), pads=1, padding=Padding.PLUS_ONE)
    with pytest.raises(ValueError, match=r"value 1 into padded taps, outside the signed 1-bit input range \[-1, 0\]"):
        IntDense.from_layer(plus, bits=1, signed=True, pe=1, simd=1)
    assert IntDense.from_layer(minus, bits=2, signed=True, pe=1, simd=1).k == 9
    assert IntDense.from_layer(plus, bits=8, signed=False, pe=1, simd=1).k == 9
    unpadded = Conv2d(w, np.zeros(2, np.int64), padding=Padding.MINUS_ONE)
    assert IntDense.from_layer(unpadded, bits=8, signed=False, pe=1, simd=1).k == 9
    with pytest.raises(ValueError, match="takes a Dense or Conv2d layer, not str"):
        IntDense.from_layer("dense", bits=8, signed=False, pe=1, simd=1)


def test_numbers_widths_and_threshold_clamping():
    k = 9
    w = np.zeros((6, k), dtype=bool)
    t = [0, -(10**30), 10**30, INT64_MIN, INT64_MAX, -5]
    u8 = IntDense(w, np.array(t, dtype=object), bits=8, signed=False, pe=4, simd=4)
    big = 9 * 255
    assert (u8.element_range, u8.max_term, u8.max_abs_acc) == ((0, 255), 255, big)
    assert u8.acc_width == big.bit_length() + 1 == 13
    assert u8.stored_thresholds() == [0, -big, big + 1, -big, big + 1, -5]
    assert u8.threshold_width == (big + 1).bit_length() + 1
    wt = u8.threshold_width
    rows = u8.threshold_rows()
    assert fields_of(rows[0], 4, wt, True) == [0, -big, big + 1, -big]
    assert fields_of(rows[1], 4, wt, True) == [big + 1, -5, 0, 0]  # pad lanes hold 0
    s4 = IntDense(w, None, bits=4, signed=True, pe=1, simd=1)
    assert (s4.element_range, s4.max_abs_acc, s4.acc_width) == ((-8, 7), 72, 8)
    assert s4.out_lane_width == 8 and len(s4.o_stream.payload) == 6 * 8
    assert len(s4.i_stream.payload) == 4 and s4.in_width == 4
    s1 = IntDense(w, None, bits=1, signed=True, pe=1, simd=3)
    assert (s1.element_range, s1.max_abs_acc, s1.acc_width) == ((-1, 0), 9, 5)


def test_memory_image_and_stream_helpers():
    rng = np.random.default_rng(12)
    n, k, pe, simd, bits = 5, 7, 2, 3, 4
    w = rng.random((n, k)) < 0.5
    dut = IntDense(w, None, bits=bits, signed=True, pe=pe, simd=simd)
    rows = dut.weight_rows()
    assert len(rows) == dut.nf * dut.sf == 9
    for f in range(dut.nf):
        for s in range(dut.sf):
            for lane in range(pe):
                for b in range(simd):
                    ch, e = f * pe + lane, s * simd + b
                    bit = (rows[f * dut.sf + s] >> (lane * simd + b)) & 1
                    assert bit == (int(w[ch, e]) if ch < n and e < k else 1)
    x = rng.integers(-8, 8, size=k)
    assert dut.encode_input(x) == beats_of(x, bits, simd, None)
    with pytest.raises(ValueError, match=r"input element 2 must be an integer in \[-8, 7\], not 8"):
        dut.encode_input([0, 0, 8, 0, 0, 0, 0])
    with pytest.raises(ValueError, match="must have K=7 elements, got 3"):
        dut.encode_input([0, 0, 0])
    a = dut.acc_width
    values = [-28, 28, 0, -1, 5]
    payload = sum((v % (1 << a)) << (a * i) for i, v in enumerate(values))
    assert dut.decode_output(payload).tolist() == values
    hidden = IntDense(w, np.zeros(n, np.int64), bits=bits, signed=True, pe=pe, simd=simd)
    assert hidden.decode_output(0b10110).tolist() == [False, True, True, False, True]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(bits=0), "bits must be a positive integer, not 0"),
        (dict(bits=True), "bits must be a positive integer, not True"),
        (dict(signed=1), "signed must be True or False, not 1"),
        (dict(pe=0), "pe must be a positive integer, not 0"),
        (dict(simd=2.5), "simd must be a positive integer, not 2.5"),
        (dict(weights=np.ones(3, bool)), r"weights must be a non-empty \(N, K\) array, got shape \(3,\)"),
        (dict(weights=np.full((2, 3), 2)), "weights must be booleans"),
        (dict(thresholds=[1, 2, 3]), r"thresholds must have shape \(2,\)"),
        (dict(thresholds=[0.5, 1.0]), r"thresholds must be integers \(on the accumulator\), not 0.5"),
        (dict(thresholds=np.array([True, False])), "not True"),
    ],
)
def test_errors_name_the_rule_and_value(kwargs, message):
    args = dict(weights=np.ones((2, 3), bool), thresholds=None, bits=8, signed=False, pe=1, simd=1)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        IntDense(**args)


def _verilog(seed: int = 5) -> str:
    rng = np.random.default_rng(seed)
    w = rng.random((33, 65)) < 0.5
    hidden = IntDense(w, rng.integers(-900, 900, size=33), bits=8, signed=False, pe=8, simd=8)
    out = IntDense(w[:10], None, bits=4, signed=True, pe=3, simd=5)
    return verilog.convert(hidden, name="int_dense") + verilog.convert(out, name="int_dense_out")


def test_verilog_is_deterministic():
    first = assert_verilog_deterministic(_verilog, hash_seed="4242")
    assert "module int_dense" in first and "module int_dense_out" in first


def test_hdl_imports_neither_sim_nor_codegen():
    assert_hdl_layering("bnnfab.hdl.intdense")


def test_cycle_reference_known_values():
    """Hand-worked: NF = SF = 3, the numbers of the docstring's consequences."""
    p = dict(n=5, k=7, pe=2, simd=3)
    acc, emit = intdense_cycle_reference(p, [], [], 3)
    assert acc == [0, 1, 2, 3, 4, 5, 12, 13, 14]
    assert emit == [14, 23, 32]  # NF*SF + SF + 2 = 14, then every NF*SF = 9
    acc, emit = intdense_cycle_reference(p, [], [False] * 30, 3)
    assert emit[:2] == [30, 31]
    acc, emit = intdense_cycle_reference(p, [False] * 5, [], 1)
    assert acc == [5, 6, 7] and emit == [7 + 9 + 3]
