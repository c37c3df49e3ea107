"""Sliding-window generator and binary max-pool (:mod:`bnnfab.hdl.window`) in Amaranth's simulator.

Every patch / pooled pixel is compared to a naive numpy reference written here (``np.pad`` with
the pad value, explicit window slicing, ``any`` over the window), every accepted and emitted beat's
cycle to :func:`window_cycle_reference` / :func:`maxpool_cycle_reference`, transcriptions of the
module docstring's register rules. Valid and ready are stalled independently by per-cycle
patterns; several images stream back to back.
"""

import ast
import os
import pathlib
import subprocess
import sys
import textwrap
import zlib

import numpy as np
import pytest
from amaranth.back import verilog
from amaranth.hdl import ClockDomain, Elaboratable, Module, Signal
from amaranth.sim import Simulator

from bnnfab.hdl.window import MaxPoolOr, SlidingWindow

# Geometry and error tests build components they never elaborate.
pytestmark = [
    pytest.mark.filterwarnings("ignore::amaranth._unused.UnusedMustUse"),
    pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable"),
]


def _at(pattern, c: int) -> bool:
    return True if c >= len(pattern) else bool(pattern[c])


def stall_pattern(rng, kind, length):
    if kind == "none":
        return [True] * length
    if kind == "random":
        return list(rng.random(length) < rng.uniform(0.3, 0.8))
    if kind == "bursty":
        out, on = [], True
        while len(out) < length:
            out += [on] * int(rng.integers(1, 25))
            on = not on
        return out[:length]
    raise ValueError(kind)


# --------------------------------------------------------------------------------------------
# Naive references


def out_size(n, k, s, pad_a, pad_b):
    return (n + pad_a + pad_b - k) // s + 1


def naive_patches(image, kernel, stride, pads, pad_value):
    """All patches of one ``(H, W, C)`` image in raster order, each ``(kh, kw, C)``."""
    kh, kw = kernel
    sh, sw = stride
    top, left, bottom, right = pads
    padded = np.pad(image, ((top, bottom), (left, right), (0, 0)), constant_values=pad_value)
    h, w = image.shape[:2]
    ho, wo = out_size(h, kh, sh, top, bottom), out_size(w, kw, sw, left, right)
    return [padded[oy * sh : oy * sh + kh, ox * sw : ox * sw + kw, :] for oy in range(ho) for ox in range(wo)]


