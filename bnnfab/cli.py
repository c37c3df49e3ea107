"""The ``bnnfab`` command.

Every user error (a missing or corrupt file, a bad option, inputs that do not fit the model)
ends with one line ``bnnfab: error: ...`` naming the rule and the value, and exit code 2; never
a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from . import __version__
from .argtypes import int_type, positive, whole

EXIT_USAGE = 2


class CliError(Exception):
    """A user-facing error: printed as one line, exit code 2."""


# -- argument types ------------------------------------------------------------------------------


_depth = int_type(0, "depth must be a whole number >= 0 or 'none'", ("none", "inf", "unlimited"))
_layer_index = int_type(0, "layer must be a layer index >= 0 (see 'bnnfab info')")
_whole, _positive = whole, positive


def _fold(text: str) -> tuple[int, int, int] | str:
    if text.strip().lower() == "auto":
        return "auto"
    try:
        layer, rest = text.split("=")
        pe, simd = rest.lower().split("x")
        values = int(layer), int(pe), int(simd)
    except ValueError:
        raise argparse.ArgumentTypeError(f"fold must look like LAYER=PExSIMD (e.g. 2=4x32), not {text!r}") from None
    if values[0] < 0 or values[1] < 1 or values[2] < 1:
        raise argparse.ArgumentTypeError(f"fold needs LAYER >= 0 and PE, SIMD >= 1, not {text!r}")
    return values


# -- helpers -------------------------------------------------------------------------------------


def _load_model(ref: str):
    """A model from a ``.bnn`` path or the name of a bundled model."""
    from .models import zoo
    from .models.io import ModelFileError

    try:
        return zoo.resolve(ref)
    except ModelFileError as exc:
        raise CliError(str(exc)) from None


def _load_npy(path: str, what: str) -> np.ndarray:
    p = Path(path)
    if not p.is_file():
        raise CliError(f"no such {what} file: {path}")
    try:
        return np.load(p, allow_pickle=False)
    except ValueError as exc:
        raise CliError(f"{path}: cannot read {what} as a .npy array without pickle ({exc})") from None
    except (OSError, EOFError) as exc:
        raise CliError(f"{path}: cannot read {what} as a .npy array ({exc})") from None


def _print_table(df, out=None) -> None:
    import pandas as pd

    with pd.option_context("display.max_rows", 500, "display.max_columns", 50, "display.width", 200):
        print(df.to_string(index=False), file=out or sys.stdout)


def _gather_inputs(args, model):
    """(x, y or None, description) from --dataset / --inputs / --labels."""
    from .models.datasets import DatasetError, load_dataset

    if args.inputs is not None:
        x = _load_npy(args.inputs, "inputs")
        y = None
        if args.labels is not None:
            y = _load_npy(args.labels, "labels")
            if y.ndim != 1 or y.shape[0] != x.shape[0] or not np.issubdtype(y.dtype, np.integer):
                raise CliError(
                    f"labels must be a 1-D integer array with one label per input ({x.shape[0]}), got shape {y.shape}, dtype {y.dtype}"
                )
        return x, y, args.inputs
    if args.labels is not None:
        raise CliError("--labels goes with --inputs")
    try:
        ds = load_dataset(args.dataset, args.split, root=getattr(args, "data_dir", None))
    except DatasetError as exc:
        raise CliError(str(exc)) from None
    return ds.x, ds.y, f"{ds.name} ({ds.split} split, {len(ds)} images)"


# -- commands ------------------------------------------------------------------------------------


def cmd_info(args) -> int:
    from .sim.report import layer_table

    model = _load_model(args.model)
    spec = model.input
    kind = "binary (±1)" if spec.binary else f"{'signed' if spec.signed else 'unsigned'} {spec.bits}-bit integers"
    print(f"model    {model.name or '(unnamed)'}")
    print(f"input    {'x'.join(map(str, spec.shape))}, {kind}")
    print(f"classes  {model.n_classes}" + ("" if model.epilogue is None else " (with a float epilogue)"))
    if model.prologue is not None:
        print(f"prologue {model.prologue.describe()}")
    for key, value in sorted(model.metadata.items()):
        print(f"{key:8s} {value}")
    print()
    _print_table(layer_table(model))
    return 0


def cmd_simulate(args) -> int:
    from .sim.functional import InputError, Simulator
    from .sim.report import layer_table, plan_model_mst

    model = _load_model(args.model)
    x, y, what = _gather_inputs(args, model)
    sim = Simulator(model)
    t0 = time.perf_counter()
    try:
        result = sim.run(x, batch_size=args.batch_size, progress=not args.no_progress)
    except InputError as exc:
        raise CliError(f"{what}: {exc}") from None
    dt = time.perf_counter() - t0
    n = result.scores.shape[0]
    print(f"simulated {n} inputs from {what} in {dt:.3f} s ({n / max(dt, 1e-9):,.0f} images/s)")
    if y is not None:
        acc = float((result.classes == y).mean())
        print(f"accuracy {acc * 100:.2f}% ({int((result.classes == y).sum())}/{n})")
    schedules = plan_model_mst(model, max_depth=args.mst_depth)
    depth = "unlimited" if args.mst_depth is None else args.mst_depth
    print(f"\nper-layer (ops per image; MST at depth limit {depth}):")
    _print_table(layer_table(model, schedules))
    if args.cycles:
        _report_cycles(args, model, n)
    if args.output is not None:
        out = Path(args.output)
        try:
            np.save(out, result.outputs)
        except OSError as exc:
            raise CliError(f"cannot write --output {args.output}: {exc}") from None
        kind = "float logits" if result.logits is not None else "integer scores"
        print(f"\nwrote {kind} {result.outputs.shape} to {out}")
    return 0


def _report_cycles(args, model, n_images: int) -> None:
    from .codegen.config import ConfigError
    from .codegen.plan import make_plan
    from .codegen.top import AcceleratorTop, cycle_blocks
    from .sim.cycles import simulate_cycles

    if not args.clock_mhz > 0:
        raise CliError(f"--clock-mhz must be positive, not {args.clock_mhz}")
    try:
        top = AcceleratorTop(make_plan(model, _gen_config(args)))
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    blocks = cycle_blocks(top)
    t0 = time.perf_counter()
    trace = simulate_cycles(blocks, n_images)
    dt = time.perf_counter() - t0
    one = simulate_cycles(blocks, 1)
    latency = int(one.emit[0] - one.accept[0])
    total = int(trace.emit[-1]) + 1
    interval = (int(trace.emit[-1] - trace.emit[0]) / (n_images - 1)) if n_images > 1 else float(total)
    f = args.clock_mhz * 1e6
    print(f"\ncycle model ({len(blocks)} blocks: {' -> '.join(b.label for b in blocks)}), input valid and output ready every cycle:")
    print(f"  {n_images} images in {total:,} cycles ({dt * 1e3:.1f} ms to model, {total / max(dt, 1e-9) / 1e6:,.1f} M cycles/s)")
    print(f"  steady state {interval:,.2f} cycles/image = {1 / interval:.5f} images/cycle = {f / interval:,.0f} images/s at {args.clock_mhz:g} MHz")
    print(f"  latency {latency} cycles ({latency / f * 1e6:.3f} us) from an image's first input beat to its result")


def cmd_mst(args) -> int:
    from .sim.report import plan_model_mst

    model = _load_model(args.model)
    schedules = plan_model_mst(model, max_depth=args.max_depth, allow_inverted=args.inverted)
    rows = []
    for i, sch in schedules.items():
        layer = model.layers[i]
        stats = sch.stats()
        pos = model.positions(i)
        rows.append(
            {
                "layer": i,
                "name": layer.name,
                **stats,
                "positions": pos,
                "direct_ops_per_image": pos * stats["direct_ops"],
                "mst_ops_per_image": pos * stats["mst_ops"],
            }
        )
    direct = sum(r["direct_ops_per_image"] for r in rows)
    mst = sum(r["mst_ops_per_image"] for r in rows)
    summary = {
        "model": model.name,
        "max_depth": args.max_depth,
        "allow_inverted": args.inverted,
        "direct_ops_per_image": direct,
        "mst_ops_per_image": mst,
        "ratio": round(direct / mst, 4) if mst else None,
    }
    if args.json:
        print(json.dumps({"summary": summary, "layers": rows}, indent=2, sort_keys=True, default=int))
        return 0
    import pandas as pd

    if not rows:
        print("the model has no binary Dense/Conv2d layers to plan")
        return 0
    _print_table(pd.DataFrame(rows))
    print(
        f"\nwhole model: {direct:,} -> {mst:,} binary ops per image "
        f"({summary['ratio']}x fewer) at depth limit {'unlimited' if args.max_depth is None else args.max_depth}"
    )
    return 0


def _gen_config(args, model=None, *, allow_unrolled: bool = True):
    from .codegen.autofold import parse_fold_auto, plan_auto_fold
    from .codegen.config import ConfigError, Engine, GenConfig, LayerChoice

    try:
        auto = parse_fold_auto(args.fold)
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    if auto:
        if args.unroll or args.target_cycles is not None:
            raise CliError("--fold auto chooses every layer's engine and folding; drop --unroll/--target-cycles")
        if getattr(args, "board", None) is None or model is None:
            raise CliError("--fold auto needs a board (bnnfab build/explore --board B): its LUTs and block RAMs bound the design")
        try:
            res = plan_auto_fold(
                model, args.board, clock_mhz=getattr(args, "clock_mhz", None), allow_unrolled=allow_unrolled,
                base=GenConfig(mst_depth=args.mst_depth, mst=not args.no_mst, fifo_depth=args.fifo_depth,
                               register_every=args.register_every),
            )
        except ConfigError as exc:
            raise CliError(str(exc)) from None
        print(res.summary())
        return res.config
    layers: dict[int, LayerChoice] = {}
    try:
        for idx, pe, simd in args.fold or []:
            if idx in layers:
                raise CliError(f"layer {idx} is given twice in --fold/--unroll")
            layers[idx] = LayerChoice(engine=Engine.FOLDED, pe=pe, simd=simd)
        for idx in args.unroll or []:
            if idx in layers:
                raise CliError(f"layer {idx} is given twice in --fold/--unroll")
            layers[idx] = LayerChoice(engine=Engine.UNROLLED)
        return GenConfig(
            layers=layers, target_cycles=args.target_cycles, mst_depth=args.mst_depth, mst=not args.no_mst, fifo_depth=args.fifo_depth,
            register_every=args.register_every,
        )
    except ConfigError as exc:
        raise CliError(str(exc)) from None


def cmd_generate(args) -> int:
    from .codegen.config import ConfigError
    from .codegen.generate import design_manifest, generate, write_design

    model = _load_model(args.model)
    config = _gen_config(args)
    try:
        design = generate(model, config)
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    try:
        files = write_design(design, args.output)
    except OSError as exc:
        raise CliError(f"cannot write into {args.output}: {exc}") from None
    timing = design_manifest(design)["timing"]
    _print_table(design.report)
    print(
        f"\ncycles per image {timing['cycles_per_image']}, latency {timing['latency_cycles']} cycles "
        f"(cycle model, never stalled)"
    )
    for kind, path in files.items():
        print(f"wrote {path}")
    return 0


def cmd_verify(args) -> int:
    import tempfile

    from .codegen.config import ConfigError
    from .codegen.generate import generate, write_design
    from .codegen.rtlsim import RtlBuildError, ToolNotFoundError
    from .codegen.verify import VerifyError, load_design_dir, verify_design
    from .sim.functional import InputError

    target = Path(args.target)
    try:
        if target.is_dir():
            design = load_design_dir(target)
        else:
            model = _load_model(args.target)
            try:
                built = generate(model, _gen_config(args))
            except ConfigError as exc:
                raise CliError(str(exc)) from None
            folder = Path(tempfile.mkdtemp(prefix="bnnfab-design-"))
            write_design(built, folder)
            design = load_design_dir(folder)
            print(f"generated the design into {folder}")
    except VerifyError as exc:
        raise CliError(str(exc)) from None
    args.inputs = args.labels = None
    x, _, what = _gather_inputs(args, design.model)
    x = x[: args.images]
    print(f"verifying {design.verilog} on {args.simulator} with {len(x)} images from {what}, {args.stalls} stalls (seed {args.seed})")
    try:
        report = verify_design(design, x, simulator=args.simulator, seed=args.seed, stalls=args.stalls)
    except (ToolNotFoundError, RtlBuildError, InputError) as exc:
        raise CliError(str(exc)) from None
    print(report.summary())
    return 0 if report.passed else 1


def cmd_train(args) -> int:
    from .models.train.cli import run
    from .models.train.errors import TrainError
    from .sim.functional import simulate
    from .sim.report import plan_model_mst

    try:
        return run(args, check=lambda model, x: simulate(model, x).classes, plan=plan_model_mst)
    except TrainError as exc:
        raise CliError(str(exc)) from None
    except ImportError as exc:
        raise CliError(f"training needs PyTorch: pip install -e '.[train]' ({exc})") from None


def cmd_import(args) -> int:
    from .models.io import save_model

    try:
        from .models.qonnx import QonnxImportError, import_qonnx
    except ImportError as exc:  # pragma: no cover - onnx is a dependency of the [onnx] extra
        raise CliError(f"importing QONNX needs onnx: pip install -e '.[onnx]' ({exc})") from None
    try:
        model = import_qonnx(args.onnx, name=args.name, strict_argmax=not args.allow_reordering)
    except QonnxImportError as exc:
        raise CliError(str(exc)) from None
    try:
        save_model(model, args.output)
    except OSError as exc:
        raise CliError(f"cannot write {args.output}: {exc}") from None
    print(f"imported {args.onnx} -> {args.output}: {len(model.layers)} layers, {model.n_classes} classes")
    if model.prologue is not None:
        print(f"prologue {model.prologue.describe()}")
    return 0


def cmd_build(args) -> int:
    from .boards.build import BuildError, TimingError, plan_build, run_build
    from .boards.clocking import plan_clock
    from .boards.platforms import UnknownBoardError
    from .codegen.autofold import parse_fold_auto
    from .codegen.config import ConfigError, Engine
    from .codegen.generate import generate, write_design

    model = _load_model(args.model)
    out = Path(args.output)

    def build(config):
        design = generate(model, config)
        write_design(design, out / "design")
        info = plan_build(design, args.board, out, baud=args.baud, clock_mhz=args.clock_mhz)
        print(plan_clock(args.board, args.clock_mhz).describe())
        if args.no_run:
            return None
        return run_build(info, require_timing=not args.allow_timing_fail)

    try:
        config = _gen_config(args, model)
        try:
            result = build(config)
        except TimingError as exc:
            # --fold auto meets the clock: unrolled popcount trees hold the long paths, so a plan
            # that unrolled a layer is rebuilt with every layer folded before giving up
            unrolled = [i for i, c in config.layers.items() if c.engine is Engine.UNROLLED]
            if not (parse_fold_auto(args.fold) and unrolled):
                raise
            print(f"{exc}\n--fold auto: timing missed with layer(s) {', '.join(map(str, unrolled))} unrolled; "
                  f"planning again with every layer folded")
            result = build(_gen_config(args, model, allow_unrolled=False))
        if result is None:
            print(f"wrote the {args.board} build plan into {out} (run it later, or without --no-run)")
            return 0
    except (BuildError, UnknownBoardError, ConfigError, ValueError) as exc:
        raise CliError(str(exc)) from None
    table = result.table()
    _print_table(table.drop(columns=[c for c in ("bitstream",) if c in table.columns]))
    print(f"wrote {result.bitstream}")
    return 0


def cmd_run_board(args) -> int:
    from .boards.run import RunBoardError, run

    try:
        return run(args)
    except RunBoardError as exc:
        raise CliError(str(exc)) from None


def cmd_explore(args) -> int:
    from .boards.explore import ExploreError, run

    model = _load_model(args.model)
    try:
        return run(args, model, _gen_config(args, model))
    except ExploreError as exc:
        raise CliError(str(exc)) from None


def cmd_report(args) -> int:
    from .codegen.report_html import ReportError, run

    model = _load_model(args.model)
    try:
        return run(args, model, _gen_config(args))
    except ReportError as exc:
        raise CliError(str(exc)) from None


def cmd_demo(args) -> int:
    import tempfile

    from .codegen.config import Engine, GenConfig, LayerChoice
    from .codegen.generate import design_manifest, generate, write_design
    from .codegen.rtlsim import ToolNotFoundError, find_icarus
    from .codegen.verify import load_design_dir, verify_design
    from .models import zoo
    from .models.datasets import load_dataset
    from .sim.functional import Simulator
    from .sim.report import layer_table, plan_model_mst

    model = zoo.load(zoo.DEFAULT)
    ds = load_dataset("digits", "test")
    print(f"bnnfab {__version__} demo: bundled model {model.name!r} on {ds.name} ({ds.split} split, {len(ds)} images)\n")
    t0 = time.perf_counter()
    direct = Simulator(model).run(ds.x, return_activations=True)
    dt = time.perf_counter() - t0
    acc = float((direct.classes == ds.y).mean())
    print(f"1. functional simulator (Numba, packed XNOR-popcount): accuracy {acc * 100:.2f}%, {dt:.3f} s incl. JIT load")
    depth = args.mst_depth
    schedules = plan_model_mst(model, max_depth=depth)
    via_mst = Simulator(model, mst=schedules).run(ds.x, return_activations=True)
    same = np.array_equal(direct.scores, via_mst.scores) and all(
        np.array_equal(a, b) for a, b in zip(direct.activations, via_mst.activations)
    )
    print(
        f"2. MST channel reuse (depth limit {'unlimited' if depth is None else depth}): every activation and score "
        f"{'IDENTICAL to' if same else 'DIFFERS from'} the direct path"
    )
    _print_table(layer_table(model, schedules))
    if not same:
        print("bnnfab: error: the MST path disagrees with the direct path", file=sys.stderr)
        return 1
    # the accelerator: folded layers balanced to 32 cycles per image, the output layer unrolled with MST reuse
    last = model.compute_layers[-1][0]
    config = GenConfig(target_cycles=32, mst_depth=depth, layers={last: LayerChoice(engine=Engine.UNROLLED)})
    design = generate(model, config)
    out = Path(args.output) if args.output else Path(tempfile.mkdtemp(prefix="bnnfab-demo-"))
    write_design(design, out)
    timing = design_manifest(design)["timing"]
    print(f"\n3. accelerator generated into {out} (Amaranth -> Verilog, {len(design.verilog):,} bytes):")
    _print_table(design.report)
    print(
        f"   cycle model: {timing['cycles_per_image']} cycles per image, latency {timing['latency_cycles']} cycles "
        f"({100e6 / timing['cycles_per_image']:,.0f} images/s at 100 MHz)"
    )
    simulator = args.simulator or ("icarus" if find_icarus() else "verilator")
    images = ds.x[: args.images]
    print(f"\n4. verifying the Verilog on {simulator} with {len(images)} test images under random valid/ready stalls ...")
    try:
        report = verify_design(load_design_dir(out), images, simulator=simulator, seed=1)
    except ToolNotFoundError as exc:
        raise CliError(str(exc)) from None
    print("   " + report.summary().replace("\n", "\n   "))
    return 0 if report.passed else 1


# -- parser --------------------------------------------------------------------------------------


def _add_gen_options(p: argparse.ArgumentParser, mst_help: str) -> None:
    g = p.add_argument_group("hardware options")
    g.add_argument("--fold", type=_fold, action="append", metavar="LAYER=PExSIMD|auto", help="fold a layer explicitly (repeatable); 'auto' (build, explore): every layer's engine, folding and MST depth chosen to fit the board")
    g.add_argument("--unroll", type=_layer_index, action="append", metavar="LAYER", help="unroll a binary layer: one vector per cycle, weights in logic (repeatable)")
    g.add_argument("--target-cycles", type=_positive, default=None, metavar="N", help="fold the other layers to at most N cycles per image each")
    g.add_argument("--mst-depth", type=_depth, default=4, metavar="D", help=mst_help)
    g.add_argument("--no-mst", action="store_true", help="unrolled layers without MST channel reuse")
    g.add_argument("--fifo-depth", type=_whole, default=0, metavar="D", help="a stream FIFO of D beats after every engine but the last (default 0: none)")
    g.add_argument("--register-every", type=_positive, default=1, metavar="R", help="unrolled engines: a pipeline register every R adder levels of their popcount trees (default 1; 2-3 save flip-flops on small FPGAs, at some Fmax)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bnnfab",
        description="Bit-exact binary neural networks: simulate, plan MST channel reuse, inspect models.",
    )
    parser.add_argument("--version", action="version", version=f"bnnfab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("demo", help="the whole flow on the bundled default model: simulate, MST cross-check, generate, verify the RTL")
    p.add_argument("--mst-depth", type=_depth, default=4, metavar="D", help="MST depth limit (default 4; 'none' = unlimited)")
    p.add_argument("--output", metavar="DIR", help="where to write the generated design (default: a new temporary folder)")
    p.add_argument("--simulator", choices=["icarus", "verilator"], help="RTL simulator (default: icarus if installed, else verilator)")
    p.add_argument("--images", type=_positive, default=20, metavar="N", help="test images streamed through the RTL (default 20)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("simulate", help="bit-exact inference of a model on a dataset or a .npy batch")
    p.add_argument("model", help="a .bnn model file or the name of a bundled model")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--dataset", default="digits", metavar="NAME", help="bundled dataset (default: digits)")
    src.add_argument(
        "--inputs",
        metavar="X.npy",
        help="inputs: (batch, *input shape) integers (reals for a binary input); for an imported model, "
        "the source graph's own layout and dtype (e.g. NCHW float32)",
    )
    p.add_argument("--split", default="test", choices=["train", "test", "all"], help="dataset split (default: test)")
    p.add_argument("--data-dir", metavar="DIR", help="folder of the dataset's files (mnist, fashion-mnist, cifar10; default $BNNFAB_DATA/NAME)")
    p.add_argument("--labels", metavar="Y.npy", help="labels for --inputs, to report accuracy")
    p.add_argument("--output", metavar="Y.npy", help="write the final outputs, one row per input (float logits with an epilogue, else integer scores)")
    p.add_argument("--batch-size", type=_positive, default=8192, metavar="B", help="images per chunk (default 8192)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--cycles", action="store_true", help="also run the cycle model of the generated accelerator (hardware options below)")
    p.add_argument("--clock-mhz", type=float, default=100.0, metavar="F", help="clock for images/s with --cycles (default 100)")
    _add_gen_options(p, mst_help="MST depth limit: of the table's MST column and of unrolled layers (default 4; 'none' = unlimited)")
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("mst", help="plan MST channel reuse for every binary layer")
    p.add_argument("model", help="a .bnn model file or the name of a bundled model")
    p.add_argument("--max-depth", type=_depth, required=True, metavar="D", help="depth limit: 0 (no reuse), 1, 2, ... or 'none'")
    p.add_argument("--inverted", action="store_true", help="allow inverted parents (K - p, distance K - d)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_mst)

    p = sub.add_parser("generate", help="generate the accelerator's Verilog, report and design manifest")
    p.add_argument("model", help="a .bnn model file or the name of a bundled model")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="output folder")
    _add_gen_options(p, mst_help="MST depth limit of unrolled layers (default 4; 'none' = unlimited; 0 = no reuse)")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("verify", help="run the generated Verilog in an RTL simulator against the simulator and the cycle model")
    p.add_argument("target", metavar="MODEL|DIR", help="a design folder from 'bnnfab generate', or a model to generate first")
    p.add_argument("--simulator", choices=["icarus", "verilator"], default="icarus", help="RTL simulator (default icarus)")
    p.add_argument("--dataset", default="digits", metavar="NAME", help="images from this bundled dataset (default digits)")
    p.add_argument("--split", default="test", choices=["train", "test", "all"], help="dataset split (default test)")
    p.add_argument("--data-dir", metavar="DIR", help="folder of the dataset's files (default $BNNFAB_DATA/NAME)")
    p.add_argument("--images", type=_positive, default=20, metavar="N", help="number of images (default 20)")
    p.add_argument("--stalls", choices=["random", "bursty", "none"], default="random", help="valid/ready stall patterns (default random)")
    p.add_argument("--seed", type=int, default=1, help="seed of the stall patterns")
    _add_gen_options(p, mst_help="MST depth limit of unrolled layers when generating (default 4)")
    p.set_defaults(func=cmd_verify)

    from .models.train.cli import add_arguments as add_train_arguments  # torch-free

    p = sub.add_parser("train", help="train a BNN with PyTorch (extra [train]) and export it to a .bnn model")
    add_train_arguments(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("import", help="import a QONNX graph (Brevitas export_qonnx, raw or cleaned) into a .bnn model, exactly")
    p.add_argument("onnx", metavar="MODEL.onnx", help="the QONNX file")
    p.add_argument("-o", "--output", required=True, metavar="OUT.bnn", help="the model file to write")
    p.add_argument("--name", help="model name (default: the file's stem)")
    p.add_argument(
        "--allow-reordering",
        action="store_true",
        help="accept a per-class output affine that can change the argmax (classes = argmax of the integer scores)",
    )
    p.set_defaults(func=cmd_import)

    from .boards.platforms import BOARDS

    p = sub.add_parser("build", help="build a board bitstream (yosys + nextpnr + pack through YoWASP) and report utilisation and Fmax")
    p.add_argument("model", help="a .bnn model file or the name of a bundled model")
    p.add_argument("--board", required=True, choices=sorted(BOARDS), help="target board (arty: Verilog and constraints only)")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="build folder")
    p.add_argument("--baud", type=_positive, default=115200, help="host link baud rate (default 115200)")
    p.add_argument("--no-run", action="store_true", help="write the build plan and files without running the tools")
    p.add_argument("--allow-timing-fail", action="store_true", help="keep a bitstream whose Fmax is below the board clock")
    p.add_argument(
        "--clock-mhz", type=float, default=None, metavar="F",
        help="run the accelerator at F MHz through the board's PLL (default: the board oscillator, 12 MHz iCEBreaker, "
        "25 MHz ULX3S); the achieved clock, within 1%%, is printed next to the request",
    )
    _add_gen_options(p, mst_help="MST depth limit of unrolled layers (default 4)")
    p.set_defaults(func=cmd_build)

    from .boards.run import add_arguments as add_run_board_arguments  # light: no Amaranth at import

    p = sub.add_parser(
        "run-board",
        help="classify a dataset on a board over its UART link: accuracy, images/s, every answer checked against the simulator",
    )
    add_run_board_arguments(p)
    p.set_defaults(func=cmd_run_board)

    from .boards.explore import add_arguments as add_explore_arguments  # light: no pandas/dask at import

    p = sub.add_parser(
        "explore",
        help="sweep folding and MST depth on a board (estimate, synth or build) in parallel on Dask: cached points, "
        "a table and a Pareto plot",
    )
    add_explore_arguments(p)
    _add_gen_options(p, mst_help="MST depth limit of unrolled layers, unless swept (default 4; 'none' = unlimited)")
    p.set_defaults(func=cmd_explore)

    from .codegen.report_html import add_arguments as add_report_arguments  # light: no matplotlib/amaranth at import

    p = sub.add_parser("report", help="one self-contained HTML page: model card, accuracy, cycles, MST savings, utilisation, verification")
    add_report_arguments(p)
    _add_gen_options(p, mst_help="MST depth limit of unrolled layers (default 4; 'none' = unlimited)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("info", help="describe a model: input, layers, shapes, metadata")
    p.add_argument("model", help="a .bnn model file or the name of a bundled model")
    p.set_defaults(func=cmd_info)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args.func(args) or 0)
    except CliError as exc:
        print(f"bnnfab: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("bnnfab: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. piped into `head`: stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
