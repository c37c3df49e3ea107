"""cocotb benches of the board tops, and the plain-Python settings they run on.

:mod:`bnnfab.boards.tb.uart_bench` plays the host on the UART pins of a
:class:`~bnnfab.boards.top.SimBoardTop` (it imports cocotb; this module does not). Run it with
:func:`bnnfab.codegen.rtlsim.run_cocotb` (``test_module="bnnfab.boards.tb.uart_bench"``) and a
``bench_config`` from :func:`link_bench_config`:

``stream`` (dict)
    The accelerator's :class:`~bnnfab.codegen.top.StreamFormat` as a dict.
``divisor``, ``timeout_bits`` (int)
    Of the :class:`~bnnfab.boards.top.SimBoardTop` under test.
``exchanges`` (list of dict)
    In order: ``name``; ``request`` (hex of the bytes the host sends); optional
    ``framing_at`` (index of a byte sent without its stop bit); ``expect``: ``status`` (int),
    ``cls`` and ``scores`` (None for a NACK).
``max_wait_cycles`` (int, optional)
    How long to wait for each response after the request; default from the sizes.
``gap_cycles`` (int, optional)
    Idle line between a response and the next request; default two bit times.

:func:`run_link_bench` does all of it for a ``SimBoardTop``: Verilog, settings, the run.

The bench writes ``{"exchanges": [{"name", "status", "cls", "scores", "request_cycles",
"response_cycles", "total_cycles"}, ...], "cycles": n, "framing_errors": [...]}`` before it
checks anything.
"""

import os
from collections.abc import Sequence
from dataclasses import asdict, replace
from typing import Any

from ..link import REQUEST_SOF, LinkFormat, Status, encode_frame

__all__ = ["BENCH_MODULE", "ICARUS_GENERATION", "link_bench_config", "run_link_bench", "standard_exchanges"]

BENCH_MODULE = "bnnfab.boards.tb.uart_bench"

#: Icarus language generation for board benches. cocotb's runner compiles with ``-g2012``, under
#: which Icarus applies ``reg x = 0`` declarations before time 0 without an event; yosys's Verilog
#: relies on such an event to run every ``always @*`` block once, so a block that reads only
#: registers which never change after reset (an FSM's outputs in its reset state) stays X for
#: ever. A later ``-g2005`` restores the event. Verilator is not affected.
ICARUS_GENERATION = "-g2005"


def _ok(name: str, request: bytes, cls: int, scores: Sequence[int]) -> dict[str, Any]:
    return {"name": name, "request": request.hex(),
            "expect": {"status": int(Status.OK), "cls": int(cls), "scores": [int(s) for s in scores]}}


def _nack(name: str, request: bytes, status: Status, **extra: Any) -> dict[str, Any]:
    return {"name": name, "request": request.hex(),
            "expect": {"status": int(status), "cls": None, "scores": None}, **extra}


def standard_exchanges(fmt: LinkFormat, images_beats: Sequence[Sequence[int]], classes: Sequence[int],
                       scores: Sequence[Sequence[int]]) -> list[dict[str, Any]]:
    """Good requests for every image with damaged ones in between, each followed by a good one.

    Damage: a flipped payload bit (``BAD_CRC``), a dropped payload byte (``TIMEOUT``), a frame
    of the wrong length with a valid CRC (``BAD_LENGTH``), a character without its stop bit
    (``FRAMING``), and line noise before a good frame (ignored). Needs at least one image; the
    damaged frames are copies of image 0's.
    """
    if not images_beats:
        raise ValueError("standard_exchanges needs at least one image")
    good = [fmt.encode_request(b) for b in images_beats]
    oks = [_ok(f"image {i}", req, c, s) for i, (req, c, s) in enumerate(zip(good, classes, scores))]
    ref = good[0]
    mid = 3 + fmt.payload_bytes // 2  # a payload byte
    flipped = bytearray(ref)
    flipped[mid] ^= 0x10
    dropped = ref[:mid] + ref[mid + 1 :]
    short = encode_frame(REQUEST_SOF, ref[3 : 3 + fmt.payload_bytes - 1])
    damaged = [
        _nack("flipped bit", bytes(flipped), Status.BAD_CRC),
        _nack("dropped byte", dropped, Status.TIMEOUT),
        _nack("wrong length", short, Status.BAD_LENGTH),
        _nack("missing stop bit", ref, Status.FRAMING, framing_at=mid),
    ]
    noisy = dict(oks[0], name="noise then image 0", request=(bytes([0x00, 0xFF, 0x13]) + ref).hex())
    out: list[dict[str, Any]] = []
    for i, ok in enumerate(oks):  # image i follows damage i - 1: the link recovered
        if 0 < i <= len(damaged):
            out.append(damaged[i - 1])
        out.append(ok)
    for bad in damaged[max(0, len(oks) - 1):]:
        out.append(bad)
        out.append(dict(oks[0], name=f"image 0 after {bad['name']}"))
    out.append(noisy)
    return out


def link_bench_config(fmt: LinkFormat, exchanges: list[dict[str, Any]], *, divisor: int, timeout_bits: int,
                      **extra: Any) -> dict[str, Any]:
    """The ``bench_config`` of :mod:`bnnfab.boards.tb.uart_bench` (module docstring)."""
    return {"stream": asdict(fmt.stream_format), "divisor": divisor, "timeout_bits": timeout_bits,
            "exchanges": exchanges, **extra}


def run_link_bench(board: Any, exchanges: list[dict[str, Any]], *, build_dir: str | os.PathLike[str],
                   simulator: Any = "icarus", test_dir: str | os.PathLike[str] | None = None,
                   name: str = "board", timeout: float | None = 600.0) -> Any:
    """Run :mod:`bnnfab.boards.tb.uart_bench` on ``board`` (a ``SimBoardTop``, not yet
    elaborated elsewhere) with ``exchanges``; returns the :class:`~bnnfab.codegen.rtlsim.RtlResult`.

    ``simulator`` is ``"icarus"``, ``"verilator"`` or a ``SimulatorTool``; Icarus gets
    :data:`ICARUS_GENERATION`.
    """
    from amaranth.back import verilog  # noqa: PLC0415 - keep this module light for bench processes

    from ...codegen.rtlsim import SimulatorTool, get_simulator, run_cocotb  # noqa: PLC0415

    tool = simulator if isinstance(simulator, SimulatorTool) else get_simulator(simulator)
    if tool.name == "icarus" and ICARUS_GENERATION not in tool.build_args:
        tool = replace(tool, build_args=(*tool.build_args, ICARUS_GENERATION))
    text = verilog.convert(board, name=name, emit_src=False)
    config = link_bench_config(board.format, exchanges, divisor=board.divisor, timeout_bits=board.timeout_bits)
    return run_cocotb(toplevel=name, test_module=BENCH_MODULE, simulator=tool, verilog_text=text,
                      build_dir=build_dir, test_dir=test_dir, bench_config=config, timeout=timeout)
