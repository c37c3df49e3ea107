"""The board side: frames and CRC in Python, the UART and the host link in Amaranth's simulator, the
host client against a model board, the board tops on a platform, and the whole board top
(accelerator, link, UART) in cocotb on Icarus and Verilator, bit-exact against the simulator."""

from __future__ import annotations

import ast
import gc
import pathlib
import sys
import warnings

import numpy as np
import pytest
from amaranth.hdl import Elaboratable, Module, Signal, UnusedElaboratable
from amaranth.sim import Simulator

from ampsim import assert_verilog_deterministic
from ptyboard import board_on_pty
from bnnfab.boards import link as link_mod
from bnnfab.boards import uart as uart_mod
from bnnfab.boards.link import (
    REQUEST_SOF,
    RESPONSE_SOF,
    FrameSplitter,
    HostClient,
    HostLink,
    LinkError,
    LinkFormat,
    LinkTimeout,
    NackError,
    Status,
    crc16,
    encode_frame,
    parse_frame,
)
from bnnfab.boards.tb import run_link_bench, standard_exchanges
from bnnfab.boards.top import BoardTop, SimBoardTop
from bnnfab.boards.uart import UartRx, UartTx, uart_divisor
from bnnfab.codegen.config import GenConfig
from bnnfab.codegen.generate import generate
from bnnfab.codegen.top import StreamFormat
from bnnfab.models import Dense, InputSpec, Model, zoo
from bnnfab.models.datasets import load_dataset
from bnnfab.sim.functional import simulate

# A small format with odd widths: 12-bit beats (2 bytes each), 3 beats, 2-bit class, 3 x 5-bit
# signed scores (17-bit output beats).
SMALL = StreamFormat(in_width=12, beats_per_image=3, elements_per_beat=3, element_bits=4, k=9, index_width=2,
                     score_width=5, score_signed=True, n_classes=3, score_is_popcount=False, k_last=9)


def _small_model(seed: int = 0) -> Model:
    rng = np.random.default_rng(seed)
    return Model(
        InputSpec((13,), bits=6),
        (Dense(rng.random((9, 13)) < 0.5, rng.integers(-40, 41, 9)), Dense(rng.random((5, 9)) < 0.5)),
    )


@pytest.fixture(scope="module")
def default_design():
    return generate(zoo.load("digits-ecoc-mlp"), GenConfig(target_cycles=64))


# --- CRC and frames ------------------------------------------------------------------------------


def test_crc16_is_ccitt_false_and_a_frame_leaves_residue_zero():
    assert crc16(b"123456789") == 0x29B1
    assert crc16(b"") == 0xFFFF
    data = bytes(range(200))
    assert crc16(data + crc16(data).to_bytes(2, "big")) == 0
    assert crc16(data[100:], crc16(data[:100])) == crc16(data)


class _CrcStep(Elaboratable):
    def __init__(self):
        self.crc, self.byte, self.out = Signal(16), Signal(8), Signal(16)

    def elaborate(self, platform):
        m = Module()
        m.d.comb += self.out.eq(link_mod._crc16_step(self.crc, self.byte))
        return m


def test_crc16_gateware_step_equals_python():
    dut = _CrcStep()
    rng = np.random.default_rng(1)
    cases = [(0xFFFF, 0), (0, 0xFF), (0x8000, 1)] + [(int(c), int(b)) for c, b in zip(rng.integers(0, 1 << 16, 60), rng.integers(0, 256, 60))]

    async def bench(ctx):
        for crc, byte in cases:
            ctx.set(dut.crc, crc)
            ctx.set(dut.byte, byte)
            assert ctx.get(dut.out) == crc16([byte], crc), (crc, byte)

    sim = Simulator(dut)
    sim.add_testbench(bench)
    sim.run()


def test_link_format_refuses_images_too_large_for_a_frame():
    huge = StreamFormat(**{**SMALL.__dict__, "in_width": 8 * 4096, "beats_per_image": 16})
    with pytest.raises(ValueError, match="an image of 65536 bytes does not fit a frame"):
        LinkFormat(huge)
    with pytest.raises(TypeError, match="expected a LinkFormat, a StreamFormat or a design with .format, not int"):
        LinkFormat.of(3)


