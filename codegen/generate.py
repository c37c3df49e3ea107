"""Hardware generation as named passes: plan -> assemble -> emit Verilog -> report -> write.

``generate(model, config)`` runs the passes and returns a :class:`Design`;
``write_design(design, outdir)`` writes ``<name>.v``, ``report.csv``, ``report.json``,
``design.json`` (the plan, stream format and cycle-model chain, which ``bnnfab verify`` and the
cycle model read back) and ``model.bnn`` (the model it implements). Same model and options, same
bytes.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from amaranth.back import verilog

from ..hdl.unrolled import UnrolledDense
from ..models import Model
from ..models.io import save_model
from ..sim.cycles import Block, simulate_cycles
from .config import Engine, GenConfig
from .plan import HwPlan, make_plan
from .top import AcceleratorTop, StreamFormat, cycle_blocks

__all__ = ["Design", "generate", "emit_verilog", "layer_report", "write_design", "timing_summary"]

@dataclass
class Design:
    plan: HwPlan
    top: AcceleratorTop
    blocks: list[Block]
    verilog: str
    report: pd.DataFrame

    @property
    def name(self) -> str:
        return self.plan.config.name

    @property
    def format(self) -> StreamFormat:
        return self.top.format


def emit_verilog(top: AcceleratorTop, name: str) -> str:
    """Deterministic Verilog of the top (Amaranth's builtin yosys; no timestamps or paths)."""
    ports = [
        top.i_stream.valid,
        top.i_stream.ready,
        top.i_stream.payload,
        top.o_stream.valid,
        top.o_stream.ready,
        top.o_stream.payload,
    ]
    text = verilog.convert(top, name=name, ports=ports, emit_src=False)
    return text


def _memory_bits(rows: int, width: int) -> int:
    """Bits of a rows x width memory."""
    return max(0, rows) * max(0, width)


def timing_summary(blocks: list[Block]) -> dict[str, int]:
    """Latency (one image through an empty chain, never stalled) and the steady-state interval."""
    one = simulate_cycles(blocks, 1)
    many = simulate_cycles(blocks, 6)
    interval = int(many.emit[-1] - many.emit[-2])
    return {
        "latency_cycles": int(one.emit[0] - one.accept[0]),
        "first_output_cycle": int(one.emit[0]),
        "cycles_per_image": interval,
    }


def layer_report(plan: HwPlan, top: AcceleratorTop) -> pd.DataFrame:
    """One row per compute layer: engine, folding, MST, cycles, memory bits, estimated resources.

    Resources come from the calibrated model :mod:`bnnfab.codegen.estimate` (Yosys' memory
    mapping rule, structural register counts, coefficients fitted to synthesis; see
    ``bench/estimate_calibration.py`` for its measured error), for both families:
    ``lut_ice40_est``/``ff_ice40_est``/``bram_ice40`` and ``lut_ecp5_est``/``ff_ecp5_est``/
    ``bram_ecp5_est``/``lutram_ecp5_est`` (LUT4 equivalents as
    :attr:`bnnfab.codegen.synth.SynthResult.lut_equivalent` counts them; ``lutram`` is ECP5
    distributed-RAM cells). A layer's figures include the top's glue in front of its engine
    (window generator, pool, width adapters, the FIFO after the previous engine) and, for the
    last layer, the argmax, so every column sums to the whole design; ``glue_lut_*_est`` is the
    glue's share. ``lut4_est`` and ``ff_est`` repeat the iCE40 figures.
    """
    from . import estimate as est  # noqa: PLC0415

    design_est = est.estimate_top(top)
    rows = []
    for lp, eng in zip(plan.layers, top.engines):
        lv = lp.layer
        row = {
            "layer": lv.index,
            "name": lv.name,
            "engine": "int-folded" if lv.integer else lp.engine.value,
            "N": lv.n,
            "K": lv.k,
            "PE": lp.pe if lp.engine is Engine.FOLDED else lv.n,
            "SIMD": lp.simd if lp.engine is Engine.FOLDED else lv.k,
            "cycles_per_vector": lp.cycles_per_vector,
            "mst_depth": pd.NA,
            "binary_ops": lv.n * lv.k,
            "mst_binary_ops": pd.NA,
        }
        if isinstance(eng, UnrolledDense):
            row.update(latency=eng.latency, mem_bits=0)
            if lp.schedule is not None:
                row.update(mst_depth=lp.schedule.depth_reached, mst_binary_ops=lp.schedule.cost)
        else:
            tbits = 0 if lv.thresholds is None else _memory_bits(eng.nf, lp.pe * eng.threshold_width)
            row.update(
                latency=lp.cycles_per_vector + 3,
                mem_bits=_memory_bits(eng.nf * eng.sf, lp.pe * lp.simd) + tbits
                + _memory_bits(2 * eng.sf, lp.simd * lv.in_bits),
            )
        whole = {f: design_est.layer(lv.index, f).rounded() for f in est.FAMILIES}
        engine_only = {f: design_est.layer(lv.index, f, glue=False) for f in est.FAMILIES}
        ice, ecp = whole["ice40"], whole["ecp5"]
        row.update(
            bram_ice40=ice.brams,
            lut4_est=ice.luts,
            ff_est=ice.ffs,
            lut_ice40_est=ice.luts,
            ff_ice40_est=ice.ffs,
            lut_ecp5_est=ecp.luts,
            ff_ecp5_est=ecp.ffs,
            bram_ecp5_est=ecp.brams,
            lutram_ecp5_est=ecp.lutram,
            glue_lut_ice40_est=int(round(ice.luts - engine_only["ice40"].luts)),
            glue_lut_ecp5_est=int(round(ecp.luts - engine_only["ecp5"].luts)),
        )
        rows.append(row)
    df = pd.DataFrame(rows)
    for col in ("mst_depth", "mst_binary_ops"):
        df[col] = df[col].astype("Int64")
    return df


def generate(model: Model, config: GenConfig | None = None) -> Design:
    """Run the passes: plan (lowering, folding, MST), assemble, emit Verilog, report."""
    config = config or GenConfig()
    plan = make_plan(model, config)
    top = AcceleratorTop(plan)
    blocks = cycle_blocks(top)
    text = emit_verilog(top, config.name)
    return Design(plan=plan, top=top, blocks=blocks, verilog=text, report=layer_report(plan, top))


def _jsonable(v):
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        return float(v)
    if v is pd.NA:
        return None
    return v


def design_manifest(design: Design) -> dict:
    """Plain-data description of a design: what ``bnnfab verify`` and reports read back."""
    cfg = design.plan.config
    return {
        "format": "bnnfab-design",
        "version": 1,
        "model": design.plan.model.name,
        "top": design.name,
        "config": {
            "target_cycles": cfg.target_cycles,
            "mst_depth": cfg.mst_depth,
            "mst": cfg.mst,
            "fifo_depth": cfg.fifo_depth,
            "register_every": cfg.register_every,
            "layers": {str(k): {f: (v.value if hasattr(v, "value") else v) for f, v in asdict(c).items()} for k, c in sorted(cfg.layers.items())},
        },
        "stream": asdict(design.format),
        "blocks": [{"kind": b.kind.name, "params": list(b.params), "label": b.label} for b in design.blocks],
        "timing": timing_summary(design.blocks),
        "layers": [{k: _jsonable(v) for k, v in row.items()} for row in design.report.to_dict(orient="records")],
    }


def write_design(design: Design, outdir: str | Path) -> dict[str, Path]:
    """Write the Verilog, the report (CSV and JSON), ``design.json`` and the model into ``outdir``."""
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "verilog": out / f"{design.name}.v",
        "report_csv": out / "report.csv",
        "report_json": out / "report.json",
        "design": out / "design.json",
        "model": out / "model.bnn",
    }
    files["verilog"].write_text(design.verilog)
    save_model(design.plan.model, files["model"])
    design.report.to_csv(files["report_csv"], index=False, lineterminator="\n")
    manifest = design_manifest(design)
    files["report_json"].write_text(json.dumps(manifest["layers"], indent=2, sort_keys=True) + "\n")
    files["design"].write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return files
