"""Cycle model of a generated accelerator: the cycle of every accepted input beat and every
emitted output beat, exactly as the RTL does it (design.md §4).

The hardware is a chain of stream blocks (engines, width adapters, argmax). Timing does not
depend on data, so the model tracks only each block's control state — the same registers the
RTL has — and steps the chain cycle by cycle in one Numba kernel:

1. every block's ``valid`` is a function of its registers alone;
2. ``ready`` is resolved from the sink backwards: the sink's ``ready`` is the given pattern,
   a block's input ``ready`` may depend on its registers and, combinationally, on the ``ready``
   of its output;
3. a beat transfers on every link where ``valid & ready``;
4. every block updates its registers from its transfers.

Stream rules at the edges of the chain (the cocotb driver follows the same): the source offers
its next beat at cycle ``c`` when ``in_valid[c]`` is true and holds it valid until it transfers;
the sink drives ``ready = out_ready[c]``. Patterns are true past their end. Cycle 0 is the first
rising edge after reset is released.

Blocks are described by :class:`Block` (a kind and integer parameters); each kind's register
semantics are documented in the module of its RTL (``bnnfab.hdl``) and mirrored here line by
line.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np

from ._nb import jit

__all__ = ["Kind", "Block", "CycleTrace", "simulate_cycles"]


class Kind(enum.IntEnum):
    """Block kinds with a cycle model."""

    FOLDED = 1  # hdl.folded.FoldedDense and engines with identical timing; params: nf, sf
    UNROLLED = 2  # hdl.unrolled.UnrolledDense, hdl.streams.Argmax: a global-enable pipeline; params: latency L (1..62)
    SPLIT = 3  # hdl.streams.WidthAdapter splitting a vector into R chunks; params: R
    GATHER = 4  # hdl.streams.WidthAdapter gathering R chunks into a vector; params: R (>= 2)
    WINDOW = 5  # hdl.window.SlidingWindow / MaxPoolOr; params: H, W, kh, kw, sh, sw, top, left, R, Ho, Wo
    FIFO = 6  # hdl.fifo.StreamFifo; params: depth


# state slots of WINDOW
_W_WY, _W_WX, _W_D, _W_OY, _W_PX, _W_NX, _W_AV, _W_AE, _W_OV = range(9)
# state slots of FOLDED
_F_FULL0, _F_FULL1, _F_WB, _F_WI, _F_RB, _F_FN, _F_FS, _F_A, _F_B, _F_OV = range(10)
_BUBBLE, _NOT_FINAL, _FINAL = 0, 1, 2
_STATE = 16  # state slots per block
_PARAMS = 16  # parameter slots per block


@dataclass(frozen=True)
class Block:
    """One block of the chain: its kind, timing parameters, and a label for reports."""

    kind: Kind
    params: tuple[int, ...]
    label: str = ""

    @property
    def in_beats_per_item(self) -> int:
        """Input beats per item (vector) the block consumes."""
        if self.kind is Kind.FOLDED:
            return self.params[1]
        if self.kind in (Kind.UNROLLED, Kind.SPLIT, Kind.FIFO):
            return 1
        if self.kind is Kind.GATHER:
            return self.params[0]
        if self.kind is Kind.WINDOW:
            return self.params[0] * self.params[1]
        raise NotImplementedError(self.kind)  # pragma: no cover

    @property
    def out_beats_per_item(self) -> int:
        """Output beats per item the block emits."""
        if self.kind is Kind.WINDOW:
            return self.params[9] * self.params[10]
        return self.params[0] if self.kind is Kind.SPLIT else 1

    def __post_init__(self) -> None:
        if not isinstance(self.kind, Kind):
            raise ValueError(f"kind must be a cycle-model Kind, not {self.kind!r}")
        need = {Kind.FOLDED: 2, Kind.UNROLLED: 1, Kind.SPLIT: 1, Kind.GATHER: 1, Kind.WINDOW: 11, Kind.FIFO: 1}[self.kind]
        positive = self.params[:6] + self.params[8:] if self.kind is Kind.WINDOW else self.params
        if len(self.params) != need or any(int(p) < 1 for p in positive):
            raise ValueError(f"{self.kind.name} takes {need} positive parameter(s), not {self.params!r}")
        if self.kind is Kind.UNROLLED and self.params[0] > 62:
            raise ValueError(f"UNROLLED latency must be at most 62 cycles, not {self.params[0]}")
        if self.kind is Kind.WINDOW and (self.params[6] < 0 or self.params[7] < 0):
            raise ValueError(f"WINDOW pads must be >= 0, not {self.params[6:8]!r}")
        if self.kind is Kind.GATHER and self.params[0] < 2:
            raise ValueError(f"GATHER needs R >= 2 chunks (R = 1 is a one-beat SPLIT), not {self.params[0]}")


@dataclass(frozen=True)
class CycleTrace:
    """Cycles of the accepted input beats and of the emitted output beats."""

    accept: np.ndarray
    emit: np.ndarray
    cycles: int = field(default=0)  # cycles simulated: the cycle after the last accepted or emitted beat


@jit(inline="always")
def _win_needed(params, i, y):
    """Whether map row y lies in some window of output rows (else accepted and dropped)."""
    h, kh, sh, top, ho = params[i, 0], params[i, 2], params[i, 4], params[i, 6], params[i, 9]
    return (y + top) % sh < kh and y < (ho - 1) * sh - top + kh


@jit(inline="always")
def _win_step(params, i, st, took, out_ready):
    """One edge of hdl.window.SlidingWindow's control (its docstring, line by line)."""
    h, w, kh, kw = params[i, 0], params[i, 1], params[i, 2], params[i, 3]
    sw, top, left, ho, wo = params[i, 5], params[i, 6], params[i, 7], params[i, 9], params[i, 10]
    sh = params[i, 4]
    wu = (wo - 1) * sw + kw
    wy, wx, d, oy = st[i, _W_WY], st[i, _W_WX], st[i, _W_D], st[i, _W_OY]
    px, nx = st[i, _W_PX], st[i, _W_NX]
    need = _win_needed(params, i, wy)
    ov = st[i, _W_OV] != 0
    en = (not ov) or out_ready
    x = px - left
    ry0 = oy * sh - top
    lo = ry0 if ry0 > 0 else 0
    hi = ry0 + kh if ry0 + kh < h else h
    nreal = hi - lo
    if oy == ho - 1:
        pop = nreal
    else:
        nxt = ry0 + sh if ry0 + sh > 0 else 0
        pop = nreal if nreal < nxt - lo else nxt - lo
    avail = x >= w or d >= nreal or (d == nreal - 1 and need and wx > x)
    row_done = 0
    if took:
        if wx == w - 1:
            st[i, _W_WX] = 0
            st[i, _W_WY] = (wy + 1) % h
            if need:
                row_done = 1
        else:
            st[i, _W_WX] = wx + 1
    released = 0
    if en:
        new_ov = st[i, _W_AV] != 0 and st[i, _W_AE] != 0
        if avail:
            st[i, _W_AV] = 1
            st[i, _W_AE] = 1 if nx == 0 else 0
            if px == wu - 1:
                st[i, _W_PX] = left
                st[i, _W_NX] = kw - 1 - left
                st[i, _W_OY] = (oy + 1) % ho
                released = pop
            else:
                st[i, _W_PX] = px + 1
                st[i, _W_NX] = sw - 1 if nx == 0 else nx - 1
        else:
            st[i, _W_AV] = 0
        st[i, _W_OV] = 1 if new_ov else 0
    st[i, _W_D] = d + row_done - released