def test_request_frame_layout_is_pinned():
    lf = LinkFormat(SMALL)
    frame = lf.encode_request([0x123, 0x456, 0x789])
    # SOF, LEN=6 (LE), beats as 2 LE bytes each, CRC-16 big-endian over LEN..payload
    assert frame.hex() == "a5" "0600" "2301" "5604" "8907" + crc16(bytes.fromhex("0600230156048907")).to_bytes(2, "big").hex()
    assert lf.decode_request(frame) == [0x123, 0x456, 0x789]
    assert (lf.payload_bytes, lf.request_bytes, lf.class_bytes, lf.score_bytes, lf.out_width) == (6, 11, 1, 2, 17)


@pytest.mark.parametrize(("beats", "message"), [
    ([1, 2], "an image is 3 input beats for this design, got 2"),
    ([1, 2, 1 << 12], "input beat 2 must be an unsigned 12-bit integer, not 0x1000"),
    ([1, -1, 0], "input beat 1 must be an unsigned 12-bit integer"),
])
def test_request_rejects_beats_that_do_not_fit(beats, message):
    with pytest.raises(ValueError, match=message):
        LinkFormat(SMALL).encode_request(beats)


def test_responses_round_trip_signed_and_popcount_scores(default_design):
    lf = LinkFormat(SMALL)
    frame = lf.encode_result(lf.result_payload(2, [-16, 15, 0]))
    assert frame[0] == RESPONSE_SOF and frame[3] == Status.OK
    status, cls, scores = lf.decode_response(frame)
    assert (status, cls, scores.tolist()) == (Status.OK, 2, [-16, 15, 0])

    dl = LinkFormat.of(default_design)  # scores 2p - K of a 128-input binary layer
    assert (dl.payload_bytes, dl.result_body_bytes) == (64, 12)
    want = [-128, 128, 0, 2, -2, 10, 12, 14, 16, -18]
    resp = dl.decode_response(dl.encode_result(dl.result_payload(6, want)))
    assert resp.cls == 6 and resp.scores.tolist() == want

    nack = lf.encode_nack(Status.TIMEOUT)
    assert lf.decode_response(nack) == (Status.TIMEOUT, None, None)
    assert lf.nack_expected_length(nack) == 6
    assert "byte was lost" in Status.TIMEOUT.description


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda f: f[:-1] + bytes([f[-1] ^ 1]), "frame CRC is 0x[0-9a-f]{4}, its bytes give 0x[0-9a-f]{4}: the frame was damaged"),
    (lambda f: bytes([REQUEST_SOF]) + f[1:], "a frame must start with 0x5a, not 0xa5"),
    (lambda f: f[:-3] + f[-2:], r"frame LEN says 4 body bytes, so 9 bytes in all, but it has 8"),
    (lambda f: encode_frame(RESPONSE_SOF, bytes([9, 0, 0])), "unknown response status 0x09"),
    (lambda f: encode_frame(RESPONSE_SOF, bytes([0, 1, 2])), "carries 4 body bytes, got 3: the board runs a different design"),
    (lambda f: encode_frame(RESPONSE_SOF, bytes([0, 3, 0, 0])), "class 3 is out of range for 3 classes"),
])
def test_damaged_or_foreign_responses_are_refused(mutate, message):
    lf = LinkFormat(SMALL)
    with pytest.raises(LinkError, match=message):
        lf.decode_response(mutate(lf.encode_result(lf.result_payload(1, [1, 2, 3]))))


def test_frame_splitter_resyncs_on_noise_false_starts_and_damage():
    lf = LinkFormat(SMALL)
    a = lf.encode_result(lf.result_payload(0, [1, 1, 1]))
    b = lf.encode_nack(Status.BAD_CRC)
    damaged = bytearray(lf.encode_result(lf.result_payload(1, [2, 2, 2])))
    damaged[5] ^= 0x40
    stream = bytes([0x00, RESPONSE_SOF, 0xFF, 0xFF, 0x13]) + a + bytes(damaged) + b
    split = FrameSplitter(RESPONSE_SOF, max_body=lf.result_body_bytes)
    frames = []
    for i in range(0, len(stream), 3):  # arrives in pieces
        frames += split.feed(stream[i : i + 3])
    assert frames == [a, b]
    assert split.discarded == 5 + len(damaged) and split.pending == 0
    assert parse_frame(b, RESPONSE_SOF) == bytes([Status.BAD_CRC, 6, 0])


