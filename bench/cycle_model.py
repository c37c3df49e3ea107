"""Simulated cycles per second of the cycle model against cocotb+Verilator and cocotb+Icarus.

Usage::

    python bench/cycle_model.py [--quick] [--images N] [--model-images M] [--repeats R] [--json PATH]

Two designs are generated from the default bundled model: every layer folded to 64 cycles per
image (``GenConfig(target_cycles=64)``), and the same with the output layer unrolled with MST
reuse. For each design:

1. the Verilog is compiled for Icarus and for Verilator with :func:`bnnfab.codegen.rtlsim.build_rtl`
   into a fresh folder (the build time is reported on its own line, never in a rate);
2. ``N`` images (the digits "all" split, repeated past its end) go through
   :func:`bnnfab.codegen.verify.verify_design` on each simulator with random valid and ready
   stalls, reusing that build. It checks every result against the functional simulator and every
   beat's cycle against the cycle model; a failure is printed and makes the exit status 1. Its
   ``seconds`` (the simulator process, start-up included, build excluded) and the cycles the
   bench counted give the rate. A one-image run on the same build measures the start-up, for a
   second, marginal rate;
3. :func:`bnnfab.sim.cycles.simulate_cycles` runs on the design's blocks with the same number of
   images and the very same stall patterns (built as ``verify_design`` builds them; the beats'
   cycles are compared with those the RTL run recorded), then on ``M`` images (default 100,000)
   with Bernoulli(0.3) patterns from numpy, where its per-call overhead no longer counts. Each
   figure is the median of ``R`` timed calls of the public function (pattern conversion included);
   the first call of the process (Numba cache load or compile) is reported apart;
4. the same two model runs with the stepper specialised to the design's chain
   (``simulate_cycles(..., specialise=True)``: its loops over the blocks unrolled and its
   parameters constants; bnnfab uses it by itself for runs of ``SPECIALISE_CYCLES`` cycles and
   more), after compiling it once: the compile time is reported apart, as Verilator's build is.

The two ratio columns divide the generic cycle model's rate (on ``N``, and on ``M`` images) by
each RTL row's rate. The goal is a cycle model at least 1000x faster than cocotb+Verilator on the
same images and stalls, by wall time, with compilation outside the rates on both sides (the
specialised stepper against Verilator's compiled model; the generic stepper's ratio is printed
beside it); the goal lines also give the ratio with Verilator's start-up
taken out, and by CPU time (the simulator process's from ``getrusage(RUSAGE_CHILDREN)``, the
model's thread's), which other load on the machine changes less. Cycle counts differ slightly between
rows: the bench keeps clocking 8 drain cycles after the last result, the cycle model stops at it.
The machine is shared: compare figures from one run only. Nothing is written unless
``--json PATH`` is given; build folders go to a temporary directory that is removed at exit.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import resource
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from bnnfab.codegen.config import Engine, GenConfig, LayerChoice
from bnnfab.codegen.generate import generate, timing_summary, write_design
from bnnfab.codegen.rtlsim import RtlBuildError, ToolNotFoundError, build_rtl, get_simulator
from bnnfab.codegen.tb.streams import StallMode, StallSpec
from bnnfab.codegen.verify import DesignDir, load_design_dir, verify_design
from bnnfab.models import zoo
from bnnfab.models.datasets import load_dataset
from bnnfab.sim.cycles import SPECIALISE_CYCLES, CycleTrace, simulate_cycles

try:  # run as a script: bench/ is on sys.path
    from _results import finite, metric
except ImportError:  # pragma: no cover - imported as bench.cycle_model
    from bench._results import finite, metric

GOAL = 1000.0  # cycle model vs cocotb+Verilator, simulated cycles per second
SEED = 1  # verify_design's stall seed
STALLS = "random"
STALL_PROBABILITY = 0.3  # what verify_design uses on both sides
SIMULATORS = ("icarus", "verilator")
LABELS = {"icarus": "cocotb+Icarus", "verilator": "cocotb+Verilator"}


# --------------------------------------------------------------------------------------------
# Results


@dataclass
class Row:
    """One line of a design's table."""

    simulator: str
    images: int
    cycles: int
    seconds: float
    passed: bool | None = None  # RTL rows: verify_design's verdict
    cpu_seconds: float = float("nan")  # CPU time: the simulator process's, or the model's thread's

    @property
    def rate(self) -> float:
        return self.cycles / self.seconds if self.seconds > 0 else float("nan")

    @property
    def cpu_rate(self) -> float:
        return self.cycles / self.cpu_seconds if self.cpu_seconds > 0 else float("nan")


