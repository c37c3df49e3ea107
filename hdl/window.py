"""Sliding-window generator for convolutions, and a binary max-pool (OR) built on it.

Both are :class:`amaranth.lib.wiring.Component`\\ s with ``i_stream`` / ``o_stream`` ports
(``amaranth.lib.stream``; a beat transfers on a rising edge where valid & ready), synchronous
active-high reset (the ``sync`` domain's) and a registered ``o_stream.valid``.
``i_stream.ready`` is a function of registers only and ``o_stream.valid`` is a register: there is
no combinational path between the two ports.

:class:`SlidingWindow` — one patch per output position
------------------------------------------------------
Notation: map ``H × W × C``, elements of ``eb = elem_bits`` bits, a pixel is ``P = C * eb`` bits;
kernel ``(kh, kw)``, stride ``(sh, sw)``, pads ``(top, left, bottom, right)`` (each smaller than
the kernel along its axis, as in the IR), ``Ho = (H + top + bottom - kh) // sh + 1`` and ``Wo``
likewise (floor mode: trailing rows/columns no window reaches are dropped).

``i_stream``, payload ``P`` bits
    One pixel per beat, channel ``c`` at bits ``[c*eb, (c+1)*eb)``; the pixels of an image in
    raster order (row ``y`` major, column ``x`` minor), images back to back with nothing between.
``o_stream``, payload ``kh * kw * P`` bits
    One patch per beat, output positions ``(oy, ox)`` in raster order. Tap ``(ky, kx)`` is the
    pixel at bits ``[(ky*kw + kx) * P, ...)``, so element ``(ky*kw + kx)*C + c`` (the ``(ky, kx,
    c)`` flattening of the weights, design.md §2) sits at bits ``[idx*eb, (idx+1)*eb)``. The tap
    is map pixel ``(oy*sh + ky - top, ox*sw + kx - left)``; outside the map every channel holds
    ``pad_value`` (two's complement in ``eb`` bits; for a binary map, ``eb = 1``, 0 is the -1 bit
    and 1 the +1 bit).

Geometry (all integers, functions of the parameters):

* ``Wu = (Wo - 1)*sw + kw``: padded columns ``px`` some window touches. Every output row is one
  *scan* over ``px = left .. Wu - 1`` (``Wu - left`` columns; the ``left`` pad columns are not
  scanned, they are preloaded). Column ``px`` is real when ``x = px - left < W``, else right pad.
* Row ``y`` of the map is *needed* when some window covers it:
  ``needed(y) = (y + top) % sh < kh and y < (Ho - 1)*sh - top + kh``. Rows that are not needed
  (between windows when ``sh > kh``, after the last window in floor mode) are accepted and
  dropped; needed rows are kept in a FIFO of rows.
* Output row ``oy``: ``ry0 = oy*sh - top``, ``lo = max(ry0, 0)``,
  ``nreal(oy) = min(H, ry0 + kh) - lo`` real rows (``>= 1``), at FIFO positions
  ``0 .. nreal - 1``; ``tp(oy) = lo - ry0`` top pad rows; after its scan the window releases
  ``pop(oy) = nreal(oy)`` rows if ``oy == Ho - 1`` else ``min(nreal(oy), max(ry0 + sh, 0) - lo)``
  (the rows the next window does not use; they sum to the needed rows of an image).

Datapath: ``R = buffer_rows`` slots (default ``min(kh, H) + 1``, at least ``min(kh, H)``), each an
:class:`~amaranth.lib.memory.Memory` of ``W`` pixels with one write port and one synchronous,
non-transparent read port (a read at an edge returns the contents before that edge). FIFO
position ``j`` lives in slot ``(rs + j) mod R``; the writer fills slot ``ws = (rs + d) mod R``.
A scan reads one column (all ``R`` slots at address ``x``) per issue; stage ``A`` is the read
data plus the column's row selection; the *window register* (``kh × kw`` pixels) is
``o_stream.payload``: every column from ``A`` shifts in at ``kx = kw - 1`` (older columns move to
lower ``kx``), with pad pixels for pad rows/columns; the first column of a scan fills
``kx < kw - 1`` with pad pixels (the preloaded left pad; with ``left = 0`` they are shifted out
before the first patch of the row).

Exact cycle behaviour
---------------------
Cycle ``c`` is the ``c``-th rising edge after reset is released; values are sampled just before
the edge. Timing registers (everything else is data): writer row ``wy`` in ``[0, H)`` and column
``wx`` in ``[0, W)``; FIFO count ``d`` (signed, ``-1 <= d <= R``: complete needed rows in the
FIFO; ``-1`` when the row being written was already released); scan row ``oy`` in ``[0, Ho)``,
column ``px`` and emit countdown ``nx``; stage flags ``a_v`` (valid), ``a_e`` (the column
completes a window); output flag ``ov``. Reset: ``wy = wx = d = oy = 0``, ``px = left``,
``nx = kw - 1 - left``, ``a_v = a_e = ov = 0``.

Combinational, from registers (and ``o_stream.ready``)::

    need           = needed(wy)
    i_stream.ready = not need or d < R                      (registers only)
    o_stream.valid = ov
    en             = not ov or o_stream.ready               (the scan's clock enable)
    x              = px - left
    avail          = x >= W                                 (pad column: no data needed)
                     or d >= nreal(oy)                      (all rows of the window complete)
                     or (d == nreal(oy) - 1 and need and wx > x)   (last row written past x)
    issue          = en and avail

At edge ``c``:

1. Writer (independent of ``en``): if an input beat transfers, the pixel is stored at slot
   ``ws``, column ``wx`` when ``need``; then ``wx += 1``, or at ``wx == W - 1``: ``wx = 0``,
   ``wy = (wy + 1) mod H`` and, if ``need``, the row is complete (``d += 1``, ``ws += 1 mod R``).
2. Scan, only if ``en`` (else ``px, nx, oy, a_v, a_e, ov`` and the window hold):

   * if ``issue``: ``a_v = 1``, ``a_e = (nx == 0)``; if ``px == Wu - 1`` (end of the scan;
     ``nx`` is 0 there): ``px = left``, ``nx = kw - 1 - left``, ``oy = (oy + 1) mod Ho`` and the
     window releases ``pop(oy)`` rows (``d -= pop(oy)``, ``rs += pop(oy) mod R``); else
     ``px += 1`` and ``nx = sw - 1`` if ``nx == 0`` else ``nx - 1``;
   * if not ``issue``: ``a_v = 0``;
   * ``ov = a_v and a_e`` (their values before the edge); the window shifts in ``A``'s column
     when ``a_v``. (When ``ov`` was 1, ``en`` means the patch transferred at this edge.)

   Both updates of ``d`` at one edge add up: ``d = d + row_complete - released``.

The timing depends on ``H, W, kh, kw, sh, sw, top, left, Ho, Wo`` (so on ``bottom``, ``right``
through ``Ho``, ``Wo``) and ``R`` (:attr:`SlidingWindow.cycle_params`), never on ``C``,
``elem_bits``, ``pad_value`` or the data.

Consequences (exact unless marked):

* Latency: a patch is emitted two edges after the issue of its last column at the earliest
  (issue at ``c``, ``ov = 1`` from ``c + 1``, transfer at ``c + 2``); a real column is issued one
  edge after its last needed pixel is accepted at the earliest, so a patch that waited for input
  leaves 3 cycles after its last pixel, plus one cycle per right-pad column after that pixel.
  Fill: with input valid from cycle 0 and the sink always ready, the first patch is emitted at
  cycle ``(min(H, kh - top) - 1)*W + min(W, kw - left) - 1 + 3 + max(0, kw - left - W)``.
* Throughput, never stalled: the writer takes one pixel per cycle except when ``need and
  d == R`` (every slot holds a row the scan still uses); the scan issues one column per cycle
  except while ``avail`` is false (waiting for input). Per image the writer needs ``H*W`` cycles
  and the scan ``Ho * (Wu - left)``: ``Wu - left`` per output row, of which ``kw - 1 - left`` are
  fill columns that emit nothing (when ``sw = 1``); this costs throughput only where the scan is
  the slower side (padded maps: ``H*(W + 1)`` instead of ``H*W`` cycles for 3×3 "same"
  padding).
* What overlaps: the writer runs ahead of the scan by up to ``R`` needed rows, across image
  boundaries too (a row's image does not matter to the FIFO), so the next image's first rows
  arrive while the scan finishes the current image's last output rows; rows no window uses take
  no slot and never stall the writer; within a row the scan follows the writer one column behind.
  What does not: the scan cannot start an output row before the first columns of that row's last
  needed input row are written, nor re-use its fill cycles; the writer waits while all ``R``
  slots are in use (``i_stream.ready`` depends on registers only, so a slot released at an edge
  is taken from the next cycle on).
* Steady state (measured, not a formula): with the default ``R``, images take
  ``max(H*W, Ho*(Wu - left))`` cycles each in the tested shapes (3×3 same/valid, 2×2/2, 1×1,
  5×5 same, stride above the kernel); on random small maps about 2 % of shapes lose a few cycles
  per image at image boundaries when the scan is slower than the writer per row but faster per
  image; one more buffer row (``buffer_rows``) removes nearly all of it.
* Backpressure holds one patch in the window register and freezes the scan (stage ``A`` and the
  memory read data hold); the writer keeps filling free slots. Nothing is lost, duplicated or
  reordered.

:class:`MaxPoolOr` — binary max-pool
------------------------------------
No padding, floor mode. ``i_stream``: one pixel of ``C`` bits per beat (raster order, images back
to back); ``o_stream``: one pooled pixel of ``C`` bits per beat, bit ``c`` the OR of channel
``c`` over the ``kh × kw`` window (max over ±1 is OR on bits). It is a :class:`SlidingWindow`
(``elem_bits = 1``, no pads) whose window register is OR-reduced combinationally onto
``o_stream.payload`` (a function of registers only; ``o_stream.valid`` is the window's ``ov``);
its cycle behaviour is exactly the window's (:attr:`MaxPoolOr.cycle_params`).
"""

