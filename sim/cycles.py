"""Cycle model of a generated accelerator: the cycle of every accepted input beat and every
emitted output beat, exactly as the RTL does it (design.md §4).

The hardware is a chain of stream blocks (engines, width adapters, argmax). Timing does not
depend on data, so the model tracks only each block's control state — the same registers the
RTL has — and steps the chain cycle by cycle in one Numba kernel (a generic one for any chain;
for long runs, one generated and compiled for the chain itself, see :func:`simulate_cycles`):

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

from numba import carray

from ._nb import jit, stack_i64

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
    kh, sh, top, ho = params[i, 2], params[i, 4], params[i, 6], params[i, 9]
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


@jit(inline="always")
def _valid(k, st, params, i):
    """Block ``i``'s output ``valid`` (kind ``k``): a function of its registers."""
    if k == 1:
        return st[i, _F_OV] != 0
    if k == 2:  # v_L
        return ((st[i, 0] >> (params[i, 0] - 1)) & 1) != 0
    if k == 5:
        return st[i, _W_OV] != 0
    # fifo: level != 0; split: full, gather: ov (slot 0; the chunk counter j is slot 1)
    return st[i, 0] != 0


@jit(inline="always")
def _ready(k, st, params, i, valid, out_ready):
    """Block ``i``'s input ``ready`` from its registers, its ``valid`` and its output's ``ready``."""
    if k == 1:
        return st[i, _F_FULL0 + st[i, _F_WB]] == 0
    if k == 3:  # not full or (o.ready and j == R - 1)
        return not valid or (out_ready and st[i, 1] == params[i, 0] - 1)
    if k == 6:  # level != depth
        return st[i, 0] != params[i, 0]
    if k == 5:  # not needed(wy) or d < R
        return not _win_needed(params, i, st[i, _W_WY]) or st[i, _W_D] < params[i, 8]
    # unrolled: en = ~v_L | o.ready; gather: not ov or o.ready
    return not valid or out_ready


# Register updates at the clock edge, one function per kind: block ``i``'s state from its
# transfers (``xin``, ``xout``) and the ``ready`` of its input and output.


@jit(inline="always")
def _update_folded(st, params, i, xin, xout, in_ready, out_ready):
    nf = params[i, 0]
    sf = params[i, 1]
    stall = st[i, _F_B] == _FINAL and st[i, _F_OV] != 0 and not out_ready
    set_bank = -1
    if xin:
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
        elif xout:
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


@jit(inline="always")
def _update_unrolled(st, params, i, xin, xout, in_ready, out_ready):
    if in_ready:  # en: shift the valid flags, v_1 <- i.valid (= the transfer)
        mask = (np.int64(1) << params[i, 0]) - 1
        st[i, 0] = ((st[i, 0] << 1) | (1 if xin else 0)) & mask


@jit(inline="always")
def _update_split(st, params, i, xin, xout, in_ready, out_ready):
    if xin:
        st[i, 0] = 1
        st[i, 1] = 0
    elif xout:
        if st[i, 1] == params[i, 0] - 1:
            st[i, 0] = 0
            st[i, 1] = 0
        else:
            st[i, 1] += 1


@jit(inline="always")
def _update_gather(st, params, i, xin, xout, in_ready, out_ready):
    if xin:
        if st[i, 1] == params[i, 0] - 1:
            st[i, 1] = 0
            st[i, 0] = 1
        else:
            st[i, 1] += 1
            if xout:
                st[i, 0] = 0
    elif xout:
        st[i, 0] = 0


@jit(inline="always")
def _update_window(st, params, i, xin, xout, in_ready, out_ready):
    _win_step(params, i, st, xin, out_ready)


@jit(inline="always")
def _update_fifo(st, params, i, xin, xout, in_ready, out_ready):
    st[i, 0] += (1 if xin else 0) - (1 if xout else 0)


