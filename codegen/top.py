"""Assembly of the accelerator top from a :class:`~bnnfab.codegen.plan.HwPlan`.

The top is a linear streaming chain::

    i_stream -> engine 0 -> [split] -> engine 1 -> ... -> engine L-1 -> argmax -> o_stream

* ``i_stream`` is the first engine's input: for a folded engine (``IntDense`` for an integer
  input, ``FoldedDense`` for a binary one) ``SF`` beats of ``SIMD`` elements per image, element
  ``k`` at bits ``[(k % SIMD) * bits, ...)`` of beat ``k // SIMD``; for an unrolled engine one
  ``K``-bit beat. Elements are the input image flattened in NHWC order (a CHW Flatten in the
  model is folded into the first layer's weights by :func:`~bnnfab.codegen.plan.lower_layers`).
* A hidden engine emits one ``N``-bit vector per beat; a folded engine that takes it in ``SIMD``-bit
  chunks gets a splitting :class:`~bnnfab.hdl.streams.WidthAdapter`; an unrolled one takes it
  whole.
* ``o_stream`` is the argmax's output: ``index`` (the class, ties to the lowest index) and
  ``scores``, the last engine's raw outputs (popcounts ``p`` of a binary layer, whose scores are
  ``2 p - K``; signed accumulators of an integer layer).

Every block's exact timing is that of its module; :func:`cycle_blocks` lists the same chain for
the cycle model (:mod:`bnnfab.sim.cycles`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from amaranth.hdl import Module, Value
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from ..hdl.folded import FoldedDense
from ..hdl.intdense import IntDense
from ..hdl.streams import Argmax, WidthAdapter
from ..hdl.unrolled import UnrolledDense
from ..sim.cycles import Block, Kind
from .config import Engine
from .plan import HwPlan, LayerPlan

__all__ = ["AcceleratorTop", "build_engine", "cycle_blocks", "StreamFormat"]


def build_engine(lp: LayerPlan):
    """The Amaranth engine of one planned layer."""
    lv = lp.layer
    if lv.integer:
        return IntDense(lv.weights, lv.thresholds, bits=lv.in_bits, signed=lv.in_signed, pe=lp.pe, simd=lp.simd)
    if lp.engine is Engine.UNROLLED:
        sch = lp.schedule
        parent = None if sch is None else sch.parent
        inverted = None if sch is None else sch.inverted
        return UnrolledDense(lv.weights, lv.thresholds, parent, inverted)
    return FoldedDense(lv.weights, lv.thresholds, pe=lp.pe, simd=lp.simd)


def _width(port) -> int:
    return len(Value.cast(port.payload))


def _in_port(block):
    return block.i_stream if hasattr(block, "i_stream") else block.i


def _out_port(block):
    return block.o_stream if hasattr(block, "o_stream") else block.o


@dataclass(frozen=True)
class StreamFormat:
    """How images become input beats and output beats become results (for test benches)."""

    in_width: int  # bits per input beat
    beats_per_image: int
    elements_per_beat: int
    element_bits: int
    k: int  # elements per image
    index_width: int
    score_width: int
    score_signed: bool
    n_classes: int
    score_is_popcount: bool  # scores are popcounts p of a binary layer: score = 2p - K_last
    k_last: int

    def encode(self, image: np.ndarray) -> list[int]:
        """Input beats of one image (integers, or bits for a binary input), NHWC-flattened."""
        flat = np.asarray(image).reshape(-1)
        if flat.shape[0] != self.k:
            raise ValueError(f"an image must have {self.k} elements, got {flat.shape[0]}")
        mask = (1 << self.element_bits) - 1
        beats = [0] * self.beats_per_image
        for i, v in enumerate(flat.tolist()):
            beats[i // self.elements_per_beat] |= (int(v) & mask) << ((i % self.elements_per_beat) * self.element_bits)
        return beats

    def decode(self, payload: int) -> tuple[int, np.ndarray]:
        """(class, integer scores) of one output beat; scores as the IR defines them."""
        payload = int(payload)
        cls = payload & ((1 << self.index_width) - 1)
        raw = payload >> self.index_width
        w = self.score_width
        mask = (1 << w) - 1
        fields = [(raw >> (n * w)) & mask for n in range(self.n_classes)]
        if self.score_signed:
            fields = [f - (1 << w) if f >> (w - 1) else f for f in fields]
        scores = np.array(fields, dtype=np.int64)
        if self.score_is_popcount:
            scores = 2 * scores - self.k_last
        return cls, scores


class AcceleratorTop(wiring.Component):
    """The generated accelerator: a chain of engines, adapters and an argmax (module docstring).

    Attributes
    ----------
    engines : list of the engine components, one per planned layer
    format : :class:`StreamFormat`
    """

    def __init__(self, plan: HwPlan):
        self.plan = plan
        self.engines = [build_engine(lp) for lp in plan.layers]
        self.adapters: list[WidthAdapter | None] = []
        for prev, lp, eng in zip(plan.layers, plan.layers[1:], self.engines[1:]):
            width = prev.layer.n
            want = _width(_in_port(eng))
            self.adapters.append(None if want == width else WidthAdapter(width, want))
        last = self.engines[-1]
        lv = plan.layers[-1].layer
        if isinstance(last, IntDense):
            score_width, score_signed, popcount = last.out_lane_width, True, False
        else:
            score_width, score_signed, popcount = max(1, lv.k.bit_length()), False, True
        self.argmax = Argmax(lv.n, score_width, signed=score_signed, with_scores=True)
        first = plan.layers[0].layer
        in_width = _width(_in_port(self.engines[0]))
        if plan.layers[0].engine is Engine.UNROLLED:
            per_beat, beats = first.k, 1
        else:
            per_beat, beats = plan.layers[0].simd, plan.layers[0].sf
        self.format = StreamFormat(
            in_width=in_width,
            beats_per_image=beats,
            elements_per_beat=per_beat,
            element_bits=first.in_bits,
            k=first.k,
            index_width=self.argmax.index_width,
            score_width=score_width,
            score_signed=score_signed,
            n_classes=lv.n,
            score_is_popcount=popcount,
            k_last=lv.k,
        )
        out_width = _width(self.argmax.o_stream)
        super().__init__({
            "i_stream": In(stream.Signature(in_width)),
            "o_stream": Out(stream.Signature(out_width)),
        })

    def elaborate(self, platform):
        m = Module()
        chain = []
        for i, eng in enumerate(self.engines):
            if i > 0 and self.adapters[i - 1] is not None:
                chain.append(self.adapters[i - 1])
            chain.append(eng)
        chain.append(self.argmax)
        for i, block in enumerate(chain):
            m.submodules[f"b{i}_{type(block).__name__.lower()}"] = block
        _link(m, self.i_stream, _in_port(chain[0]))
        for a, b in zip(chain, chain[1:]):
            _link(m, _out_port(a), _in_port(b))
        _link(m, _out_port(chain[-1]), self.o_stream)
        return m


def _link(m: Module, src, dst) -> None:
    """Connect two stream ports whose payloads have the same width (any layouts)."""
    sw, dw = _width(src), _width(dst)
    if sw != dw:  # pragma: no cover - a planning bug
        raise AssertionError(f"stream widths differ: {sw} -> {dw}")
    m.d.comb += [dst.valid.eq(src.valid), src.ready.eq(dst.ready), Value.cast(dst.payload).eq(Value.cast(src.payload))]


def cycle_blocks(top: AcceleratorTop) -> list[Block]:
    """The chain of :class:`~bnnfab.sim.cycles.Block` with the top's exact timing."""
    blocks = []
    for i, (lp, eng) in enumerate(zip(top.plan.layers, top.engines)):
        if i > 0 and top.adapters[i - 1] is not None:
            ad = top.adapters[i - 1]
            r = -(-ad.vector_width // min(ad.in_width, ad.out_width))
            blocks.append(Block(Kind.SPLIT, (r,), label=f"split{i}"))
        if isinstance(eng, UnrolledDense):
            blocks.append(Block(Kind.UNROLLED, (eng.latency,), label=lp.layer.name))
        else:
            blocks.append(Block(Kind.FOLDED, (eng.nf, eng.sf), label=lp.layer.name))
    blocks.append(Block(Kind.UNROLLED, (top.argmax.latency,), label="argmax"))
    return blocks
