"""Board clocks: a PLL setting found by search, and the PLL and reset gateware of a board top.

``bnnfab build --clock-mhz F`` runs the accelerator at ``F`` MHz. When ``F`` is not the board
oscillator's frequency, :func:`plan_clock` searches the family's PLL dividers for the setting whose
output is nearest to ``F`` and :class:`PllClock` instantiates that PLL in the board top
(:class:`~bnnfab.boards.top.BoardTop`'s ``clock`` hook). The achieved frequency is exact (a
rational multiple of the oscillator's), may differ from the request, and is what the design is
constrained to and what the UART divisor is computed from.

iCE40 (``SB_PLL40_PAD``, feedback ``SIMPLE``)
    ``f_pfd = f_in / (DIVR + 1)``, ``f_vco = f_pfd * (DIVF + 1)``, ``f_out = f_vco / 2**DIVQ``, with
    ``DIVR`` 0..15, ``DIVF`` 0..127, ``DIVQ`` 1..6, and the ranges of Lattice's iCE40 sysCLOCK PLL
    guide: input 10..133 MHz, PFD 10..133 MHz, VCO 533..1066 MHz, output 16..275 MHz.
    ``FILTER_RANGE`` follows the PFD frequency (1 below 17 MHz, 2 below 26, 3 below 44, 4 below 66,
    5 below 101, else 6; the table icestorm's ``icepll`` uses). The ``_PAD`` variant, because the
    iCEBreaker's 12 MHz oscillator is on pin 35, the pad wired to the UP5K's PLL: the ``_CORE``
    variant cannot be placed when its reference comes from that pin (nextpnr and icestorm
    maintainers), and the pad then feeds only the PLL.
ECP5 (``EHXPLLL``, ``FEEDBK_PATH="CLKOP"``)
    ``f_pfd = f_in / CLKI_DIV``, ``f_out = f_pfd * CLKFB_DIV``, ``f_vco = f_out * CLKOP_DIV``, with
    ``CLKI_DIV`` 1..128, ``CLKFB_DIV`` 1..80, ``CLKOP_DIV`` 1..128, input 8..400 MHz and VCO
    400..800 MHz (the ECP5 data sheet), PFD 3.125..400 MHz and output 10..400 MHz (the limits
    Project Trellis' ``ecppll`` checks; the data sheet allows outputs down to 3.125 MHz).
    ``CLKOP_CPHASE = CLKOP_DIV - 1`` (no phase shift, as Lattice's tools set it); of the
    ``CLKOP_DIV`` values that keep the VCO in range, the one with the VCO nearest 600 MHz.

Search: every divider combination is tried; the setting with the smallest error wins, ties going
to the higher PFD (the smaller input divider), then the smaller feedback divider. A request
outside the PLL's output range, or whose best setting is more than ``tolerance`` (default 1 %)
away, raises :class:`ClockError` naming the range or the nearest frequency. Settings are
deterministic: the same request gives the same dividers.

Reset: the PLL's ``LOCK`` output passes a two-flip-flop synchronizer into the PLL's clock domain
(:class:`LockReset`); ``sync`` is held in reset until ``LOCK`` has been high for ``hold_cycles``
cycles (15 us worth by default, as Amaranth does after configuration: iCE40 block RAMs read
zeros for about 3 us after configuration), and again three cycles after ``LOCK`` falls.

Limits: one output clock (``CLKOP`` / ``PLLOUTGLOBAL``); no fractional or phase settings; the
Arty (Xilinx) has no PLL support here (:func:`plan_clock` refuses a different clock for it);
the jitter and loop-filter choices of Lattice's tools are not modelled beyond ``FILTER_RANGE``
and the ``EHXPLLL`` attributes ``ecppll`` writes (``ICP_CURRENT=12``, ``LPF_RESISTOR=8``,
``MFG_ENABLE_FILTEROPAMP=1``, ``MFG_GMCREF_SEL=2``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from amaranth.hdl import ClockDomain, Const, Instance, Module, Signal
from amaranth.lib import io, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

from .platforms import Board, Flow, get_board

__all__ = [
    "ClockError",
    "DEFAULT_TOLERANCE",
    "ICE40_LIMITS",
    "ECP5_LIMITS",
    "Ice40Pll",
    "Ecp5Pll",
    "ice40_pll",
    "ecp5_pll",
    "ice40_filter_range",
    "ClockPlan",
    "plan_clock",
    "LockReset",
    "PllClock",
]

#: Largest relative distance between the requested and the achieved frequency.
DEFAULT_TOLERANCE = 0.01
#: Reset held after LOCK, in seconds (Amaranth's iCE40 power-on delay; BRAMs need ~3 us).
RESET_HOLD_SECONDS = 15e-6

MHZ = 1_000_000


class ClockError(ValueError):
    """A clock request no PLL setting of the board can meet; the message says why and what can."""


@dataclass(frozen=True)
class _Limits:
    """Frequency ranges of a PLL, in Hz (inclusive)."""

    f_in: tuple[int, int]
    f_pfd: tuple[Fraction, Fraction]
    f_vco: tuple[int, int]
    f_out: tuple[int, int]


ICE40_LIMITS = _Limits(f_in=(10 * MHZ, 133 * MHZ), f_pfd=(Fraction(10 * MHZ), Fraction(133 * MHZ)),
                       f_vco=(533 * MHZ, 1066 * MHZ), f_out=(16 * MHZ, 275 * MHZ))
ECP5_LIMITS = _Limits(f_in=(8 * MHZ, 400 * MHZ), f_pfd=(Fraction(3_125_000), Fraction(400 * MHZ)),
                      f_vco=(400 * MHZ, 800 * MHZ), f_out=(10 * MHZ, 400 * MHZ))


def _within(x: Fraction, lo_hi) -> bool:
    return lo_hi[0] <= x <= lo_hi[1]


def _mhz(f) -> str:
    return f"{float(f) / MHZ:.6g} MHz"


def _exact_hz(f_hz: float, what: str) -> Fraction:
    if isinstance(f_hz, bool) or not isinstance(f_hz, (int, float, Fraction)) or not math.isfinite(f_hz) or f_hz <= 0:
        raise ClockError(f"{what} must be a positive frequency in Hz, not {f_hz!r}")
    # board oscillators are whole Hz; a requested float is taken to the nearest mHz
    return Fraction(f_hz).limit_denominator(1000)


def ice40_filter_range(f_pfd_hz: float) -> int:
    """``FILTER_RANGE`` of an iCE40 PLL for a PFD frequency (module docstring)."""
    mhz = f_pfd_hz / MHZ
    for bound, value in ((17, 1), (26, 2), (44, 3), (66, 4), (101, 5)):
        if mhz < bound:
            return value
    return 6


@dataclass(frozen=True)
class Ice40Pll:
    """One ``SB_PLL40_PAD`` setting (feedback ``SIMPLE``); frequencies are exact fractions in Hz."""

    f_in: Fraction
    divr: int
    divf: int
    divq: int

    @property
    def f_pfd(self) -> Fraction:
        return self.f_in / (self.divr + 1)

    @property
    def f_vco(self) -> Fraction:
        return self.f_pfd * (self.divf + 1)

    @property
    def f_out(self) -> Fraction:
        return self.f_vco / (1 << self.divq)

    @property
    def filter_range(self) -> int:
        return ice40_filter_range(self.f_pfd)

    def parameters(self) -> dict[str, Any]:
        """The primitive's parameters, as :class:`PllClock` passes them."""
        return {"FEEDBACK_PATH": "SIMPLE", "PLLOUT_SELECT": "GENCLK", "DIVR": self.divr, "DIVF": self.divf,
                "DIVQ": self.divq, "FILTER_RANGE": self.filter_range}

    def to_json(self) -> dict:
        return {"primitive": "SB_PLL40_PAD", **self.parameters(), "f_in_hz": float(self.f_in),
                "f_pfd_hz": float(self.f_pfd), "f_vco_hz": float(self.f_vco), "f_out_hz": float(self.f_out)}


