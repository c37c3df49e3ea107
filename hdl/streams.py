"""Stream utilities between engines: a width adapter and an argmax.

Both are :class:`amaranth.lib.wiring.Component`\\ s with ``i_stream`` / ``o_stream`` ports
(``amaranth.lib.stream``; a beat transfers on a rising edge where valid & ready), synchronous
active-high reset (the ``sync`` domain's), registered ``o_stream.valid`` and ``o_stream.payload``.
Cycle ``c`` is the ``c``-th rising edge after reset is released; values are sampled just before
the edge. In both blocks ``i_stream.ready`` is a combinational function of registers and of
``o_stream.ready`` (never of ``i_stream.valid``); that is the only combinational path between the
ports, so chaining them behind engines with registered ``ready`` (``FoldedDense``, ``IntDense``)
keeps ready paths one block long.

:class:`WidthAdapter` — vectors ⇄ chunks
-----------------------------------------
A *vector* of ``V`` bits travels as ``R = ceil(V / C)`` *chunks* of ``C`` bits: chunk ``j`` holds
vector bits ``[j*C, (j+1)*C)``, the last chunk zero-padded above bit ``V``. That is how an engine
emitting one ``N``-bit vector per beat (a hidden ``FoldedDense``/``IntDense``) feeds a folded
engine that takes ``SIMD``-bit beats, and how ``K*bits``-bit integer vectors become ``IntDense``'s
``bits*SIMD``-bit beats (element boundaries line up). ``WidthAdapter(in_width, out_width)``
*splits* when ``in_width > out_width`` (``V = in_width``, ``C = out_width``), *gathers* when
``in_width < out_width`` (``C = in_width``, ``V = out_width``: chunk bits above ``V`` in the last
chunk are dropped) and is a one-beat register stage when they are equal (``R = 1``; both
descriptions below then coincide).

Split (``in_width >= out_width``). State: ``full``, chunk counter ``j`` in ``[0, R)``, vector
register ``buf``; reset clears ``full`` and ``j``.

* ``o_stream.valid = full``; ``o_stream.payload`` = chunk ``j`` of the held vector (``buf`` is
  shifted down by ``C`` bits per chunk sent, so the payload is always ``buf[0:C]``).
* ``i_stream.ready = not full or (o_stream.ready and j == R - 1)``.
* At an edge where an input beat transfers: ``buf`` = the vector, ``j = 0``, ``full = 1``.
  Else, where an output beat transfers: ``j = j + 1``, or, after chunk ``R - 1``, ``j = 0`` and
  ``full = 0``.

So a vector accepted at edge ``c`` leaves as chunks at edges ``c+1, c+2, ...`` (one per edge where
the sink is ready), and the next vector is accepted at the edge where the last chunk leaves:
never stalled, one chunk per cycle, ``R`` cycles per vector, latency 1.

Gather (``in_width < out_width``, ``R >= 2``). State: chunk counter ``j`` in ``[0, R)``, output valid
``ov``, shift register ``buf`` of ``R*C`` bits; reset clears ``j`` and ``ov``.

* ``o_stream.valid = ov``; ``o_stream.payload = buf[0:V]``.
* ``i_stream.ready = not ov or o_stream.ready``.
* At an edge where an input beat transfers: it is shifted into ``buf`` from the top
  (``buf = {chunk, buf[C:]}``); ``j = j + 1``, or, for chunk ``R - 1``, ``j = 0`` and ``ov = 1``;
  otherwise ``ov = 0`` if an output beat transfers at this edge. At an edge where only an
  output beat transfers: ``ov = 0``.

So a vector whose last chunk is accepted at edge ``c`` leaves at edge ``c+1`` at the earliest, and
the first chunk of the next vector is accepted at the edge where it leaves: never stalled, one
chunk per cycle, ``R`` cycles per vector. While a finished vector waits for the sink, no chunk
is accepted (one buffer).

:class:`Argmax` — index of the largest score
--------------------------------------------
Input beat: ``N`` scores of ``width`` bits, score ``i`` at bits ``[i*width, (i+1)*width)``,
unsigned or two's complement (``signed``). This is the output-layer payload of
``FoldedDense`` (popcounts ``p``, unsigned, ``width = out_lane_width``; ``2p - K`` is increasing in
``p``, so the argmax is the same), of ``IntDense`` (signed accumulators,
``width = out_lane_width``) and of ``UnrolledDense`` (unsigned popcounts, flat array).
Output beat: a :class:`~amaranth.lib.data.StructLayout` with ``index`` (``max(1,
ceil(log2 N))`` bits, flat bits from 0) — the lowest ``i`` whose score is the maximum — and, with
``with_scores=True``, ``scores`` (the input payload unchanged, the flat bits above ``index``).

Datapath: a tournament tree of ``D = ceil(log2 N)`` comparator levels; level pairs are
``(0, 1), (2, 3), ...`` with an odd last candidate passed on, so the left candidate of every pair
covers lower indices and the right one wins only when *strictly* greater (ties to the lowest
index). A register stage follows every ``stage_levels`` levels and the last level (for
``N = 1``, a single stage holds index 0): ``L = max(1, ceil(D / stage_levels))`` stages, flags
``v_1 .. v_L`` (reset to 0), payload registers not reset.

Exact cycle behaviour (the pipeline discipline of ``UnrolledDense``)::

    en             = not v_L or o_stream.ready
    i_stream.ready = en
    o_stream.valid = v_L
    at an edge where en:  v_1 = i_stream.valid;  v_t = v_(t-1) for t = 2..L;  data follows
    (else every stage holds)

A beat accepted at edge ``c`` is emitted at edge ``c + L`` when the sink is always ready; one beat
per cycle.
"""

