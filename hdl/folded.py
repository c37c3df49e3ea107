"""Folded binary dense engine: ``PE`` output lanes × ``SIMD`` input bits per cycle.

For layers too large to unroll and for small devices. Weights and thresholds sit in
:class:`amaranth.lib.memory.Memory` arrays with synchronous read ports (which synthesis maps to
block RAM when they are large); one input vector costs ``NF * SF`` core cycles, where
``NF = ceil(N / PE)`` (neuron folds) and ``SF = ceil(K / SIMD)`` (SIMD folds).

Streams (``amaranth.lib.stream``; a beat transfers on a rising edge where valid & ready)
------------------------------------------------------------------------------------------
``i_stream``, payload ``SIMD`` bits
    One input vector is ``SF`` beats, in order; beat ``j`` carries elements
    ``j*SIMD .. j*SIMD+SIMD-1``, element ``k`` at bit ``k - j*SIMD`` (little-endian, as the
    packing of design.md §2). Bit 1 is +1. The pad bits of the last beat (elements ``>= K``) are
    *ignored*: the engine clears them as it stores the beat, so any value is safe there.
``o_stream``, payload ``N * W`` bits, one beat per input vector
    Hidden layer (``thresholds`` given): ``W = 1``; bit ``n`` is ``p_n >= T_n`` with
    ``p_n = popcount(XNOR(x, w_n))`` over the ``K`` real bits and ``T_n`` the popcount-domain
    threshold (``T <= 0``: constant 1, ``T > K``: constant 0).
    Output layer (``thresholds=None``): ``W = ceil(log2(K + 1))``; bits ``[n*W, (n+1)*W)`` hold
    ``p_n`` unsigned (the score is ``2 p_n - K``).

Datapath
--------
* Input buffer: a ``2*SF`` × ``SIMD`` memory, two banks of one vector each, so the next vector is
  loaded while the current one is computed (double buffering).
* Weight memory: ``NF*SF`` rows of ``PE*SIMD`` bits; row ``nf*SF + sf``, bits
  ``[pe*SIMD, (pe+1)*SIMD)`` hold the weights of neuron ``nf*PE + pe`` for elements
  ``sf*SIMD ..``. Pad weight bits (element ``>= K`` or neuron ``>= N``) are 1: with the pad
  activation bits cleared to 0 their XNOR is 0, so ``p`` counts exactly the ``K`` real bits.
* Threshold memory (hidden layers only): ``NF`` rows of ``PE`` lanes of ``ceil(log2(K+2))`` bits,
  holding ``clamp(T, 0, K+1)`` (exact: ``p`` lies in ``[0, K]``); pad lanes hold 0.
* Pipeline: issue (addresses) -> A (memory data; XNOR + per-lane popcount tree) -> B (registered
  chunk popcounts; accumulate, threshold) -> output register. Per-fold results are shifted into
  a result register; the last fold of a vector loads the whole vector into the output register.

Exact cycle behaviour
---------------------
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

The loader only sets a flag that is 0 and the issuer only clears a flag that is 1, so they never
touch the same bank at the same edge.

Consequences (all exact):

* Steady state, never stalled (input valid and output ready every cycle): one vector in and one
  out every ``NF*SF`` cycles; the issuer runs every cycle. The input of vector ``v+1`` is taken
  (``SF`` back-to-back beats) while vector ``v`` is computed; vector ``v+2`` waits for vector
  ``v``'s bank, so ``i_stream.ready`` is low for ``(NF-1)*SF`` cycles per vector.
* Latency: a vector whose last input beat transfers at cycle ``a`` into an idle engine is issued
  at cycles ``a+1 .. a+NF*SF`` and emitted at cycle ``a + NF*SF + 3`` at the earliest
  (``o_stream.valid`` rises after edge ``a + NF*SF + 2``). Fill: with a fresh engine and input
  valid from cycle 0, the first output transfers at cycle ``NF*SF + SF + 2``.
* Backpressure: the output holds one finished vector; the core keeps computing the next one and
  stalls only when that one's final fold would overwrite an unaccepted output. Nothing is lost,
  duplicated or reordered.
"""

from __future__ import annotations

import numbers

import numpy as np
from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from bnnfab.models import Conv2d, Dense, Padding

__all__ = ["FoldedDense"]


def _positive_int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < 1:
        raise ValueError(f"{what} must be a positive integer, not {value!r}")
    return int(value)


def _popcount(bits: Signal):
    """Balanced adder tree over the bits of ``bits`` (a Signal, so each slice is one wire)."""
    terms = [bits[i] for i in range(len(bits))]
    while len(terms) > 1:
        pairs = [terms[j] + terms[j + 1] for j in range(0, len(terms) - 1, 2)]
        if len(terms) % 2:
            pairs.append(terms[-1])
        terms = pairs
    return terms[0]