# --- UART ---------------------------------------------------------------------------------------


def test_uart_divisor_checks_the_baud_error():
    assert uart_divisor(12e6, 115200) == 104
    assert uart_divisor(48e6, 1_000_000) == 48
    with pytest.raises(ValueError, match="needs at least 4"):
        uart_divisor(1e6, 500_000)
    with pytest.raises(ValueError, match=r"divisor 4 gives 250000 baud, 8.5% off"):
        uart_divisor(1e6, 230400)


def _run(dut, bench):
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()


def _char(byte: int, stop: int = 1) -> list[int]:
    return [0] + [(byte >> k) & 1 for k in range(8)] + [stop]


@pytest.mark.parametrize("divisor", [4, 7])
def test_uart_tx_puts_exact_bits_back_to_back(divisor):
    dut = UartTx(divisor)
    data = [0xA5, 0x00, 0xFF, 0x3C]
    line, accepted = [], []

    async def bench(ctx):
        sent = 0
        for c in range(12 * divisor * len(data)):
            ctx.set(dut.i_stream.valid, sent < len(data))
            ctx.set(dut.i_stream.payload, data[min(sent, len(data) - 1)])
            line.append(ctx.get(dut.line))
            if sent < len(data) and ctx.get(dut.i_stream.ready):
                accepted.append(c)
                sent += 1
            await ctx.tick()

    _run(dut, bench)
    c0 = accepted[0]
    assert accepted == [c0 + 10 * divisor * i for i in range(len(data))]  # no gap between characters
    want = [1] * (c0 + 1) + [bit for b in data for bit in _char(b) for _ in range(divisor)]
    assert line[: len(want)] == want
    assert set(line[len(want):]) == {1}


def _drive_line(dut, wave, ready=None, extra=40):
    """Drive ``dut.line`` with ``wave`` (one level per cycle); record bytes, framing errors and
    overruns (cycle, value)."""
    got, framing, overrun = [], [], []

    async def bench(ctx):
        for c in range(len(wave) + extra):
            ctx.set(dut.line, wave[c] if c < len(wave) else 1)
            r = True if ready is None else ready(c)
            ctx.set(dut.o_stream.ready, r)
            if ctx.get(dut.o_stream.valid) and r:
                got.append((c, ctx.get(dut.o_stream.payload)))
            if ctx.get(dut.framing_error):
                framing.append(c)
            if ctx.get(dut.overrun):
                overrun.append(c)
            await ctx.tick()

    _run(dut, bench)
    return got, framing, overrun


