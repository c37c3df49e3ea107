"""StreamFifo: order and cycles against its reference, under random stalls."""

import numpy as np
import pytest

from ampsim import at, drive_stream, run_bench, stall_pattern
from bnnfab.hdl.fifo import StreamFifo


def fifo_cycle_reference(depth, in_valid_pattern, out_ready_pattern, n_beats):
    """Accept and emit cycles of a StreamFifo (module docstring): the source offers when the
    pattern allows and holds its beat until it transfers; ready follows the pattern."""
    level, offered, sent = 0, False, 0
    accepts, emits = [], []
    c = 0
    while len(emits) < n_beats:
        assert c < 100 * (n_beats + depth) + len(in_valid_pattern) + len(out_ready_pattern)
        if not offered and sent < n_beats and at(in_valid_pattern, c):
            offered = True
        take = offered and level != depth
        give = level != 0 and at(out_ready_pattern, c)
        if take:
            accepts.append(c)
            offered, sent = False, sent + 1
        if give:
            emits.append(c)
        level += int(take) - int(give)
        c += 1
    return accepts, emits


@pytest.mark.parametrize("depth", [1, 2, 5])
@pytest.mark.parametrize("kind", ["none", "random", "bursty"])
def test_order_and_cycles(depth, kind):
    rng = np.random.default_rng(depth * 10 + len(kind))
    beats = [int(v) for v in rng.integers(0, 2**12, 40)]
    in_pat = stall_pattern(rng, kind, 600)
    out_pat = stall_pattern(rng, kind, 600)
    dut = StreamFifo(12, depth)

    async def bench(ctx):
        return await drive_stream(ctx, dut.i_stream, dut.o_stream, beats, len(beats), in_pat, out_pat)

    acc, emit, payloads = run_bench(dut, bench)
    assert payloads == beats
    want_acc, want_emit = fifo_cycle_reference(depth, in_pat, out_pat, len(beats))
    assert (acc, emit) == (want_acc, want_emit)


def test_bad_parameters():
    with pytest.raises(ValueError, match="depth must be a positive integer, not 0"):
        StreamFifo(8, 0)