_UPDATE = {Kind.FOLDED: "_update_folded", Kind.UNROLLED: "_update_unrolled", Kind.SPLIT: "_update_split",
           Kind.GATHER: "_update_gather", Kind.WINDOW: "_update_window", Kind.FIFO: "_update_fifo"}


@jit(inline="always")
def _update(k, st, params, i, xin, xout, in_ready, out_ready):
    if k == 1:
        _update_folded(st, params, i, xin, xout, in_ready, out_ready)
    elif k == 2:
        _update_unrolled(st, params, i, xin, xout, in_ready, out_ready)
    elif k == 3:
        _update_split(st, params, i, xin, xout, in_ready, out_ready)
    elif k == 4:
        _update_gather(st, params, i, xin, xout, in_ready, out_ready)
    elif k == 5:
        _update_window(st, params, i, xin, xout, in_ready, out_ready)
    else:
        _update_fifo(st, params, i, xin, xout, in_ready, out_ready)


@jit(inline="always")
def _init(kinds, params, st):
    """Reset values: zeros, and a window's preloaded left-pad column counter."""
    for i in range(kinds.shape[0]):
        for s in range(_STATE):
            st[i, s] = 0
        if kinds[i] == 5:
            st[i, _W_PX] = params[i, 7]
            st[i, _W_NX] = params[i, 3] - 1 - params[i, 7]


# The stepper keeps the state and the parameters in stack arrays (``carray`` over ``stack_i64``):
# arrays with no reference count, so handing them to the per-block functions costs nothing (with
# heap arrays every call site pays an atomic increment and decrement, 10x slower).
_MAX_BLOCKS = 256  # chains of up to this many blocks run in the generic stepper (2 x 32 KiB of stack)
assert _MAX_BLOCKS * _STATE == 4096 and _MAX_BLOCKS * _PARAMS == 4096


@jit
def _run(kinds_in, params_in, n_in, n_out, in_valid, out_ready, limit):
    """The generic stepper: any chain of up to ``_MAX_BLOCKS`` blocks, a loop over them per phase."""
    nb = kinds_in.shape[0]
    st = carray(stack_i64(4096), (_MAX_BLOCKS, _STATE))
    params = carray(stack_i64(4096), (_MAX_BLOCKS, _PARAMS))
    kinds = carray(stack_i64(_MAX_BLOCKS), (_MAX_BLOCKS,))
    for i in range(nb):
        kinds[i] = kinds_in[i]
        for j in range(_PARAMS):
            params[i, j] = params_in[i, j]
    _init(kinds[:nb], params, st)
    ready_in = np.zeros(nb + 1, dtype=np.bool_)  # ready_in[i]: ready of block i's input; [nb]: sink
    valid = np.zeros(nb, dtype=np.bool_)
    xin = np.zeros(nb + 1, dtype=np.bool_)  # xin[i]: transfer into block i; xin[nb]: out of the chain
    accept = np.full(n_in, -1, dtype=np.int64)
    emit = np.full(n_out, -1, dtype=np.int64)
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
        for i in range(nb):
            valid[i] = _valid(kinds[i], st, params, i)
        for i in range(nb - 1, -1, -1):
            ready_in[i] = _ready(kinds[i], st, params, i, valid[i], ready_in[i + 1])
        xin[0] = holding and ready_in[0]
        for i in range(nb):
            xin[i + 1] = valid[i] and ready_in[i + 1]
        if xin[0]:
            accept[sent] = c
            sent += 1
            holding = False
        if xin[nb]:
            emit[got] = c
            got += 1
        for i in range(nb):
            _update(kinds[i], st, params, i, xin[i], xin[i + 1], ready_in[i], ready_in[i + 1])
        c += 1
    return accept, emit, c