@dataclass(frozen=True)
class Ecp5Pll:
    """One ``EHXPLLL`` setting (feedback from ``CLKOP``); frequencies are exact fractions in Hz."""

    f_in: Fraction
    clki_div: int
    clkfb_div: int
    clkop_div: int

    @property
    def f_pfd(self) -> Fraction:
        return self.f_in / self.clki_div

    @property
    def f_out(self) -> Fraction:
        return self.f_pfd * self.clkfb_div

    @property
    def f_vco(self) -> Fraction:
        return self.f_out * self.clkop_div

    @property
    def clkop_cphase(self) -> int:
        return self.clkop_div - 1

    def parameters(self) -> dict[str, Any]:
        return {
            "PLLRST_ENA": "DISABLED", "INTFB_WAKE": "DISABLED", "STDBY_ENABLE": "DISABLED",
            "DPHASE_SOURCE": "DISABLED", "OUTDIVIDER_MUXA": "DIVA", "CLKOP_ENABLE": "ENABLED",
            "CLKI_DIV": self.clki_div, "CLKFB_DIV": self.clkfb_div, "CLKOP_DIV": self.clkop_div,
            "CLKOP_CPHASE": self.clkop_cphase, "CLKOP_FPHASE": 0, "FEEDBK_PATH": "CLKOP",
        }

    def to_json(self) -> dict:
        keep = ("CLKI_DIV", "CLKFB_DIV", "CLKOP_DIV", "CLKOP_CPHASE", "FEEDBK_PATH")
        params = self.parameters()
        return {"primitive": "EHXPLLL", **{k: params[k] for k in keep}, "f_in_hz": float(self.f_in),
                "f_pfd_hz": float(self.f_pfd), "f_vco_hz": float(self.f_vco), "f_out_hz": float(self.f_out)}


