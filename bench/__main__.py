"""Run bnnfab's benchmarks in one command and collect their figures: ``python -m bench``.

Run from the repository root (``bench`` is a folder of the clone, not an installed package;
bnnfab itself must be installed, e.g. ``pip install -e '.[dev]'``)::

    python -m bench                      # the default run (below), results in bench/results/
    python -m bench --quick              # every bench shortened: a smoke run
    python -m bench --all                # every bench at its full settings
    python -m bench --only onnx_compare,sim_throughput --out /tmp/b
    python -m bench --skip cycle_model --timeout 1800
    python -m bench --list               # the benches, their options in each mode, rough times

Each bench runs in its own Python process (``python bench/NAME.py OPTIONS --json FILE``), one at
a time, its output shown and kept in ``OUT/logs/NAME.log``; a bench that fails (non-zero exit,
no or malformed results file, time-out) is recorded as failed and the next one runs. At the end
``OUT`` holds

* ``results.json``: the machine, date, load averages, options, and per bench its status, exit
  code, seconds, command, error and figures;
* ``results.csv``: one row per measured figure: ``bench, metric, value, unit, goal, met``;
* ``summary.md``: a short page: machine, date, load, a status line per bench, and each bench's
  headline figures and goals (met or not);
* ``raw/NAME.json`` (each bench's own JSON) and ``logs/NAME.log``.

The exit status is 0 when no bench failed (a skipped one does not count), else 1.

What runs, and how long it took on the development machine (2 cores shared with other jobs, load
average 4 to 8, so an idle machine is faster; mst_logic's Yosys runs suffer most):

=============== ================================ ================================ ================
bench           default run                      ``--quick``                      ``--all``
=============== ================================ ================================ ================
sim_throughput  full (33 s)                      ``--quick`` (24 s)               full
onnx_compare    lfc and cnv (136 s)              ``--quick``: tiny net (12 s)     lfc, sfc, cnv
cycle_model     full: 1,000 RTL images (193 s)   ``--quick``: 20 images (61 s)    full
mst_folded      full (5 s)                       the same (3 s)                   full
mst_logic       the MST-regularised dense1 of    the same, iCE40, depth 8         full (~30 min
                digits-tfc-mst, depths 4 and 8,  (~1 min)                         idle)
                no styles (~2 min)
mst_tradeoff    lambdas 0, 0.5; seeds 0, 1;      lambdas 0, 0.5; seed 0;          full: 5 lambdas,
                20 epochs (32 s)                 5 epochs (20 s)                  8 seeds, 60 ep.
hw_efficiency   6 board builds (~20 min)         ``--quick``: 3 iCE40 builds      its default
estimate_       ``--quick``: 4 designs (~5 min)  ``--quick --families ice40``     all held-out
calibration                                                                       designs (~20 min)
=============== ================================ ================================ ================

The default run took 26 minutes there without hw_efficiency and estimate_calibration (add about
25), ``--quick`` about 4 (plus about 4). A bench whose script is missing is "failed"; an
``optional`` one (none at present) would be "skipped".
``--only`` and ``--skip`` keep the order of the table.

The bench contract (for a new bench, e.g. ``bench/hw_efficiency.py``; see ``bench/_results.py``):
a script ``bench/NAME.py`` with ``main(argv: list[str] | None = None) -> int`` behind
``if __name__ == "__main__": sys.exit(main())``, accepting ``--quick`` and ``--json PATH``; exit
status 0 when it measured what it should; ``PATH`` receives one JSON object with a ``"metrics"``
list of records ``{"metric": str, "value": finite number, "unit": str, "goal": None | ">= X" |
"<= X", "met": None | bool, "headline": bool}`` (build them with ``_results.metric``), and
optionally ``"summary_md"`` (markdown lines copied into ``summary.md``) and ``"notes"`` (one-line
strings). Register it in :data:`BENCHES` below.
"""

from __future__ import annotations

import argparse
import csv
import datetime as _dt
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from bench._results import machine_info

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_OUT = HERE / "results"
CSV_FIELDS = ("bench", "metric", "value", "unit", "goal", "met")


@dataclass(frozen=True)
class Bench:
    """A bench script and its options in each mode of the runner."""

    name: str
    what: str
    default: tuple[str, ...] = ()
    quick: tuple[str, ...] = ("--quick",)
    full: tuple[str, ...] = ()
    optional: bool = False  # a missing script is "skipped", not "failed"
    script: Path | None = None  # default: bench/NAME.py

    @property
    def path(self) -> Path:
        return self.script if self.script is not None else HERE / f"{self.name}.py"

    def args(self, mode: str) -> tuple[str, ...]:
        return {"default": self.default, "quick": self.quick, "all": self.full}[mode]