from __future__ import annotations

import numbers

from amaranth.hdl import Cat, Const, Module, Mux, Shape, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["WidthAdapter", "Argmax"]


def _positive_int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < 1:
        raise ValueError(f"{what} must be a positive integer, not {value!r}")
    return int(value)


class WidthAdapter(wiring.Component):
    """Split ``in_width``-bit vectors into ``out_width``-bit chunks, or gather chunks into vectors
    (see the module docstring for the chunk format and the exact cycle behaviour).

    Parameters
    ----------
    in_width, out_width : int
        Payload widths of ``i_stream`` and ``o_stream``.

    Raises
    ------
    ValueError
        On a width that is not a positive integer.
    """

    def __init__(self, in_width: int, out_width: int):
        self._in_width = _positive_int(in_width, "in_width")
        self._out_width = _positive_int(out_width, "out_width")
        super().__init__({
            "i_stream": In(stream.Signature(self._in_width)),
            "o_stream": Out(stream.Signature(self._out_width)),
        })

    @property
    def in_width(self) -> int:
        return self._in_width

    @property
    def out_width(self) -> int:
        return self._out_width

    @property
    def splits(self) -> bool:
        """True when one input beat becomes ``R`` output beats (``in_width >= out_width``)."""
        return self._in_width >= self._out_width

    @property
    def vector_width(self) -> int:
        """``V``, the wider of the two widths."""
        return max(self._in_width, self._out_width)

    @property
    def chunk_width(self) -> int:
        """``C``, the narrower of the two widths."""
        return min(self._in_width, self._out_width)

    @property
    def ratio(self) -> int:
        """``R = ceil(V / C)``: chunks per vector."""
        return -(-self.vector_width // self.chunk_width)

    def elaborate(self, platform):
        m = Module()
        i_s, o_s = self.i_stream, self.o_stream
        r, c, v = self.ratio, self.chunk_width, self.vector_width
        j = Signal(range(r), name="chunk")
        last = Signal(name="last")
        m.d.comb += last.eq(j == r - 1)
        accept = Signal(name="accept")
        emit = Signal(name="emit")
        m.d.comb += [accept.eq(i_s.valid & i_s.ready), emit.eq(o_s.valid & o_s.ready)]

        if self.splits:
            full = o_s.valid
            buf = Signal(v, name="buf")
            m.d.comb += [
                i_s.ready.eq(~full | (o_s.ready & last)),
                o_s.payload.eq(buf[:c]),
            ]
            with m.If(accept):
                m.d.sync += [buf.eq(i_s.payload), j.eq(0), full.eq(1)]
            with m.Elif(emit):
                with m.If(last):
                    m.d.sync += [j.eq(0), full.eq(0)]
                with m.Else():
                    # Shifting (zeros in from the top) instead of a chunk mux: the last chunk's
                    # pad bits come out 0 and no R-way multiplexer is built.
                    m.d.sync += [j.eq(j + 1), buf.eq(buf[c:])]
        else:
            ov = o_s.valid
            buf = Signal(r * c, name="buf")
            m.d.comb += [
                i_s.ready.eq(~ov | o_s.ready),
                o_s.payload.eq(buf[:v]),
            ]
            with m.If(accept):
                m.d.sync += buf.eq(Cat(buf[c:], i_s.payload))
                with m.If(last):
                    m.d.sync += [j.eq(0), ov.eq(1)]
                with m.Else():
                    m.d.sync += j.eq(j + 1)
                    with m.If(emit):
                        m.d.sync += ov.eq(0)
            with m.Elif(emit):
                m.d.sync += ov.eq(0)
        return m


class Argmax(wiring.Component):
    """Index of the largest of ``n`` scores, ties to the lowest index, pipelined (see the module
    docstring for payloads and the exact cycle behaviour).

    Parameters
    ----------
    n : int
        Scores per beat.
    width : int
        Bits per score.
    signed : bool
        Whether scores are two's complement (else unsigned).
    with_scores : bool
        Also pass the input scores through to the output payload (``scores`` field).
    stage_levels : int
        Comparator levels between pipeline registers (fewer stages, longer paths).

    Raises
    ------
    ValueError
        On a non-positive ``n``/``width``/``stage_levels`` or a non-bool ``signed``/``with_scores``.
    """

    def __init__(self, n: int, width: int, *, signed: bool, with_scores: bool = False, stage_levels: int = 1):
        self._n = _positive_int(n, "n")
        self._width = _positive_int(width, "width")
        for value, what in ((signed, "signed"), (with_scores, "with_scores")):
            if not isinstance(value, bool):
                raise ValueError(f"{what} must be True or False, not {value!r}")
        self._signed = signed
        self._with_scores = with_scores
        self._stage_levels = _positive_int(stage_levels, "stage_levels")
        fields = {"index": unsigned(self.index_width)}
        if with_scores:
            fields["scores"] = unsigned(self._n * self._width)
        super().__init__({
            "i_stream": In(stream.Signature(self._n * self._width)),
            "o_stream": Out(stream.Signature(data.StructLayout(fields))),
        })

    @property
    def n(self) -> int:
        return self._n

    @property
    def width(self) -> int:
        return self._width

    @property
    def signed(self) -> bool:
        return self._signed

    @property
    def with_scores(self) -> bool:
        return self._with_scores

    @property
    def stage_levels(self) -> int:
        return self._stage_levels

    @property
    def index_width(self) -> int:
        """Bits of ``index``: ``max(1, ceil(log2 N))``."""
        return max(1, (self._n - 1).bit_length())

    @property
    def levels(self) -> int:
        """``D = ceil(log2 N)`` comparator levels."""
        return (self._n - 1).bit_length()

    @property
    def latency(self) -> int:
        """``L``: pipeline stages, the cycles from input to output with the sink always ready."""
        return max(1, -(-self.levels // self._stage_levels))

    def elaborate(self, platform):
        m = Module()
        i_s, o_s = self.i_stream, self.o_stream
        n, width, iw = self._n, self._width, self.index_width
        score_shape = Shape(width, self._signed)
        depth = self.levels

        en = Signal(name="en")
        flat = Signal(n * width, name="scores_in")
        m.d.comb += flat.eq(i_s.payload)
        cands = []
        for i in range(n):
            raw = flat[i * width : (i + 1) * width]
            cands.append((Const(i, iw), raw.as_signed() if self._signed else raw))
        carry = flat  # the scores, passed along when with_scores
        valid = i_s.valid
        stage = 0

        def register(cands, carry, valid):
            nonlocal stage
            stage += 1
            out = []
            for j, (idx, score) in enumerate(cands):
                r_idx = Signal(iw, name=f"s{stage}_idx{j}")
                r_score = Signal(score_shape, name=f"s{stage}_score{j}")
                with m.If(en):
                    m.d.sync += [r_idx.eq(idx), r_score.eq(score)]
                out.append((r_idx, r_score))
            r_valid = Signal(name=f"v{stage}")
            with m.If(en):
                m.d.sync += r_valid.eq(valid)
            r_carry = None
            if self._with_scores:
                r_carry = Signal(n * width, name=f"s{stage}_scores")
                with m.If(en):
                    m.d.sync += r_carry.eq(carry)
            return out, r_carry, r_valid

        if depth == 0:
            cands, carry, valid = register(cands, carry, valid)
        for level in range(1, depth + 1):
            nxt = []
            for j in range(0, len(cands) - 1, 2):
                (ia, sa), (ib, sb) = cands[j], cands[j + 1]
                # Signals, not expressions: each is used twice (compare and select) downstream.
                take_b = Signal(name=f"l{level}_gt{j // 2}")
                idx = Signal(iw, name=f"l{level}_idx{j // 2}")
                score = Signal(score_shape, name=f"l{level}_score{j // 2}")
                m.d.comb += [
                    take_b.eq(sb > sa),  # strict: a tie keeps the lower index
                    idx.eq(Mux(take_b, ib, ia)),
                    score.eq(Mux(take_b, sb, sa)),
                ]
                nxt.append((idx, score))
            if len(cands) % 2:
                nxt.append(cands[-1])
            cands = nxt
            if level % self._stage_levels == 0 or level == depth:
                cands, carry, valid = register(cands, carry, valid)

        assert len(cands) == 1 and stage == self.latency
        m.d.comb += [
            en.eq(~valid | o_s.ready),
            i_s.ready.eq(en),
            o_s.valid.eq(valid),
            o_s.payload.index.eq(cands[0][0]),
        ]
        if self._with_scores:
            m.d.comb += o_s.payload.scores.eq(carry)
        return m
