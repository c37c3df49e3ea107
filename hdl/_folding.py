"""The folded engines' common part: one control, so their cycle behaviour is equal by construction.

:class:`FoldedEngine` is the base of :class:`~bnnfab.hdl.folded.FoldedDense` (binary inputs) and
:class:`~bnnfab.hdl.intdense.IntDense` (n-bit integer inputs). It holds everything the two share:
argument checks, the fold geometry (``NF = ceil(N / PE)``, ``SF = ceil(K / SIMD)``), the weight
and threshold memory layouts, output decoding, and in :meth:`FoldedEngine.elaborate` the whole
control: input double buffer and loader, issuer with its fold counters, the A/B pipeline flags,
the stall, the shifting of per-fold results and the output register. The exact cycle behaviour of
that control is stated in :mod:`bnnfab.hdl.folded`'s module docstring (``full``, ``wb``, ``wi``,
``rb``, ``(nf, sf)``, ``A``, ``B``, ``ov`` there are the signals ``full``, ``wb``, ``wi``, ``rb``,
``f_n``/``f_s``, ``a_*``, ``b_*`` and ``o_stream.valid`` here).

A subclass supplies only its datapath and number formats:

* ``_element_bits``: bits of one input element (input beats are ``_element_bits * SIMD`` bits);
* ``_acc_signed``: whether accumulators, stored thresholds and output-layer lanes are two's
  complement (the threshold comparison is then signed);
* ``_threshold_domain``: what a threshold is compared with, for error messages;
* :meth:`FoldedEngine._chunk_sums`: stage A's per-lane sum over one input chunk and weight row;
* ``acc_width``, ``threshold_width``, ``stored_thresholds``, ``encode_input`` and ``from_layer``.
"""

from __future__ import annotations

import numbers

import numpy as np
from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

__all__ = ["FoldedEngine", "positive_int", "sum_tree"]


def positive_int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < 1:
        raise ValueError(f"{what} must be a positive integer, not {value!r}")
    return int(value)


def sum_tree(terms: list):
    """Balanced adder tree; Amaranth widens every sum, so no partial sum overflows."""
    while len(terms) > 1:
        pairs = [terms[j] + terms[j + 1] for j in range(0, len(terms) - 1, 2)]
        if len(terms) % 2:
            pairs.append(terms[-1])
        terms = pairs
    return terms[0]


