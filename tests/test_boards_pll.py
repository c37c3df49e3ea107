"""Board clocks (``bnnfab.boards.clocking``): the PLL setting search against brute force and the
published outputs of icestorm's ``icepll`` and Trellis' ``ecppll``; the lock-reset gateware in
Amaranth's simulator; board plans with a PLL (the primitive and its parameters in the netlist, the
clock constraint, the UART divisor from the PLL's clock); and, marker ``synth``, real iCEBreaker
and ULX3S builds at a PLL clock whose nextpnr timing constraint is the PLL's clock.
"""

from __future__ import annotations

import json
import math
import re
from fractions import Fraction

import numpy as np
import pytest
from amaranth.hdl import Fragment
from amaranth.sim import Simulator

from bnnfab.boards.clocking import (
    ClockError,
    Ecp5Pll,
    Ice40Pll,
    LockReset,
    PllClock,
    ecp5_pll,
    ice40_filter_range,
    ice40_pll,
    plan_clock,
)

MHZ = 1e6


# --- the search ---------------------------------------------------------------------------------


def _ice40_settings(f_in):
    """Every valid SB_PLL40 SIMPLE-feedback setting, from the datasheet's ranges, in floats."""
    for divr in range(16):
        pfd = f_in / (divr + 1)
        if not 10 * MHZ <= pfd <= 133 * MHZ:
            continue
        for divf in range(128):
            vco = pfd * (divf + 1)
            if not 533 * MHZ <= vco <= 1066 * MHZ:
                continue
            for divq in range(1, 7):
                out = vco / 2**divq
                if 16 * MHZ <= out <= 275 * MHZ:
                    yield (divr, divf, divq), out


def _ecp5_outputs(f_in):
    """Every EHXPLLL output frequency reachable with a valid VCO (CLKOP feedback), in floats."""
    for clki in range(1, 129):
        pfd = f_in / clki
        if not 3.125 * MHZ <= pfd <= 400 * MHZ:
            continue
        for clkfb in range(1, 81):
            out = pfd * clkfb
            if 10 * MHZ <= out <= 400 * MHZ and any(400 * MHZ <= out * d <= 800 * MHZ for d in range(1, 129)):
                yield (clki, clkfb), out


@pytest.mark.parametrize("f_in", [12 * MHZ, 25 * MHZ, 100 * MHZ])
def test_ice40_search_is_valid_and_optimal(f_in):
    settings = list(_ice40_settings(f_in))
    for want in (16.5, 20, 27.3, 30, 33.333, 48, 60.1, 99, 150, 200, 250):
        want *= MHZ
        best = min(abs(out - want) for _, out in settings)
        if best > 0.01 * want:
            with pytest.raises(ClockError, match="PLL output to .* is .* off, more than the 1 % allowed"):
                ice40_pll(f_in, want)
            continue
        p = ice40_pll(f_in, want)
        assert isinstance(p, Ice40Pll)
        # independently: the datasheet's formulas from the dividers, and its ranges
        pfd = f_in / (p.divr + 1)
        vco = pfd * (p.divf + 1)
        out = vco / 2**p.divq
        assert 0 <= p.divr <= 15 and 0 <= p.divf <= 127 and 1 <= p.divq <= 6
        assert 10 * MHZ <= pfd <= 133 * MHZ and 533 * MHZ <= vco <= 1066 * MHZ and 16 * MHZ <= out <= 275 * MHZ
        assert float(p.f_out) == pytest.approx(out, rel=1e-12) and float(p.f_vco) == pytest.approx(vco, rel=1e-12)
        # nearest of all valid settings
        assert abs(out - want) <= best * (1 + 1e-9) + 1e-6
        assert p.filter_range == ice40_filter_range(pfd)


def test_ice40_matches_icepll():
    # icepll -i 12 -o 30 / -o 48; -i 48 -o 100 / -o 60 (DIVR, DIVF, DIVQ, FILTER_RANGE)
    for f_in, f_out, want in ((12, 30, (0, 79, 5, 1)), (12, 48, (0, 63, 4, 1)), (48, 100, (2, 49, 3, 1)),
                              (48, 60, (0, 19, 4, 4))):
        p = ice40_pll(f_in * MHZ, f_out * MHZ)
        assert (p.divr, p.divf, p.divq, p.filter_range) == want
        assert p.f_out == Fraction(f_out * 10**6)
    # icepll -i 12 -o 20 achieves 19.875 MHz (DIVF 52, DIVQ 5): 0.6 % off, accepted
    p = ice40_pll(12 * MHZ, 20 * MHZ)
    assert (p.divr, p.divf, p.divq) == (0, 52, 5) and p.f_out == Fraction(19_875_000)