def test_uart_rx_samples_each_bit_in_its_middle():
    # Each bit shows its value only in a 3-cycle window around the middle, the opposite
    # elsewhere: only mid-bit sampling reads the bytes right. (The start bit is 0 for its first
    # cycle so that the receiver starts at the bit's beginning.)
    d = 16
    wave = [1] * 5
    for byte in (0x5A, 0x0F, 0xC3):
        for i, bit in enumerate(_char(byte)):
            cells = [1 - bit] * d
            cells[d // 2 - 1 : d // 2 + 2] = [bit] * 3
            if i == 0:
                cells[0] = 0
            if i == 9:  # the stop bit stays high: the receiver is idle again from its middle
                cells = [1] * d
            wave += cells
    wave += [1] * d
    got, framing, _ = _drive_line(UartRx(d), wave)
    assert [b for _, b in got] == [0x5A, 0x0F, 0xC3] and not framing
    # offered 2 (synchroniser) + d//2 + 9 d cycles after the start edge, plus the register
    assert got[0][0] == 5 + 2 + d // 2 + 9 * d + 1


@pytest.mark.parametrize("skew", [-0.04, 0.0, 0.04])
def test_uart_rx_tolerates_a_few_percent_of_baud_error(skew):
    d = 16
    period = d * (1 + skew)
    bits = [1, 1] + [bit for b in range(0, 256, 37) for bit in _char(b)] + [1]
    wave = [bits[int(c / period)] for c in range(int(len(bits) * period))]
    got, framing, _ = _drive_line(UartRx(d), wave)
    assert [b for _, b in got] == list(range(0, 256, 37)) and not framing


def test_uart_rx_framing_error_break_glitch_and_overrun():
    d = 8
    stretch = lambda bits: [v for v in bits for _ in range(d)]  # noqa: E731
    wave = stretch([1, 1] + _char(0x41, stop=0))  # framing error
    wave += [0] * (30 * d)  # a break: one error only
    wave += stretch([1, 1]) + [0] + [1] * (2 * d)  # a 1-cycle glitch: nothing
    wave += stretch(_char(0x42) + _char(0x43) + [1])  # two bytes while the sink is not ready
    got, framing, overrun = _drive_line(UartRx(d), wave, ready=lambda c: c > len(wave))
    assert len(framing) == 1
    assert len(overrun) == 1
    assert [b for _, b in got] == [0x42]  # the first byte was held, the second dropped


class _Loopback(Elaboratable):
    def __init__(self, tx_divisor, rx_divisor):
        self.tx, self.rx = UartTx(tx_divisor), UartRx(rx_divisor)

    def elaborate(self, platform):
        m = Module()
        m.submodules.tx, m.submodules.rx = self.tx, self.rx
        m.d.comb += self.rx.line.eq(self.tx.line)
        return m


def test_uart_loopback_with_three_percent_clock_mismatch():
    dut = _Loopback(33, 32)
    data = [int(b) for b in np.random.default_rng(2).integers(0, 256, 24)]
    got = []

    async def bench(ctx):
        sent = 0
        for _ in range(34 * 10 * (len(data) + 1)):
            ctx.set(dut.tx.i_stream.valid, sent < len(data))
            ctx.set(dut.tx.i_stream.payload, data[min(sent, len(data) - 1)])
            ctx.set(dut.rx.o_stream.ready, 1)
            if sent < len(data) and ctx.get(dut.tx.i_stream.ready):
                sent += 1
            if ctx.get(dut.rx.o_stream.valid):
                got.append(ctx.get(dut.rx.o_stream.payload))
            assert not ctx.get(dut.rx.framing_error)
            await ctx.tick()

    _run(dut, bench)
    assert got == data


# --- the host link in Amaranth's simulator ------------------------------------------------------


def _fake_result(lf: LinkFormat, beats: list[int]) -> int:
    """What the bench's stand-in accelerator answers for an image: a function of every beat."""
    h = 0
    for b in beats:
        h = (h * 0x9E3779B1 + b + 1) & ((1 << 64) - 1)
    sf = lf.stream_format
    return (h % sf.n_classes) | ((h >> 8) & ((1 << (lf.out_width - sf.index_width)) - 1)) << sf.index_width


def run_link(lf: LinkFormat, events, *, timeout=24, n_responses, seed=0, stall=0.3, latency=5, max_cycles=20_000):
    """Drive a HostLink: ``events`` are ``("byte", value, gap)``, ``("framing", gap)`` or
    ``("overrun", gap)`` on the receive side (``gap`` idle cycles before); the bench plays the
    accelerator (``_fake_result`` after ``latency`` cycles) and the UART transmitter, stalling
    both at random. Returns images (lists of beats), frames sent, and the cycle of each frame's
    first byte and of the last received byte."""
    dut = HostLink(lf, timeout_cycles=timeout)
    rng = np.random.default_rng(seed)
    acc_ready = rng.random(max_cycles) >= stall
    tx_ready = rng.random(max_cycles) >= stall
    out = {"images": [], "tx": [], "tx_cycles": [], "last_rx": None}

    async def bench(ctx):
        queue, ev, wait, beats, results = list(events), None, 0, [], []
        split = FrameSplitter(RESPONSE_SOF)
        frames = 0
        for c in range(max_cycles):
            if ev is None and queue:
                ev, wait = queue.pop(0), None
                wait = ev[-1]
            kind = ev[0] if ev is not None and wait == 0 else None
            ctx.set(dut.rx.valid, kind == "byte")
            ctx.set(dut.rx.payload, ev[1] if kind == "byte" else 0)
            ctx.set(dut.rx_framing, kind == "framing")
            ctx.set(dut.rx_overrun, kind == "overrun")
            if kind in ("framing", "overrun") or (kind == "byte" and ctx.get(dut.rx.ready)):
                ev = None
                out["last_rx"] = c
            elif ev is not None and wait:
                wait -= 1
            ctx.set(dut.acc_in.ready, bool(acc_ready[c]))
            if ctx.get(dut.acc_in.valid) and acc_ready[c]:
                beats.append(ctx.get(dut.acc_in.payload))
                if len(beats) == lf.stream_format.beats_per_image:
                    out["images"].append(beats)
                    results.append((c + latency, _fake_result(lf, beats)))
                    beats = []
            offer = bool(results) and results[0][0] <= c
            ctx.set(dut.acc_out.valid, offer)
            ctx.set(dut.acc_out.payload, results[0][1] if offer else 0)
            if offer and ctx.get(dut.acc_out.ready):
                results.pop(0)
            ctx.set(dut.tx.ready, bool(tx_ready[c]))
            if ctx.get(dut.tx.valid) and tx_ready[c]:
                byte = ctx.get(dut.tx.payload)
                if byte == RESPONSE_SOF and not split.pending:
                    out["tx_cycles"].append(c)
                out["tx"] += split.feed(bytes([byte]))
                if len(out["tx"]) > frames:
                    frames = len(out["tx"])
            if len(out["tx"]) >= n_responses and not queue and ev is None:
                break
            await ctx.tick()
        out["end"] = c

    _run(dut, bench)
    return out


def _bytes(data: bytes, gap: int = 0):
    return [("byte", b, gap) for b in data]


def test_link_feeds_checked_images_and_frames_results_under_stalls():
    lf = LinkFormat(SMALL)
    rng = np.random.default_rng(3)
    images = [[int(v) for v in rng.integers(0, 1 << 12, 3)] for _ in range(4)]
    events = []
    for i, img in enumerate(images):
        events += _bytes(lf.encode_request(img), gap=i)  # inter-byte gaps below the timeout
    out = run_link(lf, events, n_responses=4)
    assert out["images"] == images
    assert out["tx"] == [lf.encode_result(_fake_result(lf, img)) for img in images]


@pytest.mark.parametrize(("damage", "status"), [
    ("flip", Status.BAD_CRC),
    ("drop", Status.TIMEOUT),
    ("length", Status.BAD_LENGTH),
    ("framing", Status.FRAMING),
    ("overrun", Status.OVERRUN),
])
def test_link_rejects_a_damaged_frame_then_recovers(damage, status):
    lf = LinkFormat(SMALL)
    good, other = [0x111, 0x222, 0x333], [0xABC, 0x0, 0xFFF]
    frame = bytearray(lf.encode_request(good))
    events = _bytes(b"\x00\x13")  # noise before a frame is ignored
    if damage == "flip":
        frame[4] ^= 0x08
        events += _bytes(frame)
    elif damage == "drop":
        events += _bytes(frame[:6] + frame[7:])
    elif damage == "length":
        events += _bytes(encode_frame(REQUEST_SOF, bytes(frame[3:-3])))
    else:
        events += _bytes(frame[:5]) + [(damage, 3)] + _bytes(frame[5:])
    timeout = 24
    events += [("byte", b, 2 * timeout if i == 0 else 0) for i, b in enumerate(lf.encode_request(other))]
    out = run_link(lf, events, timeout=timeout, n_responses=2, seed=4)
    assert out["images"] == [other], "nothing of the damaged frame may reach the accelerator"
    assert out["tx"] == [lf.encode_nack(status), lf.encode_result(_fake_result(lf, other))]


def test_link_sends_a_nack_only_after_the_line_is_quiet():
    lf = LinkFormat(SMALL)
    frame = bytearray(lf.encode_request([1, 2, 3]))
    frame[5] ^= 1
    timeout = 40
    out = run_link(lf, _bytes(frame, gap=timeout - 5), timeout=timeout, n_responses=1, stall=0.0)
    assert out["tx"] == [lf.encode_nack(Status.BAD_CRC)]
    # the last byte at L reloads the timer; it runs out timeout cycles later, then REPORT, IDLE
    # of the transmitter takes it, and the SOF goes out
    quiet = out["tx_cycles"][0] - out["last_rx"]
    assert timeout <= quiet <= timeout + 4


def test_link_stream_ports_fit_the_accelerator(default_design):
    with warnings.catch_warnings():  # built only to look at its ports
        warnings.simplefilter("ignore", UnusedElaboratable)
        link = HostLink(default_design, timeout_cycles=100)
        ports = [p.signature.members["payload"].shape for p in (link.acc_in, link.acc_out)]
        del link
        gc.collect()
    top = default_design.top
    assert ports == [p.signature.members["payload"].shape for p in (top.i_stream, top.o_stream)]
    _construct_fails(ValueError, "timeout_cycles must be a positive integer, not 0", HostLink, default_design,
                     timeout_cycles=0)


# --- the host client against a model board ------------------------------------------------------


class ModelBoard:
    """A port object that answers like a board: requests it knows get their result, the
    ``script`` may NACK or ignore requests first (``"ok"``, ``"silent"`` or a Status)."""

    def __init__(self, lf: LinkFormat, answers: dict[bytes, int], script=()):
        self.lf, self.answers, self.script = lf, answers, list(script)
        self.split = FrameSplitter(REQUEST_SOF)
        self.out = bytearray()
        self.requests = 0

    def write(self, data):
        for frame in self.split.feed(data):
            self.requests += 1
            action = self.script.pop(0) if self.script else "ok"
            if action == "silent":
                continue
            if isinstance(action, Status):
                self.out += self.lf.encode_nack(action)
            elif frame in self.answers:
                self.out += b"\x00" + self.lf.encode_result(self.answers[frame])  # a stray byte too
            else:
                self.out += self.lf.encode_nack(Status.BAD_LENGTH)

    def read(self, n):
        chunk = bytes(self.out[:n])
        del self.out[:n]
        return chunk

    def reset_input_buffer(self):
        self.out.clear()


@pytest.fixture(scope="module")
def digits_reference(default_design):
    x = load_dataset("digits", "test").x[:6]
    ref = simulate(zoo.load("digits-ecoc-mlp"), x)
    lf = LinkFormat.of(default_design)
    answers = {lf.encode_image(img): lf.result_payload(c, s) for img, c, s in zip(x, ref.classes, ref.scores)}
    return x, ref, lf, answers


def test_host_client_classifies_and_times(digits_reference):
    x, ref, lf, answers = digits_reference
    board = ModelBoard(lf, answers)
    client = HostClient(board, lf, timeout=0.5)
    classes, scores = client.classify(x)
    np.testing.assert_array_equal(classes, ref.classes)
    np.testing.assert_array_equal(scores, ref.scores)
    assert client.stats.images == len(x) and client.stats.requests == len(x)
    assert client.stats.images_per_second > 0
    assert lf.max_images_per_second(115200) == pytest.approx(115200 / (10 * (69 + 17)))


def test_host_client_retries_nacks_and_lost_responses(digits_reference):
    x, ref, lf, answers = digits_reference
    board = ModelBoard(lf, answers, script=[Status.BAD_CRC, "silent", "ok"])
    client = HostClient(board, lf, timeout=0.05, retries=2, board_timeout_bits=10)
    classes, _ = client.classify(x[:2])
    np.testing.assert_array_equal(classes, ref.classes[:2])
    assert (client.stats.requests, client.stats.nacks, client.stats.timeouts) == (4, 1, 1)


def test_host_client_errors_say_why(digits_reference):
    x, _, lf, answers = digits_reference
    board = ModelBoard(lf, answers, script=[Status.FRAMING] * 3)
    with pytest.raises(NackError, match=r"image 0: the board rejected the request: FRAMING \(.*stop bit.*\) - 3 attempt") as err:
        HostClient(board, lf, timeout=0.05).classify(x[:1])
    assert err.value.status is Status.FRAMING and err.value.index == 0

    board = ModelBoard(lf, answers, script=["silent"] * 2)
    with pytest.raises(LinkTimeout, match=r"image 0: no valid response within 0.03 s, 2 attempt\(s\); check the port, the baud rate \(9600\)"):
        HostClient(board, lf, baudrate=9600, timeout=0.03, retries=1, board_timeout_bits=10).classify(x[:1])

    other = LinkFormat(StreamFormat(**{**lf.stream_format.__dict__, "beats_per_image": 2, "k": 128}))
    with pytest.raises(NackError, match="the board expects 64 image bytes per request, this host sends 128"):
        HostClient(ModelBoard(lf, answers), other, timeout=0.05).classify(np.zeros((1, 128)))

    with pytest.raises(ValueError, match=r"value 256 at index \(0, 3\) does not fit 8-bit inputs"):
        HostClient(board, lf).classify(np.array([[0, 0, 0, 256] + [0] * 60]))
    with pytest.raises(ValueError, match="images must hold 8-bit integers, got dtype float64 with non-integer"):
        HostClient(board, lf).classify(np.full((1, 64), 0.5))
    with pytest.raises(TypeError, match="serial_port must be a device path or have read.. and write.., not object"):
        HostClient(object(), lf)


def test_host_client_over_a_serial_port(digits_reference):
    """pyserial on a pseudo-terminal whose other end is the model board."""
    pytest.importorskip("serial", reason="pyserial is not installed (the 'board' extra)")
    x, ref, lf, answers = digits_reference
    board = ModelBoard(lf, answers, script=[Status.OVERRUN])
    with board_on_pty(board, poll=0.01) as tty:
        with HostClient(tty, lf, baudrate=115200, timeout=1.0) as client:
            classes, scores = client.classify(x[:3])
    np.testing.assert_array_equal(classes, ref.classes[:3])
    np.testing.assert_array_equal(scores, ref.scores[:3])
    assert (client.stats.requests, client.stats.nacks) == (4, 1)


def test_host_client_names_the_missing_pyserial(monkeypatch, digits_reference):
    monkeypatch.setitem(sys.modules, "serial", None)
    with pytest.raises(LinkError, match=r"opening '/dev/ttyUSB9' needs pyserial: `pip install 'pyserial>=3.5'`"):
        HostClient("/dev/ttyUSB9", digits_reference[2])


# --- board tops ---------------------------------------------------------------------------------


def test_only_the_board_top_requests_pins():
    for mod in (uart_mod, link_mod):
        tree = ast.parse(pathlib.Path(mod.__file__).read_text())
        calls = [n for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr == "request"]
        assert not calls, f"{mod.__name__} must not touch pins"


def _tiny_ice40():
    from amaranth.build import Attrs, Clock, Pins, Resource, Subsignal
    from amaranth.vendor import LatticeICE40Platform

    class TinyIce40(LatticeICE40Platform):
        device, package, default_clk = "iCE40UP5K", "SG48", "clk12"
        resources = [
            Resource("clk12", 0, Pins("35", dir="i"), Clock(12e6), Attrs(IO_STANDARD="SB_LVCMOS")),
            Resource("led", 0, Pins("11", dir="o"), Attrs(IO_STANDARD="SB_LVCMOS")),
            Resource("led", 1, Pins("37", dir="o"), Attrs(IO_STANDARD="SB_LVCMOS")),
            Resource("uart", 0, Subsignal("rx", Pins("6", dir="i")), Subsignal("tx", Pins("9", dir="o")),
                     Attrs(IO_STANDARD="SB_LVTTL")),
        ]
        connectors = []

    return TinyIce40()


def test_board_top_requests_uart_and_leds_on_a_platform():
    design = generate(_small_model(), GenConfig(target_cycles=16))
    top = BoardTop(design.top, baud=115200)
    plan = _tiny_ice40().build(top, do_build=False)
    pcf = plan.files["top.pcf"]
    for pin in ("uart_0__rx__io 6", "uart_0__tx__io 9", "led_0__io 11", "led_1__io 37"):
        assert f"set_io {pin}" in pcf
    assert top.core.divisor == 104 and top.core.n_leds == 2  # 12 MHz / 115200; the platform has 2 LEDs
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnusedElaboratable)
        with pytest.raises(ValueError, match="BoardTop needs a platform .* simulate SimBoardTop instead"):
            BoardTop(design.top).elaborate(None)
        gc.collect()


