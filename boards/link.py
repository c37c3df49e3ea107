"""The host link: framed requests and responses over a UART, both sides.

The board side is :class:`HostLink`, gateware between the UART's byte streams and the
accelerator's ``i_stream`` / ``o_stream``; the host side is :class:`HostClient`. Both use
:class:`LinkFormat`, which derives every size from the accelerator's
:class:`~bnnfab.codegen.top.StreamFormat`.

Frame format
------------
Both directions use one frame shape; multi-byte integers are little-endian except the CRC::

    SOF | LEN (2 bytes, LE) | BODY (LEN bytes) | CRC (2 bytes, big-endian)

``CRC`` is CRC-16/CCITT-FALSE (polynomial 0x1021, initial value 0xFFFF, no reflection, no final
XOR; check value 0x29B1 for ``b"123456789"``) over ``LEN`` and ``BODY``, sent high byte first, so
the CRC of ``LEN | BODY | CRC`` is 0. It detects every error burst of up to 16 bits, every odd
number of bit errors, and every error of up to 3 bits in frames up to 4000 bytes; other damage
passes with a chance of about 1 in 65536.

Request (host -> board), ``SOF = 0xA5``:
    ``BODY`` is the image: its ``beats_per_image`` input beats, each as
    ``ceil(in_width / 8)`` bytes, little-endian, beat 0 first (bits above ``in_width`` are 0).
    ``LEN`` must equal that size, :attr:`LinkFormat.payload_bytes`.

Response (board -> host), ``SOF = 0x5A``:
    ``BODY[0]`` is a status byte (:class:`Status`).

    * ``OK`` (0): ``BODY = status | class | scores``: the accelerator's output beat split in two,
      ``class`` the argmax index (``ceil(index_width / 8)`` bytes), ``scores`` the raw score
      fields above it (``ceil(n_classes * score_width / 8)`` bytes), both little-endian; they are
      decoded with :meth:`StreamFormat.decode <bnnfab.codegen.top.StreamFormat.decode>`.
    * an error (a NACK): ``BODY = status | expected LEN (2 bytes, LE)``, the request size the
      board wants, so a host with the wrong design's format can say so.

Board behaviour
---------------
The board answers each request frame with exactly one response, in order, and serves one
request at a time: the host sends a request and waits for its response (stop and wait).

* Between frames every byte but ``0xA5`` is ignored (hunting for the start of a frame).
* Bytes are counted from ``LEN``; the image is buffered and reaches the accelerator only after
  the CRC has checked out. A frame with a wrong ``LEN`` or CRC never reaches it.
* Errors inside a frame: ``LEN`` other than :attr:`~LinkFormat.payload_bytes` (``BAD_LENGTH``),
  a CRC mismatch (``BAD_CRC``), a UART framing error (``FRAMING``) or overrun (``OVERRUN``).
  After one of them the board ignores the line until it has been silent for the timeout
  (``timeout_cycles``, a number of bit times on a board), then sends one NACK. So the rest of a
  damaged frame is never taken for a new frame, and a burst of damage gets one answer.
* Silence for the timeout inside a frame (a dropped byte: the frame is shorter than ``LEN``
  says) ends the frame with a ``TIMEOUT`` NACK.
* A lost ``SOF`` makes the frame invisible: the board sends nothing (unless a later ``0xA5``
  starts a phantom frame, which then fails one of the checks above); the host's own response
  timeout covers it.

A dropped or damaged byte is therefore reported (as a NACK, or as no response), not misread: a
corrupted image would have to pass both the length check and the CRC.
"""

import enum
import functools
import operator
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
from amaranth.hdl import Cat, Const, Module, Signal, Value
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..codegen.top import StreamFormat

__all__ = [
    "REQUEST_SOF",
    "RESPONSE_SOF",
    "CRC16_INIT",
    "CRC16_POLY",
    "NACK_BODY_BYTES",
    "Status",
    "crc16",
    "encode_frame",
    "parse_frame",
    "FrameSplitter",
    "LinkError",
    "LinkTimeout",
    "NackError",
    "Response",
    "LinkFormat",
    "HostLink",
    "LinkStats",
    "HostClient",
    "PYSERIAL_REQUIREMENT",
]

REQUEST_SOF = 0xA5
RESPONSE_SOF = 0x5A
CRC16_POLY = 0x1021
CRC16_INIT = 0xFFFF
#: A NACK's body: the status byte and the expected request ``LEN``.
NACK_BODY_BYTES = 3
MAX_LEN = 0xFFFF
PYSERIAL_REQUIREMENT = "pyserial>=3.5"


class Status(enum.IntEnum):
    """The status byte of a response; :attr:`description` says what each means."""

    OK = 0
    BAD_CRC = 1
    BAD_LENGTH = 2
    TIMEOUT = 3
    FRAMING = 4
    OVERRUN = 5

    @property
    def description(self) -> str:
        return _STATUS_TEXT[self]


