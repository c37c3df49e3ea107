"""``bnnfab verify``: stream real images through the generated Verilog in an RTL simulator and
check every output against the Numba simulator (bit-exact) and every accepted and emitted beat's
cycle against the cycle model (exact), under random valid and ready stalls.

The bench is :mod:`bnnfab.codegen.tb.smoke_bench` (driver, ready driver, monitors, scoreboards
from :mod:`bnnfab.codegen.tb.streams`); the references are computed here, before the run:

* expected outputs: :class:`bnnfab.sim.functional.Simulator` on the model, encoded as the top's
  output payload (class index and raw scores, :class:`~bnnfab.codegen.top.StreamFormat`);
* expected cycles: :func:`bnnfab.sim.cycles.simulate_cycles` on the design's block chain with the
  same stall patterns the bench draws (:class:`~bnnfab.codegen.tb.streams.StallSpec`).

A design folder written by ``bnnfab generate`` holds the Verilog, ``design.json`` and the model
(``model.bnn``), so a Verilog file edited after generation is verified as it stands: a corrupted
design is caught.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..models import Model
from ..models.io import load_model
from ..sim.cycles import Block, Kind, simulate_cycles
from ..sim.functional import Simulator
from .rtlsim import run_cocotb
from .tb.streams import StallMode, StallSpec
from .top import StreamFormat

__all__ = ["VerifyError", "VerifyReport", "load_design_dir", "verify_design"]


class VerifyError(ValueError):
    """A design folder or option that cannot be verified; the message says which and why."""


@dataclass
class VerifyReport:
    simulator: str
    images: int
    passed: bool
    accepted: int = 0
    emitted: int = 0
    cycles: int = 0
    first_mismatch: str | None = None
    problems: list[str] = field(default_factory=list)
    log_path: str | None = None
    seconds: float = 0.0

    def summary(self) -> str:
        head = "PASS" if self.passed else "FAIL"
        lines = [
            f"{head}: {self.images} images through the RTL on {self.simulator}: "
            f"{self.accepted} input beats, {self.emitted} results, {self.cycles} cycles, {self.seconds:.1f} s"
        ]
        if self.passed:
            lines.append("every result bit-exact with the simulator; every beat's cycle equal to the cycle model")
        else:
            if self.first_mismatch:
                lines.append(f"first mismatch: {self.first_mismatch}")
            lines += self.problems[:5]
            if self.log_path:
                lines.append(f"log: {self.log_path}")
        return "\n".join(lines)


@dataclass(frozen=True)
class DesignDir:
    verilog: Path
    top: str
    model: Model
    format: StreamFormat
    blocks: list[Block]


def load_design_dir(path: str | Path) -> DesignDir:
    """Read a folder written by :func:`bnnfab.codegen.generate.write_design`."""
    root = Path(path)
    manifest_path = root / "design.json"
    if not manifest_path.is_file():
        raise VerifyError(f"{root}: not a design folder (no design.json); make one with 'bnnfab generate MODEL -o {root}'")
    try:
        manifest = json.loads(manifest_path.read_text())
        top = manifest["top"]
        fmt = StreamFormat(**manifest["stream"])
        blocks = [Block(Kind[b["kind"]], tuple(b["params"]), b.get("label", "")) for b in manifest["blocks"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise VerifyError(f"{manifest_path}: unreadable design manifest ({exc})") from None
    verilog = root / f"{top}.v"
    if not verilog.is_file():
        raise VerifyError(f"{root}: the Verilog {verilog.name} named by design.json is missing")
    if not (root / "model.bnn").is_file():
        raise VerifyError(f"{root}: model.bnn is missing; regenerate the folder with 'bnnfab generate'")
    return DesignDir(verilog=verilog, top=top, model=load_model(root / "model.bnn"), format=fmt, blocks=blocks)


def _expected_payloads(fmt: StreamFormat, classes: np.ndarray, scores: np.ndarray) -> list[int]:
    out = []
    w = fmt.score_width
    mask = (1 << w) - 1
    for cls, row in zip(classes.tolist(), scores.tolist()):
        raw = 0
        for n, s in enumerate(row):
            v = (s + fmt.k_last) // 2 if fmt.score_is_popcount else s
            raw |= (int(v) & mask) << (n * w)
        out.append(int(cls) | (raw << fmt.index_width))
    return out


def _describe(fmt: StreamFormat, payload: int) -> str:
    cls, scores = fmt.decode(payload)
    return f"class {cls}, scores {scores.tolist()}"


def verify_design(
    design: DesignDir,
    images: np.ndarray,
    simulator: str = "icarus",
    seed: int = 1,
    stalls: str = "random",
    build_dir: str | Path | None = None,
    timeout: float = 1200.0,
) -> VerifyReport:
    """Run the RTL of ``design`` on ``images`` and compare (see the module docstring).

    ``images`` are model inputs (batch first); for a binary-input model they are binarized
    (``x >= 0``) before streaming, as the simulator does.
    """
    sim = Simulator(design.model)
    x = sim.check_inputs(images)
    ref = sim.run(images)
    stream_images = x.astype(np.int64) if x.dtype == np.bool_ else x
    fmt = design.format
    beats = [b for img in stream_images for b in fmt.encode(img)]
    mode = StallMode(stalls)
    valid_spec = StallSpec(mode=mode, seed=f"valid-{seed}", probability=0.3)
    ready_spec = StallSpec(mode=mode, seed=f"ready-{seed}", probability=0.3)
    n = len(stream_images)
    # patterns long enough for the model; both sides past their end read "no stall"
    horizon = 4 * (simulate_cycles(design.blocks, n).cycles + 64)
    in_valid = np.array([not s for s in valid_spec.take(horizon)], dtype=bool)
    out_ready = np.array([not s for s in ready_spec.take(horizon)], dtype=bool)
    trace = simulate_cycles(design.blocks, n, in_valid, out_ready)
    want_out = _expected_payloads(fmt, ref.classes, ref.scores)
    config = {
        "payloads": beats,
        "input": "i_stream",
        "output": "o_stream",
        "valid_stalls": valid_spec.to_json(),
        "ready_stalls": ready_spec.to_json(),
        "expected_accepted": [[int(c), int(p)] for c, p in zip(trace.accept, beats)],
        "expected_emitted": [[int(c), int(p)] for c, p in zip(trace.emit, want_out)],
        "max_cycles": int(trace.cycles) * 2 + 1000,
    }
    work = Path(build_dir) if build_dir is not None else Path(tempfile.mkdtemp(prefix="bnnfab-verify-"))
    result = run_cocotb(
        toplevel=design.top,
        test_module="bnnfab.codegen.tb.smoke_bench",
        simulator=simulator,
        build_dir=work,
        verilog_sources=[design.verilog],
        bench_config=config,
        timeout=timeout,
    )
    out = result.output or {}
    got_acc = [tuple(t) for t in out.get("accepted", [])]
    got_emit = [tuple(t) for t in out.get("emitted", [])]
    report = VerifyReport(
        simulator=simulator,
        images=n,
        passed=bool(result.ok),
        accepted=len(got_acc),
        emitted=len(got_emit),
        cycles=int(out.get("cycles", 0)),
        log_path=str(result.log_path) if result.log_path else None,
        seconds=float(result.seconds),
    )
    bpi = fmt.beats_per_image
    for j, (want_c, want_p) in enumerate(config["expected_emitted"]):
        if j >= len(got_emit):
            report.first_mismatch = f"image {j}: no result (the design emitted {len(got_emit)} of {n})"
            break
        got_c, got_p = got_emit[j]
        if got_p != want_p:
            report.first_mismatch = (
                f"image {j}: RTL gave {_describe(fmt, got_p)}; the simulator gives {_describe(fmt, want_p)} "
                f"(output beat {j}, cycle {got_c})"
            )
            break
        if got_c != want_c:
            report.first_mismatch = f"image {j}: result at cycle {got_c}, the cycle model says {want_c} (output beat {j})"
            break
    if report.first_mismatch is None:
        for j, (want_c, _) in enumerate(config["expected_accepted"]):
            if j < len(got_acc) and got_acc[j][0] != want_c:
                report.first_mismatch = (
                    f"image {j // bpi}: input beat {j} accepted at cycle {got_acc[j][0]}, the cycle model says {want_c}"
                )
                break
    if len(got_emit) > n:
        report.problems.append(f"the design emitted {len(got_emit) - n} results more than images sent")
    if report.first_mismatch is None:  # otherwise the mismatch says it; the bench's own text is in the log
        report.problems += [f.message.splitlines()[0] for f in result.failures if f.message]
    if result.error:
        report.problems.append(result.error)
    report.passed = report.passed and report.first_mismatch is None and len(got_emit) == n
    return report
