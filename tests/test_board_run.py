"""``bnnfab run-board`` (``bnnfab.boards.run``) without a board: the host side against a Python
emulation of the board's protocol.

The emulated board follows the rules of :mod:`bnnfab.boards.link` written out again here (its own
frame parser, image unpacking and response packing, so that the host is checked against the
documented protocol rather than against its own encoders) and computes each answer by running the
functional simulator on the image it unpacked. Faults are scripted per request: a request damaged
on the line (the board NACKs ``BAD_CRC``), a damaged or lost response (the host times out and
sends again), a board that never answers. One test goes through a pseudo-terminal with pyserial
and the ``run(args)`` entry point, on a real ``bnnfab build`` folder (planned at 30 MHz, the
PLL's clock).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pytest

from ptyboard import board_on_pty
from bnnfab.boards import run as run_mod
from bnnfab.boards.run import BoardDesign, RunBoardError, add_arguments, load_board_design, run, run_board
from bnnfab.codegen.config import GenConfig
from bnnfab.codegen.generate import generate, timing_summary, write_design
from bnnfab.models import zoo
from bnnfab.models.datasets import load_dataset
from bnnfab.sim.functional import simulate

N = 24  # images per exchange test: enough for every fault script, fast


def _crc(data: bytes) -> int:
    """CRC-16/CCITT-FALSE, bit by bit (the link's documented CRC)."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc


def _frame(sof: int, body: bytes) -> bytes:
    head = len(body).to_bytes(2, "little")
    return bytes([sof]) + head + body + _crc(head + body).to_bytes(2, "big")


class EmulatedBoard:
    """A port object (``read``/``write``/``reset_input_buffer``) answering as a board running
    ``model`` with stream format ``sf`` would. ``script`` holds one action per request frame:
    ``"ok"``, ``"damage_request"`` (a bit flips on the way in: ``BAD_CRC`` NACK),
    ``"damage_response"`` (a bit of the response flips on the way out), ``"lose_response"``;
    after the script, ``"ok"``. ``dead=True``: never answers."""

    def __init__(self, model, sf, script=(), dead=False):
        self.model, self.sf, self.script, self.dead = model, sf, list(script), dead
        self.inbox = bytearray()
        self.out = bytearray()
        self.requests = 0
        self.images: list[np.ndarray] = []

    # the board's side of the protocol
    def _unpack(self, body: bytes) -> np.ndarray:
        sf = self.sf
        per_beat = -(-sf.in_width // 8)
        values = []
        for b in range(sf.beats_per_image):
            beat = int.from_bytes(body[b * per_beat : (b + 1) * per_beat], "little")
            for e in range(sf.elements_per_beat):
                if len(values) < sf.k:
                    values.append((beat >> (e * sf.element_bits)) & ((1 << sf.element_bits) - 1))
        spec = self.model.input
        x = np.array(values, dtype=np.int64)
        if sf.element_bits == 1:
            x = np.where(x == 1, 1, -1)
        elif spec.signed:
            x = np.where(x >> (sf.element_bits - 1), x - (1 << sf.element_bits), x)
        return x.reshape(spec.shape)

    def _answer(self, image: np.ndarray) -> bytes:
        sf = self.sf
        res = simulate(self.model, image[None])
        cls, scores = int(res.classes[0]), [int(s) for s in res.scores[0]]
        raw = 0
        for n, s in enumerate(scores):
            field = (s + sf.k_last) // 2 if sf.score_is_popcount else s
            raw |= (field & ((1 << sf.score_width) - 1)) << (n * sf.score_width)
        class_bytes = -(-sf.index_width // 8)
        score_bytes = -(-(sf.n_classes * sf.score_width) // 8)
        return _frame(0x5A, bytes([0]) + cls.to_bytes(class_bytes, "little") + raw.to_bytes(score_bytes, "little"))

    def _nack(self, status: int) -> bytes:
        want = -(-self.sf.in_width // 8) * self.sf.beats_per_image
        return _frame(0x5A, bytes([status]) + want.to_bytes(2, "little"))

    def write(self, data: bytes) -> None:
        if self.dead:
            return
        self.inbox += data
        while True:
            start = self.inbox.find(0xA5)  # hunting: every other byte is ignored
            if start < 0:
                self.inbox.clear()
                return
            del self.inbox[:start]
            if len(self.inbox) < 3:
                return
            n = int.from_bytes(self.inbox[1:3], "little")
            want = -(-self.sf.in_width // 8) * self.sf.beats_per_image
            if n != want:  # BAD_LENGTH once the line is quiet: the rest of this write is dropped
                self.requests += 1
                self.inbox.clear()
                self.out += self._nack(2)
                return
            if len(self.inbox) < n + 5:
                return
            self.requests += 1
            action = self.script.pop(0) if self.script else "ok"
            frame = bytearray(self.inbox[: n + 5])
            del self.inbox[: n + 5]
            if action == "damage_request":
                frame[4] ^= 0x10
            if _crc(bytes(frame[1:])) != 0:
                self.out += self._nack(1)
                continue
            image = self._unpack(bytes(frame[3:-2]))
            self.images.append(image)
            reply = bytearray(self._answer(image))
            if action == "lose_response":
                continue
            if action == "damage_response":
                reply[5] ^= 0x01
            self.out += reply

    def read(self, n: int) -> bytes:
        if not self.out:
            time.sleep(0.001)  # as a serial port's read timeout would
            return b""
        chunk = bytes(self.out[:n])
        del self.out[:n]
        return chunk

    def reset_input_buffer(self) -> None:
        self.out.clear()


@pytest.fixture(scope="module")
def digits():
    ds = load_dataset("digits", "test")
    return ds.x, ds.y


@pytest.fixture(scope="module")
def default_design():
    """The default model at the default options, as run-board plans it without --design."""
    return load_board_design()


def test_default_design_is_the_default_model_at_default_options(default_design):
    built = generate(zoo.load(zoo.DEFAULT), GenConfig())
    assert default_design.format.stream_format == built.format
    assert default_design.baud == 115200 and default_design.board is None
    assert zoo.DEFAULT in default_design.source


def test_run_board_is_bit_exact_and_reports_rates(default_design, digits):
    x, y = digits[0][:N], digits[1][:N]
    board = EmulatedBoard(default_design.model, default_design.format.stream_format)
    report = run_board(board, default_design, x, y, timeout=0.5)
    ref = simulate(default_design.model, x)
    # the board unpacked exactly the images the host was given
    assert len(board.images) == N and all(np.array_equal(a, b) for a, b in zip(board.images, x.astype(np.int64)))
    np.testing.assert_array_equal(report.classes, ref.classes)
    np.testing.assert_array_equal(report.scores, ref.scores)
    assert report.exact and report.mismatches == 0 and report.first_mismatch is None
    assert report.correct == int((ref.classes == y).sum()) and report.accuracy == report.correct / N
    assert (report.requests, report.nacks, report.timeouts) == (N, 0, 0)
    # request 5 + 64 bytes, response 5 + 1 + 1 + 9 bytes (10 classes x 7-bit scores), 10 bits per byte
    assert report.link_images_per_second == pytest.approx(115200 / (10 * (69 + 16)))
    assert report.images_per_second > 0 and report.accelerator_images_per_second is None
    text = report.summary()
    assert f"accuracy {report.correct / N * 100:.2f}% ({report.correct}/{N})" in text
    assert f"bit-exact: class and scores of all {N} images" in text
    assert f"the link allows at most {115200 / 850:,.1f} images/s at 115200 baud" in text
    assert f"link: {N} requests (0 retries), 0 NACKs, 0 lost responses" in text


def test_damaged_frames_are_nacked_or_retried(default_design, digits):
    x = digits[0][:N]
    script = ["ok", "damage_request", "ok", "damage_response", "ok", "lose_response", "ok"]
    board = EmulatedBoard(default_design.model, default_design.format.stream_format, script=script)
    design = BoardDesign(model=default_design.model, format=default_design.format, baud=115200,
                         source="test", timeout_bits=20)
    report = run_board(board, design, x, timeout=0.05, retries=1)
    ref = simulate(default_design.model, x)
    np.testing.assert_array_equal(report.classes, ref.classes)
    np.testing.assert_array_equal(report.scores, ref.scores)
    # image 1: BAD_CRC NACK then OK; image 2: damaged response (no valid frame: timeout) then OK;
    # image 3: lost response then OK
    assert (report.requests, report.nacks, report.timeouts) == (N + 3, 1, 2)
    assert report.exact and "(3 retries), 1 NACKs, 2 lost responses" in report.summary()


def test_a_board_with_another_model_is_a_mismatch(default_design, digits):
    x = digits[0][:N]
    other = zoo.load("digits-tfc")  # same input and stream shape, other weights
    board = EmulatedBoard(other, default_design.format.stream_format)
    report = run_board(board, default_design, x, timeout=0.5)
    ref, theirs = simulate(default_design.model, x), simulate(other, x)
    differ = np.flatnonzero((ref.classes != theirs.classes) | np.any(ref.scores != theirs.scores, axis=1))
    assert differ.size > 0 and report.mismatches == differ.size and not report.exact
    i = int(differ[0])
    assert report.first_mismatch == (
        f"image {i}: the board says class {theirs.classes[i]}, scores {theirs.scores[i].tolist()}; "
        f"the simulator says class {ref.classes[i]}, scores {ref.scores[i].tolist()}")
    assert f"MISMATCH: {differ.size} of {N} images differ from the simulator; first: image {i}:" in report.summary()


def test_a_board_with_another_format_is_named(default_design, digits):
    x = digits[0][:4]
    sf = default_design.format.stream_format
    # the board's design takes one pixel per 12-bit beat: 64 beats of 2 bytes, 128 bytes per image
    sf = sf.__class__(**{**sf.__dict__, "in_width": 12, "beats_per_image": 64, "elements_per_beat": 1})
    board = EmulatedBoard(default_design.model, sf)
    with pytest.raises(RunBoardError, match=r"after 0 of 4 images: image 0: the board expects 128 image bytes per "
                                            r"request, this host sends 64") as err:
        run_board(board, default_design, x, timeout=0.2)
    assert "the board does not run the design of model digits-tfc-mst" in str(err.value)


def test_a_dead_board_times_out_with_a_clear_error(default_design, digits):
    board = EmulatedBoard(default_design.model, default_design.format.stream_format, dead=True)
    design = BoardDesign(model=default_design.model, format=default_design.format, baud=9600, source="DIR",
                         timeout_bits=20)
    t0 = time.perf_counter()
    with pytest.raises(RunBoardError, match=r"no board answered on .*: image 0: no valid response within 0.05 s, "
                                            r"2 attempt\(s\); check the port, the baud rate \(9600\).*; is the "
                                            r"bitstream of DIR loaded and its UART at 9600 baud\?"):
        run_board(board, design, digits[0][:3], timeout=0.05, retries=1)
    assert time.perf_counter() - t0 < 2

    # a board that answers a few images, then stops: the message counts and names the image
    board = EmulatedBoard(default_design.model, default_design.format.stream_format)
    calls = {"n": 0}
    real_write = board.write

    def write(data):
        calls["n"] += 1
        if calls["n"] <= 5:
            real_write(data)

    board.write = write
    with pytest.raises(RunBoardError, match=r"the board stopped answering after 5 of 8 images: image 5: no valid"):
        run_board(board, design, digits[0][:8], timeout=0.05, retries=0, chunk=4)


def test_port_errors_are_clear(default_design, digits, tmp_path, monkeypatch):
    x = digits[0][:1]
    with pytest.raises(RunBoardError, match=r"serial port /dev/ttyNOSUCH0 does not exist: is the board plugged in"):
        run_board("/dev/ttyNOSUCH0", default_design, x)
    dev = tmp_path / "ttyFAKE"
    dev.write_bytes(b"")
    monkeypatch.setattr(run_mod.os, "access", lambda path, mode: False)
    with pytest.raises(RunBoardError, match=rf"no permission to open serial port {dev} \(group '.*'\): add your user "
                                            r"to its group, e.g. `sudo usermod -aG dialout \$USER`"):
        run_board(str(dev), default_design, x)
    monkeypatch.undo()
    with pytest.raises(RunBoardError, match="the images do not fit the model of model digits-tfc-mst.*: "
                                            "inputs must have shape"):
        run_board(EmulatedBoard(default_design.model, default_design.format.stream_format), default_design,
                  np.zeros((2, 5), dtype=np.int64))


def test_design_folder_errors(tmp_path):
    with pytest.raises(RunBoardError, match="no design folder .*nowhere.*: give the folder of `bnnfab build"):
        load_board_design(tmp_path / "nowhere")
    with pytest.raises(RunBoardError, match="is neither a build folder .build_plan.json. nor a design folder"):
        load_board_design(tmp_path)
    (tmp_path / "build_plan.json").write_text("{}")
    with pytest.raises(RunBoardError, match="build_plan.json is unreadable"):
        load_board_design(tmp_path)
    with pytest.raises(RunBoardError, match="the baud rate must be a positive whole number, not 0"):
        load_board_design(baud=0)


@pytest.fixture(scope="module")
def build_folder(tmp_path_factory):
    """A `bnnfab build --no-run` folder of the default model on the iCEBreaker at 30 MHz, 57600 baud."""
    pytest.importorskip("amaranth_boards", reason="board plans need amaranth-boards (the [board] extra)")
    from bnnfab.boards.build import plan_build

    out = tmp_path_factory.mktemp("build")
    design = generate(zoo.load(zoo.DEFAULT), GenConfig())
    write_design(design, out / "design")
    plan_build(design, "icebreaker", out, baud=57600, clock_mhz=30)
    return out


def test_build_folder_gives_model_format_and_baud(build_folder):
    d = load_board_design(build_folder)
    assert (d.baud, d.board, d.clock_hz) == (57600, "icebreaker", 30e6)
    assert d.format.stream_format == generate(zoo.load(zoo.DEFAULT), GenConfig()).format
    assert d.model.name == zoo.load(zoo.DEFAULT).name
    built = generate(zoo.load(zoo.DEFAULT), GenConfig())
    assert d.cycles_per_image == int(timing_summary(built.blocks)["cycles_per_image"])
    with pytest.raises(RunBoardError, match=r"was built for 57600 baud, not 115200: .*rebuild with --baud 115200"):
        load_board_design(build_folder, baud=115200)
    with pytest.raises(RunBoardError, match="give either a design folder or a model, not both"):
        load_board_design(build_folder, model=zoo.load(zoo.DEFAULT))


def _args(**kw) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    argv = []
    for k, v in kw.items():
        flag = "--" + k.replace("_", "-")
        argv += [flag] if v is True else [flag, str(v)]
    return parser.parse_args(argv)


def test_run_over_a_serial_port(build_folder, digits, capsys):
    """run(args) with pyserial on a pseudo-terminal whose other end is the emulated board."""
    pytest.importorskip("serial", reason="pyserial is not installed (the 'board' extra)")
    design = load_board_design(build_folder)
    board = EmulatedBoard(design.model, design.format.stream_format, script=["ok", "damage_request"])
    with board_on_pty(board) as tty:
        code = run(_args(port=tty, design=build_folder, images=12, no_progress=True, timeout=1.0))
    out = capsys.readouterr().out
    assert code == 0, out
    x, y = digits[0][:12], digits[1][:12]
    ref = simulate(design.model, x)
    correct = int((ref.classes == y).sum())
    assert f"run-board: 12 images of digits (test split) on {tty} at 57600 baud; design " \
           f"{build_folder} (icebreaker, 30 MHz)" in out
    assert f"accuracy {correct / 12 * 100:.2f}% ({correct}/12)" in out
    assert "bit-exact: class and scores of all 12 images equal the simulator's" in out
    assert "link: 13 requests (1 retries), 1 NACKs, 0 lost responses" in out
    assert "at 57600 baud, the accelerator alone" in out
    assert len(board.images) == 12


def test_run_cli_errors(tmp_path):
    with pytest.raises(SystemExit):
        _args(port="/dev/null", images=0)
    with pytest.raises(RunBoardError, match="no model file 'nosuch' and no bundled model of that name"):
        run(_args(port="/dev/null", model="nosuch"))
    with pytest.raises(RunBoardError, match="dataset"):
        run(_args(port="/dev/null", dataset="nosuchset"))
