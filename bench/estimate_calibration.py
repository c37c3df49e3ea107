"""Calibration of the resource model (``bnnfab.codegen.estimate``) against Yosys, and its check.

Usage::

    python bench/estimate_calibration.py --validate [--families ice40,ecp5] [--quick] [--json PATH]
    python bench/estimate_calibration.py --fit [--families ice40,ecp5] [--kinds K,..] [--save PATH | --load PATH]
    python bench/estimate_calibration.py --memories [--families ice40,ecp5]

``--validate`` (the default) synthesises whole generated designs that were **not** used for the
fit (the zoo models ``digits-tfc``, ``digits-tfc-mst``, ``digits-ecoc-mlp``, ``digits-cnv`` at
several ``--target-cycles``, unrolled/MST variants, and seeded random models) with
``bnnfab.codegen.synth.synthesize`` (``synth_ice40`` / ``synth_ecp5``, one run at a time) and prints
estimate vs actual per design and family: LUT4 equivalents, flip-flops, block RAMs, ECP5
distributed-RAM cells, and the relative LUT error. The goal is within 15 % on LUTs.

``--fit`` synthesises the single components of :data:`FIT_DESIGNS` (folded and integer engines
over a PE/SIMD/N/K grid, unrolled plain and MST layers, window generators, pools, width adapters,
FIFOs, argmax units; seeded random weights) and fits, per family and block kind, the coefficients
of ``estimate.block_features`` by non-negative least squares on what the structural part does not
explain. It prints a ``COEF`` dict to paste into ``codegen/estimate.py``. ``--save`` keeps the
synthesis counts (JSON; an existing file is resumed), ``--load`` refits from them without Yosys,
``--kinds`` limits both to some spec kinds (``window,pool,adapter``: the window and adapter
models alone).

``--memories`` checks the memory-mapping rule (block RAM vs logic vs ECP5 LUT RAM) of
``estimate.map_memory`` on a grid of bare memories around the decision boundaries.

Times (two shared cores, YoWASP Yosys): ``--fit`` ~15 min for both families, ``--validate``
~10 min (``--quick``: ~3 min), ``--memories`` ~2 min.
"""

from __future__ import annotations

import os

os.environ.setdefault("AMARANTH_USE_YOSYS", "builtin")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from amaranth.back import verilog  # noqa: E402
from amaranth.hdl import Module  # noqa: E402
from amaranth.lib import wiring  # noqa: E402
from amaranth.lib.memory import Memory  # noqa: E402
from amaranth.lib.wiring import In, Out  # noqa: E402

from bnnfab.codegen import estimate as est  # noqa: E402
from bnnfab.codegen.synth import SynthError, synthesize  # noqa: E402

TOP = "top"

# --------------------------------------------------------------------------------------------
# Components used for the fit (never the validation designs)