@jit
def _run(kinds, params, n_in, n_out, in_valid, out_ready, limit):
    nb = kinds.shape[0]
    st = np.zeros((nb, _STATE), dtype=np.int64)
    ready_in = np.zeros(nb + 1, dtype=np.bool_)  # ready_in[i]: ready of block i's input; [nb]: sink
    valid = np.zeros(nb, dtype=np.bool_)
    xin = np.zeros(nb, dtype=np.bool_)
    xout = np.zeros(nb, dtype=np.bool_)
    accept = np.full(n_in, -1, dtype=np.int64)
    emit = np.full(n_out, -1, dtype=np.int64)
    for i in range(nb):
        if kinds[i] == 5:
            st[i, _W_PX] = params[i, 7]
            st[i, _W_NX] = params[i, 3] - 1 - params[i, 7]
    n_iv, n_or = in_valid.shape[0], out_ready.shape[0]
    holding = False
    sent = 0
    got = 0
    c = 0
    while got < n_out or sent < n_in:
        if c >= limit:
            return accept, emit, -1
        if not holding and sent < n_in and (c >= n_iv or in_valid[c]):
            holding = True
        ready_in[nb] = c >= n_or or out_ready[c]
        # valid from registers
        for i in range(nb):
            k = kinds[i]
            if k == 1:
                valid[i] = st[i, _F_OV] != 0
            elif k == 2:  # v_L
                valid[i] = ((st[i, 0] >> (params[i, 0] - 1)) & 1) != 0
            elif k == 5:
                valid[i] = st[i, _W_OV] != 0
            elif k == 6:  # level != 0
                valid[i] = st[i, 0] != 0
            else:  # split: full, gather: ov (slot 0); chunk counter j in slot 1
                valid[i] = st[i, 0] != 0
        # ready, sink to source
        for i in range(nb - 1, -1, -1):
            k = kinds[i]
            if k == 1:
                ready_in[i] = st[i, _F_FULL0 + st[i, _F_WB]] == 0
            elif k == 2:  # en = ~v_L | o.ready
                ready_in[i] = not valid[i] or ready_in[i + 1]
            elif k == 3:  # not full or (o.ready and j == R - 1)
                ready_in[i] = not valid[i] or (ready_in[i + 1] and st[i, 1] == params[i, 0] - 1)
            elif k == 6:  # level != depth
                ready_in[i] = st[i, 0] != params[i, 0]
            elif k == 5:  # not needed(wy) or d < R
                ready_in[i] = not _win_needed(params, i, st[i, _W_WY]) or st[i, _W_D] < params[i, 8]
            else:  # not ov or o.ready
                ready_in[i] = not valid[i] or ready_in[i + 1]
        # transfers
        xin[0] = holding and ready_in[0]
        for i in range(nb):
            xout[i] = valid[i] and ready_in[i + 1]
            if i + 1 < nb:
                xin[i + 1] = xout[i]
        if xin[0]:
            accept[sent] = c
            sent += 1
            holding = False
        if xout[nb - 1]:
            emit[got] = c
            got += 1
        # register updates
        for i in range(nb):
            k = kinds[i]
            if k == 1:
                nf = params[i, 0]
                sf = params[i, 1]
                out_rdy = ready_in[i + 1]
                stall = st[i, _F_B] == _FINAL and st[i, _F_OV] != 0 and not out_rdy
                set_bank = -1
                if xin[i]:
                    if st[i, _F_WI] == sf - 1:
                        st[i, _F_WI] = 0
                        set_bank = st[i, _F_WB]
                        st[i, _F_WB] ^= 1
                    else:
                        st[i, _F_WI] += 1
                if not stall:
                    b_old = st[i, _F_B]
                    if b_old == _FINAL:
                        st[i, _F_OV] = 1
                    elif xout[i]:
                        st[i, _F_OV] = 0
                    st[i, _F_B] = st[i, _F_A]
                    rb = st[i, _F_RB]
                    if st[i, _F_FULL0 + rb] != 0:
                        fn = st[i, _F_FN]
                        fs = st[i, _F_FS]
                        if fn == nf - 1 and fs == sf - 1:
                            st[i, _F_A] = _FINAL
                            st[i, _F_FN] = 0
                            st[i, _F_FS] = 0
                            st[i, _F_FULL0 + rb] = 0
                            st[i, _F_RB] = rb ^ 1
                        else:
                            st[i, _F_A] = _NOT_FINAL
                            if fs == sf - 1:
                                st[i, _F_FN] = fn + 1
                                st[i, _F_FS] = 0
                            else:
                                st[i, _F_FS] = fs + 1
                    else:
                        st[i, _F_A] = _BUBBLE
                if set_bank >= 0:
                    st[i, _F_FULL0 + set_bank] = 1
            elif k == 2:
                if ready_in[i]:  # en: shift the valid flags, v_1 <- i.valid (= the transfer)
                    mask = (np.int64(1) << params[i, 0]) - 1
                    st[i, 0] = ((st[i, 0] << 1) | (1 if xin[i] else 0)) & mask
            elif k == 5:
                _win_step(params, i, st, xin[i], ready_in[i + 1])
            elif k == 6:
                st[i, 0] += (1 if xin[i] else 0) - (1 if xout[i] else 0)
            elif k == 3:
                if xin[i]:
                    st[i, 0] = 1
                    st[i, 1] = 0
                elif xout[i]:
                    if st[i, 1] == params[i, 0] - 1:
                        st[i, 0] = 0
                        st[i, 1] = 0
                    else:
                        st[i, 1] += 1
            else:
                if xin[i]:
                    if st[i, 1] == params[i, 0] - 1:
                        st[i, 1] = 0
                        st[i, 0] = 1
                    else:
                        st[i, 1] += 1
                        if xout[i]:
                            st[i, 0] = 0
                elif xout[i]:
                    st[i, 0] = 0
        c += 1
    return accept, emit, c


