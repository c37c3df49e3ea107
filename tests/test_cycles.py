"""The cycle model against the per-block cycle references written beside each RTL block's tests
(which are themselves checked beat by beat against the simulated RTL)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from bnnfab.sim.cycles import Block, Kind, simulate_cycles
from test_hdl_folded import folded_cycle_reference
from test_hdl_unrolled import unrolled_cycle_reference
from test_hdl_streams import argmax_cycle_reference, width_adapter_cycle_reference
from test_hdl_fifo import fifo_cycle_reference
from test_hdl_window import window_cycle_reference


def _patterns(draw, n):
    mode = draw(st.sampled_from(["none", "random", "bursty"]))
    seed = draw(st.integers(0, 2**31))
    rng = np.random.default_rng(seed)
    if mode == "none":
        return np.ones(n, bool)
    if mode == "random":
        return rng.random(n) < draw(st.sampled_from([0.2, 0.5, 0.8]))
    return np.repeat(rng.random(n // 8 + 1) < 0.5, 8)[:n]


def _compare(data, block, items, horizon, reference):
    """Draw valid/ready patterns; the cycle model of ``block`` must give ``reference(iv, orr)``."""
    iv = _patterns(data.draw, horizon)
    orr = _patterns(data.draw, horizon)
    want_acc, want_emit = reference(iv, orr)
    got = simulate_cycles([block], items, iv, orr)
    assert got.accept.tolist() == want_acc
    assert got.emit.tolist() == want_emit


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
    _compare(data, Block(Kind.FOLDED, (nf, sf)), vectors, horizon, lambda iv, orr: folded_cycle_reference({"n": n, "k": k, "pe": pe, "simd": simd}, iv, orr, vectors))


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_unrolled_block_matches_reference(data):
    latency = data.draw(st.integers(1, 40))
    beats = data.draw(st.integers(0, 30))
    horizon = 4 * (beats + latency) + 10
    _compare(data, Block(Kind.UNROLLED, (latency,)), beats, horizon, lambda iv, orr: unrolled_cycle_reference(latency, iv, orr, beats))


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_width_adapter_block_matches_reference(data):
    wi = data.draw(st.integers(1, 70))
    wo = data.draw(st.integers(1, 70))
    r = -(-max(wi, wo) // min(wi, wo))
    items = data.draw(st.integers(0, 12))
    splits = wi >= wo
    n_in = items if splits else items * r
    horizon = 4 * (n_in + items * r) + 10
    block = Block(Kind.SPLIT, (r,)) if splits else Block(Kind.GATHER, (r,))
    _compare(data, block, items, horizon, lambda iv, orr: width_adapter_cycle_reference({"in_width": wi, "out_width": wo}, iv, orr, n_in))


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_argmax_block_matches_reference(data):
    n = data.draw(st.integers(1, 40))
    levels = data.draw(st.integers(1, 3))
    beats = data.draw(st.integers(0, 20))
    lat = max(1, -(-(n - 1).bit_length() // levels))
    horizon = 4 * (beats + lat) + 10
    _compare(data, Block(Kind.UNROLLED, (lat,)), beats, horizon, lambda iv, orr: argmax_cycle_reference({"n": n, "stage_levels": levels}, iv, orr, beats))


def test_block_parameters_are_checked():
    import pytest

    with pytest.raises(ValueError, match="FOLDED takes 2 positive parameter"):
        Block(Kind.FOLDED, (1,))
    with pytest.raises(ValueError, match="GATHER needs R >= 2"):
        Block(Kind.GATHER, (1,))


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_window_block_matches_reference(data):
    h = data.draw(st.integers(1, 9))
    w = data.draw(st.integers(1, 9))
    kh = data.draw(st.integers(1, 4))
    kw = data.draw(st.integers(1, 4))
    pads = tuple(data.draw(st.integers(0, kk - 1)) for kk in (kh, kw, kh, kw))
    if h + pads[0] + pads[2] < kh or w + pads[1] + pads[3] < kw:
        return
    sh = data.draw(st.integers(1, 4))
    sw = data.draw(st.integers(1, 4))
    ho = (h + pads[0] + pads[2] - kh) // sh + 1
    wo = (w + pads[1] + pads[3] - kw) // sw + 1
    rows = data.draw(st.integers(min(kh, h), min(kh, h) + 2))
    images = data.draw(st.integers(0, 3))
    params = {"height": h, "width": w, "kernel": (kh, kw), "stride": (sh, sw), "pads": pads, "buffer_rows": rows}
    horizon = 6 * images * (h * w + ho * ((wo - 1) * sw + kw) + 8) + 20
    block = Block(Kind.WINDOW, (h, w, kh, kw, sh, sw, pads[0], pads[1], rows, ho, wo))
    _compare(data, block, images, horizon, lambda iv, orr: window_cycle_reference(params, iv, orr, images))


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_fifo_block_matches_reference(data):
    depth = data.draw(st.integers(1, 6))
    beats = data.draw(st.integers(0, 30))
    horizon = 4 * beats + 20
    _compare(data, Block(Kind.FIFO, (depth,)), beats, horizon, lambda iv, orr: fifo_cycle_reference(depth, iv, orr, beats))


def _zoo_chains():
    from bnnfab.codegen.config import Engine, GenConfig, LayerChoice
    from bnnfab.codegen.generate import generate
    from bnnfab.models import zoo

    configs = [
        ("digits-tfc", GenConfig(target_cycles=16, fifo_depth=2)),
        ("digits-tfc-mst", GenConfig(target_cycles=64, layers={3: LayerChoice(engine=Engine.UNROLLED)})),
        ("digits-ecoc-cnn", GenConfig(target_cycles=256)),  # windows, pools and gathers
    ]
    return [generate(zoo.load(name), cfg).blocks for name, cfg in configs]


_CHAINS = []


@settings(max_examples=12, deadline=None)
@given(st.data())
def test_specialised_stepper_equals_the_generic_one(data):
    """The stepper compiled for one chain (loops unrolled, parameters constant) gives the generic
    stepper's trace, beat for beat, under the same stalls."""
    if not _CHAINS:
        _CHAINS.extend(_zoo_chains())
    blocks = data.draw(st.sampled_from(_CHAINS))
    items = data.draw(st.integers(0, 5))
    horizon = 4 * (simulate_cycles(blocks, items).cycles + 64)
    iv = _patterns(data.draw, horizon)
    orr = _patterns(data.draw, horizon)
    generic = simulate_cycles(blocks, items, iv, orr, specialise=False)
    special = simulate_cycles(blocks, items, iv, orr, specialise=True)
    assert special.accept.tolist() == generic.accept.tolist()
    assert special.emit.tolist() == generic.emit.tolist()
    assert special.cycles == generic.cycles


def test_long_chains_and_long_runs_use_the_specialised_stepper(monkeypatch):
    from bnnfab.sim import cycles

    calls = []
    real = cycles._specialised

    def spy(kinds, params):
        calls.append(len(kinds))
        return real(kinds, params)

    monkeypatch.setattr(cycles, "_specialised", spy)
    chain = [Block(Kind.FOLDED, (2, 3)), Block(Kind.FIFO, (2,)), Block(Kind.UNROLLED, (3,))]
    short = simulate_cycles(chain, 4)
    assert calls == []
    monkeypatch.setattr(cycles, "_MAX_BLOCKS", 2)  # more blocks than the generic stepper holds
    assert simulate_cycles(chain, 4).emit.tolist() == short.emit.tolist() and calls == [3]
    monkeypatch.undo()
    monkeypatch.setattr(cycles, "_specialised", spy)
    monkeypatch.setattr(cycles, "SPECIALISE_CYCLES", 24)  # 4 items x 6 cycles
    assert simulate_cycles(chain, 4).emit.tolist() == short.emit.tolist() and calls == [3, 3]