def _check_request(family: str, f_in: Fraction, f_out: Fraction, limits: _Limits, tolerance: float) -> None:
    if not (isinstance(tolerance, (int, float)) and 0 <= tolerance < 1):
        raise ClockError(f"tolerance must be a fraction in [0, 1), not {tolerance!r}")
    if not _within(f_in, limits.f_in):
        raise ClockError(f"the {family} PLL takes an input of {_mhz(limits.f_in[0])} to {_mhz(limits.f_in[1])}, "
                         f"not {_mhz(f_in)}")
    lo, hi = limits.f_out
    # a request just outside the range may still be met within the tolerance by its end
    if f_out * (1 + Fraction(tolerance)) < lo or f_out * (1 - Fraction(tolerance)) > hi:
        raise ClockError(f"the {family} PLL's output range is {_mhz(lo)} to {_mhz(hi)}; {_mhz(f_out)} is outside it")


def _best(family: str, f_out: Fraction, candidates, tolerance: float):
    best = min(candidates, key=lambda c: (abs(c[0].f_out - f_out), c[1]), default=None)
    if best is None:  # pragma: no cover - the range check leaves at least one candidate
        raise ClockError(f"no {family} PLL setting reaches {_mhz(f_out)}")
    pll = best[0]
    err = abs(pll.f_out - f_out) / f_out
    if err > Fraction(tolerance):
        raise ClockError(f"the nearest {family} PLL output to {_mhz(f_out)} is {_mhz(pll.f_out)} "
                         f"({float(err) * 100:.2f} % off, more than the {tolerance * 100:g} % allowed); "
                         f"ask for {float(pll.f_out) / MHZ:.6g} MHz")
    return pll


