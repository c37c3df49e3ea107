"""Throughput of the simulator's XNOR-popcount kernels against the machine's limit and baselines.

Usage::

    python bench/sim_throughput.py [--quick] [--repeats N] [--json PATH]

Binary GOPS = 2*M*N*K / time, for the kernels the simulator runs (``bnnfab.sim.kernels``
``gemm_popcount``, ``gemm_threshold``, ``conv_popcount``, ``conv_threshold``; no bench-only twin)
on large layers, on one core and on every core (``numba.set_num_threads``), next to:

* the machine limit, two ways: a reference C AVX-512 kernel (``bench/_c_ref.c``, compiled here with
  ``gcc -O3 -march=native``; skipped with a note without gcc) on the same GEMM shape, and a
  theoretical peak from a clock measured with a chain of dependent zmm adds and a port model
  (3 vector ops per 512-bit word: xor, popcount, add). The "% limit" column uses the C kernel;
  the "% peak" column the theoretical figure;
* numpy ``bitwise_count(a ^ w).sum(-1)`` (single-threaded numpy), on the first rows;
* a float32 ±1 matmul through numpy's BLAS (threads limited with threadpoolctl), first 512 rows.

Every figure is the median of ``--repeats`` runs. The Numba kernels and the C reference run
interleaved, round by round, so their ratios come from the same spells of machine load; the
baselines run after them (OpenBLAS's idle workers spin for a while after a call and would take a
core from whatever ran next). The machine is shared: compare figures from one run only.
``OPENBLAS_CORETYPE`` and ``OPENBLAS_L2_SIZE`` are removed from this process's environment by
re-executing it (they slow the float32 baseline, perf.md); tests never do this. Nothing is
written unless ``--json PATH`` is given.
"""

from __future__ import annotations

import os
import sys

_BLAS_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
if __name__ == "__main__" and any(v in os.environ for v in _BLAS_VARS):
    # Before numpy loads OpenBLAS: re-exec without the variables (bench only).
    _env = {k: v for k, v in os.environ.items() if k not in _BLAS_VARS}
    _env["_BNNFAB_BENCH_UNSET"] = ",".join(v for v in _BLAS_VARS if v in os.environ)
    os.execve(sys.executable, [sys.executable, os.path.abspath(__file__), *sys.argv[1:]], _env)

import argparse  # noqa: E402
import ctypes  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import textwrap  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402

import numba  # noqa: E402
import numpy as np  # noqa: E402

from bnnfab.models.bits import unpack_bits  # noqa: E402
from bnnfab.sim import kernels  # noqa: E402

try:  # run as a script: bench/ is on sys.path
    from _results import metric, threads as _threads  # noqa: E402
except ImportError:  # pragma: no cover - imported as bench.sim_throughput
    from bench._results import metric, threads as _threads  # noqa: E402

try:  # scikit-learn's dependency; without it the float32 baseline runs with BLAS's own threads
    from threadpoolctl import threadpool_limits
except ImportError:  # pragma: no cover
    threadpool_limits = None

HERE = Path(__file__).resolve().parent
F32_ROWS = 512  # rows of the float32 baseline: plenty for BLAS to reach its rate


# --------------------------------------------------------------------------------------------
# Layers


@dataclass(frozen=True)
class Layer:
    name: str
    kind: str  # "dense" or "conv"
    m: int  # GEMM rows: batch for dense, B*Ho*Wo for conv
    n: int
    k: int
    conv: dict = field(default_factory=dict)  # b, h, w, c, kernel, stride, pads for conv

    @property
    def ops(self) -> float:
        return 2.0 * self.m * self.n * self.k


def layers(quick: bool) -> list[Layer]:
    if quick:
        dense = Layer("dense 1024x2304->512", "dense", 1024, 512, 2304)
        b, h, w, c, n = 2, 16, 16, 256, 256
    else:
        dense = Layer("dense 4096x4608->1024", "dense", 4096, 1024, 4608)
        b, h, w, c, n = 8, 32, 32, 256, 512
    conv = Layer(
        f"conv3x3 {b}x{h}x{w}x{c}->{n}",
        "conv",
        b * h * w,
        n,
        9 * c,
        dict(b=b, h=h, w=w, c=c, kernel=(3, 3), stride=(1, 1), pads=(1, 1, 1, 1)),
    )
    return [dense, conv]