def test_ice40_filter_range_table():
    for mhz, want in ((10, 1), (16.99, 1), (17, 2), (25.9, 2), (26, 3), (43.9, 3), (44, 4), (65.9, 4), (66, 5),
                      (100.9, 5), (101, 6), (133, 6)):
        assert ice40_filter_range(mhz * MHZ) == want


@pytest.mark.parametrize("f_in", [12 * MHZ, 25 * MHZ])
def test_ecp5_search_is_valid_and_optimal(f_in):
    outputs = [out for _, out in _ecp5_outputs(f_in)]
    for want in (10, 16, 33.3, 40, 50, 65, 77.7, 100, 125, 133.33, 200, 399):
        want *= MHZ
        best = min(abs(o - want) for o in outputs)
        if best > 0.01 * want:  # e.g. 16 MHz from 25 MHz: 15.625 at best
            with pytest.raises(ClockError, match="PLL output to .* is .* off, more than the 1 % allowed"):
                ecp5_pll(f_in, want)
            continue
        p = ecp5_pll(f_in, want)
        assert isinstance(p, Ecp5Pll)
        pfd = f_in / p.clki_div
        out = pfd * p.clkfb_div
        vco = out * p.clkop_div
        assert 1 <= p.clki_div <= 128 and 1 <= p.clkfb_div <= 80 and 1 <= p.clkop_div <= 128
        assert 3.125 * MHZ <= pfd <= 400 * MHZ and 400 * MHZ <= vco <= 800 * MHZ and 10 * MHZ <= out <= 400 * MHZ
        assert float(p.f_out) == pytest.approx(out, rel=1e-12)
        assert abs(out - want) <= best * (1 + 1e-9) + 1e-6
        assert p.clkop_cphase == p.clkop_div - 1
        # the VCO nearest 600 MHz among the CLKOP dividers that fit
        fits = [d for d in range(1, 129) if 400 * MHZ <= out * d <= 800 * MHZ]
        assert abs(vco - 600 * MHZ) == pytest.approx(min(abs(out * d - 600 * MHZ) for d in fits), abs=1e-3)


def test_ecp5_matches_ecppll():
    # ecppll -i 12 -o 16: CLKI_DIV 3, CLKFB_DIV 4, CLKOP_DIV 37 (VCO 592 MHz); -i 25 -o 50: 1, 2, 12
    p = ecp5_pll(12 * MHZ, 16 * MHZ)
    assert (p.clki_div, p.clkfb_div, p.clkop_div) == (3, 4, 37) and p.f_vco == Fraction(592 * 10**6)
    p = ecp5_pll(25 * MHZ, 50 * MHZ)
    assert (p.clki_div, p.clkfb_div, p.clkop_div, p.clkop_cphase) == (1, 2, 12, 11)


def test_search_errors():
    with pytest.raises(ClockError, match=r"the iCE40 PLL's output range is 16 MHz to 275 MHz; 12.5 MHz is outside it"):
        ice40_pll(12 * MHZ, 12.5 * MHZ)
    with pytest.raises(ClockError, match=r"output range is 16 MHz to 275 MHz; 300 MHz is outside it"):
        ice40_pll(12 * MHZ, 300 * MHZ)
    with pytest.raises(ClockError, match=r"the nearest iCE40 PLL output to 15.9 MHz is 16.125 MHz \(1.42 % off, "
                                         r"more than the 1 % allowed\); ask for 16.125 MHz"):
        ice40_pll(12 * MHZ, 15.9 * MHZ)
    assert ice40_pll(12 * MHZ, 15.9 * MHZ, tolerance=0.02).f_out == Fraction(16_125_000)
    with pytest.raises(ClockError, match=r"the iCE40 PLL takes an input of 10 MHz to 133 MHz, not 5 MHz"):
        ice40_pll(5 * MHZ, 30 * MHZ)
    with pytest.raises(ClockError, match=r"the ECP5 PLL's output range is 10 MHz to 400 MHz; 500 MHz is outside it"):
        ecp5_pll(25 * MHZ, 500 * MHZ)
    with pytest.raises(ClockError, match="the requested clock must be a positive frequency in Hz, not nan"):
        ecp5_pll(25 * MHZ, math.nan)
    with pytest.raises(ClockError, match="tolerance must be a fraction in"):
        ice40_pll(12 * MHZ, 30 * MHZ, tolerance=-0.1)
    # within the tolerance of the range's end is still served
    assert ice40_pll(12 * MHZ, 15.99 * MHZ).f_out == Fraction(16_125_000)


