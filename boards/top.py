"""Board tops: the generated accelerator behind a UART host link, with LEDs showing the last class.

::

    uart_rx -> UartRx -> HostLink -> AcceleratorTop.i_stream
    uart_tx <- UartTx <- HostLink <- AcceleratorTop.o_stream
                         HostLink.last_class, last_status -> leds

* :class:`SimBoardTop` is all of it with plain ports (``uart_rx``, ``uart_tx``, ``leds``, and the
  ``sync`` domain's ``clk`` / ``rst``): what simulations and the cocotb bench
  (:mod:`bnnfab.boards.tb.uart_bench`) run, and what :class:`BoardTop` instantiates. It touches no
  pins.
* :class:`BoardTop` is the only place that calls ``platform.request()`` (itself or through its
  ``clock`` hook): it asks the platform for its ``uart`` and as many ``led`` resources as there
  are LED bits, and runs on the platform's default clock (``platform.default_clk``, whose
  frequency sets the UART divisor) unless a ``clock`` hook makes the ``sync`` domain itself:
  :class:`bnnfab.boards.clocking.PllClock` instantiates the board's PLL on the default clock pin
  and holds ``sync`` in reset until the PLL locks; the UART divisor then comes from the PLL's
  achieved frequency (``bnnfab build --clock-mhz``, :func:`bnnfab.boards.clocking.plan_clock`).

LEDs: bits ``[0, index_width)`` show the class of the last OK response in binary, the next bit
lights while the last response was a NACK. With fewer LEDs the low bits are shown.

Not done here (real boards): board platforms, pin constraints and programming are the board
files' business; the PLL and its reset are :mod:`bnnfab.boards.clocking`'s.
"""

from collections.abc import Callable
from typing import Any

from amaranth.hdl import Elaboratable, Module
from amaranth.lib import io, wiring
from amaranth.lib.wiring import In, Out

from ..codegen.top import AcceleratorTop
from .link import HostLink
from .uart import UartRx, UartTx, uart_divisor

__all__ = ["DEFAULT_BAUD", "DEFAULT_TIMEOUT_BITS", "MIN_TIMEOUT_BITS", "SimBoardTop", "BoardTop"]

DEFAULT_BAUD = 115200
#: Silence that ends a request, in bit times: ~8.7 ms at 115200 baud, longer than the gaps a
#: USB-serial bridge leaves between its USB packets.
DEFAULT_TIMEOUT_BITS = 1000
#: A timeout must outlast a character (10 bit times) with margin, or every frame would time out.
MIN_TIMEOUT_BITS = 20