# -- a stepper specialised to one chain ---------------------------------------------------------
#
# The same phases with the loops over blocks unrolled: each block's kind, index and parameters are
# constants of the generated function (``P`` is a global array, which Numba freezes), so LLVM drops
# the kind dispatch and the parameter loads and keeps the blocks' state in registers. Its edge
# logic (source offer, sink, limit) is ``_run``'s line for line: ``_run`` stays a function of this
# file for Numba's disk cache, and handing its arrays to shared helpers would cost a reference
# count per call and cycle (see above), so the few lines are written twice, on purpose.

_SPEC_TEMPLATE = """
def run(n_in, n_out, in_valid, out_ready, limit):
    st = carray(stack_i64({size}), ({nb}, {state}))
    _init(K, P, st)
    accept = np.full(n_in, -1, dtype=np.int64)
    emit = np.full(n_out, -1, dtype=np.int64)
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
        r{nb} = c >= n_or or out_ready[c]
{body}        c += 1
    return accept, emit, c
"""


def _spec_source(kinds: list[int]) -> str:
    nb = len(kinds)
    lines = [f"v{i} = _valid({k}, st, P, {i})" for i, k in enumerate(kinds)]
    lines += [f"r{i} = _ready({kinds[i]}, st, P, {i}, v{i}, r{i + 1})" for i in range(nb - 1, -1, -1)]
    lines.append("x0 = holding and r0")
    lines += [f"x{i + 1} = v{i} and r{i + 1}" for i in range(nb)]
    lines += ["if x0:", "    accept[sent] = c", "    sent += 1", "    holding = False",
              f"if x{nb}:", "    emit[got] = c", "    got += 1"]
    lines += [f"{_UPDATE[Kind(k)]}(st, P, {i}, x{i}, x{i + 1}, r{i}, r{i + 1})" for i, k in enumerate(kinds)]
    body = "".join(" " * 8 + line + "\n" for line in lines)
    return _SPEC_TEMPLATE.format(size=nb * _STATE, nb=nb, state=_STATE, body=body)


_SPECIALISED: dict = {}
#: Simulated cycles from which ``simulate_cycles`` specialises by default: about 4 s of the generic
#: stepper, against ~2 s to compile the specialised one plus ~1.3 s to run it.
SPECIALISE_CYCLES = 100_000_000


def _specialised(kinds: np.ndarray, params: np.ndarray):
    """The compiled stepper of one chain (compiled once per chain and process)."""
    key = (kinds.tobytes(), params.tobytes())
    fn = _SPECIALISED.get(key)
    if fn is None:
        namespace = {"np": np, "carray": carray, "stack_i64": stack_i64, "_init": _init, "_valid": _valid,
                     "_ready": _ready, "K": kinds.copy(), "P": params.copy()}
        namespace.update((name, globals()[name]) for name in _UPDATE.values())
        exec(compile(_spec_source(kinds.tolist()), "<bnnfab cycle model>", "exec"), namespace)
        fn = _SPECIALISED[key] = jit(namespace["run"], cache=False)
    return fn


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
    specialise: bool | None = None,
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
    specialise : step with a kernel compiled for this chain (its loops over blocks unrolled, its
        parameters constants; 1.5-2 s to compile, once per chain and process, then about 3x
        faster) instead of the generic one; the traces are the same. None (default): when the run
        is long enough to pay for the compilation (:data:`SPECIALISE_CYCLES`), or the chain has
        more blocks than the generic stepper holds (256)

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
    if specialise is None:
        slowest = max(int(np.prod(b.params[:2])) if b.kind is Kind.FOLDED else 1 for b in blocks)
        specialise = int(n_items) * slowest >= SPECIALISE_CYCLES
    if specialise or len(blocks) > _MAX_BLOCKS:
        accept, emit, cycles = _specialised(kinds, params)(n_in, n_out, iv, orr, int(limit))
    else:
        accept, emit, cycles = _run(kinds, params, n_in, n_out, iv, orr, int(limit))
    if cycles < 0:
        raise ValueError(f"the chain did not emit {n_items} items within {limit} cycles")
    return CycleTrace(accept=accept, emit=emit, cycles=int(cycles))