_STATUS_TEXT = {
    Status.OK: "the image was classified; class and scores follow",
    Status.BAD_CRC: "the request's CRC did not match: a byte was damaged on the line",
    Status.BAD_LENGTH: "the request's LEN is not the image size of the board's design",
    Status.TIMEOUT: "the line fell silent inside a request: a byte was lost",
    Status.FRAMING: "the UART saw a character without its stop bit inside a request (wrong baud rate, noise)",
    Status.OVERRUN: "the UART received a byte before the link took the previous one (the host did not wait "
                    "for the response before sending)",
}


# --- CRC ----------------------------------------------------------------------------------------


def _crc16_byte(crc: int, byte: int) -> int:
    """One byte of CRC-16/CCITT-FALSE, bit by bit (MSB first)."""
    crc ^= byte << 8
    for _ in range(8):
        crc = ((crc << 1) ^ CRC16_POLY) if crc & 0x8000 else (crc << 1)
        crc &= 0xFFFF
    return crc


_CRC16_TABLE = tuple(_crc16_byte(0, b) for b in range(256))


def crc16(data: Iterable[int], crc: int = CRC16_INIT) -> int:
    """CRC-16/CCITT-FALSE of ``data`` (bytes or ints 0..255), continuing from ``crc``."""
    table = _CRC16_TABLE
    for b in bytes(data):
        crc = ((crc << 8) & 0xFFFF) ^ table[(crc >> 8) ^ b]
    return crc


def _crc16_step(crc: Value, byte: Value) -> Value:
    """Gateware of one CRC byte step: the update is linear over GF(2) in (crc, byte), so each
    next-state bit is the XOR of the input bits whose unit vectors set it."""
    bits = []
    for j in range(16):
        terms = [crc[i] for i in range(16) if _crc16_byte(1 << i, 0) >> j & 1]
        terms += [byte[k] for k in range(8) if _crc16_byte(0, 1 << k) >> j & 1]
        bits.append(functools.reduce(operator.xor, terms) if terms else Const(0, 1))
    return Cat(*bits)


# --- frames -------------------------------------------------------------------------------------


class LinkError(RuntimeError):
    """Something went wrong on the host link; the message says what and how to fix it."""


class LinkTimeout(LinkError):
    """No valid response arrived in time."""


class NackError(LinkError):
    """The board rejected a request; :attr:`status` says why, :attr:`index` which image."""

    def __init__(self, message: str, status: Status, index: int | None = None):
        super().__init__(message)
        self.status = status
        self.index = index


def encode_frame(sof: int, body: bytes) -> bytes:
    """``SOF | LEN | BODY | CRC`` (module docstring)."""
    body = bytes(body)
    if len(body) > MAX_LEN:
        raise ValueError(f"a frame body holds at most {MAX_LEN} bytes, not {len(body)}")
    head = len(body).to_bytes(2, "little")
    return bytes([sof]) + head + body + crc16(head + body).to_bytes(2, "big")


def parse_frame(frame: bytes, sof: int) -> bytes:
    """The body of a complete frame, after checking its SOF, length and CRC.

    Raises
    ------
    LinkError
        Naming the check that failed and the values found.
    """
    frame = bytes(frame)
    if len(frame) < 5:
        raise LinkError(f"a frame has at least 5 bytes (SOF, LEN, CRC), got {len(frame)}: {frame.hex()}")
    if frame[0] != sof:
        raise LinkError(f"a frame must start with {sof:#04x}, not {frame[0]:#04x}")
    n = int.from_bytes(frame[1:3], "little")
    if len(frame) != n + 5:
        raise LinkError(f"frame LEN says {n} body bytes, so {n + 5} bytes in all, but it has {len(frame)}")
    if crc16(frame[1:]) != 0:
        want = crc16(frame[1:-2])
        raise LinkError(f"frame CRC is {int.from_bytes(frame[-2:], 'big'):#06x}, its bytes give {want:#06x}: "
                        f"the frame was damaged on the line")
    return frame[3:-2]


