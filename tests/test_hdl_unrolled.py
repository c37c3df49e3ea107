"""Popcount trees and the unrolled dense engine against naive references, in Amaranth's simulator.

References here share no code with :mod:`bnnfab.hdl`: popcounts come from Python's ``int.bit_count``
and the layer from a numpy dot product on ±1 integers (design.md §5); the cycle behaviour from
:func:`unrolled_cycle_reference`, a transcription of the engine docstring's cycle rules. MST
schedules are made with :func:`bnnfab.sim.mst.plan_mst` (the tests may import ``sim``; the engine
may not).
"""

from __future__ import annotations

import gc
import hashlib
import itertools
import os
import re
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
from amaranth.back import rtlil, verilog
from amaranth.hdl import ClockDomain, Module, Signal, UnusedElaboratable, Value
from amaranth.sim import Simulator

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bnnfab.hdl.popcount import (
    CounterOp,
    PopcountStyle,
    PopcountTree,
    build_shared_popcounts,
    evaluate_shared,
    plan_popcount,
    plan_shared_popcounts,
    popcount_cost,
    popcount_latency,
)
from bnnfab.hdl.unrolled import UnrolledDense, UnrolledPlan
from bnnfab.models import Dense
from bnnfab.sim.mst import plan_mst

STYLES = list(PopcountStyle)


# --------------------------------------------------------------------------------------------
# Naive references


def ref_popcounts(x_bits: np.ndarray, w_bits: np.ndarray) -> np.ndarray:
    """p = (dot + K) / 2 on ±1 integers: the number of agreeing positions, (B, N)."""
    k = w_bits.shape[1]
    dot = np.where(x_bits, 1, -1).astype(np.int64) @ np.where(w_bits, 1, -1).astype(np.int64).T
    return (dot + k) // 2


def ref_payloads(x_bits, w_bits, thresholds) -> list[int]:
    """Each beat's expected flat payload: thresholded bits, or W-bit popcount fields."""
    p = ref_popcounts(x_bits, w_bits)
    n, k = w_bits.shape
    if thresholds is None:
        width = k.bit_length()
        return [sum(int(p[b, j]) << (j * width) for j in range(n)) for b in range(p.shape[0])]
    t = np.asarray(thresholds)
    return [sum(int(p[b, j] >= t[j]) << j for j in range(n)) for b in range(p.shape[0])]


