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
"""

from __future__ import annotations

import enum
import functools
from dataclasses import dataclass
from typing import Sequence, Union

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
        if len(bits) != self.width:
            raise ValueError(f"plan is for {self.width} bits, got {len(bits)}")
        val = {i: int(b) & 1 for i, b in enumerate(bits)}

        def num(row):
            return sum(val[b] << i for i, b in enumerate(row) if b is not None)

        for level in self.levels:
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
        return num(self.out)


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


def _plan_adder(n: int) -> tuple[list[list[Op]], tuple[int, ...]]:
    # Operands are numbers: (bits LSB first, largest value). A level pairs the multi-bit operands
    # largest with largest, gives each adder a leftover single bit as carry-in, and puts the
    # remaining singles in threes into full adders.
    ids = _Ids(n)
    state: list[tuple[tuple[int, ...], int]] = [((i,), 1) for i in range(n)]
    levels: list[list[Op]] = []
    while len(state) > 1:
        singles = [o for o in state if o[1] == 1]
        multis = sorted((o for o in state if o[1] > 1), key=lambda o: o[1])
        level: list[Op] = []
        nxt: list[tuple[tuple[int, ...], int]] = []

        def add(a, b, cin):
            v = a[1] + (b[1] if b else 0) + (cin[1] if cin else 0)
            out = ids.take(v.bit_length())
            if a[1] == 1 and (b is None or b[1] == 1):
                bits = a[0] + (b[0] if b else ()) + (cin[0] if cin else ())
                level.append(CounterOp(bits, out))
            else:
                level.append(AdderOp(a[0], b[0] if b else (), cin[0][0] if cin else None, out))
            nxt.append((out, v))

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
        if len(singles) == 2 and not nxt:
            add(singles.pop(0), singles.pop(0), None)
        nxt.extend(singles)
        levels.append(level)
        state = nxt
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


def popcount_cost(width: int, style=PopcountStyle.ADDER, register_every: int | None = 1) -> PopcountCost:
    """Levels, latency, adder and counter counts, and LUT / carry / register estimates of a tree.

    Counted from :func:`plan_popcount`'s plan with the cost model of the module docstring; no
    synthesis is run.
    """
    plan = plan_popcount(width, style)
    fa = ha = cnt = lut4 = lut6 = carry = 0
    for level in plan.levels:
        for op in level:
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

    def row(ids):
        return Cat(*(val[b] if b is not None else C(0, 1) for b in ids))

    for li, level in enumerate(plan.levels, start=1):
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
        if li in registered:
            made = set(order)
            keep = [b for b in plan.live[li - 1] if b not in made]
            order += keep
            parts += [val[b] for b in keep]
            sig = Signal(len(order), name=f"{name}_r{li}", reset_less=True)
            if en is None:
                m.d[domain] += sig.eq(Cat(*parts))
            else:
                with m.If(en):
                    m.d[domain] += sig.eq(Cat(*parts))
        else:
            sig = Signal(len(order), name=f"{name}_l{li}")
            m.d.comb += sig.eq(Cat(*parts))
        for i, b in enumerate(order):
            val[b] = sig[i]
    count = Cat(*(val[b] for b in plan.out))
    return count, plan.latency(register_every)


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