def test_plan_clock():
    none = plan_clock("icebreaker")
    assert none.pll is None and none.achieved_hz == 12e6 and none.hook() is None
    assert none.describe() == "clock 12 MHz (the icebreaker oscillator, no PLL)"
    assert plan_clock("ulx3s", 25).pll is None
    c = plan_clock("icebreaker", 30)
    assert c.achieved_hz == 30e6 and c.requested_hz == 30e6 and isinstance(c.hook(), PllClock)
    assert c.describe() == ("clock requested 30 MHz, achieved 30 MHz (SB_PLL40_PAD from the 12 MHz oscillator: "
                            "DIVR=0, DIVF=79, DIVQ=5, FILTER_RANGE=1; VCO 960 MHz)")
    c = plan_clock("ulx3s", 33.3)
    assert c.achieved_hz == pytest.approx(100e6 / 3) and "achieved 33.3333 MHz" in c.describe()
    assert json.loads(json.dumps(c.to_json()))["pll"]["CLKI_DIV"] == 3
    with pytest.raises(ClockError, match=r"board 'arty' \(XC7A35T-1CSG324\) has no PLL support here"):
        plan_clock("arty", 50)
    with pytest.raises(ClockError, match=r"--clock-mhz must be a positive number of MHz, not 0"):
        plan_clock("icebreaker", 0)
    assert plan_clock("arty", 100).pll is None


# --- reset ----------------------------------------------------------------------------------------


def test_lock_reset_holds_until_lock_plus_hold():
    hold = 5
    dut = LockReset(hold)
    trace = []
    lock_pattern = [0] * 6 + [1] * 20 + [0] * 6 + [1] * 3 + [0] * 4

    async def bench(ctx):
        for lock in lock_pattern:
            ctx.set(dut.lock, lock)
            await ctx.tick()
            trace.append(ctx.get(dut.rst))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    rst = np.array(trace)
    # lock set before edge 6 (0-based) rises; rst is sampled after each edge
    rise, fall = 6, 26
    assert rst[:rise + hold + 2].all(), "reset held for the synchronizer and the hold time"
    assert not rst[rise + hold + 2 : fall + 2].any(), "released hold + 3 edges after lock, until lock falls"
    assert rst[fall + 2 :].all(), "asserted again 3 edges after lock falls; a 3-cycle lock pulse is too short"
    with pytest.raises(ValueError, match="hold_cycles must be a positive integer, not 0"):
        LockReset(0)


# --- plans ----------------------------------------------------------------------------------------

amaranth_boards = pytest.importorskip("amaranth_boards", reason="board plans need amaranth-boards (the [board] extra)")

from bnnfab.boards.build import load_plan, plan_build, run_build  # noqa: E402
from bnnfab.boards.platforms import BOARDS  # noqa: E402
from bnnfab.boards.top import BoardTop  # noqa: E402
from conftest import require_board_tools  # noqa: E402
from test_board_build import small_design, yowasp_cache  # noqa: E402, F401 - fixtures used below


def _cell(rtlil: str, cell_type: str) -> dict[str, str]:
    """Parameters of the one cell of ``cell_type`` in an RTLIL netlist."""
    blocks = re.findall(rf"^\s*cell \\{cell_type} .*?^\s*end$", rtlil, re.MULTILINE | re.DOTALL)
    assert len(blocks) == 1, f"{len(blocks)} cells of type {cell_type}"
    return dict(re.findall(r"parameter \\(\w+) (\S+)", blocks[0]))


