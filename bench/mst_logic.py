"""Logic of unrolled binary layers with MST channel reuse vs plain, from Yosys synthesis (YoWASP).

Usage::

    python bench/mst_logic.py [--quick] [--json PATH] [--families ice40,ecp5] [--depths 2,4,8]
                              [--style adder] [--register-every 1] [--timeout S] [--workdir DIR]
                              [--skip-mst] [--skip-styles] [--model NAME --layer NAME]
                              [--compare carry|logic] [--mst-share search|identical|none]

Two sections; every design is converted to Verilog once (Amaranth) and synthesised for each family
(``bnnfab.codegen.synth.synthesize``: ``synth_ice40`` / ``synth_ecp5``, then ``stat``), one run at
a time.

1. **MST vs plain** (design.md §3): :class:`bnnfab.hdl.unrolled.UnrolledDense` with its weights in
   logic, plain and with the MST schedule of ``bnnfab.sim.mst.plan_mst`` at each depth limit,
   without and with inverted parents, on

   * ``code``: the binary hidden layer of the bundled ``digits-ecoc-mlp`` (128 x 256, correlated
     weights, not MST-regularised), or any bundled model's binary layer with ``--model NAME
     --layer NAME`` (e.g. ``--model digits-tfc-mst --layer dense1``, MST-regularised), and
   * ``random``: a seeded random 64 x 64 layer (the uncorrelated baseline).

   Per family: LUT4s, carry cells, flip-flops, the LUT4 equivalent (iCE40 ``SB_LUT4``; ECP5
   ``LUT4 + 2 CCU2C``, since a CCU2C holds two LUT4s the ``LUT4`` count misses), a floor on the
   logic blocks (``LC>=``: an iCE40 logic cell holds one LUT4, one carry and one flip-flop;
   ``slice>=``: an ECP5 slice two LUT4s and two flip-flops), the plain/MST ratios of those, the
   planner's binary-op ratio, and ``UnrolledDense.cost()``'s analytic estimate beside the
   synthesised counts (with ``tree ops``, the counters and adders the trees build, shared ones
   once). The issue's goal is >= 3x fewer LUTs on an MST-regularised layer.

   The engines are the defaults of ``UnrolledDense`` (see ``bnnfab.hdl.unrolled``): MST engines
   share their trees' common first-level full adders (``share="search"``), feed one literal per
   child to its reuse adder's carry-in and fuse small leaves' adder and comparison into one carry
   chain; plain engines are the ordinary plain mode, one aligned tree per channel with each
   identical operation built once (``share="identical"``). ``--mst-share`` changes the MST
   engines' sharing (plain keeps its default); ``--compare logic`` writes every threshold
   comparison (plain and MST) as LUT logic instead of a carry-chain comparison (and fuses no
   leaves). Caveat on ECP5: ``synth_ecp5`` maps with ABC9, which maps for delay
   first; it builds adders of up to 4 result bits as LUT logic and maps them faster (wide-mux
   LUT5-7 functions, more LUTs) when the longest carry chain in the design is short, so small
   changes elsewhere (one more bit on a comparison) can move the ECP5 count by ~7%. iCE40 counts
   follow the structure closely.
2. **Popcount structure** on the random layer in plain mode: every ``PopcountStyle`` at
   ``register_every`` 1, 2 and 3, against a naive baseline written here (each channel's popcount a
   ``+`` chain, registered only at the output), so the lead can pick the structure per family.

All ratios come from one run; a design that appears in both sections is synthesised once.
``--quick`` takes a 32-channel slice of ``code``, depth 4 only, and the styles at
``register_every`` 1 on a 16-channel slice of the random layer (~4 minutes, plus Yosys's one-off
WebAssembly compile). The full run takes ~30 minutes on two cores: the plain 128 x 256 layer takes
~2 minutes per family, and the naive chain, whose deep adder chains Yosys handles slowly, ~3
minutes on iCE40 and ~8 on ECP5. Nothing is written unless ``--json PATH`` is given (or
``--workdir DIR``, which keeps every design's Yosys files and log).
"""

from __future__ import annotations

import os

# Verilog from Amaranth's bundled Yosys even when YOSYS points at another (toolchain.md).
os.environ.setdefault("AMARANTH_USE_YOSYS", "builtin")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Callable  # noqa: E402