class FrameSplitter:
    """Cuts a byte stream into valid frames of one direction.

    Bytes before a ``sof``, and a ``sof`` whose frame has a LEN above ``max_body`` or a wrong CRC,
    are skipped (counted in :attr:`discarded`); so a damaged frame vanishes and the search
    resumes right after its ``SOF``.
    """

    def __init__(self, sof: int, max_body: int = MAX_LEN):
        self.sof = sof
        self.max_body = max_body
        self.discarded = 0
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes; return the frames completed by them, in order."""
        self._buf += bytes(data)
        frames = []
        buf = self._buf
        while True:
            start = buf.find(self.sof)
            if start < 0:
                self.discarded += len(buf)
                buf.clear()
                break
            if start:
                self.discarded += start
                del buf[:start]
            if len(buf) < 3:
                break
            n = int.from_bytes(buf[1:3], "little")
            if n > self.max_body:
                self.discarded += 1
                del buf[:1]
                continue
            if len(buf) < n + 5:
                break
            if crc16(buf[1 : n + 5]) != 0:
                self.discarded += 1
                del buf[:1]
                continue
            frames.append(bytes(buf[: n + 5]))
            del buf[: n + 5]
        return frames

    @property
    def pending(self) -> int:
        """Bytes held that may still become a frame."""
        return len(self._buf)


class Response(NamedTuple):
    """A decoded response: ``status``, and for ``Status.OK`` the class and the integer scores
    (as the IR defines them, :meth:`StreamFormat.decode`); None for a NACK."""

    status: Status
    cls: int | None
    scores: np.ndarray | None


def _bytes_of(bits: int) -> int:
    return max(1, -(-bits // 8))


@dataclass(frozen=True)
class LinkFormat:
    """Frame sizes and codecs of the link for one accelerator (module docstring).

    Parameters
    ----------
    stream_format : StreamFormat
        The accelerator's (``AcceleratorTop.format``, ``Design.format``).
    """

    stream_format: StreamFormat

    def __post_init__(self):
        if not isinstance(self.stream_format, StreamFormat):
            raise TypeError(f"LinkFormat needs a StreamFormat, not {type(self.stream_format).__name__}")
        if self.payload_bytes > MAX_LEN:
            raise ValueError(f"an image of {self.payload_bytes} bytes does not fit a frame (LEN <= {MAX_LEN})")

    @classmethod
    def of(cls, source: Any) -> "LinkFormat":
        """The link format of a LinkFormat, a StreamFormat, or anything with a ``format``
        attribute holding one (a ``Design``, an ``AcceleratorTop``)."""
        if isinstance(source, LinkFormat):
            return source
        if isinstance(source, StreamFormat):
            return cls(source)
        fmt = getattr(source, "format", None)
        if isinstance(fmt, StreamFormat):
            return cls(fmt)
        raise TypeError(f"expected a LinkFormat, a StreamFormat or a design with .format, not {type(source).__name__}")

    # sizes
    @property
    def bytes_per_beat(self) -> int:
        return _bytes_of(self.stream_format.in_width)

    @property
    def payload_bytes(self) -> int:
        """Request ``LEN``: the image's bytes."""
        return self.stream_format.beats_per_image * self.bytes_per_beat

    @property
    def out_width(self) -> int:
        """Bits of the accelerator's output beat (class index and score fields)."""
        sf = self.stream_format
        return sf.index_width + sf.n_classes * sf.score_width

    @property
    def class_bytes(self) -> int:
        return _bytes_of(self.stream_format.index_width)

    @property
    def score_bytes(self) -> int:
        sf = self.stream_format
        return _bytes_of(sf.n_classes * sf.score_width)

    @property
    def result_body_bytes(self) -> int:
        """``LEN`` of an OK response."""
        return 1 + self.class_bytes + self.score_bytes

    @property
    def request_bytes(self) -> int:
        return self.payload_bytes + 5

    @property
    def result_frame_bytes(self) -> int:
        return self.result_body_bytes + 5

    @property
    def nack_frame_bytes(self) -> int:
        return NACK_BODY_BYTES + 5

    def max_images_per_second(self, baud: float) -> float:
        """The link's bound on throughput at ``baud`` (8N1, 10 bits per byte, stop and wait):
        request and response back to back, the accelerator's own time not counted."""
        return baud / (10 * (self.request_bytes + self.result_frame_bytes))

    # requests
    def encode_request(self, image_beats: Sequence[int]) -> bytes:
        """The request frame of one image given as its input beats (``StreamFormat.encode``).

        Raises
        ------
        ValueError
            If the number of beats or a beat's width does not fit the format.
        """
        sf = self.stream_format
        beats = [int(b) for b in image_beats]
        if len(beats) != sf.beats_per_image:
            raise ValueError(f"an image is {sf.beats_per_image} input beats for this design, got {len(beats)}")
        body = bytearray()
        for k, beat in enumerate(beats):
            if beat < 0 or beat >> sf.in_width:
                raise ValueError(f"input beat {k} must be an unsigned {sf.in_width}-bit integer, not {beat:#x}")
            body += beat.to_bytes(self.bytes_per_beat, "little")
        return encode_frame(REQUEST_SOF, bytes(body))

    def encode_image(self, image: np.ndarray) -> bytes:
        """The request frame of one image (elements as ``StreamFormat.encode`` takes them)."""
        return self.encode_request(self.stream_format.encode(image))

    def decode_request(self, frame: bytes) -> list[int]:
        """The input beats of a request frame (the board's view; for tests and host models).

        Raises
        ------
        LinkError
            If the frame is damaged or its LEN is not :attr:`payload_bytes`.
        """
        body = parse_frame(frame, REQUEST_SOF)
        if len(body) != self.payload_bytes:
            raise LinkError(f"a request carries {self.payload_bytes} image bytes for this design, not {len(body)}")
        w = self.bytes_per_beat
        return [int.from_bytes(body[i : i + w], "little") for i in range(0, len(body), w)]

    # responses
    def result_payload(self, cls: int, scores: Sequence[int]) -> int:
        """The accelerator output beat carrying ``cls`` and ``scores`` (the inverse of
        ``StreamFormat.decode``; scores as the IR defines them)."""
        sf = self.stream_format
        mask = (1 << sf.score_width) - 1
        raw = 0
        for n, s in enumerate(int(s) for s in scores):
            v = (s + sf.k_last) // 2 if sf.score_is_popcount else s
            raw |= (v & mask) << (n * sf.score_width)
        return int(cls) | raw << sf.index_width

    def encode_result(self, payload: int) -> bytes:
        """The OK response frame of an accelerator output beat (what :class:`HostLink` sends)."""
        sf = self.stream_format
        cls = int(payload) & ((1 << sf.index_width) - 1)
        raw = int(payload) >> sf.index_width
        body = bytes([Status.OK]) + cls.to_bytes(self.class_bytes, "little") + raw.to_bytes(self.score_bytes, "little")
        return encode_frame(RESPONSE_SOF, body)

    def encode_nack(self, status: Status) -> bytes:
        """The NACK frame of ``status`` (what :class:`HostLink` sends)."""
        status = Status(status)
        if status is Status.OK:
            raise ValueError("a NACK carries an error status, not OK")
        return encode_frame(RESPONSE_SOF, bytes([status]) + self.payload_bytes.to_bytes(2, "little"))

    def decode_response(self, frame: bytes) -> Response:
        """``(status, class, scores)`` of a response frame; class and scores are None for a NACK.

        Raises
        ------
        LinkError
            If the frame is damaged, its status unknown, or its size not this design's (the
            board runs another design).
        """
        body = parse_frame(frame, RESPONSE_SOF)
        if not body:
            raise LinkError("a response body holds at least the status byte; got an empty body")
        try:
            status = Status(body[0])
        except ValueError:
            raise LinkError(f"unknown response status {body[0]:#04x}; known: "
                            f"{', '.join(f'{s.value}={s.name}' for s in Status)}") from None
        if status is not Status.OK:
            if len(body) != NACK_BODY_BYTES:
                raise LinkError(f"a NACK carries {NACK_BODY_BYTES} body bytes, got {len(body)}")
            return Response(status, None, None)
        if len(body) != self.result_body_bytes:
            raise LinkError(f"an OK response of this design carries {self.result_body_bytes} body bytes, got "
                            f"{len(body)}: the board runs a different design")
        cb = self.class_bytes
        cls = int.from_bytes(body[1 : 1 + cb], "little")
        sf = self.stream_format
        if cls >= sf.n_classes or cls >> sf.index_width:
            raise LinkError(f"response class {cls} is out of range for {sf.n_classes} classes: "
                            f"the board runs a different design")
        raw = int.from_bytes(body[1 + cb :], "little")
        if raw >> (sf.n_classes * sf.score_width):
            raise LinkError("response scores have bits set above the score fields: the board runs a different design")
        cls, scores = sf.decode(cls | raw << sf.index_width)
        return Response(Status.OK, cls, scores)

    def nack_expected_length(self, frame: bytes) -> int:
        """The request ``LEN`` a NACK says the board expects."""
        body = parse_frame(frame, RESPONSE_SOF)
        if len(body) != NACK_BODY_BYTES or body[0] == Status.OK:
            raise LinkError("not a NACK frame")
        return int.from_bytes(body[1:3], "little")