import numbers

import numpy as np
from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

__all__ = ["SlidingWindow", "MaxPoolOr"]


def _positive_int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < 1:
        raise ValueError(f"{what} must be a positive integer, not {value!r}")
    return int(value)


def _pair(value: object, what: str) -> tuple[int, int]:
    """A positive int or a pair of them, as ``(rows, columns)``."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = (value, value)
    try:
        items = tuple(value)
    except TypeError:
        raise ValueError(f"{what} must be a positive integer or a pair of them, not {value!r}") from None
    if len(items) != 2:
        raise ValueError(f"{what} must be a positive integer or a pair of them, not {value!r}")
    return _positive_int(items[0], what), _positive_int(items[1], what)


def _pads(value: object) -> tuple[int, int, int, int]:
    """One integer for all four sides, or ``(top, left, bottom, right)``."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        items = (value,) * 4
    else:
        try:
            items = tuple(value)
        except TypeError:
            items = ()
    if len(items) != 4 or any(
        isinstance(p, bool) or not isinstance(p, numbers.Integral) or int(p) < 0 for p in items
    ):
        raise ValueError(f"pads must be 4 integers >= 0 (top, left, bottom, right), not {value!r}")
    return tuple(int(p) for p in items)


class SlidingWindow(wiring.Component):
    """Line-buffered sliding-window generator: one ``kh × kw`` patch per output position (see
    the module docstring for payloads and the exact cycle behaviour).

    Parameters
    ----------
    height, width, channels : int
        The input map ``H × W × C``.
    elem_bits : int
        Bits per element (1 for binary maps).
    kernel : int or (int, int)
        ``(kh, kw)``.
    stride : int or (int, int)
        ``(sh, sw)``.
    pads : int or (int, int, int, int)
        ``(top, left, bottom, right)``; each smaller than the kernel along its axis.
    pad_value : int
        What every channel of a padded tap holds: ``0`` or ``1`` when ``elem_bits == 1`` (the -1
        and +1 bits), else any value in ``[-2**(eb-1), 2**eb - 1]`` (stored as ``eb`` bits).
    buffer_rows : int or None
        Line-buffer slots ``R``; default ``min(kh, H) + 1``, at least ``min(kh, H)`` (which
        works but costs a bubble per row).

    Raises
    ------
    ValueError
        On a parameter that is not a positive integer (pads: non-negative), a pad not smaller
        than the kernel, a kernel larger than the padded map, a ``pad_value`` out of range or
        too few ``buffer_rows``.
    """

    def __init__(self, height: int, width: int, channels: int, elem_bits: int = 1, *, kernel,
                 stride=1, pads=0, pad_value: int = 0, buffer_rows: int | None = None):
        self._h = _positive_int(height, "height")
        self._w = _positive_int(width, "width")
        self._c = _positive_int(channels, "channels")
        self._eb = _positive_int(elem_bits, "elem_bits")
        self._kernel = _pair(kernel, "kernel")
        self._stride = _pair(stride, "stride")
        self._pads = _pads(pads)
        kh, kw = self._kernel
        top, left, bottom, right = self._pads
        if top >= kh or bottom >= kh or left >= kw or right >= kw:
            raise ValueError(f"each pad must be smaller than the kernel {self._kernel}, got pads {self._pads}")
        if self._h + top + bottom < kh or self._w + left + right < kw:
            raise ValueError(
                f"kernel {self._kernel} is larger than the padded map "
                f"{(self._h + top + bottom, self._w + left + right)}"
            )
        lo_pad, hi_pad = (0, 1) if self._eb == 1 else (-(1 << (self._eb - 1)), (1 << self._eb) - 1)
        is_int = isinstance(pad_value, numbers.Integral) and not isinstance(pad_value, bool)
        if not is_int or not lo_pad <= pad_value <= hi_pad:
            raise ValueError(
                f"pad_value must be an integer in [{lo_pad}, {hi_pad}] for elem_bits={self._eb}, not {pad_value!r}"
            )
        self._pad_value = int(pad_value)
        least = min(kh, self._h)
        if buffer_rows is None:
            self._rows = least + 1
        else:
            self._rows = _positive_int(buffer_rows, "buffer_rows")
            if self._rows < least:
                raise ValueError(f"buffer_rows must be at least min(kh, H) = {least}, not {buffer_rows!r}")
        super().__init__({
            "i_stream": In(stream.Signature(self.pixel_width)),
            "o_stream": Out(stream.Signature(self.patch_width)),
        })

    # --- geometry ---------------------------------------------------------------------------

    @property
    def height(self) -> int:
        return self._h

    @property
    def width(self) -> int:
        return self._w

    @property
    def channels(self) -> int:
        return self._c

    @property
    def elem_bits(self) -> int:
        return self._eb

    @property
    def kernel(self) -> tuple[int, int]:
        return self._kernel

    @property
    def stride(self) -> tuple[int, int]:
        return self._stride

    @property
    def pads(self) -> tuple[int, int, int, int]:
        return self._pads

    @property
    def pad_value(self) -> int:
        return self._pad_value

    @property
    def buffer_rows(self) -> int:
        """``R``: line-buffer slots of ``W`` pixels each."""
        return self._rows

    @property
    def pixel_width(self) -> int:
        """``P = C * elem_bits``: bits of an input beat."""
        return self._c * self._eb

    @property
    def patch_width(self) -> int:
        """``kh * kw * P``: bits of an output beat."""
        return self._kernel[0] * self._kernel[1] * self.pixel_width

    @property
    def out_height(self) -> int:
        """``Ho = (H + top + bottom - kh) // sh + 1``."""
        top, _, bottom, _ = self._pads
        return (self._h + top + bottom - self._kernel[0]) // self._stride[0] + 1

    @property
    def out_width(self) -> int:
        """``Wo = (W + left + right - kw) // sw + 1``."""
        _, left, _, right = self._pads
        return (self._w + left + right - self._kernel[1]) // self._stride[1] + 1

    @property
    def scan_end(self) -> int:
        """``Wu = (Wo - 1)*sw + kw``: a scan covers padded columns ``left .. Wu - 1``."""
        return (self.out_width - 1) * self._stride[1] + self._kernel[1]

    @property
    def scan_columns(self) -> int:
        """``Wu - left``: scan cycles per output row."""
        return self.scan_end - self._pads[1]

    @property
    def cycle_params(self) -> dict:
        """The parameters the cycle behaviour depends on: ``height``, ``width``, ``kernel``,
        ``stride``, ``pads``, ``buffer_rows``."""
        return dict(height=self._h, width=self._w, kernel=self._kernel, stride=self._stride,
                    pads=self._pads, buffer_rows=self._rows)

    def row_needed(self, y: int) -> bool:
        """Whether map row ``y`` lies in some window (else it is accepted and dropped)."""
        kh, sh, top = self._kernel[0], self._stride[0], self._pads[0]
        return (y + top) % sh < kh and y < (self.out_height - 1) * sh - top + kh

    def window_rows(self, oy: int) -> tuple[int, int, int]:
        """``(tp, nreal, pop)`` of output row ``oy``: top pad rows, real rows, rows released
        after its scan."""
        kh, sh, top = self._kernel[0], self._stride[0], self._pads[0]
        ry0 = oy * sh - top
        lo = max(ry0, 0)
        nreal = min(self._h, ry0 + kh) - lo
        pop = nreal if oy == self.out_height - 1 else min(nreal, max(ry0 + sh, 0) - lo)
        return lo - ry0, nreal, pop

    # --- stream (de)coding ------------------------------------------------------------------

    def encode_image(self, image) -> list[int]:
        """The ``H*W`` input beats of one ``(H, W, C)`` image of integers (two's complement in
        ``elem_bits`` bits; any integer is taken modulo ``2**elem_bits``)."""
        a = np.asarray(image)
        if a.shape != (self._h, self._w, self._c):
            raise ValueError(f"an image must have shape {(self._h, self._w, self._c)}, got {a.shape}")
        mask = (1 << self._eb) - 1
        return [
            sum((int(v) & mask) << (c * self._eb) for c, v in enumerate(a[y, x]))
            for y in range(self._h) for x in range(self._w)
        ]

    def decode_patch(self, payload: int, signed: bool = False) -> np.ndarray:
        """One output beat as a ``(kh, kw, C)`` int64 array (two's complement when ``signed``)."""
        kh, kw = self._kernel
        eb, mask = self._eb, (1 << self._eb) - 1
        vals = [(int(payload) >> (i * eb)) & mask for i in range(kh * kw * self._c)]
        if signed:
            vals = [v - (1 << eb) if v >> (eb - 1) else v for v in vals]
        return np.array(vals, dtype=np.int64).reshape(kh, kw, self._c)

    # --- hardware ---------------------------------------------------------------------------

    def elaborate(self, platform):
        m = Module()
        i_s, o_s = self.i_stream, self.o_stream
        h, w, eb = self._h, self._w, self._eb
        kh, kw = self._kernel
        sh, sw = self._stride
        top, left, _, _ = self._pads
        r, p = self._rows, self.pixel_width
        ho, wu = self.out_height, self.scan_end
        pad_pixel = Const(sum((self._pad_value & ((1 << eb) - 1)) << (c * eb) for c in range(self._c)), p)

        # -- line buffer: one memory per slot -------------------------------------------------
        wports, rports = [], []
        for s in range(r):
            mem = Memory(shape=p, depth=w, init=[])
            m.submodules[f"slot{s}"] = mem
            wports.append(mem.write_port())
            rports.append(mem.read_port(transparent_for=()))

        d = Signal(range(-1, r + 1), name="d")
        row_done = Signal(name="row_done")  # the writer completes a needed row at this edge
        released = Signal(range(kh + 1), name="released")  # rows the scan releases at this edge

        # -- writer ---------------------------------------------------------------------------
        wy = Signal(range(h), name="wy")
        wx = Signal(range(w), name="wx")
        ws = Signal(range(r), name="ws")
        need = Signal(name="need")
        accept = Signal(name="accept")
        needed_mask = sum(1 << y for y in range(h) if self.row_needed(y))
        if needed_mask == (1 << h) - 1:
            m.d.comb += need.eq(1)
        else:
            m.d.comb += need.eq(Const(needed_mask, h).bit_select(wy, 1))
        m.d.comb += [
            i_s.ready.eq(~need | (d < r)),
            accept.eq(i_s.valid & i_s.ready),
        ]
        for s, wp in enumerate(wports):
            m.d.comb += [wp.addr.eq(wx), wp.data.eq(i_s.payload), wp.en.eq(accept & need & (ws == s))]
        with m.If(accept):
            with m.If(wx == w - 1):
                m.d.sync += [wx.eq(0), wy.eq(Mux(wy == h - 1, 0, wy + 1))]
                with m.If(need):
                    m.d.comb += row_done.eq(1)
                    m.d.sync += ws.eq(Mux(ws == r - 1, 0, ws + 1))
            with m.Else():
                m.d.sync += wx.eq(wx + 1)

        # -- scan: window rows of the current output row --------------------------------------
        oy = Signal(range(ho), name="oy")
        ry0 = Signal(range(-top, (ho - 1) * sh - top + 1), name="ry0", init=-top)  # oy*sh - top
        px = Signal(range(wu), name="px", init=left)
        nx = Signal(range(max(kw, sw)), name="nx", init=kw - 1 - left)
        rs = Signal(range(r), name="rs")
        lo = Signal(range(h + 1), name="lo")
        hi = Signal(range(h + 1), name="hi")
        nreal = Signal(range(kh + 1), name="nreal")
        tp = Signal(range(kh), name="tp")
        step = Signal(range(sh + 1), name="step")
        pop = Signal(range(kh + 1), name="pop")
        m.d.comb += [
            lo.eq(Mux(ry0 < 0, 0, ry0)),
            hi.eq(Mux(ry0 + kh > h, h, ry0 + kh)),
            nreal.eq(hi - lo),
            tp.eq(lo - ry0),
            step.eq(Mux(ry0 + sh < 0, 0, ry0 + sh) - lo),
            pop.eq(Mux((oy == ho - 1) | (step > nreal), nreal, step)),
        ]

        ov = o_s.valid
        en = Signal(name="en")
        real = Signal(name="real")
        x = Signal(range(max(w, wu)), name="x")
        avail = Signal(name="avail")
        issue = Signal(name="issue")
        wrap = Signal(name="wrap")
        m.d.comb += [
            en.eq(~ov | o_s.ready),
            x.eq(px - left),
            real.eq(px < left + w),
            avail.eq(~real | (d >= nreal) | ((d == nreal - 1) & need & (wx > x))),
            issue.eq(en & avail),
            wrap.eq(px == wu - 1),
        ]
        for rp in rports:
            m.d.comb += [rp.addr.eq(Mux(real, x, 0)), rp.en.eq(en)]

        # Row selection of the issued column: window row ky is FIFO position ky - tp.
        sel_next, rowpad_next = [], []
        for ky in range(kh):
            s = Signal(range(-kh, r + kh), name=f"pos{ky}")
            sel = Signal(range(r), name=f"sel{ky}")
            rp_ = Signal(name=f"rowpad{ky}")
            m.d.comb += [
                s.eq(rs + ky - tp),
                sel.eq(Mux(s >= r, s - r, s)),
                rp_.eq((tp > ky) | (ky >= tp + nreal)),
            ]
            sel_next.append(sel)
            rowpad_next.append(rp_)

        a_v = Signal(name="a_v")
        a_e = Signal(name="a_e")
        a_first = Signal(name="a_first", reset_less=True)
        a_colpad = Signal(name="a_colpad", reset_less=True)
        a_sel = [Signal(range(r), name=f"a_sel{ky}", reset_less=True) for ky in range(kh)]
        a_rowpad = [Signal(name=f"a_rowpad{ky}", reset_less=True) for ky in range(kh)]

        with m.If(en):
            m.d.sync += [a_v.eq(issue), ov.eq(a_v & a_e)]
            with m.If(issue):
                m.d.sync += [
                    a_e.eq(nx == 0),
                    a_first.eq(px == left),
                    a_colpad.eq(~real),
                ]
                m.d.sync += [a.eq(s) for a, s in zip(a_sel, sel_next)]
                m.d.sync += [a.eq(s) for a, s in zip(a_rowpad, rowpad_next)]
                with m.If(wrap):
                    m.d.comb += released.eq(pop)
                    m.d.sync += [
                        px.eq(left),
                        nx.eq(kw - 1 - left),
                        oy.eq(Mux(oy == ho - 1, 0, oy + 1)),
                        ry0.eq(Mux(oy == ho - 1, -top, ry0 + sh)),
                    ]
                    rs_sum = Signal(range(2 * r), name="rs_sum")
                    m.d.comb += rs_sum.eq(rs + pop)
                    m.d.sync += rs.eq(Mux(rs_sum >= r, rs_sum - r, rs_sum))
                with m.Else():
                    m.d.sync += [px.eq(px + 1), nx.eq(Mux(nx == 0, sw - 1, nx - 1))]
        m.d.sync += d.eq(d + row_done - released)

        # -- window register (the output payload) ---------------------------------------------
        rdata = [rp.data for rp in rports]
        # Data only (ov says when it is a patch): not reset, which spares a reset mux per bit.
        win = [[Signal(p, name=f"win{ky}_{kx}", reset_less=True) for kx in range(kw)] for ky in range(kh)]
        for ky in range(kh):
            mem_px = rdata[0] if r == 1 else Array(rdata)[a_sel[ky]]
            col = Signal(p, name=f"col{ky}")
            m.d.comb += col.eq(Mux(a_colpad | a_rowpad[ky], pad_pixel, mem_px))
            with m.If(en & a_v):
                for kx in range(kw - 1):
                    m.d.sync += win[ky][kx].eq(Mux(a_first, pad_pixel, win[ky][kx + 1]))
                m.d.sync += win[ky][kw - 1].eq(col)
        m.d.comb += o_s.payload.eq(Cat(*(win[ky][kx] for ky in range(kh) for kx in range(kw))))
        return m