@dataclass
class RtlRun:
    """An RTL simulator on one design: build, start-up probe, the N-image run."""

    simulator: str
    label: str
    build_seconds: float
    row: Row
    startup: Row  # the one-image run
    summary: str
    same_cycles_as_model: bool | None  # the RTL's beat cycles equal the bench's cycle-model trace

    @property
    def marginal_rate(self) -> float:
        dc = self.row.cycles - self.startup.cycles
        ds = self.row.seconds - self.startup.seconds
        return dc / ds if dc > 0 and ds > 0 else float("nan")


@dataclass
class DesignResult:
    name: str
    description: str
    blocks: list[dict]
    timing: dict
    rtl: list[RtlRun] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # simulator -> why
    model_same: Row | None = None
    model_many: Row | None = None
    model_first_call: float = 0.0
    model_runs: dict[str, list[float]] = field(default_factory=dict)
    spec_same: Row | None = None  # the stepper specialised to this chain
    spec_many: Row | None = None
    spec_compile: float = 0.0  # its compilation, once per chain and process (not in any rate)

    def rtl_run(self, simulator: str) -> RtlRun | None:
        return next((r for r in self.rtl if r.simulator == simulator), None)


# --------------------------------------------------------------------------------------------
# Designs, images and stall patterns


def designs(model) -> list[tuple[str, str, GenConfig]]:
    last = model.compute_layers[-1][0]
    return [
        ("folded", "every layer folded, target 64 cycles/image", GenConfig(target_cycles=64)),
        (
            "unrolled-out",
            f"folded to 64 cycles/image, output layer {last} unrolled with MST reuse",
            GenConfig(target_cycles=64, layers={last: LayerChoice(engine=Engine.UNROLLED)}),
        ),
    ]


def bench_images(n: int) -> np.ndarray:
    """``n`` digits images: the "all" split, repeated past its end (timing does not depend on data)."""
    x = load_dataset("digits", "all").x
    return np.take(x, np.arange(n) % len(x), axis=0)