# --- gateware -----------------------------------------------------------------------------------


class HostLink(wiring.Component):
    """The board side of the link: request frames from ``rx`` become accelerator input beats on
    ``acc_in``, accelerator results from ``acc_out`` become response frames on ``tx`` (module
    docstring for the frames and the rules).

    Parameters
    ----------
    fmt : LinkFormat, StreamFormat, or a design/accelerator with ``.format``
    timeout_cycles : int
        Silence (clock cycles without a received byte or UART error) that ends a frame with
        ``TIMEOUT`` or ends the discarding after an error. Make it several character times
        (``10 * divisor`` cycles each) and longer than any gap the host's UART leaves inside a
        frame.

    Ports
    -----
    rx : In(stream of 8), rx_framing, rx_overrun : In(1)
        From :class:`~bnnfab.boards.uart.UartRx` (its ``o_stream``, ``framing_error``,
        ``overrun``).
    tx : Out(stream of 8)
        To :class:`~bnnfab.boards.uart.UartTx`.
    acc_in : Out(stream of ``in_width``), acc_out : In(stream of ``out_width``)
        To the accelerator's ``i_stream`` and from its ``o_stream``.
    last_class : Out(index_width), last_status : Out(8)
        Class of the last OK response and status of the last response (for LEDs).

    Timing: a frame is checked when its last CRC byte arrives; the buffered image is then read
    out at two cycles per byte, each beat offered once its bytes are in (``2 * payload_bytes +
    beats_per_image`` cycles plus the accelerator's stalls); a response's SOF is offered the
    cycle after the result (or the NACK) is taken. Requests are served one at a time: the
    receiver takes no bytes while it feeds the accelerator or waits to send a NACK (the UART
    receiver holds one byte; more would overrun).
    """

    def __init__(self, fmt: Any, *, timeout_cycles: int):
        self.format = LinkFormat.of(fmt)
        if isinstance(timeout_cycles, bool) or not isinstance(timeout_cycles, int) or timeout_cycles < 1:
            raise ValueError(f"timeout_cycles must be a positive integer, not {timeout_cycles!r}")
        self.timeout_cycles = timeout_cycles
        sf = self.format.stream_format
        super().__init__({
            "rx": In(stream.Signature(8)),
            "rx_framing": In(1),
            "rx_overrun": In(1),
            "tx": Out(stream.Signature(8)),
            "acc_in": Out(stream.Signature(sf.in_width)),
            "acc_out": In(stream.Signature(self.format.out_width)),
            "last_class": Out(sf.index_width),
            "last_status": Out(8),
        })

    def elaborate(self, platform):
        m = Module()
        lf = self.format
        sf = lf.stream_format
        n_bytes, bpb, n_beats = lf.payload_bytes, lf.bytes_per_beat, sf.beats_per_image

        # Image buffer: written as bytes arrive, read out only after the CRC checked out.
        m.submodules.buffer = mem = Memory(shape=8, depth=n_bytes, init=[])
        wr = mem.write_port()
        rd = mem.read_port()

        rx = self.rx
        byte = rx.payload
        got = Signal()
        m.d.comb += got.eq(rx.valid & rx.ready)
        activity = Signal()
        m.d.comb += activity.eq(got | self.rx_framing | self.rx_overrun)

        # Silence timer: reloaded by any line activity, counts down to 0 ("quiet").
        silence = Signal(range(self.timeout_cycles + 1))
        quiet = Signal()
        m.d.comb += quiet.eq((silence == 0) & ~activity)
        with m.If(activity):
            m.d.sync += silence.eq(self.timeout_cycles)
        with m.Elif(silence != 0):
            m.d.sync += silence.eq(silence - 1)

        rcrc = Signal(16)
        rcrc_next = Signal(16)
        m.d.comb += rcrc_next.eq(_crc16_step(rcrc, byte))
        len_lo = Signal(8)
        wr_addr = Signal(range(n_bytes))
        rd_addr = Signal(range(n_bytes))
        beat = Signal(bpb * 8)
        byte_idx = Signal(range(bpb))
        beat_idx = Signal(range(n_beats))
        code = Signal(8)
        m.d.comb += [wr.addr.eq(wr_addr), wr.data.eq(byte), rd.addr.eq(rd_addr)]
        m.d.comb += self.acc_in.payload.eq(beat[: sf.in_width])

        # Between the two FSMs: a pending NACK, and how many images await their result.
        err_valid, err_ready = Signal(), Signal()
        image_done, result_taken = Signal(), Signal()
        in_flight = Signal(range(4))
        m.d.sync += in_flight.eq(in_flight + image_done - result_taken)

        def in_frame(on_byte: Callable[[], None]) -> None:
            m.d.comb += rx.ready.eq(1)
            with m.If(self.rx_framing):
                m.d.sync += code.eq(int(Status.FRAMING))
                m.next = "DISCARD"
            with m.Elif(self.rx_overrun):
                m.d.sync += code.eq(int(Status.OVERRUN))
                m.next = "DISCARD"
            with m.Elif(got):
                on_byte()
            with m.Elif(quiet):
                m.d.sync += code.eq(int(Status.TIMEOUT))
                m.next = "REPORT"

        with m.FSM(name="rx_fsm"):
            with m.State("IDLE"):
                m.d.comb += rx.ready.eq(1)
                with m.If(got & (byte == REQUEST_SOF)):
                    m.d.sync += rcrc.eq(CRC16_INIT)
                    m.next = "LEN0"

            with m.State("LEN0"):
                def len0():
                    m.d.sync += [rcrc.eq(rcrc_next), len_lo.eq(byte)]
                    m.next = "LEN1"
                in_frame(len0)

            with m.State("LEN1"):
                def len1():
                    m.d.sync += [rcrc.eq(rcrc_next), wr_addr.eq(0)]
                    with m.If((len_lo == (n_bytes & 0xFF)) & (byte == (n_bytes >> 8))):
                        m.next = "DATA"
                    with m.Else():
                        m.d.sync += code.eq(int(Status.BAD_LENGTH))
                        m.next = "DISCARD"
                in_frame(len1)

            with m.State("DATA"):
                def data():
                    m.d.comb += wr.en.eq(1)
                    m.d.sync += [rcrc.eq(rcrc_next), wr_addr.eq(wr_addr + 1)]
                    with m.If(wr_addr == n_bytes - 1):
                        m.next = "CRC0"
                in_frame(data)

            with m.State("CRC0"):
                def crc0():
                    m.d.sync += rcrc.eq(rcrc_next)
                    m.next = "CRC1"
                in_frame(crc0)

            with m.State("CRC1"):
                def crc1():
                    with m.If(rcrc_next == 0):
                        m.d.sync += [rd_addr.eq(0), byte_idx.eq(0), beat_idx.eq(0)]
                        m.next = "FEED_ADDR"
                    with m.Else():
                        m.d.sync += code.eq(int(Status.BAD_CRC))
                        m.next = "DISCARD"
                in_frame(crc1)

            with m.State("DISCARD"):  # drop everything until the line is quiet
                m.d.comb += rx.ready.eq(1)
                with m.If(quiet):
                    m.next = "REPORT"

            with m.State("REPORT"):  # after the results of earlier images, so responses stay in order
                m.d.comb += err_valid.eq(in_flight == 0)
                with m.If(err_valid & err_ready):
                    m.next = "IDLE"

            with m.State("FEED_ADDR"):  # the read port takes rd_addr at this edge
                m.next = "FEED_DATA"

            with m.State("FEED_DATA"):
                m.d.sync += [beat.eq((beat >> 8) | (rd.data << (bpb * 8 - 8))), rd_addr.eq(rd_addr + 1)]
                with m.If(byte_idx == bpb - 1):
                    m.d.sync += byte_idx.eq(0)
                    m.next = "OFFER"
                with m.Else():
                    m.d.sync += byte_idx.eq(byte_idx + 1)
                    m.next = "FEED_ADDR"

            with m.State("OFFER"):
                m.d.comb += self.acc_in.valid.eq(1)
                with m.If(self.acc_in.ready):
                    with m.If(beat_idx == n_beats - 1):
                        m.d.comb += image_done.eq(1)
                        m.next = "IDLE"
                    with m.Else():
                        m.d.sync += beat_idx.eq(beat_idx + 1)
                        m.next = "FEED_ADDR"

        # Transmitter: one response frame at a time, bytes from a shift register.
        body_bytes = max(lf.result_body_bytes, NACK_BODY_BYTES)
        body = Signal(body_bytes * 8)
        body_len = Signal(16)
        count = Signal(range(body_bytes))
        tcrc = Signal(16)
        tx_byte = Signal(8)
        tcrc_next = Signal(16)
        sent = Signal()
        m.d.comb += [
            self.tx.payload.eq(tx_byte),
            tcrc_next.eq(_crc16_step(tcrc, tx_byte)),
            sent.eq(self.tx.valid & self.tx.ready),
        ]
        result = Value.cast(self.acc_out.payload)
        cls_word = Signal(lf.class_bytes * 8)
        score_word = Signal(lf.score_bytes * 8)
        m.d.comb += [cls_word.eq(result[: sf.index_width]), score_word.eq(result[sf.index_width :])]
        ok_body = Signal(body_bytes * 8)
        nack_body = Signal(body_bytes * 8)
        m.d.comb += [
            ok_body.eq(Const(int(Status.OK), 8) | (cls_word << 8) | (score_word << (8 + 8 * lf.class_bytes))),
            nack_body.eq(code | (n_bytes << 8)),
        ]

        with m.FSM(name="tx_fsm"):
            with m.State("IDLE"):
                with m.If(self.acc_out.valid):
                    m.d.comb += [self.acc_out.ready.eq(1), result_taken.eq(1)]
                    m.d.sync += [
                        body.eq(ok_body),
                        body_len.eq(lf.result_body_bytes),
                        self.last_class.eq(result[: sf.index_width]),
                        self.last_status.eq(int(Status.OK)),
                    ]
                    m.next = "SOF"
                with m.Elif(err_valid):
                    m.d.comb += err_ready.eq(1)
                    m.d.sync += [body.eq(nack_body), body_len.eq(NACK_BODY_BYTES), self.last_status.eq(code)]
                    m.next = "SOF"
            with m.State("SOF"):
                m.d.comb += [tx_byte.eq(RESPONSE_SOF), self.tx.valid.eq(1)]
                with m.If(sent):
                    m.d.sync += tcrc.eq(CRC16_INIT)
                    m.next = "LEN0"
            with m.State("LEN0"):
                m.d.comb += [tx_byte.eq(body_len[:8]), self.tx.valid.eq(1)]
                with m.If(sent):
                    m.d.sync += tcrc.eq(tcrc_next)
                    m.next = "LEN1"
            with m.State("LEN1"):
                m.d.comb += [tx_byte.eq(body_len[8:]), self.tx.valid.eq(1)]
                with m.If(sent):
                    m.d.sync += [tcrc.eq(tcrc_next), count.eq(0)]
                    m.next = "BODY"
            with m.State("BODY"):
                m.d.comb += [tx_byte.eq(body[:8]), self.tx.valid.eq(1)]
                with m.If(sent):
                    m.d.sync += [tcrc.eq(tcrc_next), body.eq(body >> 8), count.eq(count + 1)]
                    with m.If(count == body_len - 1):
                        m.next = "CRC0"
            with m.State("CRC0"):
                m.d.comb += [tx_byte.eq(tcrc[8:]), self.tx.valid.eq(1)]
                with m.If(sent):
                    m.next = "CRC1"
            with m.State("CRC1"):
                m.d.comb += [tx_byte.eq(tcrc[:8]), self.tx.valid.eq(1)]
                with m.If(sent):
                    m.next = "IDLE"
        return m