# --------------------------------------------------------------------------------------------
# C reference


class CRef:
    """The compiled ``_c_ref.c`` (None attributes when gcc or AVX-512 is missing)."""

    def __init__(self):
        self.lib = None
        self.note = ""
        self.openmp = False
        gcc = shutil.which("gcc")
        if gcc is None:
            self.note = "gcc not found: C reference skipped"
            return
        self._tmp = tempfile.TemporaryDirectory(prefix="bnnfab-cref-")
        so = Path(self._tmp.name) / "c_ref.so"
        base = [gcc, "-O3", "-march=native", "-shared", "-fPIC", str(HERE / "_c_ref.c"), "-o", str(so)]
        for flags in (["-fopenmp"], []):
            res = subprocess.run(base + flags, capture_output=True, text=True)
            if res.returncode == 0:
                break
        else:
            self.note = "C reference did not compile (no AVX-512 VPOPCNTDQ?): " + res.stderr.strip()[:200]
            return
        lib = ctypes.CDLL(str(so))
        p, i64 = ctypes.c_void_p, ctypes.c_int64
        lib.ref_gemm_popcount.argtypes = [p, p, i64, i64, i64, p, i64, i64, ctypes.c_int]
        lib.ref_gemm_popcount.restype = None
        for fn in (lib.ref_clock_gpr, lib.ref_clock_zmm):
            fn.argtypes = [i64, i64]
            fn.restype = i64
        lib.ref_has_openmp.restype = ctypes.c_int
        self.lib = lib
        self.openmp = bool(lib.ref_has_openmp())
        if not self.openmp:
            self.note = "C reference built without OpenMP: its multi-core figure is one core"

    def gemm(self, a, pw, threads):
        """Popcounts (M, N) int32 into a new array, as gemm_popcount returns them (the page faults
        of a fresh output are part of both figures)."""
        out = np.empty((a.shape[0], pw.n), dtype=np.int32)
        self.lib.ref_gemm_popcount(
            a.ctypes.data, pw.panels.ctypes.data, a.shape[0], pw.kw, pw.n_panels, out.ctypes.data, pw.n, pw.k, threads
        )
        return out

    def clock_ghz(self, which: str, seconds: float = 0.05, tries: int = 7) -> float:
        """Max over tries of adds per second of a dependent 1-cycle chain (load only slows it)."""
        fn = self.lib.ref_clock_gpr if which == "gpr" else self.lib.ref_clock_zmm
        iters = int(seconds * 3e9 / 8)
        best = 0.0
        for _ in range(tries):
            t = time.perf_counter()
            fn(iters, 3)
            best = max(best, 8 * iters / (time.perf_counter() - t))
        return best / 1e9


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "")
    except OSError:
        return platform.machine()


def port_model() -> tuple[float, str]:
    """512-bit words per cycle per core of xor+popcount+add, and the assumption behind it."""
    vendor = ""
    try:
        with open("/proc/cpuinfo") as f:
            vendor = next((ln.split(":")[1].strip() for ln in f if ln.startswith("vendor_id")), "")
    except OSError:
        pass
    if vendor == "AuthenticAMD":
        return 4 / 3, "AMD Zen 5: 4 vector ALUs, 2 of them VPOPCNTQ -> 4/3 words/cycle (perf.md)"
    return 2 / 3, "Intel server core: 2 ports for 512-bit ops (p0+p1 fused, p5), VPOPCNTQ on p5 -> 2/3 words/cycle"


# --------------------------------------------------------------------------------------------
# Candidates


def median_times(fns: dict, repeats: int) -> dict:
    """Median seconds of each callable, run interleaved round by round after one warm-up (the
    ratios between them then come from the same spells of machine load)."""
    for f in fns.values():
        f()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, f in fns.items():
            t = time.perf_counter()
            f()
            times[name].append(time.perf_counter() - t)
    return {name: float(np.median(ts)) for name, ts in times.items()}