BENCHES: dict[str, Bench] = {
    b.name: b
    for b in (
        Bench("sim_throughput", "XNOR-popcount kernels vs the C AVX-512 limit, numpy bitwise_count, float32 BLAS"),
        Bench("onnx_compare", "simulator vs onnxruntime on the same imported QONNX model, images/s",
              full=("--nets", "lfc,sfc,cnv")),
        Bench("cycle_model", "cycle model vs cocotb+Verilator and cocotb+Icarus, simulated cycles/s"),
        Bench("mst_folded", "MST reuse in the folded engine: lane-chunk cycles direct / MST", quick=()),
        Bench("mst_logic", "LUTs of unrolled layers with MST reuse vs plain (Yosys)",
              default=("--skip-styles", "--depths", "4,8", "--model", "digits-tfc-mst", "--layer", "dense1"),
              quick=("--skip-styles", "--depths", "8", "--model", "digits-tfc-mst", "--layer", "dense1",
                     "--families", "ice40")),
        Bench("mst_tradeoff", "accuracy vs MST binary ops of the MST regularizer (trains)",
              default=("--lambdas", "0,0.5", "--seeds", "0,1", "--epochs", "20"),
              quick=("--lambdas", "0,0.5", "--seeds", "0", "--epochs", "5")),
        Bench("hw_efficiency", "board builds: LUTs, BRAM, Fmax, images/s, ops/cycle/LUT, with and without MST"),
        Bench("estimate_calibration", "codegen resource estimates vs Yosys on held-out designs (LUT error)",
              default=("--quick",), quick=("--quick", "--families", "ice40")),
    )
}


class RunnerError(ValueError):
    """A bad runner option: the message names the rule and the value."""


# --------------------------------------------------------------------------------------------
# One bench


@dataclass
class Outcome:
    name: str
    status: str  # "ok", "failed" or "skipped"
    command: list[str] = field(default_factory=list)
    returncode: int | None = None
    seconds: float = 0.0
    error: str | None = None
    log: str | None = None
    raw: str | None = None
    loadavg: list[float] | None = None
    metrics: list[dict[str, Any]] = field(default_factory=list)
    summary: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    interrupted: bool = False  # stopped by Ctrl-C: the runner stops after it


def _load() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:  # pragma: no cover
        return None


