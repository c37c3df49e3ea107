"""Test-bench parts shared by the Amaranth HDL tests (``test_hdl_*.py``).

* :func:`stall_pattern` makes per-cycle valid/ready patterns; :func:`at` reads one the way the
  cycle references do (a pattern is a sequence of bool indexed by cycle, True past its end).
* :func:`drive_streams` is the driver and monitor: a source per link that offers its next beat when
  the valid pattern allows and holds it until it transfers, a sink whose ready follows the ready
  pattern, and a record of every accepted and emitted beat's cycle and every output payload.
  Several links run in lock step under the same patterns (to compare two designs cycle by cycle).
* :func:`run_bench` runs one testbench coroutine in Amaranth's simulator; :class:`ResetTop` gives
  a design a reset input a testbench can pulse.
* :func:`beats_of` packs a vector into a folded engine's input beats, :func:`fields_of` cuts a
  payload into lanes; :func:`assert_verilog_deterministic` and
  :func:`assert_hdl_layering` are the checks every HDL module gets.

Cycle ``c`` is the ``c``-th rising edge the testbench awaits, the first being cycle 0, as in the
module docstrings of :mod:`bnnfab.hdl`.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import os
import pathlib
import subprocess
import sys
import textwrap
from collections.abc import Callable, Sequence

from amaranth.hdl import ClockDomain, Elaboratable, Module, Signal
from amaranth.sim import Simulator

__all__ = [
    "at",
    "stall_pattern",
    "fields_of",
    "beats_of",
    "drive_streams",
    "drive_stream",
    "run_bench",
    "ResetTop",
    "assert_verilog_deterministic",
    "assert_hdl_layering",
]


def at(pattern: Sequence, c: int) -> bool:
    """``pattern[c]`` as a bool; True past the end."""
    return True if c >= len(pattern) else bool(pattern[c])


def stall_pattern(rng, kind: str, length: int, *, max_run: int = 40) -> list[bool]:
    """A per-cycle pattern: ``"none"`` (always True), ``"random"`` (True with a random probability
    in [0.3, 0.8)) or ``"bursty"`` (alternating runs of 1 .. ``max_run - 1`` cycles, starting on)."""
    if kind == "none":
        return [True] * length
    if kind == "random":
        return list(rng.random(length) < rng.uniform(0.3, 0.8))
    if kind == "bursty":
        out, on = [], True
        while len(out) < length:
            out += [on] * int(rng.integers(1, max_run))
            on = not on
        return out[:length]
    raise ValueError(f"stall pattern kind must be 'none', 'random' or 'bursty', not {kind!r}")


def fields_of(payload: int, n: int, width: int, is_signed: bool = False) -> list[int]:
    """The ``n`` lanes of ``width`` bits of ``payload``, lane 0 lowest; two's complement when
    ``is_signed``."""
    out = []
    for i in range(n):
        f = (payload >> (i * width)) & ((1 << width) - 1)
        out.append(f - (1 << width) if is_signed and f >> (width - 1) else f)
    return out


def beats_of(x, bits: int, simd: int, rng=None) -> list[int]:
    """The input beats of one vector for a folded engine, written independently of the engines'
    ``encode_input``: element ``k`` at bits ``[(k % simd) * bits, ...)`` of beat ``k // simd``, two's
    complement (``bits=1``: bit 1 is +1, bools or 0/1). Pad elements of the last beat are random
    when ``rng`` (a numpy Generator) is given, for the engine must ignore them; else 0."""
    k = len(x)
    sf = -(-k // simd)
    beats = []
    for j in range(sf):
        v = 0
        for e in range(simd):
            i = j * simd + e
            if i < k:
                field = int(x[i]) % (1 << bits)
            elif rng is not None:
                field = int(rng.integers(0, 1 << bits))
            else:
                field = 0
            v |= field << (e * bits)
        beats.append(v)
    return beats


async def drive_streams(ctx, links, n_out: int, in_pat: Sequence, out_pat: Sequence, *,
                        max_cycles: int | None = None, stop_at: int | None = None,
                        payload_value: Callable = lambda p: p):
    """Drive and monitor ``links``, each ``(source stream, sink stream, beats)``, under the same
    patterns until every sink has taken ``n_out`` beats (or before cycle ``stop_at``).

    Every cycle, each source that holds no beat takes its next one when ``at(in_pat, c)`` (and
    beats remain) and keeps it valid until it transfers; each sink's ready is ``at(out_pat, c)``.
    Valid and ready are left low on return. Returns, per link, ``(accept cycles, emit cycles,
    payloads)``, each payload passed through ``payload_value``. Fails when it takes more than
    ``max_cycles`` cycles (default: generous for stream utilities, by the number of beats).
    """
    links = [(src, sink, list(beats)) for src, sink, beats in links]
    if max_cycles is None:
        max_cycles = len(in_pat) + len(out_pat) + 200 * (max(len(b) for _, _, b in links) + n_out + 10)
    state = [dict(holding=False, sent=0, acc=[], emit=[], pay=[]) for _ in links]
    c = 0
    while any(len(s["emit"]) < n_out for s in state) and (stop_at is None or c < stop_at):
        assert c < max_cycles, "simulation did not finish"
        offer, ready = at(in_pat, c), at(out_pat, c)
        for (src, sink, beats), s in zip(links, state):
            if not s["holding"] and s["sent"] < len(beats) and offer:
                s["holding"] = True
                ctx.set(src.payload, beats[s["sent"]])
            ctx.set(src.valid, s["holding"])
            ctx.set(sink.ready, ready)
        for (src, sink, _), s in zip(links, state):
            if s["holding"] and ctx.get(src.ready):
                s["acc"].append(c)
                s["holding"], s["sent"] = False, s["sent"] + 1
            if ready and ctx.get(sink.valid):
                s["emit"].append(c)
                s["pay"].append(payload_value(ctx.get(sink.payload)))
        await ctx.tick()
        c += 1
    for src, sink, _ in links:
        ctx.set(src.valid, 0)
        ctx.set(sink.ready, 0)
    return [(s["acc"], s["emit"], s["pay"]) for s in state]


async def drive_stream(ctx, src, sink, beats, n_out: int, in_pat: Sequence, out_pat: Sequence, **kwargs):
    """:func:`drive_streams` for one link; returns its ``(accept cycles, emit cycles, payloads)``."""
    [run] = await drive_streams(ctx, [(src, sink, beats)], n_out, in_pat, out_pat, **kwargs)
    return run


def run_bench(top, bench):
    """Simulate ``top`` with a clock on ``sync`` and the testbench ``bench(ctx)`` (a coroutine
    function); returns what ``bench`` returns."""
    result = []

    async def testbench(ctx):
        result.append(await bench(ctx))

    sim = Simulator(top)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    sim.run()
    return result[0]


class ResetTop(Elaboratable):
    """``dut`` in a ``sync`` domain whose synchronous reset is the signal :attr:`rst`."""

    def __init__(self, dut):
        self.dut = dut
        self.rst = Signal()

    def elaborate(self, platform):
        m = Module()
        m.domains.sync = cd = ClockDomain("sync")
        m.d.comb += cd.rst.eq(self.rst)
        m.submodules.dut = self.dut
        return m


def assert_verilog_deterministic(make_verilog: Callable[[], str], hash_seed: str) -> str:
    """``make_verilog()`` (a module-level function of a test module) gives the same text twice in
    this process and once more in another process with ``PYTHONHASHSEED=hash_seed``; returns it."""
    first = make_verilog()
    assert first == make_verilog()
    code = textwrap.dedent(
        f"""
        import sys, warnings
        warnings.simplefilter("ignore")
        sys.path.insert(0, {str(pathlib.Path(__file__).parent)!r})
        from {make_verilog.__module__} import {make_verilog.__name__}
        sys.stdout.write({make_verilog.__name__}())
        """
    )
    env = dict(os.environ, PYTHONHASHSEED=hash_seed)
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert other.stdout == first
    return first


def assert_hdl_layering(module: str) -> None:
    """The HDL module ``module`` imports nothing from ``bnnfab.sim`` or ``bnnfab.codegen``, neither
    in its source nor transitively when imported in a fresh process."""
    mod = importlib.import_module(module)
    source = pathlib.Path(mod.__file__).read_text()
    for node in ast.walk(ast.parse(source)):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            # Relative imports (``from ..sim import x``) are resolved against the module's package.
            names = [importlib.util.resolve_name("." * node.level + (node.module or ""), mod.__package__)]
        for name in names:
            assert not name.startswith(("bnnfab.sim", "bnnfab.codegen")), name
    code = f"import sys, {module}; print(sorted(m for m in sys.modules if m.startswith(('bnnfab.sim', 'bnnfab.codegen'))))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
