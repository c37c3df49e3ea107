"""A cocotb bench for any design with one input stream and one output stream.

Run it with :func:`bnnfab.codegen.rtlsim.run_cocotb`
(``test_module="bnnfab.codegen.tb.smoke_bench"``) and a ``bench_config`` dict:

``payloads`` (list of int, required)
    Beats to offer on the input stream, in order.
``input``, ``output``, ``clock``, ``reset`` (str)
    Port names; default ``"i"``, ``"o"``, ``"clk"``, ``"rst"``.
``valid_stalls``, ``ready_stalls`` (dict, optional)
    :class:`~bnnfab.codegen.tb.streams.StallSpec` as JSON for the input's ``valid`` and the
    output's ``ready``; default no stalls.
``expected_accepted``, ``expected_emitted`` (list of [cycle, payload], optional)
    Beats expected to transfer on the input and the output, in order; a cycle of None checks
    only the payload. Without ``expected_emitted`` the bench waits for ``n_outputs`` beats.
``n_outputs`` (int, optional)
    Output beats to wait for; default ``len(expected_emitted)``, else ``len(payloads)``.
``max_cycles`` (int)
    Give up (and fail) after this many cycles; default 100000.
``drain_cycles`` (int)
    Cycles to keep watching after the last expected beat, to catch extra ones; default 8.
``period_ns``, ``reset_cycles`` (int)
    Clock period (10) and reset length (2).
``check_protocol`` (bool)
    Fail when the output withdraws or changes a beat before it is taken; default True.

The bench writes ``{"accepted": [[cycle, payload], ...], "emitted": [...], "violations": [...],
"cycles": n}`` as the run's output (``RtlResult.output``) before it checks anything, so the caller
sees what happened even when the bench fails.
"""

from __future__ import annotations

import logging

import cocotb

from . import load_bench_config, write_bench_output
from .streams import (
    CycleCounter,
    ReadyDriver,
    Scoreboard,
    StallSpec,
    StreamDriver,
    StreamMonitor,
    StreamPort,
)


@cocotb.test()
async def stream_smoke(dut):
    """Offer the payloads under stalls; check accepted and emitted beats with their cycles."""
    config = load_bench_config()
    log = logging.getLogger("cocotb.tb.smoke")
    payloads = [int(p) for p in config["payloads"]]
    expected_in = config.get("expected_accepted")
    expected_out = config.get("expected_emitted")
    n_outputs = config.get("n_outputs",
                           len(expected_out) if expected_out is not None else len(payloads))
    max_cycles = config.get("max_cycles", 100_000)
    drain = config.get("drain_cycles", 8)

    counter = CycleCounter(getattr(dut, config.get("clock", "clk")),
                           getattr(dut, config.get("reset", "rst")),
                           period_ns=config.get("period_ns", 10))
    in_port = StreamPort.of(dut, config.get("input", "i"))
    out_port = StreamPort.of(dut, config.get("output", "o"))
    driver = StreamDriver(in_port, counter,
                          stalls=StallSpec.from_json(config.get("valid_stalls")).pattern())
    ready = ReadyDriver(out_port, counter,
                        stalls=StallSpec.from_json(config.get("ready_stalls")).pattern())
    in_monitor = StreamMonitor(in_port, counter, check_protocol=False)
    out_monitor = StreamMonitor(out_port, counter,
                                check_protocol=config.get("check_protocol", True))
    scoreboards = []
    if expected_in is not None:
        scoreboards.append(Scoreboard("accepted", expected_in))
        in_monitor.add_callback(scoreboards[-1])
    if expected_out is not None:
        scoreboards.append(Scoreboard("emitted", expected_out))
        out_monitor.add_callback(scoreboards[-1])

    driver.send(payloads)
    for part in (driver, ready, in_monitor, out_monitor):
        part.start()
    await counter.reset(config.get("reset_cycles", 2))

    cycle = counter.cycle()
    while (len(out_monitor.transfers) < n_outputs or not driver.idle) and cycle < max_cycles:
        cycle = await counter.drive_phase()
    finished = cycle < max_cycles
    cycle = await counter.cycles(drain)

    write_bench_output({
        "accepted": [list(t) for t in in_monitor.transfers],
        "emitted": [list(t) for t in out_monitor.transfers],
        "violations": out_monitor.violations,
        "cycles": cycle,
    })
    log.info("%d beats in, %d out, %d cycles", len(in_monitor.transfers),
             len(out_monitor.transfers), cycle)
    problems = []
    for board in scoreboards:
        try:
            board.check()
        except AssertionError as exc:
            problems.append(str(exc))
    violations = out_monitor.violations
    problems += violations[:10]
    if len(violations) > 10:
        problems.append(f"... and {len(violations) - 10} more stream rule violations")
    if not finished:
        problems.append(f"gave up after {max_cycles} cycles: {driver.sent} of {len(payloads)} "
                        f"beats accepted, {len(out_monitor.transfers)} of {n_outputs} emitted")
    assert not problems, "\n".join(problems)