def ice40_pll(f_in_hz: float, f_out_hz: float, tolerance: float = DEFAULT_TOLERANCE) -> Ice40Pll:
    """The ``SB_PLL40_PAD`` setting nearest to ``f_out_hz`` from ``f_in_hz`` (module docstring).

    Raises
    ------
    ClockError
        The input or the request is outside the PLL's ranges, or no setting is within
        ``tolerance`` (relative) of the request.
    """
    f_in, f_out = _exact_hz(f_in_hz, "the PLL input"), _exact_hz(f_out_hz, "the requested clock")
    lim = ICE40_LIMITS
    _check_request("iCE40", f_in, f_out, lim, tolerance)

    def candidates():
        for divr in range(16):
            for divf in range(128):
                for divq in range(1, 7):
                    p = Ice40Pll(f_in, divr, divf, divq)
                    if _within(p.f_pfd, lim.f_pfd) and _within(p.f_vco, lim.f_vco) and _within(p.f_out, lim.f_out):
                        yield p, (divr, divf, divq)

    return _best("iCE40", f_out, candidates(), tolerance)


def ecp5_pll(f_in_hz: float, f_out_hz: float, tolerance: float = DEFAULT_TOLERANCE) -> Ecp5Pll:
    """The ``EHXPLLL`` setting nearest to ``f_out_hz`` from ``f_in_hz`` (module docstring).

    Raises
    ------
    ClockError
        As :func:`ice40_pll`.
    """
    f_in, f_out = _exact_hz(f_in_hz, "the PLL input"), _exact_hz(f_out_hz, "the requested clock")
    lim = ECP5_LIMITS
    _check_request("ECP5", f_in, f_out, lim, tolerance)
    mid = Fraction(600 * MHZ)

    def candidates():
        for clki in range(1, 129):
            pfd = f_in / clki
            if not _within(pfd, lim.f_pfd):
                continue
            for clkfb in range(1, 81):
                out = pfd * clkfb
                if not _within(out, lim.f_out):
                    continue
                lo, hi = max(1, math.ceil(lim.f_vco[0] / out)), min(128, math.floor(lim.f_vco[1] / out))
                ops = [d for d in range(lo, hi + 1) if _within(out * d, lim.f_vco)]
                if ops:
                    op = min(ops, key=lambda d: (abs(out * d - mid), d))
                    yield Ecp5Pll(f_in, clki, clkfb, op), (clki, clkfb)

    return _best("ECP5", f_out, candidates(), tolerance)


# --- the board's clock --------------------------------------------------------------------------


@dataclass(frozen=True)
class ClockPlan:
    """The clock a board build runs at.

    Attributes
    ----------
    board : str
    oscillator_hz : float
        The board's oscillator.
    requested_hz : float
        What was asked for (the oscillator when nothing was).
    pll : Ice40Pll, Ecp5Pll or None
        None: the design runs at the oscillator, no PLL.
    """

    board: str
    oscillator_hz: float
    requested_hz: float
    pll: Ice40Pll | Ecp5Pll | None

    @property
    def achieved_hz(self) -> float:
        """The exact frequency the design runs at (as a float)."""
        return float(self.pll.f_out) if self.pll is not None else float(self.oscillator_hz)

    def describe(self) -> str:
        """One line: requested and achieved clock, and the PLL setting."""
        if self.pll is None:
            return f"clock {_mhz(self.achieved_hz)} (the {self.board} oscillator, no PLL)"
        params = self.pll.to_json()
        shown = ", ".join(f"{k}={v}" for k, v in params.items() if k.isupper() and not isinstance(v, str))
        return (f"clock requested {_mhz(self.requested_hz)}, achieved {_mhz(self.achieved_hz)} "
                f"({params['primitive']} from the {_mhz(self.oscillator_hz)} oscillator: {shown}; "
                f"VCO {_mhz(params['f_vco_hz'])})")

    def hook(self):
        """The ``clock`` hook for :class:`~bnnfab.boards.top.BoardTop`: a :class:`PllClock`, or
        None to run on the platform's default clock."""
        return None if self.pll is None else PllClock(self.pll)

    def to_json(self) -> dict:
        return {"oscillator_hz": float(self.oscillator_hz), "requested_hz": float(self.requested_hz),
                "achieved_hz": self.achieved_hz, "pll": None if self.pll is None else self.pll.to_json()}


