"""The unrolled dense engine: weights as constants in logic, one input vector per cycle.

Datapath
--------
For input bits ``x`` (K of them) and weight rows ``w_n``, channel ``n`` needs the popcount
``p_n = popcount(XNOR(x, w_n))`` (design.md §2). XNOR with a constant weight bit is a *literal*,
``x[k]`` or ``~x[k]``: no logic. Every channel gets a pipelined popcount tree over its literals
(:mod:`bnnfab.hdl.popcount`):

* **Plain mode** (no schedule): every channel's tree counts all ``K`` positions.
* **MST mode** (``parent``/``inverted`` arrays of a reuse forest, e.g. from
  ``bnnfab.sim.mst.plan_mst``, design.md §3): a root counts all ``K`` positions; a child ``j`` of
  parent ``i`` counts only the ``d`` positions ``D`` where the weights differ,
  ``s_j = popcount(XNOR(x[D], w_j[D]))``, and ``p_j = p_i - d + 2 s_j``; an *inverted* child
  counts the ``e`` positions ``E`` where they are equal and ``p_j = (K - p_i) - e + 2 s_j``.
  All trees start in parallel from the input port (no input register); a child's tree is only
  ``d`` (or ``e``) bits wide.

Shared trees (``share``). All trees are planned together by
:func:`bnnfab.hdl.popcount.plan_shared_popcounts` over the ``2K`` literals:

* ``"identical"`` (plain mode's default): every tree is an ordinary tree over its literals in
  position order, and an operation with the same inputs at the same level as another tree's is
  built once (the aligned trees of plain mode have many identical first levels: 8 literal patterns
  per triple of positions). Synthesis would merge some of these itself; doing it in the design
  measured 8 % fewer LUTs and 26 % fewer flip-flops on iCE40 for a 64 x 64 layer (equal on ECP5).
* ``"search"`` (MST mode's default): the same, and (``ADDER`` style) the trees' first-level full
  adders come from a greedy common-subexpression search, so a triple of literals that several
  trees count (children differing from their parents at the same positions in the same way, or a
  child and the root) is one full adder read by all of them. In plain mode the search regroups the
  aligned trees and measured worse (``bench/mst_logic.py``), hence the two defaults.
* ``"none"``: one tree per channel, nothing merged.

Each tree keeps the levels of a tree of its width planned alone, so the timing below is the same
in every mode. A tree leaves its ``x[k]`` literals, rather than its ``~x[k]`` ones, outside its
full adders (which take either polarity for free) where it can, so that the single literals it
carries to later carry-ins, and its spare (below), need no inverter.

Offset form (why a child costs one two-operand adder). Each channel's count is kept as
``q_j = p_j + o_j`` with a constant offset ``o_j`` chosen so that no constant is ever added:
roots ``q = p`` (``o = 0``); a child ``q_j = q_i + 2 s_j`` (``o_j = o_i + d``) or, inverted,
``q_j = ~q_i + 2 s_j = -q_i - 1 + 2 s_j`` (``o_j = e - K - o_i - 1``). The hardware holds it
modulo ``2**W``, rotated: ``R_j = (q_j + h_j 2**(W-1)) mod 2**W`` with ``W`` the narrowest width
``>= ceil(log2(K + 1))`` for which a rotation ``h_j`` in {0, 1} makes the channel's ``K + 1``
possible values one run ``start_j .. start_j + K`` without wrap (``W = ceil(log2(K + 1))`` for
every channel when ``K`` is a power of two; else some channels take one bit more, and a parent is
at least as wide as its children, which read its low bits). ``2 s_j`` is a wire shift, so the low
bit of ``R_j`` is the parent's (``~`` of it, inverted) and the rest is one ripple adder
``R_i[1:] + s_j + c_j`` of ``W - 1`` bits, whose top sum bit takes the change of rotation as a
constant XOR. Its carry-in ``c_j`` is free, so when that makes the tree cheaper one literal of
``D`` (the child's *spare*) is taken out of the tree and fed there instead (``s_j`` then counts
the others; the sum is the same). For an inverted child the NOT of the parent's ``R`` is free on
ECP5 (the adder's LUTs take it) but costs LUTs on iCE40, whose carry cells take their operands
directly. The output stage: ``p_j >= T_j`` is ``R_j >= start_j + T_j``, an unsigned comparison
against a constant; scores are ``R_j - start_j``.

Fused leaves (``compare="carry"``). A thresholded child without built children whose count has
at most 4 bits (``d <= 15``) needs no ``R_j``: with ``w = ceil(log2 K) + 1`` and ``b`` the low
``w`` bits of its parent's ``R`` (``~`` of them, inverted), ``p_j >= T_j`` is bit ``w - 1`` of
``b + 2 t + C`` for ``t = s_j`` (plus the spare) and a constant ``C``
(:meth:`UnrolledPlan.fused_table`), i.e. bit ``w - 2`` of ``b[1:] + B(t) + (b[0] & C[0])`` with
``B(t) = (C >> 1) + t`` a 4-input table of the count (one LUT per bit that varies): one carry
chain whose top sum bit is the result, in place of the adder and the comparison. The spare is
the chain's carry-in when ``C[0] = 0``; otherwise it joins the table's index (only for ``d <= 8``,
so the index stays 4 bits).

Comparisons (``compare``): ``"carry"`` (default) writes ``R >= C`` as an arithmetic comparison,
which synthesis builds on the carry chain (on iCE40 almost without LUTs), and fuses leaves as
above; ``"logic"`` writes it as AND/OR logic, about two LUT4s for 7 bits, which avoids ECP5's
two-LUT carry cells but costs LUTs on iCE40, and fuses nothing (measured in
``bench/mst_logic.py``).

Constant channels (popcount threshold ``T <= 0``: always 1, ``T > K``: always 0) drive a constant
output bit; their tree is built only if some non-constant channel descends from them.

Pipeline and latency
--------------------
With ``S = ceil(levels(K) / register_every)`` the latency of a ``K``-bit tree (see
:func:`bnnfab.hdl.popcount.popcount_latency`; every narrower tree is no slower) and ``M`` the
forest's depth (longest parent chain; 0 in plain mode)::

    L = S + M + 1

* stages ``1 .. S``: the popcount trees, registered after every ``register_every`` adder levels
  (of all trees together) and after the last level; a count that is ready early (and a spare
  literal, which is ready at the input) is delayed to when it is used, one delay line per distinct
  count or literal;
* stage ``S + m`` (``m = 1 .. M``): the channels at depth ``m`` add their parent's ``R``
  (registered at stage ``S + m - 1``) to ``2 s`` (and their spare): one adder per stage, so the
  depth limit bounds both latency and the critical path; a fused leaf at depth ``m`` computes its
  output bit here instead (one carry chain);
* stage ``S + m + 1`` for a channel at depth ``m``: threshold comparison (or score) into a
  register; every output bit is then delayed to stage ``L`` (delaying the 1-bit result, not
  ``R``).

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
trees' full/half adders and counters (each shared one once), the reuse adders, fused leaves and
comparators, and estimates LUTs, carry cells and flip-flops. The flip-flop count is exact; the LUT
estimate does not see what synthesis maps differently (e.g. small adders as logic, carry-outs
without a LUT): measured with ``bench/mst_logic.py`` on a 64 x 64 layer it overstates iCE40's
``SB_LUT4`` count by ~35 % in plain mode and ~17 % in MST mode.
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
    SharedPopcountPlan,
    _check_register_every,
    _check_style,
    build_shared_popcounts,
    plan_popcount,
    plan_shared_popcounts,
)

__all__ = ["UnrolledDense", "UnrolledPlan", "UnrolledCost"]


@dataclass(frozen=True)
class _Channel:
    index: int
    parent: int  # -1 for a root (every channel in plain mode)
    inverted: bool
    depth: int
    positions: np.ndarray  # the input positions this channel's tree counts
    offset: int  # o: q = p + o (held as R = (q + h 2**(W-1)) mod 2**W)
    threshold: int | None  # popcount threshold T; None for a score
    needed: bool  # its q is built (it has a non-constant output, or a descendant that has)


@dataclass(frozen=True)
class UnrolledCost:
    """Structure and estimated size of an :class:`UnrolledDense` (no synthesis).

    Tree figures follow :func:`bnnfab.hdl.popcount.popcount_cost`, each shared operation counted
    once (:meth:`bnnfab.hdl.popcount.SharedPopcountPlan.cost`). The MST adders and score
    subtractors are ripple adders on the carry chain, one LUT and one carry cell per result bit
    (an MST adder has ``R``'s width minus one bit); a ``"carry"`` comparison is one carry cell per
    bit plus one LUT, a ``"logic"`` one ``ceil((w - 1) / 3)`` LUT4s (``ceil((w - 1) / 5)`` LUT6s);
    a fused leaf one LUT per varying bit of its table and ``w - 1`` carry cells.
    """

    mode: str  # "plain" or "mst"
    n: int
    k: int
    latency: int
    trees: int  # channels with a popcount tree (identical trees counted per channel)
    tree_inputs: int  # bits counted for all channels: binary ops per input vector (planner's cost)
    tree_ops: int  # counters and adders built in the trees, each shared one once
    unshared_lut4: int  # estimated LUT4s of the same trees built one per channel, nothing shared
    spares: int  # children with a literal moved from their tree to their reuse adder's carry-in
    fused_leaves: int  # leaves whose reuse adder and comparison are one carry chain
    full_adders: int  # in the trees (3:2 counters and carry-chain positions with 3 inputs)
    half_adders: int
    counters: int  # 4:3 .. 6:3 counters in the trees
    mst_adders: int  # reuse adders (one per built child channel that is not a fused leaf)
    mst_adder_bits: int
    comparators: int  # threshold comparisons (fused leaves included) or score subtractions built
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


def _flip(offset: int, width: int, k: int) -> int | None:
    """The rotation ``h`` (0 or 1) for which ``offset + h 2**(width-1) .. + k`` does not wrap
    modulo ``2**width`` (0 preferred), or None if neither does."""
    for h in (0, 1):
        if (offset + h * (1 << (width - 1))) % (1 << width) + k <= (1 << width) - 1:
            return h
    return None


COMPARE_FORMS = ("carry", "logic")
SHARE_MODES = ("search", "identical", "none")


def _compare(v: Value, c: int, form: str) -> Value:
    """``v >= c`` for a constant ``c``: ``"carry"`` as Amaranth's ``>=`` (synthesis builds a
    carry chain), ``"logic"`` as AND/OR logic (:func:`_at_least`)."""
    return Value.cast(v) >= c if form == "carry" else _at_least(v, c)


def _at_least(v: Value, c: int) -> Value:
    """``v >= c`` for a constant ``c``, written as AND/OR logic so that synthesis maps it to LUTs
    rather than a carry chain: from the low bit up, ``v[:i+1] >= c[:i+1]`` is ``v[i] & (v[:i] >=
    c[:i])`` where bit ``i`` of ``c`` is 1, else ``v[i] | (v[:i] >= c[:i])``."""
    v = Value.cast(v)
    w = len(v)
    if v.shape().signed:  # offset binary: v + 2**(w-1) as unsigned
        v, c = Cat(v[:-1], ~v[-1]), c + (1 << (w - 1))
    if c <= 0:
        return C(1, 1)
    if c >= 1 << w:
        return C(0, 1)
    low = (c & -c).bit_length() - 1  # below the lowest set bit of c the answer is "yes"
    res = v[low]
    for i in range(low + 1, w):
        res = (v[i] & res) if (c >> i) & 1 else (v[i] | res)
    return res


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
    share : ``"search"``, ``"identical"``, ``"none"`` or None
        How the trees share operations (module docstring). None (default): ``"search"`` in MST
        mode, ``"identical"`` in plain mode.
    compare : ``"carry"`` or ``"logic"``
        How threshold comparisons are written (module docstring); default ``"carry"``.

    Attributes
    ----------
    n, k : int
    mode : str
        ``"plain"`` or ``"mst"``.
    share, compare : str
    trees : SharedPopcountPlan
        The popcount trees of the channels that need one (see ``tree_of``), spares included.
    tree_of : dict
        Channel index -> its tree's index in ``trees``.
    q_width, q_flip : dict
        Channel index -> ``W`` and ``h`` of its ``R`` (channels with a built ``R``).
    fused : frozenset
        The fused leaves (their output comes straight from their parent's ``R``).
    fused_width : int
        ``w = ceil(log2 K) + 1``.
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
        ``inverted`` without ``parent``; a bad ``register_every``, ``style``, ``share`` or
        ``compare``.
    """

    def __init__(self, weights, thresholds=None, parent=None, inverted=None, *,
                 register_every: int = 1, style=PopcountStyle.ADDER, share: str | None = None,
                 compare: str = "carry"):
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
        if share is None:
            share = "search" if self.mode == "mst" else "identical"
        if share not in SHARE_MODES:
            raise ValueError(f"share must be one of {', '.join(map(repr, SHARE_MODES))} or None "
                             f"(the mode's default), not {share!r}")
        self.share = share
        if compare not in COMPARE_FORMS:
            raise ValueError(f"compare must be one of {', '.join(map(repr, COMPARE_FORMS))}, not {compare!r}")
        self.compare = compare
        self.channels = self._channels(par, inv, depth)
        self.fused_width = (self.k - 1).bit_length() + 1
        self.fused = self._fused_leaves()
        self.trees, self.tree_of = self._plan_trees()
        self.q_width, self.q_flip = self._representations()
        # S: the K-bit tree's latency; the max only guards the (tested) fact that no narrower
        # tree is slower
        self.tree_stages = max(
            [plan_popcount(self.k, self.style).latency(self.register_every)]
            + [self.trees.latency(i, self.register_every) for i in range(len(self.trees.outs))]
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

    def _plan_trees(self) -> tuple[SharedPopcountPlan, dict[int, int]]:
        """The popcount trees of the needed channels, over the literals ``x[p]`` (id ``p``) and
        ``~x[p]`` (id ``K + p``)."""
        k, w = self.k, self.weights
        built = [ch for ch in self.channels if ch.needed]
        trees = [[int(p) if w[ch.index, p] else k + int(p) for p in ch.positions] for ch in built]
        plan = plan_shared_popcounts(
            trees, 2 * k, self.style, share=self.share != "none",
            loose=[True] * k + [False] * k,  # x[p] is a port bit, ~x[p] needs an inverter
            fixed=[self.share != "search"] * len(built),
            # a fused leaf's table reads at most 4 bits: its spare goes to the chain's carry-in
            # when that is free, else into the table, when its count then has 3 bits
            carry_in=[ch.parent >= 0 and (ch.index not in self.fused or self._fused_c0(ch) == 0
                                          or len(ch.positions) <= 8)
                      for ch in built],
        )
        return plan, {ch.index: i for i, ch in enumerate(built)}

    # -- structure -------------------------------------------------------------------------

    def _fused_leaves(self) -> frozenset[int]:
        """Leaves whose reuse adder and comparison become one carry chain (module docstring):
        with ``compare="carry"``, thresholded children without built children and at most 15
        differing positions (their count fits a 4-input table)."""
        if self.compare != "carry" or self.fused_width < 2:
            return frozenset()
        parents = {ch.parent for ch in self.channels if ch.needed and ch.parent >= 0}
        return frozenset(
            ch.index for ch in self.channels
            if ch.needed and ch.parent >= 0 and ch.index not in parents
            and self.output_kind(ch) == "compare" and len(ch.positions) <= 15
        )

    def _fused_top_flip(self, ch: _Channel) -> int:
        """The parent's rotation, when the fused leaf reads its parent's top bit."""
        wp = self.q_width[ch.parent]
        return self.q_flip[ch.parent] if wp == self.fused_width else 0

    def _fused_c0(self, ch: _Channel) -> int:
        """Bit 0 of a fused leaf's constant ``C`` (``-T - o`` modulo 2)."""
        return (-ch.threshold - ch.offset) & 1

    def fused_table(self, ch: _Channel, top_flip: int, t_max: int) -> list[int]:
        """A fused leaf's table ``B(t) = ((C >> 1) + t) mod 2**(w-1)`` for ``t = 0 .. t_max``,
        ``w = fused_width``, ``C = (2**(w-1) (1 - top_flip) - T - o) mod 2**w``. With ``b`` the low
        ``w`` bits of the parent's ``R`` (``~`` of them when inverted; ``top_flip`` the parent's
        rotation when they include its top bit), ``p >= T`` is bit ``w - 2`` of
        ``b[1:] + B(t) + (b[0] & C[0])``: bit ``w - 1`` of ``b + 2 t + C``."""
        w = self.fused_width
        c = ((1 << (w - 1)) * (1 - top_flip) - ch.threshold - ch.offset) % (1 << w)
        return [((c >> 1) + v) % (1 << (w - 1)) for v in range(t_max + 1)]

    def _representations(self) -> tuple[dict[int, int], dict[int, int]]:
        """Width ``W`` and flip ``h`` of every built ``q`` (see the module docstring): the
        narrowest ``W >= count_width`` for which one of the two rotations holds the channel's
        ``K + 1`` values without wrapping, widened to the widest of its children (a child reads
        the low bits of its parent's ``q``)."""
        k, cw = self.k, self.count_width
        width: dict[int, int] = {}
        for ch in sorted((c for c in self.channels if c.needed), key=lambda c: -c.depth):
            if ch.index in self.fused:  # no R of its own; reads its parent's low fused_width bits
                width[ch.parent] = max(width.get(ch.parent, 0), self.fused_width)
                continue
            w = cw if _flip(ch.offset, cw, k) is not None else cw + 1
            width[ch.index] = max(w, width.get(ch.index, 0))
            if ch.parent >= 0:
                width[ch.parent] = max(width.get(ch.parent, 0), width[ch.index])
        flip = {j: _flip(self.channels[j].offset, w, k) for j, w in width.items()}
        return width, flip

    def q_shape(self, ch: _Channel) -> Shape:
        """``unsigned(W)``: the hardware holds ``R = (p + o + h 2**(W-1)) mod 2**W``."""
        return unsigned(self.q_width[ch.index])

    def q_start(self, ch: _Channel) -> int:
        """The value ``R`` takes for ``p = 0``; ``R`` runs from it to it plus ``K``, no wrap."""
        w = self.q_width[ch.index]
        return (ch.offset + self.q_flip[ch.index] * (1 << (w - 1))) % (1 << w)

    def output_kind(self, ch: _Channel) -> str:
        if ch.threshold is None:
            return "score"
        if ch.threshold <= 0:
            return "one"
        if ch.threshold > self.k:
            return "zero"
        return "compare"

    def delays(self) -> tuple[dict[tuple[int, ...], tuple[int, int]], dict[int, int]]:
        """The delay lines between the trees and the reuse adders.

        Returns ``(counts, literals)``: ``counts`` maps a child count (its tree's output bit ids)
        to ``(stage its tree delivers it, last stage it is registered in)``, for counts that wait;
        ``literals`` maps a spare literal id to the last stage it is registered in (it enters at
        stage 0, the input port). One line serves every child reading the same bits.
        """
        S, r, tp = self.tree_stages, self.register_every, self.trees
        counts: dict[tuple[int, ...], tuple[int, int]] = {}
        literals: dict[int, int] = {}
        for ch in self.channels:
            if not ch.needed or ch.parent < 0:
                continue
            i = self.tree_of[ch.index]
            need = S + ch.depth - 1  # the stage whose register feeds the reuse adder
            out, ready = tp.outs[i], tp.latency(i, r)
            if out and ready < need:
                counts[out] = (ready, max(need, counts.get(out, (0, 0))[1]))
            if tp.spares[i] is not None and need > 0:
                literals[tp.spares[i]] = max(need, literals.get(tp.spares[i], 0))
        return counts, literals

    def cost(self) -> UnrolledCost:
        """Adder, counter, LUT, carry and register counts of this engine, from its structure."""
        S, L, r = self.tree_stages, self.latency, self.register_every
        tp = self.trees
        tc = tp.cost(r)
        fa, ha, cnt = tc.full_adders, tc.half_adders, tc.counters
        lut4, lut6, carry, regs = tc.lut4, tc.lut6, tc.carry, tc.registers
        mst = mst_bits = cmp_ = cmp_bits = spares = fused = 0
        tree_inputs = 0
        per_tree: dict[int, int] = {}
        for ch in self.channels:
            if not ch.needed:
                continue
            i = self.tree_of[ch.index]
            tree_inputs += len(ch.positions)
            width = len(tp.inputs[i])
            if width:
                per_tree[width] = per_tree.get(width, 0) + 1
            if ch.parent >= 0:
                spares += tp.spares[i] is not None
            if ch.index in self.fused:
                # a table of the count (about one LUT per varying bit) and one carry chain whose
                # top sum bit is the result, at stage S + depth
                wd = self.fused_width
                table = self.fused_table(ch, self._fused_top_flip(ch), len(ch.positions))
                varying = sum(1 for b in range(wd - 1) if len({(v >> b) & 1 for v in table}) > 1)
                fused += 1
                cmp_, cmp_bits = cmp_ + 1, cmp_bits + wd
                lut4, lut6, carry = lut4 + varying, lut6 + varying, carry + wd - 1
                regs += L - (S + ch.depth) + 1
                continue
            qw = self.q_shape(ch).width
            if ch.parent >= 0:
                # R_j = Cat(b[0], b[1:] + s + spare), b the parent's R: one adder of qw - 1 bits
                regs += qw
                mst, mst_bits = mst + 1, mst_bits + qw - 1
                lut4, lut6, carry = lut4 + qw - 1, lut6 + qw - 1, carry + qw - 1
            kind = self.output_kind(ch)
            if kind in ("compare", "score"):
                out_w = 1 if kind == "compare" else self.count_width
                regs += out_w * (L - (S + ch.depth + 1) + 1)
                if kind == "compare":
                    cmp_, cmp_bits = cmp_ + 1, cmp_bits + qw
                    if self.compare == "carry":  # a carry chain; one LUT brings the carry out
                        lut4, lut6, carry = lut4 + 1, lut6 + 1, carry + qw
                    else:  # a threshold function of qw bits as LUT logic
                        lut4 += -(-(qw - 1) // 3)
                        lut6 += -(-(qw - 1) // 5)
                elif self.q_start(ch):  # the score subtracts the start on the carry chain
                    cmp_, cmp_bits = cmp_ + 1, cmp_bits + qw
                    lut4, lut6, carry = lut4 + qw, lut6 + qw, carry + qw
        counts, literals = self.delays()
        regs += sum(len(out) * (need - ready) for out, (ready, need) in counts.items())
        regs += sum(literals.values())
        regs += L  # valid flags
        return UnrolledCost(
            mode=self.mode, n=self.n, k=self.k, latency=L, trees=sum(per_tree.values()),
            tree_inputs=tree_inputs, tree_ops=sum(len(l) for l in tp.levels),
            unshared_lut4=tp.unshared.lut4, spares=spares, fused_leaves=fused,
            full_adders=fa, half_adders=ha, counters=cnt, mst_adders=mst, mst_adder_bits=mst_bits,
            comparators=cmp_, comparator_bits=cmp_bits, lut4=lut4, lut6=lut6, carry=carry,
            registers=regs, per_tree=dict(sorted(per_tree.items())),
        )


class UnrolledDense(wiring.Component):
    """A fully pipelined dense binary layer with its weights in logic (see the module docstring).

    Parameters
    ----------
    weights, thresholds, parent, inverted, register_every, style, share, compare
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
                 register_every: int = 1, style=PopcountStyle.ADDER, share: str | None = None,
                 compare: str = "carry"):
        plan = UnrolledPlan(weights, thresholds, parent, inverted, register_every=register_every,
                            style=style, share=share, compare=compare)
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

    @staticmethod
    def _fused(m: Module, pl: UnrolledPlan, ch: _Channel, rp: Value, s: Value, cin: Value,
               spare: int | None) -> Value:
        """A fused leaf's ``p >= T`` (:meth:`UnrolledPlan.fused_table`): bit ``w - 2`` of
        ``b[1:] + B + carry``, one carry chain; the spare is the carry-in when ``C[0] = 0`` (then
        ``b[0]`` carries nothing), else it joins the table's index and ``b[0]`` is the carry-in."""
        w = pl.fused_width
        s = Value.cast(s)
        base = rp[:w]
        if ch.inverted:
            base = ~base
        c0 = pl._fused_c0(ch)
        in_table = spare is not None and c0 == 1
        index = Cat(s, cin) if in_table else s
        n_s = len(s)
        table = pl.fused_table(ch, pl._fused_top_flip(ch), (1 << n_s) - 1 + in_table)
        b_sig = Signal(w - 1, name=f"fused{ch.index}_b")
        if len(index) == 0:
            m.d.comb += b_sig.eq(table[0])
        else:
            with m.Switch(index):
                for v in range(1 << len(index)):
                    with m.Case(v):
                        m.d.comb += b_sig.eq(table[(v & ((1 << n_s) - 1)) + (v >> n_s)])
        carry = base[0] if c0 else cin  # cin is 0 without a spare
        return (base[1:] + b_sig + carry)[w - 2]

    @staticmethod
    def _reuse(pl: UnrolledPlan, ch: _Channel, rp: Value, s: Value, cin: Value) -> Value:
        """``R_j`` from the parent's ``R_i``: ``q_j = q_i + 2 (s + spare)`` (``~q_i`` inverted)
        modulo ``2**W_j``; the low bit passes, the rest is one adder, and the top bit's rotation
        change (``h_i`` to ``h_j``) is a constant XOR on the adder's last sum bit."""
        w, wp = pl.q_width[ch.index], pl.q_width[ch.parent]
        top = pl.q_flip[ch.index] ^ (pl.q_flip[ch.parent] if w == wp else 0)
        base = rp[:w]  # q_i mod 2**w, but for the parent's rotation when w == wp (in `top`)
        if ch.inverted:
            base = ~base  # -q_i - 1, modulo 2**w
        if w == 1:
            return base[0] ^ top
        hi = (base[1:] + s + cin)[: w - 1]
        if top:
            hi = Cat(hi[:-1], ~hi[-1])
        return Cat(base[0], hi)

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
        lits = [x[p] for p in range(K)] + [nx[p] for p in range(K)]  # literal ids (see _plan_trees)

        # popcount trees, in parallel from the input, sharing what they have in common
        tp = pl.trees
        counts = build_shared_popcounts(m, lits, tp, register_every=pl.register_every, en=en, name="pc")
        count_lines, lit_lines = pl.delays()
        line: dict[tuple, Value] = {}  # a delay line's value at the stage reached so far

        # stages 1..L as one register bundle each: delays, MST adders, outputs
        cur: dict[tuple[str, int], Value] = {}
        for ch in pl.channels:
            if ch.needed and ch.parent < 0:
                # a root's R is its count (o = h = 0), at stage S
                cur["q", ch.index] = _resize(counts[pl.tree_of[ch.index]][0], pl.q_width[ch.index])
        for out, (ready, _) in count_lines.items():
            line["s", out] = counts[tp.outs.index(out)][0]
        for lit in lit_lines:
            line["lit", lit] = lits[lit]
        for t in range(1, L + 1):
            items: list[tuple[tuple, Value, Shape]] = []
            for out, (ready, need) in count_lines.items():
                if ready < t <= need:  # delay the (narrow) count to its adder
                    items.append((("s", out), line["s", out], unsigned(len(out))))
            for lit, need in lit_lines.items():
                if t <= need:
                    items.append((("lit", lit), line["lit", lit], unsigned(1)))
            for ch in pl.channels:
                j = ch.index
                if not ch.needed:
                    continue
                if ch.parent >= 0 and t == S + ch.depth:
                    i = pl.tree_of[j]
                    out = tp.outs[i]
                    s = line["s", out] if out in count_lines else counts[i][0]
                    spare = tp.spares[i]
                    cin = C(0, 1) if spare is None else line.get(("lit", spare), lits[spare])
                    if j in pl.fused:
                        items.append((("out", j), self._fused(m, pl, ch, cur["q", ch.parent], s, cin, spare),
                                      unsigned(1)))
                    else:
                        r_j = self._reuse(pl, ch, cur["q", ch.parent], s, cin)
                        items.append((("q", j), r_j, pl.q_shape(ch)))
                kind = pl.output_kind(ch)
                if kind in ("compare", "score"):
                    t_out = S + ch.depth + (0 if j in pl.fused else 1)  # a fused leaf's: above
                    if t == t_out and j not in pl.fused:
                        q, start = cur["q", j], pl.q_start(ch)
                        if kind == "compare":  # R runs from start up without wrapping
                            bit = _compare(q, ch.threshold + start, pl.compare)
                            items.append((("out", j), bit, unsigned(1)))
                        else:
                            p = (q - start)[: pl.count_width] if start else q
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
                v = v.as_signed() if shape.signed else v
                if key[0] in ("s", "lit"):
                    line[key] = v
                else:
                    cur[key] = v
                off += shape.width

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
