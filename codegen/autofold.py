"""Automatic folding for a board (``--fold auto``): the fastest pipeline the device holds.

:func:`auto_fold` chooses, for every compute layer of a model, its engine (folded, or unrolled
for a binary layer), PE and SIMD of a folded engine and the MST depth limit of an unrolled one,
so that the accelerator processes as many images per second as possible while the calibrated
resource estimate (:mod:`bnnfab.codegen.estimate`, the board's FPGA family) fits the device.

Model
-----
* **Throughput.** A streaming pipeline runs at the rate of its slowest stage: the plan's
  cycles per image is ``max over layers of positions * cycles per vector`` (``NF * SF`` for a
  folded engine, 1 for an unrolled one). Images per second = clock / cycles per image.
* **Clock.** The design runs at the board's oscillator (``clock_mhz``, e.g. a PLL clock from ``bnnfab build --clock-mhz``, overrides it for the
  images/s figure only), and the search assumes it meets that clock: Fmax is not modelled and is
  checked by the real build. ``bnnfab build --fold auto`` meets it: when a plan that unrolls
  layers misses timing, it plans again with every layer folded (short paths) and rebuilds; a
  folded design that still misses it is reported (``TimingError``: lower ``--clock-mhz``).
* **Fit.** The estimate's LUT4s (plus 6 per ECP5 distributed-RAM cell) must stay within
  ``margin`` (default 0.85) of the device's LUTs, and its block RAMs within the device's. The UART
  link and board glue of ``bnnfab build`` are not in the estimate; the margin covers them.

Search
------
Every layer gets a candidate list: each folded ``(NF, SF)`` pair with the fewest lanes that give
it (``PE = ceil(N / NF)``, ``SIMD = ceil(K / SF)``), and, for binary layers, the unrolled engine
at each depth in ``mst_depths`` (0 = plain popcount trees). A candidate's cost is its engine plus
the width adapter in front of it; windows, pools, gathers, FIFOs and the argmax do not depend on
the choice. For a target ``T`` the cheapest assignment with every layer at most ``T`` cycles per
image is found exactly (a dynamic programme over the block RAMs used, minimising LUTs), and a
binary search finds the smallest ``T`` that fits (feasibility only grows with ``T``). Ties keep
the fewest LUTs, so the pipeline is balanced: no layer is faster than it needs to be. Candidate
costs are the estimate of the block itself (ROM contents included), so the chosen design's
whole-top estimate equals the search's; it is still re-estimated from the generated plan, and a
slower target is tried if that ever disagrees.

The result is a :class:`~bnnfab.codegen.config.GenConfig` whose ``layers`` name every compute
layer explicitly, so :func:`bnnfab.codegen.generate.generate` reproduces it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Iterable

import numpy as np

from . import estimate as est
from .config import ConfigError, Engine, GenConfig, LayerChoice
from .plan import GatherSpec, MatVec, PoolSpec, WindowSpec, lower_layers, make_plan

__all__ = ["AutoFoldError", "Candidate", "AutoFoldResult", "layer_candidates", "auto_fold", "plan_auto_fold",
           "parse_fold_auto", "DEFAULT_MST_DEPTHS", "DEFAULT_MARGIN"]

DEFAULT_MST_DEPTHS: tuple = (0, 2, 4)
DEFAULT_MARGIN = 0.85


class AutoFoldError(ConfigError):
    """No folding fits the device (the message names the board, the resource and the need), or
    the board has no resource model."""


@dataclass(frozen=True)
class Candidate:
    """One way to build one compute layer: engine, folding or MST depth, cycles per image and
    estimated cost (engine plus the width adapter in front of it)."""

    layer: int  # IR index
    engine: Engine
    pe: int
    simd: int
    mst_depth: int | None  # unrolled only; 0 = plain trees
    cycles: int  # per image
    cost: est.Cost

    @property
    def luts(self) -> float:
        return self.cost.fit_luts

    def choice(self) -> LayerChoice:
        if self.engine is Engine.UNROLLED:
            return LayerChoice(engine=Engine.UNROLLED, mst_depth=self.mst_depth, mst=self.mst_depth != 0)
        return LayerChoice(engine=Engine.FOLDED, pe=self.pe, simd=self.simd)


@dataclass(frozen=True)
class AutoFoldResult:
    """What :func:`plan_auto_fold` chose and why."""

    config: GenConfig
    board: str
    family: str
    clock_hz: float
    cycles_per_image: int  # plan estimate: the slowest layer's cycles per image
    images_per_second: float
    estimate: est.Cost  # exact estimate of the chosen design (whole top)
    lut_budget: float
    bram_budget: int
    candidates: dict  # IR index -> tuple of Candidates considered

    def summary(self) -> str:
        t = self.estimate
        return (f"auto fold for {self.board} ({self.family}): {self.cycles_per_image} cycles/image = "
                f"{self.images_per_second:,.0f} images/s at {self.clock_hz / 1e6:g} MHz; estimated "
                f"{t.fit_luts:,.0f} of {self.lut_budget:,.0f} LUT4 budget, {t.brams} of {self.bram_budget} block RAMs")


def _distinct_folds(n: int) -> list[tuple[int, int]]:
    """(folds, lanes) for every distinct ceil(n / lanes), with the fewest lanes giving it."""
    out = {}
    for lanes in range(1, n + 1):
        f = -(-n // lanes)
        if f not in out:
            out[f] = lanes
    return sorted(out.items())


def _max_term(mv: MatVec) -> int:
    return (1 << (mv.in_bits - 1)) if mv.in_signed else (1 << mv.in_bits) - 1


def _stored_thresholds(mv: MatVec):
    """(thresholds as the folded engine stores them, their width); (None, 0) for the output layer."""
    if mv.thresholds is None:
        return None, 0
    t = np.asarray(mv.thresholds, dtype=np.int64)
    if mv.integer:
        big = mv.k * _max_term(mv)
        return np.clip(t, -big, big + 1), (big + 1).bit_length() + 1
    return np.clip(t, 0, mv.k + 1), (mv.k + 1).bit_length()


def _pareto(cands: list[Candidate]) -> list[Candidate]:
    """Drop candidates that another beats or equals on cycles, LUTs and block RAMs."""
    cands = sorted(cands, key=lambda c: (c.cycles, c.luts, c.cost.brams, c.engine.value, c.pe, c.simd))
    keep: list[Candidate] = []
    for c in cands:
        if any(k.cycles <= c.cycles and k.luts <= c.luts and k.cost.brams <= c.cost.brams for k in keep):
            continue
        keep.append(c)
    return keep


def layer_candidates(mv: MatVec, in_width: int | None, family, mst_depths: Iterable = DEFAULT_MST_DEPTHS,
                     allow_unrolled: bool = True, lut_budget: float | None = None,
                     register_every: int = 1) -> list[Candidate]:
    """The Pareto-optimal (cycles, LUTs, block RAMs) ways to build layer ``mv`` when the stream
    in front of it is ``in_width`` bits wide (None: it is the accelerator's input); unrolled
    engines register their trees every ``register_every`` levels.

    With ``lut_budget``, an unrolled engine is not sized (which is slow for large layers) when
    its binary ops per vector, over 4 (a LUT4 adds at most four bits), already exceed it."""
    from ..hdl.unrolled import UnrolledPlan  # noqa: PLC0415
    from ..sim.mst import plan_mst  # noqa: PLC0415

    fam = est._family(family)
    out = []
    eb = mv.in_bits if mv.integer else 1
    stored, wt = _stored_thresholds(mv)
    for nf, pe in _distinct_folds(mv.n):
        for sf, simd in _distinct_folds(mv.k):
            live = est.folded_live_columns(mv.weights, stored, pe, simd, wt)
            cost = est.folded_cost(mv.n, mv.k, pe, simd, fam, bits=mv.in_bits, integer=mv.integer,
                                   max_term=_max_term(mv), output_layer=mv.thresholds is None, live_columns=live)
            if in_width is not None:
                cost += est.adapter_cost(in_width, eb * simd, fam)
            out.append(Candidate(mv.index, Engine.FOLDED, pe, simd, None, mv.positions * nf * sf, cost))
    if allow_unrolled and not mv.integer:
        seen = set()
        for depth in mst_depths:
            if depth == 0:
                parent = inverted = None
                ops = mv.n * mv.k
            else:
                sch = plan_mst(mv.weights, max_depth=depth)
                parent, inverted = sch.parent, sch.inverted
                ops = int(sch.cost)
                key = (tuple(parent.tolist()), tuple(inverted.tolist()))
                if key in seen:
                    continue
                seen.add(key)
            if lut_budget is not None and ops / 4 > lut_budget:
                continue
            plan = UnrolledPlan(mv.weights, mv.thresholds, parent, inverted, register_every=register_every)
            cost = est.unrolled_cost(plan, fam)
            if in_width is not None:
                cost += est.adapter_cost(in_width, mv.k, fam)
            out.append(Candidate(mv.index, Engine.UNROLLED, mv.n, mv.k, depth, mv.positions, cost))
    return _pareto(out)


def _fixed_glue(chain, config: GenConfig, family) -> tuple[est.Cost, list[int | None]]:
    """Cost of the blocks that do not depend on the folding, and the stream width in front of
    each compute layer (None for the first block)."""
    from ..hdl.fifo import StreamFifo  # noqa: PLC0415
    from ..hdl.streams import Argmax  # noqa: PLC0415
    from ..hdl.window import MaxPoolOr, SlidingWindow  # noqa: PLC0415

    fam = est._family(family)
    total = est.ZERO
    widths: list[int | None] = []
    width = None
    matvecs = [s for s in chain if isinstance(s, MatVec)]
    for stage in chain:
        if isinstance(stage, WindowSpec):
            block = SlidingWindow(stage.height, stage.width, stage.channels, stage.elem_bits, kernel=stage.kernel,
                                  stride=stage.stride, pads=stage.pads, pad_value=stage.pad_value)
            est.mark_sized(block)
            if width is not None and width != block.pixel_width:  # pragma: no cover - planning never does this
                total += est.adapter_cost(width, block.pixel_width, fam)
            total += est.block_cost(block, fam)
            width = block.patch_width
        elif isinstance(stage, PoolSpec):
            block = MaxPoolOr(stage.height, stage.width, stage.channels, kernel=stage.kernel, stride=stage.stride)
            est.mark_sized(block, block.window)
            total += est.block_cost(block, fam)
            width = stage.channels
        elif isinstance(stage, GatherSpec):
            if stage.pixels > 1:
                total += est.adapter_cost(stage.chunk, stage.chunk * stage.pixels, fam)
                width = stage.chunk * stage.pixels
        else:
            widths.append(width)
            out_w = stage.n * _out_lane_width(stage)
            if stage is not matvecs[-1] and config.fifo_depth:
                fifo = StreamFifo(out_w, config.fifo_depth)
                est.mark_sized(fifo)
                total += est.block_cost(fifo, fam)
            width = out_w
    last = matvecs[-1]
    argmax = Argmax(last.n, _out_lane_width(last), signed=last.integer, with_scores=True)
    est.mark_sized(argmax)
    total += est.block_cost(argmax, fam)
    return total, widths


def _out_lane_width(mv: MatVec) -> int:
    if mv.thresholds is not None:
        return 1
    if mv.integer:
        return (mv.k * _max_term(mv)).bit_length() + 1
    return mv.k.bit_length()


def _best_assignment(cands: list[list[Candidate]], target: int, lut_budget: float, bram_budget: int):
    """Cheapest (LUTs) choice per layer with cycles <= target and block RAMs <= bram_budget, or
    None; an exact dynamic programme over the block RAMs used."""
    states = {0: (0.0, ())}  # brams used -> (luts, choices)
    for layer in cands:
        ok = [c for c in layer if c.cycles <= target]
        if not ok:
            return None
        nxt: dict = {}
        for used, (luts, chosen) in states.items():
            for c in ok:
                b = used + c.cost.brams
                if b > bram_budget:
                    continue
                v = luts + c.luts
                if v > lut_budget:
                    continue
                old = nxt.get(b)
                if old is None or v < old[0] - 1e-9:
                    nxt[b] = (v, chosen + (c,))
        if not nxt:
            return None
        # keep only states not dominated (more block RAMs for no fewer LUTs)
        pruned, best = {}, math.inf
        for b in sorted(nxt):
            if nxt[b][0] < best - 1e-9:
                pruned[b] = nxt[b]
                best = nxt[b][0]
        states = pruned
    luts, chosen = min(states.values(), key=lambda v: (v[0], sum(c.cost.brams for c in v[1])))
    return luts, chosen


def plan_auto_fold(model, board, *, clock_mhz: float | None = None, mst_depths: Iterable = DEFAULT_MST_DEPTHS,
                   margin: float = DEFAULT_MARGIN, allow_unrolled: bool = True,
                   base: GenConfig | None = None) -> AutoFoldResult:
    """Choose the folding (module docstring) and report the choice.

    Parameters
    ----------
    model : bnnfab.models.Model
    board : str or bnnfab.boards.platforms.Board
        Its device gives the family and the LUT / block RAM budget, its oscillator the clock.
    clock_mhz : float, optional
        Clock for the images/s figure (default: the board's).
    mst_depths : iterable of int or None
        Depth limits tried for unrolled layers (0: plain; None: unlimited).
    margin : float
        Share of the device's LUTs the design may use, in (0, 1].
    allow_unrolled : bool
        Whether binary layers may be unrolled.
    base : GenConfig, optional
        Other options (``fifo_depth``, ``name``, ``mst_depth``, ``register_every``) to keep; its ``layers`` and
        ``target_cycles`` are replaced.

    Raises
    ------
    AutoFoldError
        Nothing fits, or the board's family has no resource model (Xilinx).
    bnnfab.boards.platforms.UnknownBoardError
        An unknown board name.
    """
    from ..boards.platforms import get_board  # noqa: PLC0415

    b = get_board(board)
    fam = b.flow.value
    if fam not in est.FAMILIES:
        raise AutoFoldError(f"--fold auto: board {b.name!r} ({b.device}) has no resource model (only "
                            f"{', '.join(est.FAMILIES)} boards); fold it with --target-cycles")
    if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not 0 < margin <= 1:
        raise AutoFoldError(f"margin must be a number in (0, 1], not {margin!r}")
    if clock_mhz is not None and (isinstance(clock_mhz, bool) or not isinstance(clock_mhz, (int, float)) or clock_mhz <= 0):
        raise AutoFoldError(f"clock_mhz must be a positive number, not {clock_mhz!r}")
    depths = tuple(mst_depths)
    for d in depths:
        if d is not None and (isinstance(d, bool) or not isinstance(d, int) or d < 0):
            raise AutoFoldError(f"mst_depths must hold whole numbers >= 0 or None, not {d!r}")
    base = base or GenConfig()
    clock_hz = (clock_mhz * 1e6) if clock_mhz is not None else float(b.clock_hz)
    lut_budget = margin * b.resources.luts
    bram_budget = b.resources.brams

    chain = lower_layers(model)
    glue, widths = _fixed_glue(chain, base, fam)
    matvecs = [s for s in chain if isinstance(s, MatVec)]
    cands = [layer_candidates(mv, w, fam, depths, allow_unrolled, lut_budget, base.register_every)
             for mv, w in zip(matvecs, widths)]
    targets = sorted({c.cycles for layer in cands for c in layer})
    lo_bound = max(min(c.cycles for c in layer) for layer in cands)
    targets = [t for t in targets if t >= lo_bound]
    budget_l = lut_budget - glue.fit_luts
    budget_b = bram_budget - glue.brams

    def feasible(t):
        return _best_assignment(cands, t, budget_l, budget_b)

    # binary search for the smallest feasible target (feasibility is monotone in the target)
    lo, hi = 0, len(targets) - 1
    if feasible(targets[hi]) is None:
        slow = [min(layer, key=lambda c: c.luts) for layer in cands]
        need_l = glue.fit_luts + sum(c.luts for c in slow)
        need_b = glue.brams + sum(c.cost.brams for c in slow)
        what = (f"{need_l:,.0f} LUT4 (budget {lut_budget:,.0f} = {margin:g} x {b.resources.luts:,})"
                if need_l > lut_budget else f"{need_b} block RAMs (the device has {bram_budget})")
        raise AutoFoldError(f"--fold auto: even the most folded design of {model.name or 'the model'} needs about "
                            f"{what} on board {b.name!r} ({b.device}); choose a larger board")
    while lo < hi:
        mid = (lo + hi) // 2
        if feasible(targets[mid]) is None:
            lo = mid + 1
        else:
            hi = mid
    for t in targets[lo:]:
        found = feasible(t)
        if found is None:  # pragma: no cover - monotone
            continue
        _, chosen = found
        config = replace(base, target_cycles=None, layers={c.layer: c.choice() for c in chosen})
        exact = est.estimate_plan(make_plan(model, config), [fam]).total(fam)
        if exact.fit_luts <= lut_budget and exact.brams <= bram_budget:
            cycles = max(c.cycles for c in chosen)
            return AutoFoldResult(
                config=config, board=b.name, family=fam, clock_hz=clock_hz, cycles_per_image=cycles,
                images_per_second=clock_hz / cycles, estimate=exact, lut_budget=lut_budget, bram_budget=bram_budget,
                candidates={mv.index: tuple(layer) for mv, layer in zip(matvecs, cands)},
            )
    raise AutoFoldError(f"--fold auto: no folding of {model.name or 'the model'} fits board {b.name!r} "  # pragma: no cover
                        f"({b.device}) once estimated exactly; choose a larger board")


def auto_fold(model, board, *, clock_mhz: float | None = None, mst_depths: Iterable = DEFAULT_MST_DEPTHS,
              margin: float = DEFAULT_MARGIN, allow_unrolled: bool = True, base: GenConfig | None = None) -> GenConfig:
    """The :class:`GenConfig` of :func:`plan_auto_fold` (same parameters and errors)."""
    return plan_auto_fold(model, board, clock_mhz=clock_mhz, mst_depths=mst_depths, margin=margin,
                          allow_unrolled=allow_unrolled, base=base).config


def parse_fold_auto(values) -> bool:
    """Whether a ``--fold`` argument list asks for the automatic folding: ``["auto"]`` alone.

    Raises
    ------
    AutoFoldError
        ``auto`` mixed with explicit ``LAYER=PExSIMD`` folds.
    """
    values = list(values or [])
    autos = [v for v in values if v == "auto"]
    if not autos:
        return False
    if len(values) != len(autos):
        raise AutoFoldError("--fold auto chooses every layer's folding; it cannot be combined with LAYER=PExSIMD folds")
    return True
