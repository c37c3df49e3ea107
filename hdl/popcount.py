"""Popcount trees: ``N`` bits reduced to their binary count, laid out for LUT FPGAs.

A tree is first *planned* in pure Python (:func:`plan_popcount`): a list of levels, each a set of
independent operations — small counters built as LUT logic (:class:`CounterOp`) and additions on
the carry chain (:class:`AdderOp`). The plan is then *built* into an Amaranth module
(:func:`build_popcount`, or the :class:`PopcountTree` component), and the same plan gives the
level count and the cost figures (:func:`popcount_cost`) without synthesis, so the numbers
reported describe the structure that is built.

Styles (:class:`PopcountStyle`)
-------------------------------
``ADDER`` (default) — for 4-input-LUT FPGAs with carry chains (iCE40, ECP5). Level 1 puts the
    bits in threes into full adders (3:2 counters); every later level adds the operands in pairs
    with ripple adders on the carry chain (about one LUT per result bit), each adder taking one
    leftover single bit as its carry-in for free. Fewest levels: ``1 + ceil(log2(N / 3))``-ish,
    6 for ``N = 64``.
``DADDA`` — a Dadda carry-save tree of full and half adders (3:2 and 2:2 counters) down to two
    rows, then one carry-propagate adder (the lowest column keeps a third bit as its carry-in).
    Shallow logic per level, more levels (11 for ``N = 64``).
``COUNTER6`` — the same, with 6:3 counters (and 5:3, 4:3, 3:2, 2:2 for the rest of a column):
    each output bit is a function of at most 6 inputs, one LUT6 on a 6-input-LUT device
    (Xilinx 7-series); about 3 LUT6 per 3 bits removed. 4 levels for ``N = 64``.

Every style is exact: :meth:`PopcountPlan.evaluate` runs a plan in Python, and the tests compare
both it and the built netlist with Python's popcount.

Levels, registers and latency
-----------------------------
A *level* is one layer of operations running in parallel on bits made by earlier levels, so the
combinational path through a level is one counter or one ripple adder of at most
``ceil(log2(N + 1))`` bits. ``build_popcount(..., register_every=r)`` registers every live bit
after levels ``r, 2r, ...`` and after the last level, so the tree's latency is
``ceil(levels / r)`` cycles (0 for ``N <= 1``, which has no level); ``r = None`` builds it
combinational (latency 0). The registers advance only while ``en`` is high, when one is given.

Cost model (:class:`PopcountCost`)
----------------------------------
Counted from the plan. *Full adders*: 3:2 counters plus carry-chain bit positions with three live
inputs; *half adders*: 2:2 counters plus positions with two; *counters*: 4:3, 5:3 and 6:3
counters. LUT estimates, ignoring what synthesis may merge across unregistered levels:

* ``lut4`` (iCE40, ECP5): a 2:2 or 3:2 counter 2 LUTs, 4:3 3, 5:3 and 6:3 7 (two full adders and
  a 2-bit sum); a carry-chain adder one LUT per result bit (iCE40 needs one to bring the carry
  out) and one carry cell per position.
* ``lut6`` (7-series): a counter of at most 5 inputs and 2 outputs 1 LUT (dual-output LUT6_2),
  4:3 and 5:3 2, 6:3 3; a carry-chain adder one LUT per position (the carry out is free).
* ``registers``: the live bits at every registered level boundary.

Shared trees
------------
:func:`plan_shared_popcounts` plans several trees over one pool of input bits at once (e.g. the
channels of a layer over the literals ``x[k]`` and ``~x[k]``) as a :class:`SharedPopcountPlan`:
one list of levels for all trees, where an operation with the same inputs at the same level is made
once, and, in the ``ADDER`` style, the trees' first-level full adders come from a greedy
common-subexpression search over triples of input bits. :func:`build_shared_popcounts` builds it
(one register per level boundary for all trees, each live bit held once) and
:meth:`SharedPopcountPlan.cost` counts every operation once. The search enumerates every triple of
every tree taking part (``C(w, 3)`` for a ``w``-bit tree, ~41,700 at 64 bits): within
:data:`MAX_SHARE_TRIPLES` the narrowest trees take part, the rest keep their own plans (and lend
their first-level full adders to the others).
"""

from __future__ import annotations

import enum
import functools
import heapq
import itertools
from dataclasses import dataclass
from typing import Sequence, Union

import numpy as np

from amaranth.hdl import C, Cat, Module, Signal, Value
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = [
    "PopcountStyle",
    "CounterOp",
    "AdderOp",
    "PopcountPlan",
    "PopcountCost",
    "plan_popcount",
    "popcount_cost",
    "popcount_latency",
    "build_popcount",
    "PopcountTree",
    "SharedPopcountPlan",
    "plan_shared_popcounts",
    "evaluate_shared",
    "build_shared_popcounts",
]


class PopcountStyle(enum.Enum):
    """How a popcount tree is structured (see the module docstring)."""

    ADDER = "adder"  # 3:2 counters, then ripple adders on the carry chain with carry-in bits
    DADDA = "dadda"  # 3:2 / 2:2 counters to two rows (Dadda), then one carry-propagate adder
    COUNTER6 = "6:3"  # 6:3 .. 2:2 counters to two rows, then one carry-propagate adder


@dataclass(frozen=True)
class CounterOp:
    """A counter built as LUT logic: ``out = popcount(bits)``, all bits of one weight.

    ``bits`` are 2 to 6 bit ids; ``out`` the new bit ids of the count, least significant first
    (2 for a 2:2 half adder or a 3:2 full adder, 3 for a 4:3, 5:3 or 6:3 counter).
    """

    bits: tuple[int, ...]
    out: tuple[int, ...]

    @property
    def inputs(self) -> tuple[int, ...]:
        return self.bits


