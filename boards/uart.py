"""UART receiver and transmitter (8N1) with ``amaranth.lib.stream`` byte ports.

Both blocks are reusable gateware: they never touch pins. A board top connects their ``line``
ports to the UART pins it requests (:class:`bnnfab.boards.top.BoardTop`); a simulation drives
them directly.

A bit lasts ``divisor`` clock cycles (``divisor = clk_hz // baud``, see :func:`uart_divisor`); a
character is a start bit (0), eight data bits, least significant first, and a stop bit (1). The
idle line is high.

:class:`UartTx` — bytes to a line
---------------------------------
``i_stream`` (8-bit bytes) in, ``line`` out (a register, high after reset). A byte accepted at
rising edge ``c`` puts the start bit on the line from edge ``c`` to edge ``c + divisor``, data bit
``k`` from ``c + (k + 1) * divisor``, the stop bit from ``c + 9 * divisor``; the next byte can be
accepted at edge ``c + 10 * divisor`` (``i_stream.ready`` is high in the last cycle of the stop
bit), so back-to-back bytes leave with no gap: exactly ``10 * divisor`` cycles per byte.
``i_stream.ready`` depends on registers only.

:class:`UartRx` — a line to bytes
---------------------------------
``line`` in (asynchronous to the clock: it passes an ``FFSynchronizer`` of ``sync_stages``
flip-flops first, idle high), ``o_stream`` (8-bit bytes) out, plus one-cycle pulses
``framing_error`` and ``overrun``.

Let ``t0`` be the first cycle in which the synchronised line reads 0 while the receiver is idle.
The receiver samples it again at ``t0 + divisor // 2`` (mid start bit; a line back at 1 there was
a glitch and is ignored), data bit ``k`` at ``t0 + divisor // 2 + (k + 1) * divisor`` and the
stop bit at ``t0 + divisor // 2 + 9 * divisor``. It is idle again right after the stop bit's
sample, half a bit before the stop bit ends, which tolerates a transmitter up to about 5 %
faster or slower than ``divisor``.

* A stop bit of 1: the byte is offered on ``o_stream`` (``valid`` and ``payload`` registered) and
  held until taken. If the previous byte has not been taken yet, the new byte is dropped and
  ``overrun`` pulses.
* A stop bit of 0: no byte; ``framing_error`` pulses, and the receiver waits for the line to
  return high (a break holds it low) before it looks for the next start bit.
"""

from amaranth.hdl import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

__all__ = ["MIN_DIVISOR", "UartRx", "UartTx", "uart_divisor"]

#: Fewest clock cycles per bit: mid-bit sampling needs a few cycles of margin on each side.
MIN_DIVISOR = 4

#: Largest relative baud-rate error :func:`uart_divisor` accepts (both ends may be off).
MAX_BAUD_ERROR = 0.02


def _check_divisor(divisor) -> int:
    if isinstance(divisor, bool) or not isinstance(divisor, int) or divisor < MIN_DIVISOR:
        raise ValueError(
            f"UART divisor (clock cycles per bit, clk_hz // baud) must be an integer >= "
            f"{MIN_DIVISOR}, not {divisor!r}")
    return divisor


def uart_divisor(clk_hz: float, baud: int) -> int:
    """Clock cycles per bit for ``baud`` at ``clk_hz``: ``round(clk_hz / baud)``.

    Raises
    ------
    ValueError
        If the divisor is below :data:`MIN_DIVISOR` or the baud rate it gives is off by more than
        :data:`MAX_BAUD_ERROR` (2 %); the message says the rate actually reached.
    """
    if not baud or baud <= 0:
        raise ValueError(f"baud rate must be positive, not {baud!r}")
    divisor = int(round(clk_hz / baud))
    if divisor < MIN_DIVISOR:
        raise ValueError(
            f"{baud} baud needs {clk_hz / baud:.2f} cycles per bit at {clk_hz:g} Hz; the UART "
            f"needs at least {MIN_DIVISOR}: lower the baud rate or raise the clock")
    actual = clk_hz / divisor
    error = abs(actual - baud) / baud
    if error > MAX_BAUD_ERROR:
        raise ValueError(
            f"{baud} baud at {clk_hz:g} Hz: divisor {divisor} gives {actual:.0f} baud, "
            f"{error:.1%} off (at most {MAX_BAUD_ERROR:.0%}); pick a baud rate closer to a "
            f"divisor of the clock")
    return divisor


