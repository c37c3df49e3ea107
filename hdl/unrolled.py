"""The unrolled dense engine: weights as constants in logic, one input vector per cycle.

Datapath
--------
For input bits ``x`` (K of them) and weight rows ``w_n``, channel ``n`` needs the popcount
``p_n = popcount(XNOR(x, w_n))`` (design.md §2). XNOR with a constant weight bit is ``x[k]`` or
``~x[k]``: no logic. Every channel gets its own pipelined popcount tree
(:mod:`bnnfab.hdl.popcount`):

* **Plain mode** (no schedule): every channel's tree counts all ``K`` positions.
* **MST mode** (``parent``/``inverted`` arrays of a reuse forest, e.g. from
  ``bnnfab.sim.mst.plan_mst``, design.md §3): a root counts all ``K`` positions; a child ``j`` of
  parent ``i`` counts only the ``d`` positions ``D`` where the weights differ,
  ``s_j = popcount(XNOR(x[D], w_j[D]))``, and ``p_j = p_i - d + 2 s_j``; an *inverted* child
  counts the ``e`` positions ``E`` where they are equal and ``p_j = (K - p_i) - e + 2 s_j``.
  All trees start in parallel from the input port (no input register); a child's tree is only
  ``d`` (or ``e``) bits wide.

Offset form (why a child costs one two-operand adder). The hardware keeps ``q_j = p_j + o_j``
with a constant offset ``o_j`` chosen so that no constant is ever added: roots ``q = p``
(``o = 0``); a child ``q_j = q_i + 2 s_j`` (``o_j = o_i + d``) or, inverted,
``q_j = ~q_i + 2 s_j = -q_i - 1 + 2 s_j`` (``o_j = e - K - o_i - 1``). The bitwise NOT folds into
the adder's LUTs and ``2 s_j`` is a wire shift, so each reuse edge costs one ripple adder of
``q``'s width (``ceil(log2(K + 1))`` to a few more bits, signed where the offset is negative).
The output stage undoes the offset for free: ``p_j >= T_j`` is the comparison
``q_j >= T_j + o_j`` against a constant; scores are ``q_j - o_j``.

Constant channels (popcount threshold ``T <= 0``: always 1, ``T > K``: always 0) drive a constant
output bit; their tree is built only if some non-constant channel descends from them.

Pipeline and latency
--------------------
With ``S = ceil(levels(K) / register_every)`` the latency of a ``K``-bit tree (see
:func:`bnnfab.hdl.popcount.popcount_latency`; every narrower tree is no slower) and ``M`` the
forest's depth (longest parent chain; 0 in plain mode)::

    L = S + M + 1

* stages ``1 .. S``: the popcount trees, registered after every ``register_every`` adder levels
  and after their last one; a tree that finishes early has its count delayed to when it is used;
* stage ``S + m`` (``m = 1 .. M``): the channels at depth ``m`` add their parent's ``q``
  (registered at stage ``S + m - 1``) to ``2 s``: one adder per stage, so the depth limit bounds
  both latency and the critical path;
* stage ``S + m + 1`` for a channel at depth ``m``: threshold comparison (or score) into a
  register, then delayed to stage ``L`` (delaying the 1-bit result, not ``q``).

Ports and payloads
------------------
``i``: ``stream.Signature(K)``, bit ``k`` = activation ``k`` (1 = +1).
``o``: with thresholds, ``stream.Signature(N)``, bit ``n`` = ``p_n >= T_n``; without (the output
layer), ``stream.Signature(data.ArrayLayout(unsigned(W), N))`` with ``W = ceil(log2(K + 1))``:
element ``n`` (bits ``n W .. n W + W - 1`` of the flat payload) is the popcount ``p_n``; the
score is ``2 p_n - K``.

Cycle behaviour (exact)
-----------------------
Cycles count rising edges from 0, the first edge after reset is released (design.md §4); "in
cycle ``c``" means the settled values just before edge ``c``. The engine holds valid flags ``v_1 .. v_L``
(reset to 0); stage ``t``'s data registers hold the beat whose flag is ``v_t``. In cycle ``c``::

    en       = ~v_L | o.ready          (global clock enable of every pipeline register)
    i.ready  = en
    o.valid  = v_L,  o.payload = the result of the beat in stage L
    input beat accepted  at edge c  <=>  i.valid & en
    output beat emitted  at edge c  <=>  v_L & o.ready
    at edge c, if en:  v_1 <- i.valid,  v_t <- v_(t-1) for t = 2..L   (else everything holds)

So the whole pipeline, bubbles included, advances exactly when the output register is empty or
being read; with ``o.ready`` always high a beat accepted at edge ``c`` is emitted at edge
``c + L``, one beat per cycle. ``i.ready`` depends combinationally on ``o.ready`` (no other
combinational path between the ports). Payload registers are not reset (only the flags are);
during a cycle with reset high no transfer is meaningful. ``i.payload`` is don't-care unless
``i.valid``.

Size
----
:class:`UnrolledPlan` holds the structure without hardware; :meth:`UnrolledPlan.cost` counts the
trees' full/half adders and counters, the reuse adders and comparators, and estimates LUTs, carry
cells and flip-flops (the flip-flop count is exact).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from amaranth.hdl import C, Cat, Module, Shape, Signal, Value, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..models import Dense
from .popcount import (
    PopcountStyle,
    _check_register_every,
    _check_style,
    build_popcount,
    plan_popcount,
    popcount_cost,
)

__all__ = ["UnrolledDense", "UnrolledPlan", "UnrolledCost"]


@dataclass(frozen=True)
class _Channel:
    index: int
    parent: int  # -1 for a root (every channel in plain mode)
    inverted: bool
    depth: int
    positions: np.ndarray  # the input positions this channel's tree counts
    offset: int  # o: the hardware holds q = p + o
    threshold: int | None  # popcount threshold T; None for a score
    needed: bool  # its q is built (it has a non-constant output, or a descendant that has)


@dataclass(frozen=True)
class UnrolledCost:
    """Structure and estimated size of an :class:`UnrolledDense` (no synthesis).

    Tree figures follow :func:`bnnfab.hdl.popcount.popcount_cost`; the MST adders, comparators
    and score subtractors are ripple adders on the carry chain, counted by width.
    """

    mode: str  # "plain" or "mst"
    n: int
    k: int
    latency: int
    trees: int  # popcount trees built
    tree_inputs: int  # bits counted by all trees: binary ops per input vector
    full_adders: int  # in the trees (3:2 counters and carry-chain positions with 3 inputs)
    half_adders: int
    counters: int  # 4:3 .. 6:3 counters in the trees
    mst_adders: int  # reuse adders (one per built child channel)
    mst_adder_bits: int
    comparators: int  # threshold comparisons (or score offset subtractions) built
    comparator_bits: int
    lut4: int  # estimated LUT4s (trees + mst adders + comparators)
    lut6: int  # estimated LUT6s
    carry: int  # carry-chain cells
    registers: int  # flip-flops (trees, delays, mst, output, valid flags)
    per_tree: dict = field(default_factory=dict, compare=False)  # tree width -> count


def _resize(v: Value, width: int) -> Value:
    """``v`` as exactly ``width`` bits (truncated, or sign/zero extended)."""
    v = Value.cast(v)
    n = len(v)
    if n >= width:
        return v[:width]
    ext = v[-1] if (n and v.shape().signed) else C(0, 1)
    return Cat(v, ext.replicate(width - n))


class UnrolledPlan:
    """The validated structure of an unrolled engine, without hardware: channels, reuse edges,
    offsets, latency and cost. :class:`UnrolledDense` builds from one; use this class alone to
    size a layer (e.g. while choosing a depth limit).

    Parameters
    ----------
    weights : bool (N, K)
        True = +1.
    thresholds : int (N,) or None
        Popcount-domain thresholds ``T`` (``out = p >= T``; ``T <= 0`` constant 1, ``T > K``
        constant 0), e.g. :meth:`bnnfab.models.Dense.popcount_thresholds`. None for the output
        layer: the engine emits the popcounts.
    parent : int (N,) or None
        MST forest: the parent channel of each channel, -1 for a root; None for plain mode.
    inverted : bool (N,) or None
        Channels that start from their parent's complement ``K - p`` (never a root). None: none.
    register_every : int >= 1
        Adder levels of a popcount tree per pipeline register (1: a register after every level).
    style : PopcountStyle or its value
        Popcount tree structure (default ``ADDER``, for LUT4 FPGAs with carry chains).

    Attributes
    ----------
    n, k : int
    mode : str
        ``"plain"`` or ``"mst"``.
    max_depth : int
        ``M``, the forest's depth (0 in plain mode).
    tree_stages : int
        ``S``, the latency of a ``K``-bit tree.
    latency : int
        ``L = S + M + 1``.
    count_width : int
        ``ceil(log2(K + 1))``.

    Raises
    ------
    ValueError
        Naming the rule and the value: weights not boolean 2-D with ``N, K >= 1``; thresholds not
        ``N`` integers; a parent out of range, its own parent, or a cycle; an inverted root;
        ``inverted`` without ``parent``; a bad ``register_every`` or ``style``.
    """

    def __init__(self, weights, thresholds=None, parent=None, inverted=None, *,
                 register_every: int = 1, style=PopcountStyle.ADDER):
        w = np.asarray(weights)
        if w.dtype != np.bool_:
            if w.size and not (np.issubdtype(w.dtype, np.integer) and np.isin(w, (0, 1)).all()):
                raise ValueError(f"weights must be booleans (True = +1), not dtype {w.dtype}")
            w = w.astype(np.bool_)
        if w.ndim != 2 or w.shape[0] < 1 or w.shape[1] < 1:
            raise ValueError(f"weights must be a 2-D (N, K) array with N, K >= 1, not shape {w.shape}")
        self.weights = np.array(w, dtype=np.bool_, copy=True)
        self.weights.flags.writeable = False
        n, k = w.shape
        self.n, self.k = int(n), int(k)
        self.thresholds = self._check_thresholds(thresholds)
        self.register_every = _check_register_every(register_every, allow_none=False)
        self.style = _check_style(style)
        par, inv = self._check_schedule(parent, inverted)
        self.mode = "plain" if parent is None else "mst"
        self.parent, self.inverted = par, inv
        depth = self._depths(par)
        self.max_depth = int(depth.max())
        self.count_width = self.k.bit_length()
        self.channels = self._channels(par, inv, depth)
        # S: the K-bit tree's latency; the max only guards the (tested) fact that no narrower
        # tree is slower
        widths = {self.k} | {len(ch.positions) for ch in self.channels if ch.needed}
        self.tree_stages = max(
            plan_popcount(w, self.style).latency(self.register_every) for w in widths
        )
        self.latency = self.tree_stages + self.max_depth + 1

    # -- validation ----------------------------------------------------------------------

    def _check_thresholds(self, thresholds):
        if thresholds is None:
            return None
        t = np.asarray(thresholds)
        integer = np.issubdtype(t.dtype, np.integer) and t.dtype != np.bool_
        whole = np.issubdtype(t.dtype, np.floating) and np.isfinite(t).all() and (t == np.round(t)).all()
        if not (integer or whole):
            raise ValueError(f"thresholds must be integers (popcount domain), not dtype {t.dtype}")
        if t.shape != (self.n,):
            raise ValueError(
                f"thresholds must have shape ({self.n},), one per output channel, not {t.shape}"
            )
        return tuple(int(v) for v in t)

    def _check_schedule(self, parent, inverted):
        n = self.n
        if parent is None:
            if inverted is not None and np.asarray(inverted).any():
                raise ValueError("inverted needs a parent array (plain mode has no reuse edges)")
            return np.full(n, -1, dtype=np.int64), np.zeros(n, dtype=np.bool_)
        p = np.asarray(parent)
        if p.shape != (n,) or not np.issubdtype(p.dtype, np.integer) or p.dtype == np.bool_:
            raise ValueError(
                f"parent must be {n} integers (-1 for a root), not dtype {p.dtype} shape {p.shape}"
            )
        p = p.astype(np.int64)
        bad = np.flatnonzero((p < -1) | (p >= n))
        if bad.size:
            j = int(bad[0])
            raise ValueError(f"parent of channel {j} must be -1 or in 0..{n - 1}, not {int(p[j])}")
        bad = np.flatnonzero(p == np.arange(n))
        if bad.size:
            raise ValueError(f"channel {int(bad[0])} must not be its own parent")
        if inverted is None:
            inv = np.zeros(n, dtype=np.bool_)
        else:
            inv = np.asarray(inverted)
            if inv.shape != (n,) or not (inv.dtype == np.bool_ or np.issubdtype(inv.dtype, np.integer)):
                raise ValueError(f"inverted must be {n} booleans, not dtype {inv.dtype} shape {inv.shape}")
            inv = inv.astype(np.bool_)
        bad = np.flatnonzero(inv & (p < 0))
        if bad.size:
            raise ValueError(f"root channel {int(bad[0])} cannot be inverted (it has no parent)")
        return p, inv

    @staticmethod
    def _depths(par: np.ndarray) -> np.ndarray:
        n = par.shape[0]
        depth = np.full(n, -1, dtype=np.int64)
        for s in range(n):
            path = []
            j = s
            while j >= 0 and depth[j] < 0:
                if j in path:
                    raise ValueError(f"the parent forest must be acyclic: channel {j} is its own ancestor")
                path.append(j)
                j = int(par[j])
            base = -1 if j < 0 else int(depth[j])
            for q in reversed(path):
                base += 1
                depth[q] = base
        return depth

    def _channels(self, par, inv, depth) -> tuple[_Channel, ...]:
        n, k, w, t = self.n, self.k, self.weights, self.thresholds
        order = sorted(range(n), key=lambda j: (int(depth[j]), j))
        offset = [0] * n
        positions: list[np.ndarray] = [None] * n  # type: ignore[list-item]
        for j in order:
            i = int(par[j])
            if i < 0:
                positions[j] = np.arange(k)
                continue
            if inv[j]:
                positions[j] = np.flatnonzero(w[j] == w[i])
                offset[j] = len(positions[j]) - k - offset[i] - 1
            else:
                positions[j] = np.flatnonzero(w[j] != w[i])
                offset[j] = offset[i] + len(positions[j])
        needed = [t is None or 1 <= t[j] <= k for j in range(n)]
        for j in reversed(order):
            if needed[j] and par[j] >= 0:
                needed[int(par[j])] = True
        return tuple(
            _Channel(j, int(par[j]), bool(inv[j]), int(depth[j]), positions[j], offset[j],
                     None if t is None else t[j], needed[j])
            for j in range(n)
        )

    # -- structure -------------------------------------------------------------------------

    def q_shape(self, ch: _Channel) -> Shape:
        return Shape.cast(range(ch.offset, ch.offset + self.k + 1))

    def output_kind(self, ch: _Channel) -> str:
        if ch.threshold is None:
            return "score"
        if ch.threshold <= 0:
            return "one"
        if ch.threshold > self.k:
            return "zero"
        return "compare"

    def cost(self) -> UnrolledCost:
        """Adder, counter, LUT, carry and register counts of this engine, from its structure."""
        S, L, r = self.tree_stages, self.latency, self.register_every
        trees = tree_inputs = fa = ha = cnt = lut4 = lut6 = carry = regs = 0
        mst = mst_bits = cmp_ = cmp_bits = 0
        per_tree: dict[int, int] = {}
        for ch in self.channels:
            if not ch.needed:
                continue
            width = len(ch.positions)
            if width:
                c = popcount_cost(width, self.style, r)
                trees += 1
                per_tree[width] = per_tree.get(width, 0) + 1
                tree_inputs += width
                fa, ha, cnt = fa + c.full_adders, ha + c.half_adders, cnt + c.counters
                lut4, lut6, carry, regs = lut4 + c.lut4, lut6 + c.lut6, carry + c.carry, regs + c.registers
                lat = c.latency
            else:
                lat = S
            qw = self.q_shape(ch).width
            if ch.parent >= 0:
                # s delayed to stage S + depth - 1, then one adder into the q register
                regs += width.bit_length() * max(0, S + ch.depth - 1 - lat) + qw
                mst, mst_bits = mst + 1, mst_bits + qw
                lut4, lut6, carry = lut4 + qw, lut6 + qw, carry + qw
            kind = self.output_kind(ch)
            if kind in ("compare", "score"):
                out_w = 1 if kind == "compare" else self.count_width
                regs += out_w * (L - (S + ch.depth + 1) + 1)
                if kind == "compare" or ch.offset:
                    cmp_, cmp_bits = cmp_ + 1, cmp_bits + qw
                    lut4, lut6, carry = lut4 + qw, lut6 + qw, carry + qw
        regs += L  # valid flags
        return UnrolledCost(
            mode=self.mode, n=self.n, k=self.k, latency=L, trees=trees, tree_inputs=tree_inputs,
            full_adders=fa, half_adders=ha, counters=cnt, mst_adders=mst, mst_adder_bits=mst_bits,
            comparators=cmp_, comparator_bits=cmp_bits, lut4=lut4, lut6=lut6, carry=carry,
            registers=regs, per_tree=dict(sorted(per_tree.items())),
        )



class UnrolledDense(wiring.Component):
    """A fully pipelined dense binary layer with its weights in logic (see the module docstring).

    Parameters
    ----------
    weights, thresholds, parent, inverted, register_every, style
        As for :class:`UnrolledPlan` (same checks, same errors).

    Attributes
    ----------
    plan : UnrolledPlan
    n, k, mode, max_depth, tree_stages, count_width : as in ``plan``
    latency : int
        ``L = S + M + 1`` cycles from an input beat's acceptance edge to its emission edge when
        ``o.ready`` is high.
    out_layout : ShapeLike
        ``unsigned(N)`` with thresholds, ``data.ArrayLayout(unsigned(count_width), N)`` without.

    Members
    -------
    i : In(stream.Signature(K))
    o : Out(stream.Signature(out_layout))
    """

    def __init__(self, weights, thresholds=None, parent=None, inverted=None, *,
                 register_every: int = 1, style=PopcountStyle.ADDER):
        plan = UnrolledPlan(weights, thresholds, parent, inverted, register_every=register_every, style=style)
        self.plan = plan
        self.n, self.k, self.mode = plan.n, plan.k, plan.mode
        self.max_depth, self.tree_stages, self.latency = plan.max_depth, plan.tree_stages, plan.latency
        self.count_width = plan.count_width
        if plan.thresholds is None:
            self.out_layout = data.ArrayLayout(unsigned(plan.count_width), plan.n)
        else:
            self.out_layout = unsigned(plan.n)
        super().__init__({
            "i": In(stream.Signature(plan.k)),
            "o": Out(stream.Signature(self.out_layout)),
        })

    @classmethod
    def from_dense(cls, layer: Dense, parent=None, inverted=None, **kwargs) -> "UnrolledDense":
        """The engine of a :class:`bnnfab.models.Dense` layer (its popcount-domain thresholds, or
        scores for the output layer)."""
        if not isinstance(layer, Dense):
            raise ValueError(f"layer must be a bnnfab.models.Dense, not {type(layer).__name__}")
        t = None if layer.thresholds is None else layer.popcount_thresholds()
        return cls(layer.weights_2d, t, parent, inverted, **kwargs)

    def cost(self) -> UnrolledCost:
        """See :meth:`UnrolledPlan.cost`."""
        return self.plan.cost()

    # -- hardware ----------------------------------------------------------------------------

    def elaborate(self, platform):
        m = Module()
        pl = self.plan
        S, L, K = pl.tree_stages, pl.latency, pl.k

        en = Signal()
        m.d.comb += [en.eq(~self.o.valid | self.o.ready), self.i.ready.eq(en)]
        valid = Signal(L)
        with m.If(en):
            m.d.sync += valid.eq(Cat(self.i.valid, valid[:-1]))
        m.d.comb += self.o.valid.eq(valid[L - 1])

        x = self.i.payload
        nx = Signal(K)
        m.d.comb += nx.eq(~x)

        # popcount trees, in parallel from the input
        s_val: dict[int, Value] = {}  # a child's count, as late as it has been delayed so far
        s_time: dict[int, int] = {}  # the stage its tree delivers it
        for ch in pl.channels:
            if not ch.needed:
                continue
            row = pl.weights[ch.index]
            bits = [x[int(p)] if row[p] else nx[int(p)] for p in ch.positions]
            tree = plan_popcount(len(bits), pl.style)
            count, lat = build_popcount(m, bits, tree, register_every=pl.register_every, en=en,
                                        name=f"ch{ch.index}")
            s_val[ch.index], s_time[ch.index] = count, lat

        # stages 1..L as one register bundle each: delays, MST adders, outputs
        cur: dict[tuple[str, int], Value] = {}
        for ch in pl.channels:
            if ch.needed and ch.parent < 0:
                cur["q", ch.index] = s_val[ch.index]  # a root's q is its count, at stage S
        for t in range(1, L + 1):
            items: list[tuple[tuple[str, int], Value, Shape]] = []
            for ch in pl.channels:
                j = ch.index
                if not ch.needed:
                    continue
                if ch.parent >= 0:
                    s_need = S + ch.depth - 1
                    s_width = len(Value.cast(s_val[j]))
                    if s_width and s_time[j] < t <= s_need:  # delay the (narrow) count to its adder
                        items.append((("s", j), s_val[j], unsigned(s_width)))
                    if t == S + ch.depth:
                        qp = cur["q", ch.parent]
                        s2 = Cat(C(0, 1), s_val[j])  # 2 s: a wire shift
                        if ch.inverted:
                            qs = qp if qp.shape().signed else Cat(qp, C(0, 1)).as_signed()
                            expr = ~qs + s2  # = -q_parent - 1 + 2 s
                        else:
                            expr = qp + s2
                        items.append((("q", j), expr, pl.q_shape(ch)))
                kind = pl.output_kind(ch)
                if kind in ("compare", "score"):
                    t_out = S + ch.depth + 1
                    if t == t_out:
                        q = cur["q", j]
                        if kind == "compare":
                            items.append((("out", j), q >= ch.threshold + ch.offset, unsigned(1)))
                        else:
                            p = q - ch.offset if ch.offset else q
                            items.append((("out", j), p, unsigned(pl.count_width)))
                    elif t > t_out:
                        items.append((("out", j), cur["out", j], Value.cast(cur["out", j]).shape()))
            width = sum(shape.width for _, _, shape in items)
            if not width:
                continue
            stage = Signal(width, name=f"stage{t}", reset_less=True)
            with m.If(en):
                m.d.sync += stage.eq(Cat(*(_resize(e, shape.width) for _, e, shape in items)))
            off = 0
            for key, _, shape in items:
                v = stage[off : off + shape.width]
                cur[key] = v.as_signed() if shape.signed else v
                off += shape.width
            for key, _, _ in items:
                if key[0] == "s":
                    s_val[key[1]] = cur[key]

        outs = []
        for ch in pl.channels:
            kind = pl.output_kind(ch)
            if kind == "one":
                outs.append(C(1, 1))
            elif kind == "zero":
                outs.append(C(0, 1))
            else:
                outs.append(cur["out", ch.index])
        m.d.comb += Value.cast(self.o.payload).eq(Cat(*outs))
        return m