@dataclass(frozen=True)
class AdderOp:
    """An addition on the carry chain: ``out = a + b + cin``.

    ``a`` and ``b`` are bit ids, least significant first, ``None`` standing for a constant 0;
    ``cin`` is a bit id of weight 1 or None; ``out`` the new bit ids of the result, least
    significant first, as many as the largest possible sum needs.
    """

    a: tuple[int | None, ...]
    b: tuple[int | None, ...]
    cin: int | None
    out: tuple[int, ...]

    @property
    def inputs(self) -> tuple[int, ...]:
        return tuple(x for x in (*self.a, *self.b, self.cin) if x is not None)

    def positions(self) -> tuple[int, int]:
        """``(full_adders, half_adders)``: bit positions with three and with two live inputs."""
        fa = ha = 0
        carry = self.cin is not None
        for i in range(max(len(self.a), len(self.b))):
            live = sum(1 for row in (self.a, self.b) if i < len(row) and row[i] is not None) + carry
            if live >= 3:
                fa += 1
            elif live == 2:
                ha += 1
            carry = live >= 2
        return fa, ha


Op = Union[CounterOp, AdderOp]


@dataclass(frozen=True, eq=False)
class PopcountPlan:
    """A planned popcount tree of ``width`` input bits (bit ids ``0 .. width - 1``).

    Attributes
    ----------
    width : int
    style : PopcountStyle
    levels : tuple of tuple of CounterOp or AdderOp
        ``levels[l - 1]`` holds level ``l``'s independent operations; they read bits made before
        level ``l``.
    live : tuple of tuple of int
        ``live[l - 1]``: the bits held after level ``l`` (made at or before it and read later or
        part of the count), ascending.
    out : tuple of int
        The count, least significant bit first, ``count_width`` bits.
    """

    width: int
    style: PopcountStyle
    levels: tuple[tuple[Op, ...], ...]
    live: tuple[tuple[int, ...], ...]
    out: tuple[int, ...]

    @property
    def n_levels(self) -> int:
        return len(self.levels)

    @property
    def count_width(self) -> int:
        """Bits of the count: ``ceil(log2(width + 1))`` (0 for an empty tree)."""
        return self.width.bit_length()

    def latency(self, register_every: int | None) -> int:
        """Cycles from bits to count, registering every ``register_every`` levels and after the
        last: ``ceil(levels / r)``; 0 for a combinational tree (``None``)."""
        r = _check_register_every(register_every, allow_none=True)
        return 0 if r is None else -(-self.n_levels // r)

    def registered_after(self, register_every: int | None) -> tuple[int, ...]:
        """The (1-based) levels after which the live bits are registered."""
        r = _check_register_every(register_every, allow_none=True)
        if r is None:
            return ()
        n = self.n_levels
        return tuple(l for l in range(1, n + 1) if l % r == 0 or l == n)

    def evaluate(self, bits: Sequence[int]) -> int:
        """Run the plan on 0/1 values in pure Python (a model of the built netlist)."""
        return _evaluate_levels(self.levels, self.width, bits, [self.out])[0]


@dataclass(frozen=True)
class PopcountCost:
    """Structure and estimated size of one popcount tree (cost model in the module docstring)."""

    width: int
    style: PopcountStyle
    levels: int  # operation levels (combinational depth)
    latency: int  # cycles, given register_every
    full_adders: int  # 3:2 counters + carry-chain positions with three live inputs
    half_adders: int  # 2:2 counters + carry-chain positions with two live inputs
    counters: int  # 4:3, 5:3 and 6:3 counters
    lut4: int  # estimated LUT4s (iCE40 / ECP5)
    lut6: int  # estimated LUT6s (7-series)
    carry: int  # carry-chain cells
    registers: int  # flip-flops inside the tree, given register_every


def _check_register_every(r, allow_none: bool):
    if r is None and allow_none:
        return None
    if isinstance(r, bool) or not isinstance(r, int) or r < 1:
        choices = "a positive integer or None" if allow_none else "a positive integer"
        raise ValueError(f"register_every must be {choices} (levels per register stage), not {r!r}")
    return r


def _check_style(style) -> PopcountStyle:
    if isinstance(style, PopcountStyle):
        return style
    try:
        return PopcountStyle(style)
    except ValueError:
        choices = ", ".join(repr(s.value) for s in PopcountStyle)
        raise ValueError(f"style must be a PopcountStyle or one of {choices}, not {style!r}") from None


# --------------------------------------------------------------------------------------------
# Planners. Each returns (levels, out); bit ids are handed out in order, every choice is a
# stable function of the width, so the same width always gives the same plan.


class _Ids:
    def __init__(self, start: int):
        self.next = start

    def take(self, n: int) -> tuple[int, ...]:
        ids = tuple(range(self.next, self.next + n))
        self.next += n
        return ids


def _adder_level(state, make, pending: int = 0):
    """One level of the ``ADDER`` style on ``state`` (operands ``(bits LSB first, largest value)``).

    A level pairs the multi-bit operands largest with largest, gives each adder a leftover single
    bit as carry-in, and puts the remaining singles in threes into full adders; two singles become a
    half adder only when nothing else is left (``pending`` counts operands made elsewhere in this
    level that join the next state). ``make(a, b, cin, value)`` adds one operation and returns its
    output bit ids. Returns the next state (without the pending operands)."""
    singles = [o for o in state if o[1] == 1]
    multis = sorted((o for o in state if o[1] > 1), key=lambda o: o[1])
    nxt: list[tuple[tuple[int, ...], int]] = []

    def add(a, b, cin):
        v = a[1] + (b[1] if b else 0) + (cin[1] if cin else 0)
        nxt.append((make(a, b, cin, v), v))

    while len(multis) >= 2:
        a, b = multis.pop(), multis.pop()
        add(a, b, singles.pop(0) if singles else None)
    if multis:
        if singles:
            b = singles.pop(0)
            add(multis.pop(), b, singles.pop(0) if singles else None)
        else:
            nxt.append(multis.pop())
    while len(singles) >= 3:
        add(singles.pop(0), singles.pop(0), singles.pop(0))
    if len(singles) == 2 and not nxt and not pending:
        add(singles.pop(0), singles.pop(0), None)
    nxt.extend(singles)
    return nxt


def _adder_op(a, b, cin, out) -> Op:
    """The operation of ``_adder_level``'s ``make``: a counter when every operand is one bit."""
    if a[1] == 1 and (b is None or b[1] == 1):
        return CounterOp(a[0] + (b[0] if b else ()) + (cin[0] if cin else ()), out)
    return AdderOp(a[0], b[0] if b else (), cin[0][0] if cin else None, out)


def _plan_adder(n: int) -> tuple[list[list[Op]], tuple[int, ...]]:
    ids = _Ids(n)
    state: list[tuple[tuple[int, ...], int]] = [((i,), 1) for i in range(n)]
    levels: list[list[Op]] = []
    while len(state) > 1:
        level: list[Op] = []

        def make(a, b, cin, v):
            out = ids.take(v.bit_length())
            level.append(_adder_op(a, b, cin, out))
            return out

        state = _adder_level(state, make)
        levels.append(level)
    return levels, (state[0][0] if state else ())


def _final_adder(ids: _Ids, n: int, cols: list[list[int]]) -> Op:
    """The carry-propagate adder over columns of height <= 2 (column 0: <= 3, one as carry-in)."""
    a = tuple(c[0] if len(c) > 0 else None for c in cols)
    b = tuple(c[1] if len(c) > 1 else None for c in cols)
    cin = cols[0][2] if len(cols[0]) > 2 else None
    while b and b[-1] is None:
        b = b[:-1]
    out = ids.take(n.bit_length())
    if len(a) == 1:  # n <= 3: one counter
        return CounterOp(tuple(x for x in (a[0], *b, cin) if x is not None), out)
    return AdderOp(a, b, cin, out)


def _compress(n: int, reduce_level) -> tuple[list[list[Op]], tuple[int, ...]]:
    """Column compression by ``reduce_level`` until every column holds at most 2 bits (column 0:
    3, the third one being the final adder's carry-in), then the final adder."""
    if n <= 1:
        return [], tuple(range(n))
    ids = _Ids(n)
    cols: list[list[int]] = [list(range(n))]
    levels: list[list[Op]] = []
    while any(len(c) > (3 if w == 0 else 2) for w, c in enumerate(cols)):
        level, cols = reduce_level(ids, cols)
        if not level or len(levels) > 4 * n:  # pragma: no cover - every reducer makes progress
            raise AssertionError(f"column compression of {n} bits stuck at {[len(c) for c in cols]}")
        levels.append(level)
        while cols and not cols[-1]:
            cols.pop()
    final = _final_adder(ids, n, cols)
    levels.append([final])
    return levels, final.out


def _dadda_heights() -> list[int]:
    d = [2]
    while d[-1] < 1 << 40:
        d.append(d[-1] * 3 // 2)
    return d


_DADDA = _dadda_heights()


def _dadda_level(ids: _Ids, cols: list[list[int]]):
    # target: the next Dadda height below the tallest column; the last stage (target 2) lets
    # column 0 keep a third bit for the final adder's carry-in
    tallest = max(len(c) for c in cols)
    target = max(d for d in _DADDA if d < tallest)
    level: list[Op] = []
    new_cols: list[list[int]] = []
    incoming: list[int] = []
    for w in range(len(cols) + 1):
        avail = list(cols[w]) if w < len(cols) else []
        h = len(avail) + len(incoming)
        tgt = target + 1 if (w == 0 and target == 2) else target
        made: list[int] = []
        carries: list[int] = []
        while h > tgt:
            take = 3 if h - tgt >= 2 and len(avail) >= 3 else 2
            if len(avail) < take:  # pragma: no cover - Dadda's heights guarantee the bits
                raise AssertionError(f"dadda level stuck at column {w}, height {h}")
            s, co = ids.take(2)
            level.append(CounterOp(tuple(avail[:take]), (s, co)))
            del avail[:take]
            h -= take - 1
            made.append(s)
            carries.append(co)
        new_cols.append(avail + made + incoming)
        incoming = carries
    return level, new_cols


def _plan_dadda(n: int) -> tuple[list[list[Op]], tuple[int, ...]]:
    return _compress(n, _dadda_level)


def _counter6_level(ids: _Ids, cols: list[list[int]]):
    # Greedy: each column, counting the carries that arrive from its two lower columns in this
    # level, takes counters of up to 6 bits until its next height reaches the target.
    level: list[Op] = []
    new_cols: list[list[int]] = [[] for _ in range(len(cols) + 2)]
    for w in range(len(cols)):
        avail = list(cols[w])
        tgt = 3 if w == 0 else 2
        h_next = len(avail) + len(new_cols[w])  # new_cols[w] holds carries already
        made: list[int] = []
        while h_next > tgt and len(avail) >= 2:
            k = min(6, len(avail), h_next - tgt + 1)  # >= 2 inside this loop
            out = ids.take(k.bit_length())
            level.append(CounterOp(tuple(avail[:k]), out))
            del avail[:k]
            made.append(out[0])
            for j, b in enumerate(out[1:], start=1):
                new_cols[w + j].append(b)
            h_next -= k - 1
        new_cols[w] = avail + made + new_cols[w]
    return level, new_cols


def _plan_counter6(n: int) -> tuple[list[list[Op]], tuple[int, ...]]:
    return _compress(n, _counter6_level)


_PLANNERS = {
    PopcountStyle.ADDER: _plan_adder,
    PopcountStyle.DADDA: _plan_dadda,
    PopcountStyle.COUNTER6: _plan_counter6,
}


def _live_sets(n: int, levels: list[list[Op]], out: tuple[int, ...]) -> tuple[tuple[int, ...], ...]:
    made_at = {i: 0 for i in range(n)}
    last_use: dict[int, int] = {}
    for li, level in enumerate(levels, start=1):
        for op in level:
            for b in op.inputs:
                last_use[b] = li
            for b in op.out:
                made_at[b] = li
    for b in out:
        last_use[b] = len(levels) + 1
    return tuple(
        tuple(sorted(b for b, t in made_at.items() if t <= li < last_use.get(b, -1)))
        for li in range(1, len(levels) + 1)
    )


@functools.lru_cache(maxsize=2048)
def _plan_cached(width: int, style: PopcountStyle) -> PopcountPlan:
    levels, out = _PLANNERS[style](width)
    if len(out) != width.bit_length():  # pragma: no cover - every planner gives the full width
        raise AssertionError(f"plan for {width} bits gave a {len(out)}-bit count")
    live = _live_sets(width, levels, out)
    return PopcountPlan(width, style, tuple(tuple(l) for l in levels), live, tuple(out))


def plan_popcount(width: int, style: PopcountStyle | str = PopcountStyle.ADDER) -> PopcountPlan:
    """Plan a popcount tree of ``width`` bits.

    Parameters
    ----------
    width : int >= 0
        Input bits. 0 gives an empty plan (count of 0 bits); 1 a plan without levels.
    style : PopcountStyle or its value
        ``ADDER`` (default), ``DADDA`` or ``COUNTER6``; see the module docstring.

    Returns
    -------
    PopcountPlan
        Immutable and cached: same arguments, same plan.

    Raises
    ------
    ValueError
        If ``width`` is not a non-negative integer or ``style`` is not a known style.
    """
    if isinstance(width, bool) or not isinstance(width, int) or width < 0:
        raise ValueError(f"width must be a non-negative integer, not {width!r}")
    return _plan_cached(width, _check_style(style))


def popcount_latency(width: int, register_every: int | None = 1, style=PopcountStyle.ADDER) -> int:
    """Cycles through a ``width``-bit tree registered every ``register_every`` levels."""
    return plan_popcount(width, style).latency(register_every)


_COUNTER_LUT4 = {2: 2, 3: 2, 4: 3, 5: 7, 6: 7}
_COUNTER_LUT6 = {2: 1, 3: 1, 4: 2, 5: 2, 6: 3}


def _ops_cost(ops) -> tuple[int, int, int, int, int, int]:
    """``(full_adders, half_adders, counters, lut4, lut6, carry)`` of operations (cost model in the
    module docstring)."""
    fa = ha = cnt = lut4 = lut6 = carry = 0
    for op in ops:
        if isinstance(op, CounterOp):
            k = len(op.bits)
            fa += k == 3
            ha += k == 2
            cnt += k >= 4
            lut4 += _COUNTER_LUT4[k]
            lut6 += _COUNTER_LUT6[k]
        else:
            f, h = op.positions()
            fa += f
            ha += h
            lut4 += len(op.out)
            lut6 += f + h
            carry += f + h
    return fa, ha, cnt, lut4, lut6, carry


def popcount_cost(width: int, style=PopcountStyle.ADDER, register_every: int | None = 1) -> PopcountCost:
    """Levels, latency, adder and counter counts, and LUT / carry / register estimates of a tree.

    Counted from :func:`plan_popcount`'s plan with the cost model of the module docstring; no
    synthesis is run.
    """
    plan = plan_popcount(width, style)
    fa, ha, cnt, lut4, lut6, carry = _ops_cost(op for level in plan.levels for op in level)
    regs = sum(len(plan.live[l - 1]) for l in plan.registered_after(register_every))
    return PopcountCost(
        width=width,
        style=plan.style,
        levels=plan.n_levels,
        latency=plan.latency(register_every),
        full_adders=fa,
        half_adders=ha,
        counters=cnt,
        lut4=lut4,
        lut6=lut6,
        carry=carry,
        registers=regs,
    )


# --------------------------------------------------------------------------------------------
# Several trees over one set of input bits, sharing operations


@dataclass(frozen=True, eq=False)
class SharedPopcountPlan:
    """Popcount trees over one pool of ``n_inputs`` bits (ids ``0 .. n_inputs - 1``), planned
    together so that an operation several trees need is made once (see
    :func:`plan_shared_popcounts`).

    Attributes
    ----------
    n_inputs : int
    style : PopcountStyle
    levels : tuple of tuple of CounterOp or AdderOp
        As in :class:`PopcountPlan`, for all trees at once; every operation is built once.
    outs : tuple of tuple of int
        Per tree, its count, least significant bit first (``widths[t].bit_length()`` bits).
    done : tuple of int
        Per tree, the level after which its count is complete (0: it is an input bit or empty).
    inputs : tuple of tuple of int
        Per tree, the input bits it counts (its spare excluded).
    spares : tuple of (int or None)
        Per tree, the input bit taken out of it for its consumer's free carry-in, or None.
    unshared : PopcountCost
        The same trees (same inputs, spares taken) planned one by one without sharing, for
        comparison (registers counted at ``register_every = 1``).
    """

    n_inputs: int
    style: PopcountStyle
    levels: tuple[tuple[Op, ...], ...]
    outs: tuple[tuple[int, ...], ...]
    done: tuple[int, ...]
    inputs: tuple[tuple[int, ...], ...]
    spares: tuple[int | None, ...]
    unshared: PopcountCost

    @property
    def n_levels(self) -> int:
        return len(self.levels)

    def registered_after(self, register_every: int | None) -> tuple[int, ...]:
        """The levels after which the live bits are registered: every ``r``-th and the last."""
        r = _check_register_every(register_every, allow_none=True)
        if r is None:
            return ()
        n = self.n_levels
        return tuple(l for l in range(1, n + 1) if l % r == 0 or l == n)

    def latency(self, tree: int, register_every: int | None) -> int:
        """Cycles from the input bits to tree ``tree``'s count: ``ceil(done / r)`` (0 when
        combinational or when the count is an input bit)."""
        r = _check_register_every(register_every, allow_none=True)
        return 0 if r is None else -(-self.done[tree] // r)

    def _held_until(self, register_every: int | None) -> list[int]:
        """Per tree, the registered level that first holds its count (0: an input bit or empty;
        -1: a combinational plan's count)."""
        regs = self.registered_after(register_every)
        if not regs:  # combinational: every count is read after the last level
            return [0 if d == 0 else -1 for d in self.done]
        return [0 if d == 0 else min(l for l in regs if l >= d) for d in self.done]

    def live(self, register_every: int | None) -> dict[int, tuple[int, ...]]:
        """The bits held after each level: made at or before it and still to be read by a later
        operation, or a count not yet registered (a count is held until the registered level at or
        after its ``done``)."""
        made_at = {i: 0 for i in range(self.n_inputs)}
        last_use: dict[int, int] = {}
        for li, level in enumerate(self.levels, start=1):
            for op in level:
                for b in op.inputs:
                    last_use[b] = max(last_use.get(b, 0), li)
                for b in op.out:
                    made_at[b] = li
        for out, held in zip(self.outs, self._held_until(register_every)):
            for b in out:
                last_use[b] = max(last_use.get(b, 0), held + 1)
        live: dict[int, list[int]] = {li: [] for li in range(1, self.n_levels + 1)}
        for b in sorted(last_use):
            for li in range(max(made_at[b], 1), min(last_use[b], self.n_levels + 1)):
                live[li].append(b)
        return {li: tuple(v) for li, v in live.items()}

    def cost(self, register_every: int | None = 1) -> PopcountCost:
        """Operations counted once (cost model in the module docstring); ``width`` is the number
        of counted input bits summed over the trees, ``latency`` the slowest tree's."""
        fa, ha, cnt, lut4, lut6, carry = _ops_cost(op for level in self.levels for op in level)
        live = self.live(register_every)
        regs = sum(len(live[l]) for l in self.registered_after(register_every))
        lat = max((self.latency(t, register_every) for t in range(len(self.outs))), default=0)
        return PopcountCost(
            width=sum(len(i) for i in self.inputs), style=self.style, levels=self.n_levels,
            latency=lat, full_adders=fa, half_adders=ha, counters=cnt, lut4=lut4, lut6=lut6,
            carry=carry, registers=regs,
        )


# Above this many candidate triples the sharing search leaves the widest flexible trees out (they
# keep their own grouping); it bounds the planning time (~2 s per million, numpy).
MAX_SHARE_TRIPLES = 1_500_000


class _SharedBuilder:
    """Global operation list with hash-consing: an operation with the same inputs at the same
    level as an existing one returns that one's outputs."""

    def __init__(self, n_inputs: int, share: bool):
        self.ids = _Ids(n_inputs)
        self.share = share
        self.levels: list[list[Op]] = []
        self.made: dict[tuple, tuple[int, ...]] = {}

    def _put(self, level: int, key, op: Op) -> tuple[int, ...]:
        while len(self.levels) < level:
            self.levels.append([])
        self.levels[level - 1].append(op)
        self.made[key] = op.out
        return op.out

    def counter(self, level: int, bits: tuple[int, ...], n_out: int) -> tuple[int, ...]:
        key = (level, "c", tuple(sorted(bits)))
        if self.share and key in self.made:
            return self.made[key]
        return self._put(level, key, CounterOp(tuple(bits), self.ids.take(n_out)))

    def adder(self, level: int, a, b, cin, n_out: int) -> tuple[int, ...]:
        rows = sorted((tuple(a), tuple(b)), key=lambda r: tuple(-1 if x is None else x for x in r))
        key = (level, "a", tuple(rows), cin)
        if self.share and key in self.made:
            return self.made[key]
        return self._put(level, key, AdderOp(tuple(a), tuple(b), cin, self.ids.take(n_out)))

    def remap(self, plan: PopcountPlan, bits: Sequence[int]) -> tuple[tuple[int, ...], int]:
        """Add a single-tree plan over ``bits``; its count's ids and completion level."""
        m: dict[int | None, int | None] = {i: b for i, b in enumerate(bits)}
        m[None] = None
        made_at = {b: 0 for b in bits}
        for li, level in enumerate(plan.levels, start=1):
            for op in level:
                if isinstance(op, CounterOp):
                    out = self.counter(li, tuple(m[b] for b in op.bits), len(op.out))
                else:
                    out = self.adder(li, [m[b] for b in op.a], [m[b] for b in op.b], m[op.cin], len(op.out))
                for o, g in zip(op.out, out):
                    m[o] = g
                    made_at[g] = li
        out = tuple(m[b] for b in plan.out)
        return out, max((made_at.get(b, 0) for b in out), default=0)

    def adder_level(self, level: int, state, pending: int = 0):
        """One ``ADDER`` level (:func:`_adder_level`) at ``level``: the next state and the level
        each new operand was made at."""
        made_at = {}

        def make(a, b, cin, v):
            n_out = v.bit_length()
            if a[1] == 1 and (b is None or b[1] == 1):
                out = self.counter(level, a[0] + (b[0] if b else ()) + (cin[0] if cin else ()), n_out)
            else:
                out = self.adder(level, a[0], b[0] if b else (), cin[0][0] if cin else None, n_out)
            made_at[out] = level
            return out

        return _adder_level(state, make, pending), made_at


@functools.lru_cache(maxsize=512)
def _combinations(k: int, r: int) -> np.ndarray:
    """Every ``r``-subset of ``range(k)`` in lexicographic order, one per row."""
    return np.array(list(itertools.combinations(range(k), r)), dtype=np.int64).reshape(-1, r)


def _triple_codes(bits: np.ndarray, m: int) -> np.ndarray:
    """The codes ``(a m + b) m + c`` of every triple ``a < b < c`` of the ascending ``bits``."""
    ix = _combinations(len(bits), 3)
    return (bits[ix[:, 0]] * m + bits[ix[:, 1]]) * m + bits[ix[:, 2]]


def _meeting_codes(t: np.ndarray, others: np.ndarray, m: int) -> np.ndarray:
    """The codes of the triples of ``t | others`` (disjoint sets) that meet ``t`` (3 bits)."""
    rows = [t[None, :]]
    if len(others):
        for x in t:  # one bit of t and two others
            ix = _combinations(len(others), 2)
            rows.append(np.column_stack([np.full(len(ix), x), others[ix[:, 0]], others[ix[:, 1]]]))
        for x, y in itertools.combinations(t, 2):  # two bits of t and one other
            rows.append(np.column_stack([np.full(len(others), x), np.full(len(others), y), others]))
    tri = np.sort(np.concatenate(rows), axis=1)
    return (tri[:, 0] * m + tri[:, 1]) * m + tri[:, 2]


def _private_lut4(n_pre: int, n_singles: int) -> int:
    """Estimated LUT4s of a flexible tree's own operations: ``n_pre`` 2-bit operands (value 3)
    ready after level 1 and ``n_singles`` input bits, counted with the ``ADDER`` rules."""
    ids = _Ids(n_singles)
    ops: list[Op] = []

    def make(a, b, cin, v):
        out = ids.take(v.bit_length())
        ops.append(_adder_op(a, b, cin, out))
        return out

    state = [((i,), 1) for i in range(n_singles)]
    pre = [(ids.take(2), 3) for _ in range(n_pre)]
    state = _adder_level(state, make, len(pre)) + pre if state else pre
    while len(state) > 1:
        state = _adder_level(state, make)
    return _ops_cost(ops)[3]


def plan_shared_popcounts(
    trees: Sequence[Sequence[int]],
    n_inputs: int,
    style: PopcountStyle | str = PopcountStyle.ADDER,
    *,
    share: bool = True,
    fixed: Sequence[bool] | None = None,
    carry_in: Sequence[bool] | None = None,
    loose: Sequence[bool] | None = None,
) -> SharedPopcountPlan:
    """Plan popcount trees over one pool of input bits, sharing what they have in common.

    Parameters
    ----------
    trees : sequence of sequences of int
        Each tree's input bits: distinct ids in ``0 .. n_inputs - 1``. Their order is the order a
        tree planned on its own (:func:`plan_popcount`) would count them in.
    n_inputs : int
    style : PopcountStyle or its value
    share : bool
        True (default): an operation with the same inputs at the same level is made once, and
        (``ADDER`` style) the *flexible* trees — those not ``fixed`` — group their bits into
        level-1 full adders by a greedy common-subexpression search: repeatedly the triple of
        input bits that saves the most full adders (contained in the most flexible trees, or in one
        and already made by a fixed tree's first level) becomes one full adder that every
        flexible tree containing all three uses, while one is saved; the rest of each flexible
        tree counts its remaining bits and those 2-bit sums with the ``ADDER`` rules (so it has
        the levels of a tree of its width planned alone). False: every tree planned on its own
        (:func:`plan_popcount`), nothing merged.
    fixed : sequence of bool, optional
        Trees that keep their own plan (:func:`plan_popcount` over their bits in order; e.g. the
        full-width trees, whose aligned groups coincide across trees). Default: none. Without
        ``share`` or with another style every tree is fixed.
    carry_in : sequence of bool, optional
        Trees whose consumer adds one more bit of the count's weight for free (the carry-in of
        an adder): such a tree may leave out one input bit, returned in ``spares``; it does when
        its estimated LUT4s drop (for a flexible tree, one of the bits left outside the shared
        adders; for a fixed one, its last bit).
    loose : sequence of bool, optional
        Per input bit: True where the bit is free to carry as it is (e.g. an input port bit, where
        its complement would need an inverter in front of a register or a carry-chain input). A
        flexible tree puts its other bits into its full adders first (which take either for
        free), so that the bits it leaves single (carry-ins of later adders) and its spare are
        loose ones where it can. Default: all loose.

    Returns
    -------
    SharedPopcountPlan
        Deterministic: same arguments, same plan.

    Raises
    ------
    ValueError
        If a tree's bits are out of range or repeated, or ``fixed`` / ``carry_in`` have the wrong
        length.
    """
    style = _check_style(style)
    if isinstance(n_inputs, bool) or not isinstance(n_inputs, int) or n_inputs < 0:
        raise ValueError(f"n_inputs must be a non-negative integer, not {n_inputs!r}")
    trees = [tuple(int(b) for b in t) for t in trees]
    for i, t in enumerate(trees):
        if any(b < 0 or b >= n_inputs for b in t) or len(set(t)) != len(t):
            raise ValueError(f"tree {i} must have distinct input bits in 0..{n_inputs - 1}, not {t}")
    n = len(trees)

    def flags(v, name):
        if v is None:
            return [False] * n
        v = [bool(x) for x in v]
        if len(v) != n:
            raise ValueError(f"{name} must have one flag per tree ({n}), not {len(v)}")
        return v

    fixed_f, cin_f = flags(fixed, "fixed"), flags(carry_in, "carry_in")
    if loose is not None:
        loose = [bool(x) for x in loose]
        if len(loose) != n_inputs:
            raise ValueError(f"loose must have one flag per input bit ({n_inputs}), not {len(loose)}")
    flexible = share and style is PopcountStyle.ADDER
    members: list[int] = []  # the trees that take part in the search, narrowest first
    if flexible:
        budget = MAX_SHARE_TRIPLES
        for i in sorted((i for i in range(n) if not fixed_f[i]), key=lambda i: (len(trees[i]), i)):
            k = len(trees[i])
            c = k * (k - 1) * (k - 2) // 6
            if c > budget:
                break
            budget -= c
            members.append(i)
    member_set = set(members)
    fixed_f = [i not in member_set for i in range(n)]
    g = _SharedBuilder(n_inputs, share)
    outs: list[tuple[int, ...]] = [()] * n
    done = [0] * n
    inputs: list[tuple[int, ...]] = [()] * n
    spares: list[int | None] = [None] * n

    # fixed trees: their own plans (a spare when the tree one bit narrower is cheaper)
    for i in range(n):
        if not fixed_f[i]:
            continue
        bits = trees[i]
        narrower = bits and popcount_cost(len(bits) - 1, style).lut4 < popcount_cost(len(bits), style).lut4
        if cin_f[i] and narrower:
            spares[i], bits = bits[-1], bits[:-1]
        inputs[i] = bits
        outs[i], done[i] = g.remap(plan_popcount(len(bits), style), bits)

    flex = sorted(members)
    premade: dict[int, list[tuple[int, ...]]] = {i: [] for i in flex}
    rest: dict[int, set[int]] = {i: set(trees[i]) for i in flex}
    if flex:
        pool = {tuple(sorted(op.bits)): op.out for op in (g.levels[0] if g.levels else ())
                if isinstance(op, CounterOp) and len(op.bits) == 3}
        # every triple of every member, as a code a*M*M + b*M + c (a < b < c): code order is
        # the triples' lexicographic order, which breaks ties
        M = n_inputs
        codes = [_triple_codes(np.array(sorted(trees[i]), dtype=np.int64), M) for i in members]
        uniq, counts = np.unique(np.concatenate(codes), return_counts=True)
        pool_codes = np.array(sorted((a * M + b) * M + c for a, b, c in pool), dtype=np.int64)
        in_pool = np.isin(uniq, pool_codes)
        score = counts - (~in_pool).astype(counts.dtype)
        heap = [(-int(score[ix]), int(ix)) for ix in np.flatnonzero(score >= 1)]
        heapq.heapify(heap)
        holding: dict[int, set[int]] = {}  # input bit -> the members whose rest holds it
        for i in members:
            for bit in trees[i]:
                holding.setdefault(bit, set()).add(i)
        while heap:
            neg, ix = heapq.heappop(heap)
            s = int(counts[ix]) - (0 if in_pool[ix] else 1)
            if s != -neg:
                if s >= 1:
                    heapq.heappush(heap, (-s, ix))
                continue
            code = int(uniq[ix])
            t = (code // (M * M), code // M % M, code % M)
            if t not in pool:
                pool[t] = g.counter(1, t, 2)
            for i in sorted(holding[t[0]] & holding[t[1]] & holding[t[2]]):
                r = rest[i]
                others = np.array(sorted(r.difference(t)), dtype=np.int64)
                gone = _meeting_codes(np.array(t, dtype=np.int64), others, M)
                counts[np.searchsorted(uniq, gone)] -= 1
                r.difference_update(t)
                for bit in t:
                    holding[bit].discard(i)
                premade[i].append(pool[t])
        # each flexible tree: its remaining bits (in its order) and the shared sums
        for i in flex:
            singles = [b for b in trees[i] if b in rest[i]]
            if loose is not None:  # the loose bits last: they are the ones left single
                singles.sort(key=lambda b: bool(loose[b]))
            pre = premade[i]
            n_pre, n_single = len(pre), len(singles)
            if cin_f[i] and singles and _private_lut4(n_pre, n_single - 1) < _private_lut4(n_pre, n_single):
                spares[i] = singles.pop()
            inputs[i] = tuple(b for b in trees[i] if b != spares[i])
            state = [((b,), 1) for b in singles]
            pre_ops = [(out, 3) for out in pre]
            made_at: dict[tuple[int, ...], int] = {out: 1 for out in pre}
            made_at.update({((b,)): 0 for b in singles})
            level = 1
            if state:
                nxt, m = g.adder_level(level, state, len(pre_ops))
                made_at.update(m)
                state = nxt + pre_ops
            else:
                state = pre_ops
            while len(state) > 1:
                level += 1
                state, m = g.adder_level(level, state)
                made_at.update(m)
            if state:
                outs[i], done[i] = state[0][0], made_at[state[0][0]]

    # the same trees one by one, for comparison
    alone = [popcount_cost(len(b), style, 1) for b in inputs]
    unshared = PopcountCost(
        width=sum(len(b) for b in inputs), style=style,
        levels=max((c.levels for c in alone), default=0), latency=max((c.latency for c in alone), default=0),
        full_adders=sum(c.full_adders for c in alone), half_adders=sum(c.half_adders for c in alone),
        counters=sum(c.counters for c in alone), lut4=sum(c.lut4 for c in alone),
        lut6=sum(c.lut6 for c in alone), carry=sum(c.carry for c in alone),
        registers=sum(c.registers for c in alone),
    )
    return SharedPopcountPlan(
        n_inputs=n_inputs, style=style, levels=tuple(tuple(l) for l in g.levels), outs=tuple(outs),
        done=tuple(done), inputs=tuple(inputs), spares=tuple(spares), unshared=unshared,
    )


def evaluate_shared(plan: SharedPopcountPlan, bits: Sequence[int]) -> list[int]:
    """Run a shared plan on 0/1 input values in pure Python: every tree's count."""
    return _evaluate_levels(plan.levels, plan.n_inputs, bits, plan.outs)


def _evaluate_levels(levels, n_inputs: int, bits: Sequence[int], outs) -> list[int]:
    """The values of the rows ``outs`` after running ``levels`` of operations on ``n_inputs``
    0/1 input bits (bit ids ``0 .. n_inputs - 1``); an operation that overflows its outputs is a
    plan bug."""
    if len(bits) != n_inputs:
        raise ValueError(f"plan is for {n_inputs} bits, got {len(bits)}")
    val = {i: int(b) & 1 for i, b in enumerate(bits)}

    def num(row):
        return sum(val[b] << i for i, b in enumerate(row) if b is not None)

    for level in levels:
        made = {}
        for op in level:
            if isinstance(op, CounterOp):
                s = sum(val[b] for b in op.bits)
            else:
                s = num(op.a) + num(op.b) + (val[op.cin] if op.cin is not None else 0)
            if s >> len(op.out):
                raise AssertionError(f"plan overflow: {op} gave {s}")
            made.update({b: (s >> i) & 1 for i, b in enumerate(op.out)})
        val.update(made)
    return [num(out) for out in outs]


# --------------------------------------------------------------------------------------------
# Building


def _fa(x: Value, y: Value, z: Value | None) -> tuple[Value, Value]:
    if z is None:
        return x ^ y, x & y
    return x ^ y ^ z, (x & y) | (x & z) | (y & z)


def build_popcount(
    m: Module,
    bits: Sequence[Value],
    plan: PopcountPlan,
    *,
    register_every: int | None = None,
    en: Value | None = None,
    domain: str = "sync",
    name: str = "pc",
) -> tuple[Value, int]:
    """Add the logic of ``plan`` to ``m``, counting ``bits``.

    Each level's results go into one Signal (a register at a registered level boundary, else a
    combinational wire), so no sub-expression is copied; counters of 4 to 6 bits keep their two
    partial counts in one more wire per level. Counters are written as XOR/AND/OR logic and
    wide additions with ``+``, so that synthesis puts only the latter on the carry chain.

    Parameters
    ----------
    m : Module
    bits : sequence of 1-bit Values
        ``plan.width`` of them, in the plan's order.
    plan : PopcountPlan
    register_every : int or None
        Register after every ``r`` levels and after the last; None for a combinational tree.
    en : 1-bit Value or None
        Clock enable of the tree's registers (None: always enabled).
    domain, name : str
        Clock domain of the registers; prefix of the Signal names.

    Returns
    -------
    count : Value
        Unsigned, ``plan.count_width`` bits (0 bits for an empty tree).
    latency : int
        ``plan.latency(register_every)`` cycles.
    """
    bits = list(bits)
    if len(bits) != plan.width:
        raise ValueError(f"plan is for {plan.width} bits, got {len(bits)}")
    registered = set(plan.registered_after(register_every))
    val: dict[int, Value] = dict(enumerate(bits))
    for li, level in enumerate(plan.levels, start=1):
        keep = plan.live[li - 1] if li in registered else None
        _build_level(m, val, li, level, keep, en, domain, name)
    count = Cat(*(val[b] for b in plan.out))
    return count, plan.latency(register_every)


def _build_level(m: Module, val: dict, li: int, level, keep, en, domain: str, name: str) -> None:
    """Build one level's operations into one Signal and point ``val`` at its bits. With ``keep``
    (the bits live after the level) the Signal is a register holding them all, else a wire of the
    new bits."""

    def row(ids):
        return Cat(*(val[b] if b is not None else C(0, 1) for b in ids))

    # partial counts of the 4..6-bit counters: two full adders each, into one wire
    wide = [op for op in level if isinstance(op, CounterOp) and len(op.bits) > 3]
    partial: dict[int, Value] = {}
    if wide:
        scratch = Signal(4 * len(wide), name=f"{name}_p{li}")
        parts = []
        for op in wide:
            x = [val[b] for b in op.bits]
            rest = (x[3], x[4] if len(x) > 4 else C(0, 1), x[5] if len(x) > 5 else None)
            parts += [*_fa(*x[:3]), *_fa(*rest)]
        m.d.comb += scratch.eq(Cat(*parts))
        for j, op in enumerate(wide):
            partial[id(op)] = scratch[4 * j : 4 * j + 4]
    results: list[tuple[tuple[int, ...], Value]] = []
    for op in level:
        if isinstance(op, CounterOp) and len(op.bits) <= 3:
            x = [val[b] for b in op.bits]
            res = Cat(*_fa(x[0], x[1], x[2] if len(x) > 2 else None))
        elif isinstance(op, CounterOp):
            a0, a1, b0, b1 = (partial[id(op)][i] for i in range(4))
            k = a0 & b0  # 2-bit + 2-bit as logic: the sum is at most 6
            res = Cat(a0 ^ b0, a1 ^ b1 ^ k, (a1 & b1) | (k & (a1 | b1)))
        else:
            total = row(op.a) + row(op.b)
            if op.cin is not None:
                total = total + val[op.cin]
            res = total
        results.append((op.out, res[: len(op.out)]))
    order = [b for out, _ in results for b in out]
    parts = [res for _, res in results]
    if keep is not None:
        made = set(order)
        kept = [b for b in keep if b not in made]
        order += kept
        parts += [val[b] for b in kept]
        if not order:
            return
        sig = Signal(len(order), name=f"{name}_r{li}", reset_less=True)
        if en is None:
            m.d[domain] += sig.eq(Cat(*parts))
        else:
            with m.If(en):
                m.d[domain] += sig.eq(Cat(*parts))
    else:
        if not order:
            return
        sig = Signal(len(order), name=f"{name}_l{li}")
        m.d.comb += sig.eq(Cat(*parts))
    for i, b in enumerate(order):
        val[b] = sig[i]


def build_shared_popcounts(
    m: Module,
    bits: Sequence[Value],
    plan: SharedPopcountPlan,
    *,
    register_every: int | None = None,
    en: Value | None = None,
    domain: str = "sync",
    name: str = "pc",
) -> list[tuple[Value, int]]:
    """Add the logic of a :class:`SharedPopcountPlan` to ``m``, counting ``bits``.

    Like :func:`build_popcount`, for all trees at once: each level's results (and, at a registered
    level, every live bit) go into one Signal, so an operation or bit several trees use is built
    or registered once.

    Returns
    -------
    list of (count, latency)
        Per tree: its count (unsigned, ``len(plan.outs[t])`` bits), taken from the register that
        first holds it, and ``plan.latency(t, register_every)``.
    """
    bits = list(bits)
    if len(bits) != plan.n_inputs:
        raise ValueError(f"plan is for {plan.n_inputs} bits, got {len(bits)}")
    registered = set(plan.registered_after(register_every))
    live = plan.live(register_every)
    held = plan._held_until(register_every)
    val: dict[int, Value] = dict(enumerate(bits))
    counts: list[Value | None] = [None] * len(plan.outs)

    def capture(level):
        for t, out in enumerate(plan.outs):
            if counts[t] is None and held[t] == level:
                counts[t] = Cat(*(val[b] for b in out))

    capture(0)
    for li, level in enumerate(plan.levels, start=1):
        _build_level(m, val, li, level, live[li] if li in registered else None, en, domain, name)
        capture(li)
    for t, out in enumerate(plan.outs):  # combinational plans
        if counts[t] is None:
            counts[t] = Cat(*(val[b] for b in out))
    return [(counts[t], plan.latency(t, register_every)) for t in range(len(plan.outs))]


class PopcountTree(wiring.Component):
    """A stand-alone popcount tree.

    Parameters
    ----------
    width : int >= 1
        Input bits.
    style : PopcountStyle or its value
    register_every : int or None
        Register after every ``r`` levels and after the last (None: combinational).

    Attributes
    ----------
    plan : PopcountPlan
    latency : int
        ``ceil(levels / register_every)``: the count of the bits presented at an enabled rising
        edge appears on ``o`` after ``latency`` enabled edges (at once when 0).

    Members
    -------
    i : In(width)
        The bits.
    o : Out(ceil(log2(width + 1)))
        Their count.
    en : In(1, init=1)
        Clock enable of every register of the tree.
    """

    def __init__(self, width: int, *, style=PopcountStyle.ADDER, register_every: int | None = None):
        if isinstance(width, bool) or not isinstance(width, int) or width < 1:
            raise ValueError(f"width must be a positive integer, not {width!r}")
        self.plan = plan_popcount(width, style)
        self.register_every = _check_register_every(register_every, allow_none=True)
        self.latency = self.plan.latency(self.register_every)
        super().__init__({"i": In(width), "o": Out(self.plan.count_width), "en": In(1, init=1)})

    def elaborate(self, platform):
        m = Module()
        bits = [self.i[k] for k in range(self.plan.width)]
        count, _ = build_popcount(
            m, bits, self.plan, register_every=self.register_every, en=self.en, name="pc"
        )
        m.d.comb += self.o.eq(count)
        return m