def plan_clock(board: str | Board, clock_mhz: float | None = None, *,
               tolerance: float = DEFAULT_TOLERANCE) -> ClockPlan:
    """The clock of a build of ``board`` at ``clock_mhz`` (None: the board's oscillator).

    A request equal to the oscillator (within 1 Hz) needs no PLL.

    Raises
    ------
    ClockError
        A non-positive request, a board without PLL support here (Arty), or a frequency the
        board's PLL cannot make within ``tolerance``.
    """
    b = get_board(board)
    osc = float(b.clock_hz)
    if clock_mhz is None:
        return ClockPlan(b.name, osc, osc, None)
    if isinstance(clock_mhz, bool) or not isinstance(clock_mhz, (int, float)) or not math.isfinite(clock_mhz) \
            or clock_mhz <= 0:
        raise ClockError(f"--clock-mhz must be a positive number of MHz, not {clock_mhz!r}")
    want = float(clock_mhz) * MHZ
    if abs(want - osc) < 1.0:
        return ClockPlan(b.name, osc, want, None)
    if b.flow is Flow.ICE40:
        pll = ice40_pll(osc, want, tolerance)
    elif b.flow is Flow.ECP5:
        pll = ecp5_pll(osc, want, tolerance)
    else:
        raise ClockError(f"board {b.name!r} ({b.device}) has no PLL support here: it runs at its "
                         f"{_mhz(osc)} oscillator; leave --clock-mhz out or give {osc / MHZ:g}")
    return ClockPlan(b.name, osc, want, pll)


# --- gateware -----------------------------------------------------------------------------------


class LockReset(wiring.Component):
    """Reset of a PLL's clock domain: high until ``lock`` has been high for ``hold_cycles``.

    Runs in domain ``domain`` (the PLL's output clock), whose reset it may drive: its registers
    are ``reset_less``. ``lock`` is asynchronous: it passes a two-stage
    :class:`~amaranth.lib.cdc.FFSynchronizer` first, so ``rst`` falls ``hold_cycles + 3``
    edges after ``lock`` rises and rises 3 edges after ``lock`` falls (a registered output, which
    the domain's flip-flops see as a synchronous reset). All of its registers start at 0 after
    configuration, so ``rst`` starts high.

    Ports
    -----
    lock : In(1)
    rst : Out(1)
    """

    def __init__(self, hold_cycles: int, domain: str = "sync"):
        if isinstance(hold_cycles, bool) or not isinstance(hold_cycles, int) or hold_cycles < 1:
            raise ValueError(f"hold_cycles must be a positive integer, not {hold_cycles!r}")
        self.hold_cycles = hold_cycles
        self.domain = domain
        super().__init__({"lock": In(1), "rst": Out(1)})

    def elaborate(self, platform):
        m = Module()
        locked = Signal()
        m.submodules.lock_sync = FFSynchronizer(self.lock, locked, o_domain=self.domain, stages=2)
        timer = Signal(range(self.hold_cycles + 1), reset_less=True)
        ready = Signal(reset_less=True)
        d = m.d[self.domain]
        with m.If(~locked):
            d += [timer.eq(0), ready.eq(0)]
        with m.Elif(timer == self.hold_cycles):
            d += ready.eq(1)
        with m.Else():
            d += timer.eq(timer + 1)
        m.d.comb += self.rst.eq(~ready)
        return m