class SimBoardTop(wiring.Component):
    """Accelerator, host link, UART and LED logic with plain ports (module docstring).

    Parameters
    ----------
    accelerator : AcceleratorTop
        The generated accelerator (``Design.top``, or ``AcceleratorTop(plan)``).
    divisor : int
        Clock cycles per UART bit (``clk_hz // baud``, >= 4).
    timeout_bits : int
        Silence inside a request, in bit times, after which it is dropped with a ``TIMEOUT``
        NACK (and the discarding after an error ends); >= :data:`MIN_TIMEOUT_BITS`.
    n_leds : int, optional
        LED outputs; default ``index_width + 1`` (class bits and the NACK LED).

    Attributes
    ----------
    link : HostLink
    format : LinkFormat
    """

    def __init__(self, accelerator: AcceleratorTop, *, divisor: int, timeout_bits: int = DEFAULT_TIMEOUT_BITS,
                 n_leds: int | None = None):
        if not isinstance(accelerator, AcceleratorTop):
            raise TypeError(f"accelerator must be an AcceleratorTop, not {type(accelerator).__name__}")
        if isinstance(timeout_bits, bool) or not isinstance(timeout_bits, int) or timeout_bits < MIN_TIMEOUT_BITS:
            raise ValueError(f"timeout_bits must be an integer >= {MIN_TIMEOUT_BITS} (two characters), "
                             f"not {timeout_bits!r}")
        index_width = accelerator.format.index_width
        if n_leds is None:
            n_leds = index_width + 1
        if isinstance(n_leds, bool) or not isinstance(n_leds, int) or n_leds < 0:
            raise ValueError(f"n_leds must be a whole number, not {n_leds!r}")
        self.accelerator = accelerator
        self.uart_rx_block = UartRx(divisor)
        self.uart_tx_block = UartTx(divisor)
        self.divisor = divisor
        self.timeout_bits = timeout_bits
        self.link = HostLink(accelerator.format, timeout_cycles=timeout_bits * divisor)
        self.format = self.link.format
        self.n_leds = n_leds
        super().__init__({
            "uart_rx": In(1, init=1),
            "uart_tx": Out(1, init=1),
            "leds": Out(n_leds),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.uart_rx = rx = self.uart_rx_block
        m.submodules.uart_tx = tx = self.uart_tx_block
        m.submodules.link = link = self.link
        m.submodules.accelerator = acc = self.accelerator
        m.d.comb += [
            rx.line.eq(self.uart_rx),
            self.uart_tx.eq(tx.line),
            link.rx_framing.eq(rx.framing_error),
            link.rx_overrun.eq(rx.overrun),
        ]
        wiring.connect(m, rx.o_stream, link.rx)
        wiring.connect(m, link.tx, tx.i_stream)
        wiring.connect(m, link.acc_in, acc.i_stream)
        wiring.connect(m, acc.o_stream, link.acc_out)
        if self.n_leds:
            shown = link.last_class | ((link.last_status != 0) << len(link.last_class))
            m.d.comb += self.leds.eq(shown[: self.n_leds])
        return m


class BoardTop(Elaboratable):
    """The board's top: a :class:`SimBoardTop` on the platform's UART and LED pins.

    Parameters
    ----------
    accelerator : AcceleratorTop
    baud : int
        UART rate; the divisor is ``round(clk_hz / baud)``, refused if more than 2 % off.
    timeout_bits : int
        As for :class:`SimBoardTop`.
    uart : (str, int)
        Name and number of the platform's UART resource.
    n_leds : int, optional
        LEDs to drive (default: class bits + 1); those the platform lacks are left out.
    clock : callable, optional
        ``clock(m, platform) -> clk_hz``: adds the ``sync`` domain to ``m`` (a PLL, say:
        :class:`~bnnfab.boards.clocking.PllClock`) and returns its frequency, from which the UART
        divisor is computed. Default: the platform's default clock, which Amaranth turns into
        ``sync`` itself, at ``platform.default_clk_frequency``.

    Attributes
    ----------
    core : SimBoardTop or None
        After elaboration.
    clk_hz : float or None
        The ``sync`` frequency used for the UART divisor, after elaboration.
    """

    def __init__(self, accelerator: AcceleratorTop, *, baud: int = DEFAULT_BAUD,
                 timeout_bits: int = DEFAULT_TIMEOUT_BITS, uart: tuple[str, int] = ("uart", 0),
                 n_leds: int | None = None, clock: Callable[[Module, Any], float] | None = None):
        self.accelerator = accelerator
        self.baud = baud
        self.timeout_bits = timeout_bits
        self.uart = uart
        self.n_leds = accelerator.format.index_width + 1 if n_leds is None else n_leds
        self.clock = clock
        self.core: SimBoardTop | None = None
        self.clk_hz: float | None = None

    def elaborate(self, platform):
        if platform is None:
            raise ValueError("BoardTop needs a platform (it requests the UART and LED pins); "
                             "simulate SimBoardTop instead")
        from amaranth.build import ResourceError  # noqa: PLC0415 - only boards need the build system

        m = Module()
        if self.clock is not None:
            clk_hz = self.clock(m, platform)
        else:
            clk_hz = platform.default_clk_frequency
        self.clk_hz = float(clk_hz)
        divisor = uart_divisor(clk_hz, self.baud)
        leds = []
        for i in range(self.n_leds):
            try:
                leds.append(platform.request("led", i, dir="-"))
            except ResourceError:
                break
        self.core = core = SimBoardTop(self.accelerator, divisor=divisor, timeout_bits=self.timeout_bits,
                                       n_leds=len(leds))
        m.submodules.core = core
        uart = platform.request(*self.uart, dir="-")
        m.submodules.uart_rx_pin = rx_pin = io.Buffer("i", uart.rx)
        m.submodules.uart_tx_pin = tx_pin = io.Buffer("o", uart.tx)
        m.d.comb += [core.uart_rx.eq(rx_pin.i), tx_pin.o.eq(core.uart_tx)]
        for i, led in enumerate(leds):
            m.submodules[f"led_{i}_pin"] = led_pin = io.Buffer("o", led)
            m.d.comb += led_pin.o.eq(core.leds[i])
        return m
