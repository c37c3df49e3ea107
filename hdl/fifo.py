"""A stream FIFO between engines: :class:`amaranth.lib.fifo.SyncFIFO` behind stream ports.

It decouples neighbouring blocks so that a short stall downstream does not stop the engine
upstream. ``StreamFifo(width, depth)``; ports ``i_stream`` / ``o_stream`` (``amaranth.lib.stream``,
a beat transfers on a rising edge where valid & ready), synchronous active-high reset.

Exact cycle behaviour (``SyncFIFO``'s, register ``level`` in ``[0, depth]``, reset 0)::

    i_stream.ready = level != depth        o_stream.valid = level != 0
    at an edge: level += (input transfers) - (output transfers)

Both are functions of ``level`` alone: no combinational path between the ports. A beat written
at edge ``c`` can leave at edge ``c + 1`` at the earliest; a full FIFO takes no beat even in a
cycle where one leaves. ``o_stream.payload`` is read combinationally from the storage (LUT RAM).
"""

from amaranth.hdl import Module
from amaranth.lib import stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out

__all__ = ["StreamFifo"]


class StreamFifo(wiring.Component):
    """A ``depth``-beat FIFO of ``width``-bit beats (see the module docstring).

    Raises
    ------
    ValueError
        On a width or depth that is not a positive integer.
    """

    def __init__(self, width: int, depth: int):
        for name, value in (("width", width), ("depth", depth)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, not {value!r}")
        self.width, self.depth = width, depth
        super().__init__({"i_stream": In(stream.Signature(width)), "o_stream": Out(stream.Signature(width))})

    def elaborate(self, platform):
        m = Module()
        m.submodules.fifo = fifo = SyncFIFO(width=self.width, depth=self.depth)
        m.d.comb += [
            fifo.w_data.eq(self.i_stream.payload),
            fifo.w_en.eq(self.i_stream.valid),
            self.i_stream.ready.eq(fifo.w_rdy),
            self.o_stream.payload.eq(fifo.r_data),
            self.o_stream.valid.eq(fifo.r_rdy),
            fifo.r_en.eq(self.o_stream.ready),
        ]
        return m
