"""Folded first-layer engine: ``PE`` output lanes × ``SIMD`` n-bit integer inputs per cycle,
±1 weights.

For the first layer of a network whose input is n-bit integers (e.g. 8-bit pixels, design.md
§2): ``acc_n = sum_k x_k * w_nk`` with ``w = +1`` (weight bit 1) or ``-1`` (weight bit 0), and
``out_n = acc_n >= t_n`` with an integer threshold ``t_n`` on ``acc`` (the IR's dot domain; no
popcount conversion). The output layer (no thresholds) emits the ``N`` accumulators.

The engine has the organisation, the streams discipline and **exactly the cycle behaviour** of
:class:`bnnfab.hdl.folded.FoldedDense` with the same ``N``, ``K``, ``PE`` and ``SIMD``: same input
double buffer, same issue / A / B / output pipeline, same stall rule. Only the data differ
(``bits*SIMD``-bit input beats, signed accumulators), so one cycle model serves both engines.
One input vector costs ``NF * SF`` core cycles, ``NF = ceil(N / PE)``, ``SF = ceil(K / SIMD)``.

Numbers
-------
``bits`` and ``signed`` give the element range ``[lo, hi]``: ``[0, 2**bits - 1]`` unsigned,
``[-2**(bits-1), 2**(bits-1) - 1]`` signed (two's complement). The largest ``|x * w|`` is
``m = 2**bits - 1`` (unsigned) or ``m = 2**(bits-1)`` (signed, from ``-lo``), so
``|acc| <= M = K * m``. Accumulators are two's complement of width
``A = ceil(log2(M + 1)) + 1`` (``M.bit_length() + 1``: the magnitude bits plus a sign bit; the
range ``[-2**(A-1), 2**(A-1) - 1]`` contains ``[-M, M]``). Hidden-layer thresholds are stored as
``clamp(t, -M, M + 1)``, exact for every integer ``t`` (``t <= -M``: the channel always fires;
``t > M``: it never does).

Streams (``amaranth.lib.stream``; a beat transfers on a rising edge where valid & ready)
------------------------------------------------------------------------------------------
``i_stream``, payload ``bits * SIMD`` bits
    One input vector is ``SF`` beats, in order; element ``k`` sits at bits
    ``[(k % SIMD) * bits, (k % SIMD + 1) * bits)`` of beat ``k // SIMD``, two's complement when
    ``signed`` (a vector of ``K`` elements packed the same way is ``K * bits`` bits long, so a
    :class:`bnnfab.hdl.streams.WidthAdapter` cuts it into beats). The pad elements of the last
    beat (elements ``>= K``) are *ignored*: the engine clears them to the value 0 as it stores
    the beat, so any value is safe there.
``o_stream``, payload ``N * W`` bits, one beat per input vector
    Hidden layer (``thresholds`` given): ``W = 1``; bit ``n`` is ``acc_n >= t_n``.
    Output layer (``thresholds=None``): ``W = A``; bits ``[n*A, (n+1)*A)`` hold ``acc_n`` in two's
    complement (the score itself; feed :class:`bnnfab.hdl.streams.Argmax` with
    ``width=A, signed=True``).

Datapath
--------
* Input buffer: a ``2*SF`` × ``bits*SIMD`` memory, two banks of one vector each (double
  buffering).
* Weight memory: ``NF*SF`` rows of ``PE*SIMD`` bits, the layout of ``FoldedDense``: row
  ``nf*SF + sf``, bits ``[pe*SIMD, (pe+1)*SIMD)`` hold the weights of neuron ``nf*PE + pe`` for
  elements ``sf*SIMD ..``. Pad weight bits (element ``>= K`` or neuron ``>= N``) are 1; a pad
  element holds 0 and adds nothing whatever its weight.
* Threshold memory (hidden layers only): ``NF`` rows of ``PE`` lanes of ``Wt`` bits (two's
  complement of ``clamp(t, -M, M+1)``, ``Wt = (M + 1).bit_length() + 1``); pad lanes hold 0.
* Stage A, per lane: each element is widened to ``bits + 1`` signed bits and conditionally
  inverted, ``w ? x : ~x`` (``~x = -x - 1``); an adder tree sums the ``SIMD`` terms plus
  ``popcount(~w)``, the ``+1`` of every negation, so no term needs its own negating adder. The
  chunk sum (``|.| <= min(SIMD, K) * m``) is registered into stage B.
* Stage B: ``acc = (first fold ? 0 : acc) + chunk sum``; the threshold comparison is signed.
  Per-fold results are shifted into a result register; the last fold of a vector loads the whole
  vector into the output register.

Exact cycle behaviour (identical to ``FoldedDense``)
----------------------------------------------------
Cycle ``c`` is the ``c``-th rising edge after reset is released (the first is cycle 0). Values
are sampled just before the edge. State: bank flags ``full[0..1]``, write bank ``wb`` and index
``wi``, read bank ``rb`` and fold counters ``(nf, sf)``, pipeline valid bits ``A``, ``B`` (each
with a flag *final*: the entry is ``(nf, sf) == (NF-1, SF-1)``, the last of its vector) and the
output valid ``ov``. Reset (synchronous, active-high, the ``sync`` domain's) clears them all.

* ``i_stream.ready = not full[wb]`` (a register: never depends on ``valid`` or on ``o_stream``).
  ``o_stream.valid = ov`` (a register).
* ``stall = B.valid and B.final and ov and not o_stream.ready`` (combinational from
  ``o_stream.ready``: it is the core's clock enable).

At edge ``c``:

1. Loader, independent of ``stall``: if an input beat transfers, it is stored at index ``wi`` of
   bank ``wb``; ``wi += 1``; when ``wi`` reaches ``SF``: ``wi = 0``, ``full[wb] = 1``,
   ``wb ^= 1``.
2. If ``stall``: the core holds (issue counters, ``A``, ``B``, accumulators, ``ov = 1``).
   Otherwise:

   * issue: if ``full[rb]`` (its value before the edge), the entry ``(nf, sf)`` enters ``A``
     and the counters advance (``sf`` fastest); after the final entry ``full[rb] = 0`` and
     ``rb ^= 1``. If not ``full[rb]``, a bubble enters ``A``;
   * ``B = A`` (old value);
   * output: if the old ``B`` is valid and final, ``ov = 1`` (its vector's result is loaded);
     else if an output beat transfers, ``ov = 0``.

Consequences (all exact):

* Never stalled: one vector in and one out every ``NF*SF`` cycles.
* Latency: a vector whose last input beat transfers at cycle ``a`` into an idle engine is
  emitted at cycle ``a + NF*SF + 3`` at the earliest. Fill: with a fresh engine and input valid
  from cycle 0, the first output transfers at cycle ``NF*SF + SF + 2``.
* Backpressure: the output holds one finished vector; the core stalls only when the next
  vector's final fold would overwrite an unaccepted output. Nothing is lost, duplicated or
  reordered.
"""