import numpy as np  # noqa: E402
from amaranth.back import verilog  # noqa: E402
from amaranth.hdl import C, Cat, Module, Signal  # noqa: E402
from amaranth.lib import stream, wiring  # noqa: E402
from amaranth.lib.wiring import In, Out  # noqa: E402

from bnnfab.codegen.synth import Family, SynthTimeoutError, find_yosys, synthesize  # noqa: E402
from bnnfab.hdl.popcount import PopcountStyle  # noqa: E402
from bnnfab.hdl.unrolled import UnrolledDense  # noqa: E402
from bnnfab.models import Dense, zoo  # noqa: E402
from bnnfab.sim.mst import plan_mst  # noqa: E402

try:  # run as a script: bench/ is on sys.path
    from _results import metric  # noqa: E402
except ImportError:  # pragma: no cover - imported as bench.mst_logic
    from bench._results import metric  # noqa: E402

TOP = "top"
RANDOM_SEED = 2026
GOAL = 3.0  # the target: >= 3x fewer LUTs with MST reuse
QUICK_CODE_ROWS = 32
QUICK_STYLE_ROWS = 16  # the naive chain takes minutes per family at 64 channels


# --------------------------------------------------------------------------------------------
# The naive baseline


class NaiveChainDense(wiring.Component):
    """A dense binary layer as a direct HDL description would write it: per channel a chain of
    ``K`` additions of the XNOR bits into a ``ceil(log2(K + 1))``-bit sum, the threshold test,
    and one output register (same stream handshake as a 1-stage pipeline)."""

    def __init__(self, weights: np.ndarray, thresholds: np.ndarray):
        self.weights = np.asarray(weights, dtype=np.bool_)
        self.thresholds = [int(t) for t in thresholds]
        n, k = self.weights.shape
        super().__init__({"i": In(stream.Signature(k)), "o": Out(stream.Signature(n))})

    def elaborate(self, platform):
        m = Module()
        n, k = self.weights.shape
        width = k.bit_length()
        en = Signal()
        m.d.comb += [en.eq(~self.o.valid | self.o.ready), self.i.ready.eq(en)]
        x = self.i.payload
        nx = Signal(k)
        m.d.comb += nx.eq(~x)
        tests = []
        for j in range(n):
            acc = C(0, width)
            for p in range(k):
                acc = (acc + (x[p] if self.weights[j, p] else nx[p]))[:width]
            tests.append(acc >= self.thresholds[j])
        out = Signal(n, reset_less=True)
        with m.If(en):
            m.d.sync += [out.eq(Cat(*tests)), self.o.valid.eq(self.i.valid)]
        m.d.comb += self.o.payload.eq(out)
        return m


# --------------------------------------------------------------------------------------------
# Designs


@dataclass(frozen=True)
class Layer:
    name: str
    weights: np.ndarray  # bool (N, K)
    thresholds: np.ndarray  # popcount domain

    @property
    def label(self) -> str:
        n, k = self.weights.shape
        return f"{self.name} {n}x{k}"


@dataclass(frozen=True)
class Design:
    section: str  # "mst" or "styles"
    layer: Layer
    config: str
    build: Callable[[], wiring.Component]
    ops_ratio: float
    depth: int | None = None  # MST depth limit (None: plain)
    inverted: bool = False
    style: str | None = None
    register_every: int | None = None
    compare: str = "carry"
    share: str | None = None  # None: the engine's default ("search" in MST mode, "identical" in plain)

    @property
    def key(self) -> tuple:
        """Designs with equal keys are the same hardware (synthesised once)."""
        return (self.layer.label, self.depth, self.inverted, self.style, self.register_every,
                self.compare, self.share)


