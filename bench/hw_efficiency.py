"""Hardware efficiency from real board builds: LUTs, BRAM, Fmax, cycles/image, images/s and binary
ops per cycle per LUT, with and without MST channel reuse (issue 5 item 5, issue 6 item 1).

Usage::

    python bench/hw_efficiency.py [--quick] [--boards icebreaker,ulx3s] [--model NAME]
                                  [--target-cycles T|BOARD=T,...] [--mst-depth D] [--unroll NAME,...]
                                  [--register-every R] [--json PATH] [--workdir DIR]

For one model (default: the bundled MST-regularised ``digits-tfc-mst``) and every board, three
designs are generated and built to a bitstream through the YoWASP tools
(:func:`bnnfab.boards.build.plan_build` / :func:`~bnnfab.boards.build.run_build`, UART host link
included), one build at a time:

* ``folded``: every layer folded to ``T`` cycles per image (``--target-cycles``; default 1024 on
  the iCEBreaker, whose 5,280 LUT4s need the weights in block RAM, 32 on the ULX3S);
* ``unrolled-plain``: the other layers folded to ``T``, binary layers unrolled (one vector per
  cycle, weights in logic) without channel reuse: every binary layer on the ULX3S; on the
  iCEBreaker the last hidden binary layer (``dense2`` of the default model) with its popcount
  trees registered every 3 adder levels (``--register-every``; the iCE40UP5K's 5,280 logic cells
  run out of flip-flops first), so that the plain layer does not fit and the MST one does
  (``--unroll NAME,...`` and ``--register-every R`` choose others, for every board);
* ``unrolled-mst``: the same folding, the unrolled layers with MST reuse at depth ``D`` (default 8).

The last two have the same folding, so the same cycles per image: MST changes only the logic
(LUTs, carry cells) and the clock it reaches. Per design the table gives LUTs (iCE40 ``SB_LUT4``;
ECP5 the LUT4 equivalent, ``LUT4 + 2 CCU2C``), flip-flops, BRAM, nextpnr's Fmax, cycles per image
from the cycle model, images/s at the board clock (what the build runs at: 12 MHz iCEBreaker, 25
MHz ULX3S) and at Fmax (reachable with a PLL), and the efficiency
``ops per cycle per LUT = 2 * MACs per image / cycles per image / LUTs``, counting two operations
(XNOR and popcount add) per binary multiply-accumulate as FINN does; FINN's SFC-max reaches about
0.45 (8,265 GOPS, 91,131 LUTs at 200 MHz; Umuroglu et al., FPGA 2017) on Xilinx 6-input LUTs, so
our 4-input LUT counts are not directly comparable (a LUT6 holds about two LUT4s' logic).
A design that does not fit the device is a row with status ``does-not-fit`` and the resource that
overflowed (e.g. the plain unrolled layers on the iCE40UP5K), never a crash.

``--quick``: iCE40 only, the three designs at ``T = 1024`` (~3 minutes).
The full run takes ~10-15 minutes on two cores.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _results  # noqa: E402
from bnnfab.boards.build import BuildError, DoesNotFitError, TimingError, plan_build, run_build  # noqa: E402
from bnnfab.boards.platforms import get_board  # noqa: E402
from bnnfab.codegen.config import Engine, GenConfig, LayerChoice  # noqa: E402
from bnnfab.codegen.generate import design_manifest, generate  # noqa: E402
from bnnfab.models import zoo  # noqa: E402

FINN_SFC_MAX = 0.45  # ops/cycle/LUT, see the module docstring
DESIGNS = ("folded", "unrolled-plain", "unrolled-mst")
# cycles per image of the folded layers: the iCE40UP5K (5,280 LUT4) needs deep folds so that the
# weights sit in its 30 block RAMs; the ECP5-85F has room for a fast pipeline
DEFAULT_TARGET = {"icebreaker": 1024, "ulx3s": 32}
# adder levels per pipeline register of the unrolled trees: the iCE40UP5K is short of flip-flops
DEFAULT_REGISTER_EVERY = {"icebreaker": 3, "ulx3s": 1}


def design_config(model, design: str, target_cycles: int, mst_depth: int | None, unroll=None,
                  register_every: int = 1) -> GenConfig:
    """The GenConfig of one of :data:`DESIGNS` for ``model``; ``unroll``: the layer names unrolled
    in the unrolled designs (default: every binary layer), their trees registered every
    ``register_every`` adder levels."""
    if design == "folded":
        return GenConfig(target_cycles=target_cycles)
    binary = {i: LayerChoice(engine=Engine.UNROLLED) for i, layer in model.compute_layers
              if not model.takes_integers(i) and (unroll is None or layer.name in unroll)}
    if design == "unrolled-plain":
        return GenConfig(target_cycles=target_cycles, mst=False, layers=binary, register_every=register_every)
    if design == "unrolled-mst":
        return GenConfig(target_cycles=target_cycles, mst_depth=mst_depth, layers=binary, register_every=register_every)
    raise ValueError(f"design must be one of {', '.join(DESIGNS)}, not {design!r}")


def macs_per_image(model) -> int:
    """Multiply-accumulates of one inference: N * K per output position, every compute layer."""
    return sum(layer.n * layer.k * model.positions(i) for i, layer in model.compute_layers)


def measure(model, board: str, design: str, target_cycles: int, mst_depth: int | None, workdir: Path,
            unroll=None, register_every: int = 1) -> dict:
    """Generate and build one design; one result row (status ``ok``, ``does-not-fit``,
    ``timing-fail`` or ``error``)."""
    cfg = design_config(model, design, target_cycles, mst_depth, unroll, register_every)
    gen = generate(model, cfg)
    timing = design_manifest(gen)["timing"]
    rep = gen.report
    mst_ops = int(sum(int(o) if pd.notna(o) else int(n) for o, n in zip(rep["mst_binary_ops"], rep["binary_ops"])))
    row = {
        "board": board,
        "model": model.name,
        "design": design,
        "mst_depth": None if design != "unrolled-mst" else ("none" if mst_depth is None else mst_depth),
        "unrolled": None if design == "folded" else "+".join(
            layer.name for i, layer in model.compute_layers if i in cfg.layers),
        "register_every": None if design == "folded" else register_every,
        "cycles_per_image": int(timing["cycles_per_image"]),
        "latency_cycles": int(timing["latency_cycles"]),
        "macs_per_image": macs_per_image(model),
        "binary_ops_built": mst_ops,
        "status": "ok",
    }
    t0 = time.perf_counter()
    try:
        info = plan_build(gen, board, workdir / f"{board}-{design}")
        res = run_build(info, require_timing=False)
    except DoesNotFitError as exc:
        row.update(status="does-not-fit", detail=f"{exc.resource} {exc.used}/{exc.available}")
        return row
    except (BuildError, TimingError) as exc:
        row.update(status="error", detail=str(exc).splitlines()[0][:200])
        return row
    clock = res.clock_mhz
    luts = res.lut_equivalent
    row.update(
        luts=luts,
        ffs=res.ffs,
        brams=res.brams,
        fmax_mhz=round(res.fmax_mhz, 2),
        clock_mhz=clock,
        timing_met=bool(res.timing_met),
        images_per_s_clock=round(clock * 1e6 / row["cycles_per_image"], 1),
        images_per_s_fmax=round(res.fmax_mhz * 1e6 / row["cycles_per_image"], 1),
        ops_per_cycle_per_lut=round(2 * row["macs_per_image"] / row["cycles_per_image"] / luts, 4),
        build_s=round(time.perf_counter() - t0, 1),
    )
    if not res.timing_met:
        row["status"] = "timing-fail"
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="iCE40 only, T=1024")
    ap.add_argument("--boards", default="icebreaker,ulx3s", help="comma-separated boards (default icebreaker,ulx3s)")
    ap.add_argument("--model", default="digits-tfc-mst", help="bundled model name or .bnn file (default digits-tfc-mst)")
    ap.add_argument("--target-cycles", default=None, metavar="T|BOARD=T,...",
                    help="cycles per image of the folded layers, one number or per board "
                         f"(default {','.join(f'{b}={t}' for b, t in DEFAULT_TARGET.items())}; 1024 with --quick)")
    ap.add_argument("--mst-depth", default="8", help="MST depth limit of the unrolled-mst design (default 8; 'none' = unlimited)")
    ap.add_argument("--unroll", default=None, metavar="NAME,...",
                    help="layers unrolled in the unrolled designs, by name (default: every binary layer on the "
                         "ULX3S, the output layer on the iCEBreaker)")
    ap.add_argument("--register-every", type=int, default=None, metavar="R",
                    help="unrolled designs: a pipeline register every R adder levels (default "
                         f"{','.join(f'{b}={r}' for b, r in DEFAULT_REGISTER_EVERY.items())})")
    ap.add_argument("--json", metavar="PATH", help="write the results (python -m bench contract)")
    ap.add_argument("--workdir", metavar="DIR", help="keep the build folders here (default: a temporary folder)")
    args = ap.parse_args(argv)
    if args.register_every is not None and args.register_every < 1:
        ap.error(f"--register-every must be a positive whole number, not {args.register_every}")
    boards = [b.strip() for b in args.boards.split(",") if b.strip()]
    for b in boards:
        if not get_board(b).flow.runnable:
            ap.error(f"board {b!r} has no open flow here (plan only); choose from icebreaker, ulx3s")
    depth = None if args.mst_depth.lower() == "none" else int(args.mst_depth)
    targets = dict(DEFAULT_TARGET)
    if args.quick:
        targets = {b: 1024 for b in targets}
    if args.target_cycles:
        try:
            if "=" in args.target_cycles:
                targets.update({k.strip(): int(v) for k, v in (kv.split("=") for kv in args.target_cycles.split(","))})
            else:
                targets = {b: int(args.target_cycles) for b in boards}
        except ValueError:
            ap.error(f"--target-cycles must be T or BOARD=T,..., not {args.target_cycles!r}")
    designs = DESIGNS
    if args.quick:
        boards = [b for b in boards if b == "icebreaker"] or boards[:1]
    model = zoo.resolve(args.model)

    rows = []
    with tempfile.TemporaryDirectory(prefix="bnnfab-hw-") as tmp:
        work = Path(args.workdir) if args.workdir else Path(tmp)
        for board in boards:
            for design in designs:
                print(f"building {model.name} {design} for {board} ...", flush=True)
                if args.unroll is not None:
                    unroll = {x.strip() for x in args.unroll.split(",")}
                elif board == "icebreaker":  # the last hidden binary layer (else the output layer)
                    binary = [layer.name for i, layer in model.compute_layers if not model.takes_integers(i)]
                    unroll = {binary[-2] if len(binary) > 1 else binary[-1]}
                else:
                    unroll = None
                reg = args.register_every or DEFAULT_REGISTER_EVERY.get(board, 1)
                rows.append(measure(model, board, design, targets.get(board, 32), depth, work, unroll, reg))
                r = rows[-1]
                print(f"  {r['status']}: " + ", ".join(f"{k}={r[k]}" for k in ("luts", "brams", "fmax_mhz", "images_per_s_clock", "detail") if k in r), flush=True)
    df = pd.DataFrame(rows)
    cols = [c for c in ("board", "design", "unrolled", "register_every", "mst_depth", "status", "luts", "ffs", "brams", "fmax_mhz", "clock_mhz",
                        "cycles_per_image", "images_per_s_clock", "images_per_s_fmax", "ops_per_cycle_per_lut",
                        "binary_ops_built", "detail") if c in df.columns]
    print(f"\n{model.name}: {macs_per_image(model):,} MACs per image; folded layers at "
          + ", ".join(f"{b}: {targets.get(b, 32)}" for b in boards) + " cycles per image")
    print(df[cols].to_string(index=False))

    metrics, md = [], ["| board | design | status | LUTs | BRAM | Fmax MHz | cycles/img | img/s @clock | img/s @Fmax | ops/cycle/LUT |",
                       "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        md.append("| {board} | {design} | {status} | {l} | {b} | {f} | {c} | {i} | {j} | {e} |".format(
            l=r.get("luts", r.get("detail", "")), b=r.get("brams", ""), f=r.get("fmax_mhz", ""), c=r["cycles_per_image"],
            i=r.get("images_per_s_clock", ""), j=r.get("images_per_s_fmax", ""), e=r.get("ops_per_cycle_per_lut", ""), **r))
        if r["status"] in ("ok", "timing-fail"):
            tag = f"{r['board']} {r['design']}"
            metrics += [
                _results.metric(f"{tag} LUTs", r["luts"], "LUT4"),
                _results.metric(f"{tag} Fmax", r["fmax_mhz"], "MHz"),
                _results.metric(f"{tag} images/s at Fmax", r["images_per_s_fmax"], "images/s"),
                _results.metric(f"{tag} ops/cycle/LUT", r["ops_per_cycle_per_lut"], "ops/cycle/LUT", headline=True),
            ]
    for board in boards:
        by = {r["design"]: r for r in rows if r["board"] == board}
        plain, mst = by.get("unrolled-plain"), by.get("unrolled-mst")
        if plain and mst and "luts" in plain and "luts" in mst:
            ratio = plain["luts"] / mst["luts"]
            metrics.append(_results.metric(f"{board} unrolled plain / MST LUTs", ratio, "x", headline=True))
            print(f"{board}: MST reuse takes {ratio:.2f}x fewer LUTs than plain at the same folding")
        elif plain and mst and "luts" in mst:
            print(f"{board}: the plain unrolled design does not fit ({plain.get('detail', plain['status'])}); with MST it does")
            if plain["status"] == "does-not-fit":
                used, avail = (int(v) for v in plain["detail"].split()[-1].split("/"))
                metrics.append(_results.metric(f"{board} plain unrolled {plain['detail'].split()[0]} needed / available",
                                               used / avail, "x", headline=True))
    if args.json:
        _results.write_json(args.json, {
            "bench": "hw_efficiency", "model": model.name, "target_cycles": targets, "rows": rows,
            "metrics": metrics, "summary_md": md,
            "notes": [f"ops = 2 x MACs per image ({macs_per_image(model):,} MACs); FINN SFC-max ~{FINN_SFC_MAX} ops/cycle/LUT on LUT6"],
            "machine": _results.machine_info(),
        })
    ok = any(r["status"] in ("ok", "timing-fail") for r in rows)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
