"""Folded binary dense engine: ``PE`` output lanes × ``SIMD`` input bits per cycle.

For layers too large to unroll and for small devices. Weights and thresholds sit in
:class:`amaranth.lib.memory.Memory` arrays with synchronous read ports (which synthesis maps to
block RAM when they are large); one input vector costs ``NF * SF`` core cycles, where
``NF = ceil(N / PE)`` (neuron folds) and ``SF = ceil(K / SIMD)`` (SIMD folds). The control
described below (buffers, issue, pipeline, stall, output) is
:class:`bnnfab.hdl._folding.FoldedEngine`, shared with :class:`bnnfab.hdl.intdense.IntDense`; this
module adds the XNOR-popcount datapath.

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
* Position classes (optional, for a zero-padded convolution whose valid taps vary per output
  position): ``C`` threshold sets, ``C * NF`` rows (class-major), and a ROM of each vector's class
  ``class(v) * NF`` indexed by a counter of issued vectors modulo the ``P`` vectors of an image;
  the threshold row address ``class * NF + nf`` is registered beside ``nf``, so the cycle
  behaviour below is unchanged.
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

import numpy as np
from amaranth.hdl import Module, Signal, Value

from bnnfab.models import Conv2d, Dense, Padding

from ._folding import FoldedEngine, sum_tree

__all__ = ["FoldedDense", "position_threshold_classes"]


def position_threshold_classes(per_position) -> tuple[np.ndarray, np.ndarray]:
    """``(rows, classes)`` of a ``(P, N)`` per-position threshold table: its distinct rows
    ``(C, N)`` in first-appearance order and the class of each position ``(P,)``, so that
    ``rows[classes] == per_position``. A 3x3 convolution with one pixel of padding has at most 9
    classes (corners, edges, interior) however large the map."""
    t = np.asarray(per_position)
    if t.ndim != 2 or t.shape[0] < 1:
        raise ValueError(f"per-position thresholds must be a (P, N) array with P >= 1, got shape {t.shape}")
    _, first, inverse = np.unique(t, axis=0, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")  # classes numbered by first appearance: deterministic
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    classes = rank[inverse.reshape(-1)]
    return np.ascontiguousarray(t[np.sort(first)]), classes.astype(np.int64)


class FoldedDense(FoldedEngine):
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

    # Datapath and number format; the control is FoldedEngine's (hdl/_folding.py).
    _element_bits = 1
    _acc_signed = False
    _threshold_domain = "popcount domain"

    @classmethod
    def from_layer(cls, layer: Dense | Conv2d, *, pe: int, simd: int, in_shape=None) -> "FoldedDense":
        """Engine for an IR layer, converting dot-domain thresholds ``t`` to ``T = ceil((t+K)/2)``.

        A :class:`Conv2d` runs once per output position on the ``(ky, kx, c)``-flattened window,
        padded taps holding the padding's bit (the window generator's job). A zero-padded one needs
        ``in_shape`` ``(H, W, C)``: its valid taps vary per position, so the engine gets one
        threshold row per distinct row of :meth:`Conv2d.position_thresholds` and the class of
        each output position (raster order).
        """
        if not isinstance(layer, (Dense, Conv2d)):
            raise ValueError(f"from_layer takes a Dense or Conv2d layer, not {type(layer).__name__}")
        if isinstance(layer, Conv2d) and layer.padded and layer.padding is Padding.ZERO and layer.thresholds is not None:
            if in_shape is None:
                raise ValueError(
                    f"{layer.where()}: zero padding varies the number of valid taps per position; "
                    "pass in_shape=(H, W, C) for per-position thresholds"
                )
            rows, classes = position_threshold_classes(layer.position_thresholds(tuple(in_shape)))
            return cls(layer.weights_2d, rows, pe=pe, simd=simd, position_classes=classes)
        thresholds = None
        if layer.thresholds is not None:
            k = layer.k
            # Python ints, not layer.popcount_thresholds(): t + K must not wrap for t near 2**63.
            thresholds = [-((-(int(t) + k)) // 2) for t in layer.thresholds.tolist()]
        return cls(layer.weights_2d, thresholds, pe=pe, simd=simd)

    # --- number format ----------------------------------------------------------------------

    @property
    def acc_width(self) -> int:
        """Bits of a popcount ``p`` in ``[0, K]``: ``ceil(log2(K + 1))``."""
        return self.k.bit_length()

    @property
    def threshold_width(self) -> int:
        """Bits of a stored threshold ``clamp(T, 0, K+1)``."""
        return (self.k + 1).bit_length()

    def stored_thresholds(self) -> list[int] | None:
        """``clamp(T, 0, K+1)`` per output channel (None for the output layer)."""
        if self._thresholds is None:
            return None
        return [min(max(t, 0), self.k + 1) for t in self._thresholds]

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

    # --- datapath ---------------------------------------------------------------------------

    def _chunk_sums(self, m: Module, x_chunk: Signal, w_row: Value) -> list[Signal]:
        """XNOR and one popcount tree per lane."""
        simd = self._simd
        w_pc = min(simd, self.k).bit_length()  # a chunk's popcount: pad bits contribute 0
        pc = []
        for lane in range(self._pe):
            xnor = Signal(simd, name=f"xnor{lane}")
            m.d.comb += xnor.eq(~(x_chunk ^ w_row[lane * simd : (lane + 1) * simd]))
            p = Signal(w_pc, name=f"pc{lane}")
            # xnor is a Signal, so each of its bits is one wire in the tree.
            m.d.comb += p.eq(sum_tree([xnor[i] for i in range(simd)]))
            pc.append(p)
        return pc