def code_layer(rows: int | None, model_name: str = "digits-ecoc-mlp", layer_name: str = "code") -> Layer:
    """A bundled model's binary Dense layer (default: ``digits-ecoc-mlp``'s ``code``)."""
    model = zoo.load(model_name)
    found = [l for i, l in model.compute_layers if isinstance(l, Dense) and l.name == layer_name and not model.takes_integers(i)]
    if not found:
        names = [l.name for i, l in model.compute_layers if not model.takes_integers(i)]
        raise SystemExit(f"{model_name} has no binary Dense layer {layer_name!r}; its binary layers: {', '.join(names)}")
    dense = found[0]
    w, t = dense.weights_2d, None if dense.thresholds is None else dense.popcount_thresholds()
    name = f"{model_name}:{layer_name}"
    if rows is not None:
        w, name = w[:rows], f"{name}[:{rows}]"
        t = None if t is None else t[:rows]
    return Layer(name, np.ascontiguousarray(w), None if t is None else np.asarray(t))


def random_layer(n: int = 64, k: int = 64) -> Layer:
    rng = np.random.default_rng(RANDOM_SEED)
    w = rng.random((64, k)) < 0.5
    t = rng.integers(k // 2 - 4, k // 2 + 5, 64)  # every channel a real comparison
    return Layer("random", w[:n].copy(), t[:n].copy())


def mst_designs(layer: Layer, depths, style: PopcountStyle, r: int, compare: str = "carry",
                share: str | None = None) -> list[Design]:
    """Plain and MST engines of ``layer``; ``compare`` and ``share`` as for ``UnrolledDense``
    (``share`` None: the engine's default; it applies to the MST engines only, plain stays the
    engine's ordinary plain mode)."""
    def unrolled(parent=None, inverted=None):
        mst_share = share if parent is not None else None  # plain: always the engine's default
        return lambda: UnrolledDense(layer.weights, layer.thresholds, parent, inverted,
                                     register_every=r, style=style, compare=compare, share=mst_share)

    out = [Design("mst", layer, "plain", unrolled(), 1.0, style=style.name, register_every=r,
                  compare=compare)]
    for depth in depths:
        for inv in (False, True):
            s = plan_mst(layer.weights, depth, inv)
            out.append(Design(
                "mst", layer, f"mst d{depth}{' inv' if inv else ''}", unrolled(s.parent, s.inverted),
                float(s.ratio), depth=depth, inverted=inv, style=style.name, register_every=r,
                compare=compare, share=share,
            ))
    return out


def style_designs(layer: Layer, registers) -> list[Design]:
    out = [Design("styles", layer, "naive + chain", lambda: NaiveChainDense(layer.weights, layer.thresholds),
                  1.0, style="naive")]
    for style in PopcountStyle:
        for r in registers:
            out.append(Design(
                "styles", layer, f"{style.name} r{r}",
                lambda style=style, r=r: UnrolledDense(layer.weights, layer.thresholds,
                                                       register_every=r, style=style),
                1.0, style=style.name, register_every=r,
            ))
    return out


# --------------------------------------------------------------------------------------------
# Running


def logic_floor(r) -> int:
    """The fewest logic blocks the cells could pack into, before placement: an iCE40 logic cell
    holds one LUT4, one carry and one flip-flop; an ECP5 slice two LUT4s (or one CCU2C) and two
    flip-flops."""
    if r.family is Family.ICE40:
        return max(r.luts, r.carries, r.ffs)
    return -(-max(r.lut_equivalent, r.ffs) // 2)


def run_design(d: Design, families: list[Family], timeout: float, workroot: Path) -> list[dict]:
    t0 = time.perf_counter()
    comp = d.build()
    cost = comp.cost() if isinstance(comp, UnrolledDense) else None
    latency = comp.latency if isinstance(comp, UnrolledDense) else 1
    shared = comp.plan.share if isinstance(comp, UnrolledDense) else None
    text = verilog.convert(comp, name=TOP)
    convert_s = time.perf_counter() - t0
    del comp
    base = {
        "section": d.section, "layer": d.layer.label, "config": d.config, "ops_ratio": d.ops_ratio,
        "depth": d.depth, "inverted": d.inverted, "style": d.style, "register_every": d.register_every,
        "latency": latency, "convert_seconds": round(convert_s, 2), "verilog_bytes": len(text),
        "est_lut4": None if cost is None else cost.lut4,
        "est_tree_ops": None if cost is None else cost.tree_ops,
        "est_unshared_lut4": None if cost is None else cost.unshared_lut4,
        "compare": d.compare,
        "share": shared,
        "est_carry": None if cost is None else cost.carry,
        "est_registers": None if cost is None else cost.registers,
    }
    rows = []
    for fam in families:
        slug = f"{d.section}-{d.layer.label}-{d.config}-{fam.value}".replace(" ", "_").replace(":", "")
        slug = slug.replace("[", "").replace("]", "").replace("+", "p")
        rec = {**base, "family": fam.value}
        try:
            r = synthesize(text, TOP, fam, workdir=workroot / slug, timeout=timeout)
        except SynthTimeoutError:
            rec.update(status=f"timeout > {timeout:.0f} s")
            print(f"  {d.layer.label:>14} {d.config:<14} {fam.value:<5} TIMEOUT after {timeout:.0f} s", flush=True)
        else:
            rec.update(status="ok", luts=r.luts, carries=r.carries, ffs=r.ffs,
                       lut_equivalent=r.lut_equivalent, logic_floor=logic_floor(r), cells=r.cells,
                       seconds=round(r.seconds, 1), tool=r.tool)
            print(f"  {d.layer.label:>14} {d.config:<14} {fam.value:<5} LUT4 {r.luts:>6}  carry {r.carries:>6}"
                  f"  FF {r.ffs:>6}  ({convert_s:.1f} s Verilog, {r.seconds:.1f} s yosys)", flush=True)
        rows.append(rec)
    return rows


# --------------------------------------------------------------------------------------------
# Reporting

CARRY_NAME = {"ice40": "SB_CARRY", "ecp5": "CCU2C"}
FF_NAME = {"ice40": "SB_DFF*", "ecp5": "TRELLIS_FF"}
LUT_NAME = {"ice40": "SB_LUT4", "ecp5": "LUT4"}
FLOOR_NAME = {"ice40": "LC>=", "ecp5": "slice>="}


def _ratio(a, b) -> str:
    return "-" if not a or not b else f"{a / b:.2f}x"


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    line = lambda cells: "  ".join(  # noqa: E731
        c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))
    )
    return "\n".join([line(header), "  ".join("-" * w for w in widths), *(line(r) for r in rows)])