class UartTx(wiring.Component):
    """8N1 transmitter: bytes from ``i_stream`` onto ``line`` (module docstring).

    Parameters
    ----------
    divisor : int
        Clock cycles per bit (>= :data:`MIN_DIVISOR`).
    """

    i_stream: In(stream.Signature(8))
    line: Out(1, init=1)

    def __init__(self, divisor: int):
        self.divisor = _check_divisor(divisor)
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        d = self.divisor
        timer = Signal(range(d))
        bits_left = Signal(range(10))  # bits still to put on the line after the current one
        shreg = Signal(9)  # data bits then the stop bit, next bit at [0]
        busy = Signal()
        ending = busy & (timer == 0) & (bits_left == 0)  # last cycle of the stop bit
        i = self.i_stream
        m.d.comb += i.ready.eq(~busy | ending)
        with m.If(i.valid & i.ready):
            m.d.sync += [
                self.line.eq(0),
                shreg.eq(i.payload | (1 << 8)),
                bits_left.eq(9),
                timer.eq(d - 1),
                busy.eq(1),
            ]
        with m.Elif(busy):
            with m.If(timer != 0):
                m.d.sync += timer.eq(timer - 1)
            with m.Elif(bits_left == 0):
                m.d.sync += busy.eq(0)
            with m.Else():
                m.d.sync += [
                    self.line.eq(shreg[0]),
                    shreg.eq(shreg >> 1),
                    bits_left.eq(bits_left - 1),
                    timer.eq(d - 1),
                ]
        return m


class UartRx(wiring.Component):
    """8N1 receiver with mid-bit sampling: ``line`` to bytes on ``o_stream`` (module docstring).

    Parameters
    ----------
    divisor : int
        Clock cycles per bit (>= :data:`MIN_DIVISOR`).
    sync_stages : int
        Flip-flops synchronising ``line`` to the clock (>= 2 for a real pin); they delay
        everything by that many cycles.
    """

    line: In(1, init=1)
    o_stream: Out(stream.Signature(8))
    framing_error: Out(1)
    overrun: Out(1)

    def __init__(self, divisor: int, *, sync_stages: int = 2):
        self.divisor = _check_divisor(divisor)
        if isinstance(sync_stages, bool) or not isinstance(sync_stages, int) or sync_stages < 2:
            raise ValueError(f"sync_stages must be an integer >= 2, not {sync_stages!r}")
        self.sync_stages = sync_stages
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        d = self.divisor
        rx = Signal(init=1)
        m.submodules.sync = FFSynchronizer(self.line, rx, init=1, stages=self.sync_stages)
        timer = Signal(range(d))
        bit = Signal(range(8))
        shreg = Signal(8)
        o = self.o_stream

        m.d.sync += [self.framing_error.eq(0), self.overrun.eq(0)]
        with m.If(o.valid & o.ready):
            m.d.sync += o.valid.eq(0)

        with m.FSM():
            with m.State("IDLE"):
                with m.If(~rx):
                    m.d.sync += timer.eq(d // 2 - 1)
                    m.next = "START"
            with m.State("START"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Elif(rx):  # back high by mid start bit: a glitch
                    m.next = "IDLE"
                with m.Else():
                    m.d.sync += [timer.eq(d - 1), bit.eq(0)]
                    m.next = "DATA"
            with m.State("DATA"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Else():
                    m.d.sync += [shreg.eq((shreg >> 1) | (rx << 7)), timer.eq(d - 1), bit.eq(bit + 1)]
                    with m.If(bit == 7):
                        m.next = "STOP"
            with m.State("STOP"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Elif(rx):
                    with m.If(o.valid & ~o.ready):  # the previous byte is still waiting
                        m.d.sync += self.overrun.eq(1)
                    with m.Else():
                        m.d.sync += [o.payload.eq(shreg), o.valid.eq(1)]
                    m.next = "IDLE"
                with m.Else():
                    m.d.sync += self.framing_error.eq(1)
                    m.next = "BREAK"
            with m.State("BREAK"):
                with m.If(rx):
                    m.next = "IDLE"
        return m