def test_icebreaker_plan_with_pll(small_design, tmp_path):
    info = plan_build(small_design, "icebreaker", tmp_path, clock_mhz=30)
    assert (info.clock_hz, info.requested_clock_hz) == (30e6, 30e6) and info.pll["DIVF"] == 79
    again = load_plan(tmp_path)
    assert again.pll == info.pll and again.requested_clock_hz == 30e6
    il = (tmp_path / "bnnfab_top.il").read_text()
    params = _cell(il, "SB_PLL40_PAD")
    # icepll -i 12 -o 30: DIVR 0, DIVF 79 (7'1001111), DIVQ 5 (3'101), FILTER_RANGE 1
    assert params == {"FEEDBACK_PATH": '"SIMPLE"', "PLLOUT_SELECT": '"GENCLK"', "DIVR": "4'0000",
                      "DIVF": "7'1001111", "DIVQ": "3'101", "FILTER_RANGE": "3'001"}
    pcf = (tmp_path / "bnnfab_top.pcf").read_text()
    assert "set_io clk12_0__io 35" in pcf and "set_frequency pll_out 30.0" in pcf
    without = plan_build(small_design, "icebreaker", tmp_path / "plain")
    assert without.pll is None and without.clock_hz == 12e6
    assert "SB_PLL40" not in (tmp_path / "plain" / "bnnfab_top.il").read_text()


def test_ulx3s_plan_with_pll(small_design, tmp_path):
    info = plan_build(small_design, "ulx3s", tmp_path, clock_mhz=50)
    params = _cell((tmp_path / "bnnfab_top.il").read_text(), "EHXPLLL")
    assert {k: params[k] for k in ("CLKI_DIV", "CLKFB_DIV", "CLKOP_DIV", "CLKOP_CPHASE", "FEEDBK_PATH")} == {
        "CLKI_DIV": "1", "CLKFB_DIV": "2", "CLKOP_DIV": "12", "CLKOP_CPHASE": "11", "FEEDBK_PATH": '"CLKOP"'}
    assert 'FREQUENCY NET "pll_out" 50000000.0 HZ;' in (tmp_path / "bnnfab_top.lpf").read_text()
    assert info.clock_hz == 50e6
    with pytest.raises(ClockError, match="the ECP5 PLL's output range is 10 MHz to 400 MHz; 450 MHz is outside it"):
        plan_build(small_design, "ulx3s", tmp_path / "bad", clock_mhz=450)


@pytest.mark.parametrize(("board", "mhz", "achieved"), [("icebreaker", 100, 100.5e6), ("ulx3s", 33.3, 100e6 / 3),
                                                         ("icebreaker", None, 12e6)])
def test_uart_divisor_comes_from_the_pll_clock(small_design, board, mhz, achieved):
    top = BoardTop(small_design.top, baud=115200, clock=plan_clock(board, mhz).hook())
    Fragment.get(top, BOARDS[board].platform())
    assert top.clk_hz == pytest.approx(achieved)
    assert top.core.divisor == round(achieved / 115200)


# --- real builds ----------------------------------------------------------------------------------


@pytest.mark.synth
@pytest.mark.parametrize(("board", "mhz", "pll_cell"), [("icebreaker", 30, "ICESTORM_PLL"), ("ulx3s", 50, "EHXPLLL")])
def test_pll_build(yowasp_cache, small_design, board, mhz, pll_cell, tmp_path):
    require_board_tools(board)
    info = plan_build(small_design, board, tmp_path, clock_mhz=mhz)
    result = run_build(info, require_timing=False)
    assert result.bitstream.is_file() and result.bitstream.stat().st_size > 0
    assert result.requested_clock_mhz == mhz and result.clock_mhz == mhz
    report = json.loads((tmp_path / "bnnfab_top.nextpnr.json").read_text())
    assert report["utilization"][pll_cell]["used"] == 1
    # one clock domain, constrained to the PLL's clock (the 12/25 MHz pin feeds only the PLL)
    (clock,) = report["fmax"].values()
    assert clock["constraint"] == pytest.approx(mhz, rel=1e-4)
    assert result.fmax_mhz == pytest.approx(clock["achieved"], abs=0.01)
    assert result.timing_met == (clock["achieved"] >= mhz)
    log = (tmp_path / "bnnfab_top.tim").read_text()
    assert "ignoring clock constraint" not in log
    row = json.loads((tmp_path / "build_report.json").read_text())
    assert (row["requested_clock_mhz"], row["clock_mhz"]) == (mhz, mhz)