def _num(rec, key) -> str:
    v = rec.get(key)
    return "-" if v is None else str(v)


def mst_tables(results: list[dict], families: list[Family]) -> list[str]:
    out = []
    for fam in families:
        f = fam.value
        rows = []
        for layer in dict.fromkeys(r["layer"] for r in results if r["section"] == "mst"):
            recs = [r for r in results if r["section"] == "mst" and r["layer"] == layer and r["family"] == f]
            plain = next((r for r in recs if r["config"] == "plain"), {})
            for r in recs:
                ok = r["status"] == "ok"
                rows.append([
                    layer, r["config"], f"{r['ops_ratio']:.2f}x", str(r["latency"]),
                    _num(r, "luts"), _num(r, "carries"), _num(r, "ffs"), _num(r, "lut_equivalent"),
                    _num(r, "logic_floor"),
                    _ratio(plain.get("lut_equivalent"), r.get("lut_equivalent")) if ok else r["status"],
                    _ratio(plain.get("carries"), r.get("carries")) if ok else "",
                    _ratio(plain.get("ffs"), r.get("ffs")) if ok else "",
                    _ratio(plain.get("logic_floor"), r.get("logic_floor")) if ok else "",
                    _num(r, "est_lut4"), _num(r, "est_carry"), _num(r, "est_registers"),
                    _num(r, "est_tree_ops"), _num(r, "seconds"),
                ])
        if not rows:
            continue
        header = ["layer", "config", "ops x", "lat", LUT_NAME[f], CARRY_NAME[f], "FF", "LUT-eq",
                  FLOOR_NAME[f], "LUT-eq x", "carry x", "FF x", f"{FLOOR_NAME[f][:-2]} x", "est LUT4",
                  "est carry", "est FF", "tree ops", "yosys s"]
        cmp_forms = sorted({r.get("compare", "carry") for r in results if r["section"] == "mst"})
        shares = sorted({str(r.get("share")) for r in results if r["section"] == "mst" and r.get("depth") is not None})
        out.append(f"MST reuse vs plain, {f} ({'synth_' + f}); x = plain / this, measured in this run; "
                   f"compare={','.join(cmp_forms)}, MST share={','.join(shares)}; "
                   "tree ops = counters and adders built in the trees, shared ones once\n"
                   + _table(header, rows))
    return out