def validate_metrics(data: Any) -> list[dict[str, Any]]:
    """The ``metrics`` of a bench's JSON, checked against the contract; ValueError says what is wrong."""
    if not isinstance(data, dict):
        raise ValueError(f"the results file must hold a JSON object, not {type(data).__name__}")
    metrics = data.get("metrics")
    if not isinstance(metrics, list):
        raise ValueError("the results file has no 'metrics' list")
    out = []
    for i, m in enumerate(metrics):
        if not isinstance(m, dict):
            raise ValueError(f"metrics[{i}] must be an object, not {m!r}")
        name, value, unit = m.get("metric"), m.get("value"), m.get("unit")
        if not isinstance(name, str) or not name:
            raise ValueError(f"metrics[{i}] needs a non-empty 'metric' name, not {name!r}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"metrics[{i}] ({name}) needs a finite number 'value', not {value!r}")
        if not isinstance(unit, str):
            raise ValueError(f"metrics[{i}] ({name}) needs a string 'unit', not {unit!r}")
        goal, met = m.get("goal"), m.get("met")
        if goal is not None and not isinstance(goal, str):
            raise ValueError(f"metrics[{i}] ({name}) 'goal' must be a string or null, not {goal!r}")
        if met is not None and not isinstance(met, bool):
            raise ValueError(f"metrics[{i}] ({name}) 'met' must be true, false or null, not {met!r}")
        out.append({"metric": name, "value": float(value), "unit": unit, "goal": goal, "met": met,
                    "headline": bool(m.get("headline", False))})
    return out


def _strings(value: Any) -> list[str]:
    """The strings of an optional list (anything else in its place is ignored)."""
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def _pump(stream: TextIO, log: TextIO, echo: bool) -> None:
    for line in stream:
        log.write(line)
        log.flush()
        if echo:
            sys.stdout.write(line)
            sys.stdout.flush()


def run_bench(bench: Bench, mode: str, out: Path, timeout: float | None, echo: bool) -> Outcome:
    """Run one bench in a child process and read its results (never raises for a bench's fault)."""
    if not bench.path.is_file():
        status = "skipped" if bench.optional else "failed"
        return Outcome(bench.name, status, error=f"{bench.path.relative_to(ROOT) if bench.path.is_relative_to(ROOT) else bench.path} not found")
    raw = out / "raw" / f"{bench.name}.json"
    log_path = out / "logs" / f"{bench.name}.log"
    raw.unlink(missing_ok=True)
    cmd = [sys.executable, str(bench.path), *bench.args(mode), "--json", str(raw)]
    res = Outcome(bench.name, "failed", command=cmd, log=str(log_path))
    load0 = _load()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    t0 = time.perf_counter()
    timed_out = interrupted = False
    with open(log_path, "w") as log:
        log.write("$ " + " ".join(cmd) + "\n")
        log.flush()
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, errors="replace", start_new_session=True)
        pump = threading.Thread(target=_pump, args=(proc.stdout, log, echo), daemon=True)
        pump.start()
        try:
            proc.wait(timeout=timeout)
        except (subprocess.TimeoutExpired, KeyboardInterrupt) as exc:
            timed_out = isinstance(exc, subprocess.TimeoutExpired)
            interrupted = not timed_out
            os.killpg(proc.pid, signal.SIGKILL)  # the bench and what it started in its session
            proc.wait()
        pump.join(timeout=5)
    res.seconds = round(time.perf_counter() - t0, 2)
    res.returncode = proc.returncode
    res.loadavg = [load0, _load()]
    res.interrupted = interrupted
    errors = []
    if timed_out:
        errors.append(f"timed out after {timeout:g} s (--timeout)")
    elif interrupted:
        errors.append("interrupted (Ctrl-C)")
    elif proc.returncode != 0:
        errors.append(f"exit status {proc.returncode}")
    if raw.is_file():
        res.raw = str(raw)
        try:
            data = json.loads(raw.read_text())
            res.metrics = validate_metrics(data)
            res.summary = _strings(data.get("summary_md"))
            res.notes = _strings(data.get("notes"))
        except ValueError as exc:  # json.JSONDecodeError is a ValueError
            errors.append(f"bad results file {raw.name}: {exc}")
    elif not (timed_out or interrupted):
        errors.append("no results file written")
    if errors:
        output = log_path.read_text(errors="replace").splitlines()[1:]  # after the "$ command" line
        tail = [ln.strip() for ln in output if ln.strip()][-3:]
        res.error = "; ".join(errors) + (" -- last output: " + " | ".join(tail) if tail else "")
    else:
        res.status = "ok"
    return res


# --------------------------------------------------------------------------------------------
# Reports


def _fmt(v: float) -> str:
    if v == 0 or 1e-3 <= abs(v) < 1e3:
        return f"{v:.3g}"
    if 1e3 <= abs(v) < 1e12:
        return f"{v:,.0f}"
    return f"{v:.3e}"


def write_csv(path: Path, outcomes: list[Outcome]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(CSV_FIELDS)
        for o in outcomes:
            for m in o.metrics:
                met = "" if m["met"] is None else str(m["met"]).lower()
                w.writerow([o.name, m["metric"], repr(m["value"]), m["unit"], m["goal"] or "", met])


def summary_markdown(report: dict[str, Any], outcomes: list[Outcome]) -> str:
    mach = report["machine"]
    load = report["loadavg"]
    lines = [
        "# bnnfab benchmarks",
        "",
        f"- machine: {mach['cpu']}, {mach['cpus']} CPUs, Python {mach['python']}, {mach['platform']}",
        f"- date: {report['started']} (UTC), mode `{report['mode']}`, {report['seconds']:.0f} s in all",
        f"- load average (1 min): {load[0]} at start, {load[1]} at end; the machine may be shared: "
        "compare ratios from one run",
        f"- command: `{report['command']}`",
        "",
        "| bench | status | seconds | figures | goals met |",
        "|---|---|---:|---:|---:|",
    ]
    for o in outcomes:
        goals = [m for m in o.metrics if m["goal"] is not None]
        met = f"{sum(bool(m['met']) for m in goals)}/{len(goals)}" if goals else "-"
        lines.append(f"| {o.name} | {o.status} | {o.seconds:.0f} | {len(o.metrics)} | {met} |")
    for o in outcomes:
        lines += ["", f"## {o.name}: {o.status}", ""]
        if o.error:
            lines += [f"{'Skipped' if o.status == 'skipped' else 'Error'}: {o.error}", ""]
        shown = [m for m in o.metrics if m["headline"] or m["goal"] is not None]
        if shown:
            lines += ["| figure | value | unit | goal | met |", "|---|---:|---|---|---|"]
            for m in shown:
                met = "" if m["met"] is None else ("yes" if m["met"] else "**no**")
                lines.append(f"| {m['metric']} | {_fmt(m['value'])} | {m['unit']} | {m['goal'] or ''} | {met} |")
            rest = len(o.metrics) - len(shown)
            if rest:
                lines.append(f"\n({rest} more figures in results.csv)")
        lines += o.summary
        lines += [f"- {n}" for n in o.notes]
    return "\n".join(lines).rstrip() + "\n"


# --------------------------------------------------------------------------------------------


def _names(text: str | None, option: str) -> list[str]:
    if text is None:
        return []
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in BENCHES]
    if unknown or not names:
        raise RunnerError(f"{option} takes bench names from {', '.join(BENCHES)}; unknown: {', '.join(unknown) or repr(text)}")
    return names


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m bench",
        description="Run bnnfab's benchmarks and collect results.json, results.csv and summary.md.",
        epilog="What runs" + __doc__.split("What runs", 1)[1].split("The bench contract", 1)[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="every bench shortened (a smoke run)")
    mode.add_argument("--all", action="store_true", help="every bench at its full settings (mst_logic ~30 min)")
    ap.add_argument("--only", metavar="NAME,...", help="run only these benches")
    ap.add_argument("--skip", metavar="NAME,...", help="do not run these benches")
    ap.add_argument("--out", metavar="DIR", default=str(DEFAULT_OUT), help="output folder (default bench/results/)")
    ap.add_argument("--timeout", type=float, default=None, metavar="S", help="seconds per bench before it is killed and failed")
    ap.add_argument("--quiet", action="store_true", help="do not echo the benches' output (it is still logged)")
    ap.add_argument("--list", action="store_true", help="list the benches and their options per mode, then exit")
    return ap


