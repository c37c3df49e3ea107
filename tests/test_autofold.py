"""``--fold auto`` (bnnfab.codegen.autofold): the fastest folding whose calibrated estimate fits.

The reference is a brute-force enumeration written here: every PE in 1..N and SIMD in 1..K of
every layer (not only the lane counts the search considers) and the unrolled engine, each
design planned by ``make_plan`` and estimated whole by ``estimate_plan``; auto_fold must be as
fast as the fastest design of that enumeration that fits, and no more expensive than the
cheapest one at that speed.
"""

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np
import pandas as pd
import pytest
from conftest import require_yosys

from bnnfab.boards.platforms import BOARDS, Resources
from bnnfab.codegen import estimate as est
from bnnfab.codegen.autofold import AutoFoldError, auto_fold, parse_fold_auto, plan_auto_fold
from bnnfab.codegen.config import Engine, GenConfig, LayerChoice
from bnnfab.codegen.plan import make_plan
from bnnfab.models import Dense, Flatten, InputSpec, Model


def _tiny() -> Model:
    rng = np.random.default_rng(11)
    return Model(
        InputSpec((2, 2, 2), bits=8, signed=False),
        [
            Flatten(name="flat"),
            Dense(name="d0", weights=rng.random((6, 8)) < 0.5, thresholds=rng.integers(-300, 300, 6)),
            Dense(name="d1", weights=rng.random((4, 6)) < 0.5, thresholds=None),
        ],
        name="tiny",
    )


def _board(luts: int, brams: int = 30):
    return dataclasses.replace(BOARDS["icebreaker"], resources=Resources(luts=luts, ffs=10**6, brams=brams, dsps=8))


def _brute_force(model: Model, budget: float, brams: int):
    """(cycles, fit LUTs) of every design of the enumeration that fits."""
    choices0 = [LayerChoice(engine=Engine.FOLDED, pe=p, simd=s) for p in range(1, 7) for s in range(1, 9)]
    choices1 = [LayerChoice(engine=Engine.FOLDED, pe=p, simd=s) for p in range(1, 5) for s in range(1, 7)]
    choices1 += [LayerChoice(engine=Engine.UNROLLED, mst_depth=d, mst=d != 0) for d in (0, 2)]
    out = []
    for c0, c1 in itertools.product(choices0, choices1):
        plan = make_plan(model, GenConfig(layers={1: c0, 2: c1}))
        t = est.estimate_plan(plan, ["ice40"]).total("ice40")
        if t.fit_luts <= budget and t.brams <= brams:
            out.append((plan.cycles_per_image, t.fit_luts))
    return out


@pytest.fixture(scope="module")
def tiny_case():
    model = _tiny()
    # a budget between the fully folded and the fastest design
    mid = make_plan(model, GenConfig(layers={1: LayerChoice(pe=2, simd=2), 2: LayerChoice(pe=1, simd=3)}))
    luts = math.ceil(est.estimate_plan(mid, ["ice40"]).total("ice40").fit_luts / 0.85)
    board = _board(luts)
    return model, board, _brute_force(model, 0.85 * luts, 30)


def test_auto_fold_is_as_fast_as_brute_force_and_no_larger(tiny_case):
    model, board, feasible = tiny_case
    best = min(c for c, _ in feasible)
    slowest = max(c for c, _ in feasible)
    assert best < slowest  # the budget really constrains the choice
    res = plan_auto_fold(model, board, mst_depths=(0, 2))
    assert res.cycles_per_image == best
    exact = est.estimate_plan(make_plan(model, res.config), ["ice40"]).total("ice40")
    assert exact == res.estimate
    assert exact.fit_luts <= 0.85 * board.resources.luts and exact.brams <= board.resources.brams
    cheapest = min(luts for c, luts in feasible if c <= best)
    assert exact.fit_luts <= cheapest + 1e-6  # balanced: nothing faster than needed is paid for


def test_auto_fold_config_is_explicit_and_reproduces_the_cycles(tiny_case):
    model, board, _ = tiny_case
    cfg = auto_fold(model, board, mst_depths=(0, 2), base=GenConfig(name="tiny_top", fifo_depth=1))
    assert set(cfg.layers) == {1, 2} and cfg.target_cycles is None
    assert cfg.name == "tiny_top" and cfg.fifo_depth == 1
    plan = make_plan(model, cfg)
    assert plan.cycles_per_image == plan_auto_fold(model, board, mst_depths=(0, 2), base=cfg).cycles_per_image