def verify_patterns(design: DesignDir, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``in_valid`` and ``out_ready`` exactly as :func:`verify_design` draws them for ``n`` images."""
    mode = StallMode(STALLS)
    valid_spec = StallSpec(mode=mode, seed=f"valid-{SEED}", probability=STALL_PROBABILITY)
    ready_spec = StallSpec(mode=mode, seed=f"ready-{SEED}", probability=STALL_PROBABILITY)
    horizon = 4 * (simulate_cycles(design.blocks, n).cycles + 64)
    in_valid = np.array([not s for s in valid_spec.take(horizon)], dtype=bool)
    out_ready = np.array([not s for s in ready_spec.take(horizon)], dtype=bool)
    return in_valid, out_ready


def numpy_patterns(design: DesignDir, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Bernoulli stall patterns (True = go) of the same density and horizon rule, drawn by numpy."""
    horizon = 4 * (simulate_cycles(design.blocks, n).cycles + 64)
    return rng.random(horizon) >= STALL_PROBABILITY, rng.random(horizon) >= STALL_PROBABILITY


# --------------------------------------------------------------------------------------------
# Measurements


def time_model(design: DesignDir, n: int, in_valid, out_ready, repeats: int, label: str,
               specialise: bool = False) -> tuple[Row, list[float]]:
    """Row of the median wall time (and median thread CPU time) of ``repeats`` calls; the wall times."""
    times, cpu = [], []
    trace = None
    for _ in range(repeats):
        c0, t0 = time.thread_time(), time.perf_counter()
        trace = simulate_cycles(design.blocks, n, in_valid, out_ready, specialise=specialise)
        times.append(time.perf_counter() - t0)
        cpu.append(time.thread_time() - c0)
    row = Row(label, n, trace.cycles, statistics.median(times), cpu_seconds=statistics.median(cpu))
    return row, times


def _children_cpu() -> float:
    """CPU seconds of the finished child processes (the simulator, waited for by cocotb's runner)."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def rtl_beat_cycles(log_path: str | None) -> dict | None:
    """Accepted and emitted beat cycles the RTL bench wrote beside its log, or None."""
    if not log_path:
        return None
    out = Path(log_path).parent / "bench_output.json"
    if not out.is_file():
        return None
    data = json.loads(out.read_text())
    return {k: [int(t[0]) for t in data.get(k, [])] for k in ("accepted", "emitted")}


def run_rtl(sim: str, design: DesignDir, images: np.ndarray, work: Path, trace: CycleTrace) -> RtlRun:
    tool = get_simulator(sim)  # ToolNotFoundError says what to install
    major, minor = tool.version
    label = f"{LABELS[sim]} {major}.{minor:03d}" if sim == "verilator" else f"{LABELS[sim]} {major}.{minor}"
    build_dir = work / f"build-{sim}"
    # The build verify_design would do, done first so its time is measured apart; verify_design
    # finds it by content key in the same folder and reuses it.
    build = build_rtl(toplevel=design.top, build_dir=build_dir, simulator=tool, verilog_sources=[design.verilog])
    probe = verify_design(design, images[:1], simulator=sim, seed=SEED, stalls=STALLS, build_dir=build_dir)
    cpu0 = _children_cpu()
    report = verify_design(design, images, simulator=sim, seed=SEED, stalls=STALLS, build_dir=build_dir)
    cpu = _children_cpu() - cpu0
    beats = rtl_beat_cycles(report.log_path)
    same = None
    if beats is not None:
        same = beats["accepted"] == trace.accept.tolist() and beats["emitted"] == trace.emit.tolist()
    return RtlRun(
        simulator=sim,
        label=label,
        build_seconds=build.seconds,
        row=Row(label, report.images, report.cycles, report.seconds, report.passed, cpu),
        startup=Row(label, probe.images, probe.cycles, probe.seconds, probe.passed),
        summary="\n".join(r.summary() for r in (report, probe) if not r.passed),
        same_cycles_as_model=same,
    )


def bench_design(name, description, config, model, args, work: Path, first_call: list) -> DesignResult:
    built = generate(model, config)
    if not first_call:  # the process's first call: Numba loads the kernel from its cache, or compiles it
        t0 = time.perf_counter()
        simulate_cycles(built.blocks, args.images)
        first_call.append(time.perf_counter() - t0)
    folder = work / name
    write_design(built, folder)  # its timing summary calls the cycle model too
    design = load_design_dir(folder)
    res = DesignResult(
        name=name,
        description=description,
        blocks=[{"kind": b.kind.name, "params": list(b.params), "label": b.label} for b in design.blocks],
        timing=timing_summary(design.blocks),
    )
    n = args.images
    images = bench_images(n)
    in_valid, out_ready = verify_patterns(design, n)
    res.model_first_call = first_call[0]
    trace = simulate_cycles(design.blocks, n, in_valid, out_ready)

    # one thing at a time: the RTL simulators, then the cycle model
    for sim in SIMULATORS:
        try:
            res.rtl.append(run_rtl(sim, design, images, work / name, trace))
        except ToolNotFoundError as exc:
            res.skipped[sim] = str(exc)
        except RtlBuildError as exc:  # a broken design or toolchain: report it, count it as a failure
            res.skipped[sim] = f"BUILD FAILED: {exc}"

    label = f"cycle model, median of {args.repeats}"
    res.model_same, res.model_runs["same"] = time_model(design, n, in_valid, out_ready, args.repeats, label)
    m = args.model_images
    iv, orr = numpy_patterns(design, m, np.random.default_rng(SEED))
    res.model_many, res.model_runs["many"] = time_model(design, m, iv, orr, args.repeats, label)
    t0 = time.perf_counter()
    simulate_cycles(design.blocks, 1, specialise=True)  # compiles the chain's own stepper
    res.spec_compile = time.perf_counter() - t0
    label = f"cycle model specialised, median of {args.repeats}"
    res.spec_same, res.model_runs["spec_same"] = time_model(design, n, in_valid, out_ready, args.repeats, label, True)
    res.spec_many, res.model_runs["spec_many"] = time_model(design, m, iv, orr, args.repeats, label, True)
    return res


# --------------------------------------------------------------------------------------------
# Report


def _si(v: float) -> str:
    if not np.isfinite(v):
        return "n/a"
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if v >= div:
            return f"{v / div:.3g}{suffix}"
    return f"{v:.3g}"


def _ratio(v: float) -> str:
    return "n/a" if not np.isfinite(v) else f"{v:,.0f}x" if v >= 10 else f"{v:.2f}x"


def print_design(res: DesignResult) -> None:
    t = res.timing
    print(f"\n{res.name}: {res.description}")
    print(
        "  blocks: " + " -> ".join(f"{b['label']} {b['kind']}{tuple(b['params'])}" for b in res.blocks)
        + f"; {t['cycles_per_image']} cycles/image, latency {t['latency_cycles']} cycles unstalled"
    )
    same, many = res.model_same, res.model_many
    head = (
        f"  {'simulator':<38} {'images':>7} {'cycles':>11} {'seconds':>9} {'cycles/s':>9} "
        f"{f'model@{same.images:,} / this':>20} {f'model@{many.images:,} / this':>22}  check"
    )
    print(head)
    print("  " + "-" * (len(head) - 2))
    rows = [(r.row, "PASS" if r.row.passed else "FAIL") for r in res.rtl] + [(same, ""), (many, "")]
    rows += [(res.spec_same, ""), (res.spec_many, "")]
    for row, check in rows:
        is_rtl = bool(check)
        print(
            f"  {row.simulator:<38} {row.images:>7,} {row.cycles:>11,} {row.seconds:>9.4g} {_si(row.rate):>9} "
            f"{_ratio(same.rate / row.rate) if is_rtl else '':>20} {_ratio(many.rate / row.rate) if is_rtl else '':>22}  {check}"
        )
    for sim, why in res.skipped.items():
        print(f"  {LABELS[sim]}: skipped ({why})")
    for r in res.rtl:
        agree = {True: "equal", False: "DIFFERENT", None: "not checked"}[r.same_cycles_as_model]
        print(
            f"  {r.label}: build {r.build_seconds:.1f} s (not in any rate); start-up {r.startup.seconds:.2f} s "
            f"(a 1-image run, {r.startup.cycles} cycles); without it {_si(r.marginal_rate)} cycles/s; process CPU "
            f"{r.row.cpu_seconds:.2f} s ({_si(r.row.cpu_rate)} cycles/s); "
            f"its beat cycles and the bench's cycle-model trace: {agree}"
        )
        if not r.row.passed or not r.startup.passed:
            print("    " + r.summary.replace("\n", "\n    "))
    runs = res.model_runs
    print(
        f"  cycle model: {same.images:,} images {min(runs['same']) * 1e3:.3f}..{max(runs['same']) * 1e3:.3f} ms, "
        f"{many.images:,} images {min(runs['many']) * 1e3:.1f}..{max(runs['many']) * 1e3:.1f} ms (min..max of "
        f"{len(runs['many'])} calls); by thread CPU time {_si(same.cpu_rate)} and {_si(many.cpu_rate)} cycles/s; "
        f"first call of the process {res.model_first_call * 1e3:.0f} ms (Numba cache load or compile)"
    )
    sv = res.rtl_run("verilator")
    vs = f"; {_ratio(res.spec_same.rate / sv.row.rate)} cocotb+Verilator on the same images" if sv else ""
    print(
        f"  specialised stepper (loops over the blocks unrolled, parameters constant; bnnfab uses it by itself from "
        f"{SPECIALISE_CYCLES:,} cycles): compiled in {res.spec_compile:.2f} s, once per chain and process, in no rate, "
        f"like Verilator's build; {_si(res.spec_same.rate)} and {_si(res.spec_many.rate)} cycles/s{vs}"
    )


def goal_lines(results: list[DesignResult]) -> tuple[list[str], bool | None]:
    lines, met = [], []
    for res in results:
        v = res.rtl_run("verilator")
        if v is None:
            lines.append(f"  {res.name}: no Verilator figure ({res.skipped.get('verilator', 'not run')})")
            continue
        same = res.spec_same.rate / v.row.rate
        many = res.spec_many.rate / v.row.rate
        steady = res.spec_many.rate / v.marginal_rate
        by_cpu = res.spec_same.cpu_rate / v.row.cpu_rate
        generic = res.model_same.rate / v.row.rate
        ok = same >= GOAL and v.row.passed
        met.append(ok)
        verdict = ("MET" if ok else "NOT MET") if v.row.passed else "NOT MET (the RTL run failed verification)"
        lines.append(
            f"  {res.name}: specialised stepper {_ratio(same)} on the same {v.row.images:,} images -> {verdict} "
            f"({same / GOAL:.2f} of the goal's 1000x); {_ratio(many)} with the model on {res.spec_many.images:,} "
            f"images; {_ratio(steady)} with start-up taken out of Verilator's figure (model on "
            f"{res.spec_many.images:,}); {_ratio(by_cpu)} by CPU time instead of wall time; the generic stepper "
            f"(short runs, no compilation) {_ratio(generic)}"
        )
    return lines, (all(met) if met else None)


def metrics(results: list[DesignResult]) -> list[dict]:
    """The figures as ``python -m bench`` records (bench/_results.py): cycles/s of every row and
    the cycle model's ratios to each RTL simulator (goal >= 1000x for Verilator, same images)."""
    out = []
    for res in results:
        same, many = res.model_same, res.model_many
        out.append(metric(f"{res.name} cycle model cycles/s ({same.images:,} images)", same.rate, "cycles/s", headline=True))
        out.append(metric(f"{res.name} cycle model cycles/s ({many.images:,} images)", many.rate, "cycles/s"))
        out.append(metric(f"{res.name} specialised cycle model cycles/s ({many.images:,} images)", res.spec_many.rate, "cycles/s"))
        out.append(metric(f"{res.name} specialised cycle model compile", res.spec_compile, "s"))
        for r in res.rtl:
            label = LABELS[r.simulator]
            out.append(metric(f"{res.name} {label} cycles/s ({r.row.images:,} images)", r.row.rate, "cycles/s", headline=True))
            out.append(metric(f"{res.name} {label} cycles/s without start-up", r.marginal_rate, "cycles/s"))
            goal = f">= {GOAL:g}" if r.simulator == "verilator" and r.row.passed else None
            out.append(metric(f"{res.name} cycle model / {label} (same images)", same.rate / r.row.rate, "x", headline=True))
            out.append(metric(f"{res.name} specialised cycle model / {label} (same images)", res.spec_same.rate / r.row.rate,
                              "x", goal=goal, headline=True))
            out.append(metric(f"{res.name} cycle model ({many.images:,} images) / {label}", many.rate / r.row.rate, "x"))
            out.append(metric(f"{res.name} cycle model / {label} by CPU time", same.cpu_rate / r.row.cpu_rate, "x"))
    return [m for m in out if np.isfinite(m["value"])]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="20 RTL images, 10k model images, 3 repeats (a smoke run)")
    ap.add_argument("--images", type=int, default=None, metavar="N", help="images through the RTL and the model (default 1000, quick 20)")
    ap.add_argument("--model-images", type=int, default=None, metavar="M", help="images of the long cycle-model run (default 100000, quick 10000)")
    ap.add_argument("--repeats", type=int, default=None, metavar="R", help="timed cycle-model calls per figure (default 7, quick 3)")
    ap.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    args = ap.parse_args(argv)
    for name, default, quick in (("images", 1000, 20), ("model_images", 100_000, 10_000), ("repeats", 7, 3)):
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else default)
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be a positive integer, not {getattr(args, name)}")

    load0 = os.getloadavg()[0]
    versions = {p: importlib.metadata.version(p) for p in ("cocotb", "numba", "numpy")}
    print(
        f"bnnfab cycle-model bench: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        + ", ".join(f"{k} {v}" for k, v in versions.items())
        + f"; ccache on PATH: {'yes' if shutil.which('ccache') else 'no'}"
    )
    print(
        f"{args.images:,} digits images through each simulator, {STALLS} valid/ready stalls "
        f"(p = {STALL_PROBABILITY}, seed {SEED}); cycle model also on {args.model_images:,} images"
    )
    model = zoo.load(zoo.DEFAULT)
    results: list[DesignResult] = []
    first_call: list[float] = []
    with tempfile.TemporaryDirectory(prefix="bnnfab-bench-cm-") as tmp:
        for name, description, config in designs(model):
            res = bench_design(name, description, config, model, args, Path(tmp), first_call)
            results.append(res)
            print_design(res)

    lines, met = goal_lines(results)
    print(f"\ngoal: cycle model >= {GOAL:,.0f}x cocotb+Verilator in simulated cycles/s (same images, same stalls):")
    print("\n".join(lines))
    print(
        f"seconds of an RTL row: the simulator process with cocotb (start-up included, C++ build excluded); "
        f"of the cycle model: one simulate_cycles call. Load average (1 min) at start {load0:.2f}, at end "
        f"{os.getloadavg()[0]:.2f} on a shared machine."
    )
    failed = [f"{res.name}/{r.simulator}" for res in results for r in res.rtl if not (r.row.passed and r.startup.passed)]
    failed += [f"{res.name}/{sim} (build)" for res in results for sim, why in res.skipped.items() if why.startswith("BUILD FAILED")]
    if failed:
        print(f"VERIFICATION FAILED: {', '.join(failed)}")
    if args.json:
        out = {
            "machine": {"processor": platform.processor(), "cpus": os.cpu_count(), "python": sys.version.split()[0], **versions},
            "options": vars(args),
            "goal_ratio": GOAL,
            "goal_met": met,
            "metrics": metrics(results),
            "designs": [
                {
                    **{k: v for k, v in asdict(res).items() if k not in ("rtl", "model_same", "model_many")},
                    "rtl": [
                        {
                            "simulator": r.simulator,
                            "label": r.label,
                            "build_seconds": r.build_seconds,
                            "run": {**asdict(r.row), "cycles_per_s": r.row.rate, "cpu_cycles_per_s": r.row.cpu_rate},
                            "startup_run": {**asdict(r.startup), "cycles_per_s": r.startup.rate},
                            "marginal_cycles_per_s": r.marginal_rate,
                            "same_cycles_as_model": r.same_cycles_as_model,
                            "model_ratio_same_images": res.model_same.rate / r.row.rate,
                            "model_ratio_many_images": res.model_many.rate / r.row.rate,
                        }
                        for r in res.rtl
                    ],
                    "model_same": {**asdict(res.model_same), "cycles_per_s": res.model_same.rate, "cpu_cycles_per_s": res.model_same.cpu_rate},
                    "model_many": {**asdict(res.model_many), "cycles_per_s": res.model_many.rate, "cpu_cycles_per_s": res.model_many.cpu_rate},
                }
                for res in results
            ],
        }
        Path(args.json).write_text(json.dumps(finite(out), indent=2) + "\n")
        print(f"wrote {args.json}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
