"""The folded dense engine (:mod:`bnnfab.hdl.folded`) in Amaranth's simulator.

Every output beat is compared to a naive numpy reference on ±1 integers written here (never to
the engine itself), and every accepted-input and emitted-output cycle to
:func:`folded_cycle_reference`, a transaction-level model of the cycle behaviour that the
module docstring states. Valid and ready are stalled independently by per-cycle patterns (the
driver, monitor and patterns are :mod:`ampsim`'s, shared by the HDL tests).
"""

from __future__ import annotations

import zlib

import numpy as np
import pytest
from amaranth.back import verilog

from ampsim import ResetTop, assert_hdl_layering, assert_verilog_deterministic, at, beats_of, drive_stream, fields_of, run_bench, stall_pattern
from bnnfab.hdl.folded import FoldedDense
from bnnfab.models import Conv2d, Dense, Padding
from naive import pm1

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

# Several tests build engines only to inspect them (or to see the constructor refuse them).
pytestmark = pytest.mark.filterwarnings("ignore::amaranth._unused.UnusedMustUse")


# --------------------------------------------------------------------------------------------
# Naive reference on ±1 integers


def naive_dense(weights: np.ndarray, t: np.ndarray | None, xs: np.ndarray) -> np.ndarray:
    """Hidden layer: ``dot >= t`` (IR semantics, dot domain). Output layer: popcounts
    ``p = (dot + K) / 2``."""
    k = weights.shape[1]
    dot = pm1(xs) @ pm1(weights).T  # (B, N)
    if t is None:
        return (dot + k) // 2
    # Compare in Python integers: t may sit anywhere in int64.
    return np.array([[int(d) >= int(tt) for d, tt in zip(row, t)] for row in dot], dtype=bool)


# --------------------------------------------------------------------------------------------
# Cycle reference (the module docstring, executed at transaction level)


