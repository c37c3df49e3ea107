"""Numba settings and primitives shared by every kernel in :mod:`bnnfab.sim`.

njit flags live here, in one place. No ``fastmath`` anywhere: every path is bit-exact integer
arithmetic. ``cache=True`` makes a later process load compiled kernels in milliseconds; set
``NUMBA_CACHE_DIR`` where the installed source folder is read-only.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

__all__ = ["GATHER8", "jit", "pjit", "popcount64", "stack_u64", "stack_i64", "stack_i32", "stack_i16", "wide_vectors"]


def jit(fn=None, **overrides):
    """Serial kernel: ``@jit`` or ``@jit(inline="always")``."""
    opts = dict(nogil=True, cache=True, boundscheck=False, error_model="numpy")
    opts.update(overrides)
    return njit(**opts)(fn) if fn is not None else njit(**opts)


def pjit(fn=None, **overrides):
    """Parallel kernel (``prange``). Numba shares one cache entry between a serial and a parallel
    njit of the same Python function, so a parallel kernel must be its own function."""
    opts = dict(nogil=True, cache=True, boundscheck=False, error_model="numpy", parallel=True)
    opts.update(overrides)
    return njit(**opts)(fn) if fn is not None else njit(**opts)


@intrinsic
def popcount64(typingctx, x):
    """LLVM ``ctpop`` on a uint64 (one ``popcnt`` / ``vpopcntq`` lane); returns uint64."""
    if not isinstance(x, types.Integer):
        return None
    sig = types.uint64(types.uint64)

    def codegen(context, builder, signature, args):
        (val,) = args
        val = context.cast(builder, val, signature.args[0], types.uint64)
        return builder.ctpop(val)

    return sig, codegen


def _stack_array(name: str, dtype, doc: str):
    """An intrinsic ``name(n)``: pointer to ``n`` values of the integer type ``dtype`` on the stack."""

    def typer(typingctx, n):
        if not isinstance(n, types.IntegerLiteral) or n.literal_value <= 0:
            return None
        size = n.literal_value

        def codegen(context, builder, signature, args):
            bits = dtype.bitwidth
            with builder.goto_entry_block():
                slot = builder.alloca(ir.ArrayType(ir.IntType(bits), size))
                slot.align = 64
            return builder.bitcast(slot, ir.IntType(bits).as_pointer())

        return types.CPointer(dtype)(n), codegen

    typer.__name__ = typer.__qualname__ = name
    typer.__doc__ = doc
    return intrinsic(typer)


stack_u64 = _stack_array("stack_u64", types.uint64, """Pointer to ``n`` uint64 on the stack (``n`` a compile-time constant), 64-byte aligned.

    Wrap it with ``numba.carray(stack_u64(128), (2, 64))`` for a register tile: unlike an
    ``np.empty`` tile (a heap buffer LLVM must keep in memory, a store per update) a fixed-size
    ``alloca`` in the entry block is promoted to vector registers once the loop over it is
    unrolled. The memory is uninitialised and lives until the function returns.
    """)
stack_i64 = _stack_array(
    "stack_i64", types.int64,
    """:func:`stack_u64` for int64: ``n`` (a compile-time constant) int64 on the stack, 64-byte
    aligned, uninitialised; the integer first-layer kernels' accumulator tile.""",
)
stack_i16 = _stack_array(
    "stack_i16", types.int16,
    """:func:`stack_u64` for int16: ``n`` (a compile-time constant) int16 on the stack, 64-byte
    aligned, uninitialised; the narrowest integer first-layer tile (32 lanes per zmm).""",
)
stack_i32 = _stack_array(
    "stack_i32", types.int32,
    """:func:`stack_u64` for int32: ``n`` (a compile-time constant) int32 on the stack, 64-byte
    aligned, uninitialised; the narrow integer first-layer tile (16 lanes per zmm).""",
)


#: Eight 0/1 bytes b0..b7 of a little-endian uint64 ``u`` become the byte ``sum(b_i << i)`` as the
#: top byte of ``u * GATHER8``: each b_i lands on bit 56 + i, and every other partial product is a
#: distinct power of two below bit 56 or past bit 63, so nothing carries into the top byte. Packs
#: 64 comparison bytes into a word with 8 multiplies.
GATHER8 = np.uint64(0x0102040810204080)


@intrinsic
def wide_vectors(typingctx):
    """Let LLVM vectorise the calling function with 512-bit registers (a no-op statement).

    LLVM's tuning for several AVX-512 CPUs (Skylake-X to Sapphire Rapids) prefers 256-bit vectors,
    which halves the XNOR-popcount rate; clang's ``-mprefer-vector-width=512`` sets these two
    function attributes. Call it in every njit function whose loops should use zmm registers,
    including a ``prange`` body (it becomes its own function). Harmless on CPUs without AVX-512.
    """

    def codegen(context, builder, signature, args):
        attrs = builder.function.attributes
        # llvmlite accepts only enum attributes through .add(); these are LLVM string attributes
        # and print verbatim into the function header.
        set.add(attrs, '"prefer-vector-width"="512"')
        set.add(attrs, '"min-legal-vector-width"="512"')
        return context.get_dummy_value()

    return types.none(), codegen