def style_tables(results: list[dict], families: list[Family]) -> list[str]:
    out = []
    for fam in families:
        f = fam.value
        recs = [r for r in results if r["section"] == "styles" and r["family"] == f]
        if not recs:
            continue
        naive = next((r for r in recs if r["style"] == "naive"), {})
        rows = [[
            r["layer"], r["config"], str(r["latency"]), _num(r, "luts"), _num(r, "carries"),
            _num(r, "ffs"), _num(r, "lut_equivalent"), _num(r, "logic_floor"),
            _ratio(naive.get("lut_equivalent"), r.get("lut_equivalent")) if r["status"] == "ok" else r["status"],
            _num(r, "est_lut4"), _num(r, "est_carry"), _num(r, "est_registers"), _num(r, "seconds"),
        ] for r in recs]
        header = ["layer", "structure", "lat", LUT_NAME[f], CARRY_NAME[f], "FF", "LUT-eq",
                  FLOOR_NAME[f], "LUT-eq vs naive", "est LUT4", "est carry", "est FF", "yosys s"]
        ok = [r for r in recs if r["status"] == "ok" and r["style"] != "naive"]
        note = ""
        if ok:
            by_lut = min(ok, key=lambda r: (r["lut_equivalent"], r["logic_floor"]))
            by_floor = min(ok, key=lambda r: (r["logic_floor"], r["lut_equivalent"]))
            note = (f"\nfewest LUT-eq on {f}: {by_lut['config']} ({by_lut['lut_equivalent']}); "
                    f"fewest {FLOOR_NAME[f][:-2]}s (floor): {by_floor['config']} ({by_floor['logic_floor']})")
        out.append(f"Popcount structure, plain mode, {f}; vs naive = naive LUT-eq / this, "
                   f"{FLOOR_NAME[f]} = fewest {FLOOR_NAME[f][:-2]}s the cells fit\n"
                   + _table(header, rows) + note)
    return out


def _best_mst(results: list[dict], families: list[Family]):
    """Per MST layer and family with a plain design: (layer, family, plain record, best MST record,
    plain / best LUT-eq)."""
    for layer in dict.fromkeys(r["layer"] for r in results if r["section"] == "mst"):
        for fam in families:
            recs = [r for r in results if r["section"] == "mst" and r["layer"] == layer
                    and r["family"] == fam.value and r["status"] == "ok"]
            plain = next((r for r in recs if r["config"] == "plain"), None)
            mst = [r for r in recs if r["config"] != "plain"]
            if plain is None or not mst:
                continue
            best = max(mst, key=lambda r: plain["lut_equivalent"] / r["lut_equivalent"])
            yield layer, fam, plain, best, plain["lut_equivalent"] / best["lut_equivalent"]


def _goal_applies(layer: str) -> bool:
    """The goal is on an MST-regularised layer; random layers are measured for reference only."""
    return not layer.startswith("random")


def goal_lines(results: list[dict], families: list[Family]) -> list[str]:
    return [
        f"{layer:>14} {fam.value:<5}: best {best['config']:<11} {x:.2f}x fewer LUT-eq "
        f"(ops {best['ops_ratio']:.2f}x) -> "
        + (f"goal >= {GOAL:.0f}x {'met' if x >= GOAL else 'not met'}" if _goal_applies(layer)
           else "reference (random weights; the goal is on an MST-regularised layer)")
        for layer, fam, _, best, x in _best_mst(results, families)
    ]


def metrics(results: list[dict], families: list[Family]) -> list[dict]:
    """The figures as ``python -m bench`` records (bench/_results.py): LUT-eq of every design that
    synthesised, and per MST layer and family the best plain / MST LUT-eq ratio (goal >= 3x)."""
    out = []
    for r in results:
        if r["status"] == "ok":
            out.append(metric(f"{r['section']} {r['layer']} {r['config']} {r['family']} LUT-eq", r["lut_equivalent"], "LUT4"))
    for layer, fam, _, best, x in _best_mst(results, families):
        out.append(metric(f"{layer} {fam.value} plain / MST LUT-eq (best: {best['config']})", x, "x",
                          goal=f">= {GOAL:g}" if _goal_applies(layer) else None, headline=True))
    return out