def folded_cycle_reference(params, in_valid_pattern, out_ready_pattern, n_vectors):
    """Cycles of every accepted input beat and every emitted output beat.

    Parameters
    ----------
    params : mapping with ``n``, ``k``, ``pe``, ``simd``
    in_valid_pattern, out_ready_pattern : sequences of bool, indexed by cycle; True past the end.
        The source offers its next beat at cycle ``c`` when ``in_valid_pattern[c]`` (and beats
        remain), then holds it valid until it transfers (stream rules). The sink drives
        ``ready = out_ready_pattern[c]``.
    n_vectors : number of input vectors (``SF`` beats each).

    Returns
    -------
    (accept_cycles, emit_cycles) : lists of ints, ``n_vectors * SF`` and ``n_vectors`` long.
    """
    nf = -(-params["n"] // params["pe"])
    sf = -(-params["k"] // params["simd"])

    full = [False, False]
    wb = wi = rb = f_n = f_s = 0
    a = b = None  # pipeline entries: None (bubble) or the entry's "final" flag
    ov = False
    holding, sent = False, 0
    accepts, emits = [], []
    limit = (len(in_valid_pattern) + len(out_ready_pattern) + 10) + 4 * n_vectors * (nf * sf + sf + 4)
    c = 0
    while len(emits) < n_vectors:
        if c > limit:
            raise AssertionError("cycle reference did not finish")
        if not holding and sent < n_vectors * sf and at(in_valid_pattern, c):
            holding = True
        out_ready = at(out_ready_pattern, c)
        in_ready = not full[wb]
        stall = b is True and ov and not out_ready
        set_bank = clr_bank = None
        # 1. loader
        if holding and in_ready:
            accepts.append(c)
            holding, sent = False, sent + 1
            if wi == sf - 1:
                wi, set_bank, wb = 0, wb, wb ^ 1
            else:
                wi += 1
        # output transfer (ov and ready)
        if ov and out_ready:
            emits.append(c)
        # 2. core
        if not stall:
            new_ov = True if b is True else (False if out_ready else ov)
            b = a
            if full[rb]:
                final = f_n == nf - 1 and f_s == sf - 1
                a = final
                if final:
                    f_n = f_s = 0
                    clr_bank, rb = rb, rb ^ 1
                elif f_s == sf - 1:
                    f_n, f_s = f_n + 1, 0
                else:
                    f_s += 1
            else:
                a = None
            ov = new_ov
        if set_bank is not None:
            full[set_bank] = True
        if clr_bank is not None:
            assert clr_bank != set_bank
            full[clr_bank] = False
        c += 1
    return accepts, emits


# --------------------------------------------------------------------------------------------
# Driver / monitor


async def drive(ctx, dut, beats, n_vectors, in_pat, out_pat, stop_at=None):
    """:func:`ampsim.drive_stream` on the engine's streams; returns (accept cycles, emit cycles,
    output payloads). Stops when ``n_vectors`` outputs arrived, or before cycle ``stop_at``."""
    max_cycles = len(in_pat) + len(out_pat) + 20 * n_vectors * (dut.cycles_per_vector + dut.sf + 4)
    return await drive_stream(ctx, dut.i_stream, dut.o_stream, beats, n_vectors, in_pat, out_pat,
                              max_cycles=max_cycles, stop_at=stop_at)


def make_layer(rng, n, k, output_layer):
    """A random Dense layer; hidden thresholds mix ordinary values with every constant kind."""
    w = rng.random((n, k)) < 0.5
    if output_layer:
        return Dense(w, None)
    t = rng.integers(-k - 1, k + 2, size=n)
    specials = [-k, k, -k - 1, k + 1, -3 * k - 5, 3 * k + 5, INT64_MIN, INT64_MAX, 0, 1, -1]
    for i in range(n):
        if rng.random() < 0.3:
            t[i] = specials[rng.integers(len(specials))]
    return Dense(w, t.astype(np.int64))


def run_case(n, k, pe, simd, output_layer, n_vectors, in_kind, out_kind, seed):
    rng = np.random.default_rng(seed)
    layer = make_layer(rng, n, k, output_layer)
    dut = FoldedDense.from_layer(layer, pe=pe, simd=simd)
    xs = rng.random((n_vectors, k)) < 0.5
    beats = [b for x in xs for b in beats_of(x, 1, simd, rng)]
    horizon = 3 * n_vectors * (dut.cycles_per_vector + dut.sf + 4)
    in_pat = stall_pattern(rng, in_kind, horizon)
    out_pat = stall_pattern(rng, out_kind, horizon)
    accepts, emits, payloads = run_bench(dut, lambda ctx: drive(ctx, dut, beats, n_vectors, in_pat, out_pat))

    width = k.bit_length() if output_layer else 1
    want = naive_dense(layer.weights, layer.thresholds, xs)
    assert len(payloads) == n_vectors
    for v, payload in enumerate(payloads):
        got = fields_of(payload, n, width)
        assert got == [int(e) for e in want[v]], f"vector {v}"
        assert payload >> (n * width) == 0

    params = dict(n=n, k=k, pe=pe, simd=simd)
    ref_accepts, ref_emits = folded_cycle_reference(params, in_pat, out_pat, n_vectors)
    assert accepts == ref_accepts
    assert emits == ref_emits
    return dut, accepts, emits


# --------------------------------------------------------------------------------------------
# Tests

# (N, K, PE, SIMD, output layer, vectors): K and N mostly not multiples of SIMD and PE.
CASES = [
    (1, 1, 1, 1, False, 12),
    (5, 7, 2, 3, False, 6),
    (33, 63, 8, 8, False, 3),
    (5, 64, 3, 32, False, 8),
    (33, 65, 32, 8, False, 4),
    (33, 130, 32, 32, False, 5),
    (5, 130, 1, 2, False, 2),
    (33, 7, 3, 1, False, 3),
    (1, 63, 1, 32, False, 10),
    (5, 65, 8, 1, False, 3),
    (5, 1, 2, 32, False, 10),
    (1, 1, 1, 1, True, 12),
    (5, 7, 2, 2, True, 6),
    (33, 130, 8, 32, True, 3),
    (33, 65, 32, 3, True, 3),
    (5, 64, 32, 8, True, 5),
]


@pytest.mark.parametrize("stalls", [("none", "none"), ("random", "random"), ("bursty", "random"), ("random", "bursty")])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "N{}-K{}-PE{}-SIMD{}-{}".format(*c[:4], "out" if c[4] else "hid"))
def test_outputs_and_cycles(case, stalls):
    n, k, pe, simd, output_layer, n_vectors = case
    seed = zlib.crc32(repr((case, stalls)).encode())
    run_case(n, k, pe, simd, output_layer, n_vectors, *stalls, seed=seed)


def test_random_configurations():
    """A seeded sweep over the whole grid (K, N, PE, SIMD, layer kind, stall kinds)."""
    rng = np.random.default_rng(2026)
    done = 0
    while done < 40:
        k = int(rng.choice([1, 7, 63, 64, 65, 130]))
        n = int(rng.choice([1, 5, 33]))
        pe, simd = (int(v) for v in rng.choice([1, 2, 3, 8, 32], size=2))
        cycles = -(-n // pe) * -(-k // simd)
        if cycles > 400:
            continue
        n_vectors = int(max(2, min(8, 1200 // (cycles + 10))))
        kinds = [str(v) for v in rng.choice(["none", "random", "bursty"], size=2)]
        run_case(n, k, pe, simd, bool(rng.random() < 0.3), n_vectors, *kinds, seed=int(rng.integers(2**32)))
        done += 1


@pytest.mark.parametrize("n, k, pe, simd", [(5, 7, 2, 3), (1, 1, 1, 1), (33, 65, 8, 8), (3, 64, 1, 32)])
def test_steady_state_is_nf_times_sf(n, k, pe, simd):
    """Never stalled: the RTL emits one vector every NF*SF cycles after the documented fill."""
    dut, accepts, emits = run_case(n, k, pe, simd, False, 6, "none", "none", seed=7)
    nf, sf = -(-n // pe), -(-k // simd)
    assert emits[0] == nf * sf + sf + 2
    assert np.diff(emits).tolist() == [nf * sf] * 5
    # Latency from the last beat of a vector into an idle engine.
    assert emits[0] - accepts[sf - 1] == nf * sf + 3


def test_reset_mid_stream():
    """Synchronous active-high reset of the sync domain drops every beat in flight; the engine
    then behaves as fresh (cycle 0 = first edge after reset is released)."""
    n, k, pe, simd = 5, 7, 2, 3
    rng = np.random.default_rng(3)
    layer = make_layer(rng, n, k, False)
    dut = FoldedDense.from_layer(layer, pe=pe, simd=simd)

    top = ResetTop(dut)
    xs1 = rng.random((4, k)) < 0.5
    xs2 = rng.random((4, k)) < 0.5
    beats1 = [b for x in xs1 for b in beats_of(x, 1, simd, rng)]
    beats2 = [b for x in xs2 for b in beats_of(x, 1, simd, rng)]
    pat1_in, pat1_out = [True] * 200, [False] * 200  # fill both banks and the output register
    pat2_in = stall_pattern(rng, "random", 200)
    pat2_out = stall_pattern(rng, "random", 200)

    async def bench(ctx):
        before = await drive(ctx, dut, beats1, 4, pat1_in, pat1_out, stop_at=25)
        assert ctx.get(dut.o_stream.valid) and not ctx.get(dut.i_stream.ready)
        ctx.set(top.rst, 1)
        await ctx.tick()
        ctx.set(top.rst, 0)
        assert not ctx.get(dut.o_stream.valid) and ctx.get(dut.i_stream.ready)
        return before, await drive(ctx, dut, beats2, 4, pat2_in, pat2_out)

    before, after = run_bench(top, bench)

    params = dict(n=n, k=k, pe=pe, simd=simd)
    acc1, emit1, _ = before
    ref_acc1, ref_emit1 = folded_cycle_reference(params, pat1_in, [False] * 25, 4)
    assert acc1 == [c for c in ref_acc1 if c < 25] and emit1 == [c for c in ref_emit1 if c < 25] == []
    acc2, emit2, payloads2 = after
    ref_acc2, ref_emit2 = folded_cycle_reference(params, pat2_in, pat2_out, 4)
    assert (acc2, emit2) == (ref_acc2, ref_emit2)
    want = naive_dense(layer.weights, layer.thresholds, xs2)
    assert [fields_of(p, n, 1) for p in payloads2] == [[int(e) for e in row] for row in want]


def test_popcount_thresholds_constructor_and_clamping():
    """Direct popcount-domain thresholds: T <= 0 fires always, T > K never, any integer size."""
    k = 9
    w = np.zeros((6, k), dtype=bool)
    t_pop = [0, -5, k + 1, 10**30, -(10**30), k]
    dut = FoldedDense(w, np.array(t_pop, dtype=object), pe=4, simd=4)
    assert dut.stored_thresholds() == [0, 0, k + 1, k + 1, 0, k]
    assert dut.threshold_width == (k + 1).bit_length()
    rows = dut.threshold_rows()
    wt = dut.threshold_width
    assert fields_of(rows[0], 4, wt) == [0, 0, k + 1, k + 1]
    assert fields_of(rows[1], 4, wt) == [0, k, 0, 0]  # pad lanes hold 0


def test_from_layer_threshold_conversion_is_exact_at_int64_edges():
    k = 5
    layer = Dense(np.ones((4, k), dtype=bool), np.array([INT64_MAX, INT64_MIN, -2, 3], dtype=np.int64))
    dut = FoldedDense.from_layer(layer, pe=1, simd=1)
    # T = ceil((t + K) / 2), computed without int64 wrap-around.
    assert dut.stored_thresholds() == [k + 1, 0, 2, 4]


def test_weight_memory_image_and_stream_helpers():
    rng = np.random.default_rng(11)
    n, k, pe, simd = 5, 7, 2, 3
    w = rng.random((n, k)) < 0.5
    dut = FoldedDense(w, None, pe=pe, simd=simd)
    rows = dut.weight_rows()
    assert len(rows) == dut.nf * dut.sf == 9
    for f in range(dut.nf):
        for s in range(dut.sf):
            row = rows[f * dut.sf + s]
            for lane in range(pe):
                for b in range(simd):
                    ch, e = f * pe + lane, s * simd + b
                    bit = (row >> (lane * simd + b)) & 1
                    assert bit == (int(w[ch, e]) if ch < n and e < k else 1)
    x = rng.random(k) < 0.5
    assert dut.encode_input(x) == beats_of(x, 1, simd, None)
    payload = sum(v << (3 * i) for i, v in enumerate([0, 7, 3, 1, 5]))
    assert dut.decode_output(payload).tolist() == [0, 7, 3, 1, 5]
    assert dut.out_lane_width == dut.acc_width == 3


def test_ports_and_geometry():
    dut = FoldedDense(np.ones((33, 65), dtype=bool), np.zeros(33, dtype=np.int64), pe=8, simd=3)
    assert (dut.nf, dut.sf, dut.cycles_per_vector) == (5, 22, 110)
    assert len(dut.i_stream.payload) == 3 and len(dut.o_stream.payload) == 33
    out = FoldedDense(np.ones((33, 65), dtype=bool), None, pe=8, simd=3)
    assert out.output_layer and len(out.o_stream.payload) == 33 * 7


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(weights=np.ones((2, 3), bool), pe=0, simd=1), "pe must be a positive integer, not 0"),
        (dict(weights=np.ones((2, 3), bool), pe=1, simd=True), "simd must be a positive integer, not True"),
        (dict(weights=np.ones((2, 3), bool), pe=1.5, simd=1), "pe must be a positive integer, not 1.5"),
        (dict(weights=np.ones(3, bool), pe=1, simd=1), r"weights must be a non-empty \(N, K\) array, got shape \(3,\)"),
        (dict(weights=np.full((2, 3), 2), pe=1, simd=1), "weights must be booleans"),
        (dict(weights=np.ones((2, 3), bool), thresholds=[1, 2, 3], pe=1, simd=1), r"thresholds must have shape \(2,\)"),
        (dict(weights=np.ones((2, 3), bool), thresholds=[0.5, 1.0], pe=1, simd=1), "thresholds must be integers .*, not 0.5"),
        (dict(weights=np.ones((2, 3), bool), thresholds=np.array([1, 0.5], object), pe=1, simd=1), "not 0.5"),
        (dict(weights=np.ones((2, 3), bool), thresholds=np.array([True, False]), pe=1, simd=1), "not True"),
    ],
)
def test_errors_name_the_rule_and_value(kwargs, message):
    with pytest.raises(ValueError, match=message):
        FoldedDense(**kwargs)


def test_from_layer_zero_padded_conv_needs_the_map_shape():
    conv = Conv2d(np.ones((2, 3, 3, 1), bool), np.zeros(2, np.int64), pads=(1, 1, 1, 1), padding=Padding.ZERO)
    with pytest.raises(ValueError, match="zero padding varies the number of valid taps.*in_shape"):
        FoldedDense.from_layer(conv, pe=1, simd=1)
    dut = FoldedDense.from_layer(conv, pe=1, simd=4, in_shape=(4, 5, 1))
    # all-ones weights: the class is the number of padded taps (corner 5, edge 3, interior 0)
    assert dut.threshold_classes == 3 and len(dut.position_classes) == 20
    ok = Conv2d(np.ones((2, 3, 3, 1), bool), np.zeros(2, np.int64), pads=(1, 1, 1, 1), padding=Padding.MINUS_ONE)
    assert FoldedDense.from_layer(ok, pe=1, simd=4).k == 9
    with pytest.raises(ValueError, match=r"thresholds must have shape \(2, 2\), a row of N per position class"):
        FoldedDense(np.ones((2, 3), bool), [1, 2], pe=1, simd=1, position_classes=[0, 1, 0])
    with pytest.raises(ValueError, match="position_classes must be a non-empty 1-D array"):
        FoldedDense(np.ones((2, 3), bool), [[1, 2]], pe=1, simd=1, position_classes=[[0]])


def naive_zero_padded_conv(conv: Conv2d, x: np.ndarray) -> np.ndarray:
    """(H, W, C) bools -> (Ho*Wo, N) outputs: ``dot over the valid taps >= t``, ±1 integers with
    padded taps 0 (the IR's zero padding, written independently of position_thresholds)."""
    h, w, c = x.shape
    kh, kw = conv.kernel
    sh, sw = conv.stride
    top, left, bottom, right = conv.pads
    xp = np.zeros((h + top + bottom, w + left + right, c), np.int64)
    xp[top : top + h, left : left + w] = pm1(x)
    ho, wo = (xp.shape[0] - kh) // sh + 1, (xp.shape[1] - kw) // sw + 1
    wt = pm1(conv.weights)  # (N, kh, kw, C)
    out = []
    for y in range(ho):
        for xx in range(wo):
            patch = xp[y * sh : y * sh + kh, xx * sw : xx * sw + kw]
            out.append(np.einsum("abc,nabc->n", patch, wt) >= conv.thresholds)
    return np.array(out)


@pytest.mark.parametrize("shape,kernel,stride,pads,pe,simd,stalls", [
    ((4, 5, 2), (3, 3), (1, 1), (1, 1, 1, 1), 2, 5, ("random", "random")),
    ((5, 4, 3), (3, 2), (2, 1), (2, 0, 1, 1), 3, 4, ("bursty", "random")),
    ((3, 3, 1), (2, 2), (1, 2), (1, 1, 0, 1), 1, 1, ("random", "bursty")),
])
def test_zero_padded_conv_per_position_thresholds(shape, kernel, stride, pads, pe, simd, stalls):
    """A zero-padded binary convolution: windows stream with padded taps at bit 0 (as the window
    generator emits them); the engine's per-position threshold classes make every output equal
    the valid-taps-only reference, over several images (the position counter wraps), with the
    plain engine's cycle behaviour."""
    rng = np.random.default_rng(zlib.crc32(repr((shape, kernel, pads)).encode()))
    h, w, c = shape
    n = 5
    k = kernel[0] * kernel[1] * c
    t = rng.integers(-k // 2, k // 2 + 1, size=n)
    t[0] = -k  # always fires over the full window, not over a corner's few valid taps
    conv = Conv2d(rng.random((n, *kernel, c)) < 0.5, t.astype(np.int64), stride=stride, pads=pads, padding=Padding.ZERO)
    dut = FoldedDense.from_layer(conv, pe=pe, simd=simd, in_shape=shape)
    assert dut.threshold_classes > 1
    images = rng.random((3, h, w, c)) < 0.5
    top, left, bottom, right = pads
    kh, kw = kernel
    vectors = []
    for x in images:
        xp = np.zeros((h + top + bottom, w + left + right, c), bool)  # pad bit 0
        xp[top : top + h, left : left + w] = x
        ho, wo = (xp.shape[0] - kh) // stride[0] + 1, (xp.shape[1] - kw) // stride[1] + 1
        for y in range(ho):
            for xx in range(wo):
                vectors.append(xp[y * stride[0] : y * stride[0] + kh, xx * stride[1] : xx * stride[1] + kw].reshape(-1))
    want = np.concatenate([naive_zero_padded_conv(conv, x) for x in images])
    nv = len(vectors)
    beats = [b for v in vectors for b in beats_of(v, 1, simd, rng)]
    horizon = 3 * nv * (dut.cycles_per_vector + dut.sf + 4)
    in_pat = stall_pattern(rng, stalls[0], horizon)
    out_pat = stall_pattern(rng, stalls[1], horizon)
    accepts, emits, payloads = run_bench(dut, lambda ctx: drive(ctx, dut, beats, nv, in_pat, out_pat))
    assert [fields_of(p, n, 1) for p in payloads] == [[int(e) for e in row] for row in want]
    ref_accepts, ref_emits = folded_cycle_reference(dict(n=n, k=k, pe=pe, simd=simd), in_pat, out_pat, nv)
    assert (accepts, emits) == (ref_accepts, ref_emits)


def _verilog(seed: int = 5) -> str:
    rng = np.random.default_rng(seed)
    layer = make_layer(rng, 33, 65, False)
    return verilog.convert(FoldedDense.from_layer(layer, pe=8, simd=8), name="folded_dense")


def test_verilog_is_deterministic():
    # Also in another process with another hash seed.
    first = assert_verilog_deterministic(_verilog, hash_seed="12345")
    assert "module folded_dense" in first


@pytest.mark.parametrize("module", ["bnnfab.hdl.folded", "bnnfab.hdl._folding"])
def test_hdl_imports_neither_sim_nor_codegen(module):
    assert_hdl_layering(module)


def test_cycle_reference_known_values():
    """The reference on hand-worked cases (module docstring's consequences)."""
    p = dict(n=5, k=7, pe=2, simd=3)  # NF = SF = 3
    acc, emit = folded_cycle_reference(p, [], [], 3)
    assert acc == [0, 1, 2, 3, 4, 5, 12, 13, 14]
    assert emit == [14, 23, 32]
    # Output never ready for 30 cycles: vector 0 waits in the output register, vector 1's final
    # fold stalls the core; both come out back to back, vector 2 afterwards.
    acc, emit = folded_cycle_reference(p, [], [False] * 30, 3)
    assert emit[:2] == [30, 31]
