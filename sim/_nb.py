"""Numba settings and primitives shared by every kernel in :mod:`bnnfab.sim`.

njit flags live here, in one place. No ``fastmath`` anywhere: every path is bit-exact integer
arithmetic. ``cache=True`` makes a later process load compiled kernels in milliseconds; set
``NUMBA_CACHE_DIR`` where the installed source folder is read-only.
"""

from __future__ import annotations

from numba import njit, types
from numba.extending import intrinsic

__all__ = ["jit", "pjit", "popcount64"]


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