#: (kind, parameters). Weights and thresholds are seeded random (seed = the spec's index).
FIT_DESIGNS: list[tuple[str, dict]] = [
    # folded binary engines: hidden (thresholds) and output layers
    *[("folded", dict(n=n, k=k, pe=pe, simd=s, out=False)) for n, k, pe, s in [
        (16, 16, 1, 16), (16, 64, 1, 16), (32, 64, 2, 32), (64, 64, 4, 16), (64, 64, 8, 8),
        (32, 128, 4, 64), (64, 32, 16, 32), (16, 256, 2, 128), (64, 128, 2, 8), (48, 96, 3, 24),
        (24, 40, 6, 40), (8, 200, 8, 25),
    ]],
    *[("folded", dict(n=n, k=k, pe=pe, simd=s, out=True)) for n, k, pe, s in [
        (10, 64, 1, 16), (10, 128, 2, 32), (10, 64, 10, 64),
    ]],
    # integer first layers (8-bit unsigned pixels)
    *[("int", dict(n=n, k=k, pe=pe, simd=s, bits=8, signed=False, out=False)) for n, k, pe, s in [
        (16, 9, 1, 9), (16, 9, 4, 3), (32, 64, 2, 16), (64, 64, 1, 8), (32, 48, 8, 4),
    ]],
    ("int", dict(n=10, k=64, pe=2, simd=8, bits=8, signed=False, out=True)),
    ("int", dict(n=16, k=32, pe=2, simd=8, bits=4, signed=True, out=False)),
    # unrolled layers, plain and MST (depth limits)
    *[("unrolled", dict(n=n, k=k, depth=d, out=False)) for n, k, d in [
        (16, 16, 0), (32, 32, 0), (64, 32, 0), (16, 16, 2), (32, 32, 3), (32, 64, 4), (48, 48, 1),
    ]],
    ("unrolled", dict(n=10, k=32, depth=0, out=True)),
    # window generators and pools
    ("window", dict(h=8, w=8, c=1, eb=8, kernel=3, stride=1, pads=0)),
    ("window", dict(h=6, w=6, c=16, eb=1, kernel=3, stride=1, pads=0)),
    ("window", dict(h=8, w=8, c=4, eb=1, kernel=3, stride=1, pads=1)),
    ("window", dict(h=10, w=10, c=2, eb=4, kernel=3, stride=2, pads=1)),
    ("pool", dict(h=4, w=4, c=32, kernel=2)),
    ("pool", dict(h=8, w=8, c=16, kernel=2)),
    # width adapters, FIFOs, argmax
    ("adapter", dict(i=64, o=16)), ("adapter", dict(i=256, o=64)), ("adapter", dict(i=128, o=7)),
    ("adapter", dict(i=16, o=256)), ("adapter", dict(i=8, o=72)),
    ("fifo", dict(width=64, depth=2)), ("fifo", dict(width=16, depth=8)), ("fifo", dict(width=8, depth=32)),
    ("argmax", dict(n=10, width=7, signed=False)), ("argmax", dict(n=10, width=15, signed=True)),
    ("argmax", dict(n=32, width=9, signed=False)),
    # appended later (indices, hence seeds, of the entries above unchanged): zero- and one-padded
    # binary windows on small wide maps (3 buffer rows when H = 2), pools, and split adapters
    # over chunk ratios 2..16 (the ECP5 LUT5 effect at R <= 4)
    *[("window", dict(h=h, w=w, c=c, eb=1, kernel=3, stride=1, pads=1, pad_value=pv)) for h, w, c, pv in [
        (3, 3, 24, 0), (3, 3, 24, 1), (5, 5, 40, 0), (2, 2, 48, 0), (2, 2, 48, 1), (12, 12, 4, 0), (6, 6, 12, 1),
    ]],
    ("window", dict(h=6, w=6, c=8, eb=1, kernel=3, stride=1, pads=0)),
    ("window", dict(h=6, w=6, c=1, eb=8, kernel=3, stride=1, pads=1, pad_value=0)),
    ("pool", dict(h=6, w=6, c=24, kernel=2)), ("pool", dict(h=2, w=2, c=48, kernel=2)),
    *[("adapter", dict(i=i, o=o)) for i, o in [
        (96, 32), (200, 40), (120, 60), (336, 42), (100, 25), (480, 30), (40, 20), (24, 96),
    ]],
]


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(1000 + seed)


