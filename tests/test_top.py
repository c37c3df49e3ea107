"""The generated top in Amaranth's simulator: every output equals the naive reference, every
accepted and emitted beat's cycle equals the cycle model, under random valid/ready stalls."""

from __future__ import annotations

import numpy as np
import pytest
from amaranth.sim import Simulator

import naive
from bnnfab.codegen.config import ConfigError, Engine, GenConfig, LayerChoice
from bnnfab.codegen.generate import generate
from bnnfab.codegen.plan import make_plan
from bnnfab.codegen.top import AcceleratorTop, cycle_blocks
from bnnfab.models import Conv2d, Dense, Flatten, InputSpec, MaxPool2d, Model, zoo
from bnnfab.models.datasets import load_dataset
from bnnfab.sim.cycles import simulate_cycles


def run_top(top: AcceleratorTop, images: np.ndarray, in_valid: np.ndarray, out_ready: np.ndarray):
    """Stream ``images`` through ``top`` with the stream rules of the cycle model; returns
    (accept cycles, emit cycles, decoded (class, scores) per output)."""
    beats = [b for img in images for b in top.format.encode(img)]
    n_out = len(images)
    res = {"acc": [], "emit": [], "out": []}

    async def bench(ctx):
        i, o = top.i_stream, top.o_stream
        sent, holding, c = 0, False, 0
        while len(res["emit"]) < n_out:
            if not holding and sent < len(beats) and (c >= len(in_valid) or in_valid[c]):
                holding = True
            ctx.set(i.valid, bool(holding))
            if holding:
                ctx.set(i.payload, beats[sent])
            ctx.set(o.ready, bool(c >= len(out_ready) or out_ready[c]))
            if ctx.get(i.valid) and ctx.get(i.ready):
                res["acc"].append(c)
                sent, holding = sent + 1, False
            if ctx.get(o.valid) and ctx.get(o.ready):
                res["emit"].append(c)
                res["out"].append(top.format.decode(ctx.get(o.payload)))
            await ctx.tick()
            c += 1
            assert c < 200_000, "the design stopped making progress"

    sim = Simulator(top)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return res["acc"], res["emit"], res["out"]


def _check(model, config, images, seed=0, p_valid=0.7, p_ready=0.6):
    design_plan = make_plan(model, config)
    top = AcceleratorTop(design_plan)
    rng = np.random.default_rng(seed)
    horizon = 20_000
    iv = rng.random(horizon) < p_valid
    orr = rng.random(horizon) < p_ready
    acc, emit, outs = run_top(top, images, iv, orr)
    want = naive.infer(model, images)
    trace = simulate_cycles(cycle_blocks(top), len(images), iv, orr)
    assert acc == trace.accept.tolist()
    assert emit == trace.emit.tolist()
    for k, (cls, scores) in enumerate(outs):
        np.testing.assert_array_equal(scores, want["scores"][k], err_msg=f"image {k}")
        assert cls == want["classes"][k]