def test_a_large_board_unrolls_everything_it_can():
    model = _tiny()
    res = plan_auto_fold(model, "ulx3s")
    # one vector per cycle in the binary layer; the integer layer folded to one cycle too
    assert res.cycles_per_image == 1
    assert res.config.layers[2].engine is Engine.UNROLLED
    assert res.config.layers[1].pe == 6 and res.config.layers[1].simd == 8
    assert res.images_per_second == pytest.approx(25e6)


def test_nothing_fits_names_the_board_and_the_need():
    with pytest.raises(AutoFoldError, match=r"even the most folded design of tiny needs about .* LUT4 .* on board 'icebreaker'"):
        auto_fold(_tiny(), _board(60))


def test_board_without_model_and_bad_options():
    with pytest.raises(AutoFoldError, match="board 'arty' .* has no resource model"):
        auto_fold(_tiny(), "arty")
    with pytest.raises(AutoFoldError, match=r"margin must be a number in \(0, 1\], not 1.5"):
        auto_fold(_tiny(), "ulx3s", margin=1.5)
    with pytest.raises(AutoFoldError, match="mst_depths must hold whole numbers >= 0 or None, not -1"):
        auto_fold(_tiny(), "ulx3s", mst_depths=(0, -1))


def test_parse_fold_auto():
    assert parse_fold_auto(["auto"]) is True
    assert parse_fold_auto(None) is False
    assert parse_fold_auto([(1, 2, 3)]) is False
    with pytest.raises(AutoFoldError, match="cannot be combined"):
        parse_fold_auto(["auto", (1, 2, 3)])


@pytest.mark.synth
def test_estimate_of_an_auto_folded_design_is_within_15_percent_of_yosys(tmp_path):
    from bnnfab.codegen.generate import generate
    from bnnfab.codegen.synth import synthesize
    from bnnfab.models import zoo

    require_yosys()
    model = zoo.load("digits-tfc")
    # the iCEBreaker with a third of its LUTs: a mid-sized folded design (synthesises in ~20 s)
    small = dataclasses.replace(BOARDS["icebreaker"], resources=Resources(luts=1800, ffs=5280, brams=30, dsps=8))
    res = plan_auto_fold(model, small, allow_unrolled=False)
    design = generate(model, res.config)
    actual = synthesize(design.verilog, design.name, "ice40", workdir=tmp_path)
    err = (res.estimate.luts - actual.lut_equivalent) / actual.lut_equivalent
    assert abs(err) <= 0.15, (res.estimate, actual.counts())
    assert res.estimate.brams == actual.brams


def test_build_fold_auto_refolds_when_unrolled_layers_miss_timing(monkeypatch, tmp_path, capsys):
    """``bnnfab build --fold auto``: a timing miss with unrolled layers is rebuilt all folded (the
    place-and-route is replaced by a stand-in that misses timing while any layer is unrolled)."""
    from bnnfab import cli
    from bnnfab.boards import build as bb
    from bnnfab.codegen import generate as gen
    from bnnfab.codegen.config import Engine

    configs, real_generate = [], gen.generate

    def recording_generate(model, config):
        configs.append(config)
        return real_generate(model, config)

    class Result:
        bitstream = tmp_path / "top.bit"

        def table(self):
            return pd.DataFrame([{"lut_equivalent": 1}])

    def fake_run_build(info, require_timing=True):
        if any(c.engine is Engine.UNROLLED for c in configs[-1].layers.values()):
            raise bb.TimingError("reaches 20 MHz, below its clock of 25 MHz", None)
        return Result()

    def fake_run_build_always_late(info, require_timing=True):
        raise bb.TimingError("reaches 20 MHz, below its clock of 25 MHz", None)

    monkeypatch.setattr(gen, "generate", recording_generate)
    monkeypatch.setattr(bb, "run_build", fake_run_build)
    args = ["build", "digits-tfc-mst", "--board", "ulx3s", "-o", str(tmp_path), "--fold", "auto"]
    assert cli.main(args) == 0
    first, second = configs
    assert any(c.engine is Engine.UNROLLED for c in first.layers.values())  # the ULX3S plan unrolls
    assert all(c.engine is Engine.FOLDED for c in second.layers.values())
    assert "planning again with every layer folded" in capsys.readouterr().out

    # a folded plan that still misses timing is the user's error, named, once
    configs.clear()
    monkeypatch.setattr(bb, "run_build", fake_run_build_always_late)
    assert cli.main(args) == 2
    assert len(configs) == 2 and "below its clock" in capsys.readouterr().err