def _list(text: str, conv) -> list:
    return [conv(s) for s in text.split(",") if s.strip()]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help=f"code[:{QUICK_CODE_ROWS}] and depth 4 only, styles at register_every 1")
    ap.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    ap.add_argument("--families", default="ice40,ecp5", help="comma-separated: ice40, ecp5")
    ap.add_argument("--depths", default=None, help="MST depth limits (default 2,4,8; quick 4)")
    ap.add_argument("--style", default="adder", choices=[s.value for s in PopcountStyle],
                    help="popcount style of the MST section (default adder)")
    ap.add_argument("--register-every", type=int, default=1, help="of the MST section (default 1)")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per synthesis (default 900)")
    ap.add_argument("--workdir", metavar="DIR", help="keep every design's Yosys files and log here")
    ap.add_argument("--skip-mst", action="store_true", help="only the popcount-structure section")
    ap.add_argument("--skip-styles", action="store_true", help="only the MST section")
    ap.add_argument("--model", default="digits-ecoc-mlp", help="bundled model of the MST section (default digits-ecoc-mlp)")
    ap.add_argument("--layer", default="code", help="its binary Dense layer (default code)")
    ap.add_argument("--compare", default="carry", choices=["carry", "logic"],
                    help="threshold comparisons of the MST section, plain and MST alike (default carry)")
    ap.add_argument("--mst-share", default=None, choices=["search", "identical", "none"],
                    help="tree sharing of the MST engines (default: the engine's, search)")
    args = ap.parse_args(argv)

    families = [Family(f) for f in _list(args.families, str)]
    depths = _list(args.depths, int) if args.depths else ([4] if args.quick else [2, 4, 8])
    registers = [1] if args.quick else [1, 2, 3]
    style_rows = QUICK_STYLE_ROWS if args.quick else 64
    style = PopcountStyle(args.style)
    yosys = find_yosys()  # fail early, naming the fix, if there is no Yosys

    designs: list[Design] = []
    rnd = random_layer()
    if not args.skip_mst:
        share = args.mst_share
        designs += mst_designs(code_layer(QUICK_CODE_ROWS if args.quick else None, args.model, args.layer), depths, style,
                               args.register_every, args.compare, share)
        designs += mst_designs(rnd, depths, style, args.register_every, args.compare, share)
    if not args.skip_styles:
        designs += style_designs(random_layer(style_rows), registers)

    print(f"{len(designs)} designs x {len(families)} families; yosys: {' '.join(yosys)}", flush=True)
    results: list[dict] = []
    done: dict[tuple, list[dict]] = {}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bnnfab-mst-logic-") as tmp:
        root = Path(args.workdir) if args.workdir else Path(tmp)
        for d in designs:
            if d.key in done:  # e.g. the plain ADDER layer of both sections
                print(f"  {d.layer.label:>14} {d.config:<14} (synthesised above)", flush=True)
                rows = [{**r, "section": d.section, "config": d.config} for r in done[d.key]]
            else:
                rows = done[d.key] = run_design(d, families, args.timeout, root)
            results += rows
    total = time.perf_counter() - t0

    tool = next((r.pop("tool") for r in results if "tool" in r), "")
    for r in results:
        r.pop("tool", None)
    print()
    for block in (*mst_tables(results, families), *style_tables(results, families)):
        print(block, end="\n\n")
    for line in goal_lines(results, families):
        print(line)
    print(f"\ntotal {total:.0f} s (Verilog conversion + synthesis, one synthesis at a time)")

    if args.json:
        report = {
            "bench": "mst_logic",
            "quick": args.quick,
            "families": [f.value for f in families],
            "depths": depths,
            "style": style.name,
            "compare": args.compare,
            "mst_share": args.mst_share or "search",
            "register_every": args.register_every,
            "yosys": " ".join(yosys),
            "tool": tool,
            "python": platform.python_version(),
            "machine": platform.machine(),
            "total_seconds": round(total, 1),
            "results": results,
            "metrics": metrics(results, families),
        }
        Path(args.json).write_text(json.dumps(report, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