def _pattern(p, what: str) -> np.ndarray:
    if p is None:
        return np.ones(0, dtype=np.bool_)
    a = np.asarray(p)
    if a.ndim != 1 or not (a.dtype == np.bool_ or np.issubdtype(a.dtype, np.integer)):
        raise ValueError(f"{what} must be a 1-D sequence of booleans (one per cycle), got shape {a.shape}, dtype {a.dtype}")
    return a.astype(np.bool_)


def simulate_cycles(
    blocks: list[Block],
    n_items: int,
    in_valid=None,
    out_ready=None,
    limit: int | None = None,
) -> CycleTrace:
    """Cycles of every accepted input beat and emitted output beat of a chain of blocks.

    Parameters
    ----------
    blocks : the chain, source side first
    n_items : input items (vectors or images) streamed in; each is ``blocks[0].in_beats_per_item``
        beats in and ``blocks[-1].out_beats_per_item`` beats out
    in_valid, out_ready : per-cycle patterns (true past their end); None means always
    limit : give up after this many cycles (default: a generous bound from the patterns and the
        blocks' cycles per item)

    Raises
    ------
    ValueError
        On an empty chain, a bad pattern, or a chain that has not finished by ``limit``.
    """
    if not blocks:
        raise ValueError("the chain needs at least one block")
    if isinstance(n_items, bool) or not isinstance(n_items, (int, np.integer)) or n_items < 0:
        raise ValueError(f"n_items must be a whole number >= 0, not {n_items!r}")
    iv = _pattern(in_valid, "in_valid")
    orr = _pattern(out_ready, "out_ready")
    kinds = np.array([int(b.kind) for b in blocks], dtype=np.int64)
    params = np.zeros((len(blocks), _PARAMS), dtype=np.int64)
    for i, b in enumerate(blocks):
        params[i, : len(b.params)] = b.params
    n_in = int(n_items) * blocks[0].in_beats_per_item
    if limit is None:
        per_item = sum(int(np.prod(b.params[:2])) + 8 for b in blocks)
        limit = iv.shape[0] + orr.shape[0] + 64 + 4 * (int(n_items) + 2) * per_item
    n_out = int(n_items) * blocks[-1].out_beats_per_item
    accept, emit, cycles = _run(kinds, params, n_in, n_out, iv, orr, int(limit))
    if cycles < 0:
        raise ValueError(f"the chain did not emit {n_items} items within {limit} cycles")
    return CycleTrace(accept=accept, emit=emit, cycles=int(cycles))