def small_board_verilog() -> str:
    """Verilog of a small board top (module level: the determinism check imports it)."""
    from amaranth.back import verilog

    design = generate(_small_model(), GenConfig(target_cycles=16))
    return verilog.convert(SimBoardTop(design.top, divisor=6, timeout_bits=40), name="board", emit_src=False)


def test_sim_board_top_verilog_is_deterministic_with_plain_ports():
    text = assert_verilog_deterministic(small_board_verilog, "11")
    assert "module board(clk, rst, uart_tx, leds, uart_rx);" in text


def _construct_fails(exc, match, cls, *args, **kwargs):
    """``cls(...)`` raises; Amaranth tracks an Elaboratable from ``__new__`` and warns when it is
    never used, also when ``__init__`` raised: collect the half-made object here."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnusedElaboratable)
        with pytest.raises(exc, match=match):
            cls(*args, **kwargs)
        gc.collect()


def test_board_top_clock_hook_makes_the_domain_and_sets_the_divisor():
    from amaranth.hdl import ClockDomain, ClockSignal
    from amaranth.lib import io

    def clock(m, platform):  # what a PLL hook does, minus the PLL: its own sync domain at 24 MHz
        m.submodules.clk_pin = pin = io.Buffer("i", platform.request("clk12", dir="-"))
        m.domains.sync = ClockDomain()
        m.d.comb += ClockSignal("sync").eq(pin.i)
        return 24e6

    design = generate(_small_model(), GenConfig(target_cycles=16))
    top = BoardTop(design.top, baud=115200, clock=clock)
    _tiny_ice40().build(top, do_build=False)
    assert top.core.divisor == 208


def test_sim_board_top_checks_its_options():
    design = generate(_small_model(), GenConfig(target_cycles=16))
    _construct_fails(ValueError, r"timeout_bits must be an integer >= 20 \(two characters\), not 10",
                     SimBoardTop, design.top, divisor=8, timeout_bits=10)
    _construct_fails(TypeError, "accelerator must be an AcceleratorTop, not Design", SimBoardTop, design, divisor=8)
    _construct_fails(ValueError, r"UART divisor .* must be an integer >= 4, not 3", UartTx, 3)


# --- the whole board in RTL ---------------------------------------------------------------------


def _bench(design, images, *, divisor, timeout_bits, simulator, build_root, tmp_path):
    model = design.plan.model
    ref = simulate(model, images)
    lf = LinkFormat.of(design)
    exchanges = standard_exchanges(lf, [design.format.encode(img) for img in images], ref.classes.tolist(),
                                   ref.scores.tolist())
    board = SimBoardTop(design.top, divisor=divisor, timeout_bits=timeout_bits)
    result = run_link_bench(board, exchanges, simulator=simulator, build_dir=build_root, test_dir=tmp_path, timeout=300)
    result.check()
    got = result.output["exchanges"]
    assert [e["status"] for e in got] == [e["expect"]["status"] for e in exchanges]
    return result


@pytest.mark.rtl
def test_board_classifies_digits_over_the_uart_on_icarus(icarus, rtl_build_root, tmp_path, default_design):
    x = load_dataset("digits", "test").x[:5]
    result = _bench(default_design, x, divisor=4, timeout_bits=30, simulator=icarus, build_root=rtl_build_root,
                    tmp_path=tmp_path)
    ok = [e for e in result.output["exchanges"] if e["status"] == 0]
    assert len(ok) == 6 and {e["request_cycles"] for e in ok[:-1]} == {10 * 4 * 69}


@pytest.mark.rtl
def test_board_link_on_verilator(verilator, rtl_build_root, tmp_path):
    model = _small_model(5)
    design = generate(model, GenConfig(target_cycles=16))
    x = np.random.default_rng(6).integers(0, 64, size=(3, 13))
    _bench(design, x, divisor=5, timeout_bits=24, simulator=verilator, build_root=rtl_build_root, tmp_path=tmp_path)