def main(argv: list[str] | None = None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    try:
        only, skip = _names(args.only, "--only"), _names(args.skip, "--skip")
        if args.timeout is not None and not args.timeout > 0:
            raise RunnerError(f"--timeout must be a positive number of seconds, not {args.timeout:g}")
    except RunnerError as exc:
        ap.error(str(exc))
    mode = "quick" if args.quick else "all" if args.all else "default"
    if args.list:
        for b in BENCHES.values():
            opts = {m: " ".join(b.args(m)) or "(none)" for m in ("default", "quick", "all")}
            print(f"{b.name:<15} {b.what}\n{'':<15} default: {opts['default']}; --quick: {opts['quick']}; "
                  f"--all: {opts['all']}{'; optional' if b.optional else ''}")
        return 0
    selected = [b for name, b in BENCHES.items() if (not only or name in only) and name not in skip]
    out = Path(args.out)
    (out / "raw").mkdir(parents=True, exist_ok=True)
    (out / "logs").mkdir(parents=True, exist_ok=True)

    started = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0)
    machine = machine_info()
    t0 = time.perf_counter()
    command = "python -m bench " + " ".join(argv if argv is not None else sys.argv[1:])
    outcomes: list[Outcome] = []
    for b in selected:
        print(f"\n=== {b.name} ({mode}): {b.what}", flush=True)
        o = run_bench(b, mode, out, args.timeout, echo=not args.quiet)
        outcomes.append(o)
        detail = f": {o.error}" if o.error else ""
        print(f"=== {b.name}: {o.status.upper()} in {o.seconds:.0f} s, {len(o.metrics)} figures{detail}", flush=True)
        # after every bench, so an interrupted or killed run keeps what it measured
        write_reports(out, command, mode, started, machine, time.perf_counter() - t0, outcomes)
        if o.interrupted:
            break
    else:
        write_reports(out, command, mode, started, machine, time.perf_counter() - t0, outcomes)
    failed = [o.name for o in outcomes if o.status == "failed"]
    print(f"\nwrote {out / 'results.json'}, results.csv and summary.md; "
          + (f"FAILED: {', '.join(failed)}" if failed else "no bench failed"))
    if outcomes and outcomes[-1].interrupted:
        print(f"interrupted: {len(selected) - len(outcomes)} bench(es) not run")
        return 130
    return 1 if failed else 0


def write_reports(out: Path, command: str, mode: str, started, machine: dict, seconds: float,
                  outcomes: list[Outcome]) -> None:
    """``results.json``, ``results.csv`` and ``summary.md`` of the benches run so far."""
    report = {
        "schema": 1,
        "command": command,
        "mode": mode,
        "started": started.isoformat(),
        "seconds": round(seconds, 1),
        "machine": machine,
        "loadavg": [machine["loadavg"][0] if machine["loadavg"] else None, _load()],
        "benches": [vars(o) for o in outcomes],
    }
    (out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    write_csv(out / "results.csv", outcomes)
    (out / "summary.md").write_text(summary_markdown(report, outcomes))


if __name__ == "__main__":
    sys.exit(main())