class MaxPoolOr(wiring.Component):
    """Binary max-pool (OR over each ``kh × kw`` window), no padding, floor mode (see the module
    docstring; the cycle behaviour is :class:`SlidingWindow`'s with the same parameters).

    Parameters
    ----------
    height, width, channels : int
        The input map ``H × W × C`` (bits).
    kernel : int or (int, int)
        ``(kh, kw)``.
    stride : int or (int, int) or None
        ``(sh, sw)``; ``None`` means the kernel (non-overlapping windows).
    buffer_rows : int or None
        Line-buffer slots of the underlying :class:`SlidingWindow`.

    Raises
    ------
    ValueError
        As :class:`SlidingWindow`.
    """

    def __init__(self, height: int, width: int, channels: int, *, kernel=2, stride=None,
                 buffer_rows: int | None = None):
        self._window = SlidingWindow(
            height, width, channels, 1, kernel=kernel, stride=kernel if stride is None else stride,
            pads=0, pad_value=0, buffer_rows=buffer_rows,
        )
        super().__init__({
            "i_stream": In(stream.Signature(self._window.channels)),
            "o_stream": Out(stream.Signature(self._window.channels)),
        })

    @property
    def window(self) -> SlidingWindow:
        """The window generator inside (geometry and timing)."""
        return self._window

    @property
    def height(self) -> int:
        return self._window.height

    @property
    def width(self) -> int:
        return self._window.width

    @property
    def channels(self) -> int:
        return self._window.channels

    @property
    def kernel(self) -> tuple[int, int]:
        return self._window.kernel

    @property
    def stride(self) -> tuple[int, int]:
        return self._window.stride

    @property
    def out_height(self) -> int:
        return self._window.out_height

    @property
    def cycle_params(self) -> dict:
        """As :attr:`SlidingWindow.cycle_params` (pads all 0)."""
        return self._window.cycle_params

    @property
    def out_width(self) -> int:
        return self._window.out_width

    def elaborate(self, platform):
        m = Module()
        m.submodules.window = win = self._window
        c = self.channels
        taps = win.kernel[0] * win.kernel[1]
        flat = Signal(win.patch_width, name="patch")
        pooled = Signal(c, name="pooled")
        m.d.comb += [
            win.i_stream.payload.eq(self.i_stream.payload),
            win.i_stream.valid.eq(self.i_stream.valid),
            self.i_stream.ready.eq(win.i_stream.ready),
            flat.eq(win.o_stream.payload),
            self.o_stream.valid.eq(win.o_stream.valid),
            win.o_stream.ready.eq(self.o_stream.ready),
        ]
        acc = flat[0:c]
        for t in range(1, taps):
            acc = acc | flat[t * c : (t + 1) * c]
        m.d.comb += [pooled.eq(acc), self.o_stream.payload.eq(pooled)]
        return m