def random_packed(rng, rows: int, k: int) -> np.ndarray:
    """``rows`` random ``k``-bit vectors packed in uint64 words, pad bits 0."""
    words = rng.integers(0, 2**64 - 1, size=(rows, (k + 63) // 64), dtype=np.uint64, endpoint=True)
    if k % 64:
        words[:, -1] &= np.uint64((1 << (k % 64)) - 1)
    return words


def bench_layer(layer: Layer, cref: CRef, repeats: int, threads: list[int], baseline_rows: int, rng) -> dict:
    kw = (layer.k + 63) // 64
    w = random_packed(rng, layer.n, layer.k)
    pw = kernels.prepack_weights(w, layer.k)
    thr = rng.integers(0, layer.k + 1, size=(1, layer.n))

    if layer.kind == "dense":
        a = rng.integers(0, 2**64 - 1, size=(layer.m, kw), dtype=np.uint64, endpoint=True)
        kernel_fns = {
            "gemm_popcount": lambda: kernels.gemm_popcount(a, pw),
            "gemm_threshold": lambda: kernels.gemm_threshold(a, pw, thr),
        }
        a_gemm = a
    else:
        g = layer.conv
        x = rng.integers(0, 2**64 - 1, size=(g["b"], g["h"], g["w"], g["c"] // 64), dtype=np.uint64, endpoint=True)
        args = (x, g["c"], g["kernel"], g["stride"], g["pads"], 0, pw)
        kernel_fns = {
            "conv_popcount": lambda: kernels.conv_popcount(*args),
            "conv_threshold": lambda: kernels.conv_threshold(*args, thr),
        }
        # Baselines and the C reference run the same (M, N, K) GEMM on random patches (no im2col).
        a_gemm = rng.integers(0, 2**64 - 1, size=(layer.m, kw), dtype=np.uint64, endpoint=True)

    # Correctness of what is timed: C and numpy agree with the kernel on the GEMM shape.
    p_kernel = kernels.gemm_popcount(a_gemm, pw)
    sub = a_gemm[:baseline_rows]
    p_numpy = layer.k - np.bitwise_count(sub[:, None, :] ^ w[None, :, :]).sum(-1, dtype=np.int64)
    assert np.array_equal(p_kernel[:baseline_rows], p_numpy), "numpy baseline disagrees with gemm_popcount"
    if cref.lib is not None:
        assert np.array_equal(cref.gemm(a_gemm, pw, 1), p_kernel), "C reference disagrees with gemm_popcount"
        assert np.array_equal(cref.gemm(a_gemm, pw, max(threads)), p_kernel), "C reference (threads) disagrees"

    a_f32 = np.where(unpack_bits(a_gemm[:F32_ROWS], layer.k), 1.0, -1.0).astype(np.float32)
    w_f32 = np.ascontiguousarray(np.where(unpack_bits(w, layer.k), 1.0, -1.0).astype(np.float32).T)
    sub_ops = 2.0 * sub.shape[0] * layer.n * layer.k
    f32_ops = 2.0 * a_f32.shape[0] * layer.n * layer.k

    results = {"layer": layer.name, "m": layer.m, "n": layer.n, "k": layer.k, "threads": {}}
    for t in threads:
        numba.set_num_threads(t)
        fns = dict(kernel_fns)
        if cref.lib is not None:
            fns["C AVX-512 ref"] = lambda t=t: cref.gemm(a_gemm, pw, t)
        secs = median_times(fns, repeats)
        numpy_fn = lambda: layer.k - np.bitwise_count(sub[:, None, :] ^ w[None]).sum(-1)  # noqa: E731
        secs |= median_times({"numpy bitwise_count": numpy_fn}, repeats)
        # Last and apart: OpenBLAS's worker threads keep spinning for a while after a call and
        # would take a core from whatever ran next.
        secs |= median_times({"float32 matmul": lambda t=t: f32_matmul(a_f32, w_f32, t)}, repeats)
        time.sleep(0.5)
        ops = {name: layer.ops for name in kernel_fns}
        ops.update({"numpy bitwise_count": sub_ops, "float32 matmul": f32_ops, "C AVX-512 ref": layer.ops})
        results["threads"][t] = {name: ops[name] / s / 1e9 for name, s in secs.items()}
    return results


def f32_matmul(a, w_t, threads):
    if threadpool_limits is None:
        return a @ w_t
    with threadpool_limits(limits=threads, user_api="blas"):
        return a @ w_t


# --------------------------------------------------------------------------------------------
# Assembly check (a fresh cache dir: numba shows no assembly for kernels loaded from its cache)

_ASM_PROBE = textwrap.dedent(
    """
    import re, numpy as np
    from bnnfab.sim import kernels as K
    pw = K.prepack_weights(np.zeros((3, 2), np.uint64), 100)
    a = np.zeros((4, 2), np.uint64)
    x = np.zeros((1, 3, 3, 1), np.uint64)
    pc = K.prepack_weights(np.zeros((3, 1), np.uint64), 9)
    for par in (False, True):
        K.gemm_popcount(a, pw, parallel=par)
        K.gemm_threshold(a, pw, np.zeros((1, 3), np.int32), parallel=par)
        K.conv_threshold(x, 1, (3, 3), (1, 1), (1, 1, 1, 1), 0, pc, np.zeros((1, 3), np.int32), parallel=par)
    for fn in (K._gemm_popcount_ser, K._gemm_popcount_par, K._gemm_threshold_ser, K._gemm_threshold_par,
               K._conv_threshold_ser, K._conv_threshold_par):
        asm = fn.inspect_asm(fn.signatures[0])
        print(fn.__name__, len(re.findall(r"vpopcntq\\s+[^\\n]*zmm", asm)),
              len(re.findall(r"vpopcntq\\s+[^\\n]*ymm", asm)))
    """
)


def asm_check() -> dict:
    with tempfile.TemporaryDirectory(prefix="bnnfab-asm-") as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        res = subprocess.run([sys.executable, "-c", _ASM_PROBE], env=env, capture_output=True, text=True)
    if res.returncode:
        return {"error": res.stderr.strip()[-500:]}
    out = {}
    for line in res.stdout.splitlines():
        name, zmm, ymm = line.split()
        out[name] = {"vpopcntq_zmm": int(zmm), "vpopcntq_ymm": int(ymm)}
    return out


# --------------------------------------------------------------------------------------------


def metrics(report: dict, peak_core: float | None) -> list[dict]:
    """The figures of ``report`` as ``python -m bench`` records (bench/_results.py): GOPS of every
    candidate, and each kernel's ratios to the C limit (goal >= 0.8), to numpy (goal >= 20), to
    float32 and to the theoretical peak."""
    out = []
    if peak_core:
        out.append(metric("theoretical peak per core", peak_core, "GOPS"))
    for res in report["layers"]:
        for t, g in res["threads"].items():
            limit = g.get("C AVX-512 ref")
            for name, v in g.items():
                kernel = name.startswith(("gemm_", "conv_"))
                out.append(metric(f"{res['layer']} {name}, {_threads(int(t))}", v, "GOPS", headline=kernel))
                if not kernel:
                    continue
                where = f"{res['layer']} {name}, {_threads(int(t))}"
                if limit:
                    out.append(metric(f"{where}: / C limit", v / limit, "x", goal=">= 0.8"))
                out.append(metric(f"{where}: / numpy bitwise_count", v / g["numpy bitwise_count"], "x", goal=">= 20"))
                out.append(metric(f"{where}: / float32 matmul", v / g["float32 matmul"], "x"))
                if peak_core:
                    out.append(metric(f"{where}: / theoretical peak", v / (peak_core * t), "x"))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller layers and 3 repeats (a few seconds)")
    ap.add_argument("--repeats", type=int, default=None, help="timed runs per figure (default 7, quick 3)")
    ap.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    args = ap.parse_args(argv)
    repeats = args.repeats or (3 if args.quick else 7)
    max_threads = numba.config.NUMBA_NUM_THREADS
    threads = [1] if max_threads == 1 else [1, max_threads]
    rng = np.random.default_rng(2026)
    load0 = os.getloadavg()[0]

    print(f"bnnfab sim throughput: {cpu_name()}, {os.cpu_count()} CPUs, numba {numba.__version__} "
          f"(threads {threads}), numpy {np.__version__}")
    if os.environ.get("_BNNFAB_BENCH_UNSET"):
        print(f"note: re-executed without {os.environ['_BNNFAB_BENCH_UNSET']} (float32 baseline, perf.md)")
    cref = CRef()
    if cref.note:
        print("note:", cref.note)
    words_per_cycle, model = port_model()
    clock = {}
    if cref.lib is not None:
        clock = {"gpr_ghz": cref.clock_ghz("gpr"), "zmm_ghz": cref.clock_ghz("zmm")}
        peak_core = words_per_cycle * 1024 * clock["zmm_ghz"]  # binary ops per ns = GOPS
        print(f"clock (dependent add chains, max of 7): gpr {clock['gpr_ghz']:.2f} GHz, "
              f"zmm {clock['zmm_ghz']:.2f} GHz")
        print(f"theoretical peak per core: {words_per_cycle:.3f} words/cycle x 1024 ops x {clock['zmm_ghz']:.2f} GHz"
              f" = {peak_core:.0f} GOPS\n  [{model}]")
    else:
        peak_core = None
        print("theoretical peak: needs the C clock probe (skipped)")

    asm = asm_check()
    if "error" in asm:
        print("asm check failed:", asm["error"])
    else:
        ok = all(v["vpopcntq_zmm"] >= 16 and v["vpopcntq_ymm"] == 0 for v in asm.values())
        print("asm: " + ", ".join(f"{k} {v['vpopcntq_zmm']} vpopcntq zmm" for k, v in asm.items())
              + ("  [OK: 512-bit core]" if ok else "  [WARNING: not the 512-bit core]"))

    report = {"clock": clock, "port_model": model, "words_per_cycle": words_per_cycle, "asm": asm,
              "repeats": repeats, "quick": args.quick, "layers": []}
    baseline_rows = 16 if args.quick else 64
    goals = []
    for layer in layers(args.quick):
        res = bench_layer(layer, cref, repeats, threads, baseline_rows, rng)
        report["layers"].append(res)
        print(f"\n{layer.name}   M={layer.m} N={layer.n} K={layer.k}   ({layer.ops / 1e9:.1f} G binary ops)")
        print(f"  {'threads':>7} {'candidate':<22} {'GOPS':>8} {'% limit(C)':>10} {'% peak':>7} "
              f"{'x numpy':>8} {'x f32':>7}")
        for t, g in res["threads"].items():
            limit = g.get("C AVX-512 ref")
            for name, v in g.items():
                pct_c = f"{100 * v / limit:.0f}%" if limit else "-"
                pct_p = f"{100 * v / (peak_core * t):.0f}%" if peak_core else "-"
                xn = v / g["numpy bitwise_count"]
                xf = v / g["float32 matmul"]
                print(f"  {t:>7} {name:<22} {v:>8.0f} {pct_c:>10} {pct_p:>7} {xn:>8.1f} {xf:>7.1f}")
                if name.startswith(("gemm_", "conv_")):
                    goals.append((f"{name} x{t}", v / limit if limit else None, xn))
    print(f"\nGOPS = 2*M*N*K / median of {repeats} runs. numpy bitwise_count is single-threaded (the same code at"
          f"\nevery thread count) on the first {baseline_rows} rows, float32 on the first {F32_ROWS}; for conv, the"
          "\nbaselines and C run the same (M, N, K) GEMM on random patches (no im2col, which favours them).")
    if goals:
        lowest_x = min(goals, key=lambda g: g[2])
        if cref.lib is not None:
            worst = min(goals, key=lambda g: g[1])
            ok = all(r >= 0.8 and x >= 20 for _, r, x in goals)
            print(f"goal (>= 80% of the C limit and >= 20x numpy, every kernel and thread count): "
                  f"{'MET' if ok else 'NOT MET'}; lowest: {worst[0]} at {100 * worst[1]:.0f}% of C, "
                  f"{lowest_x[0]} at {lowest_x[2]:.0f}x numpy")
        else:
            print(f"goal: no C limit to compare with; lowest {lowest_x[0]} at {lowest_x[2]:.0f}x numpy")
    print(f"load average (1 min) at start {load0:.2f}, at end {os.getloadavg()[0]:.2f}: other processes on a shared"
          " machine skew the figures, ratios within one run much less")
    report["loadavg"] = [load0, os.getloadavg()[0]]
    report["metrics"] = metrics(report, peak_core)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, default=str))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