def build_component(kind: str, p: dict, seed: int):
    """The Amaranth block of one fit spec (seeded random weights and thresholds)."""
    from bnnfab.hdl.fifo import StreamFifo
    from bnnfab.hdl.folded import FoldedDense
    from bnnfab.hdl.intdense import IntDense
    from bnnfab.hdl.streams import Argmax, WidthAdapter
    from bnnfab.hdl.unrolled import UnrolledDense
    from bnnfab.hdl.window import MaxPoolOr, SlidingWindow
    from bnnfab.sim.mst import plan_mst

    rng = _rng(seed)
    if kind in ("folded", "int", "unrolled"):
        n, k = p["n"], p["k"]
        w = rng.random((n, k)) < 0.5
        if kind == "int":
            m = (1 << p["bits"]) - 1 if not p["signed"] else 1 << (p["bits"] - 1)
            span = max(1, k * m // 8)
            t = None if p["out"] else rng.integers(-span, span + 1, n)
            return IntDense(w, t, bits=p["bits"], signed=p["signed"], pe=p["pe"], simd=p["simd"])
        t = None if p["out"] else rng.integers(k // 4, 3 * k // 4 + 1, n)
        if kind == "folded":
            return FoldedDense(w, t, pe=p["pe"], simd=p["simd"])
        if p["depth"]:
            # correlated channels (as MST-regularised layers are): each row flips ~k/8 bits of another
            for i in range(1, n):
                j = int(rng.integers(0, i))
                flip = rng.random(k) < 0.125
                w[i] = w[j] ^ flip
            sch = plan_mst(w, max_depth=p["depth"])
            return UnrolledDense(w, t, sch.parent, sch.inverted)
        return UnrolledDense(w, t)
    if kind == "window":
        return SlidingWindow(p["h"], p["w"], p["c"], p["eb"], kernel=p["kernel"], stride=p["stride"], pads=p["pads"],
                             pad_value=p.get("pad_value", 1 if p["eb"] == 1 else 0))
    if kind == "pool":
        return MaxPoolOr(p["h"], p["w"], p["c"], kernel=p["kernel"])
    if kind == "adapter":
        return WidthAdapter(p["i"], p["o"])
    if kind == "fifo":
        return StreamFifo(p["width"], p["depth"])
    if kind == "argmax":
        return Argmax(p["n"], p["width"], signed=p["signed"], with_scores=True)
    raise ValueError(f"unknown component kind {kind!r}")


def _synth(text: str, family: str, timeout: float = 900.0) -> dict:
    r = synthesize(text, TOP, family, timeout=timeout)
    return {"luts": r.lut_equivalent, "ffs": r.ffs, "brams": r.brams, "lutram": r.cells.get("TRELLIS_DPR16X4", 0),
            "seconds": round(r.seconds, 1)}


def run_fit_designs(families, log=print, save: Path | None = None, rows: list | None = None,
                    kinds: set | None = None) -> list[dict]:
    """Synthesise the fit components (only those of ``kinds`` if given, skipping those already in
    ``rows``; ``save`` is rewritten after each, so an interrupted run resumes)."""
    rows = list(rows or [])
    done = {(r["index"], r["family"]) for r in rows}
    for i, (kind, p) in enumerate(FIT_DESIGNS):
        if kinds is not None and kind not in kinds:
            continue
        todo = [f for f in families if (i, f) not in done]
        if not todo:
            continue
        block = build_component(kind, p, i)
        text = verilog.convert(block, name=TOP, emit_src=False)
        for fam in todo:
            try:
                act = _synth(text, fam)
            except SynthError as exc:  # a Yosys failure on one component must not stop the run
                log(f"  fit {i:2d} {kind:8s} {fam:5s} skipped: {str(exc).splitlines()[0]}")
                continue
            rows.append({"index": i, "kind": kind, "params": p, "family": fam, **act})
            log(f"  fit {i:2d} {kind:8s} {fam:5s} {json.dumps(p, sort_keys=True)}: {act}")
            if save is not None:
                save.write_text(json.dumps(rows, indent=1, sort_keys=True) + "\n")
    return rows


def fit(rows: list[dict], kinds: set | None = None) -> dict:
    """NNLS per (family, model kind) of actual - fixed on the features, luts and ffs apart (only
    the rows of spec ``kinds`` if given)."""
    from scipy.optimize import nnls

    groups: dict = {}
    for row in rows:
        if kinds is not None and row["kind"] not in kinds:
            continue
        block = build_component(row["kind"], row["params"], row["index"])
        fam = row["family"]
        kind, fixed, feats = est.block_features(block, fam)
        groups.setdefault((fam, kind), []).append((fixed, feats, row))
    coef: dict = {fam: {} for fam in est.FAMILIES}
    for (fam, kind), items in sorted(groups.items()):
        names = sorted({f for _, feats, _ in items for f in feats})
        a = np.array([[feats.get(f, 0) for f in names] for _, feats, _ in items], dtype=float)
        out = {}
        for res in ("luts", "ffs"):
            b = np.array([row[res] - getattr(fixed, res) for fixed, _, row in items], dtype=float)
            # relative weighting: every design counts about equally whatever its size
            scale = 1.0 / np.maximum(20.0, np.array([row[res] for _, _, row in items], dtype=float))
            x, _ = nnls(a * scale[:, None], b * scale)
            out[res] = {f: round(float(v), 4) for f, v in zip(names, x) if v > 1e-6}
            pred = a @ x + np.array([getattr(fixed, res) for fixed, _, _ in items])
            act = b + np.array([getattr(fixed, res) for fixed, _, _ in items])
            rel = np.abs(pred - act) / np.maximum(1.0, act)
            print(f"  fit {fam:5s} {kind:8s} {res:4s}: {len(items)} designs, |err| mean {100 * rel.mean():.1f}% "
                  f"max {100 * rel.max():.1f}%", file=sys.stderr)
        coef[fam][kind] = out
    return coef


# --------------------------------------------------------------------------------------------
# Validation designs (whole generated accelerators)


def _validation_specs(quick: bool) -> list[tuple[str, str, dict]]:
    """(label, model, GenConfig keyword arguments)."""
    from bnnfab.codegen.config import Engine, LayerChoice

    specs = [
        ("tfc@64", "digits-tfc", dict(target_cycles=64)),
        ("tfc@256", "digits-tfc", dict(target_cycles=256)),
        ("tfc@16", "digits-tfc", dict(target_cycles=16)),
        ("tfc-mst@64", "digits-tfc-mst", dict(target_cycles=64)),
        ("tfc-mst unrolled d4", "digits-tfc-mst",
         dict(target_cycles=64, layers={2: LayerChoice(engine=Engine.UNROLLED), 3: LayerChoice(engine=Engine.UNROLLED)})),
        ("ecoc-mlp@64", "digits-ecoc-mlp", dict(target_cycles=64)),
        ("ecoc-mlp@512", "digits-ecoc-mlp", dict(target_cycles=512)),
        ("cnv@4096", "digits-cnv", dict(target_cycles=4096)),
        ("cnv@1024", "digits-cnv", dict(target_cycles=1024)),
        ("rand-mlp@32", "random-mlp", dict(target_cycles=32)),
        ("rand-mlp fifo@128", "random-mlp", dict(target_cycles=128, fifo_depth=2)),
        ("rand-mlp unrolled", "random-mlp",
         dict(target_cycles=32, layers={2: LayerChoice(engine=Engine.UNROLLED, mst_depth=0)})),
    ]
    if quick:
        keep = {"tfc@64", "ecoc-mlp@64", "tfc-mst unrolled d4", "rand-mlp@32"}
        specs = [s for s in specs if s[0] in keep]
    return specs


#: Validation designs that set :data:`bnnfab.codegen.estimate.FAMILY_LUT_SCALE` (ECP5): for that
#: family only the others are held out.
SCALE_FIT_DESIGNS = ("tfc@64", "tfc@256", "tfc@16", "tfc-mst@64", "tfc-mst unrolled d4", "ecoc-mlp@64", "ecoc-mlp@512")


def _random_mlp(seed: int):
    """A seeded random MLP on 8-bit 6x6 inputs (36-48-40-10), not in the zoo."""
    from bnnfab.models import Dense, Flatten, InputSpec, Model

    rng = np.random.default_rng(seed)
    dims = [36, 48, 40, 10]
    layers = [Flatten(name="flatten")]
    for i, (k, n) in enumerate(zip(dims, dims[1:])):
        w = rng.random((n, k)) < 0.5
        last = i == len(dims) - 2
        if last:
            t = None
        elif i == 0:
            t = rng.integers(-k * 255 // 8, k * 255 // 8 + 1, n)
        else:
            t = rng.integers(-k // 4, k // 4 + 1, n)
        layers.append(Dense(name=f"dense{i}", weights=w, thresholds=t))
    return Model(InputSpec((6, 6, 1), bits=8, signed=False), layers, name="random-mlp")


def validation_rows(families, quick: bool, log=print) -> list[dict]:
    from bnnfab.codegen.config import GenConfig
    from bnnfab.codegen.generate import generate
    from bnnfab.models import zoo

    rows = []
    for label, model_name, kwargs in _validation_specs(quick):
        model = _random_mlp(7) if model_name == "random-mlp" else zoo.load(model_name)
        design = generate(model, GenConfig(**kwargs))
        estimate = est.estimate_top(design.top)
        for fam in families:
            act = _synth_design(design, fam)
            e = estimate.total(fam)
            err = (e.luts - act["luts"]) / max(1, act["luts"])
            row = {"design": label, "family": fam, "est_luts": round(e.luts), "luts": act["luts"],
                   "err_luts": round(100 * err, 1), "est_ffs": round(e.ffs), "ffs": act["ffs"],
                   "est_brams": e.brams, "brams": act["brams"], "est_lutram": e.lutram, "lutram": act["lutram"],
                   "seconds": act["seconds"]}
            rows.append(row)
            log(f"  {label:22s} {fam:5s} LUT est {row['est_luts']:6d} act {row['luts']:6d} ({row['err_luts']:+.1f}%)  "
                f"FF {row['est_ffs']}/{row['ffs']}  BRAM {row['est_brams']}/{row['brams']}  LUTRAM {row['est_lutram']}/{row['lutram']}")
    return rows


def _synth_design(design, family: str) -> dict:
    r = synthesize(design.verilog, design.name, family, timeout=1800.0)
    return {"luts": r.lut_equivalent, "ffs": r.ffs, "brams": r.brams, "lutram": r.cells.get("TRELLIS_DPR16X4", 0),
            "seconds": round(r.seconds, 1)}


# --------------------------------------------------------------------------------------------
# Memory mapping check


class _MemProbe(wiring.Component):
    """One memory with a synchronous read port (with enable) and, unless ROM, a write port."""

    def __init__(self, width: int, depth: int, rom: bool, seed: int):
        self.width, self.depth, self.rom, self.seed = width, depth, rom, seed
        abits = max(1, (depth - 1).bit_length())
        sig = {"raddr": In(abits), "ren": In(1), "rdata": Out(width)}
        if not rom:
            sig.update(waddr=In(abits), wdata=In(width), wen=In(1))
        super().__init__(sig)

    def rows(self) -> list[int]:
        rng = _rng(self.seed)
        return [int.from_bytes(rng.bytes((self.width + 7) // 8), "little") & ((1 << self.width) - 1)
                for _ in range(self.depth)]

    def elaborate(self, platform):
        m = Module()
        m.submodules.mem = mem = Memory(shape=self.width, depth=self.depth, init=self.rows() if self.rom else [])
        rp = mem.read_port()
        m.d.comb += [rp.addr.eq(self.raddr), rp.en.eq(self.ren), self.rdata.eq(rp.data)]
        if not self.rom:
            wp = mem.write_port()
            m.d.comb += [wp.addr.eq(self.waddr), wp.data.eq(self.wdata), wp.en.eq(self.wen)]
        return m


MEMORY_GRID = [
    (True, 64, 64), (True, 16, 66), (True, 16, 67), (True, 8, 130), (True, 8, 140), (True, 36, 57), (True, 36, 61),
    (True, 18, 130), (True, 4, 300), (True, 7, 64), (True, 128, 16), (True, 24, 256),
    (False, 64, 2), (False, 11, 12), (False, 16, 4), (False, 16, 5), (False, 8, 9), (False, 16, 17),
    (False, 16, 128), (False, 512, 2), (False, 1, 64), (False, 4, 40),
]


def memory_rows(families, log=print) -> list[dict]:
    rows = []
    for i, (rom, w, d) in enumerate(MEMORY_GRID):
        probe = _MemProbe(w, d, rom, i)
        text = verilog.convert(probe, name=TOP, emit_src=False)
        for fam in families:
            act = _synth(text, fam)
            mm = est.map_memory(w, d, fam, rom=rom)
            e = est.memory_cost(w, d, fam, rom=rom, rows=probe.rows() if rom else None)
            row = {"memory": f"{'ROM' if rom else 'RAM'} {d}x{w}", "family": fam, "mapped": mm.kind,
                   "est_brams": e.brams, "brams": act["brams"], "est_lutram": e.lutram, "lutram": act["lutram"],
                   "est_luts": round(e.luts), "luts": act["luts"], "est_ffs": round(e.ffs), "ffs": act["ffs"]}
            rows.append(row)
            ok = (e.brams, e.lutram) == (act["brams"], act["lutram"])
            log(f"  {row['memory']:12s} {fam:5s} -> {mm.kind:6s} BRAM {e.brams}/{act['brams']} LUTRAM "
                f"{e.lutram}/{act['lutram']} LUT {row['est_luts']}/{act['luts']} FF {row['est_ffs']}/{act['ffs']}"
                f"{'' if ok else '   <-- mapping differs'}")
    return rows


# --------------------------------------------------------------------------------------------


def _table(rows: list[dict], cols: list[str]) -> str:
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols}
    lines = ["  ".join(c.rjust(widths[c]) for c in cols)]
    for r in rows:
        lines.append("  ".join(str(r[c]).rjust(widths[c]) for c in cols))
    return "\n".join(lines)


def _metrics(rows: list[dict]) -> list[dict]:
    """``python -m bench`` records (bench/_results.py): |LUT error| per design and family, goal <= 15 %."""
    def metric(name, value, unit, goal=None, headline=False):
        met = None if goal is None else value <= float(goal.split()[-1])
        return {"metric": name, "value": float(value), "unit": unit, "goal": goal, "met": met, "headline": headline}

    errs = [abs(r["err_luts"]) for r in rows]
    out = [metric(f"LUT error {r['design']} {r['family']}", abs(r["err_luts"]), "%", "<= 15") for r in rows]
    if errs:
        out.append(metric("mean |LUT error| (estimate vs yosys)", float(np.mean(errs)), "%", "<= 15", headline=True))
        out.append(metric("max |LUT error| (estimate vs yosys)", float(max(errs)), "%", None, headline=True))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--validate", action="store_true", help="estimate vs Yosys on held-out designs (default)")
    mode.add_argument("--fit", action="store_true", help="synthesise the fit components and print COEF")
    mode.add_argument("--memories", action="store_true", help="check the memory-mapping rule")
    ap.add_argument("--families", default="ice40,ecp5")
    ap.add_argument("--quick", action="store_true", help="validation: four designs only")
    ap.add_argument("--json", type=Path, help="write the rows as JSON")
    ap.add_argument("--save", type=Path, help="--fit: keep the synthesis counts here")
    ap.add_argument("--load", type=Path, help="--fit: refit from saved counts (no Yosys)")
    ap.add_argument("--kinds", help="--fit: only these spec kinds (comma-separated, e.g. window,pool,adapter)")
    args = ap.parse_args(argv)
    families = [f.strip() for f in args.families.split(",") if f.strip()]
    for f in families:
        if f not in est.FAMILIES:
            ap.error(f"--families: {f!r} is not one of {', '.join(est.FAMILIES)}")
    known = sorted({kind for kind, _ in FIT_DESIGNS})
    kinds = None if not args.kinds else {k.strip() for k in args.kinds.split(",") if k.strip()}
    if kinds and not kinds <= set(known):
        ap.error(f"--kinds: {', '.join(sorted(kinds - set(known)))} not among {', '.join(known)}")
    t0 = time.perf_counter()
    if args.fit:
        if args.load:
            rows = json.loads(args.load.read_text())
        else:
            old = json.loads(args.save.read_text()) if args.save and args.save.is_file() else []
            rows = run_fit_designs(families, save=args.save, rows=old, kinds=kinds)
        coef = fit(rows, kinds)
        print("COEF = " + json.dumps(coef, indent=4, sort_keys=True))
        out = rows
    elif args.memories:
        out = memory_rows(families)
        print(_table(out, ["memory", "family", "mapped", "est_brams", "brams", "est_lutram", "lutram", "est_luts",
                           "luts", "est_ffs", "ffs"]))
    else:
        out = validation_rows(families, args.quick)
        print()
        print(_table(out, ["design", "family", "est_luts", "luts", "err_luts", "est_ffs", "ffs", "est_brams", "brams",
                           "est_lutram", "lutram"]))
        errs = [abs(r["err_luts"]) for r in out]
        within = sum(e <= 15.0 for e in errs)
        print(f"\nLUT error: mean |err| {np.mean(errs):.1f}%, max {max(errs):.1f}%, {within}/{len(errs)} within 15%")
    if args.json:
        payload = {"rows": out, "metrics": _metrics(out) if not (args.fit or args.memories) else []}
        args.json.write_text(json.dumps(payload, indent=1, sort_keys=True) + "\n")
    print(f"({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