def construct_fails(match: str, cls, *args, **kwargs) -> None:
    """``cls(*args, **kwargs)`` raises ValueError matching ``match``. Amaranth tracks every
    Elaboratable from ``__new__`` and warns when one is never used, also when its ``__init__``
    raised: collect the half-made object here, where that warning is expected."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnusedElaboratable)
        with pytest.raises(ValueError, match=match):
            cls(*args, **kwargs)
        gc.collect()


def _pattern(pattern, c: int) -> bool:
    return bool(pattern[c]) if c < len(pattern) else True


def unrolled_cycle_reference(latency, in_valid_pattern, out_ready_pattern, n_beats):
    """Acceptance and emission cycles of ``n_beats`` through an :class:`UnrolledDense` of
    ``latency`` L, as the engine docstring states them.

    The source offers a beat in cycle ``c`` when ``in_valid_pattern[c]`` and it has beats left,
    and then holds ``valid`` until the beat is taken (the stream rule); the sink drives
    ``o.ready = out_ready_pattern[c]``. Past a pattern's end it is 1. Cycle 0 is the first
    rising edge after reset.

    Returns
    -------
    (accept_cycles, emit_cycles) : two lists of ``n_beats`` ints
    """
    v = [False] * latency
    accepts: list[int] = []
    emits: list[int] = []
    holding = False
    for c in itertools.count():
        if len(emits) == n_beats:
            return accepts, emits
        if c > 100 * (n_beats + latency) + len(in_valid_pattern) + len(out_ready_pattern):
            raise AssertionError("cycle reference made no progress")  # pragma: no cover
        in_valid = len(accepts) < n_beats and (holding or _pattern(in_valid_pattern, c))
        ready = _pattern(out_ready_pattern, c)
        en = not v[-1] or ready
        if v[-1] and ready:
            emits.append(c)
        if in_valid and en:
            accepts.append(c)
            holding = False
        else:
            holding = in_valid
        if en:
            v = [in_valid] + v[:-1]
    raise AssertionError("unreachable")  # pragma: no cover


# --------------------------------------------------------------------------------------------
# The reference function itself, on hand-worked cases


def test_cycle_reference_free_flow():
    acc, emi = unrolled_cycle_reference(3, [], [], 4)
    assert acc == [0, 1, 2, 3]
    assert emi == [3, 4, 5, 6]


def test_cycle_reference_stalls():
    # L = 2. Cycle 0: no input. Cycle 1: beat 0 in. Cycle 3: beat 0 reaches v_2 (after edges 1, 2);
    # ready is low in cycles 3 and 4, so the pipeline freezes (beat 1, offered in cycle 3, waits
    # until cycle 5) and beat 0 leaves at edge 5.
    acc, emi = unrolled_cycle_reference(2, [0, 1, 0, 1], [1, 1, 1, 0, 0], 2)
    assert acc == [1, 5]
    assert emi == [5, 7]


# --------------------------------------------------------------------------------------------
# Popcount trees


@pytest.mark.parametrize("style", STYLES)
def test_plan_exhaustive_small_widths(style):
    for width in range(0, 11):
        plan = plan_popcount(width, style)
        for v in range(1 << width):
            bits = [(v >> i) & 1 for i in range(width)]
            assert plan.evaluate(bits) == v.bit_count(), (width, v)


@pytest.mark.parametrize("style", STYLES)
def test_plan_random_every_width_to_300(style):
    rng = np.random.default_rng(300)
    previous = 0
    for width in range(1, 301):
        plan = plan_popcount(width, style)
        for _ in range(6):
            bits = rng.integers(0, 2, width).tolist()
            assert plan.evaluate(bits) == sum(bits), width
        assert plan.evaluate([1] * width) == width
        assert len(plan.out) == width.bit_length()
        # a narrower tree is never slower: the engine relies on it to align children with roots
        assert plan.n_levels >= previous
        previous = plan.n_levels


@pytest.mark.parametrize("style", STYLES)
def test_tree_hdl_exhaustive_small_widths(style):
    m = Module()
    trees = {}
    for width in range(1, 9):
        trees[width] = m.submodules[f"t{width}"] = PopcountTree(width, style=style)
    x = Signal(8)
    for width, tree in trees.items():
        m.d.comb += tree.i.eq(x[:width])
    sim = Simulator(m)

    async def bench(ctx):
        for v in range(256):
            ctx.set(x, v)
            for width, tree in trees.items():
                assert ctx.get(tree.o) == (v & ((1 << width) - 1)).bit_count(), (width, v)

    sim.add_testbench(bench)
    sim.run()


def _tree_widths(rng) -> list[int]:
    sample = rng.choice(np.arange(41, 301), size=12, replace=False).tolist()
    return sorted(set(range(1, 41)) | {63, 64, 65, 127, 128, 129, 255, 256, 300} | set(sample))


@pytest.mark.parametrize("style,register_every", [(PopcountStyle.ADDER, 1), (PopcountStyle.ADDER, 3),
                                                  (PopcountStyle.DADDA, 2), (PopcountStyle.COUNTER6, 1)])
def test_tree_hdl_random_widths_and_latency(style, register_every):
    """Registered trees of many widths: random vectors every cycle with a random clock enable;
    the count of the vector presented at an enabled edge appears after exactly ``latency``
    enabled edges, and ``latency = ceil(levels / register_every)``."""
    rng = np.random.default_rng(7 + register_every)
    widths = _tree_widths(rng)
    m = Module()
    x = Signal(300)
    en = Signal()
    trees = {}
    for width in widths:
        tree = m.submodules[f"t{width}"] = PopcountTree(width, style=style, register_every=register_every)
        m.d.comb += [tree.i.eq(x[:width]), tree.en.eq(en)]
        levels = plan_popcount(width, style).n_levels
        assert tree.latency == -(-levels // register_every) == popcount_latency(width, register_every, style)
        trees[width] = tree
    sim = Simulator(m)
    sim.add_clock(1e-6)
    cycles = 30

    async def bench(ctx):
        history: list[int] = []  # vectors presented at enabled edges, in order
        checked = 0
        for c in range(cycles):
            v = int.from_bytes(rng.bytes(38), "little") & ((1 << 300) - 1)
            e = bool(c < 3 or rng.random() < 0.7)
            ctx.set(x, v)
            ctx.set(en, e)
            for width, tree in trees.items():
                lat = tree.latency
                if lat == 0:
                    want = (v & ((1 << width) - 1)).bit_count()
                elif len(history) >= lat:
                    want = (history[-lat] & ((1 << width) - 1)).bit_count()
                else:
                    continue
                assert ctx.get(tree.o) == want, (width, c)
                checked += 1
            if e:
                history.append(v)
            await ctx.tick()
        assert checked > cycles * len(trees) // 2

    sim.add_testbench(bench)
    sim.run()


def test_tree_cost_report():
    c = popcount_cost(64, PopcountStyle.ADDER, register_every=1)
    assert (c.levels, c.latency) == (6, 6)
    # a full adder removes at most one bit (64 bits -> a 7-bit count), and none is wasted
    assert 50 <= c.full_adders <= 64 - 7
    assert popcount_cost(64, PopcountStyle.ADDER, register_every=2).latency == 3
    assert popcount_cost(64, PopcountStyle.ADDER, register_every=None).registers == 0
    d = popcount_cost(64, PopcountStyle.DADDA)
    assert d.levels > c.levels and d.counters == 0
    g = popcount_cost(64, PopcountStyle.COUNTER6)
    assert g.counters > 0 and g.lut6 < d.lut6
    assert popcount_cost(1).levels == 0 and popcount_cost(1).latency == 0


def test_tree_errors_name_the_rule():
    with pytest.raises(ValueError, match="width must be a non-negative integer, not -1"):
        plan_popcount(-1)
    with pytest.raises(ValueError, match="style must be a PopcountStyle or one of 'adder', 'dadda', '6:3'"):
        plan_popcount(8, "wallace")
    construct_fails(r"register_every must be a positive integer or None .*not 0",
                    PopcountTree, 8, register_every=0)
    construct_fails("width must be a positive integer, not 0", PopcountTree, 0)


# --------------------------------------------------------------------------------------------
# Shared trees


def random_tree_sets(rng, n_inputs: int, n_trees: int) -> list[list[int]]:
    """Overlapping bit sets: half drawn around a few common cores (so triples recur), half at
    random; some empty or one bit wide."""
    cores = [rng.choice(n_inputs, size=min(n_inputs, 9), replace=False) for _ in range(2)]
    trees = []
    for _ in range(n_trees):
        if rng.random() < 0.5:
            core = cores[rng.integers(0, 2)]
            keep = core[rng.random(len(core)) < 0.8]
            extra = rng.choice(n_inputs, size=int(rng.integers(0, min(5, n_inputs + 1))), replace=False)
            bits = list(dict.fromkeys([int(b) for b in keep] + [int(b) for b in extra]))
        else:
            bits = [int(b) for b in rng.choice(n_inputs, size=rng.integers(0, n_inputs + 1), replace=False)]
        trees.append(bits)
    return trees


@pytest.mark.parametrize("style", STYLES)
def test_shared_plan_counts_exactly(style):
    """Every tree's count plus its spare is the popcount of its bits (Python's int.bit_count), and
    no tree takes more levels than a tree of its width planned alone."""
    rng = np.random.default_rng(21)
    for _ in range(60):
        n_inputs = int(rng.integers(1, 48))
        trees = random_tree_sets(rng, n_inputs, int(rng.integers(1, 14)))
        fixed = (rng.random(len(trees)) < 0.3).tolist()
        carry_in = (rng.random(len(trees)) < 0.6).tolist()
        share = bool(rng.random() < 0.8)
        loose = (rng.random(n_inputs) < 0.5).tolist() if rng.random() < 0.5 else None
        plan = plan_shared_popcounts(trees, n_inputs, style, share=share, fixed=fixed, carry_in=carry_in,
                                     loose=loose)
        for i, bits in enumerate(trees):
            spare = plan.spares[i]
            assert sorted(plan.inputs[i] + (() if spare is None else (spare,))) == sorted(bits)
            assert spare is None or carry_in[i]
            assert len(plan.outs[i]) == len(plan.inputs[i]).bit_length()
            assert plan.done[i] <= plan_popcount(len(plan.inputs[i]), style).n_levels
        for _ in range(8):
            x = rng.integers(0, 2, n_inputs).tolist()
            value = int("".join(map(str, reversed(x))) or "0", 2)
            got = evaluate_shared(plan, x)
            for i, bits in enumerate(trees):
                spare = plan.spares[i]
                want = sum(((value >> b) & 1) for b in bits)
                assert got[i] + (0 if spare is None else x[spare]) == want


def test_shared_plan_shares_common_triples():
    # two trees with the triple {0, 1, 2} in common: one full adder on it, read by both
    plan = plan_shared_popcounts([[0, 1, 2, 3, 4, 5], [0, 1, 2, 6, 7, 8]], 9)
    firsts = [op for op in plan.levels[0] if isinstance(op, CounterOp)]
    assert sum(sorted(op.bits) == [0, 1, 2] for op in firsts) == 1
    assert len(firsts) == 3  # {0,1,2} once, and each tree's own triple
    alone = plan_shared_popcounts([[0, 1, 2, 3, 4, 5], [0, 1, 2, 6, 7, 8]], 9, share=False)
    assert len(alone.levels[0]) == 4
    assert plan.cost().lut4 < alone.cost().lut4 == alone.unshared.lut4
    # a triple already made by a fixed (own-plan) tree is reused by a flexible one
    plan = plan_shared_popcounts([list(range(9)), [3, 4, 5, 20, 21]], 22, fixed=[True, False])
    assert sum(sorted(op.bits) == [3, 4, 5] for op in plan.levels[0] if isinstance(op, CounterOp)) == 1
    # identical trees are built once
    plan = plan_shared_popcounts([list(range(10))] * 3, 10)
    assert plan.outs[0] == plan.outs[1] == plan.outs[2]
    assert plan.cost().lut4 == popcount_cost(10).lut4
    # a carry-in takes a bit out only when that makes the tree cheaper: 4 bits -> 3 (one counter)
    plan = plan_shared_popcounts([[0, 1, 2, 3], [4, 5, 6]], 7, carry_in=[True, True])
    assert plan.spares[0] is not None and plan.spares[1] is None
    # ... and a loose one when there is one; loose bits are the ones left single
    plan = plan_shared_popcounts([[0, 1, 2, 3], [4, 5, 6, 7, 8]], 9, carry_in=[True, False],
                                 loose=[False, False, True, False, True, False, False, False, False])
    assert plan.spares[0] == 2
    assert sorted(op.bits for op in plan.levels[0] if 4 in op.bits or 5 in op.bits) == [(5, 6, 7)]


def test_shared_plan_errors_name_the_rule():
    with pytest.raises(ValueError, match=r"tree 1 must have distinct input bits in 0..3, not \(0, 0\)"):
        plan_shared_popcounts([[1], [0, 0]], 4)
    with pytest.raises(ValueError, match="tree 0 must have distinct input bits in 0..3"):
        plan_shared_popcounts([[4]], 4)
    with pytest.raises(ValueError, match=r"fixed must have one flag per tree \(2\), not 1"):
        plan_shared_popcounts([[1], [2]], 4, fixed=[True])
    with pytest.raises(ValueError, match="n_inputs must be a non-negative integer"):
        plan_shared_popcounts([[1]], -1)
    with pytest.raises(ValueError, match=r"loose must have one flag per input bit \(4\), not 2"):
        plan_shared_popcounts([[1]], 4, loose=[True, False])


@pytest.mark.parametrize("register_every", [None, 1, 2])
def test_shared_trees_hdl_count_with_their_latency(register_every):
    """The built shared trees, in Amaranth's simulator: with a random clock enable, the count of
    the vector presented at an enabled edge appears after exactly ``latency`` enabled edges."""
    rng = np.random.default_rng(40 + (register_every or 0))
    n_inputs = 30
    trees = random_tree_sets(rng, n_inputs, 12) + [[], [5], list(range(n_inputs))]
    plan = plan_shared_popcounts(trees, n_inputs, carry_in=(rng.random(len(trees)) < 0.5).tolist())
    m = Module()
    x = Signal(n_inputs)
    en = Signal()
    built = build_shared_popcounts(m, [x[i] for i in range(n_inputs)], plan,
                                   register_every=register_every, en=en)
    m.d.sync += Signal(name="keep_sync").eq(en)  # the clock domain exists also when combinational
    outs = []
    for i, (count, lat) in enumerate(built):
        assert lat == plan.latency(i, register_every)
        sig = Signal(max(1, len(count)), name=f"o{i}")
        m.d.comb += sig.eq(count)
        outs.append(sig)
    sim = Simulator(m)
    sim.add_clock(1e-6)

    async def bench(ctx):
        history: list[int] = []
        for c in range(40):
            v = int(rng.integers(0, 1 << n_inputs))
            e = bool(c < 3 or rng.random() < 0.7)
            ctx.set(x, v)
            ctx.set(en, e)
            for i, bits in enumerate(trees):
                lat = built[i][1]
                if lat and len(history) < lat:
                    continue
                src = v if lat == 0 else history[-lat]
                want = sum((src >> b) & 1 for b in plan.inputs[i])
                assert ctx.get(outs[i]) == want, (i, c)
            if e:
                history.append(v)
            await ctx.tick()

    sim.add_testbench(bench)
    sim.run()


# --------------------------------------------------------------------------------------------
# The engine


def clustered_weights(rng, n: int, k: int) -> np.ndarray:
    """Channels near a few prototypes, plus exact copies and complements: deep forests, zero-width
    and inverted edges."""
    protos = rng.random((max(1, n // 8), k)) < 0.5
    w = protos[rng.integers(0, len(protos), n)] ^ (rng.random((n, k)) < 0.12)
    for j in range(1, n):
        r = rng.random()
        if r < 0.1:
            w[j] = w[rng.integers(0, j)]
        elif r < 0.2:
            w[j] = ~w[rng.integers(0, j)]
    return w


def random_thresholds(rng, n: int, k: int) -> np.ndarray:
    t = rng.integers(0, k + 2, n)
    const = rng.random(n) < 0.25
    t[const] = rng.choice([-3, 0, k + 1, k + 5], size=int(const.sum()))
    return t


def pack(bits: np.ndarray) -> int:
    return sum(1 << i for i, b in enumerate(bits) if b)


def run_engine(dut: UnrolledDense, xs: np.ndarray, in_valid_pattern, out_ready_pattern, *,
               reset_at: int | None = None):
    """Drive ``xs`` through ``dut`` with the source/sink of :func:`unrolled_cycle_reference`.

    Returns accept cycles, emit cycles and emitted flat payloads. Checks the stream rules on the
    output: while ``o.valid`` is high and not taken, it stays high and the payload stays put.
    With ``reset_at``, reset is held in cycles ``reset_at`` and ``reset_at + 1`` after the first
    beats, and cycle counting restarts at 0 after it (design.md §4); the beats in flight are lost.
    """
    top = Module()
    top.domains.sync = cd = ClockDomain("sync")
    top.submodules.dut = dut
    sim = Simulator(top)
    sim.add_clock(1e-6, domain="sync")
    n_beats = len(xs)
    rng = np.random.default_rng(99)
    result: dict = {}

    async def bench(ctx):
        accepts, emits, payloads = [], [], []
        sent, holding, held = 0, False, None
        c = 0  # cycle number since the last reset release
        limit = 100 * (n_beats + dut.latency) + len(in_valid_pattern) + len(out_ready_pattern)
        reset_done = reset_at is None
        while len(emits) < n_beats:
            assert c < limit, "engine made no progress"
            if not reset_done and c == reset_at:
                ctx.set(cd.rst, 1)
                ctx.set(dut.i.valid, 1)
                ctx.set(dut.o.ready, 1)
                for _ in range(2):
                    await ctx.tick()
                ctx.set(cd.rst, 0)
                assert not ctx.get(dut.o.valid), "reset must empty the pipeline"
                accepts, emits, payloads = [], [], []
                sent, holding, held, c, reset_done = 0, False, None, 0, True
                continue
            in_valid = sent < n_beats and (holding or _pattern(in_valid_pattern, c))
            ready = _pattern(out_ready_pattern, c)
            ctx.set(dut.i.valid, in_valid)
            # payload garbage when not valid: it must be ignored
            ctx.set(dut.i.payload, pack(xs[sent]) if in_valid else int(rng.integers(0, 2**62)) % (1 << dut.k))
            ctx.set(dut.o.ready, ready)
            o_valid = ctx.get(dut.o.valid)
            payload = ctx.get(Value.cast(dut.o.payload))
            if held is not None:
                assert o_valid and payload == held, f"output changed while stalled in cycle {c}"
            held = payload if (o_valid and not ready) else None
            if o_valid and ready:
                emits.append(c)
                payloads.append(payload)
            if in_valid and ctx.get(dut.i.ready):
                accepts.append(c)
                sent += 1
                holding = False
            else:
                holding = in_valid
            await ctx.tick()
            c += 1
        result.update(accepts=accepts, emits=emits, payloads=payloads)

    sim.add_testbench(bench)
    sim.run()
    return result["accepts"], result["emits"], result["payloads"]


def stall_patterns(rng, kind: str, length: int):
    if kind == "free":
        return [], []
    if kind == "in":
        return (rng.random(length) < 0.4).tolist(), []
    if kind == "out":
        return [], (rng.random(length) < 0.4).tolist()
    return (rng.random(length) < 0.6).tolist(), (rng.random(length) < 0.5).tolist()


# (K, N, depth limit or "plain", allow_inverted, thresholds?, register_every, style, stalls)
ENGINE_CASES = [
    (1, 5, "plain", False, True, 1, "adder", "both"),
    (7, 33, "plain", False, True, 1, "adder", "out"),
    (63, 1, "plain", False, True, 1, "adder", "both"),
    (64, 33, "plain", False, True, 2, "adder", "in"),
    (65, 5, "plain", False, True, 1, "dadda", "both"),
    (130, 5, "plain", False, True, 1, "6:3", "both"),
    (7, 5, "plain", False, False, 1, "adder", "both"),
    (130, 1, "plain", False, False, 1, "adder", "free"),
    (1, 33, 1, False, True, 1, "adder", "both"),
    (1, 33, None, True, False, 1, "adder", "both"),
    (7, 33, 2, True, True, 1, "adder", "both"),
    (7, 5, None, False, True, 1, "adder", "free"),
    (7, 33, 3, True, False, 1, "adder", "out"),
    (63, 33, 3, True, True, 1, "adder", "both"),
    (64, 33, None, True, True, 1, "adder", "both"),
    (64, 5, 3, False, True, 1, "dadda", "both"),
    (65, 33, 1, True, True, 2, "adder", "both"),
    (65, 33, None, False, False, 1, "adder", "in"),
    (130, 33, 2, False, True, 1, "adder", "both"),
    (130, 5, None, True, False, 3, "6:3", "both"),
    (64, 33, 2, True, False, 1, "adder", "both"),
]


@pytest.mark.parametrize("k,n,depth,inv,thresholded,r,style,stalls", ENGINE_CASES)
def test_engine_bit_exact_and_cycle_exact(k, n, depth, inv, thresholded, r, style, stalls):
    rng = np.random.default_rng(1000 * k + 10 * n + (0 if depth == "plain" else 1 + (depth or 7)) + inv)
    w = clustered_weights(rng, n, k)
    t = random_thresholds(rng, n, k) if thresholded else None
    if depth == "plain":
        dut = UnrolledDense(w, t, register_every=r, style=style)
        assert dut.mode == "plain" and dut.max_depth == 0
    else:
        schedule = plan_mst(w, depth, inv)
        dut = UnrolledDense(w, t, schedule.parent, schedule.inverted, register_every=r, style=style)
        assert dut.mode == "mst" and dut.max_depth == schedule.depth_reached
        if n > 1:
            assert dut.max_depth >= 1, "the case should exercise reuse"
    assert dut.latency == popcount_latency(k, r, style) + dut.max_depth + 1

    n_beats = 24 if n * k > 1000 else 40
    xs = rng.random((n_beats, k)) < 0.5
    in_pat, out_pat = stall_patterns(rng, stalls, 3 * n_beats)
    accepts, emits, payloads = run_engine(dut, xs, in_pat, out_pat)

    # every beat, in order, bit-exact against the ±1 reference
    assert payloads == ref_payloads(xs, w, t)
    # every accept and emit on the cycle the reference model says
    assert (accepts, emits) == unrolled_cycle_reference(dut.latency, in_pat, out_pat, n_beats)
    if stalls == "free":
        assert emits == [a + dut.latency for a in accepts] == list(range(dut.latency, dut.latency + n_beats))


@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(k=st.integers(1, 40), n=st.integers(1, 14), depth=st.sampled_from([None, 1, 2, 3, 5]),
       inv=st.booleans(), thresholded=st.booleans(), share=st.sampled_from(["search", "identical", "none"]),
       compare=st.sampled_from(["carry", "logic"]), r=st.integers(1, 3), seed=st.integers(0, 2**32 - 1))
def test_engine_random_layers_share_and_compare(k, n, depth, inv, thresholded, share, compare, r, seed):
    """Random layers and forests, with and without shared trees, both comparison forms: bit-exact
    against the ±1 reference and cycle-exact against the cycle rules under random stalls."""
    rng = np.random.default_rng(seed)
    w = clustered_weights(rng, n, k)
    t = random_thresholds(rng, n, k) if thresholded else None
    s = plan_mst(w, depth, inv)
    dut = UnrolledDense(w, t, s.parent, s.inverted, register_every=r, share=share, compare=compare)
    assert dut.latency == popcount_latency(k, r) + s.depth_reached + 1
    xs = rng.random((14, k)) < 0.5
    in_pat, out_pat = stall_patterns(rng, "both", 40)
    accepts, emits, payloads = run_engine(dut, xs, in_pat, out_pat)
    assert payloads == ref_payloads(xs, w, t)
    assert (accepts, emits) == unrolled_cycle_reference(dut.latency, in_pat, out_pat, len(xs))


def test_engine_reset_empties_the_pipeline():
    rng = np.random.default_rng(5)
    w = clustered_weights(rng, 5, 63)
    t = random_thresholds(rng, 5, 63)
    s = plan_mst(w, 2, True)
    dut = UnrolledDense(w, t, s.parent, s.inverted)
    xs = rng.random((12, 63)) < 0.5
    in_pat, out_pat = stall_patterns(rng, "both", 40)
    accepts, emits, payloads = run_engine(dut, xs, in_pat, out_pat, reset_at=dut.latency + 2)
    assert payloads == ref_payloads(xs, w, t)
    assert (accepts, emits) == unrolled_cycle_reference(dut.latency, in_pat, out_pat, len(xs))


def test_engine_from_dense_layer():
    rng = np.random.default_rng(11)
    w = clustered_weights(rng, 5, 20)
    tau = rng.integers(-22, 22, 5)
    layer = Dense(w, tau)
    s = plan_mst(w, None, True)
    dut = UnrolledDense.from_dense(layer, s.parent, s.inverted)
    xs = rng.random((10, 20)) < 0.5
    _, _, payloads = run_engine(dut, xs, [], [])
    dot = np.where(xs, 1, -1) @ np.where(w, 1, -1).T
    assert payloads == [sum(int(dot[b, j] >= tau[j]) << j for j in range(5)) for b in range(10)]
    scores = UnrolledDense.from_dense(Dense(w))
    assert scores.out_layout.length == 5 and scores.out_layout.elem_shape.width == (20).bit_length()
    _, _, payloads = run_engine(scores, xs[:3], [], [])
    assert payloads == ref_payloads(xs[:3], w, None)


def test_engine_cost_matches_the_planner_and_pays_off():
    rng = np.random.default_rng(64)
    w = rng.random((64, 64)) < 0.5
    plain = UnrolledPlan(w).cost()
    assert plain.tree_inputs == 64 * 64 and plain.mst_adders == 0 and plain.trees == 64
    for depth in (1, 2, 3, None):
        s = plan_mst(w, depth, True)
        mst = UnrolledPlan(w, None, s.parent, s.inverted).cost()
        assert mst.tree_inputs == s.cost  # K * roots + sum of edge distances (design.md §3)
        assert mst.mst_adders == 64 - s.roots
        assert mst.full_adders < plain.full_adders
    # constant channels need no tree in plain mode
    t = np.full(64, 10)
    t[:16] = 0
    t[16:32] = 65
    assert UnrolledPlan(w, t).cost().trees == 32


def test_engine_share_modes():
    rng = np.random.default_rng(65)
    w = clustered_weights(rng, 48, 64)
    t = rng.integers(20, 45, 48)  # every channel a real comparison: every tree built
    s = plan_mst(w, 4, False)
    shared = UnrolledPlan(w, t, s.parent, s.inverted)
    same = UnrolledPlan(w, t, s.parent, s.inverted, share="identical")
    alone = UnrolledPlan(w, t, s.parent, s.inverted, share="none")
    assert shared.share == "search"
    c, i, a = shared.cost(), same.cost(), alone.cost()
    # same binary ops (design.md §3 cost), fewer built: children share first-level full adders
    assert c.tree_inputs == i.tree_inputs == a.tree_inputs == s.cost
    assert c.tree_ops < i.tree_ops <= a.tree_ops and c.full_adders < a.full_adders and c.lut4 < a.lut4
    assert c.unshared_lut4 > c.lut4 - (c.mst_adder_bits + c.comparators)  # the shared trees alone
    assert c.spares > 0 and c.latency == i.latency == a.latency
    # plain mode: ordinary trees, each distinct operation once (fewer than one tree per channel)
    plain = UnrolledPlan(w, t)
    assert plain.share == "identical" and plain.trees.spares == (None,) * len(plain.trees.outs)
    per_tree = sum(len(level) for level in plan_popcount(64).levels)
    assert UnrolledPlan(w, t, share="none").cost().tree_ops == 48 * per_tree
    distinct = {(li, tuple(sorted(op.inputs))) for li, level in enumerate(plain.trees.levels) for op in level}
    assert plain.cost().tree_ops == len(distinct) < 48 * per_tree


def test_engine_representation_and_fused_leaves():
    """The structure the module docstring describes, checked on a correlated layer: every ``R``
    holds its channel's K + 1 values as one unwrapped run, a parent is as wide as its children,
    K a power of two needs no extra bit, and small thresholded leaves are fused."""
    rng = np.random.default_rng(66)
    for k in (64, 50):
        w = clustered_weights(rng, 40, k)
        t = rng.integers(1, k + 1, 40)
        s = plan_mst(w, 6, True)
        pl = UnrolledPlan(w, t, s.parent, s.inverted)
        cw = k.bit_length()
        for ch in pl.channels:
            if ch.index in pl.fused:
                assert ch.parent >= 0 and len(ch.positions) <= 15 and ch.index not in pl.q_width
                assert all(c.parent != ch.index for c in pl.channels if c.needed)
                continue
            wq = pl.q_width[ch.index]
            assert wq in (cw, cw + 1) and pl.q_start(ch) + k <= (1 << wq) - 1
            assert pl.q_start(ch) == (ch.offset + pl.q_flip[ch.index] * (1 << (wq - 1))) % (1 << wq)
            if ch.parent >= 0:
                assert pl.q_width[ch.parent] >= wq
        if k == 64:
            assert set(pl.q_width.values()) == {7}
        c = pl.cost()
        assert c.fused_leaves == len(pl.fused) > 0 and c.mst_adders == 39 - len(pl.fused)
        # logic comparisons fuse nothing; the exact flip-flop count still holds (test below)
        assert not UnrolledPlan(w, t, s.parent, s.inverted, compare="logic").fused


@pytest.mark.parametrize("mst,thresholded,r,share,compare", [
    (False, True, 1, None, "carry"), (True, True, 2, None, "carry"), (True, False, 1, None, "carry"),
    (True, True, 1, "none", "logic"), (False, True, 2, "search", "carry"),
    (True, True, 3, "identical", "carry"),
])
def test_engine_cost_counts_the_built_flip_flops(mst, thresholded, r, share, compare):
    rng = np.random.default_rng(8)
    w = clustered_weights(rng, 9, 21)
    t = random_thresholds(rng, 9, 21) if thresholded else None
    s = plan_mst(w, 3, True) if mst else None
    dut = UnrolledDense(w, t, s.parent if s else None, s.inverted if s else None, register_every=r,
                        share=share, compare=compare)
    if mst and thresholded and compare == "carry":
        assert dut.cost().fused_leaves > 0
    text = rtlil.convert(dut, name="unrolled")
    flops = sum(int(x) for x in re.findall(r"cell \$\w*dff\w* \S+\n\s+parameter \\WIDTH (\d+)", text))
    assert flops == dut.cost().registers > 0


def test_engine_errors_name_the_rule():
    w = np.zeros((3, 4), dtype=bool)
    with pytest.raises(ValueError, match=r"must be a 2-D \(N, K\) array with N, K >= 1, not shape \(4,\)"):
        UnrolledPlan(np.zeros(4, bool))
    with pytest.raises(ValueError, match="weights must be booleans"):
        UnrolledPlan(np.full((3, 4), 0.5))
    with pytest.raises(ValueError, match=r"thresholds must have shape \(3,\), one per output channel"):
        UnrolledPlan(w, [1, 2])
    with pytest.raises(ValueError, match="thresholds must be integers"):
        UnrolledPlan(w, [0.5, 1, 2])
    with pytest.raises(ValueError, match="parent of channel 1 must be -1 or in 0..2, not 3"):
        UnrolledPlan(w, None, [-1, 3, 0])
    with pytest.raises(ValueError, match="channel 2 must not be its own parent"):
        UnrolledPlan(w, None, [-1, 0, 2])
    with pytest.raises(ValueError, match="acyclic"):
        UnrolledPlan(w, None, [-1, 2, 1])
    with pytest.raises(ValueError, match="root channel 0 cannot be inverted"):
        UnrolledPlan(w, None, [-1, 0, 0], [True, False, False])
    with pytest.raises(ValueError, match="inverted needs a parent array"):
        UnrolledPlan(w, None, None, [False, True, False])
    with pytest.raises(ValueError, match="register_every must be a positive integer"):
        UnrolledPlan(w, register_every=None)
    with pytest.raises(ValueError, match="share must be one of 'search', 'identical', 'none' or None"):
        UnrolledPlan(w, share=True)
    with pytest.raises(ValueError, match="compare must be one of 'carry', 'logic', not 'lut'"):
        UnrolledPlan(w, compare="lut")
    # the component validates through its plan: same rules, same messages
    construct_fails("channel 2 must not be its own parent", UnrolledDense, w, None, [-1, 0, 2])
    with pytest.raises(ValueError, match="layer must be a bnnfab.models.Dense, not ndarray"):
        UnrolledDense.from_dense(w)


# --------------------------------------------------------------------------------------------
# Deterministic Verilog

_VERILOG_SNIPPET = textwrap.dedent(
    """
    import hashlib, numpy as np
    from amaranth.back import rtlil, verilog
    from bnnfab.hdl.unrolled import UnrolledDense, UnrolledPlan
    from bnnfab.sim.mst import plan_mst
    rng = np.random.default_rng(3)
    w = rng.random((6, 13)) < 0.5
    t = rng.integers(-1, 15, 6)
    s = plan_mst(w, 2, True)
    v = verilog.convert(UnrolledDense(w, t, s.parent, s.inverted), name="unrolled")
    print(hashlib.sha256(v.encode()).hexdigest())
    """
)


def test_verilog_is_deterministic():
    here = subprocess.run([sys.executable, "-c", _VERILOG_SNIPPET], capture_output=True, text=True,
                          env={**os.environ, "PYTHONHASHSEED": "1"}, check=True).stdout.strip()
    there = subprocess.run([sys.executable, "-c", _VERILOG_SNIPPET], capture_output=True, text=True,
                           env={**os.environ, "PYTHONHASHSEED": "2"}, check=True).stdout.strip()
    rng = np.random.default_rng(3)
    w = rng.random((6, 13)) < 0.5
    t = rng.integers(-1, 15, 6)
    s = plan_mst(w, 2, True)
    texts = [verilog.convert(UnrolledDense(w, t, s.parent, s.inverted), name="unrolled") for _ in range(2)]
    assert texts[0] == texts[1]
    assert here == there == hashlib.sha256(texts[0].encode()).hexdigest()
