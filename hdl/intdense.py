"""Folded first-layer engine: ``PE`` output lanes × ``SIMD`` n-bit integer inputs per cycle,
±1 weights.

For the first layer of a network whose input is n-bit integers (e.g. 8-bit pixels, design.md
§2): ``acc_n = sum_k x_k * w_nk`` with ``w = +1`` (weight bit 1) or ``-1`` (weight bit 0), and
``out_n = acc_n >= t_n`` with an integer threshold ``t_n`` on ``acc`` (the IR's dot domain; no
popcount conversion). The output layer (no thresholds) emits the ``N`` accumulators.

The engine has the organisation, the streams discipline and **exactly the cycle behaviour** of
:class:`bnnfab.hdl.folded.FoldedDense` with the same ``N``, ``K``, ``PE`` and ``SIMD``, by
construction: both are :class:`bnnfab.hdl._folding.FoldedEngine`, one implementation of the input
double buffer, the issue / A / B / output pipeline and the stall rule. Only the datapath differs
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
from amaranth.hdl import Module, Mux, Signal, Value, signed

from bnnfab.models import Conv2d, Dense

from ._folding import FoldedEngine, positive_int, sum_tree

__all__ = ["IntDense"]


class IntDense(FoldedEngine):
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

    # Datapath and number format; the control is FoldedEngine's (hdl/_folding.py).
    _acc_signed = True
    _threshold_domain = "on the accumulator"

    def __init__(self, weights, thresholds=None, *, bits: int, signed: bool, pe: int, simd: int):
        self._bits = positive_int(bits, "bits")
        if not isinstance(signed, (bool, np.bool_)):
            raise ValueError(f"signed must be True or False, not {signed!r}")
        self._signed = bool(signed)
        super().__init__(weights, thresholds, pe=pe, simd=simd)

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

    # --- number format ----------------------------------------------------------------------

    @property
    def _element_bits(self) -> int:
        return self._bits

    @property
    def bits(self) -> int:
        return self._bits

    @property
    def signed(self) -> bool:
        return self._signed

    @property
    def in_width(self) -> int:
        """Input beat width ``bits * SIMD``."""
        return self._bits * self._simd

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
    def threshold_width(self) -> int:
        """``Wt``: two's complement bits of a stored threshold ``clamp(t, -M, M+1)``."""
        return (self.max_abs_acc + 1).bit_length() + 1

    def stored_thresholds(self) -> list[int] | None:
        """``clamp(t, -M, M+1)`` per output channel (None for the output layer)."""
        if self._thresholds is None:
            return None
        big = self.max_abs_acc
        return [min(max(t, -big), big + 1) for t in self._thresholds]

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

    # --- datapath ---------------------------------------------------------------------------

    def _chunk_sums(self, m: Module, x_chunk: Signal, w_row: Value) -> list[Signal]:
        """Conditional inversion and one adder tree per lane."""
        bits, simd = self._bits, self._simd
        # A chunk sum: pad elements are 0, so at most min(SIMD, K) real terms.
        w_cs = (min(simd, self.k) * self.max_term).bit_length() + 1
        # Each element widened once to bits+1 signed bits (zero- or sign-extended), shared by
        # all lanes (a Signal, so the slice is not copied into every lane's expression).
        xs = []
        for e in range(simd):
            raw = x_chunk[e * bits : (e + 1) * bits]
            x_e = Signal(signed(bits + 1), name=f"x{e}")
            m.d.comb += x_e.eq(raw.as_signed() if self._signed else raw)
            xs.append(x_e)
        w_sig = Signal(self._pe * simd, name="w_row")
        m.d.comb += w_sig.eq(w_row)
        chunk_sums = []
        for lane in range(self._pe):
            w_lane = Signal(simd, name=f"w{lane}")
            m.d.comb += w_lane.eq(w_sig[lane * simd : (lane + 1) * simd])
            # w ? x : -x  ==  (w ? x : ~x) + (not w): the +1s are counted once per lane.
            terms = [Mux(w_lane[e], xs[e], ~xs[e]) for e in range(simd)]
            n_neg = Signal(range(simd + 1), name=f"neg{lane}")
            m.d.comb += n_neg.eq(sum_tree([~w_lane[e] for e in range(simd)]))
            cs = Signal(signed(w_cs), name=f"cs{lane}")  # exact: |chunk sum| <= min(SIMD, K) * m
            m.d.comb += cs.eq(sum_tree(terms + [n_neg]))
            chunk_sums.append(cs)
        return chunk_sums
