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
* With ``fifo_depth`` a :class:`~bnnfab.hdl.fifo.StreamFifo` follows every engine but the last.
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

from ..hdl.fifo import StreamFifo
from ..hdl.folded import FoldedDense
from ..hdl.intdense import IntDense
from ..hdl.streams import Argmax, WidthAdapter
from ..hdl.unrolled import UnrolledDense
from ..hdl.window import MaxPoolOr, SlidingWindow
from ..sim.cycles import Block, Kind
from .config import Engine
from .plan import GatherSpec, HwPlan, LayerPlan, PoolSpec, WindowSpec

__all__ = ["AcceleratorTop", "build_engine", "cycle_blocks", "StreamFormat"]


def build_engine(lp: LayerPlan, register_every: int = 1):
    """The Amaranth engine of one planned layer (``register_every``: of an unrolled engine)."""
    lv = lp.layer
    if lv.integer:
        return IntDense(lv.weights, lv.thresholds, bits=lv.in_bits, signed=lv.in_signed, pe=lp.pe, simd=lp.simd)
    if lp.engine is Engine.UNROLLED:
        sch = lp.schedule
        parent = None if sch is None else sch.parent
        inverted = None if sch is None else sch.inverted
        return UnrolledDense(lv.weights, lv.thresholds, parent, inverted, register_every=register_every)
    return FoldedDense(lv.weights, lv.thresholds, pe=lp.pe, simd=lp.simd, position_classes=lv.position_classes)


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
    """The generated accelerator: the planned chain plus width adapters and an argmax (module
    docstring).

    Attributes
    ----------
    chain : list of the blocks in stream order (windows, pools, adapters, engines, argmax)
    engines : list of the engine components, one per planned layer
    format : :class:`StreamFormat`
    """

    def __init__(self, plan: HwPlan):
        self.plan = plan
        self.chain: list = []
        self.engines: list = []
        width = None  # payload width flowing out of the chain so far
        for stage in plan.stages:
            if isinstance(stage, WindowSpec):
                block = SlidingWindow(
                    stage.height, stage.width, stage.channels, stage.elem_bits,
                    kernel=stage.kernel, stride=stage.stride, pads=stage.pads, pad_value=stage.pad_value,
                )
            elif isinstance(stage, PoolSpec):
                block = MaxPoolOr(stage.height, stage.width, stage.channels, kernel=stage.kernel, stride=stage.stride)
            elif isinstance(stage, GatherSpec):
                if stage.pixels == 1:
                    continue  # a 1x1 map is already one vector
                block = WidthAdapter(stage.chunk, stage.chunk * stage.pixels)
            else:
                block = build_engine(stage, plan.config.register_every)
                self.engines.append(block)
            want = _width(_in_port(block))
            if width is not None and want != width:
                if want > width:  # pragma: no cover - planning never asks a block for more than a vector
                    raise AssertionError(f"{type(block).__name__} wants {want}-bit beats from {width}-bit vectors")
                self.chain.append(WidthAdapter(width, want))
            self.chain.append(block)
            width = _width(_out_port(block))
            if isinstance(stage, LayerPlan) and stage is not plan.layers[-1] and plan.config.fifo_depth:
                self.chain.append(StreamFifo(width, plan.config.fifo_depth))
        last = self.engines[-1]
        lv = plan.layers[-1].layer
        if isinstance(last, IntDense):
            score_width, score_signed, popcount = last.out_lane_width, True, False
        else:
            score_width, score_signed, popcount = max(1, lv.k.bit_length()), False, True
        self.argmax = Argmax(lv.n, score_width, signed=score_signed, with_scores=True)
        self.chain.append(self.argmax)
        first = plan.stages[0]
        in_width = _width(_in_port(self.chain[0]))
        spec = plan.model.input
        k = int(np.prod(spec.shape))
        if isinstance(first, WindowSpec):
            per_beat, beats = first.channels, first.height * first.width
        elif first.engine is Engine.UNROLLED:
            per_beat, beats = first.layer.k, 1
        else:
            per_beat, beats = first.simd, first.sf
        self.format = StreamFormat(
            in_width=in_width,
            beats_per_image=beats,
            elements_per_beat=per_beat,
            element_bits=spec.bits,
            k=k,
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
        chain = self.chain
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
    names = iter(lp.layer.name for lp in top.plan.layers)
    for block in top.chain:
        if isinstance(block, (SlidingWindow, MaxPoolOr)):
            p = block.cycle_params
            (kh, kw), (sh, sw), (t, l, _, _) = p["kernel"], p["stride"], p["pads"]
            params = (p["height"], p["width"], kh, kw, sh, sw, t, l, p["buffer_rows"], block.out_height, block.out_width)
            blocks.append(Block(Kind.WINDOW, params, label=type(block).__name__.lower()))
        elif isinstance(block, WidthAdapter):
            r = -(-block.vector_width // min(block.in_width, block.out_width))
            kind = Kind.SPLIT if block.splits else Kind.GATHER
            blocks.append(Block(kind, (r,), label="split" if block.splits else "gather"))
        elif isinstance(block, UnrolledDense):
            blocks.append(Block(Kind.UNROLLED, (block.latency,), label=next(names)))
        elif isinstance(block, (FoldedDense, IntDense)):
            blocks.append(Block(Kind.FOLDED, (block.nf, block.sf), label=next(names)))
        elif isinstance(block, StreamFifo):
            blocks.append(Block(Kind.FIFO, (block.depth,), label="fifo"))
        elif isinstance(block, Argmax):
            blocks.append(Block(Kind.UNROLLED, (block.latency,), label="argmax"))
        else:  # pragma: no cover
            raise AssertionError(f"no cycle model for {type(block).__name__}")
    return blocks
