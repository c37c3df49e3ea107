"""cocotb bench of a :class:`~bnnfab.boards.top.SimBoardTop`: a host on its UART pins.

A :class:`UartLineDriver` sends request frames on ``uart_rx`` bit by bit (``divisor`` cycles per
bit, 8N1), a :class:`UartLineMonitor` decodes ``uart_tx`` mid-bit into bytes, and
:class:`~bnnfab.boards.link.FrameSplitter` cuts them into response frames, which
:class:`~bnnfab.boards.link.LinkFormat` decodes and the bench compares with the expected status,
class and scores of each exchange; after each response it also checks the LEDs (last class, NACK
LED). Settings: :mod:`bnnfab.boards.tb` (``bench_config``, made by ``link_bench_config``).
"""

import logging

import cocotb
from cocotb.triggers import FallingEdge, ReadOnly

from ...codegen.tb import load_bench_config, write_bench_output
from ...codegen.tb.streams import CycleCounter
from ...codegen.top import StreamFormat
from ..link import RESPONSE_SOF, FrameSplitter, LinkFormat, Status


class UartLineDriver:
    """Drives a UART line the DUT receives; idle high. Call :meth:`send` in a drive phase."""

    def __init__(self, line, counter: CycleCounter, divisor: int):
        self.line = line
        self.counter = counter
        self.divisor = divisor
        self.line.value = 1
        self.log = logging.getLogger("cocotb.tb.uart.host_tx")

    async def send(self, data: bytes, *, framing_at: int | None = None) -> None:
        """Send ``data`` back to back; byte ``framing_at`` gets a stop bit of 0 (a framing error)
        followed by one idle bit time, so that the receiver sees the line high again."""
        for i, b in enumerate(data):
            bits = [0] + [(b >> k) & 1 for k in range(8)] + [0 if i == framing_at else 1]
            for bit in bits:
                self.line.value = bit
                await self.counter.cycles(self.divisor)
            if i == framing_at:
                self.line.value = 1
                await self.counter.cycles(self.divisor)
        self.line.value = 1


class UartLineMonitor:
    """Decodes a UART line the DUT drives: bytes with the cycle of their stop bit sample, and
    the cycles of characters whose stop bit was 0."""

    def __init__(self, line, counter: CycleCounter, divisor: int):
        self.line = line
        self.counter = counter
        self.divisor = divisor
        self.received: list[tuple[int, int]] = []
        self.framing_errors: list[int] = []
        self._taken = 0
        self._task = None
        self.log = logging.getLogger("cocotb.tb.uart.board_tx")

    def start(self) -> None:
        self._task = cocotb.start_soon(self._run())

    def take(self) -> bytes:
        """Bytes received since the last call."""
        new = self.received[self._taken :]
        self._taken = len(self.received)
        return bytes(b for _, b in new)

    async def _bit(self) -> int:
        await ReadOnly()
        return int(self.line.value)

    async def _run(self) -> None:
        d = self.divisor
        await self.counter.first_drive_phase()
        while True:
            if await self._bit():
                await FallingEdge(self.line)  # sleep until a start bit
                await self.counter.drive_phase()
                continue
            await self.counter.cycles(d // 2)  # mid start bit
            if not await self._bit():
                value = 0
                for k in range(8):
                    await self.counter.cycles(d)
                    value |= await self._bit() << k
                await self.counter.cycles(d)
                if await self._bit():
                    self.received.append((self.counter.cycle(), value))
                else:
                    self.framing_errors.append(self.counter.cycle())
                    self.log.error("cycle %d: character %#04x without its stop bit", self.counter.cycle(), value)
            await self.counter.drive_phase()


@cocotb.test()
async def host_link_exchanges(dut):
    """Send every exchange's request, await its response, compare status, class, scores, LEDs."""
    config = load_bench_config()
    log = logging.getLogger("cocotb.tb.link")
    fmt = LinkFormat(StreamFormat(**config["stream"]))
    sf = fmt.stream_format
    d = int(config["divisor"])
    exchanges = config["exchanges"]
    frame_cycles = 10 * d * (fmt.request_bytes + fmt.result_frame_bytes)
    max_wait = int(config.get("max_wait_cycles", 2 * frame_cycles + 2 * config["timeout_bits"] * d + 10_000))
    gap = int(config.get("gap_cycles", 2 * d))

    counter = CycleCounter(dut.clk, dut.rst, period_ns=10)
    host = UartLineDriver(dut.uart_rx, counter, d)
    board = UartLineMonitor(dut.uart_tx, counter, d)
    board.start()
    await counter.reset()

    splitter = FrameSplitter(RESPONSE_SOF, max(fmt.result_body_bytes, 3))
    results, problems = [], []
    last_class = 0
    try:
        leds_port = dut.leds
        n_leds = len(leds_port)
    except AttributeError:  # a board top built with n_leds=0
        leds_port, n_leds = None, 0
    for ex in exchanges:
        name, want = ex["name"], ex["expect"]
        start = counter.cycle()
        await host.send(bytes.fromhex(ex["request"]), framing_at=ex.get("framing_at"))
        sent = counter.cycle()
        frames: list[bytes] = []
        while not frames and counter.cycle() - sent < max_wait:
            await counter.cycles(d)
            frames = splitter.feed(board.take())
        end = counter.cycle()
        record = {"name": name, "request_cycles": sent - start, "response_cycles": end - sent,
                  "total_cycles": end - start, "status": None, "cls": None, "scores": None}
        results.append(record)
        if not frames:
            problems.append(f"{name}: no response within {max_wait} cycles after the request")
            break
        if len(frames) > 1:
            problems.append(f"{name}: {len(frames)} responses to one request")
        status, cls, scores = fmt.decode_response(frames[0])
        record.update(status=int(status), cls=cls, scores=None if scores is None else scores.tolist())
        log.info("%s: %s class %s after %d + %d cycles", name, status.name, cls, sent - start, end - sent)
        if int(status) != want["status"]:
            problems.append(f"{name}: status {status.name}, expected {Status(want['status']).name}")
        elif status is Status.OK:
            if cls != want["cls"] or scores.tolist() != want["scores"]:
                problems.append(f"{name}: class {cls} scores {scores.tolist()}, expected class {want['cls']} "
                                f"scores {want['scores']}")
            last_class = cls
        await ReadOnly()
        leds = int(leds_port.value) if n_leds else 0
        want_leds = (last_class | (int(status != Status.OK) << sf.index_width)) & ((1 << n_leds) - 1)
        if leds != want_leds:
            problems.append(f"{name}: LEDs {leds:#x}, expected {want_leds:#x}")
        await counter.cycles(gap)
    # anything more on the line is a response to nothing
    await counter.cycles(4 * 10 * d)
    extra = splitter.feed(board.take())
    if extra:
        problems.append(f"{len(extra)} unexpected response(s) after the last exchange")
    if board.framing_errors:
        problems.append(f"the board sent characters without stop bits at cycles {board.framing_errors[:5]}")

    write_bench_output({"exchanges": results, "cycles": counter.cycle(), "framing_errors": board.framing_errors})
    assert not problems, "\n".join(problems[:20])