class FoldedDense(wiring.Component):
    """Folded XNOR-popcount dense engine (see the module docstring for streams and cycles).

    Parameters
    ----------
    weights : array_like of bool, shape (N, K)
        Canonical weights, True = +1 (design.md §2).
    thresholds : array_like of int, shape (N,), or None
        Popcount-domain thresholds ``T`` (output bit ``n`` is ``p_n >= T_n``; any integer, values
        outside ``[1, K]`` make constant channels). ``None`` makes the output layer: the engine
        emits the ``N`` popcounts. Use :meth:`from_layer` to start from an IR layer's dot-domain
        thresholds.
    pe : int
        Output lanes computed in parallel.
    simd : int
        Input bits consumed per lane and cycle; also the input stream's width.

    Raises
    ------
    ValueError
        On a non-positive ``pe``/``simd``, or weights/thresholds of the wrong shape or type.
    """

    def __init__(self, weights, thresholds=None, *, pe: int, simd: int):
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
        n, k = self._weights.shape
        if thresholds is None:
            self._thresholds = None
        else:
            t = np.asarray(thresholds)
            if t.shape != (n,):
                raise ValueError(f"thresholds must have shape ({n},), one per output channel, got {t.shape}")
            values = t.tolist()
            for v in values:
                if isinstance(v, bool) or not isinstance(v, numbers.Integral):
                    raise ValueError(f"thresholds must be integers (popcount domain), not {v!r}")
            # Python ints: exact for any int64 (or larger) value; only the clamped value is stored.
            self._thresholds = tuple(int(v) for v in values)
        super().__init__({
            "i_stream": In(stream.Signature(self._simd)),
            "o_stream": Out(stream.Signature(self.n * self.out_lane_width)),
        })

    @classmethod
    def from_layer(cls, layer: Dense | Conv2d, *, pe: int, simd: int) -> "FoldedDense":
        """Engine for an IR layer, converting dot-domain thresholds ``t`` to ``T = ceil((t+K)/2)``.

        A :class:`Conv2d` is accepted when every output position sees all ``K`` taps (no pads, or
        ±1 padding supplied by the window generator); the engine then runs once per position on
        the ``(ky, kx, c)``-flattened window.
        """
        if not isinstance(layer, (Dense, Conv2d)):
            raise ValueError(f"from_layer takes a Dense or Conv2d layer, not {type(layer).__name__}")
        if isinstance(layer, Conv2d) and layer.padded and layer.padding is Padding.ZERO:
            raise ValueError(
                f"{layer.where()}: zero padding varies the number of valid taps per position; "
                "a fixed popcount threshold cannot express it"
            )
        thresholds = None
        if layer.thresholds is not None:
            k = layer.k
            # Python ints, not layer.popcount_thresholds(): t + K must not wrap for t near 2**63.
            thresholds = [-((-(int(t) + k)) // 2) for t in layer.thresholds.tolist()]
        return cls(layer.weights_2d, thresholds, pe=pe, simd=simd)

    # --- geometry ---------------------------------------------------------------------------

    @property
    def n(self) -> int:
        return int(self._weights.shape[0])

    @property
    def k(self) -> int:
        return int(self._weights.shape[1])

    @property
    def pe(self) -> int:
        return self._pe

    @property
    def simd(self) -> int:
        return self._simd

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
    def acc_width(self) -> int:
        """Bits of a popcount ``p`` in ``[0, K]``: ``ceil(log2(K + 1))``."""
        return self.k.bit_length()

    @property
    def out_lane_width(self) -> int:
        """``W``: 1 for a hidden layer, :attr:`acc_width` for the output layer."""
        return self.acc_width if self.output_layer else 1

    @property
    def threshold_width(self) -> int:
        """Bits of a stored threshold ``clamp(T, 0, K+1)``."""
        return (self.k + 1).bit_length()

    # --- memory images and stream (de)coding ------------------------------------------------

    def weight_rows(self) -> list[int]:
        """Weight memory image: row ``nf*SF + sf``, lane ``pe`` at bits ``[pe*SIMD, (pe+1)*SIMD)``;
        pad bits 1."""
        nf, sf, pe, simd = self.nf, self.sf, self._pe, self._simd
        padded = np.ones((nf * pe, sf * simd), dtype=np.bool_)
        padded[: self.n, : self.k] = self._weights
        # (nf, pe, sf, simd) -> rows (nf, sf) of pe*simd bits, lane-major within a row.
        tiles = padded.reshape(nf, pe, sf, simd).transpose(0, 2, 1, 3).reshape(nf * sf, pe * simd)
        return [int.from_bytes(np.packbits(row, bitorder="little").tobytes(), "little") for row in tiles]

    def stored_thresholds(self) -> list[int] | None:
        """``clamp(T, 0, K+1)`` per output channel (None for the output layer)."""
        if self._thresholds is None:
            return None
        return [min(max(t, 0), self.k + 1) for t in self._thresholds]

    def threshold_rows(self) -> list[int] | None:
        """Threshold memory image: row ``nf``, lane ``pe`` at ``[pe*Wt, (pe+1)*Wt)``; pad lanes 0."""
        stored = self.stored_thresholds()
        if stored is None:
            return None
        wt = self.threshold_width
        rows = []
        for f in range(self.nf):
            row = 0
            for lane in range(self._pe):
                ch = f * self._pe + lane
                if ch < self.n:
                    row |= stored[ch] << (lane * wt)
            rows.append(row)
        return rows

    def encode_input(self, x) -> list[int]:
        """The ``SF`` input beats of one vector ``x`` (``K`` booleans, True = +1); pad bits 0."""
        x = np.asarray(x, dtype=np.bool_).reshape(-1)
        if x.shape != (self.k,):
            raise ValueError(f"an input vector must have K={self.k} elements, got {x.shape[0]}")
        padded = np.zeros(self.sf * self._simd, dtype=np.bool_)
        padded[: self.k] = x
        return [
            int.from_bytes(np.packbits(chunk, bitorder="little").tobytes(), "little")
            for chunk in padded.reshape(self.sf, self._simd)
        ]

    def decode_output(self, payload: int) -> np.ndarray:
        """One output beat as ``(N,)``: bools (hidden layer) or int64 popcounts (output layer)."""
        w = self.out_lane_width
        mask = (1 << w) - 1
        values = [(int(payload) >> (n * w)) & mask for n in range(self.n)]
        if self.output_layer:
            return np.array(values, dtype=np.int64)
        return np.array(values, dtype=np.bool_)

    # --- hardware ---------------------------------------------------------------------------

    def elaborate(self, platform):
        m = Module()
        n, k, pe, simd, nf, sf = self.n, self.k, self._pe, self._simd, self.nf, self.sf
        w_acc = self.acc_width
        w_out = self.out_lane_width
        w_pc = min(simd, k).bit_length()  # a chunk's popcount: pad bits contribute 0
        last_pad = sf * simd - k  # pad bits in the last beat

        i_s, o_s = self.i_stream, self.o_stream

        m.submodules.xbuf = xbuf = Memory(shape=simd, depth=2 * sf, init=[])
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

        # -- loader: fills bank wb; the last beat's pad bits are cleared on the way in --------
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
            keep = Const((1 << (simd - last_pad)) - 1, simd)
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

        # -- stage A: memory data; XNOR and one popcount tree per lane ------------------------
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
        x_chunk = Signal(simd, name="x_chunk")
        m.d.comb += x_chunk.eq(x_rd.data)
        pc = []
        for lane in range(pe):
            xnor = Signal(simd, name=f"xnor{lane}")
            m.d.comb += xnor.eq(~(x_chunk ^ w_rd.data[lane * simd : (lane + 1) * simd]))
            p = Signal(w_pc, name=f"pc{lane}")
            m.d.comb += p.eq(_popcount(xnor))
            pc.append(p)
        if t_rd is not None:
            m.d.comb += [t_rd.addr.eq(a_nf), t_rd.en.eq(~stall)]

        # -- stage B: registered chunk popcounts; accumulate; threshold -----------------------
        b_valid = Signal(name="b_valid")
        b_first = Signal(name="b_first")
        b_last = Signal(name="b_last")
        b_final = Signal(name="b_final")
        b_pc = [Signal(w_pc, name=f"b_pc{lane}") for lane in range(pe)]
        with m.If(~stall):
            m.d.sync += [
                b_valid.eq(a_valid),
                b_first.eq(a_first),
                b_last.eq(a_last),
                b_final.eq(a_final),
            ]
            m.d.sync += [b.eq(p) for b, p in zip(b_pc, pc)]

        lanes = []
        for lane in range(pe):
            acc = Signal(w_acc, name=f"acc{lane}")
            total = Signal(w_acc, name=f"sum{lane}")  # exact: a partial popcount is <= K
            m.d.comb += total.eq(Mux(b_first, 0, acc) + b_pc[lane])
            with m.If(b_valid & ~stall):
                m.d.sync += acc.eq(total)
            if t_rd is None:
                lanes.append(total)
            else:
                wt = self.threshold_width
                fire = Signal(name=f"fire{lane}")
                m.d.comb += fire.eq(total >= t_rd.data[lane * wt : (lane + 1) * wt])
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