from __future__ import annotations

import numbers

import numpy as np
from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from bnnfab.models import Conv2d, Dense

__all__ = ["IntDense"]


def _positive_int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < 1:
        raise ValueError(f"{what} must be a positive integer, not {value!r}")
    return int(value)


def _sum_tree(terms: list):
    """Balanced adder tree; Amaranth widens every sum, so no partial sum overflows."""
    while len(terms) > 1:
        pairs = [terms[j] + terms[j + 1] for j in range(0, len(terms) - 1, 2)]
        if len(terms) % 2:
            pairs.append(terms[-1])
        terms = pairs
    return terms[0]


class IntDense(wiring.Component):
    """Folded integer-input dense engine (see the module docstring for numbers, streams, cycles).

    Parameters
    ----------
    weights : array_like of bool, shape (N, K)
        Weights, True = +1, False = -1.
    thresholds : array_like of int, shape (N,), or None
        Thresholds ``t`` on the accumulator (output bit ``n`` is ``acc_n >= t_n``; any integer).
        ``None`` makes the output layer: the engine emits the ``N`` signed accumulators.
    bits : int
        Width of an input element.
    signed : bool
        Whether input elements are two's complement (else unsigned).
    pe : int
        Output lanes computed in parallel.
    simd : int
        Input elements consumed per lane and cycle; the input stream carries ``bits * simd`` bits.

    Raises
    ------
    ValueError
        On a non-positive ``bits``/``pe``/``simd``, a non-bool ``signed``, or weights/thresholds of
        the wrong shape or type.
    """

    def __init__(self, weights, thresholds=None, *, bits: int, signed: bool, pe: int, simd: int):
        self._bits = _positive_int(bits, "bits")
        if not isinstance(signed, (bool, np.bool_)):
            raise ValueError(f"signed must be True or False, not {signed!r}")
        self._signed = bool(signed)
        self._pe = _positive_int(pe, "pe")
        self._simd = _positive_int(simd, "simd")
        w = np.asarray(weights)
        if w.ndim != 2 or w.shape[0] < 1 or w.shape[1] < 1:
            raise ValueError(f"weights must be a non-empty (N, K) array, got shape {w.shape}")
        if w.dtype != np.bool_:
            if not (np.issubdtype(w.dtype, np.integer) and np.isin(w, (0, 1)).all()):
                raise ValueError(f"weights must be booleans (True = +1), got dtype {w.dtype}")
            w = w.astype(np.bool_)
        self._weights = np.array(w, dtype=np.bool_, copy=True)
        self._weights.flags.writeable = False
        n, _ = self._weights.shape
        if thresholds is None:
            self._thresholds = None
        else:
            t = np.asarray(thresholds)
            if t.shape != (n,):
                raise ValueError(f"thresholds must have shape ({n},), one per output channel, got {t.shape}")
            values = t.tolist()
            for v in values:
                if isinstance(v, bool) or not isinstance(v, numbers.Integral):
                    raise ValueError(f"thresholds must be integers (on the accumulator), not {v!r}")
            # Python ints: exact for any size; only the clamped value is stored.
            self._thresholds = tuple(int(v) for v in values)
        super().__init__({
            "i_stream": In(stream.Signature(self._bits * self._simd)),
            "o_stream": Out(stream.Signature(self.n * self.out_lane_width)),
        })

    @classmethod
    def from_layer(cls, layer: Dense | Conv2d, *, bits: int, signed: bool, pe: int, simd: int) -> "IntDense":
        """Engine for an IR layer that takes the model's integer input; its thresholds are
        already on the accumulator and are used as they are.

        A :class:`Conv2d` runs as a matrix-vector engine once per output position on the
        ``(ky, kx, c)``-flattened patch. Every padding kind is exact provided the window generator
        supplies padded taps as elements holding the padding's value: 0 (``ZERO``: the dot product
        over the valid taps), +1 or -1. Raises ``ValueError`` when that value is not an element
        of the input range (-1 for unsigned inputs, +1 for 1-bit signed ones).
        """
        if not isinstance(layer, (Dense, Conv2d)):
            raise ValueError(f"from_layer takes a Dense or Conv2d layer, not {type(layer).__name__}")
        engine = cls(layer.weights_2d, layer.thresholds, bits=bits, signed=signed, pe=pe, simd=simd)
        if isinstance(layer, Conv2d) and layer.padded:
            lo, hi = engine.element_range
            fill = layer.padding.value_pm1
            if not lo <= fill <= hi:
                kind = "signed" if engine.signed else "unsigned"
                raise ValueError(
                    f"{layer.where()}: padding {layer.padding.value!r} feeds the value {fill} into padded "
                    f"taps, outside the {kind} {engine.bits}-bit input range [{lo}, {hi}]"
                )
        return engine

    # --- geometry ---------------------------------------------------------------------------

    @property
    def n(self) -> int:
        return int(self._weights.shape[0])

    @property
    def k(self) -> int:
        return int(self._weights.shape[1])

    @property
    def bits(self) -> int:
        return self._bits

    @property
    def signed(self) -> bool:
        return self._signed

    @property
    def pe(self) -> int:
        return self._pe

    @property
    def simd(self) -> int:
        return self._simd

    @property
    def in_width(self) -> int:
        """Input beat width ``bits * SIMD``."""
        return self._bits * self._simd

    @property
    def nf(self) -> int:
        """Neuron folds ``ceil(N / PE)``."""
        return -(-self.n // self._pe)

    @property
    def sf(self) -> int:
        """SIMD folds ``ceil(K / SIMD)``: input beats per vector."""
        return -(-self.k // self._simd)

    @property
    def cycles_per_vector(self) -> int:
        """Core cycles per vector in steady state, ``NF * SF``."""
        return self.nf * self.sf

    @property
    def output_layer(self) -> bool:
        return self._thresholds is None

    @property
    def element_range(self) -> tuple[int, int]:
        """Inclusive range ``(lo, hi)`` of an input element."""
        if self._signed:
            return -(1 << (self._bits - 1)), (1 << (self._bits - 1)) - 1
        return 0, (1 << self._bits) - 1

    @property
    def max_term(self) -> int:
        """``m``: the largest ``|x * w|``."""
        lo, hi = self.element_range
        return max(-lo, hi)

    @property
    def max_abs_acc(self) -> int:
        """``M = K * m``: a bound on ``|acc|`` (reached by some input for every channel)."""
        return self.k * self.max_term

    @property
    def acc_width(self) -> int:
        """``A``: two's complement bits of an accumulator, ``M.bit_length() + 1``."""
        return self.max_abs_acc.bit_length() + 1

    @property
    def out_lane_width(self) -> int:
        """``W``: 1 for a hidden layer, :attr:`acc_width` for the output layer."""
        return self.acc_width if self.output_layer else 1

    @property
    def threshold_width(self) -> int:
        """``Wt``: two's complement bits of a stored threshold ``clamp(t, -M, M+1)``."""
        return (self.max_abs_acc + 1).bit_length() + 1

    # --- memory images and stream (de)coding ------------------------------------------------

    def weight_rows(self) -> list[int]:
        """Weight memory image: row ``nf*SF + sf``, lane ``pe`` at bits ``[pe*SIMD, (pe+1)*SIMD)``;
        pad bits 1."""
        nf, sf, pe, simd = self.nf, self.sf, self._pe, self._simd
        padded = np.ones((nf * pe, sf * simd), dtype=np.bool_)
        padded[: self.n, : self.k] = self._weights
        tiles = padded.reshape(nf, pe, sf, simd).transpose(0, 2, 1, 3).reshape(nf * sf, pe * simd)
        return [int.from_bytes(np.packbits(row, bitorder="little").tobytes(), "little") for row in tiles]

    def stored_thresholds(self) -> list[int] | None:
        """``clamp(t, -M, M+1)`` per output channel (None for the output layer)."""
        if self._thresholds is None:
            return None
        big = self.max_abs_acc
        return [min(max(t, -big), big + 1) for t in self._thresholds]

    def threshold_rows(self) -> list[int] | None:
        """Threshold memory image: row ``nf``, lane ``pe`` at ``[pe*Wt, (pe+1)*Wt)`` in two's
        complement; pad lanes 0."""
        stored = self.stored_thresholds()
        if stored is None:
            return None
        wt = self.threshold_width
        mask = (1 << wt) - 1
        rows = []
        for f in range(self.nf):
            row = 0
            for lane in range(self._pe):
                ch = f * self._pe + lane
                if ch < self.n:
                    row |= (stored[ch] & mask) << (lane * wt)
            rows.append(row)
        return rows

    def encode_input(self, x) -> list[int]:
        """The ``SF`` input beats of one vector ``x`` (``K`` integers in :attr:`element_range`);
        pad elements 0."""
        values = np.asarray(x).reshape(-1).tolist()
        if len(values) != self.k:
            raise ValueError(f"an input vector must have K={self.k} elements, got {len(values)}")
        lo, hi = self.element_range
        for i, v in enumerate(values):
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or not lo <= v <= hi:
                raise ValueError(f"input element {i} must be an integer in [{lo}, {hi}], not {v!r}")
        mask = (1 << self._bits) - 1
        beats = [0] * self.sf
        for i, v in enumerate(values):
            beats[i // self._simd] |= (int(v) & mask) << ((i % self._simd) * self._bits)
        return beats

    def decode_output(self, payload: int) -> np.ndarray:
        """One output beat as ``(N,)``: bools (hidden layer) or int64 accumulators (output layer)."""
        w = self.out_lane_width
        mask = (1 << w) - 1
        fields = [(int(payload) >> (n * w)) & mask for n in range(self.n)]
        if self.output_layer:
            return np.array([f - (1 << w) if f >> (w - 1) else f for f in fields], dtype=np.int64)
        return np.array(fields, dtype=np.bool_)

    # --- hardware ---------------------------------------------------------------------------

    def elaborate(self, platform):
        m = Module()
        n, k, pe, simd, nf, sf = self.n, self.k, self._pe, self._simd, self.nf, self.sf
        bits = self._bits
        w_acc = self.acc_width
        w_out = self.out_lane_width
        # A chunk sum: pad elements are 0, so at most min(SIMD, K) real terms.
        w_cs = (min(simd, k) * self.max_term).bit_length() + 1
        last_pad = sf * simd - k  # pad elements in the last beat

        i_s, o_s = self.i_stream, self.o_stream

        m.submodules.xbuf = xbuf = Memory(shape=bits * simd, depth=2 * sf, init=[])
        m.submodules.wmem = wmem = Memory(shape=pe * simd, depth=nf * sf, init=self.weight_rows())
        x_wr = xbuf.write_port()
        x_rd = xbuf.read_port()
        w_rd = wmem.read_port()
        t_rd = None
        if not self.output_layer:
            m.submodules.tmem = tmem = Memory(
                shape=pe * self.threshold_width, depth=nf, init=self.threshold_rows()
            )
            t_rd = tmem.read_port()

        stall = Signal(name="stall")

        # -- loader: fills bank wb; the last beat's pad elements are cleared on the way in ----
        full = Signal(2, name="full")
        wb = Signal(name="wb")
        wi = Signal(range(sf), name="wi")
        wi_last = Signal(name="wi_last")
        accept = Signal(name="accept")
        m.d.comb += [
            wi_last.eq(wi == sf - 1),
            i_s.ready.eq(~full.bit_select(wb, 1)),
            accept.eq(i_s.valid & i_s.ready),
            x_wr.addr.eq(Mux(wb, sf, 0) + wi),
            x_wr.en.eq(accept),
        ]
        if last_pad:
            keep = Const((1 << ((simd - last_pad) * bits)) - 1, bits * simd)
            m.d.comb += x_wr.data.eq(Mux(wi_last, i_s.payload & keep, i_s.payload))
        else:
            m.d.comb += x_wr.data.eq(i_s.payload)
        set_full = Signal(2, name="set_full")
        with m.If(accept):
            with m.If(wi_last):
                m.d.sync += [wi.eq(0), wb.eq(~wb)]
                m.d.comb += set_full.eq(Mux(wb, 0b10, 0b01))
            with m.Else():
                m.d.sync += wi.eq(wi + 1)

        # -- issue: walk (nf, sf) over bank rb; addresses go to the synchronous read ports -----
        rb = Signal(name="rb")
        f_n = Signal(range(nf), name="f_n")
        f_s = Signal(range(sf), name="f_s")
        waddr = Signal(range(nf * sf), name="waddr")  # == f_n * SF + f_s
        issue = Signal(name="issue")
        issue_first = Signal(name="issue_first")
        issue_last = Signal(name="issue_last")
        issue_final = Signal(name="issue_final")
        clr_full = Signal(2, name="clr_full")
        m.d.comb += [
            issue.eq(full.bit_select(rb, 1) & ~stall),
            issue_first.eq(f_s == 0),
            issue_last.eq(f_s == sf - 1),
            issue_final.eq(issue_last & (f_n == nf - 1)),
            x_rd.addr.eq(Mux(rb, sf, 0) + f_s),
            x_rd.en.eq(~stall),
            w_rd.addr.eq(waddr),
            w_rd.en.eq(~stall),
        ]
        with m.If(issue):
            with m.If(issue_final):
                m.d.sync += [f_n.eq(0), f_s.eq(0), waddr.eq(0), rb.eq(~rb)]
                m.d.comb += clr_full.eq(Mux(rb, 0b10, 0b01))
            with m.Else():
                m.d.sync += waddr.eq(waddr + 1)
                with m.If(issue_last):
                    m.d.sync += [f_s.eq(0), f_n.eq(f_n + 1)]
                with m.Else():
                    m.d.sync += f_s.eq(f_s + 1)
        m.d.sync += full.eq((full & ~clr_full) | set_full)

        # -- stage A: memory data; conditional inversion and one adder tree per lane ----------
        a_valid = Signal(name="a_valid")
        a_first = Signal(name="a_first")
        a_last = Signal(name="a_last")
        a_final = Signal(name="a_final")
        a_nf = Signal(range(nf), name="a_nf")
        with m.If(~stall):
            m.d.sync += [
                a_valid.eq(issue),
                a_first.eq(issue_first),
                a_last.eq(issue_last),
                a_final.eq(issue_final),
                a_nf.eq(f_n),
            ]
        x_chunk = Signal(bits * simd, name="x_chunk")
        m.d.comb += x_chunk.eq(x_rd.data)
        # Each element widened once to bits+1 signed bits (zero- or sign-extended), shared by
        # all lanes (a Signal, so the slice is not copied into every lane's expression).
        xs = []
        for e in range(simd):
            raw = x_chunk[e * bits : (e + 1) * bits]
            x_e = Signal(signed(bits + 1), name=f"x{e}")
            m.d.comb += x_e.eq(raw.as_signed() if self._signed else raw)
            xs.append(x_e)
        w_row = Signal(pe * simd, name="w_row")
        m.d.comb += w_row.eq(w_rd.data)
        chunk_sums = []
        for lane in range(pe):
            w_lane = Signal(simd, name=f"w{lane}")
            m.d.comb += w_lane.eq(w_row[lane * simd : (lane + 1) * simd])
            # w ? x : -x  ==  (w ? x : ~x) + (not w): the +1s are counted once per lane.
            terms = [Mux(w_lane[e], xs[e], ~xs[e]) for e in range(simd)]
            n_neg = Signal(range(simd + 1), name=f"neg{lane}")
            m.d.comb += n_neg.eq(_sum_tree([~w_lane[e] for e in range(simd)]))
            cs = Signal(signed(w_cs), name=f"cs{lane}")  # exact: |chunk sum| <= min(SIMD, K) * m
            m.d.comb += cs.eq(_sum_tree(terms + [n_neg]))
            chunk_sums.append(cs)
        if t_rd is not None:
            m.d.comb += [t_rd.addr.eq(a_nf), t_rd.en.eq(~stall)]

        # -- stage B: registered chunk sums; accumulate; threshold ----------------------------
        b_valid = Signal(name="b_valid")
        b_first = Signal(name="b_first")
        b_last = Signal(name="b_last")
        b_final = Signal(name="b_final")
        b_cs = [Signal(signed(w_cs), name=f"b_cs{lane}") for lane in range(pe)]
        with m.If(~stall):
            m.d.sync += [
                b_valid.eq(a_valid),
                b_first.eq(a_first),
                b_last.eq(a_last),
                b_final.eq(a_final),
            ]
            m.d.sync += [b.eq(cs) for b, cs in zip(b_cs, chunk_sums)]

        lanes = []
        for lane in range(pe):
            acc = Signal(signed(w_acc), name=f"acc{lane}")
            total = Signal(signed(w_acc), name=f"sum{lane}")  # exact: a partial sum is within [-M, M]
            m.d.comb += total.eq(Mux(b_first, 0, acc) + b_cs[lane])
            with m.If(b_valid & ~stall):
                m.d.sync += acc.eq(total)
            if t_rd is None:
                lanes.append(total)
            else:
                wt = self.threshold_width
                fire = Signal(name=f"fire{lane}")
                m.d.comb += fire.eq(total >= t_rd.data[lane * wt : (lane + 1) * wt].as_signed())
                lanes.append(fire)
        fold = Signal(pe * w_out, name="fold")
        m.d.comb += fold.eq(Cat(*lanes))

        # -- result assembly and output register ----------------------------------------------
        deliver = Signal(name="deliver")
        m.d.comb += [
            deliver.eq(b_valid & b_final),
            stall.eq(deliver & o_s.valid & ~o_s.ready),
        ]
        if nf > 1:
            res = Signal((nf - 1) * pe * w_out, name="res")  # folds 0 .. NF-2, fold 0 lowest
            with m.If(b_valid & b_last & ~b_final & ~stall):
                m.d.sync += res.eq(Cat(res[pe * w_out :], fold))
            vector = Cat(res, fold)
        else:
            vector = fold
        with m.If(deliver & ~stall):
            m.d.sync += [o_s.valid.eq(1), o_s.payload.eq(vector[: n * w_out])]
        with m.Elif(o_s.ready):
            m.d.sync += o_s.valid.eq(0)

        return m