def naive_maxpool(bits, kernel, stride):
    """``(Ho*Wo, C)`` booleans: OR of every window (floor mode)."""
    kh, kw = kernel
    sh, sw = stride
    h, w, _ = bits.shape
    return [
        bits[oy * sh : oy * sh + kh, ox * sw : ox * sw + kw, :].any(axis=(0, 1))
        for oy in range((h - kh) // sh + 1)
        for ox in range((w - kw) // sw + 1)
    ]


def pack_pixel(values, eb):
    """Channel ``c`` at bits ``[c*eb, (c+1)*eb)``, two's complement."""
    return sum((int(v) % (1 << eb)) << (c * eb) for c, v in enumerate(values))


def unpack_patch(payload, kh, kw, c, eb, is_signed):
    """Element ``(ky*kw + kx)*C + ch`` at bits ``[idx*eb, (idx+1)*eb)``, as ``(kh, kw, C)``."""
    out = np.zeros((kh, kw, c), dtype=np.int64)
    for ky in range(kh):
        for kx in range(kw):
            for ch in range(c):
                idx = (ky * kw + kx) * c + ch
                v = (payload >> (idx * eb)) & ((1 << eb) - 1)
                if is_signed and v >> (eb - 1):
                    v -= 1 << eb
                out[ky, kx, ch] = v
    return out


# --------------------------------------------------------------------------------------------
# Cycle references (the module docstring's register rules, transcribed)


def window_cycle_reference(params, in_valid_pattern, out_ready_pattern, n_images):
    """Accept and emit cycles of a :class:`SlidingWindow`.

    ``params``: ``height``, ``width``, ``kernel`` ``(kh, kw)``, ``stride`` ``(sh, sw)``, ``pads``
    ``(top, left, bottom, right)`` and optionally ``buffer_rows`` (default ``min(kh, H) + 1``).
    The source offers its next beat when ``in_valid_pattern[c]`` and holds it until it transfers;
    the sink's ready is ``out_ready_pattern[c]``; patterns are True past their end.
    ``n_images`` images are streamed; runs until every input beat is accepted and every output
    beat emitted. Returns ``(accept_cycles, emit_cycles)``.
    """
    h, w = params["height"], params["width"]
    kh, kw = params["kernel"]
    sh, sw = params["stride"]
    top, left, bottom, right = params["pads"]
    r = params.get("buffer_rows") or min(kh, h) + 1
    ho, wo = out_size(h, kh, sh, top, bottom), out_size(w, kw, sw, left, right)
    wu = (wo - 1) * sw + kw

    def needed(y):
        return (y + top) % sh < kh and y < (ho - 1) * sh - top + kh

    def window_rows(oy):
        ry0 = oy * sh - top
        lo = max(ry0, 0)
        nreal = min(h, ry0 + kh) - lo
        pop = nreal if oy == ho - 1 else min(nreal, max(ry0 + sh, 0) - lo)
        return nreal, pop

    n_in, n_out = n_images * h * w, n_images * ho * wo
    wy = wx = d = oy = 0
    px, nx = left, kw - 1 - left
    a_v = a_e = ov = False
    offered, sent = False, 0
    accepts, emits = [], []
    c = 0
    while len(emits) < n_out or sent < n_in:
        assert c < len(in_valid_pattern) + len(out_ready_pattern) + 10 * (n_in + n_out + 10) * (wu + 1), "no progress"
        if not offered and sent < n_in and _at(in_valid_pattern, c):
            offered = True
        ready = _at(out_ready_pattern, c)
        need = needed(wy)
        in_ready = not need or d < r
        en = not ov or ready
        x = px - left
        nreal, pop = window_rows(oy)
        avail = x >= w or d >= nreal or (d == nreal - 1 and need and wx > x)
        issue = en and avail
        take = offered and in_ready
        if take:
            accepts.append(c)
            offered, sent = False, sent + 1
        if ov and ready:
            emits.append(c)
        # writer
        row_done = 0
        if take:
            if wx == w - 1:
                wx, wy = 0, (wy + 1) % h
                row_done = 1 if need else 0
            else:
                wx += 1
        # scan
        released = 0
        if en:
            new_ov = a_v and a_e
            if issue:
                a_v, a_e = True, nx == 0
                if px == wu - 1:
                    px, nx, oy, released = left, kw - 1 - left, (oy + 1) % ho, pop
                else:
                    px, nx = px + 1, (sw - 1 if nx == 0 else nx - 1)
            else:
                a_v = False
            ov = new_ov
        d += row_done - released
        assert -1 <= d <= r
        c += 1
    return accepts, emits


def maxpool_cycle_reference(params, in_valid_pattern, out_ready_pattern, n_images):
    """Accept and emit cycles of a :class:`MaxPoolOr` (``height``, ``width``, ``kernel``,
    ``stride``, optional ``buffer_rows``): the window's rules without pads."""
    return window_cycle_reference(dict(params, pads=(0, 0, 0, 0)), in_valid_pattern, out_ready_pattern, n_images)


# --------------------------------------------------------------------------------------------
# Driver / monitor


async def drive(ctx, dut, beats, n_out, in_pat, out_pat):
    """Source of ``beats`` (held until transfer) and sink following the patterns; returns
    (accept cycles, emit cycles, payloads) once all beats were accepted and ``n_out`` beats
    arrived (rows no window uses may be accepted after the last patch)."""
    src, sink = dut.i_stream, dut.o_stream
    holding, sent = False, 0
    accepts, emits, payloads = [], [], []
    c = 0
    limit = len(in_pat) + len(out_pat) + 100 * (len(beats) + n_out + 10)
    while len(emits) < n_out or sent < len(beats):
        assert c < limit, "simulation did not finish"
        if not holding and sent < len(beats) and _at(in_pat, c):
            holding = True
            ctx.set(src.payload, beats[sent])
        ctx.set(src.valid, holding)
        ready = _at(out_pat, c)
        ctx.set(sink.ready, ready)
        if holding and ctx.get(src.ready):
            accepts.append(c)
            holding, sent = False, sent + 1
        if ready and ctx.get(sink.valid):
            emits.append(c)
            payloads.append(ctx.get(sink.payload))
        await ctx.tick()
        c += 1
    return accepts, emits, payloads


def run(dut, beats, n_out, in_pat, out_pat):
    result = {}

    async def bench(ctx):
        result["r"] = await drive(ctx, dut, beats, n_out, in_pat, out_pat)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return result["r"]


# --------------------------------------------------------------------------------------------
# SlidingWindow


def random_window_case(rng):
    """Random parameters: maps 1..9, kernels 1..4, strides 1..4 (also above the kernel), pads
    below the kernel on any side, C 1..130, elem_bits 1..8."""
    while True:
        h, w = (int(v) for v in rng.integers(1, 10, size=2))
        kh, kw = (int(v) for v in rng.integers(1, 5, size=2))
        sh, sw = (int(v) for v in rng.integers(1, 5, size=2))
        pads = tuple(int(rng.integers(0, k)) if rng.random() < 0.6 else 0 for k in (kh, kw, kh, kw))
        if h + pads[0] + pads[2] >= kh and w + pads[1] + pads[3] >= kw:
            break
    c = int(rng.choice([1, 2, 3, 5, 8])) if rng.random() < 0.85 else int(rng.integers(9, 131))
    eb = int(rng.integers(1, 9))
    pad_value = int(rng.integers(0, 2)) if eb == 1 else int(rng.integers(-(1 << (eb - 1)), 1 << eb))
    rows = None if rng.random() < 0.75 else min(kh, h) + int(rng.integers(0, 3))
    return dict(height=h, width=w, channels=c, elem_bits=eb, kernel=(kh, kw), stride=(sh, sw),
                pads=pads, pad_value=pad_value, buffer_rows=rows)


def run_window(case, n_images, kinds, seed):
    rng = np.random.default_rng(seed)
    dut = SlidingWindow(case["height"], case["width"], case["channels"], case["elem_bits"],
                        kernel=case["kernel"], stride=case["stride"], pads=case["pads"],
                        pad_value=case["pad_value"], buffer_rows=case["buffer_rows"])
    h, w, c, eb = case["height"], case["width"], case["channels"], case["elem_bits"]
    kh, kw = case["kernel"]
    is_signed = case["pad_value"] < 0 or (eb > 1 and rng.random() < 0.5)
    lo, hi = (-(1 << (eb - 1)), (1 << (eb - 1)) - 1) if is_signed else (0, (1 << eb) - 1)
    images = [rng.integers(lo, hi + 1, size=(h, w, c)) for _ in range(n_images)]
    beats = [pack_pixel(img[y, x], eb) for img in images for y in range(h) for x in range(w)]
    pv = case["pad_value"]  # negative only when is_signed
    if is_signed and pv >= 1 << (eb - 1):
        pv -= 1 << eb  # the same bits, read signed
    want = [p for img in images for p in naive_patches(img, case["kernel"], case["stride"], case["pads"], pv)]
    horizon = 3 * (len(beats) + len(want)) + 40
    in_pat = stall_pattern(rng, kinds[0], horizon)
    out_pat = stall_pattern(rng, kinds[1], horizon)
    accepts, emits, payloads = run(dut, beats, len(want), in_pat, out_pat)
    assert len(payloads) == len(want)
    for i, (got, ref) in enumerate(zip(payloads, want)):
        patch = unpack_patch(got, kh, kw, c, eb, is_signed)
        assert np.array_equal(patch, ref), f"patch {i}: {patch.tolist()} != {ref.tolist()}"
    params = {k: case[k] for k in ("height", "width", "kernel", "stride", "pads", "buffer_rows")}
    ref_acc, ref_emit = window_cycle_reference(params, in_pat, out_pat, n_images)
    assert (accepts, emits) == (ref_acc, ref_emit)
    assert len(accepts) == len(beats)
    return dut, accepts, emits


KINDS = [("none", "none"), ("random", "random"), ("bursty", "random"), ("random", "bursty"), ("none", "random")]


@pytest.mark.parametrize("seed", range(100))
def test_window_random_parameters(seed):
    rng = np.random.default_rng(seed)
    case = random_window_case(rng)
    run_window(case, n_images=3, kinds=KINDS[seed % len(KINDS)], seed=seed + 1000)


FIXED_CASES = {
    # name: (H, W, C, eb, kernel, stride, pads, pad_value, buffer_rows)
    "3x3-same-binary-plus1": (6, 7, 3, 1, (3, 3), (1, 1), (1, 1, 1, 1), 1, None),
    "3x3-same-binary-minus1": (5, 5, 2, 1, (3, 3), (1, 1), (1, 1, 1, 1), 0, None),
    "3x3-valid-int8": (5, 6, 2, 8, (3, 3), (1, 1), (0, 0, 0, 0), 0, None),
    "3x3-same-int8-neg": (4, 4, 3, 8, (3, 3), (1, 1), (1, 1, 1, 1), -1, None),
    "1x1": (3, 4, 5, 1, (1, 1), (1, 1), (0, 0, 0, 0), 0, None),
    "1x1-stride3": (7, 8, 2, 2, (1, 1), (3, 3), (0, 0, 0, 0), 0, None),
    "2x2-stride3-gap": (8, 8, 1, 1, (2, 2), (3, 3), (0, 0, 0, 0), 0, None),
    "stride-exceeds-kernel-padded": (9, 9, 2, 3, (2, 3), (4, 4), (1, 2, 1, 1), 2, None),
    "pads-top-left-only": (5, 5, 1, 4, (3, 3), (1, 1), (2, 2, 0, 0), 7, None),
    "pads-bottom-right-only": (5, 5, 1, 4, (3, 3), (1, 1), (0, 0, 2, 2), -8, None),
    "map-equals-kernel": (3, 3, 4, 1, (3, 3), (1, 1), (0, 0, 0, 0), 0, None),
    "map-below-kernel": (1, 2, 2, 2, (3, 3), (2, 1), (1, 1, 1, 1), 1, None),
    "single-pixel": (1, 1, 3, 3, (1, 1), (1, 1), (0, 0, 0, 0), 0, None),
    "kernel-4x1-stride2": (9, 4, 2, 1, (4, 1), (2, 1), (3, 0, 1, 0), 1, None),
    "wide-channels-130x8": (4, 3, 130, 8, (2, 2), (1, 1), (1, 0, 0, 1), -100, None),
    "min-buffer": (6, 5, 2, 2, (3, 3), (1, 1), (1, 1, 1, 1), 1, 3),
    "big-buffer": (6, 5, 2, 2, (3, 2), (2, 1), (0, 1, 2, 0), 1, 6),
    "floor-drops-row-and-col": (7, 7, 1, 1, (2, 2), (2, 2), (0, 0, 0, 0), 0, None),
}


@pytest.mark.parametrize("kinds", [("none", "none"), ("random", "random"), ("bursty", "bursty")])
@pytest.mark.parametrize("name", list(FIXED_CASES))
def test_window_fixed_cases(name, kinds):
    h, w, c, eb, kernel, stride, pads, pv, rows = FIXED_CASES[name]
    case = dict(height=h, width=w, channels=c, elem_bits=eb, kernel=kernel, stride=stride, pads=pads,
                pad_value=pv, buffer_rows=rows)
    run_window(case, n_images=3, kinds=kinds, seed=zlib.crc32(repr((name, kinds)).encode()))


def steady_interval(emits, per_image):
    """Cycles between the first patches of the last two images."""
    return emits[-per_image] - emits[-2 * per_image]


@pytest.mark.parametrize(
    "h, w, kernel, stride, pads",
    [
        (8, 8, (3, 3), (1, 1), (1, 1, 1, 1)),  # same padding: the scan is the slower side
        (8, 8, (3, 3), (1, 1), (0, 0, 0, 0)),  # valid: input-bound
        (8, 8, (2, 2), (2, 2), (0, 0, 0, 0)),  # pooling-style
        (6, 7, (1, 1), (1, 1), (0, 0, 0, 0)),  # 1x1: one patch per pixel
        (9, 9, (5, 5), (1, 1), (2, 2, 2, 2)),
        (9, 9, (2, 2), (3, 3), (0, 0, 0, 0)),  # stride above the kernel
    ],
)
def test_window_throughput_never_stalled(h, w, kernel, stride, pads):
    """Back to back and never stalled: one image per max(H*W, Ho*(Wu - left)) cycles, the
    writer's pixel count or the scan's column count, whichever is larger."""
    case = dict(height=h, width=w, channels=1, elem_bits=1, kernel=kernel, stride=stride, pads=pads,
                pad_value=0, buffer_rows=None)
    dut, _, rtl_emits = run_window(case, n_images=3, kinds=("none", "none"), seed=4)
    per_image = dut.out_height * dut.out_width
    params = dict(height=h, width=w, kernel=kernel, stride=stride, pads=pads)
    _, emits = window_cycle_reference(params, [], [], 6)
    assert steady_interval(emits, per_image) == max(h * w, dut.out_height * dut.scan_columns)
    assert rtl_emits == emits[: len(rtl_emits)]
    assert rtl_emits[0] == first_patch_cycle(h, w, kernel, pads)


def first_patch_cycle(h, w, kernel, pads):
    """The docstring's fill latency: 3 cycles after the first window's last pixel, plus its
    right-pad columns."""
    (kh, kw), (top, left) = kernel, pads[:2]
    return (min(h, kh - top) - 1) * w + min(w, kw - left) - 1 + 3 + max(0, kw - left - w)


def test_window_first_patch_latency_formula():
    """The fill-latency formula of the docstring holds for the cycle rules on random shapes."""
    for seed in range(300):
        case = random_window_case(np.random.default_rng(seed))
        params = {k: case[k] for k in ("height", "width", "kernel", "stride", "pads", "buffer_rows")}
        _, emits = window_cycle_reference(params, [], [], 1)
        assert emits[0] == first_patch_cycle(case["height"], case["width"], case["kernel"], case["pads"]), case


def test_window_cycle_reference_known_values():
    # 1x1 kernel on a 1x3 map: pixel accepted at c, column issued at c+1, patch out at c+3.
    params = dict(height=1, width=3, kernel=(1, 1), stride=(1, 1), pads=(0, 0, 0, 0))
    acc, emits = window_cycle_reference(params, [], [], 1)
    assert acc == [0, 1, 2] and emits == [3, 4, 5]
    # 1x2 kernel, left pad 1 on a 1x2 map: the first scan column (x = 0) completes a window.
    params = dict(height=1, width=2, kernel=(1, 2), stride=(1, 1), pads=(0, 1, 0, 0))
    acc, emits = window_cycle_reference(params, [], [], 1)
    assert acc == [0, 1] and emits == [3, 4]
    # The sink refuses until cycle 8: the scan freezes behind the first patch (image 0's second
    # column waits in stage A); the writer fills its R = 2 slots with images 1 and 2 meanwhile.
    params = dict(height=1, width=2, kernel=(1, 1), stride=(1, 1), pads=(0, 0, 0, 0))
    acc, emits = window_cycle_reference(params, [], [False] * 8, 3)
    assert acc == [0, 1, 2, 3, 4, 5] and emits == [8, 9, 10, 11, 12, 13]
    # With 4 images the fourth waits for a slot: image 1's row is released when its last column
    # issues (edge 9), and the writer takes the next pixel at edge 10.
    acc, emits = window_cycle_reference(params, [], [False] * 8, 4)
    assert acc == [0, 1, 2, 3, 4, 5, 10, 11] and emits == list(range(8, 16))


def test_window_reset_mid_stream():
    dut = SlidingWindow(3, 3, 2, 1, kernel=3, pads=1, pad_value=1)

    class Top(Elaboratable):
        def __init__(self):
            self.rst = Signal()

        def elaborate(self, platform):
            m = Module()
            m.domains.sync = cd = ClockDomain("sync")
            m.d.comb += cd.rst.eq(self.rst)
            m.submodules.dut = dut
            return m

    top = Top()
    rng = np.random.default_rng(9)
    image = rng.integers(0, 2, size=(3, 3, 2))
    beats = [pack_pixel(image[y, x], 1) for y in range(3) for x in range(3)]
    result = {}

    async def bench(ctx):
        ctx.set(dut.i_stream.payload, 0b11)
        ctx.set(dut.i_stream.valid, 1)
        ctx.set(dut.o_stream.ready, 0)
        for _ in range(7):  # a partial image in, a patch waiting
            await ctx.tick()
        ctx.set(dut.i_stream.valid, 0)
        ctx.set(top.rst, 1)
        await ctx.tick()
        ctx.set(top.rst, 0)
        assert not ctx.get(dut.o_stream.valid) and ctx.get(dut.i_stream.ready)
        result["r"] = await drive(ctx, dut, beats, 9, [], [])

    sim = Simulator(top)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    accepts, emits, payloads = result["r"]
    want = naive_patches(image, (3, 3), (1, 1), (1, 1, 1, 1), 1)
    assert [unpack_patch(p, 3, 3, 2, 1, False).tolist() for p in payloads] == [w.tolist() for w in want]
    params = dict(height=3, width=3, kernel=(3, 3), stride=(1, 1), pads=(1, 1, 1, 1))
    assert (accepts, emits) == window_cycle_reference(params, [], [], 1)


def test_window_encode_decode_match_the_naive_packing():
    rng = np.random.default_rng(2)
    dut = SlidingWindow(2, 3, 5, 4, kernel=(2, 2), pads=(1, 0, 0, 1), pad_value=-3)
    img = rng.integers(-8, 8, size=(2, 3, 5))
    assert dut.encode_image(img) == [pack_pixel(img[y, x], 4) for y in range(2) for x in range(3)]
    payload = int.from_bytes(rng.bytes(dut.patch_width // 8 + 1), "little") & ((1 << dut.patch_width) - 1)
    assert np.array_equal(dut.decode_patch(payload, signed=True), unpack_patch(payload, 2, 2, 5, 4, True))
    assert np.array_equal(dut.decode_patch(payload), unpack_patch(payload, 2, 2, 5, 4, False))
    with pytest.raises(ValueError, match=r"an image must have shape \(2, 3, 5\), got \(3, 2, 5\)"):
        dut.encode_image(np.zeros((3, 2, 5)))


def test_window_geometry():
    a = SlidingWindow(28, 28, 16, 1, kernel=3, pads=1)
    assert (a.out_height, a.out_width, a.scan_end, a.scan_columns) == (28, 28, 30, 29)
    assert (a.pixel_width, a.patch_width, a.buffer_rows) == (16, 144, 4)
    assert a.window_rows(0) == (1, 2, 0) and a.window_rows(1) == (0, 3, 1) and a.window_rows(27) == (0, 2, 2)
    assert all(a.row_needed(y) for y in range(28))
    assert len(a.i_stream.payload) == 16 and len(a.o_stream.payload) == 144
    b = SlidingWindow(7, 7, 1, kernel=2, stride=3)  # windows at rows 0-1 and 3-4: 2, 5, 6 dropped
    assert [b.row_needed(y) for y in range(7)] == [True, True, False, True, True, False, False]
    assert (b.window_rows(0), b.window_rows(1)) == ((0, 2, 2), (0, 2, 2))
    assert SlidingWindow(2, 2, 1, kernel=3, pads=1).buffer_rows == 3  # min(kh, H) + 1
    assert (a.kernel, a.stride, a.pads, a.pad_value, a.elem_bits) == ((3, 3), (1, 1), (1, 1, 1, 1), 0, 1)
    assert a.cycle_params == dict(height=28, width=28, kernel=(3, 3), stride=(1, 1), pads=(1, 1, 1, 1), buffer_rows=4)


def test_window_errors():
    with pytest.raises(ValueError, match="height must be a positive integer, not 0"):
        SlidingWindow(0, 3, 1, kernel=1)
    with pytest.raises(ValueError, match="elem_bits must be a positive integer, not True"):
        SlidingWindow(3, 3, 1, True, kernel=1)
    with pytest.raises(ValueError, match=r"kernel must be a positive integer or a pair of them, not \(1, 2, 3\)"):
        SlidingWindow(3, 3, 1, kernel=(1, 2, 3))
    with pytest.raises(ValueError, match="stride must be a positive integer, not 0"):
        SlidingWindow(3, 3, 1, kernel=1, stride=(1, 0))
    with pytest.raises(ValueError, match=r"pads must be 4 integers >= 0 \(top, left, bottom, right\), not \(1, 1\)"):
        SlidingWindow(3, 3, 1, kernel=3, pads=(1, 1))
    with pytest.raises(ValueError, match=r"each pad must be smaller than the kernel \(3, 2\), got pads \(0, 2, 0, 0\)"):
        SlidingWindow(3, 3, 1, kernel=(3, 2), pads=(0, 2, 0, 0))
    with pytest.raises(ValueError, match=r"kernel \(3, 3\) is larger than the padded map \(2, 4\)"):
        SlidingWindow(2, 2, 1, kernel=3, pads=(0, 1, 0, 1))
    with pytest.raises(ValueError, match=r"pad_value must be an integer in \[0, 1\] for elem_bits=1, not -1"):
        SlidingWindow(3, 3, 1, kernel=3, pads=1, pad_value=-1)
    with pytest.raises(ValueError, match=r"pad_value must be an integer in \[-8, 15\] for elem_bits=4, not 16"):
        SlidingWindow(3, 3, 1, 4, kernel=3, pads=1, pad_value=16)
    with pytest.raises(ValueError, match=r"pads must be 4 integers >= 0 \(top, left, bottom, right\), not -1"):
        SlidingWindow(3, 3, 1, kernel=3, pads=-1)
    with pytest.raises(ValueError, match="buffer_rows must be at least min\\(kh, H\\) = 2, not 1"):
        SlidingWindow(2, 3, 1, kernel=3, pads=1, buffer_rows=1)


# --------------------------------------------------------------------------------------------
# MaxPoolOr


def run_maxpool(h, w, c, kernel, stride, n_images, kinds, seed, buffer_rows=None):
    rng = np.random.default_rng(seed)
    dut = MaxPoolOr(h, w, c, kernel=kernel, stride=stride, buffer_rows=buffer_rows)
    stride = kernel if stride is None else stride
    # sparse bits, so that an OR of few taps is often 0 and mistakes show
    images = [rng.random((h, w, c)) < rng.uniform(0.05, 0.5) for _ in range(n_images)]
    beats = [pack_pixel(img[y, x], 1) for img in images for y in range(h) for x in range(w)]
    want = [p for img in images for p in naive_maxpool(img, kernel, stride)]
    horizon = 3 * (len(beats) + len(want)) + 40
    in_pat = stall_pattern(rng, kinds[0], horizon)
    out_pat = stall_pattern(rng, kinds[1], horizon)
    accepts, emits, payloads = run(dut, beats, len(want), in_pat, out_pat)
    got = [[bool((p >> ch) & 1) for ch in range(c)] for p in payloads]
    assert got == [ref.tolist() for ref in want]
    params = dict(height=h, width=w, kernel=kernel, stride=stride, buffer_rows=buffer_rows)
    ref_acc, ref_emit = maxpool_cycle_reference(params, in_pat, out_pat, n_images)
    assert (accepts, emits) == (ref_acc, ref_emit)
    assert len(accepts) == len(beats)
    return dut, accepts, emits


MAXPOOL_CASES = [
    # (H, W, C, kernel, stride)
    (8, 8, 4, (2, 2), None),
    (7, 9, 3, (2, 2), None),  # odd sizes: floor drops the last row and column
    (6, 6, 1, (3, 3), (3, 3)),
    (5, 7, 5, (3, 3), (2, 2)),  # overlapping windows
    (5, 5, 2, (2, 2), (1, 1)),
    (9, 9, 3, (2, 3), (3, 2)),  # stride above the kernel on rows
    (4, 4, 130, (2, 2), None),
    (3, 5, 2, (3, 1), (1, 2)),
    (1, 4, 2, (1, 2), None),
    (2, 2, 1, (2, 2), None),  # map equals the kernel
]


def _maxpool_id(case):
    h, w, c, (kh, kw), stride = case
    return f"{h}x{w}x{c}-k{kh}x{kw}-s" + ("k" if stride is None else "{}x{}".format(*stride))


@pytest.mark.parametrize("kinds", [("none", "none"), ("random", "random"), ("bursty", "random")])
@pytest.mark.parametrize("case", MAXPOOL_CASES, ids=_maxpool_id)
def test_maxpool_payloads_and_cycles(case, kinds):
    run_maxpool(*case, n_images=3, kinds=kinds, seed=zlib.crc32(repr((case, kinds)).encode()))


@pytest.mark.parametrize("seed", range(25))
def test_maxpool_random_parameters(seed):
    rng = np.random.default_rng(seed + 500)
    while True:
        h, w = (int(v) for v in rng.integers(1, 10, size=2))
        kh, kw = (int(v) for v in rng.integers(1, 4, size=2))
        if kh <= h and kw <= w:
            break
    stride = None if rng.random() < 0.4 else tuple(int(v) for v in rng.integers(1, 5, size=2))
    rows = None if rng.random() < 0.7 else min(kh, h) + int(rng.integers(0, 2))
    run_maxpool(h, w, int(rng.integers(1, 12)), (kh, kw), stride, n_images=3,
                kinds=KINDS[seed % len(KINDS)], seed=seed, buffer_rows=rows)


def test_maxpool_2x2_throughput_and_geometry():
    """2x2/2 pooling never stalled is input-bound: one image per H*W cycles."""
    dut, accepts, emits = run_maxpool(8, 6, 2, (2, 2), None, n_images=3, kinds=("none", "none"), seed=1)
    assert accepts == list(range(3 * 48))
    assert steady_interval(emits, 12) == 48
    assert (dut.out_height, dut.out_width, dut.kernel, dut.stride, dut.channels) == (4, 3, (2, 2), (2, 2), 2)
    assert (dut.height, dut.width) == (8, 6)
    assert dut.window.buffer_rows == 3
    assert dut.cycle_params == dict(height=8, width=6, kernel=(2, 2), stride=(2, 2), pads=(0, 0, 0, 0), buffer_rows=3)
    assert len(dut.i_stream.payload) == 2 and len(dut.o_stream.payload) == 2
    with pytest.raises(ValueError, match=r"kernel \(3, 3\) is larger than the padded map \(2, 2\)"):
        MaxPoolOr(2, 2, 1, kernel=3)


# --------------------------------------------------------------------------------------------
# Verilog and layering


def _verilog() -> str:
    return (
        verilog.convert(
            SlidingWindow(6, 7, 3, 2, kernel=3, stride=(1, 2), pads=(1, 1, 0, 2), pad_value=-1), name="window"
        )
        + verilog.convert(SlidingWindow(7, 7, 2, 1, kernel=2, stride=3), name="window_gap")
        + verilog.convert(MaxPoolOr(6, 6, 4), name="maxpool")
    )


def test_verilog_is_deterministic():
    first = _verilog()
    assert first == _verilog()
    code = textwrap.dedent(
        f"""
        import sys, warnings
        warnings.simplefilter("ignore")
        sys.path.insert(0, {str(pathlib.Path(__file__).parent)!r})
        from test_hdl_window import _verilog
        sys.stdout.write(_verilog())
        """
    )
    env = dict(os.environ, PYTHONHASHSEED="4242")
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert other.stdout == first
    for name in ("window", "window_gap", "maxpool"):
        assert f"module {name}" in first


def test_window_module_imports_neither_sim_nor_codegen():
    source = pathlib.Path(__import__("bnnfab.hdl.window", fromlist=["_"]).__file__).read_text()
    for node in ast.walk(ast.parse(source)):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        for name in names:
            assert not name.startswith(("bnnfab.sim", "bnnfab.codegen")), name
    code = (
        "import sys, bnnfab.hdl.window; "
        "print(sorted(m for m in sys.modules if m.startswith(('bnnfab.sim', 'bnnfab.codegen'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
