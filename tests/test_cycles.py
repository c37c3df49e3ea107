"""The cycle model against the per-block cycle references written beside each RTL block's tests
(which are themselves checked beat by beat against the simulated RTL)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from bnnfab.sim.cycles import Block, Kind, simulate_cycles
from test_hdl_folded import folded_cycle_reference
from test_hdl_unrolled import unrolled_cycle_reference


def _patterns(draw, n):
    mode = draw(st.sampled_from(["none", "random", "bursty"]))
    seed = draw(st.integers(0, 2**31))
    rng = np.random.default_rng(seed)
    if mode == "none":
        return np.ones(n, bool)
    if mode == "random":
        return rng.random(n) < draw(st.sampled_from([0.2, 0.5, 0.8]))
    return np.repeat(rng.random(n // 8 + 1) < 0.5, 8)[:n]


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_folded_block_matches_reference(data):
    n = data.draw(st.integers(1, 40))
    k = data.draw(st.integers(1, 140))
    pe = data.draw(st.integers(1, 9))
    simd = data.draw(st.integers(1, 70))
    vectors = data.draw(st.integers(0, 6))
    nf, sf = -(-n // pe), -(-k // simd)
    horizon = 3 * vectors * (nf * sf + sf + 4) + 20
    iv = _patterns(data.draw, horizon)
    orr = _patterns(data.draw, horizon)
    want_acc, want_emit = folded_cycle_reference({"n": n, "k": k, "pe": pe, "simd": simd}, iv, orr, vectors)
    got = simulate_cycles([Block(Kind.FOLDED, (nf, sf))], vectors, iv, orr)
    assert got.accept.tolist() == want_acc
    assert got.emit.tolist() == want_emit


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_unrolled_block_matches_reference(data):
    latency = data.draw(st.integers(1, 40))
    beats = data.draw(st.integers(0, 30))
    horizon = 4 * (beats + latency) + 10
    iv = _patterns(data.draw, horizon)
    orr = _patterns(data.draw, horizon)
    want_acc, want_emit = unrolled_cycle_reference(latency, iv, orr, beats)
    got = simulate_cycles([Block(Kind.UNROLLED, (latency,))], beats, iv, orr)
    assert got.accept.tolist() == want_acc
    assert got.emit.tolist() == want_emit
