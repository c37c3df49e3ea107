"""The calibrated resource model (bnnfab.codegen.estimate).

The memory-mapping cases are what Yosys (YoWASP, ``synth_ice40`` / ``synth_ecp5``) did with bare
memories of those shapes (``bench/estimate_calibration.py --memories`` re-measures them): they are
the independent reference for :func:`map_memory`. The whole-design accuracy against Yosys is a
``synth`` test in ``tests/test_autofold.py`` and the bench; single held-out components are
checked against Yosys here (``synth``).
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import require_yosys

from bnnfab.codegen import estimate as est
from bnnfab.codegen.config import Engine, GenConfig, LayerChoice
from bnnfab.codegen.generate import generate
from bnnfab.codegen.top import AcceleratorTop
from bnnfab.hdl.streams import WidthAdapter
from bnnfab.hdl.window import MaxPoolOr, SlidingWindow
from bnnfab.models import Dense, Flatten, InputSpec, Model, zoo

# (family, rom, width, depth) -> (block RAMs, ECP5 LUT-RAM cells) Yosys produced
YOSYS_MAPPING = {
    ("ice40", True, 64, 64): (0, 0),  # 256 either way: the tie goes to logic
    ("ice40", True, 16, 66): (0, 0),
    ("ice40", True, 16, 67): (1, 0),
    ("ice40", True, 8, 130): (0, 0),
    ("ice40", True, 8, 140): (1, 0),
    ("ice40", True, 32, 128): (2, 0),
    ("ice40", True, 4, 300): (1, 0),
    ("ice40", False, 64, 2): (0, 0),
    ("ice40", False, 8, 9): (0, 0),
    ("ice40", False, 16, 5): (1, 0),
    ("ice40", False, 11, 12): (1, 0),
    ("ecp5", True, 64, 64): (0, 0),
    ("ecp5", True, 36, 61): (1, 0),
    ("ecp5", True, 18, 130): (1, 0),
    ("ecp5", False, 64, 2): (0, 16),
    ("ecp5", False, 11, 12): (0, 3),
    ("ecp5", False, 16, 17): (0, 8),
    ("ecp5", False, 16, 128): (1, 0),
    ("ecp5", False, 8, 9): (0, 2),
}


@pytest.mark.parametrize("key", sorted(YOSYS_MAPPING), ids=lambda k: f"{k[0]}-{'rom' if k[1] else 'ram'}-{k[3]}x{k[2]}")
def test_memory_mapping_follows_yosys(key):
    fam, rom, width, depth = key
    c = est.memory_cost(width, depth, fam, rom=rom)
    assert (c.brams, c.lutram) == YOSYS_MAPPING[key]


def test_rom_in_logic_costs_only_its_nonconstant_columns():
    # a 32-deep ROM stays in logic on iCE40; constant columns are wires to 0/1
    rows_const = [0b1010] * 32
    assert est.memory_cost(4, 32, "ice40", rom=True, rows=rows_const).luts == 0
    rng = np.random.default_rng(3)
    rows = [int(v) for v in rng.integers(0, 16, 32)]
    live = est.memory_cost(4, 32, "ice40", rom=True, rows=rows)
    one_col = est.memory_cost(4, 32, "ice40", rom=True, rows=[(r & 1) | 0b0110 for r in rows])
    assert live.luts == pytest.approx(4 * one_col.luts)


def test_bad_family_is_a_clear_error():
    with pytest.raises(est.EstimateError, match="family must be one of 'ice40', 'ecp5', not 'xc7'"):
        est.memory_cost(8, 8, "xc7", rom=True)


def _small_model():
    rng = np.random.default_rng(5)
    layers = [Flatten(name="flat")]
    dims = [16, 24, 12, 6]
    for i, (k, n) in enumerate(zip(dims, dims[1:])):
        last = i == len(dims) - 2
        t = None if last else (rng.integers(-200, 200, n) if i == 0 else rng.integers(-4, 5, n))
        layers.append(Dense(name=f"d{i}", weights=rng.random((n, k)) < 0.5, thresholds=t))
    return Model(InputSpec((4, 4, 1), bits=8, signed=False), layers, name="small")


def test_report_columns_sum_to_every_block_of_the_top():
    model = _small_model()
    cfg = GenConfig(target_cycles=16, fifo_depth=2, layers={3: LayerChoice(engine=Engine.UNROLLED, mst_depth=0)})
    design = generate(model, cfg)
    rep = design.report
    # independent of the report's attribution: every block of the chain costed on its own
    for fam, col, ffcol in (("ice40", "lut_ice40_est", "ff_ice40_est"), ("ecp5", "lut_ecp5_est", "ff_ecp5_est")):
        blocks = [est.block_cost(b, fam) for b in design.top.chain]
        assert abs(rep[col].sum() - sum(c.luts for c in blocks)) <= len(rep)  # rounding per row
        assert abs(rep[ffcol].sum() - sum(c.ffs for c in blocks)) <= len(rep)
        assert rep[f"bram_{fam}" if fam == "ice40" else "bram_ecp5_est"].sum() == sum(c.brams for c in blocks)
    assert (rep["lut4_est"] == rep["lut_ice40_est"]).all()
    # the FIFOs, adapters and the argmax are glue: the last layer carries the argmax
    assert rep["glue_lut_ice40_est"].iloc[-1] > 0


def test_estimate_plan_equals_estimate_of_the_built_top():
    design = generate(zoo.load("digits-tfc"), GenConfig(target_cycles=128))
    a = est.estimate_plan(design.plan).total("ecp5")
    b = est.estimate_top(AcceleratorTop(design.plan)).total("ecp5")
    assert a == b


def test_more_folding_is_never_estimated_larger_on_the_zoo_mlp():
    # folded engines shrink as they take more cycles (a property of the hardware, not of the fit)
    model = zoo.load("digits-ecoc-mlp")
    luts = [est.estimate_plan(generate(model, GenConfig(target_cycles=t)).plan).total("ice40").fit_luts
            for t in (64, 256, 1024)]
    assert luts[0] > luts[1] > luts[2]


# Held-out components (shapes not among bench/estimate_calibration.py's FIT_DESIGNS) on the two
# effects the fit separates: one-valued pad bits in a window register, and ECP5's LUT5 mapping of
# split adapters with a chunk ratio of at most 4.
HELD_OUT_COMPONENTS = {
    "window-4x4x20-pad0": lambda: SlidingWindow(4, 4, 20, 1, kernel=3, pads=1, pad_value=0),
    "window-4x4x20-pad1": lambda: SlidingWindow(4, 4, 20, 1, kernel=3, pads=1, pad_value=1),
    "pool-4x4x40": lambda: MaxPoolOr(4, 4, 40, kernel=2),
    "adapter-160-to-40": lambda: WidthAdapter(160, 40),
    "adapter-160-to-20": lambda: WidthAdapter(160, 20),
}


@pytest.mark.synth
@pytest.mark.parametrize("family", ["ice40", "ecp5"])
@pytest.mark.parametrize("name", sorted(HELD_OUT_COMPONENTS))
def test_component_estimate_is_within_15_percent_of_yosys(name, family):
    from amaranth.back import verilog

    from bnnfab.codegen.synth import synthesize

    require_yosys()
    block = HELD_OUT_COMPONENTS[name]()
    cost = est.block_cost(block, family)
    actual = synthesize(verilog.convert(block, name="top", emit_src=False), "top", family)
    # the whole-design scale (FAMILY_LUT_SCALE) is for cross-block optimisation: undo it here
    luts = cost.luts / est.FAMILY_LUT_SCALE[family]
    assert abs(luts - actual.lut_equivalent) <= 0.15 * actual.lut_equivalent, (luts, actual.counts())
    assert cost.brams == actual.brams