class FoldedEngine(wiring.Component):
    """Base of the folded dense engines: ``PE`` output lanes × ``SIMD`` input elements per cycle.

    Not used on its own: a subclass sets the class attributes and methods listed in the module
    docstring. Ports: ``i_stream`` (``_element_bits * SIMD`` bits) and ``o_stream``
    (``N * out_lane_width`` bits).

    Raises
    ------
    ValueError
        On a non-positive ``pe``/``simd``, or weights/thresholds of the wrong shape or type.
    """

    # Set by the subclass (see the module docstring).
    _element_bits: int
    _acc_signed: bool
    _threshold_domain: str

    def __init__(self, weights, thresholds=None, *, pe: int, simd: int, position_classes=None):
        self._pe = positive_int(pe, "pe")
        self._simd = positive_int(simd, "simd")
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
        self._classes = None
        if position_classes is not None:
            pc = np.asarray(position_classes)
            if pc.ndim != 1 or pc.size < 1 or not np.issubdtype(pc.dtype, np.integer) or pc.dtype == np.bool_ or pc.min() < 0:
                raise ValueError(
                    f"position_classes must be a non-empty 1-D array of integers >= 0 (one per vector of an "
                    f"image), got dtype {pc.dtype} shape {pc.shape}"
                )
            if thresholds is None:
                raise ValueError("position_classes select rows of thresholds; the output layer has none")
            self._classes = tuple(int(c) for c in pc.tolist())
        classes = 1 if self._classes is None else max(self._classes) + 1
        if thresholds is None:
            self._thresholds = None
        else:
            t = np.asarray(thresholds)
            want = (n,) if self._classes is None else (classes, n)
            if t.shape != want:
                what = "one per output channel" if self._classes is None else "a row of N per position class"
                raise ValueError(f"thresholds must have shape {want}, {what}, got {t.shape}")
            values = t.reshape(-1).tolist()
            for v in values:
                if isinstance(v, bool) or not isinstance(v, numbers.Integral):
                    raise ValueError(f"thresholds must be integers ({self._threshold_domain}), not {v!r}")
            # Python ints: exact for any int64 (or larger) value; only the clamped value is stored.
            # Class-major: class c's threshold of channel n is entry c*N + n.
            self._thresholds = tuple(int(v) for v in values)
        self._n_classes = classes
        super().__init__({
            "i_stream": In(stream.Signature(self._element_bits * self._simd)),
            "o_stream": Out(stream.Signature(self.n * self.out_lane_width)),
        })

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
        """Bits of an accumulator (the subclass's number format)."""
        raise NotImplementedError

    @property
    def threshold_width(self) -> int:
        """Bits of a stored threshold (the subclass's number format)."""
        raise NotImplementedError

    @property
    def out_lane_width(self) -> int:
        """``W``: 1 for a hidden layer, :attr:`acc_width` for the output layer."""
        return self.acc_width if self.output_layer else 1

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
        """The clamped threshold per output channel (None for the output layer); the subclass's."""
        raise NotImplementedError

    @property
    def position_classes(self) -> tuple[int, ...] | None:
        """The threshold class of each vector of an image (vectors counted modulo their number),
        or None: one threshold per channel for every vector."""
        return self._classes

    @property
    def threshold_classes(self) -> int:
        """Rows of thresholds: ``max(position_classes) + 1``, or 1."""
        return self._n_classes

    def threshold_rows(self) -> list[int] | None:
        """Threshold memory image: row ``c*NF + nf`` (class ``c``, 0 without position classes),
        lane ``pe`` at ``[pe*Wt, (pe+1)*Wt)`` (two's complement when the accumulators are
        signed); pad lanes 0."""
        stored = self.stored_thresholds()
        if stored is None:
            return None
        wt = self.threshold_width
        mask = (1 << wt) - 1
        rows = []
        for c in range(self._n_classes):
            for f in range(self.nf):
                row = 0
                for lane in range(self._pe):
                    ch = f * self._pe + lane
                    if ch < self.n:
                        row |= (stored[c * self.n + ch] & mask) << (lane * wt)
                rows.append(row)
        return rows

    def decode_output(self, payload: int) -> np.ndarray:
        """One output beat as ``(N,)``: bools (hidden layer) or the int64 lane values of the output
        layer (two's complement decoded when the accumulators are signed)."""
        w = self.out_lane_width
        mask = (1 << w) - 1
        fields = [(int(payload) >> (n * w)) & mask for n in range(self.n)]
        if self.output_layer:
            if self._acc_signed:
                fields = [f - (1 << w) if f >> (w - 1) else f for f in fields]
            return np.array(fields, dtype=np.int64)
        return np.array(fields, dtype=np.bool_)

    # --- hardware ---------------------------------------------------------------------------

    def _chunk_sums(self, m: Module, x_chunk: Signal, w_row: Value) -> list[Signal]:
        """Stage A's datapath: per lane, a Signal driven (combinationally, in ``m``) with the lane's
        sum over one input chunk (``x_chunk``, ``_element_bits * SIMD`` bits, pad elements 0) and
        its weights (``w_row``, lane ``pe`` at bits ``[pe*SIMD, (pe+1)*SIMD)``). Each Signal must
        have a unique name and hold its sum exactly; stage B registers it as ``b_<name>``."""
        raise NotImplementedError

    def elaborate(self, platform):
        m = Module()
        n, k, pe, simd, nf, sf = self.n, self.k, self._pe, self._simd, self.nf, self.sf
        eb = self._element_bits
        w_acc = self.acc_width
        w_out = self.out_lane_width
        last_pad = sf * simd - k  # pad elements in the last beat

        i_s, o_s = self.i_stream, self.o_stream

        m.submodules.xbuf = xbuf = Memory(shape=eb * simd, depth=2 * sf, init=[])
        m.submodules.wmem = wmem = Memory(shape=pe * simd, depth=nf * sf, init=self.weight_rows())
        x_wr = xbuf.write_port()
        x_rd = xbuf.read_port()
        w_rd = wmem.read_port()
        t_rd = None
        if not self.output_layer:
            m.submodules.tmem = tmem = Memory(
                shape=pe * self.threshold_width, depth=self._n_classes * nf, init=self.threshold_rows()
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
            keep = Const((1 << ((simd - last_pad) * eb)) - 1, eb * simd)
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

        # -- stage A: memory data; the subclass's per-lane chunk sums -------------------------
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
        x_chunk = Signal(eb * simd, name="x_chunk")
        m.d.comb += x_chunk.eq(x_rd.data)
        chunk_sums = self._chunk_sums(m, x_chunk, w_rd.data)
        if t_rd is not None and self._classes is not None:
            # The vector counter f_p (modulo the vectors per image) picks the threshold class:
            # a_taddr = class(f_p) * NF + f_n is registered with a_nf, so the threshold row
            # arrives in stage B exactly as without classes.
            npos = len(self._classes)
            f_p = Signal(range(npos), name="f_p")
            with m.If(issue & issue_final):
                m.d.sync += f_p.eq(Mux(f_p == npos - 1, 0, f_p + 1))
            m.submodules.tbase = tbase = Memory(
                shape=unsigned(max(1, (self._n_classes * nf - 1).bit_length())), depth=npos, init=[c * nf for c in self._classes]
            )
            tb_rd = tbase.read_port(domain="comb")
            a_taddr = Signal(range(self._n_classes * nf), name="a_taddr")
            m.d.comb += tb_rd.addr.eq(f_p)
            with m.If(~stall):
                m.d.sync += a_taddr.eq(tb_rd.data + f_n)
            m.d.comb += [t_rd.addr.eq(a_taddr), t_rd.en.eq(~stall)]
        elif t_rd is not None:
            m.d.comb += [t_rd.addr.eq(a_nf), t_rd.en.eq(~stall)]

        # -- stage B: registered chunk sums; accumulate; threshold ----------------------------
        b_valid = Signal(name="b_valid")
        b_first = Signal(name="b_first")
        b_last = Signal(name="b_last")
        b_final = Signal(name="b_final")
        b_cs = [Signal.like(cs, name=f"b_{cs.name}") for cs in chunk_sums]
        with m.If(~stall):
            m.d.sync += [
                b_valid.eq(a_valid),
                b_first.eq(a_first),
                b_last.eq(a_last),
                b_final.eq(a_final),
            ]
            m.d.sync += [b.eq(cs) for b, cs in zip(b_cs, chunk_sums)]

        acc_shape = signed(w_acc) if self._acc_signed else unsigned(w_acc)
        lanes = []
        for lane in range(pe):
            acc = Signal(acc_shape, name=f"acc{lane}")
            total = Signal(acc_shape, name=f"sum{lane}")  # exact: acc_width holds every partial sum
            m.d.comb += total.eq(Mux(b_first, 0, acc) + b_cs[lane])
            with m.If(b_valid & ~stall):
                m.d.sync += acc.eq(total)
            if t_rd is None:
                lanes.append(total)
            else:
                wt = self.threshold_width
                t_lane = t_rd.data[lane * wt : (lane + 1) * wt]
                fire = Signal(name=f"fire{lane}")
                m.d.comb += fire.eq(total >= (t_lane.as_signed() if self._acc_signed else t_lane))
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