class PllClock:
    """The ``clock`` hook of :class:`~bnnfab.boards.top.BoardTop` that makes ``sync`` from a PLL.

    Called as ``hook(m, platform)`` during elaboration: requests the platform's default clock pin
    (``dir="-"``: the PLL takes the pad itself on iCE40), instantiates the PLL, adds the ``sync``
    domain driven by its output and reset by :class:`LockReset`, constrains the output net to the
    achieved frequency and returns that frequency (Hz).

    The constrained net is the signal ``pll_out``, marked ``keep``: the sync domain's clock is an
    alias of it, and without the attribute Yosys may keep the alias's name instead, so that
    nextpnr would ignore the constraint (``net 'pll_out' does not exist``) and fall back to the
    one it derives from the oscillator pin's.

    Attributes
    ----------
    pll : Ice40Pll or Ecp5Pll
    hold_cycles : int
        Of :class:`LockReset`.
    """

    def __init__(self, pll: Ice40Pll | Ecp5Pll):
        if not isinstance(pll, (Ice40Pll, Ecp5Pll)):
            raise TypeError(f"pll must be an Ice40Pll or an Ecp5Pll, not {type(pll).__name__}")
        self.pll = pll
        self.hold_cycles = max(1, math.ceil(RESET_HOLD_SECONDS * float(pll.f_out)))

    @property
    def frequency(self) -> float:
        return float(self.pll.f_out)

    def __call__(self, m: Module, platform) -> float:
        clk_pin = platform.request(platform.default_clk, dir="-")
        # The PLL drives the sync domain's clock net itself: the constraint below names it, and no
        # alias exists for synthesis to keep in its place.
        m.domains.sync = cd_sync = ClockDomain("sync")
        pll_clk = Signal(name="pll_out", attrs={"keep": 1})
        m.d.comb += cd_sync.clk.eq(pll_clk)
        lock = Signal(name="pll_lock")
        p = self.pll.parameters()
        if isinstance(self.pll, Ice40Pll):
            m.submodules.pll = Instance(
                "SB_PLL40_PAD",
                p_FEEDBACK_PATH=p["FEEDBACK_PATH"], p_PLLOUT_SELECT=p["PLLOUT_SELECT"],
                p_DIVR=Const(p["DIVR"], 4), p_DIVF=Const(p["DIVF"], 7), p_DIVQ=Const(p["DIVQ"], 3),
                p_FILTER_RANGE=Const(p["FILTER_RANGE"], 3),
                i_PACKAGEPIN=clk_pin.io, i_RESETB=Const(1), i_BYPASS=Const(0),
                o_PLLOUTGLOBAL=pll_clk, o_LOCK=lock,
            )
        else:
            m.submodules.clk_buf = clk_buf = io.Buffer("i", clk_pin)
            m.submodules.pll = Instance(
                "EHXPLLL",
                a_FREQUENCY_PIN_CLKI=f"{float(self.pll.f_in) / MHZ:.6g}",
                a_FREQUENCY_PIN_CLKOP=f"{float(self.pll.f_out) / MHZ:.6g}",
                a_ICP_CURRENT="12", a_LPF_RESISTOR="8", a_MFG_ENABLE_FILTEROPAMP="1", a_MFG_GMCREF_SEL="2",
                **{f"p_{k}": v for k, v in p.items()},
                i_CLKI=clk_buf.i, i_CLKFB=pll_clk, o_CLKOP=pll_clk, o_LOCK=lock,
                i_RST=Const(0), i_STDBY=Const(0), i_PHASESEL0=Const(0), i_PHASESEL1=Const(0),
                i_PHASEDIR=Const(1), i_PHASESTEP=Const(1), i_PHASELOADREG=Const(1), i_PLLWAKESYNC=Const(0),
                i_ENCLKOP=Const(0),
            )
        platform.add_clock_constraint(pll_clk, self.frequency)
        m.submodules.lock_reset = reset = LockReset(self.hold_cycles, domain="sync")
        m.d.comb += [reset.lock.eq(lock), cd_sync.rst.eq(reset.rst)]
        return self.frequency