def _random_mlp(rng, k0, widths, classes, bits=8, signed=False, chw=False):
    binary = bits == 1
    spec = InputSpec((2, k0 // 2, 1) if chw else (k0,), bits=bits, signed=signed)
    layers = [Flatten(order="chw")] if chw else []
    k = k0
    for i, n in enumerate(widths):
        w = rng.random((n, k)) < 0.5
        if i == 0 and not binary:
            lo, hi = spec.value_range
            t = rng.integers(lo * k // 4, hi * k // 4 + 1, size=n)
        else:
            t = rng.integers(-k // 3, k // 3 + 1, size=n)
        layers.append(Dense(w, t, name=f"h{i}"))
        k = n
    layers.append(Dense(rng.random((classes, k)) < 0.5, name="out"))
    return Model(spec, tuple(layers))


def _images(rng, model, n):
    lo, hi = model.input.value_range
    return rng.integers(lo, hi + 1, size=(n,) + model.input.shape)


@pytest.mark.parametrize("fifo_depth", [0, 2])
def test_default_model_all_folded(fifo_depth):
    model = zoo.load()
    ds = load_dataset("digits", "test")
    _check(model, GenConfig(target_cycles=64, fifo_depth=fifo_depth), ds.x[:3], p_ready=0.3)


@pytest.mark.parametrize("depth", [0, 1, 3, None])
def test_default_model_unrolled_output_layer_with_mst(depth):
    model = zoo.load()
    ds = load_dataset("digits", "test")
    cfg = GenConfig(target_cycles=128, mst_depth=depth, layers={3: LayerChoice(engine=Engine.UNROLLED)})
    _check(model, cfg, ds.x[3:6], seed=depth or 0)


@pytest.mark.parametrize("seed", range(4))
def test_random_mlps_mixed_engines(seed):
    rng = np.random.default_rng(seed)
    k0 = int(rng.choice([6, 10, 34]))
    widths = [int(rng.choice([5, 17, 40])), int(rng.choice([3, 9, 20]))]
    model = _random_mlp(rng, k0, widths, classes=int(rng.integers(2, 7)), bits=int(rng.choice([2, 4, 8])), signed=bool(seed % 2), chw=seed >= 2)
    choices = {}
    if seed % 2 == 0:
        choices[model.compute_layers[1][0]] = LayerChoice(engine=Engine.UNROLLED, mst_depth=2)
    else:
        choices[model.compute_layers[1][0]] = LayerChoice(engine=Engine.FOLDED, pe=3, simd=4)
        choices[model.compute_layers[2][0]] = LayerChoice(engine=Engine.UNROLLED)
    images = _images(rng, model, 4)
    # unrolled trees registered every 1, 2 or 3 levels: latency and cycles follow the engine
    cfg = GenConfig(layers=choices, target_cycles=int(rng.choice([4, 16])), register_every=[1, 2, 3, 2][seed])
    _check(model, cfg, images, seed=seed)


def test_binary_input_model():
    rng = np.random.default_rng(11)
    model = _random_mlp(rng, 20, [12], classes=4, bits=1)
    images = np.where(rng.random((4, 20)) < 0.5, 1, -1)  # ±1 values; streamed as bits (x >= 0)
    top_images = (images >= 0).astype(np.int64)
    design_plan = make_plan(model, GenConfig(target_cycles=8))
    top = AcceleratorTop(design_plan)
    acc, emit, outs = run_top(top, top_images, np.ones(10, bool), np.ones(10, bool))
    want = naive.infer(model, images)
    for k, (cls, scores) in enumerate(outs):
        np.testing.assert_array_equal(scores, want["scores"][k])
        assert cls == want["classes"][k]


def test_generated_verilog_is_deterministic():
    model = zoo.load()
    cfg = GenConfig(target_cycles=64, layers={3: LayerChoice(engine=Engine.UNROLLED)})
    assert generate(model, cfg).verilog == generate(model, cfg).verilog


def test_zero_padded_binary_conv_limits_are_refused_with_a_clear_message():
    """Zero-padded binary convolutions get per-position thresholds in the folded engine only."""
    model = Model(
        InputSpec((4, 4, 1), bits=1),
        (Conv2d(np.zeros((2, 3, 3, 1), bool), [0, 0], pads=1, name="c0"), Flatten(), Dense(np.zeros((2, 32), bool))),
    )
    make_plan(model)  # folded: fine
    with pytest.raises(ConfigError, match="layer 0 \\(c0\\): a zero-padded binary convolution needs per-position thresholds"):
        make_plan(model, GenConfig(layers={0: LayerChoice(engine=Engine.UNROLLED)}))


def _random_cnn(rng, h, w, c, bits, signed, pad_mode, chw, pool):
    spec = InputSpec((h, w, c), bits=bits, signed=signed)
    lo, hi = spec.value_range
    n1 = int(rng.choice([3, 8, 17]))
    k1 = 9 * c
    conv1 = Conv2d(rng.random((n1, 3, 3, c)) < 0.5, rng.integers(lo * k1 // 4, hi * k1 // 4 + 1, n1), pads=1, padding="zero", name="c1")
    shape = conv1.out_shape(spec.shape)
    layers = [conv1]
    if pool:
        layers.append(MaxPool2d(2, name="p1"))
        shape = layers[-1].out_shape(shape)
    n2 = int(rng.choice([4, 9]))
    conv2 = Conv2d(rng.random((n2, 2, 2, n1)) < 0.5, rng.integers(-6, 7, n2), pads=(1, 0, 0, 1) if pad_mode != "none" else 0,
                   padding={"+1": "+1", "zero": "zero"}.get(pad_mode, "-1"), stride=(1, 2), name="c2")
    shape = conv2.out_shape(shape)
    layers += [conv2, Flatten(order="chw" if chw else "hwc")]
    k = int(np.prod(shape))
    layers.append(Dense(rng.random((5, k)) < 0.5, name="out"))
    return Model(spec, tuple(layers))


@pytest.mark.parametrize("seed", range(6))
def test_random_conv_nets(seed):
    """Seeds 4 and 5 zero-pad the binary convolution c2 (per-position threshold classes)."""
    rng = np.random.default_rng(50 + seed)
    model = _random_cnn(
        rng, h=int(rng.integers(4, 7)), w=int(rng.integers(4, 7)), c=int(rng.choice([1, 2, 3])),
        bits=int(rng.choice([2, 4, 8])), signed=bool(seed % 2), pad_mode=["+1", "-1", "none", "+1", "zero", "zero"][seed],
        chw=seed < 2 or seed == 4, pool=seed not in (1, 5),
    )
    choices = {}
    conv2 = [i for i, l in model.compute_layers if l.name == "c2"][0]
    if seed in (0, 3):
        choices[conv2] = LayerChoice(engine=Engine.UNROLLED, mst_depth=2)
    images = _images(rng, model, 3)
    cfg = GenConfig(layers=choices, target_cycles=int(rng.choice([32, 128])), fifo_depth=seed % 3, register_every=1 + seed % 3)
    _check(model, cfg, images, seed=seed)


def test_register_every_shortens_unrolled_engines_and_is_recorded():
    """Fewer pipeline registers: a shorter latency and fewer flip-flops, the same results (the
    whole-top checks above run register_every 1..3), and the choice is in design.json."""
    from bnnfab.codegen.generate import design_manifest
    from bnnfab.hdl.unrolled import UnrolledDense

    model = zoo.load()
    unrolled = {2: LayerChoice(engine=Engine.UNROLLED, mst_depth=8)}
    engines = {}
    for r in (1, 2, 3):
        design = generate(model, GenConfig(target_cycles=256, layers=unrolled, register_every=r))
        [eng] = [e for e in design.top.engines if isinstance(e, UnrolledDense)]
        engines[r] = eng
        assert design_manifest(design)["config"]["register_every"] == r
    assert engines[1].latency > engines[2].latency > engines[3].latency
    assert engines[1].cost().registers > engines[2].cost().registers > engines[3].cost().registers
    with pytest.raises(ConfigError, match="register_every must be a positive integer"):
        GenConfig(register_every=0)