# --- host ---------------------------------------------------------------------------------------


@dataclass
class LinkStats:
    """What one :meth:`HostClient.classify` call took."""

    images: int = 0
    seconds: float = 0.0
    requests: int = 0  # frames sent, retries included
    nacks: int = 0
    timeouts: int = 0

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else float("inf")


def _open_serial(path: str, baudrate: int, read_timeout: float):
    try:
        import serial  # noqa: PLC0415 - pyserial is needed only to talk to a real board
    except ImportError as exc:
        raise LinkError(f"opening {path!r} needs pyserial: `pip install '{PYSERIAL_REQUIREMENT}'`") from exc
    try:
        return serial.Serial(path, baudrate=baudrate, bytesize=8, parity="N", stopbits=1, timeout=read_timeout)
    except (serial.SerialException, ValueError) as exc:
        raise LinkError(f"cannot open serial port {path!r} at {baudrate} baud: {exc}") from exc


#: Statuses worth sending the same request again for (the line damaged it).
_RETRYABLE = frozenset({Status.BAD_CRC, Status.TIMEOUT, Status.FRAMING, Status.OVERRUN})


class HostClient:
    """The host side of the link: classifies images on a board running :class:`HostLink`.

    Parameters
    ----------
    serial_port : str, path, or a port object
        A serial device (``"/dev/ttyUSB1"``, ``"COM3"``; opened with pyserial, imported only
        then), or an open object with ``read(n) -> bytes`` (may return fewer bytes, or none
        after its own short timeout) and ``write(data)``; ``reset_input_buffer()`` is used when
        present.
    fmt : LinkFormat, StreamFormat, or a design with ``.format``
        The format of the design the board runs.
    baudrate : int
        The board's UART rate.
    timeout : float, optional
        Seconds to wait for a response; default: twice the time of a request and its response
        plus the board's silence timeout, plus 0.25 s.
    retries : int
        How many times a request is sent again after a retryable NACK (the line damaged it) or
        no response.
    board_timeout_bits : int
        The board's silence timeout in bit times (``BoardTop(timeout_bits=...)``).

    Attributes
    ----------
    stats : LinkStats
        Of the last :meth:`classify` call.
    """

    def __init__(self, serial_port: Any, fmt: Any, *, baudrate: int = 115200, timeout: float | None = None,
                 retries: int = 2, board_timeout_bits: int = 1000):
        self.format = LinkFormat.of(fmt)
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ValueError(f"retries must be a whole number >= 0, not {retries!r}")
        self.baudrate = baudrate
        self.retries = retries
        self.board_timeout = board_timeout_bits / baudrate
        frames = 10 * (self.format.request_bytes + self.format.result_frame_bytes) / baudrate
        self.timeout = float(timeout) if timeout is not None else 2 * (frames + self.board_timeout) + 0.25
        if isinstance(serial_port, (str, os.PathLike)):
            self.port = _open_serial(os.fspath(serial_port), baudrate, read_timeout=0.02)
            self._owns_port = True
        else:
            if not all(callable(getattr(serial_port, f, None)) for f in ("read", "write")):
                raise TypeError(f"serial_port must be a device path or have read() and write(), "
                                f"not {type(serial_port).__name__}")
            self.port = serial_port
            self._owns_port = False
        self.stats = LinkStats()

    def close(self) -> None:
        """Close the port if this client opened it."""
        if self._owns_port:
            self.port.close()
            self._owns_port = False

    def __enter__(self) -> "HostClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _images(self, images: Any) -> np.ndarray:
        x = np.asarray(images)
        sf = self.format.stream_format
        if x.ndim < 1 or x.shape[0] == 0 or x[0].size != sf.k:
            raise ValueError(f"images must be a non-empty batch of images of {sf.k} elements each, got shape {x.shape}")
        if sf.element_bits == 1:  # binary inputs: x >= 0 is +1, as the simulator binarizes
            return (x >= 0) if x.dtype != np.bool_ else x
        if not np.issubdtype(x.dtype, np.integer):
            if not (np.issubdtype(x.dtype, np.floating) and np.all(np.isfinite(x)) and np.all(x == np.round(x))):
                raise ValueError(f"images must hold {sf.element_bits}-bit integers, got dtype {x.dtype} "
                                 f"with non-integer values")
            x = x.astype(np.int64)
        lo, hi = -(1 << (sf.element_bits - 1)), (1 << sf.element_bits) - 1
        bad = (x < lo) | (x > hi)
        if bad.any():
            idx = tuple(int(i) for i in np.argwhere(bad)[0])
            raise ValueError(f"value {x[idx].item()} at index {idx} does not fit {sf.element_bits}-bit inputs")
        return x

    def classify(self, images: Any) -> tuple[np.ndarray, np.ndarray]:
        """Classify a batch of images on the board, one request at a time.

        Returns
        -------
        classes : int64 array (B,)
        scores : int64 array (B, n_classes)
            As the IR defines them (the simulator's ``scores``).

        Raises
        ------
        NackError
            The board rejected an image more than ``retries`` times, or said the request size is
            not its design's (then the message names both sizes).
        LinkTimeout
            No response came for an image, ``retries + 1`` times.
        LinkError
            A response that does not fit this design's format.
        """
        x = self._images(images)
        sf = self.format.stream_format
        n = x.shape[0]
        classes = np.empty(n, dtype=np.int64)
        scores = np.empty((n, sf.n_classes), dtype=np.int64)
        self.stats = stats = LinkStats(images=0)
        start = time.perf_counter()
        for i in range(n):
            request = self.format.encode_request(sf.encode(x[i]))
            resp = self._classify_one(request, i, stats)
            classes[i], scores[i] = resp.cls, resp.scores
            stats.images += 1
        stats.seconds = time.perf_counter() - start
        return classes, scores

    def _classify_one(self, request: bytes, index: int, stats: LinkStats) -> Response:
        last = None
        for _attempt in range(self.retries + 1):
            stats.requests += 1
            try:
                frame = self._exchange(request)
            except LinkTimeout as exc:
                stats.timeouts += 1
                last = exc
                self._resync()
                continue
            resp = self.format.decode_response(frame)
            if resp.status is Status.OK:
                return resp
            stats.nacks += 1
            if resp.status is Status.BAD_LENGTH:
                want = self.format.nack_expected_length(frame)
                raise NackError(
                    f"image {index}: the board expects {want} image bytes per request, this host sends "
                    f"{self.format.payload_bytes}: the board runs a different design than the format given",
                    resp.status, index)
            last = NackError(f"image {index}: the board rejected the request: {resp.status.name} "
                             f"({resp.status.description})", resp.status, index)
            if resp.status not in _RETRYABLE:  # pragma: no cover - every error status is retryable today
                break
        attempts = self.retries + 1
        if isinstance(last, NackError):
            raise NackError(f"{last} - {attempts} attempt(s)", last.status, index)
        raise LinkTimeout(f"image {index}: no valid response within {self.timeout:.2f} s, {attempts} attempt(s); "
                          f"check the port, the baud rate ({self.baudrate}) and that the board runs this design")

    def _exchange(self, request: bytes) -> bytes:
        self.port.write(request)
        if callable(getattr(self.port, "flush", None)):
            self.port.flush()
        splitter = FrameSplitter(RESPONSE_SOF, max(self.format.result_body_bytes, NACK_BODY_BYTES))
        deadline = time.monotonic() + self.timeout
        while True:
            chunk = self.port.read(self.format.result_frame_bytes)
            frames = splitter.feed(chunk) if chunk else []
            if frames:
                return frames[0]
            if time.monotonic() > deadline:
                noise = f"; {splitter.discarded + splitter.pending} bytes received were no valid frame" \
                    if splitter.discarded + splitter.pending else ""
                raise LinkTimeout(f"no response within {self.timeout:.2f} s{noise}")

    def _resync(self) -> None:
        """After a lost response: let the board's silence timeout pass, then drop what came in."""
        time.sleep(self.board_timeout)
        if callable(getattr(self.port, "reset_input_buffer", None)):
            self.port.reset_input_buffer()
